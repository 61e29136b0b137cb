"""The landmark fit's numerics: Levenberg-damped Gauss-Newton with the normal equations built directly.

Why a module of its own: the refinement (:mod:`facemodel.landmark_fit`) runs on every photo, ≈ 400
points and 119 unknowns, and the straightforward way — a float64 copy of the basis per call, a
camera-space copy of it per step, a (2N, P) Jacobian through two einsums, ``np.linalg.solve`` — took
26–29 ms a face. This computes the same cost, the same exact Jacobian and the same damped steps
(results agree to float64 rounding; ``tests/test_facemodel_landmark_fit.py`` compares it against that
straightforward implementation) in ≈ 4 ms.

Unknowns θ = (c, angles, t): linear coefficients c (K, the blocks below one after the other), the Euler
angles (yaw, pitch, roll) of ``R = Rz Rx Ry`` and the translation. Model points m = m₀ + Σ c_k B_k,
camera points X = R m + t, pixels u = cx + f X_x/d, v = cy − f X_y/d (d = −X_z). For point i with
weight s_i = √w_i / σ the residual's derivative is the projection rows

    P_i = s_i f/d_i [[1, 0, X_x/d_i], [0, −1, −X_y/d_i]]      (2 × 3, camera frame)

times ∂X_i/∂θ = [R B_i | ∂R/∂angle · m_i | I]. With ℓ_i = P_i R (model frame) the linear columns are
ℓ_i B_i: one batched (N, 2, 3) @ (N, 3, K) product against the basis laid out per point once per model
(:class:`FitBasis`), so nothing of size N·K is copied or rotated per step. JᵀJ is one symmetric rank-2N
update (BLAS syrk, ≈ N·P² multiply-adds — the floor: P_i changes with every step and every point, so
no Gram block of the linear part is constant across steps or shared between points), Jᵀr one gemv;
the damped system is solved by Cholesky (LAPACK ``dposv`` through scipy where available).

*Gram precision* (``gram="float32"``, what the photo refinements use): JᵀJ is summed in float32 from a
float32 J whose linear columns ℓ_i B_i are made in float32 from a float32 copy of the basis, the points split
in two parts, the second on another thread (:data:`GRAM_THREADS`; numpy's matmul and syrk let go of the GIL):
0.61 → 0.28 ms a step for 794 × 180 on 2 cores; Jᵀr is not taken from that J but in float64 as
Σ_i B_iᵀ (ℓ_iᵀ r_i), one pass over the float64 basis. The damped system is solved in float32 too (``sposv``:
79 against 107 µs for 159 unknowns; float64 when float32 finds it not positive definite). Cost, residual, Jᵀr
and the acceptance of a step stay float64, so the fit minimises the same cost; only the Gauss-Newton matrix —
an approximation of the Hessian anyway — carries float32 rounding. The steps then differ in the last digits
(on Helen some identity coefficients by up to ≈ 3e-2, median 2e-6) and the figures do not: Helen's 68 /
51-point NME and the synthetic proxy are the same to the digits reported (docs/performance.md).

*Prepared before the targets* (:meth:`Problem.prepare`): J and JᵀJ depend on θ and the weights, not on the
target pixels, so with the float32 Gram the start's matrix can be built while the points are still being
detected (the photo path does it beside FaceMesh's second pass); the first step then uses it as it is.

*Adding linear unknowns* (e.g. corrective shapes): put their basis at the fitted vertices into
:attr:`FitBasis.bases` under a name and pass a :class:`Block` with that name; Jacobian, normal
equations, prior, bounds and unpacking follow from the block list.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np

from .harmonics import corrective_point_basis
from .side_thread import PHOTO_THREADS, side_thread

MAX_DAMPING_TRIES = 8
_LAYOUT_LOCK = threading.Lock()
GRAM_PRECISIONS = ("float64", "float32")
# Threads the float32 Gram's rows are split over (1: none). Batch workers, one photo per core, set 1.
GRAM_THREADS = PHOTO_THREADS
# The calling thread's share of the float32 Gram's points: the other thread starts later (its hand-over ≈ 50 µs),
# so the first part is the larger (Helen replay, 397 points on 2 cores: 0.50 → 303 µs, 0.55 → 278, 0.60 → 284).
GRAM_SPLIT = 0.55


def set_gram_threads(threads: int) -> None:
    """How many threads the float32 Gram of every later fit is summed on (1: the calling thread alone)."""
    global GRAM_THREADS
    GRAM_THREADS = max(1, int(threads))


def check_gram_precision(gram: str) -> None:
    """A ``ValueError`` unless ``gram`` is one of :data:`GRAM_PRECISIONS`."""
    if gram not in GRAM_PRECISIONS:
        raise ValueError(f"gram must be one of {GRAM_PRECISIONS}, got {gram!r}")


@lru_cache(maxsize=1)
def scipy_kernels() -> tuple[Any, Any, Any] | tuple[None, None, None]:
    """scipy's (dsyrk, dposv, sposv — the float32 Gram's solve), or Nones without scipy: then numpy's matmul and
    LU solve, the same results to rounding (tested). numpy has no Cholesky solve nor an upper-triangle-only syrk;
    scipy is a dependency of facerig but not of the add-on — Blender's Python has none, and the extension bundles
    what its modules import, so scipy is imported here, on the first fit, never at module import."""
    try:
        from scipy.linalg.blas import dsyrk
        from scipy.linalg.lapack import dposv, sposv
    except ImportError:
        return None, None, None
    return dsyrk, dposv, sposv


@dataclass(frozen=True)
class Layout:
    """The concatenated basis of some blocks, laid out per point: (N, 3, K) float64. The model points are
    m = m₀ + (per_point.reshape(3N, K) @ c).reshape(N, 3), the linear Jacobian rows of point i
    ℓ_i @ per_point[i] — one array read both ways, so a step streams it once per use."""

    per_point: np.ndarray
    per_point32: np.ndarray = field(repr=False)   # float32 copy: the float32 Gram's linear columns


@dataclass(frozen=True)
class FitBasis:
    """A vertex subset's linear model in float64, made once per model and point set (not per photo).

    ``bases`` maps a block name to its (M, N, 3) displacement per unit coefficient at the N fitted
    vertices; :meth:`layout` concatenates leading modes of some of them for a fit and caches the result.
    """

    neutral: np.ndarray                      # (N, 3) float64
    bases: Mapping[str, np.ndarray]          # name → (M, N, 3) float64
    arrays: Any = field(default=None, repr=False, compare=False)   # the ModelArrays subset it was made from
    _layouts: dict = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_arrays(cls, arrays) -> "FitBasis":  # noqa: ANN001 - facemodel.model.ModelArrays (no import cycle)
        """The identity, expression and corrective-field bases of ``arrays`` (a vertex subset of the model);
        the field's (3·K, N, 3) in the flat order of ``FaceParams.corrective``, when the model has harmonics."""
        neutral = np.ascontiguousarray(arrays.neutral, np.float64)
        n = neutral.shape[0]
        bases = {"identity": np.asarray(arrays.identity_basis, np.float64).reshape(-1, n, 3),
                 "expression": np.asarray(arrays.expression_basis, np.float64).reshape(-1, n, 3)}
        harmonics = getattr(arrays, "corrective_basis", None)
        if harmonics is not None and np.shape(harmonics)[-1]:
            bases["corrective"] = corrective_point_basis(harmonics, np.shape(harmonics)[-1])
        return cls(neutral, bases, arrays)

    @property
    def n_points(self) -> int:
        return int(self.neutral.shape[0])

    def offset(self, name: str, coefficients: np.ndarray) -> np.ndarray:
        """(N, 3) displacement of the leading ``len(coefficients)`` modes of block ``name`` (a fixed block)."""
        c = np.asarray(coefficients, np.float64)
        return np.tensordot(c, self.bases[name][: c.shape[-1]], 1)

    def layout(self, blocks: tuple[tuple[str, int], ...]) -> Layout:
        """The leading ``count`` modes of each ``(name, count)``, concatenated in that order (cached)."""
        cached = self._layouts.get(blocks)
        if cached is None:
            with _LAYOUT_LOCK:
                cached = self._layouts.get(blocks)
                if cached is None:
                    for name, count in blocks:
                        if count > self.bases[name].shape[0]:
                            raise ValueError(f"{count} {name} modes asked for, the model has "
                                             f"{self.bases[name].shape[0]}")
                    stacked = np.concatenate([self.bases[name][:count] for name, count in blocks]
                                             or [np.zeros((0, self.n_points, 3))], 0)
                    per_point = np.ascontiguousarray(stacked.transpose(1, 2, 0))
                    cached = Layout(per_point, per_point.astype(np.float32))
                    self._layouts[blocks] = cached
        return cached


@dataclass(frozen=True)
class Block:
    """One group of linear unknowns: the leading ``len(start)`` modes of ``FitBasis.bases[name]``, under a
    Gaussian prior (Σ precision · (c − mean)² added to the cost; one precision for all, or one per
    coefficient) and kept within [lower, upper]."""

    name: str
    start: np.ndarray
    precision: float | np.ndarray
    mean: np.ndarray | None = None           # None: zero
    lower: float = -math.inf
    upper: float = math.inf

    @property
    def count(self) -> int:
        return int(np.shape(self.start)[-1])


def rotation_derivatives(rotation: np.ndarray, derivatives: bool = True) -> np.ndarray:
    """(4, 3, 3): ``R = Rz(roll) Rx(pitch) Ry(yaw)`` and ∂R/∂yaw, ∂R/∂pitch, ∂R/∂roll (only R, (1, 3, 3),
    without ``derivatives``). Written out: ``geometry.euler_to_matrix`` costs ≈ 20 µs in batching
    machinery per call, and the fit needs this twice per step."""
    yaw, pitch, roll = (float(v) for v in rotation)
    cy, sy, cp, sp = math.cos(yaw), math.sin(yaw), math.cos(pitch), math.sin(pitch)
    cr, sr = math.cos(roll), math.sin(roll)
    sp_sy, sp_cy = sp * sy, sp * cy
    rot = [[cr * cy - sr * sp_sy, -sr * cp, cr * sy + sr * sp_cy],
           [sr * cy + cr * sp_sy, cr * cp, sr * sy - cr * sp_cy],
           [-cp * sy, sp, cp * cy]]
    if not derivatives:
        return np.array([rot])
    return np.array([rot,
                     [[-cr * sy - sr * sp_cy, 0.0, cr * cy - sr * sp_sy],        # ∂/∂yaw
                      [-sr * sy + cr * sp_cy, 0.0, sr * cy + cr * sp_sy],
                      [-cp * cy, 0.0, -cp * sy]],
                     [[-sr * cp * sy, sr * sp, sr * cp * cy],                     # ∂/∂pitch
                      [cr * cp * sy, -cr * sp, -cr * cp * cy],
                      [sp_sy, cp, -sp_cy]],
                     [[-sr * cy - cr * sp_sy, -cr * cp, -sr * sy + cr * sp_cy],   # ∂/∂roll
                      [cr * cy - sr * sp_sy, -sr * cp, cr * sy + sr * sp_cy],
                      [0.0, 0.0, 0.0]]])


@dataclass
class State:
    """θ and what the cost computed from it (reused by the next step's normal equations)."""

    theta: np.ndarray
    model: np.ndarray        # (N, 3) model points
    camera: np.ndarray       # (N, 3) camera points
    residual: np.ndarray     # (2N,) weighted pixel residuals, (u, v) per point
    cost: float


class Problem:
    """The MAP cost of one face on N points and its Gauss-Newton normal equations.

    ``origin`` (N, 3) is the fixed part of the model points (the neutral plus any block not fitted);
    ``pixels`` (N, 2) the targets with ``weights`` (N,) ≥ 0 (zero: ignored) — None: given later
    (:meth:`set_targets`; :meth:`prepare` needs none); ``camera`` the (focal/width, cx/width, cy/height)
    intrinsics of the ``width`` × ``height`` image.
    """

    def __init__(self, basis: FitBasis, blocks: Sequence[Block], origin: np.ndarray, camera: np.ndarray,
                 width: float, height: float, pixels: np.ndarray | None, weights: np.ndarray, sigma_px: float,
                 gram: str = "float64") -> None:
        names = [b.name for b in blocks]
        if len(set(names)) != len(names):
            raise ValueError(f"each block once: {names}")
        check_gram_precision(gram)
        layout = basis.layout(tuple((b.name, b.count) for b in blocks))
        self.per_point = layout.per_point
        self.n, _, self.k = n, _, k = self.per_point.shape
        self.p = p = k + 6
        self.rows = self.per_point.reshape(3 * n, k)          # model points: origin + rows @ c
        self.origin = np.ascontiguousarray(origin, np.float64)
        cam = np.asarray(camera, np.float64)
        self.focal, self.cx, self.cy = float(cam[0]) * width, float(cam[1]) * width, float(cam[2]) * height
        self.point_weight = np.sqrt(np.asarray(weights, np.float64)) / sigma_px          # (N,)
        self.pixels = self._offset = None
        if pixels is not None:
            self.set_targets(pixels)
        self._signed_weight = self.point_weight[:, None] * np.array([1.0, -1.0])
        self.prior = np.zeros(p)
        self.prior_mean = np.zeros(p)
        self.lower = np.full(p, -math.inf)
        self.upper = np.full(p, math.inf)
        self.slices: dict[str, slice] = {}       # block name → its coefficients in θ
        start = 0
        for b in blocks:
            sl = self.slices[b.name] = slice(start, start + b.count)
            self.prior[sl] = b.precision
            if b.mean is not None:
                self.prior_mean[sl] = np.asarray(b.mean, np.float64)[: b.count]
            self.lower[sl], self.upper[sl] = b.lower, b.upper
            start += b.count
        self.bounded = bool(np.isfinite(self.lower).any() or np.isfinite(self.upper).any())
        # workspace, reused by every step of this fit
        self._weight_focal = self.point_weight * self.focal
        self._proj = np.zeros((n, 2, 3))           # P_i
        self._ell = np.empty((n, 2, 3))            # P_i R
        self._pose = np.zeros((n, 3, 6))           # ∂X_i/∂(angles, t) = [∂R/∂angle m_i | I]
        self._pose[:, [0, 1, 2], [3, 4, 5]] = 1.0
        self._jac = np.empty((n, 2, p + 1))        # [J | r], rows (u, v) per point: one syrk gives JᵀJ and Jᵀr
        self._gram = np.zeros((p + 1, p + 1), order="F")   # Fortran order for LAPACK; with scipy only the
        self._damped = np.zeros((p, p), order="F")         # upper triangle is filled (dsyrk), which dposv reads
        self._diag = (np.arange(p), np.arange(p))  # indices of a (p, p) diagonal
        self._dsyrk, self._dposv, sposv = scipy_kernels()
        self._jac32 = self._ell32 = self._jpose = None
        if gram == "float32":       # the float32 Gram's own workspace: J (float32), ℓ_i, the pose columns (float64)
            self.per_point32 = layout.per_point32
            self._jac32 = np.empty((n, 2, p), np.float32)
            self._ell32 = np.empty((n, 2, 3), np.float32)
            self._jpose = np.empty((n, 2, 6))
        self._sposv = sposv if gram == "float32" else None
        self._damped32 = np.zeros((p, p), np.float32, order="F") if self._sposv is not None else None
        self._prepared: np.ndarray | None = None   # the θ whose J and Gauss-Newton matrix the workspace holds

    def set_targets(self, pixels: np.ndarray) -> None:
        """The (N, 2) target pixels (what the residual measures against)."""
        self.pixels = np.asarray(pixels, np.float64)
        # residual (u − p_u, v − p_v)·s = (f x/d + (cx − p_u), f y/d + (p_v − cy)) · (s, −s)
        self._offset = np.stack([self.cx - self.pixels[:, 0], self.pixels[:, 1] - self.cy], 1)

    def pack(self, blocks: Sequence[Block], rotation: np.ndarray, translation: np.ndarray) -> np.ndarray:
        parts = [np.asarray(b.start, np.float64) for b in blocks]
        return np.concatenate(parts + [np.asarray(rotation, np.float64), np.asarray(translation, np.float64)])

    def unpack(self, theta: np.ndarray) -> dict[str, np.ndarray]:
        """θ → each block's coefficients by name, and ``rotation`` and ``translation``."""
        return {**{name: theta[sl] for name, sl in self.slices.items()},
                "rotation": theta[self.k: self.k + 3], "translation": theta[self.k + 3:]}

    def clip(self, theta: np.ndarray) -> np.ndarray:
        return np.clip(theta, self.lower, self.upper) if self.bounded else theta.copy()

    # -- cost ------------------------------------------------------------------------------------
    def geometry(self, theta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(N, 3) model points and (N, 3) camera points at θ."""
        k = self.k
        model = (self.rows @ theta[:k]).reshape(self.n, 3)
        model += self.origin
        cam = model @ rotation_derivatives(theta[k: k + 3], False)[0].T
        cam += theta[k + 3:]
        return model, cam

    def state(self, theta: np.ndarray, geometry: tuple[np.ndarray, np.ndarray] | None = None) -> State:
        """θ's cost and residual (``geometry``: :meth:`geometry` of θ, when already computed)."""
        if self._offset is None:
            raise RuntimeError("the fit's target pixels are not set (set_targets)")
        model, cam = self.geometry(theta) if geometry is None else geometry
        r = cam[:, :2] * (self.focal / -cam[:, 2])[:, None]
        r += self._offset
        r *= self._signed_weight
        r = r.reshape(-1)
        d = theta - self.prior_mean
        return State(theta, model, cam, r, float(r @ r + d @ (self.prior * d)))

    def _pixels(self, cam: np.ndarray) -> np.ndarray:
        """(N, 2) projections (``camera.project``'s formula)."""
        depth = -cam[:, 2]
        return np.stack([self.cx + self.focal * cam[:, 0] / depth, self.cy - self.focal * cam[:, 1] / depth], 1)

    def residual(self, theta: np.ndarray) -> np.ndarray:
        return self.state(theta).residual

    def cost(self, theta: np.ndarray) -> float:
        return self.state(theta).cost

    def mean_distance(self, state: State, weights: np.ndarray) -> float:
        """Weighted mean pixel distance of the points to their targets."""
        dist = np.linalg.norm(self._pixels(state.camera) - self.pixels, axis=1)
        return float((dist * weights).sum() / weights.sum())

    # -- derivatives -----------------------------------------------------------------------------
    def jacobian(self, state: State) -> np.ndarray:
        """(2N, P) ∂residual/∂θ at ``state``, exact (a view of the workspace: copy to keep it)."""
        return self._fill_jacobian(state)[:, : self.p]

    def _fill_jacobian(self, state: State) -> np.ndarray:
        """The workspace's (2N, P + 1) [J | ·] with J at ``state``."""
        k, n, jac = self.k, self.n, self._jac
        self._projection_rows(state.theta, state.model, state.camera, jac[:, :, k: k + 6])
        np.matmul(self._ell, self.per_point, out=jac[:, :, :k])                        # linear: ℓ_i B_i
        return jac.reshape(2 * n, self.p + 1)

    def _projection_rows(self, theta: np.ndarray, model: np.ndarray, cam: np.ndarray, pose_out: np.ndarray) -> None:
        """P_i and ℓ_i = P_i R into the workspace, and the pose columns of J (N, 2, 6) into ``pose_out``."""
        k, n = self.k, self.n
        self._prepared = None
        rot = rotation_derivatives(theta[k: k + 3])
        inv_depth = 1.0 / np.maximum(-cam[:, 2], 1e-6)
        g = self.point_weight * self.focal * inv_depth
        ga, gb = g * cam[:, 0] * inv_depth, g * cam[:, 1] * inv_depth
        proj = self._proj                      # P_i rows: u = g (1, 0, x/d), v = −g (0, 1, y/d); zeros stay
        proj[:, 0, 0], proj[:, 0, 2], proj[:, 1, 1], proj[:, 1, 2] = g, ga, -g, -gb
        np.matmul(proj.reshape(2 * n, 3), rot[0], out=self._ell.reshape(2 * n, 3))    # ℓ_i = P_i R
        self._pose[:, :, :3] = (model @ rot[1:].reshape(9, 3).T).reshape(n, 3, 3).transpose(0, 2, 1)
        np.matmul(proj, self._pose, out=pose_out)                                      # angles, translation

    def prepare(self, theta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`geometry` of θ; with the float32 Gram also J and JᵀJ + diag(prior) at θ, kept for the
        :meth:`normal_equations` of the state at this very θ (the same arrays: ``state(theta, geometry)``) —
        neither needs the targets, so this may run before they are known, beside other work: on the calling
        thread alone (the same sums as on two)."""
        geometry = self.geometry(theta)
        if self._jac32 is not None:
            self._gauss_newton32(theta, *geometry, threads=1)
            self._prepared = theta
        return geometry

    def _gauss_newton32(self, theta: np.ndarray, model: np.ndarray, cam: np.ndarray,
                        threads: int | None = None) -> np.ndarray:
        """JᵀJ + diag(prior) at θ in float32 (module docstring), into the workspace, on ``threads`` threads
        (default :data:`GRAM_THREADS`); ℓ_i and the pose columns stay there for :meth:`_gradient32`."""
        k, n, p = self.k, self.n, self.p
        self._projection_rows(theta, model, cam, self._jpose)
        np.copyto(self._ell32, self._ell)
        np.copyto(self._jac32[:, :, k:], self._jpose)
        half = round(n * GRAM_SPLIT)
        if (GRAM_THREADS if threads is None else threads) < 2:
            gram = self._gram_rows32(0, half)
            gram += self._gram_rows32(half, n)
        else:
            other = side_thread("gram").submit(self._gram_rows32, half, n)
            gram = self._gram_rows32(0, half)
            gram += other.result()
        normal = self._gram[:p, :p]
        np.copyto(normal, gram)
        normal[self._diag] += self.prior
        return normal

    def _gram_rows32(self, lo: int, hi: int) -> np.ndarray:
        """The float32 Gram of points lo…hi's rows, their linear columns ℓ_i B_i made here (float32) first. The
        two parts (:data:`GRAM_SPLIT`), the second on :data:`GRAM_THREADS`' other thread (numpy lets go of the
        GIL), are summed in the same order on one thread, so a batch worker gives the very numbers of a photo
        on two."""
        np.matmul(self._ell32[lo:hi], self.per_point32[lo:hi], out=self._jac32[lo:hi, :, : self.k])
        rows = self._jac32[lo:hi].reshape(2 * (hi - lo), self.p)
        return rows.T @ rows

    def _gradient32(self, state: State) -> np.ndarray:
        """Jᵀr in float64 at the θ of the last :meth:`_gauss_newton32`, without J: the linear part is
        Σ_i B_iᵀ (ℓ_iᵀ r_i), one pass over the basis."""
        r = state.residual.reshape(self.n, 2)
        linear = self.rows.T @ np.einsum("nrc,nr->nc", self._ell, r).reshape(-1)
        return np.concatenate([linear, np.einsum("nrc,nr->c", self._jpose, r)])

    def normal_equations(self, state: State) -> tuple[np.ndarray, np.ndarray]:
        """(JᵀJ + diag(prior), Jᵀr + prior·(θ − mean)) at ``state``. The normal matrix is workspace and
        only its upper triangle is meaningful (:func:`symmetric` gives the whole matrix)."""
        p = self.p
        if self._jac32 is not None:      # float32 Gram (module docstring); Jᵀr in float64
            if self._prepared is state.theta:        # prepare() built it at this θ
                normal = self._gram[:p, :p]
                self._prepared = None
            else:
                normal = self._gauss_newton32(state.theta, state.model, state.camera)
            return normal, self._gradient32(state) + self.prior * (state.theta - self.prior_mean)
        jac = self._fill_jacobian(state)
        jac[:, p] = state.residual
        if self._dsyrk is not None:
            self._dsyrk(1.0, jac.T, c=self._gram, overwrite_c=1)   # upper triangle of [J r]ᵀ[J r] (jac.T: Fortran)
        else:
            self._gram[...] = jac.T @ jac                     # numpy spots Aᵀ A: syrk, both triangles
        normal = self._gram[:p, :p]
        normal[self._diag] += self.prior
        grad = self._gram[:p, p] + self.prior * (state.theta - self.prior_mean)
        return normal, grad

    def damped_step(self, normal: np.ndarray, grad: np.ndarray, scale: np.ndarray, lam: float) -> np.ndarray:
        """Solve (normal + lam·diag(scale)) step = −grad (symmetric positive definite: Cholesky)."""
        if self._sposv is not None:      # float32 Gram: its damped system solved in float32 too
            d32 = self._damped32
            np.copyto(d32, normal)
            d32[self._diag] += lam * scale
            _, step, info = self._sposv(d32, -grad.astype(np.float32), lower=0, overwrite_a=1, overwrite_b=0)
            if info == 0:
                return step.astype(np.float64)
        damped = self._damped
        np.copyto(damped, normal)
        damped[self._diag] += lam * scale
        if self._dposv is not None:
            _, step, info = self._dposv(damped, -grad, lower=0, overwrite_a=1, overwrite_b=0)
            if info == 0:
                return step
            np.copyto(damped, normal)            # not positive definite to working precision: LU as before
            damped[self._diag] += lam * scale
        return np.linalg.solve(symmetric(damped), -grad)


def symmetric(upper: np.ndarray) -> np.ndarray:
    """The symmetric matrix whose upper triangle ``upper`` holds."""
    return np.triu(upper) + np.triu(upper, 1).T


def minimise(problem: Problem, state: State, steps: int, damping: float) -> tuple[State, int]:
    """Levenberg-damped Gauss-Newton from ``state``; a step is kept only if the cost falls, otherwise the
    damping grows ×10 (up to ``MAX_DAMPING_TRIES`` times); after a kept step it shrinks ÷3."""
    lam, accepted = damping, 0
    for _ in range(steps):
        normal, grad = problem.normal_equations(state)
        scale = normal.diagonal() + 1e-9
        for _try in range(MAX_DAMPING_TRIES):
            cand = problem.state(problem.clip(state.theta + problem.damped_step(normal, grad, scale, lam)))
            if cand.cost < state.cost:
                state, lam, accepted = cand, max(lam / 3.0, 1e-7), accepted + 1
                break
            lam *= 10.0
        else:
            break  # no damping makes progress: at a minimum (to numerical precision)
    return state, accepted
