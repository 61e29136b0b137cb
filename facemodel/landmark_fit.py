"""Refine a face's parameters so its model points land on detected 2-D landmarks (MAP fit).

Why: the regressor's landmarks are ≈ 0.6 % NME less accurate than the MediaPipe FaceMesh
points the add-on detects anyway (it underfits its teacher). A few Levenberg-damped
Gauss-Newton steps of identity, expression, rotation and translation against those points,
starting from the regressor's prediction, close that gap and more: ≈ 3 ms of numpy per face on the
51 inner points, ≈ 6–8 ms on FaceMesh's 397 dense points (:class:`LandmarkRefiner`; the numerics are
:mod:`facemodel.landmark_solver`, docs/performance.md).

The cost is the posterior of the fit, in pixels of the image the points are given in:

    Σ w_i |project(X_i) − p_i|² / σ²  +  |α_id − μ_id|²  +  λ_expr |β − β₀|²  +  ρ Σ_k λ_k/λ_1 |c_k − c₀_k|²

with α_id the identity coefficients under ICT's N(0, I) prior (mean ``identity_prior_mean``,
zero by default) and β the expression weights, kept in [0, 1] and optionally pulled towards
their starting values. Optionally (``n_corrective`` > 0) the corrective field's coefficients c_k ∈ R³ in
the first manifold harmonics (:mod:`facemodel.harmonics`) are unknowns too, under the eigenvalue-weighted
prior ρ Σ λ_k/λ_1 |c_k − c₀_k|² (the field's Dirichlet energy; c₀ the start's, i.e. the network's).
Camera-space points are linear in identity, expression, corrective and translation,
so their Jacobian is exact (``[B_id; B_expr; B_corr] Rᵀ`` and the identity); the three Euler angles
use the analytic derivative of ``R = Rz Rx Ry``. A step is kept only when the cost falls,
otherwise the damping grows ×10 (without that check the fit diverges on hard faces).
Lighting, albedo and camera are not touched.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from functools import cached_property, lru_cache

import numpy as np

from .blas_threads import single_blas_thread
from .formation import landmarks_2d
from .harmonics import corrective_displacement, corrective_prior_precision
from .landmark_maps import MEDIAPIPE_SPREAD_MM, MEDIAPIPE_TO_68, MEDIAPIPE_TO_ICT
from .landmark_solver import Block, FitBasis, Problem, State, check_gram_precision, minimise
from .metrics import bbox_size, point_errors
from .model import FaceModel, ModelArrays
from .params import DEFAULT_N_CORRECTIVE, FaceParams

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LandmarkFitSettings:
    """How hard the fit trusts the points; defaults measured on Helen (docs/research-log.md, "Refinement on
    detected landmarks")."""

    steps: int = 10                 # Gauss-Newton iterations (each ≈ 0.3 ms for 51 points, 0.6 for 397)
    sigma_px: float = 1.0           # landmark noise, pixels of the image the points are in
    identity_prior: float = 1.0     # precision of the identity prior (ICT's N(0, I) is 1)
    expression_prior: float = 0.0   # precision pulling expressions to their start (0 = free in [0, 1])
    fit_identity: bool = True
    damping: float = 1e-3           # initial Levenberg damping (relative to the normal-matrix diagonal)
    n_corrective: int = 0           # corrective harmonics fitted (0: the field is kept as it starts)
    corrective_prior: float = 0.0   # ρ: precision (1/cm²) of the first harmonic's coefficients, λ_k/λ_1 × after
    gram: str = "float64"           # precision of the Gauss-Newton matrix JᵀJ (landmark_solver: "float32" is faster)

    def __post_init__(self) -> None:
        if self.steps < 0:
            raise ValueError(f"steps must be ≥ 0, got {self.steps}")
        if not self.sigma_px > 0:
            raise ValueError(f"sigma_px must be positive, got {self.sigma_px}")
        if self.expression_prior < 0 or self.identity_prior < 0 or self.corrective_prior < 0:
            raise ValueError(f"priors must be ≥ 0, got identity {self.identity_prior}, "
                             f"expression {self.expression_prior}, corrective {self.corrective_prior}")
        if self.n_corrective < 0:
            raise ValueError(f"n_corrective must be ≥ 0, got {self.n_corrective}")
        check_gram_precision(self.gram)


@dataclass(frozen=True)
class LandmarkFit:
    """The refined parameters and how far the points moved."""

    params: FaceParams
    rms_before_px: float            # mean point distance (pixels) at the start
    rms_after_px: float
    steps_accepted: int
    skipped: str = ""               # why the points were not used (params unchanged), else ""
    points: str = ""                # which points the refiner fitted ("dense" / "inner 51")


def fit_problem(basis: FitBasis, params: FaceParams, pixels: np.ndarray | None, width: float, height: float,
                settings: LandmarkFitSettings, weights: np.ndarray,
                identity_prior_mean: np.ndarray | None) -> tuple[Problem, list[Block]]:
    """The cost of :func:`fit_landmarks` for one face: its unknowns (identity modes and the corrective field's
    harmonics when the identity is fitted, the expressions in [0, 1], then pose) and their priors. A further
    linear block is one more :class:`~facemodel.landmark_solver.Block` here and its basis in :class:`FitBasis`."""
    ident = np.asarray(params.identity, np.float64)
    expr = np.asarray(params.expression, np.float64)
    blocks = []
    origin = basis.neutral
    if settings.fit_identity:
        mean = None if identity_prior_mean is None else np.asarray(identity_prior_mean, np.float64)
        blocks.append(Block("identity", ident, settings.identity_prior, mean))
    else:
        origin = origin + basis.offset("identity", ident)
    blocks.append(Block("expression", expr, settings.expression_prior, expr, 0.0, 1.0))
    n_corr = settings.n_corrective if settings.fit_identity else 0   # harmonics fitted
    if n_corr:   # coefficients (harmonic, axis) row-major; the start's truncated or zero-padded to n_corr
        start = np.asarray(params.with_corrective_modes(n_corr).corrective, np.float64).reshape(-1)
        blocks.append(Block("corrective", start, corrective_prior_precision(
            basis.arrays.corrective_eigenvalues, n_corr, settings.corrective_prior), start))
    else:        # a field not fitted stays as it starts: part of the fixed model points
        origin = origin + np.asarray(corrective_displacement(basis.arrays.corrective_basis,
                                                             np.asarray(params.corrective, np.float64)), np.float64)
    prob = Problem(basis, blocks, origin, np.asarray(params.camera, np.float64), float(width), float(height),
                   pixels, weights, settings.sigma_px, settings.gram)
    return prob, blocks


def _minimise(prob: Problem, state: State, settings: LandmarkFitSettings) -> tuple[State, int]:
    """Levenberg-damped Gauss-Newton from ``state`` (:func:`facemodel.landmark_solver.minimise`)."""
    return minimise(prob, state, settings.steps, settings.damping)


def fit_landmarks(arrays: ModelArrays | FitBasis, params: FaceParams, pixels: np.ndarray, width: float,
                  height: float, settings: LandmarkFitSettings = LandmarkFitSettings(),
                  weights: np.ndarray | None = None, identity_prior_mean: np.ndarray | None = None) -> LandmarkFit:
    """Refine one face's ``params`` so the ``arrays`` vertices project onto ``pixels`` (N, 2).

    ``arrays`` is the vertex subset (``model.arrays.subset(indices)``) the points stand for, or its
    :class:`FitBasis` made once (``FitBasis.from_arrays``: saves ≈ 0.5 ms a call on the dense points);
    ``width`` × ``height`` the image the camera of ``params`` and the pixels refer to. Points
    with non-finite coordinates or zero ``weights`` are ignored. Raises ``ValueError`` for
    shapes that do not match or fewer than 6 usable points. The same as :func:`prepare_fit` then
    :meth:`PreparedFit.run`.
    """
    return prepare_fit(arrays, params, width, height, settings, weights, identity_prior_mean).run(pixels)


def prepare_fit(arrays: ModelArrays | FitBasis, params: FaceParams, width: float, height: float,
                settings: LandmarkFitSettings = LandmarkFitSettings(), weights: np.ndarray | None = None,
                identity_prior_mean: np.ndarray | None = None) -> "PreparedFit":
    """:func:`fit_landmarks` up to its points: the problem at the start, and with the float32 Gram the first
    step's Gauss-Newton matrix (``landmark_solver.Problem.prepare``). The photo path runs this while FaceMesh
    finds the points."""
    if np.asarray(params.expression).ndim != 1:
        raise ValueError("fit_landmarks refines one face; pass params[i] for a batch")
    n = arrays.neutral.shape[0]
    w = np.ones(n) if weights is None else np.asarray(weights, np.float64).copy()
    if w.shape != (n,) or np.any(w < 0) or not np.all(np.isfinite(w)):
        raise ValueError(f"weights must be ({n},) finite and ≥ 0")
    _check_usable(w)
    basis = arrays if isinstance(arrays, FitBasis) else FitBasis.from_arrays(arrays)
    prob, blocks = fit_problem(basis, params, None, width, height, settings, w, identity_prior_mean)
    theta = prob.clip(prob.pack(blocks, params.rotation, params.translation))
    with single_blas_thread():   # ~120² solves: threads cost more than they save (blas_threads)
        geometry = prob.prepare(theta)
    return PreparedFit(prob, theta, geometry, w, basis, params, width, height, settings, identity_prior_mean)


def _check_usable(weights: np.ndarray) -> None:
    if int((weights > 0).sum()) < 6:
        raise ValueError(f"need at least 6 usable points, got {int((weights > 0).sum())}")


@dataclass(frozen=True)
class PreparedFit:
    """A landmark fit made ready before its points are known (:func:`prepare_fit`); :meth:`run` fits them."""

    problem: Problem
    theta: np.ndarray                          # the start, clipped to the bounds
    geometry: tuple[np.ndarray, np.ndarray]    # its model and camera points
    weights: np.ndarray
    # what prepare_fit was given (a fit whose points are not all finite is made again with their weights at 0)
    basis: FitBasis = field(repr=False)
    params: FaceParams = field(repr=False)
    width: float
    height: float
    settings: LandmarkFitSettings
    identity_prior_mean: np.ndarray | None = field(repr=False)

    def run(self, pixels: np.ndarray) -> LandmarkFit:
        """The fit on ``pixels`` (N, 2); points with non-finite coordinates are ignored (the problem is then
        made again with their weights at zero)."""
        pixels = np.asarray(pixels, np.float64)
        n = self.weights.shape[0]
        if pixels.shape != (n, 2):
            raise ValueError(f"pixels must be ({n}, 2) for this vertex subset, got {pixels.shape}")
        finite = np.all(np.isfinite(pixels), 1)
        if not finite.all():
            w = self.weights.copy()
            w[~finite] = 0.0
            _check_usable(w)
            return prepare_fit(self.basis, self.params, self.width, self.height, self.settings, w,
                               self.identity_prior_mean).run(np.where(finite[:, None], pixels, 0.0))
        prob, params = self.problem, self.params
        prob.set_targets(pixels)
        start = prob.state(self.theta, self.geometry)
        with single_blas_thread():   # ~120² solves: threads cost more than they save (blas_threads)
            end, accepted = _minimise(prob, start, self.settings)

        fitted = prob.unpack(end.theta)
        ident = np.asarray(params.identity, np.float64).copy()
        if "identity" in fitted:
            ident[: len(fitted["identity"])] = fitted["identity"]
        dt = np.asarray(params.expression).dtype
        out = replace(params, identity=ident.astype(dt), expression=fitted["expression"].astype(dt),
                      rotation=fitted["rotation"].astype(dt), translation=fitted["translation"].astype(dt))
        if "corrective" in fitted:
            out = replace(out, corrective=fitted["corrective"].reshape(-1, 3).astype(dt))
        return LandmarkFit(out, prob.mean_distance(start, self.weights), prob.mean_distance(end, self.weights),
                           accepted)


# Chosen on Helen (detector box, MediaPipe FaceMesh points) and on synthetic faces whose true
# inner points carry Gaussian noise of MediaPipe's Helen accuracy (docs/research-log.md, "Refinement on detected
# landmarks").
# Both photo refinements build JᵀJ in float32 (landmark_solver, "Gram precision"): the same figures, a third faster.
INNER_REFINE_SETTINGS = LandmarkFitSettings(steps=10, sigma_px=2.0, expression_prior=25.0, gram="float32")
# The dense fit (≈ 400 FaceMesh points): σ chosen on renders whose FaceMesh points carry FaceMesh's own
# errors scaled to its photo accuracy (0.45 ×), where 2–8 px all score 4.03–4.06 mm (295 faces); 3 px keeps the
# identities' spread near the inner fit's (docs/research-log.md, "Dense FaceMesh points").
DENSE_REFINE_SETTINGS = LandmarkFitSettings(steps=10, sigma_px=3.0, expression_prior=25.0, gram="float32")
# Strength ρ (1/cm², first harmonic; λ_k/λ_1 × for the others) of the corrective field's prior in both fits,
# which fit the field's first DEFAULT_N_CORRECTIVE harmonics too (0 = off). Chosen on the synthetic proxy
# (600 test renders, FaceMesh's errors × 0.45, 452 refined): aligned error 3.891 mm without the field; with it
# 4.226 / 3.969 / 3.922 / 3.896 / 3.887 / 3.887 / 3.889 mm at ρ = 1 / 10 / 30 / 100 / 300 / 1000 / 3000 — the
# smallest error at 300, where the field is 0.19 mm RMS. Then measured once on Helen (detector box): 68 / 51
# points 2.821 / 2.202 → 2.807 / 2.194 %, 70 % of faces better (docs/corrective-shapes.md).
CORRECTIVE_PRIOR = 300.0
# FaceMesh points whose ICT vertex varies by less than this over the photos the table was derived on.
DENSE_SPREAD_LIMIT_MM = 15.0
# Up to the first |yaw| of the network's prediction the dense points are fitted, beyond the second the
# inner 51, in between both, their weights moving linearly (no step between neighbouring poses). On renders
# with FaceMesh's errors scaled to photos the dense fit wins at 0–30° (3.85 against 4.07 mm) and loses at
# 30–60° (4.01 against 3.88) and 60–90° (4.14 against 3.93): FaceMesh guesses the far cheek. The blend
# scores 3.87 mm overall (a hard switch at 30°: 3.88; the inner 51 alone: 3.98).
DENSE_FULL_YAW_DEG = 20.0
DENSE_NONE_YAW_DEG = 40.0
REFINE_REFERENCE_SIZE = 128   # sigma_px above is in pixels of a 128-px canonical crop
# Start-to-points distance (fraction of the points' box size) beyond which detector and network
# disagree too much to trust the detector: Helen's worst face is at 0.06 with the default model;
# MediaPipe failing badly reaches 0.1–0.6 and then wrecks the pose. (On renders, out of its domain,
# FaceMesh is also slightly off within the limit: the limit only catches far-off detections.)
MAX_DISAGREEMENT = 0.08
# A regressor export may declare its own limit in its ONNX metadata: a model with a larger domain gap
# on photos (the synthetic-only one) sits farther from the detector on every photo, so 8 % would
# leave a third of them unrefined. `facerig eval refine-gate` measures a model and writes the key.
REFINE_GATE_KEY = "facerig.refine_max_disagreement"


@lru_cache(maxsize=8)
def dense_point_indices(limit_mm: float = DENSE_SPREAD_LIMIT_MM) -> np.ndarray:
    """FaceMesh point indices the dense fit uses: those with a well-defined ICT vertex (read-only; made once,
    the refinement asks for them on every photo)."""
    indices = np.flatnonzero(np.asarray(MEDIAPIPE_SPREAD_MM) < limit_mm)
    indices.setflags(write=False)
    return indices


def refine_gate(metadata: Mapping[str, str]) -> float:
    """The disagreement limit a regressor declares (``REFINE_GATE_KEY``), else :data:`MAX_DISAGREEMENT`."""
    raw = metadata.get(REFINE_GATE_KEY)
    if raw is None:
        return MAX_DISAGREEMENT
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not 0.0 < value <= 10.0:   # also rejects nan
        raise ValueError(f"metadata {REFINE_GATE_KEY}={raw!r} is not a fraction of the face size in (0, 10]")
    return value


@dataclass(frozen=True)
class LandmarkRefiner:
    """Refines a regressor prediction on a detector's points: FaceMesh's 468 (the dense fit) or the
    iBUG 68 (their inner 51).

    *Dense* (468 points given, the network's |yaw| ≤ ``DENSE_FULL_YAW_DEG``): the FaceMesh points whose
    ICT vertex is well defined (:func:`dense_point_indices`: spread below ``DENSE_SPREAD_LIMIT_MM``, 397
    of 468 — not the face oval, which slides along the silhouette, nor the hairline), each fitted to its
    vertex of ``landmark_maps.MEDIAPIPE_TO_ICT``. Against the inner 51 alone: Helen from the detector box,
    68 points 2.92 → 2.82 % (default model) and 3.16 → 2.88 % (synthetic-only), the same 51-point error,
    mirror retrieval top-1 52.7 → 63.6 %; on renders with FaceMesh's own errors scaled to its photo
    accuracy, aligned vertex error 3.98 → 3.87 mm (docs/research-log.md, "Dense FaceMesh points").

    *Inner 51* (68 points given — the bootstrap's stored detector landmarks — or |yaw| ≥
    ``DENSE_NONE_YAW_DEG``, where FaceMesh guesses the far cheek; in between both, :meth:`dense_weight`): the jaw is
    left out — detectors mark it on the visible outline, which a fixed or marched model contour follows
    poorly (fitting it too made Helen worse).

    Either way the identity prior is centred on the regressor's identity, and the trust limit
    (:meth:`disagreement`) is measured on the inner 51 points, so one limit serves both fits.
    """

    arrays: ModelArrays                       # ICT's Multi-PIE vertices 17–67 (the inner 51)
    dense_arrays: ModelArrays | None = None   # ICT vertices of the dense FaceMesh points
    blend_arrays: ModelArrays | None = None   # the dense vertices, then the inner 51's (turning faces)
    settings: LandmarkFitSettings = INNER_REFINE_SETTINGS
    dense_settings: LandmarkFitSettings = DENSE_REFINE_SETTINGS
    max_disagreement: float = MAX_DISAGREEMENT

    @classmethod
    def from_model(cls, model: FaceModel, settings: LandmarkFitSettings = INNER_REFINE_SETTINGS,
                   dense_settings: LandmarkFitSettings = DENSE_REFINE_SETTINGS,
                   corrective_prior: float | None = None) -> "LandmarkRefiner":
        """``corrective_prior`` > 0 (default :data:`CORRECTIVE_PRIOR`; 0: off) fits the corrective field too, its
        first ``DEFAULT_N_CORRECTIVE`` harmonics under that prior strength ρ, in both fits."""
        corrective_prior = CORRECTIVE_PRIOR if corrective_prior is None else corrective_prior
        if corrective_prior > 0 and model.arrays.corrective_basis.shape[1] < DEFAULT_N_CORRECTIVE:
            log.warning("the corrective field is not fitted: the model's harmonics are unavailable (no scipy, "
                        "no cache; `facerig model harmonics` makes them)")
            corrective_prior = 0.0
        if corrective_prior > 0:
            extra = {"n_corrective": DEFAULT_N_CORRECTIVE, "corrective_prior": float(corrective_prior)}
            settings, dense_settings = replace(settings, **extra), replace(dense_settings, **extra)
        dense = np.asarray(MEDIAPIPE_TO_ICT, np.int64)[dense_point_indices()]
        inner = model.landmark_indices("fixed")[17:]
        return cls(model.arrays.subset(inner), model.arrays.subset(dense),
                   model.arrays.subset(np.concatenate([dense, inner])), settings, dense_settings)

    @cached_property
    def _fit_bases(self) -> dict[str, FitBasis]:
        return {}

    def fit_basis(self, name: str) -> FitBasis:
        """The float64 :class:`FitBasis` of the vertex subset in field ``name`` (``arrays``,
        ``dense_arrays``, ``blend_arrays``), made on first use and kept: the fit reads it every photo."""
        basis = self._fit_bases.get(name)
        if basis is None:
            basis = self._fit_bases[name] = FitBasis.from_arrays(getattr(self, name))
        return basis

    @staticmethod
    def inner_points(points: np.ndarray) -> np.ndarray:
        """The inner 51 of (68, 2) iBUG points or of (468, 2) FaceMesh points."""
        points = np.asarray(points, np.float64)
        if points.shape == (68, 2):
            return points[17:]
        if points.shape == (len(MEDIAPIPE_TO_ICT), 2):
            return points[np.asarray(MEDIAPIPE_TO_68[17:], np.int64)]
        raise ValueError(f"points must be (68, 2) iBUG or ({len(MEDIAPIPE_TO_ICT)}, 2) FaceMesh, got {points.shape}")

    def disagreement(self, params: FaceParams, points: np.ndarray, image_size: int) -> tuple[float, float]:
        """(mean inner-point distance start ↔ detected in pixels, that distance / the points' box size)."""
        return _disagreement(self._start_inner(params, image_size), self.inner_points(points))

    def _start_inner(self, params: FaceParams, image_size: int) -> np.ndarray:
        """The start's inner 51 points in the ``image_size`` crop (what the trust limit compares)."""
        return np.asarray(landmarks_2d(self.arrays, params, image_size, image_size), np.float64)

    def refine(self, params: FaceParams, points: np.ndarray, image_size: int, fit_identity: bool = True,
               max_disagreement: float | None = None) -> LandmarkFit:
        """``params`` of one face in a square ``image_size`` crop, refined on its points there:
        (468, 2) FaceMesh points (dense fit) or (68, 2) iBUG points (inner 51).

        ``fit_identity=False`` keeps the identity (e.g. one aggregated from several photos);
        ``max_disagreement`` replaces this refiner's limit (the regressor's own, :func:`refine_gate`).
        The same as :meth:`prepare` then :meth:`PreparedRefinement.refine`.
        """
        points = np.asarray(points, np.float64)
        self.inner_points(points)      # a shape neither fit takes: the ValueError before any work
        return self.prepare(params, image_size, points.shape[0], fit_identity, max_disagreement).refine(points)

    def prepare(self, params: FaceParams, image_size: int, n_points: int, fit_identity: bool = True,
                max_disagreement: float | None = None) -> "PreparedRefinement":
        """:meth:`refine` up to its points, given how many there will be (468 FaceMesh or 68 iBUG): which fit,
        the start's points for the trust limit, and the fit prepared (:func:`prepare_fit`). Neither needs the
        points, so the photo path runs this beside FaceMesh's second pass (≈ 0.8 ms)."""
        # the gate's projection too: a small matmul that wakes OpenBLAS's pool leaves a thread spinning on the
        # core MediaPipe needs next (with the corrective field's projection: 41 → 37 ms a photo; docs/performance.md)
        with single_blas_thread():
            limit = self.max_disagreement if max_disagreement is None else float(max_disagreement)
            weight = self._dense_weight(params, n_points)
            scale = image_size / REFINE_REFERENCE_SIZE
            weights = None
            if weight >= 1.0:
                arrays, base, which = "dense_arrays", self.dense_settings, "dense"
            elif weight <= 0.0:
                arrays, base, which = "arrays", self.settings, "inner 51"
            else:   # both sets, each at its own σ, the dense one's share falling with |yaw|
                arrays, which = "blend_arrays", f"dense {weight:.0%} + inner 51"
                dense_w = weight / self.dense_settings.sigma_px ** 2
                inner_w = (1.0 - weight) / self.settings.sigma_px ** 2
                weights = np.concatenate([np.full(len(dense_point_indices()), dense_w), np.full(51, inner_w)])
                base = replace(self.dense_settings, sigma_px=1.0)
            settings = replace(base, sigma_px=base.sigma_px * scale, fit_identity=fit_identity and base.fit_identity)
            fit = prepare_fit(self.fit_basis(arrays), params, image_size, image_size, settings, weights=weights,
                              identity_prior_mean=np.asarray(params.identity))
            return PreparedRefinement(self, params, int(n_points), limit, self._start_inner(params, image_size),
                                      arrays, which, fit)

    def dense_weight(self, params: FaceParams, points: np.ndarray) -> float:
        """How much :meth:`refine` relies on the dense points (the inner 51 take the rest): 1 up to
        ``DENSE_FULL_YAW_DEG`` of the network's |yaw|, 0 from ``DENSE_NONE_YAW_DEG`` or when only the 68
        iBUG points are given, linear in between."""
        return self._dense_weight(params, np.shape(points)[0])

    def _dense_weight(self, params: FaceParams, n_points: int) -> float:
        if n_points != len(MEDIAPIPE_TO_ICT) or self.dense_arrays is None or self.blend_arrays is None:
            return 0.0
        yaw = abs(math.degrees(float(np.asarray(params.rotation)[0])))
        return float(np.clip((DENSE_NONE_YAW_DEG - yaw) / (DENSE_NONE_YAW_DEG - DENSE_FULL_YAW_DEG), 0.0, 1.0))


def _disagreement(start: np.ndarray, inner: np.ndarray) -> tuple[float, float]:
    dist = float(point_errors(start, inner).mean())
    return dist, dist / max(float(bbox_size(inner)), 1e-9)


@dataclass(frozen=True)
class PreparedRefinement:
    """A :class:`LandmarkRefiner` refinement made ready before its points (:meth:`LandmarkRefiner.prepare`);
    :meth:`refine` fits them."""

    refiner: LandmarkRefiner
    params: FaceParams
    n_points: int                  # 468 (FaceMesh) or 68 (iBUG)
    limit: float                   # the trust limit (fraction of the face size)
    start_inner: np.ndarray        # (51, 2) the start's inner points
    arrays: str                    # the refiner's vertex subset fitted: "dense_arrays", "arrays", "blend_arrays"
    which: str                     # what the result reports: "dense", "inner 51" or the blend's shares
    fit: PreparedFit

    def refine(self, points: np.ndarray) -> LandmarkFit:
        """The fit on the face's ``n_points`` detected points (:meth:`LandmarkRefiner.refine`)."""
        points = np.asarray(points, np.float64)
        if points.shape[0] != self.n_points:
            raise ValueError(f"prepared for {self.n_points} points, got {points.shape}")
        inner = self.refiner.inner_points(points)
        dist, fraction = _disagreement(self.start_inner, inner)
        if not np.isfinite(fraction) or fraction > self.limit:
            return LandmarkFit(self.params, dist, dist, 0,
                               skipped=f"detected landmarks {fraction:.1%} of the face size from the "
                                       f"network's (limit {self.limit:.1%}): not trusted")
        target = {"dense_arrays": lambda: points[dense_point_indices()], "arrays": lambda: inner,
                  "blend_arrays": lambda: np.concatenate([points[dense_point_indices()], inner])}[self.arrays]()
        with single_blas_thread():
            return replace(self.fit.run(target), points=self.which)
