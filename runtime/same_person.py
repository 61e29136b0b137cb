"""Several photos of one person → one head (no bpy, no torch: numpy + onnxruntime).

Every photo goes through the single-photo pipeline (:func:`pipeline.reconstruct_photo`); the
confidence network (C-Net, Deep3DFaceRecon sec. 5) reads the *same* canonical crop the regressor
read and gives one positive confidence per identity coefficient; ``facemodel.aggregation``
turns the per-photo identities into one (confidence-weighted element-wise mean). Without a C-Net
file the identities are averaged plainly. Photos whose identity lies farther than the C-Net's
``facerig.same_person_rms_mm`` from the aggregate are flagged ("looks like a different person")
and left out of the shape. With refinement the identities aggregated are each photo's own refined
on its detected points (the confidences and flags stay those of the network's identities). Pose,
expression, lighting and camera come from the most frontal photo; every photo's params carry the
shared identity so the texture is projected from all of them onto one consistent shape.

C-Net contract: input ``image`` float32 (N, 3, S, S) sRGB in [0, 1] (the regressor's crop and
preprocessing); output ``confidence`` float32 (N, n_identity) > 0; metadata ``facerig.n_identity``,
``facerig.input_size``, ``facerig.cnet_mode``, ``facerig.same_person_rms_mm``, ``facerig.model_card``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, replace
from importlib import import_module
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .fm import MODELS_DIR, facemodel
from .photo import PhotoError
from .pipeline import (FaceIndexError, PhotoReconstruction, get_regressor, load_face_model, reconstruct_photo,
                       refine_reconstruction)
from .regressor import (INPUT_NAME, Regressor, declared_input_size, model_version, network_input,
                        open_contract, resolve_model_file)

log = logging.getLogger(__name__)

aggregation = import_module(facemodel.__name__ + ".aggregation")

CNET_FILENAME = "facerig_cnet.onnx"
DEFAULT_CNET_PATH = MODELS_DIR / CNET_FILENAME
CNET_ENV_VAR = "FACERIG_CNET"
CONFIDENCE_NAME = "confidence"
CNET_MODES = {"elementwise", "global"}   # (N, n_identity) or one score per photo (N, 1)
FALLBACK_THRESHOLD_MM = 5.0              # no C-Net: near its calibrated leave-one-out threshold (5.7 mm); crops of one photo already differ by up to ~3 mm
NO_CNET = "none (plain mean)"
MIN_CONFIDENCE = 1e-6

PhotoInput = str | Path | np.ndarray


class ConfidenceNetError(ValueError):
    """The C-Net file is unreadable, breaks the contract or does not fit the regressor."""


class SamePersonError(ValueError):
    """No photo of the set could be used."""


def resolve_cnet_path(path: str | Path | None = None) -> Path:
    """Explicit path, then ``$FACERIG_CNET``, then the C-Net shipped in the add-on."""
    return resolve_model_file(path, CNET_ENV_VAR, DEFAULT_CNET_PATH, "confidence network")


class ConfidenceNet:
    """onnxruntime session around a facerig C-Net: crops → per-coefficient identity confidences."""

    def __init__(self, onnx_path: str | Path | None = None, threads: int | None = None) -> None:
        self.path = resolve_cnet_path(onnx_path)
        self.session, self.metadata, image, confidence = open_contract(
            self.path, threads, ConfidenceNetError, CONFIDENCE_NAME)
        self.input_size = declared_input_size(self.metadata, image.shape, ConfidenceNetError)
        self.n_identity = self._n_identity(confidence.shape)
        self.mode = self.metadata.get("facerig.cnet_mode", "elementwise")
        if self.mode not in CNET_MODES:
            raise ConfidenceNetError(f"{self.path.name}: unknown facerig.cnet_mode {self.mode!r} "
                                     f"(expected one of {sorted(CNET_MODES)})")
        self.threshold_mm = self._threshold()
        self.model_version = model_version(self.path, self.metadata)
        log.info("C-Net %s: input %d², %d identity modes (%s), same-person threshold %.2f mm, version %s",
                 self.path.name, self.input_size, self.n_identity, self.mode, self.threshold_mm,
                 self.model_version)

    def _n_identity(self, shape: list[Any]) -> int:
        if "facerig.n_identity" in self.metadata:
            return int(self.metadata["facerig.n_identity"])
        if isinstance(shape[-1], int) and shape[-1] > 1:
            return int(shape[-1])
        raise ConfidenceNetError(f"{self.path.name} declares no facerig.n_identity")

    def _threshold(self) -> float:
        text = self.metadata.get("facerig.same_person_rms_mm")
        if text is None:
            log.warning("%s has no facerig.same_person_rms_mm; flagging at %.1f mm", self.path.name,
                        FALLBACK_THRESHOLD_MM)
            return FALLBACK_THRESHOLD_MM
        try:
            value = float(text)
        except ValueError:
            raise ConfidenceNetError(f"{self.path.name}: facerig.same_person_rms_mm={text!r} is not a number") from None
        if not np.isfinite(value) or value <= 0:
            raise ConfidenceNetError(f"{self.path.name}: facerig.same_person_rms_mm={text!r} must be > 0")
        return value

    def check_compatible(self, regressor: Regressor) -> None:
        """The C-Net must read the regressor's crop size and weight its identity coefficients."""
        if self.input_size != regressor.input_size:
            raise ConfidenceNetError(f"C-Net {self.path.name} reads {self.input_size}² crops, the regressor "
                                     f"{regressor.path.name} {regressor.input_size}²")
        if self.n_identity != regressor.layout.n_identity:
            raise ConfidenceNetError(f"C-Net {self.path.name} weights {self.n_identity} identity modes, the "
                                     f"regressor {regressor.path.name} predicts {regressor.layout.n_identity}")
        if not self.trained_for(regressor):
            log.warning("C-Net %s was trained for regressor %s, not %s: its confidences may not fit this "
                        "regressor's errors (retrain with `facerig cnet train --regressor`)", self.path.name,
                        self.metadata.get("facerig.regressor_sha256_12"), regressor.model_version)

    def trained_for(self, regressor: Regressor) -> bool:
        """Whether this C-Net was trained on ``regressor``'s errors (True when the file does not say)."""
        trained_for = self.metadata.get("facerig.regressor_sha256_12")
        return not trained_for or regressor.model_version.endswith(trained_for)

    def predict(self, crops: np.ndarray) -> np.ndarray:
        """uint8 (N, S, S, 3) crops → float32 (N, n_identity) confidences (global mode: (N, 1))."""
        x = network_input(crops, self.input_size)
        (out,) = self.session.run([CONFIDENCE_NAME], {INPUT_NAME: x})
        out = np.asarray(out, np.float32)
        width = self.n_identity if self.mode == "elementwise" else 1
        if out.shape != (len(x), width):
            raise ConfidenceNetError(f"C-Net returned {out.shape}, expected {(len(x), width)}")
        if not np.isfinite(out).all():
            raise ConfidenceNetError("C-Net returned non-finite confidences")
        if (out < MIN_CONFIDENCE).any():
            log.warning("C-Net returned confidences ≤ %g; clipped", MIN_CONFIDENCE)
        return np.maximum(out, MIN_CONFIDENCE)

    def describe(self) -> dict[str, Any]:
        return {"path": str(self.path), "version": self.model_version, "input_size": self.input_size,
                "n_identity": self.n_identity, "mode": self.mode, "threshold_mm": self.threshold_mm}


_CNETS: dict[Path, ConfidenceNet] = {}


def get_cnet(cnet: ConfidenceNet | str | Path | None = None) -> ConfidenceNet | None:
    """A cached :class:`ConfidenceNet`, or None (with a warning) when no C-Net file exists.

    A file that exists but is broken raises: silently averaging would hide it.
    """
    if isinstance(cnet, ConfidenceNet):
        return cnet
    try:
        path = resolve_cnet_path(cnet)
    except FileNotFoundError as exc:
        log.warning("%s; identities are averaged without confidences", exc)
        return None
    if path not in _CNETS:
        _CNETS[path] = ConfidenceNet(path)
    return _CNETS[path]


def shipped_cnet_for(regressor: Regressor) -> ConfidenceNet | None:
    """Of the C-Nets in the add-on's models/ folder (``facerig_cnet*.onnx``), the one trained for
    ``regressor`` (its ``facerig.regressor_sha256_12``), or None."""
    for path in sorted(DEFAULT_CNET_PATH.parent.glob("facerig_cnet*.onnx")):
        net = get_cnet(path)
        if net is not None and net.metadata.get("facerig.regressor_sha256_12") and net.trained_for(regressor):
            return net
    return None


def cnet_for(regressor: Regressor, cnet: ConfidenceNet | str | Path | None = None
             ) -> tuple[ConfidenceNet | None, list[str]]:
    """The C-Net to weigh ``regressor``'s identities with (None: plain averaging) and notes for the user.

    ``cnet`` given: that one, as given. Else the shipped default, unless it was trained for another
    regressor: it holds the default regressor's weights, so with another regressor (e.g. the
    synthetic-only model) its confidences would not fit and it would pull research-trained weights
    into a commercially clean run; a shipped C-Net made for this regressor replaces it.
    """
    net, notes = get_cnet(cnet), []
    if net is not None and net.path == DEFAULT_CNET_PATH.resolve() and cnet is None and not net.trained_for(regressor):
        net = shipped_cnet_for(regressor)
        if net is None:
            notes.append(f"no shipped C-Net was trained for {regressor.path.name}: identities are averaged without "
                         "confidences (pass a C-Net explicitly to use one anyway)")
            log.warning(notes[-1])
    if net is not None:
        net.check_compatible(regressor)
    return net, notes


@dataclass
class SkippedPhoto:
    source: str
    reason: str


@dataclass
class SamePersonReconstruction:
    """One person from several photos: per-photo reconstructions sharing the aggregated identity."""

    photos: list[PhotoReconstruction]   # params.identity = ``identity``; regressed_params (or crop_params
                                        # when not refined) = raw network output
    identities: np.ndarray              # (K, n) per-photo identities as regressed
    confidences: np.ndarray | None      # (K, n) or (K, 1) C-Net output; None = plain mean
    identity: np.ndarray                # (n,) the person's shape: refined_identities aggregated (refined),
                                        # else network_identity
    network_identity: np.ndarray        # (n,) the network's identities aggregated (same weights)
    distances_mm: np.ndarray            # (K,) RMS face-shape distance of each photo to the others' aggregate (leave-one-out)
    outliers: np.ndarray                # (K,) bool: farther than threshold_mm ("a different person?")
    threshold_mm: float
    primary_index: int                  # the most frontal photo: pose, expression, light, camera
    refined_identities: np.ndarray | None = None   # (K, n) each photo's identity refined on its own points
    skipped: list[SkippedPhoto] = field(default_factory=list)
    cnet_version: str = NO_CNET
    warnings: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)   # ms; per-photo stages are in photos[k].timings

    @property
    def primary(self) -> PhotoReconstruction:
        return self.photos[self.primary_index]

    @property
    def params(self) -> "facemodel.FaceParams":
        return self.primary.params

    @property
    def sources(self) -> list[str]:
        return [p.source for p in self.photos]

    @property
    def model_version(self) -> str:
        return self.primary.model_version

    def confidence_summary(self) -> list[float]:
        """Mean confidence per photo (1.0 each without a C-Net): how much each photo counted."""
        if self.confidences is None:
            return [1.0] * len(self.photos)
        return [float(c) for c in np.asarray(self.confidences, np.float64).mean(1)]

    def summary(self) -> dict[str, Any]:
        """JSON-able record of what was used and how (stored on the Blender object, printed by the CLI)."""
        means = self.confidence_summary()
        photos = [{"source": p.source, "face_index": p.face_index, "yaw_deg": round(_yaw_deg(p), 2),
                   "mean_confidence": round(means[k], 6), "distance_mm": round(float(self.distances_mm[k]), 4),
                   "different_person": bool(self.outliers[k]), "primary": k == self.primary_index}
                  for k, p in enumerate(self.photos)]
        return {"photos": photos, "skipped": [{"source": s.source, "reason": s.reason} for s in self.skipped],
                "primary": self.primary.source, "cnet_version": self.cnet_version,
                "threshold_mm": self.threshold_mm, "regressor_version": self.model_version,
                "identity": [float(v) for v in self.identity],
                "network_identity": [float(v) for v in self.network_identity], "timings_ms": self.timings}


def _yaw_deg(recon: PhotoReconstruction) -> float:
    return float(np.rad2deg(np.asarray(recon.params.rotation)[0]))


def _name(photo: PhotoInput, index: int) -> str:
    return f"image[{index}]" if isinstance(photo, np.ndarray) else str(photo)


def _face_indices(face_index: int | None | Sequence[int | None], n: int) -> list[int | None]:
    if face_index is None or isinstance(face_index, (int, np.integer)):
        return [None if face_index is None else int(face_index)] * n
    indices = list(face_index)
    if len(indices) != n:
        raise ValueError(f"{len(indices)} face indices for {n} photos")
    return indices


def reconstruct_views(paths: Sequence[PhotoInput], face_index: int | None | Sequence[int | None],
                      regressor: Regressor) -> tuple[list[PhotoReconstruction], list[SkippedPhoto]]:
    """The single-photo pipeline on each photo, unrefined (the network's identities are what get
    aggregated); unreadable or faceless photos are skipped (warned)."""
    recons, skipped = [], []
    for k, (photo, index) in enumerate(zip(paths, _face_indices(face_index, len(paths)))):
        name = _name(photo, k)
        try:
            recon = reconstruct_photo(photo, index, regressor, refine=False)
        except FaceIndexError:   # the user asked for a face that is not there: an error, not a skip
            raise
        except PhotoError as exc:   # unreadable, missing or faceless: skipped
            log.warning("skipping %s: %s", name, exc)
            skipped.append(SkippedPhoto(name, str(exc)))
            continue
        recon.source = name
        recons.append(recon)
    return recons, skipped


def most_frontal(recons: list[PhotoReconstruction], exclude: np.ndarray | None = None) -> int:
    """Index of the smallest |yaw| (ties: first), preferring photos not in ``exclude``."""
    yaw = np.abs([_yaw_deg(r) for r in recons])
    if exclude is not None and not exclude.all():
        yaw = np.where(exclude, np.inf, yaw)
    return int(np.argmin(yaw))


def with_identity(recon: PhotoReconstruction, identity: np.ndarray) -> PhotoReconstruction:
    """The same photo reconstruction with another identity, in both its photo and its crop params
    (the JSON output carries both, so they describe one shape)."""
    def swapped(params: "facemodel.FaceParams") -> "facemodel.FaceParams":
        return replace(params.numpy(), identity=np.asarray(identity, np.float32).copy())

    return replace(recon, params=swapped(recon.params), crop_params=swapped(recon.crop_params))


def fit_to_shape(recon: PhotoReconstruction, shape: np.ndarray, model: "facemodel.FaceModel") -> PhotoReconstruction:
    """``recon`` (refined once on its own points) with the person's ``shape``, and its expression and
    pose fitted to the same points for that shape. A photo whose points were not trusted the first time
    (the regressor's limit) is not fitted to them again: it keeps the network's pose and expression."""
    if (recon.refinement or {}).get("skipped"):
        return with_identity(recon, shape)
    return refine_reconstruction(recon, model, shape)


def reconstruct_same_person(paths: Sequence[PhotoInput], face_index: int | None | Sequence[int | None] = None,
                            regressor: Regressor | str | Path | None = None,
                            cnet: ConfidenceNet | str | Path | None = None,
                            model: "facemodel.FaceModel | None" = None, refine: bool = True
                            ) -> SamePersonReconstruction:
    """Photos of one person → one identity (C-Net weighted), flags, a primary photo for the pose.

    ``face_index``: one index for every photo, or one per photo (None = the largest face).
    The flags compare the network's own identities (what the C-Net and its threshold were trained on).
    ``refine`` refines each photo's identity on its own detected landmarks as for a single photo,
    aggregates those with the same confidences (flagged photos left out), then fits every photo's
    expression and pose to its landmarks with that shape fixed (:func:`pipeline.refine_reconstruction`).
    One fit of a shared identity to all photos' points at once was tried and dropped: it trusts the
    detector's systematic errors more with every photo (docs/research-log.md, "Several photos of one person").
    """
    if not len(paths):
        raise ValueError("no photos given")
    timings: dict[str, float] = {}
    t_all = t = time.perf_counter()
    reg = get_regressor(regressor)
    net, notes = cnet_for(reg, cnet)
    model = model if model is not None else load_face_model()
    timings["model_load"] = (time.perf_counter() - t) * 1e3

    t = time.perf_counter()
    recons, skipped = reconstruct_views(paths, face_index, reg)
    timings["photos"] = (time.perf_counter() - t) * 1e3
    warnings = notes + [f"skipped {s.source}: {s.reason}" for s in skipped]
    if not recons:
        raise SamePersonError("no usable photo: " + "; ".join(f"{Path(s.source).name}: {s.reason}" for s in skipped))

    t = time.perf_counter()
    confidences = net.predict(np.stack([r.crop for r in recons])) if net is not None else None
    timings["cnet"] = (time.perf_counter() - t) * 1e3

    t = time.perf_counter()
    identities = np.stack([np.asarray(r.params.identity, np.float32) for r in recons])
    threshold = net.threshold_mm if net is not None else FALLBACK_THRESHOLD_MM
    distances = np.atleast_1d(aggregation.leave_one_out_distances(model, identities, confidences))
    outliers = np.atleast_1d(aggregation.flag_outliers(model, identities, threshold, confidences))
    keep = ~outliers if (~outliers).any() else np.ones_like(outliers)   # a flagged photo is left out
    identity = aggregation.aggregate_identity(identities[keep], None if confidences is None else confidences[keep])
    for k in np.flatnonzero(outliers):
        msg = (f"{recons[k].source} looks like a different person and is left out of the shape: its face is "
               f"{distances[k]:.2f} mm (RMS) from the other photos' (threshold {threshold:.2f} mm)")
        log.warning(msg)
        warnings.append(msg)
    primary = most_frontal(recons, outliers)
    timings["aggregate"] = (time.perf_counter() - t) * 1e3
    t = time.perf_counter()
    refined_identities = None
    if refine:   # each photo's identity refined on its own points, weighed by the same confidences …
        singles = [refine_reconstruction(r, model) for r in recons]
        refined_identities = np.stack([np.asarray(r.crop_params.identity, np.float32) for r in singles])
        shape = aggregation.aggregate_identity(refined_identities[keep],
                                               None if confidences is None else confidences[keep])
        photos = [fit_to_shape(r, shape, model) for r in singles]   # … then pose and expression for it
    else:
        shape = identity
        photos = [with_identity(r, identity) for r in recons]
    timings["refine"] = (time.perf_counter() - t) * 1e3
    timings["total"] = (time.perf_counter() - t_all) * 1e3
    log.info("same person: %d photos (%d skipped), primary %s, C-Net %s, distances %s mm", len(photos),
             len(skipped), photos[primary].source, net.model_version if net else NO_CNET,
             np.round(distances, 2).tolist())
    return SamePersonReconstruction(photos=photos, identities=identities, confidences=confidences, identity=shape,
                                    network_identity=identity, refined_identities=refined_identities,
                                    distances_mm=distances, outliers=outliers, threshold_mm=float(threshold),
                                    primary_index=primary, skipped=skipped,
                                    cnet_version=net.model_version if net is not None else NO_CNET,
                                    warnings=warnings, timings=timings)


__all__ = ["ConfidenceNet", "ConfidenceNetError", "SamePersonError", "SamePersonReconstruction", "SkippedPhoto",
           "cnet_for", "fit_to_shape", "get_cnet", "most_frontal", "reconstruct_same_person", "reconstruct_views",
           "resolve_cnet_path", "with_identity"]
