"""Where and how a run executes: device, mixed precision, compilation, loader workers, and the
``torchrun`` process group.

None of this is part of :class:`learner.config.Config`: it decides how fast a run goes, not what it
learns, so a checkpoint made on a GPU resumes on a CPU and back, and on CPU the defaults (device
``cpu``, no AMP, no compilation, no loader workers) are exactly the code path of a plain run.

Mixed precision (``amp``) is for CUDA only: on CPU ``--amp`` with an explicit ``--device cpu`` is
refused (a one-line error), with ``--device auto`` on a machine without CUDA it is switched off with a
warning (a script written for a GPU box still runs on a laptop). Only the network's forward pass runs
under autocast; the losses (mesh formation in centimetres, projections) stay float32, since bf16's
8-bit mantissa would put a face 1 m away ±4 mm off. fp16 uses a gradient scaler, bf16 needs none.

Several processes (``torchrun --nproc-per-node N -m facerig_cli.main train ...``): ``WORLD_SIZE``,
``RANK`` and ``LOCAL_RANK`` come from torchrun's environment; the process group uses NCCL on CUDA and
gloo on CPU. Each rank trains on its slice of every global batch (:mod:`learner.loader`); gradients
are averaged by DistributedDataParallel; only rank 0 writes logs, plots and checkpoints.
"""

from __future__ import annotations

import datetime
import logging
import os
import re
from dataclasses import asdict, dataclass
from typing import Any

import torch

log = logging.getLogger(__name__)
DEVICE_PATTERN = re.compile(r"^(auto|cpu|cuda|cuda:\d+)$")
AMP_MODES = ("off", "bf16", "fp16")
MAX_LOADER_WORKERS = 64     # loader processes per rank (facerig_cli.args states the same bound in --help)
# How long a rank waits for the others in one collective before giving up (a hung peer).
COLLECTIVE_TIMEOUT = datetime.timedelta(minutes=15)


class DistributedError(RuntimeError):
    """A rank lost its peers (one died or hung): the run stops; the last checkpoint is intact."""


def parse_device(text: str) -> str:
    """Validate a ``--device`` value (``auto``, ``cpu``, ``cuda``, ``cuda:N``)."""
    value = str(text).strip().lower()
    if not DEVICE_PATTERN.match(value):
        raise ValueError(f"--device must be auto, cpu, cuda or cuda:N, got {text!r}")
    return value


@dataclass(frozen=True)
class Execution:
    """How a run executes (``facerig train/bootstrap --device --amp --compile --loader-workers``)."""

    device: str = "cpu"
    amp: str = "off"
    compile: bool = False
    loader_workers: int | None = None   # None: 0 on CPU, a share of the cores per rank on CUDA

    def validate(self) -> None:
        parse_device(self.device)
        if self.amp not in AMP_MODES:
            raise ValueError(f"--amp must be one of {', '.join(AMP_MODES)}, got {self.amp!r}")
        if self.loader_workers is not None and not 0 <= self.loader_workers <= MAX_LOADER_WORKERS:
            raise ValueError(f"--loader-workers must be in [0, {MAX_LOADER_WORKERS}], got {self.loader_workers}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class DistContext:
    """This process's place among the ranks (a single process is rank 0 of 1)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    local_world: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1


def env_context() -> DistContext:
    """The ranks torchrun describes in the environment (rank 0 of 1 without torchrun)."""
    def get(name: str, default: int) -> int:
        try:
            return int(os.environ.get(name, default))
        except ValueError:
            raise ValueError(f"environment variable {name}={os.environ[name]!r} is not an integer") from None

    ctx = DistContext(rank=get("RANK", 0), world=get("WORLD_SIZE", 1), local_rank=get("LOCAL_RANK", 0),
                      local_world=get("LOCAL_WORLD_SIZE", 1))
    if not 0 <= ctx.rank < ctx.world:
        raise ValueError(f"RANK {ctx.rank} is outside WORLD_SIZE {ctx.world}")
    return ctx


def resolve_device(requested: str, ctx: DistContext) -> torch.device:
    """The torch device for ``--device`` in this rank; a clear error when CUDA is asked for but absent."""
    value = parse_device(requested)
    if value == "cpu" or (value == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        build = "a CPU-only build" if torch.version.cuda is None else f"CUDA {torch.version.cuda}, but no GPU is visible"
        raise ValueError(f"--device {value}: CUDA is not available (torch {torch.__version__} is {build}); "
                         "use --device cpu or auto, or install a CUDA build of torch")
    count = torch.cuda.device_count()
    if value.startswith("cuda:"):
        index = int(value.split(":")[1])
        if ctx.distributed:
            raise ValueError(f"--device {value}: under torchrun each rank uses cuda:LOCAL_RANK; pass --device cuda")
    else:
        index = ctx.local_rank
    if index >= count:
        raise ValueError(f"--device: cuda:{index} does not exist ({count} GPU(s) visible)")
    return torch.device("cuda", index)


def resolve_amp(amp: str, requested_device: str, device: torch.device) -> str:
    """The mixed-precision mode in effect: ``off`` on CPU (refused when CPU was asked for explicitly)."""
    if amp == "off":
        return "off"
    if device.type != "cuda":
        if parse_device(requested_device) == "cpu":
            raise ValueError(f"--amp {amp} needs a CUDA device; CPU training runs in float32 (drop --amp)")
        log.warning("--amp %s: no CUDA device, so mixed precision is off (CPU training runs in float32)", amp)
        return "off"
    if amp == "bf16" and not torch.cuda.is_bf16_supported():
        raise ValueError("--amp bf16: this GPU has no bfloat16 support; use --amp fp16")
    return amp


def loader_workers(execution: Execution, device: torch.device, ctx: DistContext) -> int:
    """Loader processes per rank: the given count, else 0 on CPU (both cores train) and a share of the
    machine's cores on CUDA (one left for the rank's own process), at most 8."""
    if execution.loader_workers is not None:
        return execution.loader_workers
    if device.type != "cuda":
        return 0
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(8, cores // max(1, ctx.local_world) - 1))


def init_process_group(ctx: DistContext, device: torch.device) -> bool:
    """Join torchrun's process group (NCCL on CUDA, gloo on CPU); False when there is nothing to join."""
    import torch.distributed as dist

    if not ctx.distributed or dist.is_initialized():
        return False
    if device.type == "cuda":
        torch.cuda.set_device(device)
        dist.init_process_group("nccl", timeout=COLLECTIVE_TIMEOUT, device_id=device)
    else:
        dist.init_process_group("gloo", timeout=COLLECTIVE_TIMEOUT)
    log.info("rank %d of %d (local %d of %d) on %s, backend %s", ctx.rank, ctx.world, ctx.local_rank,
             ctx.local_world, device, dist.get_backend())
    if ctx.rank:   # rank 0 reports progress; the others only warnings and errors
        logging.getLogger().setLevel(max(logging.getLogger().level, logging.WARNING))
    return True


def destroy_process_group() -> None:
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_max(values: list[float], device: torch.device, ctx: DistContext) -> list[float]:
    """Element-wise maximum over the ranks (flags: any rank stopping or diverging stops them all)."""
    if not ctx.distributed:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    _collective(lambda: torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX))
    return t.tolist()


def all_reduce_mean(values: dict[str, float], device: torch.device, ctx: DistContext) -> dict[str, float]:
    """Mean over the ranks of per-rank numbers with the same keys (logged losses)."""
    if not ctx.distributed or not values:
        return values
    keys = sorted(values)
    t = torch.tensor([values[k] for k in keys], dtype=torch.float64, device=device)
    _collective(lambda: torch.distributed.all_reduce(t))
    return {k: float(v) / ctx.world for k, v in zip(keys, t.tolist())}


def _collective(fn: Any) -> None:
    try:
        fn()
    except (RuntimeError, torch.distributed.DistError) as exc:   # a peer died or timed out
        raise lost_peer(exc) from None


def lost_peer(exc: BaseException) -> DistributedError:
    """The one-line error a surviving rank reports when a collective fails."""
    first = next((ln.strip() for ln in str(exc).splitlines() if ln.strip()), type(exc).__name__)
    first = re.sub(r"^\[[^\]]*\]\s*", "", first)   # gloo's "[.../pair.cc:537]" source location
    return DistributedError(f"rank {env_context().rank}: lost contact with the other ranks ({first[:120]}); "
                            "a rank died or hung — the last checkpoint is intact, rerun the same torchrun "
                            "command with --resume")


__all__ = ["Execution", "DistContext", "DistributedError", "env_context", "parse_device", "resolve_device",
           "resolve_amp", "loader_workers", "init_process_group", "destroy_process_group", "all_reduce_max",
           "all_reduce_mean", "lost_peer"]
