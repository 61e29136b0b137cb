"""The landmark fit as it was first written (until issue 34, with issue 32's corrective field): the
specification the fast solver (``facemodel.landmark_solver``) is tested against.

Deliberately plain: the whole basis in float64 per call, a camera-space copy of it per step, the
(2N, P) Jacobian through einsum, ``np.linalg.solve`` on the damped normal equations. Same cost, same
Jacobian, same accept/reject damping; only the arithmetic's order differs from the fast solver.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from facemodel.camera import project
from facemodel.geometry import euler_to_matrix
from facemodel.harmonics import corrective_displacement, corrective_point_basis, corrective_prior_precision
from facemodel.landmark_fit import LandmarkFit, LandmarkFitSettings
from facemodel.model import ModelArrays
from facemodel.params import FaceParams

MAX_DAMPING_TRIES = 8


def rotation_derivatives(rotation: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """R and (3, 3, 3) ∂R/∂(yaw, pitch, roll) for ``R = Rz(roll) Rx(pitch) Ry(yaw)``."""
    yaw, pitch, roll = (float(v) for v in rotation)
    cy, sy, cp, sp, cr, sr = np.cos(yaw), np.sin(yaw), np.cos(pitch), np.sin(pitch), np.cos(roll), np.sin(roll)
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rx = np.array([[1, 0, 0], [0, cp, -sp], [0, sp, cp]])
    rz = np.array([[cr, -sr, 0], [sr, cr, 0], [0, 0, 1]])
    dry = np.array([[-sy, 0, cy], [0, 0, 0], [-cy, 0, -sy]])
    drx = np.array([[0, 0, 0], [0, -sp, -cp], [0, cp, -sp]])
    drz = np.array([[-sr, -cr, 0], [cr, -sr, 0], [0, 0, 0]])
    return rz @ rx @ ry, np.stack([rz @ rx @ dry, rz @ drx @ ry, drz @ rx @ ry])


class ReferenceProblem:
    """The cost, its residuals and Jacobian for one face; unknowns θ = (α_id, β, c, rotation, t)."""

    def __init__(self, arrays: ModelArrays, params: FaceParams, pixels: np.ndarray, width: float,
                 height: float, weights: np.ndarray, settings: LandmarkFitSettings,
                 identity_prior_mean: np.ndarray | None) -> None:
        n = arrays.neutral.shape[0]
        self.n = n
        self.k = np.asarray(params.identity).shape[-1] if settings.fit_identity else 0
        self.n_expr = np.asarray(params.expression).shape[-1]
        self.n_corr = settings.n_corrective if settings.fit_identity else 0   # harmonics fitted
        ident = np.asarray(params.identity, np.float64)
        self.fixed_identity = ident
        id_basis = np.asarray(arrays.identity_basis[: ident.shape[-1]], np.float64).reshape(-1, n, 3)
        self.id_basis = id_basis
        start_corr = np.asarray(params.corrective, np.float64)
        # a field not fitted stays as it starts: part of the fixed model points
        self.fixed_offset = np.asarray(corrective_displacement(arrays.corrective_basis, start_corr), np.float64) if self.n_corr == 0 \
            else np.zeros((n, 3))
        blocks = [id_basis[: self.k], np.asarray(arrays.expression_basis, np.float64).reshape(-1, n, 3)]
        if self.n_corr:
            blocks.append(corrective_point_basis(arrays.corrective_basis, self.n_corr))
        self.basis = np.concatenate(blocks, 0)
        self.n_lin = self.basis.shape[0]
        self.neutral = np.asarray(arrays.neutral, np.float64)
        self.camera = np.asarray(params.camera, np.float64)
        self.width, self.height = float(width), float(height)
        self.pixels = pixels
        self.sqrt_w = np.sqrt(np.repeat(weights, 2)) / settings.sigma_px
        prior = np.zeros(self.n_lin + 6)
        prior[: self.k] = settings.identity_prior
        prior[self.k: self.k + self.n_expr] = settings.expression_prior
        corr = slice(self.k + self.n_expr, self.n_lin)
        if self.n_corr:
            prior[corr] = corrective_prior_precision(arrays.corrective_eigenvalues, self.n_corr,
                                                     settings.corrective_prior)
        self.prior = prior
        mean = np.zeros_like(prior)
        if self.k and identity_prior_mean is not None:
            mean[: self.k] = np.asarray(identity_prior_mean, np.float64)[: self.k]
        mean[self.k: self.k + self.n_expr] = np.asarray(params.expression, np.float64)
        mean[corr] = self._corrective_start(params).reshape(-1)
        self.prior_mean = mean

    def _corrective_start(self, params: FaceParams) -> np.ndarray:
        """(n_corr, 3) the start's coefficients, truncated or zero-padded to the harmonics fitted."""
        return np.asarray(params.with_corrective_modes(self.n_corr).corrective, np.float64)

    def pack(self, params: FaceParams) -> np.ndarray:
        ident = np.asarray(params.identity, np.float64)[: self.k]
        return np.concatenate([ident, np.asarray(params.expression, np.float64),
                               self._corrective_start(params).reshape(-1),
                               np.asarray(params.rotation, np.float64), np.asarray(params.translation, np.float64)])

    def unpack(self, theta: np.ndarray, params: FaceParams) -> FaceParams:
        """``params`` with the fitted unknowns of ``theta`` (same dtype; the rest untouched)."""
        dt = np.asarray(params.expression).dtype
        ident = np.asarray(params.identity, np.float64).copy()
        ident[: self.k] = theta[: self.k]
        out = replace(params, identity=ident.astype(dt), expression=theta[self.k: self.k + self.n_expr].astype(dt),
                      rotation=theta[-6:-3].astype(dt), translation=theta[-3:].astype(dt))
        if self.n_corr:
            out = replace(out, corrective=theta[self.k + self.n_expr: self.n_lin].reshape(self.n_corr, 3).astype(dt))
        return out

    def clip(self, theta: np.ndarray) -> np.ndarray:
        theta = theta.copy()
        theta[self.k: self.k + self.n_expr] = np.clip(theta[self.k: self.k + self.n_expr], 0.0, 1.0)
        return theta

    def model_points(self, theta: np.ndarray) -> np.ndarray:
        coeffs = theta[: self.n_lin]
        pts = self.neutral + self.fixed_offset + np.tensordot(coeffs, self.basis, 1)
        if self.k == 0:
            pts = pts + np.tensordot(self.fixed_identity, self.id_basis, 1)
        return pts

    def camera_points(self, theta: np.ndarray) -> np.ndarray:
        rot = euler_to_matrix(theta[-6:-3])
        return self.model_points(theta) @ rot.T + theta[-3:]

    def residual(self, theta: np.ndarray) -> np.ndarray:
        pix = project(self.camera_points(theta), self.camera, self.width, self.height)
        return (pix - self.pixels).reshape(-1) * self.sqrt_w

    def cost(self, theta: np.ndarray) -> float:
        r = self.residual(theta)
        d = theta - self.prior_mean
        return float(r @ r + d @ (self.prior * d))

    def jacobian(self, theta: np.ndarray) -> np.ndarray:
        """(2N, P) ∂residual/∂θ, exact."""
        rot, d_rot = rotation_derivatives(theta[-6:-3])
        model = self.model_points(theta)
        x = model @ rot.T + theta[-3:]
        n = self.n
        d_x = np.concatenate([self.basis @ rot.T,                           # coefficients
                              np.einsum("nj,aij->ani", model, d_rot),       # Euler angles
                              np.broadcast_to(np.eye(3)[:, None, :], (3, n, 3))], 0)   # translation
        f = self.camera[0] * self.width
        depth = np.maximum(-x[:, 2], 1e-6)
        # u = cx + f x/d, v = cy − f y/d with d = −z:  ∂u/∂X = f/d (1, 0, x/d), ∂v/∂X = −f/d (0, 1, y/d)
        du = (f / depth)[:, None] * np.stack([np.ones(n), np.zeros(n), x[:, 0] / depth], 1)
        dv = -(f / depth)[:, None] * np.stack([np.zeros(n), np.ones(n), x[:, 1] / depth], 1)
        jac = np.stack([np.einsum("pnj,nj->np", d_x, du), np.einsum("pnj,nj->np", d_x, dv)], 1)
        return jac.reshape(2 * n, -1) * self.sqrt_w[:, None]


def reference_minimise(prob: ReferenceProblem, theta: np.ndarray, settings: LandmarkFitSettings
                       ) -> tuple[np.ndarray, int]:
    """Levenberg-damped Gauss-Newton from ``theta``; a step is kept only if the cost falls."""
    cost, lam, accepted = prob.cost(theta), settings.damping, 0
    for _ in range(settings.steps):
        jac = prob.jacobian(theta)
        r = prob.residual(theta)
        normal = jac.T @ jac + np.diag(prob.prior)
        grad = jac.T @ r + prob.prior * (theta - prob.prior_mean)
        diag = np.diag(normal) + 1e-9
        for _try in range(MAX_DAMPING_TRIES):
            step = np.linalg.solve(normal + lam * np.diag(diag), -grad)
            cand = prob.clip(theta + step)
            cand_cost = prob.cost(cand)
            if cand_cost < cost:
                theta, cost, lam, accepted = cand, cand_cost, max(lam / 3.0, 1e-7), accepted + 1
                break
            lam *= 10.0
        else:
            break
    return theta, accepted


def reference_fit(arrays: ModelArrays, params: FaceParams, pixels: np.ndarray, width: float, height: float,
                  settings: LandmarkFitSettings = LandmarkFitSettings(), weights: np.ndarray | None = None,
                  identity_prior_mean: np.ndarray | None = None) -> LandmarkFit:
    """``facemodel.landmark_fit.fit_landmarks`` as first written (valid inputs only)."""
    pixels = np.asarray(pixels, np.float64)
    n = arrays.neutral.shape[0]
    w = np.ones(n) if weights is None else np.asarray(weights, np.float64).copy()
    finite = np.all(np.isfinite(pixels), 1)
    w[~finite] = 0.0
    pixels = np.where(finite[:, None], pixels, 0.0)
    prob = ReferenceProblem(arrays, params, pixels, width, height, w, settings, identity_prior_mean)
    theta = prob.clip(prob.pack(params))

    def mean_dist(th: np.ndarray) -> float:
        r = (project(prob.camera_points(th), prob.camera, prob.width, prob.height) - pixels)
        return float((np.linalg.norm(r, axis=1) * w).sum() / w.sum())

    before = mean_dist(theta)
    theta, accepted = reference_minimise(prob, theta, settings)
    return LandmarkFit(prob.unpack(theta, params), before, mean_dist(theta), accepted)
