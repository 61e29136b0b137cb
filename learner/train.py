"""The training loop: deterministic, resumable, logged.

Reproducibility design: nothing depends on hidden RNG state. The sample order of step k is a
function of (seed, epoch), the augmentation of step k uses a generator seeded with (seed, k),
and torch's global RNG (dropout) is reseeded from (seed, k) before each step. A checkpoint
therefore only needs the step, the weights and the optimiser state, and a resumed run follows
the uninterrupted one exactly (tests/test_learner_train.py checks this).

Execution (:mod:`learner.devices`): the device (CPU or CUDA), mixed precision, ``torch.compile``,
loader worker processes (:mod:`learner.loader`) and several ranks under ``torchrun``
(DistributedDataParallel: each rank trains on a slice of every global batch; rank 0 alone writes
the log, plots and checkpoints). With the defaults — CPU, one process, no workers — the steps are
exactly those of a plain run. The run folder is locked while a trainer works in it, and every
checkpoint save keeps the one before as ``prev.pt``.

Why one module of ~600 lines: it is one job, the :class:`Trainer`, whose setup, resume, step, validation
and reporting all read and write the same state (network, optimiser, data order, step, distributed
context); split into files, that state would travel between them as arguments. The parts with a job of
their own already live beside it (losses, data, loader, devices, checkpoint, evaluate, plots).
"""

from __future__ import annotations

import json
import logging
import math
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from tqdm import tqdm

from facemodel import FaceModel, ParamLayout

from .checkpoint import CheckpointError, load_checkpoint, remove_stale_temps, save_checkpoint
from .config import Config
from .data import BatchOrder, FaceData, load_corpora, split_indices
from .devices import (DistContext, DistributedError, Execution, all_reduce_max, all_reduce_mean, env_context,
                      init_process_group, loader_workers, lost_peer, resolve_amp, resolve_device)
from .evaluate import evaluate_synthetic, flatten_metrics, predict
from .loader import StepBatches, iterate_steps, step_seed, to_batch
from .losses import FaceLoss
from .network import FaceRegressor, OutputStats, build_network
from .onnx_import import freeze_batchnorm
from .plots import plot_curves, read_log, write_csvs
from .cpu_tuning import configure_runtime

log = logging.getLogger(__name__)
BEST_METRIC = "val/vertex_mm_aligned@balanced"


@dataclass
class RunPaths:
    root: Path

    @property
    def last(self) -> Path:
        return self.root / "last.pt"

    @property
    def prev(self) -> Path:
        return self.root / "prev.pt"

    @property
    def best(self) -> Path:
        return self.root / "best.pt"

    @property
    def log(self) -> Path:
        return self.root / "metrics.jsonl"

    @property
    def plot(self) -> Path:
        return self.root / "curves.png"

    @property
    def config(self) -> Path:
        return self.root / "config.json"


def learning_rate(step: int, cfg: Config) -> float:
    """Linear warm-up, then cosine decay to ``final_lr_fraction`` (a pure function of the step)."""
    t = cfg.train
    if step < t.warmup_steps:
        return t.lr * (0.01 + 0.99 * step / max(1, t.warmup_steps))
    progress = min(1.0, (step - t.warmup_steps) / max(1, t.steps - t.warmup_steps))
    return t.lr * (t.final_lr_fraction + (1 - t.final_lr_fraction) * 0.5 * (1 + math.cos(math.pi * progress)))


_step_seed = step_seed   # salt 1: augmentation (learner.loader), 2: dropout


def make_optimizer(net: torch.nn.Module, cfg: Config) -> torch.optim.Optimizer:
    """AdamW over the parameters that train; no weight decay on biases and batch-norm parameters."""
    decay = [p for n, p in net.named_parameters() if p.ndim > 1 and p.requires_grad]
    no_decay = [p for n, p in net.named_parameters() if p.ndim <= 1 and p.requires_grad]
    return torch.optim.AdamW([{"params": decay, "weight_decay": cfg.train.weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}], lr=cfg.train.lr)


class _StopFlag:
    """SIGINT/SIGTERM set a flag; the loop stops at the next step boundary and checkpoints."""

    def __init__(self) -> None:
        self.stop = False
        self._old: dict[int, Any] = {}

    def __enter__(self) -> "_StopFlag":
        try:
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handler)
        except ValueError:  # not the main thread
            pass
        return self

    def _handler(self, signum: int, frame: Any) -> None:
        if self.stop:  # second signal: give up immediately
            raise KeyboardInterrupt
        log.warning("signal %d: stopping after this step (checkpoint follows)", signum)
        self.stop = True

    def __exit__(self, *exc: Any) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


class _TrainForward(torch.nn.Module):
    """``forward`` = the regressor's ``forward_train`` (params and keypoints), the call that
    DistributedDataParallel and ``torch.compile`` wrap."""

    def __init__(self, net: FaceRegressor) -> None:
        super().__init__()
        self.net = net

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        return self.net.forward_train(images)


class Trainer:
    """Holds the run's state; :meth:`run` trains from ``self.step`` to ``config.train.steps``."""

    def __init__(self, corpora: Sequence[Path | str], out: Path | str, config: Config | None = None,
                 resume: bool = False, face_model: FaceModel | None = None, progress: bool = True,
                 data: FaceData | None = None, execution: Execution | None = None) -> None:
        """``data`` replaces ``corpora`` with samples already in memory (tests, custom sources);
        ``execution``: device, AMP, compilation, loader workers (default: CPU, exactly a plain run).
        Under torchrun the process group is joined here (:mod:`learner.devices`)."""
        self.paths = RunPaths(Path(out))
        self.execution = execution or Execution()
        self.execution.validate()
        self.dist: DistContext = env_context()
        self.device = resolve_device(self.execution.device, self.dist)
        self.amp = resolve_amp(self.execution.amp, self.execution.device, self.device)
        self.progress = progress and self.dist.is_main
        self._lock: Any = None
        if data is None:
            if not corpora:
                raise ValueError("no corpus given (--corpus DIR)")
            for c in corpora:  # fail before anything slow happens
                if not Path(c).is_dir():
                    raise FileNotFoundError(f"corpus not found: {c}")
        self._own_group = init_process_group(self.dist, self.device)
        try:
            self._setup(corpora, config, resume, face_model, data)
        except BaseException:
            self.close()
            raise

    def _setup(self, corpora: Sequence[Path | str], config: Config | None, resume: bool,
               face_model: FaceModel | None, data: FaceData | None) -> None:
        if self.dist.is_main:   # one writer per run folder: a second training into it is refused
            from facemodel.outputs import acquire_lock

            if resume and not self.paths.root.is_dir():
                raise FileNotFoundError(f"nothing to resume: {self.paths.last} does not exist")
            self.paths.root.mkdir(parents=True, exist_ok=True)
            self._lock = acquire_lock(self.paths.root, ".lock", f"{self.paths.root} (a training run)",
                                      ValueError)
            for p in remove_stale_temps(self.paths.root):
                log.info("removed %s, left by a checkpoint save that was killed", p.name)
        state = self._resume_state(config, resume)
        self.config = Config.from_dict(state["config"]) if state else (config or Config())
        self.config.validate()
        cfg = self.config
        threads = cfg.train.threads
        if self.device.type == "cpu" and self.dist.local_world > 1 and threads > 0:
            threads = max(1, threads // self.dist.local_world)   # the ranks on one machine share its cores
        configure_runtime(threads)
        self.face_model = face_model or FaceModel.load()
        if data is None:
            data = load_corpora(corpora, visible_jaw=cfg.loss.landmark_visible_jaw)
        train_idx, val_idx = split_indices(len(data), cfg.train.val_fraction, cfg.train.seed)
        # Training batches index the full tensors through train_idx (no 5 GB copy of the split).
        self.train_data, self.train_idx = data, torch.as_tensor(train_idx, dtype=torch.long)
        self.val_data = data.subset(val_idx[: cfg.train.val_max])
        self.gt_layout = self.train_data.layout
        self.layout = ParamLayout(n_identity=cfg.network.n_identity, n_corrective=cfg.network.n_corrective)
        self.size = cfg.network.input_size
        labelled = train_idx[data.has_params.numpy()[train_idx]]
        if len(labelled) == 0:
            raise ValueError("the training split has no images with parameter labels")
        stats = OutputStats.from_params(self._net_layout_params(data, labelled), self.layout)
        torch.manual_seed(cfg.train.seed)  # reproducible initial weights
        self.net: FaceRegressor = build_network(cfg.network, stats)
        if cfg.train.init and not state:
            self._load_init(Path(cfg.train.init))
        if cfg.train.trainable == "corrective":   # only the corrective head learns; the rest stays as loaded
            for name, param in self.net.named_parameters():
                param.requires_grad_(name.startswith("corrective_head."))
        self.net.to(self.device)
        self.optimizer = make_optimizer(self.net, cfg)
        self.order = BatchOrder(len(train_idx), cfg.train.batch_size, cfg.train.seed)
        self.batches = StepBatches(self.train_data, self.train_idx, self.order, self.size, self.gt_layout,
                                   cfg.augment, cfg.train.seed, self.dist.rank, self.dist.world)
        self.scaler = torch.amp.GradScaler("cuda") if self.amp == "fp16" else None
        self.step = 0
        self.bad_steps = 0
        self.best: dict[str, Any] = {"metric": BEST_METRIC, "value": None, "step": None}
        self.last_val: dict[str, float] = {}
        self.data_info = {"sources": data.sources, "n_train": len(train_idx),
                          "n_val": len(self.val_data)}
        if state:
            self._load_state(state)
        elif self.dist.is_main:
            self.paths.log.unlink(missing_ok=True)
        # Loss weights use the network's own output statistics (restored ones on --resume).
        self.loss = FaceLoss(self.face_model, self.layout, self.gt_layout, cfg.loss,
                             OutputStats(self.net.out_mean.cpu().numpy().copy(), self.net.out_std.cpu().numpy().copy()),
                             self.size, n_keypoints=cfg.network.keypoints).to(self.device)
        self.model = self._wrap_model()
        if self.dist.is_main:
            cfg.save(self.paths.config)
        log.info("run %s: %d train / %d val images, %d parameters, layout n_identity=%d, step %d/%d, %s%s%s%s",
                 self.paths.root, len(train_idx), len(self.val_data),
                 sum(p.numel() for p in self.net.parameters()), self.layout.n_identity, self.step, cfg.train.steps,
                 self.device, f", {self.dist.world} processes" if self.dist.distributed else "",
                 f", amp {self.amp}" if self.amp != "off" else "", ", compiled" if self.execution.compile else "")

    def _wrap_model(self) -> Any:
        """What the training step calls: the plain network, or it wrapped for DDP and/or compiled."""
        if not self.dist.distributed and not self.execution.compile:
            return self.net.forward_train
        model: Any = _TrainForward(self.net)
        if self.dist.distributed:
            from torch.nn.parallel import DistributedDataParallel

            # The constructor broadcasts rank 0's weights and buffers: every rank starts equal.
            try:
                model = DistributedDataParallel(model, device_ids=[self.device.index] if self.device.type == "cuda"
                                                else None)
            except RuntimeError as exc:
                raise lost_peer(exc) from None
        if self.execution.compile:   # $FACERIG_COMPILE_BACKEND: another torch.compile backend (debugging, tests)
            model = torch.compile(model, backend=os.environ.get("FACERIG_COMPILE_BACKEND", "inductor"))
        return model

    def close(self) -> None:
        """Release the run folder's lock (and leave a process group this trainer joined)."""
        if self._lock is not None:
            self._lock.close()
            self._lock = None
        if getattr(self, "_own_group", False):
            from .devices import destroy_process_group

            destroy_process_group()
            self._own_group = False

    # -- state ---------------------------------------------------------------------------------
    def _resume_state(self, config: Config | None, resume: bool) -> dict[str, Any] | None:
        if not resume:
            if self.paths.last.exists():
                raise ValueError(f"{self.paths.root} already holds a run (last.pt); pass --resume to continue it "
                                 "or choose a new --out")
            return None
        if not self.paths.last.exists():
            raise FileNotFoundError(f"nothing to resume: {self.paths.last} does not exist")
        try:
            state = load_checkpoint(self.paths.last)
        except CheckpointError as exc:   # the previous checkpoint is kept for this
            if not self.paths.prev.is_file():
                raise
            state = load_checkpoint(self.paths.prev)
            log.warning("%s; resuming from the previous checkpoint %s (step %d)", exc, self.paths.prev.name,
                        int(state["step"]))
        if config is not None:
            saved = Config.from_dict(state["config"]).to_dict()
            new = config.to_dict()
            steps = new["train"]["steps"]
            saved["train"]["steps"] = new["train"]["steps"] = 0
            if saved != new:
                raise ValueError("--config differs from the configuration stored in the checkpoint "
                                 "(only train.steps may change on --resume)")
            state["config"]["train"]["steps"] = steps
        return state

    def _load_init(self, path: Path) -> None:
        """Initial weights (and output statistics) from a checkpoint or an exported ONNX model."""
        if path.suffix == ".onnx":
            from .onnx_import import load_onnx_weights, network_config_from_onnx

            theirs = network_config_from_onnx(path, self.config.network)
            if (theirs.input_size, theirs.n_identity) != (self.size, self.layout.n_identity):
                raise ValueError(f"train.init {path}: input {theirs.input_size}, {theirs.n_identity} identity modes; "
                                 f"the configured network has {self.size}, {self.layout.n_identity}")
            load_onnx_weights(self.net, path)
        else:
            state = load_checkpoint(path)
            if ParamLayout.from_dict(state["layout"]) != self.layout:
                raise ValueError(f"train.init {path}: its layout differs from the configured network")
            self.net.load_state_dict(state["model"])
        log.info("initial weights from %s", path)

    def _load_state(self, state: dict[str, Any]) -> None:
        if ParamLayout.from_dict(state["layout"]) != self.layout:
            raise ValueError("checkpoint layout differs from the configured network layout")
        if ParamLayout.from_dict(state["gt_layout"]) != self.gt_layout:
            raise ValueError("the corpora's parameter layout differs from the one this run was trained on")
        old = state.get("data", {})
        if (old.get("n_train"), old.get("n_val")) != (self.data_info["n_train"], self.data_info["n_val"]):
            log.warning("the corpora changed since the checkpoint (%s/%s → %d/%d train/val images); "
                        "training continues but will not replay the original data order",
                        old.get("n_train"), old.get("n_val"), self.data_info["n_train"], self.data_info["n_val"])
        self.net.load_state_dict(state["model"])            # CPU tensors copied onto the device
        self.optimizer.load_state_dict(state["optimizer"])  # moves its state to the parameters' device
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.step = int(state["step"])
        self.bad_steps = int(state.get("bad_steps", 0))
        self.best = dict(state.get("best") or self.best)
        self.last_val = dict(state.get("metrics") or {})
        if self.dist.is_main:   # log rows written after this checkpoint describe steps that will be redone
            rows = [r for r in read_log(self.paths.log) if int(r.get("step", 0)) <= self.step]
            self.paths.log.write_text("".join(json.dumps(r) + "\n" for r in rows))
        log.info("resumed from %s at step %d", self.paths.last, self.step)

    def state_dict(self) -> dict[str, Any]:
        state = {"step": self.step, "config": self.config.to_dict(), "layout": self.layout.to_dict(),
                 "gt_layout": self.gt_layout.to_dict(), "model": self.net.state_dict(),
                 "optimizer": self.optimizer.state_dict(), "best": self.best, "metrics": self.last_val,
                 "data": self.data_info, "bad_steps": self.bad_steps, "torch_version": str(torch.__version__)}
        if self.scaler is not None:
            state["scaler"] = self.scaler.state_dict()
        if self.device.type != "cpu" or self.dist.distributed or self.execution.compile:
            # informative only (a checkpoint resumes anywhere): where it was made
            state["execution"] = {**self.execution.to_dict(), "device": str(self.device), "amp": self.amp,
                                  "world_size": self.dist.world}
        return state

    def save(self, best: bool = False) -> None:
        """Checkpoint (rank 0 only): ``last.pt``, the one it replaces kept as ``prev.pt``, and ``best.pt``."""
        if not self.dist.is_main:
            return
        state = self.state_dict()
        save_checkpoint(self.paths.last, state, keep_previous=self.paths.prev)
        if best:
            save_checkpoint(self.paths.best, state)

    def _net_layout_params(self, data: FaceData, idx: np.ndarray) -> np.ndarray:
        """Training targets in the network's layout (for the output statistics)."""
        p = data.params.numpy()[idx]
        gs = data.layout.slices["identity"]
        k = self.layout.n_identity
        ident = np.zeros((len(p), k), np.float32)
        m = min(k, data.layout.n_identity)
        ident[:, :m] = p[:, gs][:, :m]
        corr = np.zeros((len(p), 3 * self.layout.n_corrective), np.float32)   # renders: no field
        camera_end = data.layout.slices["camera"].stop
        return np.concatenate([ident, p[:, gs.stop: camera_end], corr], 1)

    # -- loop ----------------------------------------------------------------------------------
    def _log(self, row: dict[str, Any]) -> None:
        if not self.dist.is_main:
            return
        with open(self.paths.log, "a") as f:
            f.write(json.dumps(row) + "\n")

    def make_batch(self, step: int) -> dict[str, torch.Tensor]:
        """This rank's augmented batch of ``step`` (what a loader worker makes)."""
        return self.batches[step]

    def train_step(self, step: int, item: dict[str, torch.Tensor] | None = None,
                   stop: Callable[[], bool] | None = None) -> tuple[float, dict[str, float]]:
        """One optimiser step on the batch of ``step`` (``item``: made ahead by the loader).

        ``stop``: does this process want to stop after the step? With several ranks the wish and a
        non-finite loss are shared in one collective, so all ranks skip or stop together
        (:attr:`stop_requested`); a single process's loop asks after the step.
        """
        cfg = self.config
        batch = to_batch(item if item is not None else self.make_batch(step), self.device)
        torch.manual_seed(_step_seed(cfg.train.seed, step, 2))
        for group in self.optimizer.param_groups:
            group["lr"] = learning_rate(step, cfg)
        self.net.train(cfg.train.trainable == "all")   # a frozen body runs as exported (no dropout)
        if cfg.train.freeze_batchnorm:
            freeze_batchnorm(self.net)
        try:
            with self._autocast():
                pred, keypoints = self.model(batch.images)
            if self.amp != "off":   # losses (mesh formation in cm) stay float32
                pred = pred.float()
                keypoints = None if keypoints is None else keypoints.float()
            total, terms = self.loss(pred, batch, keypoints)
            self.optimizer.zero_grad(set_to_none=True)
            finite = bool(torch.isfinite(total))
            if self.dist.distributed:   # skip (or stop) on every rank alike, else the others wait forever
                wish = bool(stop()) if stop is not None else False
                not_finite, want_stop = all_reduce_max([float(not finite), float(wish)], self.device, self.dist)
                finite, self.stop_requested = not not_finite, bool(want_stop)
            if not finite:
                self.bad_steps += 1
                log.warning("step %d: non-finite loss %s, skipped (%d in a row)", step, terms, self.bad_steps)
                if self.bad_steps >= cfg.train.max_bad_steps:
                    raise RuntimeError(f"{self.bad_steps} consecutive non-finite losses; lower train.lr or check "
                                       "the data")
                return float("nan"), terms
            if self.scaler is not None:
                self.scaler.scale(total).backward()
                self.scaler.unscale_(self.optimizer)
            else:
                total.backward()
            if cfg.train.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(self.net.parameters(), cfg.train.grad_clip)
            if self.scaler is not None:
                self.scaler.step(self.optimizer)
                self.scaler.update()
            else:
                self.optimizer.step()
        except DistributedError:
            raise
        except RuntimeError as exc:
            if self.dist.distributed and _is_collective_failure(exc):
                raise lost_peer(exc) from None
            raise
        self.bad_steps = 0
        return float(total.detach()), terms

    def _autocast(self) -> Any:
        import contextlib

        if self.amp == "off":
            return contextlib.nullcontext()
        return torch.autocast("cuda", dtype=torch.bfloat16 if self.amp == "bf16" else torch.float16)

    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        """Metrics on the held-out split (no augmentation, eval mode)."""
        t0 = time.perf_counter()
        val = self.val_data
        pred = predict(self.net, val.images, self.size)
        lab = val.has_params.numpy()
        lm68 = (val.landmarks[:, :68] * (self.size / val.image_size)).numpy()
        metrics: dict[str, float] = {}
        if lab.any():
            summary = evaluate_synthetic(self.face_model, pred[lab], self.layout, val.params.numpy()[lab],
                                         self.gt_layout, self.size, lm68[lab])
            metrics.update(flatten_metrics(summary))
        if (~lab).any():   # photos: 68-point NME (bbox) against their detector landmarks
            metrics["val/photo_nme_bbox_68"] = photo_landmark_nme(
                self.loss, pred[~lab], val.landmarks[~lab].numpy() * (self.size / val.image_size),
                val.landmark_mask[~lab].numpy())
            metrics["val/photo_n"] = float((~lab).sum())
        losses = []
        for i in range(0, len(val), 256):
            idx = torch.arange(i, min(i + 256, len(val)))
            batch = to_batch(vars(val.batch(idx, self.size)), self.device)
            total, _ = self.loss(torch.as_tensor(pred[i:i + 256], device=self.device), batch)
            losses.append(float(total) * len(idx))
        metrics["val/loss"] = sum(losses) / max(1, len(val))
        metrics["val/seconds"] = time.perf_counter() - t0
        return metrics

    def run(self, stop_at: int | None = None) -> dict[str, Any]:
        """Train to ``config.train.steps`` (or only up to ``stop_at``, for tests); returns a summary."""
        if self._lock is None and self.dist.is_main:
            from facemodel.outputs import acquire_lock

            self._lock = acquire_lock(self.paths.root, ".lock", f"{self.paths.root} (a training run)",
                                      ValueError)
        try:
            return self._run(stop_at)
        finally:
            self.close()

    def _run(self, stop_at: int | None) -> dict[str, Any]:
        cfg = self.config.train
        end = cfg.steps if stop_at is None else min(stop_at, cfg.steps)
        sums: dict[str, float] = {}
        count, t_window, img_window = 0, 0.0, 0   # t_window: seconds spent in training steps only
        t_start, steps_done = time.perf_counter(), 0
        bar = tqdm(total=cfg.steps, initial=self.step, desc="train", unit="step", disable=not self.progress,
                   dynamic_ncols=True)
        interrupted = False
        workers = loader_workers(self.execution, self.device, self.dist)
        items = iterate_steps(self.batches, self.step, end, workers, pin_memory=self.device.type == "cuda")
        self.stop_requested = False
        with _StopFlag() as flag:
            while self.step < end:
                t0 = time.perf_counter()
                loss, terms = self.train_step(self.step, next(items) if workers else None, stop=lambda: flag.stop)
                if not self.dist.distributed:
                    self.stop_requested = flag.stop
                t_window += time.perf_counter() - t0
                self.step += 1
                steps_done += 1
                img_window += cfg.batch_size
                if math.isfinite(loss):
                    for k, v in {"loss": loss, **{f"loss/{k}": v for k, v in terms.items()}}.items():
                        sums[k] = sums.get(k, 0.0) + v
                    count += 1
                bar.update(1)
                if self.step % cfg.log_every == 0 or self.step == end:
                    means = all_reduce_mean({k: v / max(count, 1) for k, v in sums.items()}, self.device, self.dist)
                    row = {"kind": "train", "step": self.step, "lr": learning_rate(self.step - 1, self.config),
                           "images_per_s": img_window / max(t_window, 1e-9), **means}
                    self._log(row)
                    bar.set_postfix(loss=f"{row.get('loss', float('nan')):.4g}", ips=f"{row['images_per_s']:.0f}")
                    sums, count, t_window, img_window = {}, 0, 0.0, 0
                is_val = (self.step % cfg.val_every == 0 or self.step == cfg.steps) and self.dist.is_main
                is_best = False
                if is_val:
                    self.last_val = self.validate()
                    self._log({"kind": "val", "step": self.step, **self.last_val})
                    value = self.last_val.get(BEST_METRIC)
                    if value is not None and math.isfinite(value) and (
                            self.best["value"] is None or value < self.best["value"]):
                        self.best = {"metric": BEST_METRIC, "value": value, "step": self.step}
                        is_best = True
                    log.info("step %d: val vertex %.2f mm (aligned %.2f), NME %.2f %%, rot %.1f°, photo NME %.2f %%",
                             self.step, self.last_val.get("val/vertex_mm_camera", math.nan),
                             self.last_val.get("val/vertex_mm_aligned", math.nan),
                             self.last_val.get("val/nme_bbox_68", math.nan),
                             self.last_val.get("val/rotation_deg", math.nan),
                             self.last_val.get("val/photo_nme_bbox_68", math.nan))
                    self.write_reports()
                if is_val or self.step % cfg.checkpoint_every == 0 or self.step == end or self.stop_requested:
                    self.save(best=is_best)
                if self.stop_requested:
                    interrupted = True
                    break
        bar.close()
        del items   # stops the loader's workers
        self.write_reports()
        elapsed = time.perf_counter() - t_start
        summary = {"step": self.step, "steps_this_run": steps_done, "seconds": elapsed,
                   "images_per_s": steps_done * cfg.batch_size / max(elapsed, 1e-9), "best": self.best,
                   "metrics": self.last_val, "interrupted": interrupted, "rank": self.dist.rank}
        if interrupted:
            raise KeyboardInterrupt(f"stopped at step {self.step}; checkpoint saved, continue with --resume")
        return summary

    def write_reports(self) -> None:
        if not self.dist.is_main:
            return
        rows = read_log(self.paths.log)
        write_csvs(rows, self.paths.root)
        try:
            plot_curves(rows, self.paths.plot)
        except Exception as exc:  # noqa: BLE001 — a plotting failure must never stop training
            log.warning("could not plot curves: %s", exc)


def _is_collective_failure(exc: BaseException) -> bool:
    """A gloo/NCCL error of a peer that went away (raised inside DDP's backward or a collective)."""
    text = str(exc).lower()
    return isinstance(exc, torch.distributed.DistError) or any(
        k in text for k in ("gloo", "nccl", "connection reset", "connection closed", "broken pipe", "timed out"))


def photo_landmark_nme(loss: FaceLoss, pred: np.ndarray, landmarks: np.ndarray, mask: np.ndarray) -> float:
    """Mean 68-point NME (percent of the target landmark box, ``facemodel.metrics``) of predictions
    against unified-slot landmark targets, over the samples whose 68 fixed slots are all present."""
    from facemodel import FaceParams
    from facemodel.metrics import nme_bbox

    ok = mask[:, :68].all(1)
    if not ok.any():
        return math.nan
    with torch.no_grad():
        params = FaceParams.from_vector(torch.as_tensor(pred[ok], device=loss.device), loss.layout)
        points = loss.predicted_landmarks(params)[:, :68].cpu().numpy()
    return float(np.nanmean(nme_bbox(points, landmarks[ok, :68])))


def train(corpora: Sequence[Path | str], out: Path | str, config: Config | None = None, resume: bool = False,
          progress: bool = True, face_model: FaceModel | None = None,
          execution: Execution | None = None) -> dict[str, Any]:
    """Train (or resume) a run in ``out``; see :class:`Trainer`."""
    return Trainer(corpora, out, config, resume, face_model=face_model, progress=progress,
                   execution=execution).run()


__all__ = ["Trainer", "train", "learning_rate", "RunPaths"]
