"""Camera, lighting, albedo, priors and the forward model (numpy and torch agree)."""

import numpy as np
import pytest

from facemodel import (DEFAULT_CAMERA, FaceParams, blender_camera, crop_camera, form, landmarks_2d, project,
                       unproject)
from facemodel.crop import canonical_crop_box
from facemodel.lighting import directional_sh, sh_basis, srgb_decode, srgb_encode
from facemodel.priors import PoseRange, place_in_crop, sample_expressions, sample_params


def test_projection_matches_a_hand_computed_case():
    cam = np.array([4.0, 0.5, 0.5])
    # f = 512 px for a 128-px image; a point 10 cm right, 5 cm up, 100 cm away.
    uv = project(np.array([[10.0, 5.0, -100.0]]), cam, 128, 128)
    np.testing.assert_allclose(uv, [[64 + 512 * 0.1, 64 - 512 * 0.05]])
    back = unproject(uv, np.array([100.0]), cam, 128, 128)
    np.testing.assert_allclose(back, [[10.0, 5.0, -100.0]])


def test_crop_camera_round_trip():
    cam = np.array([1.2, 0.48, 0.52], np.float32)
    pts = np.array([[3.0, -2.0, -60.0], [-5.0, 4.0, -70.0]])
    box = (300.0, 150.0, 556.0, 406.0)
    full = project(pts, cam, 1000, 800)
    crop = crop_camera(cam, 1000, 800, box, 128, 128)
    in_crop = project(pts, crop, 128, 128)
    np.testing.assert_allclose(in_crop, (full - [box[0], box[1]]) * 128 / 256, atol=1e-3)


def test_blender_camera_settings():
    b = blender_camera(np.array([4.0, 0.5, 0.5]), 128, 128)
    assert b.lens_mm == pytest.approx(144.0) and b.sensor_fit == "HORIZONTAL"
    assert b.shift_x == 0 and b.shift_y == 0
    b2 = blender_camera(np.array([1.0, 0.6, 0.25]), 200, 100)
    assert b2.shift_x == pytest.approx(-0.1) and b2.shift_y == pytest.approx(-0.125)


def test_sh_basis_is_orthonormal_and_has_known_values():
    # Lebedev-free check: a dense Fibonacci sphere integrates degree-4 products to ~1e-4.
    n = 200_000
    i = np.arange(n) + 0.5
    z = 1 - 2 * i / n
    phi = np.pi * (1 + 5 ** 0.5) * i
    pts = np.stack([np.sqrt(1 - z * z) * np.cos(phi), np.sqrt(1 - z * z) * np.sin(phi), z], -1)
    y = sh_basis(pts)
    gram = y.T @ y * (4 * np.pi / n)
    np.testing.assert_allclose(gram, np.eye(9), atol=2e-3)
    up = sh_basis(np.array([0.0, 0.0, 1.0]))
    np.testing.assert_allclose(up, [0.282095, 0, 0.488603, 0, 0, 0, 0.630783, 0, 0], atol=1e-6)


def test_directional_sh_approximates_clamped_cosine():
    d = np.array([0.3, 0.2, 1.0])
    sh = directional_sh(d, ambient=0.0, strength=1.0)
    rng = np.random.default_rng(0)
    nrm = rng.normal(size=(2000, 3))
    nrm /= np.linalg.norm(nrm, axis=1, keepdims=True)
    shade = (sh_basis(nrm) @ sh)[:, 0]
    truth = np.clip(nrm @ (d / np.linalg.norm(d)), 0, None)
    assert np.abs(shade - truth).mean() < 0.05  # order-2 SH captures the clamped cosine to ~3 %


def test_srgb_round_trip():
    x = np.linspace(0, 1, 101)
    np.testing.assert_allclose(srgb_decode(srgb_encode(x)), x, atol=1e-9)
    assert srgb_encode(np.array(0.5)) == pytest.approx(0.7353569, abs=1e-6)


def test_priors_are_deterministic_and_in_range(face_model):
    lm = face_model.arrays.subset(face_model.landmark_indices())
    a = sample_params(np.random.default_rng(7), 32, face_model.expression_names, lm, pose=PoseRange(60, 20, 10))
    b = sample_params(np.random.default_rng(7), 32, face_model.expression_names, lm, pose=PoseRange(60, 20, 10))
    np.testing.assert_array_equal(a.to_vector(), b.to_vector())
    assert (a.expression >= 0).all() and (a.expression <= 1).all()
    deg = np.rad2deg(a.rotation)
    assert (np.abs(deg) <= [60, 20, 10]).all()
    assert (a.translation[:, 2] < -30).all()


def test_expression_prior_is_sparse_and_pairs_correlate(face_model):
    names = face_model.expression_names
    e = sample_expressions(np.random.default_rng(0), 4000, names)
    assert (e > 0).mean() < 0.25
    left, right = e[:, names.index("mouthSmile_L")], e[:, names.index("mouthSmile_R")]
    assert np.corrcoef(left, right)[0, 1] > 0.8
    jl, jr = e[:, names.index("jawLeft")], e[:, names.index("jawRight")]
    assert not ((jl > 0) & (jr > 0)).any()


def test_place_in_crop_puts_the_canonical_box_on_the_image(face_model):
    lm = face_model.arrays.subset(face_model.landmark_indices())
    p = sample_params(np.random.default_rng(3), 8, face_model.expression_names, lm)
    p.translation = place_in_crop(lm, p, scale=1.0, shift=0.0)
    pts = landmarks_2d(lm, p, 128, 128)
    for k in range(8):
        np.testing.assert_allclose(canonical_crop_box(pts[k]), (0, 0, 128, 128), atol=0.05)


def test_albedo_spans_the_skin_range(face_model):
    from facemodel.albedo import vertex_albedo

    a = face_model.arrays
    cheek = face_model.landmarks68[2]
    dark, light = np.zeros((2, 7), np.float32), np.zeros((2, 7), np.float32)
    dark[0, 0], light[0, 0] = -1, 1
    alb = vertex_albedo(a.albedo_base, a.albedo_axes, np.stack([dark[0], light[0]]))
    assert (alb > 0).all() and (alb <= 1).all()
    assert alb[0, cheek].mean() < 0.1 < 0.4 < alb[1, cheek].mean()
    lips = face_model.landmarks68[51]
    assert alb[1, lips, 0] / alb[1, lips, 1] > alb[1, cheek, 0] / alb[1, cheek, 1], "lips are redder than cheeks"


def test_forward_model_shapes_and_colours(face_model):
    p = FaceParams.neutral((2,))
    f = form(face_model.arrays, p, 128, 128)
    assert f.vertices.shape == (2, face_model.n_vertices, 3) and f.vertices.dtype == np.float32
    assert f.pixels.shape == (2, face_model.n_vertices, 2)
    assert 0 <= f.colors.min() and f.colors.max() <= 1
    nose = face_model.landmarks68[30]
    np.testing.assert_allclose(f.pixels[0, nose], [64, f.pixels[0, nose, 1]])  # symmetric face: nose centred
    assert abs(f.pixels[0, nose, 0] - 64) < 0.01


def test_numpy_and_torch_forward_models_agree_and_differentiate(face_model):
    torch = pytest.importorskip("torch")
    sub = face_model.arrays.subset(face_model.landmark_indices())
    p = sample_params(np.random.default_rng(11), 3, face_model.expression_names, sub)
    ref = landmarks_2d(sub, p, 128, 128)
    tsub = sub.map(lambda x: torch.as_tensor(np.asarray(x)).double() if np.asarray(x).dtype.kind == "f"
                   else torch.as_tensor(np.asarray(x)))
    vec = torch.as_tensor(p.to_vector(), dtype=torch.float64).requires_grad_(True)
    out = landmarks_2d(tsub, FaceParams.from_vector(vec), 128, 128)
    np.testing.assert_allclose(out.detach().numpy(), ref, atol=1e-2)
    # Gradient of the projected landmarks w.r.t. rotation and translation: finite differences.
    assert torch.autograd.gradcheck(
        lambda v: landmarks_2d(tsub, FaceParams.from_vector(v), 128, 128), (vec,), eps=1e-6, atol=1e-4)
