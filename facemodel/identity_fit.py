"""What one view can tell about identity: MAP identity from 2-D points of a known pose (issue 4).

The regressor's identity error needs a reference that is not another network. Given the true
rotation, expression and camera of a face and the image positions of some of its model points
(the 68 landmarks, or a dense set of face vertices) measured with Gaussian noise of σ pixels, the
identity's posterior mode under the model's N(0, I) prior minimises the squared reprojection
error / σ² plus the prior: camera-space vertices are linear in identity and translation, only
the perspective division is not, so a few Gauss-Newton steps solve it. With the translation
unknown (as in a photo) the face's size is seen only through perspective — the size/distance
ambiguity every single-image method has — and the distance prior decides the rest.

The aligned vertex error of that estimate is the accuracy a landmark detector of σ pixels would
allow *at best*; :func:`identity_bound` measures it on a corpus so the regressor's figure
(``aligned_attribution_mm.identity_only`` of ``facerig eval synthetic``) can be read against it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Mapping

import numpy as np

from .camera import project
from .formation import mesh_camera_space
from .geometry import euler_to_matrix
from .metrics import vertex_error_aligned_mm
from .model import FaceModel, ModelArrays
from .params import FaceParams

# Weak ridge on the translation (cm⁻²): keeps the normal equations regular without a real prior.
_TRANSLATION_RIDGE = 1e-8
_GAUSS_NEWTON_STEPS = 5


def fit_identity_to_points(arrays: ModelArrays, params: FaceParams, pixels: np.ndarray, image_size: int,
                           sigma_px: float, n_identity: int, solve_translation: bool = True,
                           translation_prior: tuple[np.ndarray, np.ndarray] | None = None) -> FaceParams:
    """``params`` (one face) with identity (and translation) refitted to the points' ``pixels``.

    ``arrays`` is the vertex subset whose image positions ``pixels`` (N, 2) are given; rotation,
    expression and camera of ``params`` are taken as known, its identity is ignored. The
    residuals are reprojection errors in pixels, so ``sigma_px`` weighs them against the
    N(0, I) identity prior. ``translation_prior`` = (mean, sd) per axis (cm) is the prior of the
    solved translation; without one the distance is free and the size left to the identity
    prior alone. Returns the posterior mode with ``n_identity`` modes (the rest zero, same
    number of modes as ``params``).
    """
    if sigma_px <= 0:
        raise ValueError(f"sigma_px must be positive, got {sigma_px}")
    pixels = np.asarray(pixels, np.float64)
    n_points = arrays.neutral.shape[0]
    if pixels.shape != (n_points, 2):
        raise ValueError(f"pixels must be ({n_points}, 2) for this vertex subset, got {pixels.shape}")
    n_total = np.asarray(params.identity).shape[-1]
    if not 0 < n_identity <= n_total:
        raise ValueError(f"n_identity must be in 1..{n_total}, got {n_identity}")

    base = replace(params, identity=np.zeros(n_total, np.float32))
    x0 = np.asarray(mesh_camera_space(arrays, base), np.float64)                    # (N, 3)
    rot = euler_to_matrix(np.asarray(params.rotation, np.float64))
    basis = np.asarray(arrays.identity_basis[:n_identity], np.float64).reshape(n_identity, n_points, 3)
    d_x = basis @ rot.T                                                              # (K, N, 3) ∂X/∂α
    n_t = 3 if solve_translation else 0
    if n_t:
        d_x = np.concatenate([d_x, np.broadcast_to(np.eye(3)[:, None, :], (3, n_points, 3))], 0)

    cam = np.asarray(params.camera, np.float64)
    f = cam[0] * image_size
    # MAP = minimise |reprojection error|² / σ² + prior; Gauss-Newton (camera-space points are
    # linear in the unknowns, only the perspective division is not, so a few steps converge).
    n_unknown = n_identity + n_t
    prior_precision = np.zeros(n_unknown)
    prior_precision[:n_identity] = 1.0
    prior_mean = np.zeros(n_unknown)
    if n_t:
        if translation_prior is None:
            prior_precision[n_identity:] = _TRANSLATION_RIDGE
        else:
            mean, sd = (np.asarray(v, np.float64) for v in translation_prior)
            prior_precision[n_identity:] = 1.0 / sd**2
            prior_mean[n_identity:] = mean - np.asarray(params.translation, np.float64)
    theta = np.zeros(n_unknown)
    for _ in range(_GAUSS_NEWTON_STEPS):
        x = x0 + np.tensordot(theta, d_x, 1)
        depth = np.maximum(-x[:, 2], 1e-3)
        res = (pixels - project(x, cam, image_size, image_size)).reshape(-1)
        # ∂u/∂X = f/d (1, 0, x/d), ∂v/∂X = −f/d (0, 1, y/d)  (d = −z)
        du = (f / depth)[:, None] * np.stack([np.ones(n_points), np.zeros(n_points), x[:, 0] / depth], 1)
        dv = -(f / depth)[:, None] * np.stack([np.zeros(n_points), np.ones(n_points), x[:, 1] / depth], 1)
        jac = np.stack([np.einsum("knj,nj->nk", d_x, du), np.einsum("knj,nj->nk", d_x, dv)], 1)
        jac = jac.reshape(2 * n_points, n_unknown)
        normal = jac.T @ jac / sigma_px**2 + np.diag(prior_precision)
        rhs = jac.T @ res / sigma_px**2 - prior_precision * (theta - prior_mean)
        theta = theta + np.linalg.solve(normal, rhs)

    identity = np.zeros(n_total, np.float32)
    identity[:n_identity] = theta[:n_identity]
    translation = np.asarray(params.translation, np.float32)
    if solve_translation:
        translation = (translation + theta[n_identity:]).astype(np.float32)
    return replace(params, identity=identity, translation=translation)


@dataclass(frozen=True)
class BoundCase:
    """One row of the bound: which points, how noisy, whether the distance is known."""

    points: str
    sigma_px: float
    solve_translation: bool


def identity_bound(model: FaceModel, gt: FaceParams, image_size: int, cases: list[BoundCase],
                   point_sets: Mapping[str, np.ndarray], n_identity: int = 60, seed: int = 0
                   ) -> dict[BoundCase, np.ndarray]:
    """(N,) aligned face-region vertex error (mm) of identities fitted to noisy projected points.

    ``gt`` is a batch of true parameters; for each case its points (vertex indices from
    ``point_sets``) are projected, disturbed by N(0, σ²) pixel noise (seeded, the same draw for
    every case of one point set and σ), and the identity is fitted with the true rotation,
    expression and camera; the error is measured like ``aligned_attribution_mm.identity_only``.
    A solved translation gets the batch's translation mean and spread as its prior (what a
    method can know of the distance without seeing it).
    """
    t_all = np.asarray(gt.translation, np.float64)
    t_prior = (t_all.mean(0), np.maximum(t_all.std(0), 1.0))  # ≥ 1 cm: tiny batches are no prior
    face = model.arrays.subset(model.vertex_range("face"))
    target = mesh_camera_space(face, gt)
    subsets = {name: model.arrays.subset(idx) for name, idx in point_sets.items()}
    out: dict[BoundCase, np.ndarray] = {}
    for case in cases:
        arrays = subsets[case.points]
        rng = np.random.default_rng([seed, int(round(case.sigma_px * 1000)), len(point_sets[case.points])])
        fitted = []
        for i in range(len(gt.expression)):
            g = gt[i]
            exact = np.asarray(mesh_camera_space(arrays, g), np.float64)
            pix = project(exact, np.asarray(g.camera, np.float64), image_size, image_size)
            pix = pix + rng.normal(0.0, case.sigma_px, pix.shape)
            fitted.append(fit_identity_to_points(arrays, g, pix, image_size, case.sigma_px, n_identity,
                                                 case.solve_translation, t_prior).identity)
        pred = replace(gt, identity=np.stack(fitted))
        out[case] = vertex_error_aligned_mm(mesh_camera_space(face, pred), target)
    return out
