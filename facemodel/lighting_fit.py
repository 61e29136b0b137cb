"""Spherical-harmonics lighting fitted to a photo's own face pixels.

Why: the regressor's 27 SH coefficients are learned on renders, whose lamps are not a photo's;
on real photos they under-state how one-sided the light is (Helen: dividing the texture by them
removes 9 % of the left-right brightness difference, by this fit 63 %). With the geometry and the
albedo known, each channel's radiance is linear in its nine coefficients,

    y_v = a_v · Σ_b γ_b Y_b(n_v),

so the fit is a weighted least-squares problem per channel: Huber weights (a few reweighting
passes) make brows, glasses, hair and specular spots count less, and a ridge toward the
network's coefficients keeps directions the visible normals do not span (the back of the head)
at the network's estimate. numpy only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from .albedo import vertex_albedo
from .lighting import sh_basis, srgb_decode

if TYPE_CHECKING:
    from .model import ModelArrays
    from .params import FaceParams

N_BANDS = 9
MIN_SAMPLES = 100          # fewer seen surface points than this: keep the prior
HUBER_K = 1.5              # in robust standard deviations (1.4826 · median |residual|)
RIDGE = 0.01               # pull toward the prior, relative to the data's mean diagonal
# sRGB values outside this range are clipped highlights or black: they say nothing about the light
USABLE_LINEAR = (float(srgb_decode(np.float64(0.02))), float(srgb_decode(np.float64(0.97))))


def unclipped(radiance: np.ndarray) -> np.ndarray:
    """(N,) which linear colours (N, 3) may be used to fit the light (no channel clipped or black)."""
    radiance = np.asarray(radiance)
    return ((radiance > USABLE_LINEAR[0]) & (radiance < USABLE_LINEAR[1])).all(-1)


def fit_face_lighting(arrays: "ModelArrays", params: "FaceParams", vertices: np.ndarray, normals: np.ndarray,
                      radiance: np.ndarray) -> np.ndarray:
    """(9, 3) SH lighting of one face from the linear ``radiance`` (N, 3) a photo shows at some of its
    ``vertices`` (N indices, camera-space unit ``normals`` (N, 3)), under the albedo ``params``
    predicts, with the lighting ``params`` predicts as the prior; clipped colours are left out."""
    p = params.numpy()
    keep = unclipped(radiance)
    idx = np.asarray(vertices)[keep]
    albedo = vertex_albedo(arrays.albedo_base[idx], arrays.albedo_axes[:, idx], np.asarray(p.albedo, np.float32))
    return fit_sh(np.asarray(normals)[keep], albedo, np.asarray(radiance)[keep],
                  np.asarray(p.sh, np.float32).reshape(N_BANDS, 3))


def fit_sh(normals: np.ndarray, albedo: np.ndarray, radiance: np.ndarray, prior_sh: np.ndarray,
           ridge: float = RIDGE, passes: int = 4) -> np.ndarray:
    """(9, 3) SH coefficients explaining linear ``radiance`` (N, 3) of surface points with unit
    ``normals`` (N, 3) and linear ``albedo`` (N, 3), as ``lighting.shading`` defines them.

    ``ridge`` weighs ``|γ − prior|²`` relative to the data's own mean diagonal (scale-free: the same
    for dark and light skin, few or many points), so a well-seen face moves ≈ ``ridge`` of the way
    less than the data says and a direction no normal shows stays at the prior; ``passes`` Huber
    reweightings follow the first plain solve. Fewer than ``MIN_SAMPLES`` points return the prior."""
    prior = np.asarray(prior_sh, np.float64).reshape(N_BANDS, 3)
    n = len(normals)
    if n < MIN_SAMPLES:
        return prior.astype(np.float32)
    basis = sh_basis(np.asarray(normals, np.float64))
    out = np.empty_like(prior)
    for c in range(3):
        design = basis * np.asarray(albedo, np.float64)[:, c:c + 1]
        target = np.asarray(radiance, np.float64)[:, c]
        weight = np.ones(n)
        for _ in range(passes + 1):
            weighted = design * weight[:, None]
            normal = design.T @ weighted
            damp = ridge * max(float(np.trace(normal)) / N_BANDS, 1e-12)
            gamma = np.linalg.solve(normal + damp * np.eye(N_BANDS), weighted.T @ target + damp * prior[:, c])
            residual = target - design @ gamma
            scale = 1.4826 * float(np.median(np.abs(residual))) + 1e-9
            weight = np.minimum(1.0, HUBER_K * scale / np.maximum(np.abs(residual), 1e-12))
        out[:, c] = gamma
    return out.astype(np.float32)
