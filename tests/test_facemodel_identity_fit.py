"""facemodel.identity_fit: the MAP identity fit behind ``facerig eval identity-bound``."""

from dataclasses import replace

import numpy as np
import pytest

from facemodel import FaceParams
from facemodel.formation import mesh_camera_space, project_to_image
from facemodel.identity_fit import BoundCase, fit_identity_to_points, identity_bound
from facemodel.metrics import vertex_error_aligned_mm

SIZE = 128


def face(seed: int = 0, yaw_deg: float = 25.0, n_modes: int = 60) -> FaceParams:
    """A random face whose identity lives in the first ``n_modes`` modes, seen at ``yaw_deg``."""
    rng = np.random.default_rng(seed)
    p = FaceParams.neutral()
    ident = np.zeros(100, np.float32)
    ident[:n_modes] = rng.normal(0, 1, n_modes)
    expr = np.clip(rng.normal(0, 0.2, 53), 0, 1).astype(np.float32)
    return replace(p, identity=ident, expression=expr,
                   rotation=np.radians([yaw_deg, 5.0, -3.0]).astype(np.float32),
                   translation=np.array([1.0, -0.5, -95.0], np.float32))


def pixels_of(arrays, params):
    return np.asarray(project_to_image(mesh_camera_space(arrays, params), params, SIZE, SIZE), np.float64)


def map_objective(arrays, params, pixels, sigma, n_identity, t_prior):
    """What the fit minimises: reprojection error² / σ² + |α|² + translation prior."""
    pix = pixels_of(arrays, params)
    mean, sd = t_prior
    t = np.asarray(params.translation, np.float64)
    return (((pix - pixels) ** 2).sum() / sigma**2 + (np.asarray(params.identity[:n_identity], np.float64) ** 2).sum()
            + (((t - mean) / sd) ** 2).sum())


@pytest.fixture(scope="module")
def dense(face_model):
    return face_model.arrays.subset(face_model.vertex_range("face")[::8])


def test_exact_dense_points_recover_identity_and_translation(dense):
    truth = face()
    moved = replace(truth, identity=np.zeros(100, np.float32),
                    translation=truth.translation + np.array([0.5, 0.3, 6.0], np.float32))
    fit = fit_identity_to_points(dense, moved, pixels_of(dense, truth), SIZE, sigma_px=0.01, n_identity=60)
    # The prior shrinks a little even at σ = 0.01 px; the scale/distance direction is the weakest.
    assert np.abs(fit.identity - truth.identity).max() < 0.2
    assert np.abs(fit.translation - truth.translation).max() < 0.5
    assert np.all(fit.identity[60:] == 0)
    np.testing.assert_array_equal(fit.rotation, truth.rotation)
    np.testing.assert_array_equal(fit.expression, truth.expression)


def test_solution_is_a_stationary_point_of_the_map_objective(dense):
    """Finite differences of the objective vanish at the returned identity and translation."""
    truth = face(seed=1, yaw_deg=-40.0)
    pix = pixels_of(dense, truth) + np.random.default_rng(2).normal(0, 1.0, (dense.neutral.shape[0], 2))
    prior = (np.array([0.0, 0.0, -100.0]), np.array([3.0, 3.0, 8.0]))
    n_id = 20
    fit = fit_identity_to_points(dense, truth, pix, SIZE, sigma_px=1.0, n_identity=n_id, translation_prior=prior)
    base = map_objective(dense, fit, pix, 1.0, n_id, prior)
    h = 1e-3
    for k in (0, 3, 11, 19):
        step = np.zeros(100, np.float32)
        step[k] = h
        up = map_objective(dense, replace(fit, identity=fit.identity + step), pix, 1.0, n_id, prior)
        down = map_objective(dense, replace(fit, identity=fit.identity - step), pix, 1.0, n_id, prior)
        # ≈ 0.15 here (float32 meshes); a 0.05 step off the optimum along mode 3 gives ≈ 55
        assert abs(up - down) / (2 * h) < 1.0, k
        assert up > base - 1e-6 and down > base - 1e-6        # a minimum, not a saddle
    for axis in range(3):
        step = np.zeros(3, np.float32)
        step[axis] = h
        up = map_objective(dense, replace(fit, translation=fit.translation + step), pix, 1.0, n_id, prior)
        down = map_objective(dense, replace(fit, translation=fit.translation - step), pix, 1.0, n_id, prior)
        assert abs(up - down) / (2 * h) < 1.0, axis


def test_noise_and_sparsity_lose_identity_towards_the_prior(face_model, dense):
    truth = face(seed=3)
    lms = face_model.arrays.subset(face_model.landmark_indices("fixed"))
    target_mesh = face_model.arrays.subset(face_model.vertex_range("face"))

    def err(arrays, sigma, solve_t=False):
        fit = fit_identity_to_points(arrays, truth, pixels_of(arrays, truth), SIZE, sigma, 60, solve_t)
        return float(vertex_error_aligned_mm(mesh_camera_space(target_mesh, fit),
                                             mesh_camera_space(target_mesh, truth)))

    mean_face = float(vertex_error_aligned_mm(
        mesh_camera_space(target_mesh, replace(truth, identity=np.zeros(100, np.float32))),
        mesh_camera_space(target_mesh, truth)))
    assert err(dense, 0.5) < err(lms, 0.5) < err(lms, 4.0) < mean_face
    # A huge σ leaves only the prior: the mean face.
    assert err(lms, 1e6) == pytest.approx(mean_face, rel=1e-3)


def test_bad_arguments_are_clear_errors(dense):
    truth = face()
    pix = pixels_of(dense, truth)
    with pytest.raises(ValueError, match="sigma_px"):
        fit_identity_to_points(dense, truth, pix, SIZE, 0.0, 60)
    with pytest.raises(ValueError, match="pixels"):
        fit_identity_to_points(dense, truth, pix[:10], SIZE, 1.0, 60)
    with pytest.raises(ValueError, match="n_identity"):
        fit_identity_to_points(dense, truth, pix, SIZE, 1.0, 0)


def test_identity_bound_orders_cases_and_is_reproducible(face_model):
    gt = FaceParams.stack([face(seed=s, yaw_deg=y) for s, y in ((4, 0.0), (5, 45.0), (6, -75.0))])
    sets = {"landmarks68": face_model.landmark_indices("fixed"), "dense": face_model.vertex_range("face")[::16]}
    cases = [BoundCase("landmarks68", 2.0, True), BoundCase("landmarks68", 2.0, False),
             BoundCase("dense", 0.5, False)]
    out = identity_bound(face_model, gt, SIZE, cases, sets, seed=1)
    again = identity_bound(face_model, gt, SIZE, cases, sets, seed=1)
    for c in cases:
        assert out[c].shape == (3,) and np.all(np.isfinite(out[c]))
        np.testing.assert_array_equal(out[c], again[c])
    assert out[cases[2]].mean() < out[cases[1]].mean() <= out[cases[0]].mean() + 0.3
