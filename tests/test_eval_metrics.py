"""facemodel.metrics against hand-computed cases (docs/conventions.md "Metrics" definitions)."""

import math

import numpy as np
import pytest

from facemodel import metrics
from facemodel.geometry import euler_to_matrix, rigid_transform


def square_face(w: float = 100.0, h: float = 100.0) -> np.ndarray:
    """68 points filling a w × h box, with outer eye corners 36/45 exactly 0.4 w apart."""
    rng = np.random.default_rng(0)
    pts = rng.uniform(0, 1, (68, 2)) * [w, h]
    pts[0], pts[1] = [0, 0], [w, h]  # the box is exactly w × h
    pts[36], pts[45] = [0.3 * w, 0.4 * h], [0.7 * w, 0.4 * h]
    return pts


def test_known_shift_gives_known_nme():
    gt = square_face()
    pred = gt + [3.0, 4.0]  # every point 5 px off
    assert metrics.nme_bbox(pred, gt) == pytest.approx(5.0)           # 5 / sqrt(100·100) = 5 %
    assert metrics.nme_interocular(pred, gt) == pytest.approx(12.5)   # 5 / 40 = 12.5 %
    n = metrics.landmark_nmes(pred, gt)
    assert n["nme_bbox_51"] == pytest.approx(5.0) and n["nme_io_51"] == pytest.approx(12.5)


def test_bbox_normaliser_is_sqrt_wh_of_the_68_point_box():
    gt = square_face(w=200.0, h=50.0)  # sqrt(200·50) = 100
    gt[36], gt[45] = [10.0, 10.0], [110.0, 10.0]
    pred = gt.copy()
    pred[20] += [68.0, 0.0]  # one inner point 68 px off
    assert metrics.bbox_size(gt) == pytest.approx(100.0)
    assert metrics.nme_bbox(pred, gt) == pytest.approx(68.0 / 68 / 100 * 100)   # 1 px mean → 1 %
    # 51-point NME: the same error over 51 points, still normalised by the full 68-point box.
    assert metrics.nme_bbox(pred, gt, metrics.INNER_51) == pytest.approx(68.0 / 51 / 100 * 100)
    assert metrics.nme_interocular(pred, gt) == pytest.approx(1.0 / 100 * 100)  # io = 100


def test_jaw_only_error_does_not_reach_the_51_point_nme():
    gt = square_face()
    pred = gt.copy()
    pred[5] += [10.0, 0.0]
    assert metrics.nme_bbox(pred, gt, metrics.INNER_51) == 0.0
    assert metrics.nme_bbox(pred, gt) > 0


def test_batched_nme_and_degenerate_box():
    gt = np.stack([square_face(), square_face(50, 50)])
    pred = gt + 1.0
    out = metrics.nme_bbox(pred, gt)
    assert out.shape == (2,)
    assert out[1] == pytest.approx(2 * math.sqrt(2) * 100 / 50 / 2)  # sqrt(2)/50·100
    flat = np.zeros((68, 2))
    assert np.isnan(metrics.nme_bbox(flat + 1, flat))


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError):
        metrics.nme_bbox(np.zeros((67, 2)), np.zeros((68, 2)))


def test_yaw_bins_edges_sign_and_overflow():
    yaw = np.array([0.0, -29.9, 30.0, -45.0, 59.99, 60.0, -90.0, 95.0, np.nan])
    m = metrics.yaw_bin_masks(yaw)
    assert list(m) == ["0-30", "30-60", "60-90"]
    assert m["0-30"].tolist() == [1, 1, 0, 0, 0, 0, 0, 0, 0]
    assert m["30-60"].tolist() == [0, 0, 1, 1, 1, 0, 0, 0, 0]
    assert m["60-90"].tolist() == [0, 0, 0, 0, 0, 1, 1, 1, 0]  # > 90 joins the last bin; NaN in none


def test_balanced_mean_weights_bins_not_images():
    yaw = np.array([0, 5, 10, 20, 45, 75.0])
    err = np.array([1, 1, 1, 1, 4, 7.0])
    bins = metrics.binned_means(err, yaw)
    assert bins == {"0-30": {"n": 4, "mean": 1.0}, "30-60": {"n": 1, "mean": 4.0}, "60-90": {"n": 1, "mean": 7.0}}
    assert metrics.balanced_mean({k: v["mean"] for k, v in bins.items()}) == pytest.approx(4.0)
    assert err.mean() == pytest.approx(2.5)  # the plain mean would hide the profile error
    assert metrics.balanced_mean({"0-30": 2.0, "30-60": None, "60-90": 4.0}) == pytest.approx(3.0)
    assert metrics.balanced_mean({"0-30": None}) is None


def test_vertex_errors_camera_vs_aligned():
    rng = np.random.default_rng(1)
    gt = rng.normal(size=(50, 3))
    moved = np.asarray(rigid_transform(gt, np.array([0.3, -0.2, 0.1]), np.array([1.0, 2.0, 3.0])))
    assert metrics.vertex_error_mm(gt + [0.1, 0, 0], gt) == pytest.approx(1.0)  # 0.1 cm = 1 mm
    assert metrics.vertex_error_mm(moved, gt) > 10
    assert metrics.vertex_error_aligned_mm(moved, gt) == pytest.approx(0.0, abs=1e-9)
    batch = metrics.vertex_error_aligned_mm(np.stack([moved, gt * 1.1]), np.stack([gt, gt]))
    assert batch.shape == (2,) and batch[0] < 1e-9 and batch[1] > 0  # scale is a shape error


def test_aligned_error_attribution_isolates_each_part(face_model):
    from facemodel import FaceParams
    from facemodel.formation import mesh_camera_space

    rng = np.random.default_rng(4)
    gt = FaceParams.neutral((3,), n_identity=100)
    gt.identity = rng.normal(0, 1, (3, 100)).astype(np.float32)
    gt.expression = rng.uniform(0, 0.5, (3, 53)).astype(np.float32)
    gt.rotation = rng.uniform(-0.5, 0.5, (3, 3)).astype(np.float32)
    pred = gt.with_identity_modes(60)            # first 60 modes exact, expression exact
    pred.rotation = np.zeros((3, 3), np.float32)  # a pose error must not show up in any entry
    att = metrics.aligned_error_attribution(face_model, pred, gt)
    assert att["identity_only"].shape == (3,)
    assert att["expression_only"] == pytest.approx(np.zeros(3), abs=1e-3)
    # Exact first 60 modes: the identity error is exactly the truncation floor, and it is > 0.
    assert att["identity_only"] == pytest.approx(att["truncated_identity"], abs=1e-4)
    assert np.all(att["truncated_identity"] > 0.05)
    face = face_model.arrays.subset(face_model.vertex_range("face"))
    mean_face = gt.with_identity_modes(0).with_identity_modes(100)
    want = metrics.vertex_error_aligned_mm(mesh_camera_space(face, mean_face), mesh_camera_space(face, gt))
    assert att["mean_identity"] == pytest.approx(want, rel=1e-6)
    assert np.all(att["mean_identity"] > att["truncated_identity"])
    # Similarity alignment forgives size, so it scores about as well as the rigid one or better (it
    # minimises squared, not mean, distances: ties may come out a hair worse); a prediction that is
    # the ground truth scaled by 5 % scores 0 after it but millimetres before.
    assert np.all(att["mean_identity_scale_free"] <= 1.01 * att["mean_identity"])
    assert np.all(att["scale_free"] <= 1.01 * att["truncated_identity"])
    assert np.all(att["identity_only_scale_free"] <= 1.01 * att["truncated_identity"])
    g = mesh_camera_space(face, gt)
    assert metrics.vertex_error_aligned_mm(1.05 * g, g, scale=True) == pytest.approx(np.zeros(3), abs=1e-3)
    assert np.all(metrics.vertex_error_aligned_mm(1.05 * g, g) > 1.0)


def test_rotation_error_is_the_geodesic_angle():
    a = np.array([0.2, 0.1, -0.3])
    assert metrics.rotation_error_deg(a, a) == pytest.approx(0.0, abs=1e-5)
    assert metrics.rotation_error_deg(np.zeros(3), np.array([np.radians(25), 0, 0])) == pytest.approx(25.0)
    # A 10° turn about any axis, composed onto an arbitrary pose, is 10°.
    from facemodel.geometry import matrix_to_euler
    from scipy.spatial.transform import Rotation

    extra = Rotation.from_rotvec(np.radians(10) * np.array([1, 2, 2]) / 3).as_matrix()
    b = matrix_to_euler(euler_to_matrix(a) @ extra)
    assert metrics.rotation_error_deg(a, b) == pytest.approx(10.0, abs=1e-4)


def test_expression_mae_and_curves():
    assert metrics.expression_mae(np.zeros(53), np.full(53, 0.2)) == pytest.approx(0.2)
    errs = np.array([1.0, 2.0, 3.0, np.inf])
    thr, frac = metrics.cumulative_error_curve(errs, 4.0, steps=5)
    assert thr.tolist() == [0, 1, 2, 3, 4] and frac.tolist() == [0, 0.25, 0.5, 0.75, 0.75]
    assert metrics.failure_rate(errs, 2.5) == pytest.approx(0.5)
    assert 0 < metrics.auc_at(errs, 4.0) < 0.75
    assert metrics.nan_mean(np.array([np.nan, 1.0, 3.0])) == 2.0 and metrics.nan_mean(np.array([np.nan])) is None


def test_retrieval_ranks_count_closer_and_tied_others():
    d = np.array([[0.1, 0.5, 0.9],      # own match nearest → rank 0
                  [0.2, 0.4, 0.3],      # two others nearer → rank 2
                  [0.7, 0.2, 0.7]])     # a tie with the match counts against it → rank 2
    assert metrics.retrieval_ranks(d).tolist() == [0, 2, 2]
    assert metrics.retrieval_ranks(np.ones((4, 4))).tolist() == [3, 3, 3, 3]   # a constant predictor: last
    assert metrics.retrieval_ranks(np.array([[0.0, 1.0, 2.0]])).tolist() == [0]  # a larger gallery
    with pytest.raises(ValueError, match="G ≥ N"):
        metrics.retrieval_ranks(np.ones((3, 2)))


def test_sample_errors_with_attribution_equals_the_separate_calls(face_model):
    """``facerig eval synthetic`` forms each batch's meshes once; the numbers must not change."""
    from facemodel import FaceParams

    rng = np.random.default_rng(5)
    gt = FaceParams.neutral((2,), n_identity=100)
    gt.identity = rng.normal(0, 1, (2, 100)).astype(np.float32)
    gt.expression = rng.uniform(0, 0.5, (2, 53)).astype(np.float32)
    pred = gt.with_identity_modes(60)
    pred.identity = pred.identity + rng.normal(0, 0.5, pred.identity.shape).astype(np.float32)
    pred.expression = np.clip(gt.expression + rng.normal(0, 0.1, (2, 53)), 0, 1).astype(np.float32)
    pred.rotation = gt.rotation + np.float32(0.05)
    together = metrics.sample_errors(face_model, pred, gt, 128, attribution=True)
    apart = {**metrics.sample_errors(face_model, pred, gt, 128),
             **metrics.aligned_error_attribution(face_model, pred, gt)}
    assert together.keys() == apart.keys() and "scale_free" in together and "vertex_mm_aligned" in together
    for k in apart:
        assert together[k] == pytest.approx(apart[k], rel=1e-9), k
    assert np.all(together["scale_free"] > 0.1) and np.all(together["identity_only"] > 0.1)
