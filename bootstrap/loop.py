"""Bootstrapping on real photos: InverseFaceNet Algorithm 1 with VRN-style rotated views and
weak landmark supervision (multi-database fusion), as one resumable loop.

Round r (r = 1 … N), starting from the network of round r − 1 (round 0 = ``init``):

1. **reconstruct** the real photo corpora with the current network (ONNX, batch inference);
2. **filter** the seeds: only reconstructions the network is confident in — near-frontal
   (|yaw| ≤ ``max_seed_yaw``) and agreeing with the detector's landmarks (51 inner points,
   NME bbox ≤ ``max_seed_nme`` %); the counts and thresholds go to the round's manifest and log;
   with ``refine_seeds`` the kept seeds are then refined on those landmarks (the add-on's
   ``facemodel.landmark_fit`` refinement), so the views' labels sit on the photo more closely;
3. **render** new views of the kept reconstructions (``synth.views``: rotated VRN views with
   the photo as texture and backplane, InverseFaceNet resampled + relit renders);
4. **train** on the new views mixed with the original synthetic corpora (and, with
   ``landmarks``, the photos themselves under the masked landmark loss), starting from the
   current network;
5. **export** and **evaluate** (Helen 68-point NME, synthetic test set) — then the next round.

Every step writes its result atomically and is skipped when present, so a killed run continues
where it stopped with the same command (training itself resumes from its last checkpoint).
``report.md`` / ``report.png`` / ``report.json`` summarise metric against round.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from facemodel import FaceModel, FaceParams, ParamLayout
from facemodel.formation import landmarks_2d
from facemodel.metrics import INNER_51, nme_bbox
from facemodel.outputs import atomic_output, atomic_write_text, finite_or_none, write_json

from learner.config import Config

log = logging.getLogger(__name__)
STATE_FILE = "bootstrap.json"


@dataclass
class BootstrapSettings:
    real: list[Path]                     # photo corpora (facerig photos prepare)
    synthetic: list[Path]                # rendered corpora with full labels
    init: Path                           # starting network: .onnx export or .pt checkpoint
    rounds: int = 2
    steps_per_round: int = 3000
    rotate: bool = True                  # VRN rotated views
    resample: bool = True                # InverseFaceNet resampled + relit views
    landmarks: bool = True               # photos under the masked landmark loss
    rotations: int = 2                   # rotated views per seed photo
    relight: int = 1                     # resampled views per seed photo
    max_seed_yaw: float = 30.0           # degrees
    max_seed_nme: float = 5.0            # percent, 51 inner points vs detector landmarks
    max_seeds: int = 8000                # per round (the most confident first)
    workers: int = 2
    seed: int = 0
    helen: Path | None = None            # evaluation set (68-point .pts); never trained on
    synthetic_test: Path | None = None
    refine_seeds: bool = False           # refine kept seeds on the detector landmarks before rendering
    delight_light: str = "network"       # the light divided out of relit views (synth.views.ViewSettings)

    def validate(self) -> None:
        if self.rounds < 1:
            raise ValueError(f"--rounds must be at least 1, got {self.rounds}")
        if not (self.rotate or self.resample or self.landmarks):
            raise ValueError("nothing to learn from the photos: enable rotation views, resampling or landmarks")
        if not self.synthetic:
            raise ValueError("give the original synthetic corpus (--synthetic DIR): rounds train on a mix")
        if not self.real:
            raise ValueError("no real photo corpus (--real DIR)")
        if self.delight_light not in ("fitted", "network"):
            raise ValueError(f"--delight-light must be fitted or network, not {self.delight_light!r}")
        if self.helen is not None:
            for r in self.real:
                if Path(r).resolve() == Path(self.helen).resolve():
                    raise ValueError("the evaluation set must not be trained on (--real equals --helen)")

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(asdict(self), default=str))


# -- step 1–2: reconstruct and filter ------------------------------------------------------------------
def reconstruct(model_onnx: Path, images: np.ndarray, batch: int = 256) -> np.ndarray:
    """(N, P) parameter vectors of uint8 crops (N, S, S, 3) by the ONNX regressor, run by the runtime
    (:class:`runtime.regressor.Regressor`: the add-on's session and contract checks).

    The crops are scaled here as x / 255, as the learner's own ``predict`` and every bootstrap run so far did;
    the runtime's ``network_input`` multiplies by 1 / 255, one float32 ulp away on 126 of the 256 byte values
    (parameters up to 6e-5 apart on the 2,048 test renders), which would move a documented run's seed filter."""
    from runtime.regressor import Regressor

    regressor = Regressor(model_onnx, threads=2)
    return np.concatenate([regressor.predict_vectors(images[i:i + batch].astype(np.float32) / 255.0)
                           for i in range(0, len(images), batch)])


def seed_scores(face_model: FaceModel, params: np.ndarray, layout: ParamLayout, detector_lm: np.ndarray,
                size: int) -> dict[str, np.ndarray]:
    """Per photo: |yaw| (degrees) and the 51-point NME (bbox, %) against the detector landmarks."""
    p = FaceParams.from_vector(params, layout)
    lm_arrays = face_model.arrays.subset(face_model.landmark_indices("fixed"))
    pred = np.asarray(landmarks_2d(lm_arrays, p, size, size))
    return {"abs_yaw_deg": np.abs(np.degrees(np.asarray(p.rotation)[:, 0])),
            "nme51": nme_bbox(pred, detector_lm, INNER_51)}


def refine_params(face_model: FaceModel, params: np.ndarray, layout: ParamLayout, detector_lm: np.ndarray,
                  size: int, progress: bool = True, max_disagreement: float | None = None
                  ) -> tuple[np.ndarray, dict[str, Any]]:
    """Seeds' parameter vectors refined on their detector landmarks (68, crop pixels): the add-on's refiner
    on their inner 51 (the photo corpus stores no dense FaceMesh points, so not the add-on's dense fit;
    ``max_disagreement``: the network's own limit, ``facemodel.landmark_fit.refine_gate``).

    Returns the vectors and counts (refined / left alone because detector and network disagree).
    """
    from tqdm import tqdm

    from facemodel.landmark_fit import LandmarkRefiner

    refiner = LandmarkRefiner.from_model(face_model)
    out = params.copy()
    skipped = 0
    before, after = [], []
    for i in tqdm(range(len(params)), desc="refine seeds", unit="face", disable=not progress):
        fit = refiner.refine(FaceParams.from_vector(params[i], layout), detector_lm[i], size,
                             max_disagreement=max_disagreement)
        skipped += bool(fit.skipped)
        before.append(fit.rms_before_px)
        after.append(fit.rms_after_px)
        # the reconstructions keep the regressor's layout (its corrective harmonics, none for older models)
        out[i] = np.asarray(fit.params.with_corrective_modes(layout.n_corrective).to_vector(), params.dtype)
    info = {"refined": int(len(params) - skipped), "skipped": int(skipped),
            "median_px_before": float(np.median(before)) if before else None,
            "median_px_after": float(np.median(after)) if after else None}
    return out, info


def onnx_refine_gate(path: Path) -> float:
    """The refinement limit an exported network declares in its metadata (default 8 %)."""
    from facemodel.landmark_fit import refine_gate
    from learner.onnx_import import onnx_metadata

    return refine_gate(onnx_metadata(path))


def select_seeds(scores: dict[str, np.ndarray], max_yaw: float, max_nme: float, max_seeds: int) -> np.ndarray:
    """Indices of confident reconstructions, most confident (lowest NME) first."""
    ok = (scores["abs_yaw_deg"] <= max_yaw) & (scores["nme51"] <= max_nme) & np.isfinite(scores["nme51"])
    idx = np.flatnonzero(ok)
    return idx[np.argsort(scores["nme51"][idx], kind="stable")][:max_seeds]


# -- the loop ----------------------------------------------------------------------------------------
def _without_rounds(settings: dict[str, Any] | None) -> dict[str, Any] | None:
    return None if settings is None else {k: v for k, v in settings.items() if k != "rounds"}


class Bootstrap:
    def __init__(self, settings: BootstrapSettings, out: Path | str, config: Config | None = None,
                 progress: bool = True, execution: Any = None, ray: str | None = None) -> None:
        """``execution`` (:class:`learner.devices.Execution`): how the rounds train (device, AMP …);
        ``ray``: render the views on a Ray cluster (``synth.ray_render``). Neither changes the results'
        definition, so a run may resume with other values."""
        from learner.devices import env_context

        settings.validate()
        if env_context().distributed:
            raise ValueError("facerig bootstrap runs in one process (its rounds reconstruct, render and evaluate); "
                             "start it without torchrun and give it --device cuda")
        self.s, self.out, self.progress = settings, Path(out), progress
        self.execution, self.ray = execution, ray
        self.config = config or Config()
        self.out.mkdir(parents=True, exist_ok=True)
        from facemodel.outputs import acquire_lock

        self._lock = acquire_lock(self.out, ".lock", f"{self.out} (a bootstrap run)", ValueError)
        state_path = self.out / STATE_FILE
        if state_path.is_file():
            saved = json.loads(state_path.read_text())
            defaults = BootstrapSettings(real=[], synthetic=[], init=Path()).to_dict()   # keys added later
            saved_settings = {**{k: v for k, v in defaults.items() if k not in ("real", "synthetic", "init")},
                              **(saved.get("settings") or {})}
            if (_without_rounds(saved_settings) != _without_rounds(settings.to_dict())
                    or saved.get("config") != self.config.to_dict()):
                raise ValueError(f"{self.out} holds a bootstrap run with other settings; choose a new --out "
                                 "or rerun the original command (a larger --rounds adds rounds) to resume it")
        # Only the round count may change: rounds already done are kept, more rounds continue from
        # the last one (``--rounds 4`` on a finished 2-round run trains rounds 3 and 4).
        _write_json(state_path, {"settings": settings.to_dict(), "config": self.config.to_dict()})
        self.face_model = FaceModel.load()

    def round_dir(self, r: int) -> Path:
        return self.out / f"round{r}"

    def model_of(self, r: int) -> Path:
        return Path(self.s.init) if r == 0 else self.round_dir(r) / "model.onnx"

    def _current_onnx(self, r: int) -> Path:
        """The round's starting network as ONNX (a .pt init is exported once)."""
        src = self.model_of(r - 1)
        if src.suffix == ".onnx":
            return src
        target = self.out / "round0" / "model.onnx"
        if not target.is_file():
            from learner.export import export_onnx

            export_onnx(src, target)
        return target

    # step 1–2
    def reconstruct_round(self, r: int) -> Path:
        from synth.views import write_reconstructions

        from learner.onnx_import import onnx_metadata
        from learner.photo_corpus import load_photo_corpus

        recon = self.round_dir(r) / "recon"
        if (recon / "manifest.json").is_file():
            return recon
        model = self._current_onnx(r)
        images, lms, names = [], [], []
        for path in self.s.real:
            d = load_photo_corpus(path)
            images.append(d.images)
            lms.append(d.landmarks)
            names.append(np.char.add(f"{Path(path).name}/", d.names.astype(str)))
        images, lms, names = np.concatenate(images), np.concatenate(lms), np.concatenate(names)
        size = images.shape[1]
        params = reconstruct(model, images)
        layout = ParamLayout.from_metadata(onnx_metadata(model), params.shape[1])
        scores = seed_scores(self.face_model, params, layout, lms, size)
        keep = select_seeds(scores, self.s.max_seed_yaw, self.s.max_seed_nme, self.s.max_seeds)
        info = {"round": r, "model": str(model), "photos": int(len(images)),
                "filter": {"max_abs_yaw_deg": self.s.max_seed_yaw, "max_nme51_bbox_pct": self.s.max_seed_nme,
                           "max_seeds": self.s.max_seeds,
                           "passed_yaw": int((scores["abs_yaw_deg"] <= self.s.max_seed_yaw).sum()),
                           "passed_both": int(((scores["abs_yaw_deg"] <= self.s.max_seed_yaw)
                                               & (scores["nme51"] <= self.s.max_seed_nme)).sum()),
                           "kept": int(len(keep)),
                           "median_nme51_all": float(np.nanmedian(scores["nme51"])),
                           "median_nme51_kept": float(np.median(scores["nme51"][keep])) if len(keep) else None}}
        log.info("round %d seeds: %s", r, info["filter"])
        if self.s.refine_seeds and len(keep):
            refined, info["refine"] = refine_params(self.face_model, params[keep], layout, lms[keep], size,
                                                    self.progress, onnx_refine_gate(model))
            params = params.copy()
            params[keep] = refined
            log.info("round %d seeds refined on the detector landmarks: %s", r, info["refine"])
        write_reconstructions(recon, images[keep], params[keep], layout, names[keep],
                              {k: v[keep] for k, v in scores.items()}, info)
        return recon

    # step 3
    def views_round(self, r: int, recon: Path) -> Path:
        from synth.views import ViewSettings, render_views

        views = ViewSettings(source=recon, rotations=self.s.rotations if self.s.rotate else 0,
                             relight=self.s.relight if self.s.resample else 0, delight_light=self.s.delight_light)
        out = self.round_dir(r) / "views"
        render_views(views, out, workers=self.s.workers, seed=self.s.seed * 1000 + r, progress=self.progress,
                     ray=self.ray)
        return out

    # step 4–5
    def train_round(self, r: int, views: Path | None) -> Path:
        from learner.export import export_onnx
        from learner.train import Trainer

        model = self.round_dir(r) / "model.onnx"
        if model.is_file():
            return model
        cfg = Config.from_dict(self.config.to_dict())
        start = self._current_onnx(r)
        cfg.train.init = str(start)
        cfg.train.freeze_batchnorm = True
        cfg.train.steps = self.s.steps_per_round
        corpora = list(self.s.synthetic) + ([views] if views else []) + (list(self.s.real) if self.s.landmarks
                                                                        else [])
        run = self.round_dir(r) / "run"
        trainer = Trainer(corpora, run, cfg, resume=(run / "last.pt").is_file(), progress=self.progress,
                          execution=self.execution)
        trainer.run()
        export_onnx(run / "last.pt", model)
        return model

    # step 6
    def evaluate_round(self, r: int) -> dict[str, Any]:
        path = self.round_dir(r) / "eval.json"
        if path.is_file():
            return json.loads(path.read_text())
        model = self.model_of(r) if r else self._current_onnx(1)
        result: dict[str, Any] = {"round": r, "model": str(model)}
        if self.s.helen:
            from evaluation.landmarks import run as eval_landmarks

            rep = eval_landmarks(Path(self.s.helen), path.with_name("helen.json"), onnx_path=model,
                                 progress=self.progress)
            result["helen"] = {k: rep[k] for k in ("n", "failed", "nme_bbox_68", "nme_bbox_51", "nme_io_68",
                                                   "nme_io_51", "nme_bbox_68_balanced", "yaw_bins")}
            result["helen"]["by_contour"] = {c: v["nme_bbox_68"] for c, v in rep.get("by_contour", {}).items()}
        if self.s.synthetic_test:
            from evaluation.synthetic import run as eval_synthetic

            rep = eval_synthetic(Path(self.s.synthetic_test), path.with_name("synthetic.json"), onnx_path=model,
                                 progress=self.progress)
            result["synthetic"] = {k: rep[k] for k in ("n", "vertex_mm_camera", "vertex_mm_aligned",
                                                       "nme_bbox_68", "expression_mae", "rotation_deg", "yaw_bins")}
        path.parent.mkdir(parents=True, exist_ok=True)
        _write_json(path, result)
        return result

    def run(self) -> dict[str, Any]:
        try:
            results = [self.evaluate_round(0)]
            for r in range(1, self.s.rounds + 1):
                log.info("bootstrap round %d/%d", r, self.s.rounds)
                views = None
                if self.s.rotate or self.s.resample:   # landmarks alone need no reconstructions
                    views = self.views_round(r, self.reconstruct_round(r))
                self.train_round(r, views)
                results.append(self.evaluate_round(r))
                write_report(self.out, results, self.s)
            return {"rounds": results, "model": str(self.model_of(self.s.rounds))}
        finally:
            self.close()

    def close(self) -> None:
        """Release the bootstrap folder's lock."""
        if self._lock is not None:
            self._lock.close()
            self._lock = None


def _write_json(path: Path, obj: Any) -> None:
    write_json(path, obj)


def _get(d: dict[str, Any], *keys: str) -> float:
    for k in keys:
        d = d.get(k) if isinstance(d, dict) else None
        if d is None:
            return math.nan
    return float(d)


def write_report(out: Path, results: list[dict[str, Any]], s: BootstrapSettings) -> None:
    """``report.json``, ``report.md`` (table) and ``report.png`` (metric against round)."""
    rows = []
    for res in results:
        seeds = None
        recon = out / f"round{res['round']}" / "recon" / "manifest.json"
        if recon.is_file():
            seeds = json.loads(recon.read_text())["filter"]["kept"]
        rows.append({"round": res["round"], "seeds": seeds,
                     "helen_nme_bbox_68": _get(res, "helen", "nme_bbox_68"),
                     "helen_nme_bbox_51": _get(res, "helen", "nme_bbox_51"),
                     "helen_nme_io_68": _get(res, "helen", "nme_io_68"),
                     "helen_balanced_68": _get(res, "helen", "nme_bbox_68_balanced"),
                     "helen_68_yaw_0_30": _get(res, "helen", "yaw_bins", "0-30", "nme_bbox_68"),
                     "helen_68_yaw_30_60": _get(res, "helen", "yaw_bins", "30-60", "nme_bbox_68"),
                     "synthetic_vertex_mm_aligned": _get(res, "synthetic", "vertex_mm_aligned"),
                     "synthetic_nme_bbox_68": _get(res, "synthetic", "nme_bbox_68"),
                     "synthetic_nme_68_yaw_60_90": _get(res, "synthetic", "yaw_bins", "60-90", "nme_bbox_68")})
    # a metric not measured (no --helen / --synthetic-test) is NaN in the table and null in the JSON
    _write_json(out / "report.json", finite_or_none({"settings": s.to_dict(), "rows": rows}))
    cols = list(rows[0])
    lines = ["# Bootstrap report", "",
             f"components: rotate={s.rotate} resample={s.resample} landmarks={s.landmarks}; "
             f"{s.steps_per_round} steps per round; seeds |yaw| ≤ {s.max_seed_yaw}°, NME51 ≤ {s.max_seed_nme} %", "",
             "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for row in rows:
        lines.append("| " + " | ".join("" if v is None else (f"{v:.3f}" if isinstance(v, float) else str(v))
                                       for v in row.values()) + " |")
    atomic_write_text(out / "report.md", "\n".join(lines) + "\n")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
        x = [r["round"] for r in rows]
        for key in ("helen_nme_bbox_68", "helen_nme_bbox_51", "helen_balanced_68"):
            axes[0].plot(x, [r[key] for r in rows], "o-", label=key)
        axes[0].set(xlabel="round", ylabel="NME bbox (%)", title="Helen (real photos)")
        for key in ("synthetic_nme_bbox_68", "synthetic_nme_68_yaw_60_90", "synthetic_vertex_mm_aligned"):
            axes[1].plot(x, [r[key] for r in rows], "o-", label=key)
        axes[1].set(xlabel="round", title="synthetic test (NME %, vertex mm)")
        for ax in axes:
            ax.legend(fontsize=7)
            ax.grid(alpha=0.3)
        fig.tight_layout()
        with atomic_output(out / "report.png") as tmp:
            fig.savefig(tmp, dpi=110)
        plt.close(fig)
    except Exception as exc:  # noqa: BLE001 — a plot must never fail the run
        log.warning("could not plot the report: %s", exc)


__all__ = ["BootstrapSettings", "Bootstrap", "reconstruct", "seed_scores", "select_seeds", "write_report"]
