"""``facemodel.lighting_fit.fit_sh``: exact recovery, robustness to outliers, the prior where data is missing."""

from __future__ import annotations

import numpy as np

from facemodel import FaceParams
from facemodel.albedo import vertex_albedo
from facemodel.formation import mesh_camera_space
from facemodel.geometry import vertex_normals
from facemodel.lighting import directional_sh, shading, srgb_encode
from facemodel.lighting_fit import MIN_SAMPLES, fit_face_lighting, fit_sh, unclipped


def _hemisphere(n: int, rng: np.random.Generator) -> np.ndarray:
    """Normals a face shows a camera looking down −z: the +z half of the sphere."""
    v = rng.normal(size=(n, 3))
    v[:, 2] = np.abs(v[:, 2])
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def test_recovers_a_side_light_exactly_from_noise_free_pixels() -> None:
    rng = np.random.default_rng(0)
    normals = _hemisphere(4000, rng)
    albedo = rng.uniform(0.2, 0.6, (4000, 3))
    truth = directional_sh(np.array([1.0, 0.3, 0.8]), ambient=0.4, strength=0.8, color=np.array([1.0, 0.9, 0.8]))
    radiance = albedo * shading(normals, truth)
    flat = directional_sh(np.array([0.0, 0.0, 1.0]), ambient=0.6, strength=0.3)     # a frontal prior
    fitted = fit_sh(normals, albedo, radiance, flat, ridge=1e-6)
    np.testing.assert_allclose(shading(normals, fitted), shading(normals, truth), atol=2e-3)


def test_dark_outliers_count_little() -> None:
    rng = np.random.default_rng(1)
    normals = _hemisphere(3000, rng)
    albedo = np.full((3000, 3), 0.4)
    truth = directional_sh(np.array([-1.0, 0.2, 0.6]), ambient=0.3, strength=1.0)
    radiance = albedo * shading(normals, truth)
    dark = rng.random(3000) < 0.15                         # brows, glasses, hair: much darker than skin
    radiance[dark] *= 0.15
    prior = directional_sh(np.array([0.0, 0.0, 1.0]), ambient=0.5, strength=0.5)
    robust = fit_sh(normals, albedo, radiance, prior)
    plain = fit_sh(normals, albedo, radiance, prior, passes=0)
    clean = ~dark
    err_robust = np.abs(shading(normals[clean], robust) - shading(normals[clean], truth)).mean()
    err_plain = np.abs(shading(normals[clean], plain) - shading(normals[clean], truth)).mean()
    assert err_robust < 0.35 * err_plain, (err_robust, err_plain)      # measured 0.025 against 0.081


def test_too_few_points_keep_the_prior() -> None:
    rng = np.random.default_rng(2)
    prior = directional_sh(np.array([0.0, 1.0, 1.0]), ambient=0.5, strength=0.5)
    normals = _hemisphere(MIN_SAMPLES - 1, rng)
    out = fit_sh(normals, np.full((len(normals), 3), 0.5), np.full((len(normals), 3), 0.9), prior)
    np.testing.assert_array_equal(out, prior)
    assert out.dtype == np.float32 and out.shape == (9, 3)


def test_a_strong_ridge_returns_the_prior() -> None:
    rng = np.random.default_rng(3)
    normals = _hemisphere(2000, rng)
    prior = directional_sh(np.array([0.3, 0.0, 1.0]), ambient=0.5, strength=0.5)
    radiance = 0.5 * shading(normals, directional_sh(np.array([-1.0, 0.0, 0.2]), 0.2, 1.0))
    out = fit_sh(normals, np.full((2000, 3), 0.5), radiance, prior, ridge=1e6)
    np.testing.assert_allclose(out, prior, atol=1e-3)


def test_a_faces_side_light_from_its_own_radiance(face_model) -> None:
    """The model's face under a lamp from the left, the network's guess frontal: the fit finds the lamp;
    clipped highlights, which would say the light is weaker than it is, are left out."""
    params = FaceParams.neutral(n_identity=face_model.n_identity)
    truth = directional_sh(np.array([-1.0, 0.1, 0.5]), ambient=0.3, strength=4.0, color=np.array([1.0, 0.95, 0.9]))
    guess = directional_sh(np.array([0.0, 0.0, 1.0]), ambient=0.6, strength=0.4)
    verts = mesh_camera_space(face_model.arrays, params)
    normals = vertex_normals(verts, face_model.arrays.triangles, face_model.arrays.vertex_faces)
    face = np.flatnonzero(face_model.region_masks["narrow_face"] & (normals[:, 2] > 0.2))
    albedo = vertex_albedo(face_model.arrays.albedo_base[face], face_model.arrays.albedo_axes[:, face], params.albedo)
    radiance = albedo * shading(normals[face], truth)
    stored = np.minimum(radiance, 1.0)                                 # what an 8-bit photo keeps
    assert (~unclipped(stored)).any()
    wrong = FaceParams(params.identity, params.expression, params.rotation, params.translation, guess,
                       params.albedo, params.camera)
    fitted = fit_face_lighting(face_model.arrays, wrong, face, normals[face], stored)
    got, want = shading(normals[face], fitted), shading(normals[face], truth)
    assert np.abs(got - want).mean() < 0.04 * np.abs(want).mean()          # measured 2.5 % (8 % clipped)
    assert np.abs(srgb_encode(np.minimum(albedo * got, 1)) - srgb_encode(stored)).max() < 0.05
