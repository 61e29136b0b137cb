"""Loss terms against hand-computed values and finite-difference gradients."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from facemodel import DEFAULT_CAMERA, FaceParams, ParamLayout
from facemodel.camera import project
from facemodel.formation import mesh_camera_space
from learner.config import LossConfig
from learner.losses import (N_UNIFIED, Batch, FaceLoss, face_vertex_subset, keypoint_vertices, to_unified,
                            unified_vertex_indices)
from learner.network import OutputStats, translation_to_uvlogd, uvlogd_to_translation

SIZE = 64
NET = ParamLayout(n_identity=10)
GT = ParamLayout(n_identity=100)


@pytest.fixture(scope="module")
def gt_params(face_model) -> FaceParams:
    from facemodel.priors import PoseRange, sample_params

    rng = np.random.default_rng(3)
    lm = face_model.arrays.subset(face_model.landmark_indices())
    return sample_params(rng, 3, face_model.expression_names, lm, n_identity=100, pose=PoseRange(40, 20, 10))


def make_loss(face_model, dtype=torch.float32, **overrides) -> FaceLoss:
    cfg = LossConfig(n_face_vertices=200, **overrides)
    stats = OutputStats.identity(NET)
    stats.std[NET.slices["rotation"]] = 0.5
    return FaceLoss(face_model, NET, GT, cfg, stats, SIZE, dtype=dtype)


def net_vector(gt: FaceParams) -> np.ndarray:
    """Ground truth truncated to the network layout (identity modes 10…99 dropped)."""
    v = np.asarray(gt.to_vector(), np.float64)
    return np.concatenate([v[:, :10], v[:, 100:]], 1)


def test_param_loss_hand_computed(face_model, gt_params):
    loss = make_loss(face_model, dtype=torch.float64)
    gt = torch.as_tensor(np.asarray(gt_params.to_vector()), dtype=torch.float64)
    pred = torch.as_tensor(net_vector(gt_params))
    # the dropped identity modes 10…99 are not part of the parameter loss
    assert torch.allclose(loss.param_loss(pred, gt), torch.zeros(3, dtype=torch.float64), atol=1e-9)
    face = np.arange(9409)
    b3 = face_model.identity_basis[3][face].astype(np.float64)
    w3 = np.sqrt((b3 ** 2).sum(-1).mean())            # RMS displacement of mode 3 over the face, cm
    p = pred.clone()
    p[:, 3] += 0.5
    p[:, NET.slices["rotation"].start] += 0.2          # yaw; std 0.5
    om = loss.config.omega
    expected = om["identity"] * (w3 * 0.5) ** 2 + om["rotation"] * (0.2 / 0.5) ** 2
    np.testing.assert_allclose(loss.param_loss(p, gt).numpy(), expected, rtol=1e-6)
    # translation is compared as (u, v, log d): a 10 % depth error costs log(1.1)² whatever the depth
    p = pred.clone()
    p[:, NET.slices["translation"]] *= 1.1
    np.testing.assert_allclose(loss.param_loss(p, gt).numpy(), om["translation"] * np.log(1.1) ** 2, rtol=1e-6)
    # SH/albedo errors count only where the appearance labels match the pixels
    p = pred.clone()
    p[:, NET.slices["sh"].start] += 0.3                # std 1 in these stats
    ok = torch.tensor([True, False, True])
    np.testing.assert_allclose(loss.param_loss(p, gt, ok).numpy(), np.array([1, 0, 1]) * om["sh"] * 0.09, rtol=1e-6)


def test_vertex_losses_hand_computed(face_model, gt_params):
    loss = make_loss(face_model, dtype=torch.float64, vertex3d_space="camera")
    gt = torch.as_tensor(np.asarray(gt_params.to_vector()), dtype=torch.float64)
    gtp = FaceParams.from_vector(gt, GT)
    # pred = gt shape with mode 0 changed by 0.5 (and modes ≥ 10 as in the ground truth)
    full = gt.clone()
    full[:, 0] += 0.5
    idx = face_vertex_subset(face_model, 200)
    expected3d = np.linalg.norm(0.5 * face_model.identity_basis[0][idx].astype(np.float64), axis=-1).mean()
    got = loss.vertex3d_loss(FaceParams.from_vector(full, GT), gtp).numpy()
    np.testing.assert_allclose(got, expected3d, rtol=1e-5)
    # 2-D: a lateral shift of dx cm moves vertex v by f·S·dx/depth_v pixels
    shifted = gt.clone()
    dx = 0.7
    shifted[:, GT.slices["translation"].start] += dx
    depth = -np.asarray(mesh_camera_space(face_model.arrays.subset(idx), gt_params))[..., 2]
    expected2d = (DEFAULT_CAMERA[0] * SIZE * dx / depth).mean(-1) * 100 / SIZE
    got = loss.vertex2d_loss(FaceParams.from_vector(shifted, GT), gtp).numpy()
    np.testing.assert_allclose(got, expected2d, rtol=1e-5)


def test_rotated_vertex_loss_ignores_translation(face_model, gt_params):
    loss = make_loss(face_model, dtype=torch.float64)
    gt = torch.as_tensor(np.asarray(gt_params.to_vector()), dtype=torch.float64)
    moved = gt.clone()
    moved[:, GT.slices["translation"]] += 5.0
    got = loss.vertex3d_loss(FaceParams.from_vector(moved, GT), FaceParams.from_vector(gt, GT))
    assert float(got.max()) < 1e-3   # only the sqrt smoothing ε remains


def test_landmark_loss_masked(face_model, gt_params):
    loss = make_loss(face_model, dtype=torch.float64)
    gt = torch.as_tensor(np.asarray(gt_params.to_vector()), dtype=torch.float64)
    pred = FaceParams.from_vector(gt, GT)
    lm = loss.predicted_landmarks(pred)
    target = lm.clone()
    target[:, 30, 0] += 3.0        # nose tip 3 px off
    target[:, 70, 1] -= 4.0        # a visible-jaw slot 4 px off
    target[:, 40] += 100.0         # masked out: must not count
    mask = torch.zeros(3, N_UNIFIED, dtype=torch.bool)
    mask[:, [30, 70, 5]] = True
    got = loss.landmark_loss(pred, target, mask).numpy()
    np.testing.assert_allclose(got, (3.0 + 4.0 + 0.0) / 3 * 100 / SIZE, atol=1e-4)
    none = loss.landmark_loss(pred, target, torch.zeros_like(mask))
    assert torch.all(none == 0)


def test_unified_landmark_schemes(face_model):
    pts = np.arange(68 * 2, dtype=np.float32).reshape(1, 68, 2)
    t, m = to_unified(pts, "ibug68")
    assert m.sum() == 68 and not m[0, 0:8].any() and m[0, 8] and m[0, 17:68].all() and m[0, 68:84].all()
    np.testing.assert_array_equal(t[0, 68], pts[0, 0])      # jaw point 0 → visible contour slot
    np.testing.assert_array_equal(t[0, 30], pts[0, 30])
    valid = np.ones((1, 68), bool)
    valid[0, 30] = False
    _, m2 = to_unified(pts, "fixed68", valid)
    assert m2[0, :68].sum() == 67 and not m2[0, 68:].any()
    assert len(unified_vertex_indices(face_model)) == N_UNIFIED
    with pytest.raises(ValueError, match="68 points"):
        to_unified(pts[:, :51], "ibug68")


def test_translation_parametrisation_round_trip():
    t = torch.tensor([[3.0, -2.0, -95.0], [-10.0, 4.0, -140.0]], dtype=torch.float64)
    np.testing.assert_allclose(uvlogd_to_translation(translation_to_uvlogd(t)).numpy(), t.numpy(), rtol=1e-12)


def test_total_loss_gradient_matches_finite_differences(face_model, gt_params):
    loss = make_loss(face_model, dtype=torch.float64, prior_identity=0.1, prior_expression=0.1, prior_albedo=0.1)
    gt = torch.as_tensor(np.asarray(gt_params.to_vector())[:2], dtype=torch.float64)
    rng = np.random.default_rng(0)
    base = net_vector(gt_params[:2])
    pred0 = torch.as_tensor(base + rng.normal(0, 0.05, base.shape))
    pred0[:, NET.slices["expression"]] = pred0[:, NET.slices["expression"]].clamp(0.05, 0.95)
    pred0[:, NET.slices["albedo"]] += 0.3
    target, mask = to_unified(rng.uniform(10, 50, (2, 68, 2)), "ibug68")
    batch = Batch(images=torch.zeros(2, 3, 4, 4), params=gt, has_params=torch.tensor([True, False]),
                  landmarks=torch.as_tensor(target, dtype=torch.float64), landmark_mask=torch.as_tensor(mask))
    pred = pred0.clone().requires_grad_(True)
    total, terms = loss(pred, batch)
    assert set(terms) == {"param", "vertex3d", "vertex2d", "landmark", "prior_identity", "prior_expression",
                          "prior_albedo"}
    (grad,) = torch.autograd.grad(total, pred)
    # central differences on a random subset of coordinates (all groups, camera excluded)
    coords = rng.choice(NET.size - 3, 24, replace=False)
    eps = 1e-6
    for j in coords:
        for i in range(2):
            plus, minus = pred0.clone(), pred0.clone()
            plus[i, j] += eps
            minus[i, j] -= eps
            fd = (loss(plus, batch)[0] - loss(minus, batch)[0]) / (2 * eps)
            assert abs(float(fd) - float(grad[i, j])) < 1e-5 + 1e-4 * abs(float(fd)), (i, j, float(fd), float(grad[i, j]))
    # the unlabelled sample contributes only to landmark and prior terms
    assert torch.count_nonzero(grad[1, NET.slices["sh"]]) == 0


def test_switched_off_terms_are_not_computed(face_model, gt_params):
    loss = make_loss(face_model, param=0.0, vertex2d=0.0, landmark=0.0)
    gt = torch.as_tensor(np.asarray(gt_params.to_vector()), dtype=torch.float32)
    pred = torch.as_tensor(net_vector(gt_params), dtype=torch.float32)
    batch = Batch(torch.zeros(3, 3, 4, 4), gt, torch.ones(3, dtype=torch.bool), torch.zeros(3, N_UNIFIED, 2),
                  torch.zeros(3, N_UNIFIED, dtype=torch.bool))
    _, terms = loss(pred, batch)
    assert set(terms) == {"vertex3d"}


@pytest.mark.parametrize("identity_from_landmarks", [True, False])
def test_landmark_term_can_leave_photo_identity_alone(face_model, gt_params, identity_from_landmarks):
    """With ``landmark_identity_unlabelled`` off, unlabelled samples' landmarks move pose/expression only."""
    loss = make_loss(face_model, param=0.0, vertex3d=0.0, vertex2d=0.0,
                     landmark_identity_unlabelled=identity_from_landmarks)
    gt = torch.as_tensor(np.asarray(gt_params.to_vector()), dtype=torch.float32)
    pred = torch.as_tensor(net_vector(gt_params), dtype=torch.float32).requires_grad_(True)
    targets = loss.predicted_landmarks(FaceParams.from_vector(gt, GT)).detach() + 2.0   # every point 2 px off
    labelled = torch.tensor([True, False, False])
    batch = Batch(torch.zeros(3, 3, 4, 4), gt, labelled, targets, torch.ones(3, N_UNIFIED, dtype=torch.bool))
    total, terms = loss(pred, batch)
    assert set(terms) == {"landmark"} and terms["landmark"] > 0
    total.backward()
    g_id = pred.grad[:, NET.slices["identity"]].abs().sum(1)
    g_pose = pred.grad[:, NET.slices["rotation"]].abs().sum(1)
    assert g_id[0] > 0 and torch.all(g_pose > 0)                 # labelled rows: identity always trained
    assert torch.all(g_id[1:] > 0) if identity_from_landmarks else torch.all(g_id[1:] == 0)


def test_keypoint_loss_hand_computed(face_model, gt_params):
    cfg = LossConfig(n_face_vertices=200, keypoint=1.0, vertex3d=0, vertex2d=0, landmark=0, param=0)
    loss = FaceLoss(face_model, NET, GT, cfg, OutputStats.identity(NET), SIZE, dtype=torch.float64, n_keypoints=32)
    gtp = FaceParams.from_vector(torch.as_tensor(np.asarray(gt_params.to_vector()), dtype=torch.float64), GT)
    idx = keypoint_vertices(face_model, 32)
    truth = torch.as_tensor(np.asarray(project(mesh_camera_space(face_model.arrays.subset(idx), gt_params),
                                               gt_params.camera, SIZE, SIZE)), dtype=torch.float64)
    np.testing.assert_allclose(loss.keypoint_loss(truth, gtp).numpy(), 0, atol=1e-3)
    # every point 3-4-5 pixels off: 5 px = 5/64 of the width
    off = truth + torch.tensor([3.0, 4.0], dtype=torch.float64)
    np.testing.assert_allclose(loss.keypoint_loss(off, gtp).numpy(), 500 / SIZE, rtol=1e-6)
    batch = Batch(torch.zeros(3, 3, SIZE, SIZE), gtp.to_vector(), torch.ones(3, dtype=torch.bool),
                  torch.zeros(3, N_UNIFIED, 2), torch.zeros(3, N_UNIFIED, dtype=torch.bool))
    pred = torch.as_tensor(net_vector(gt_params))
    total, terms = loss(pred, batch, off)
    assert set(terms) == {"keypoint"} and float(total) == pytest.approx(500 / SIZE, rel=1e-6)
