"""Several photos of one person: aggregation maths, multi-view corpora, C-Net training and export."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from facemodel.aggregation import (aggregate_identity, flag_outliers, identity_distance_matrix_mm, identity_rms_mm,
                                   identity_shape_error_mm, leave_one_out_distances)

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "blender_addon" / "models" / "facerig_regressor.onnx"


def test_aggregate_identity_weights():
    ids = np.array([[1.0, 0.0], [3.0, 4.0]])
    np.testing.assert_allclose(aggregate_identity(ids), [2.0, 2.0])
    np.testing.assert_allclose(aggregate_identity(ids, np.array([[3.0], [1.0]])), [1.5, 1.0])     # global score
    np.testing.assert_allclose(aggregate_identity(ids, np.array([[1.0, 1.0], [1.0, 3.0]])), [2.0, 3.0])
    with pytest.raises(ValueError, match="positive"):
        aggregate_identity(ids, np.array([[0.0], [1.0]]))


def test_identity_distance_is_the_shape_rms(face_model):
    a = np.zeros(60)
    b = np.zeros(60)
    b[3] = 2.0
    face = face_model.vertex_range("face")
    basis = np.asarray(face_model.identity_basis[3], np.float64)[face]
    expected = 2.0 * np.sqrt((basis ** 2).sum(-1).mean()) * 10
    assert identity_rms_mm(face_model, a, b) == pytest.approx(expected, rel=1e-6)
    assert identity_rms_mm(face_model, b, np.pad(b, (0, 40))) == pytest.approx(0.0)       # zero-padded modes
    # leave-one-out: b is `expected` from the mean of two a's, each a is expected/2 from mean(a, b)
    np.testing.assert_allclose(leave_one_out_distances(face_model, np.stack([a, a, b])),
                               [expected / 2, expected / 2, expected], rtol=1e-5)
    assert flag_outliers(face_model, np.stack([a, a, b]), 0.75 * expected).tolist() == [False, False, True]
    assert flag_outliers(face_model, np.stack([a, b]), 0.1).tolist() == [False, False]   # no majority


def test_identity_shape_error_is_the_mean_vertex_distance(face_model):
    """The C-Net's measure (learner.cnet.ShapeError, on every face vertex): mean, not RMS, distance."""
    face = face_model.vertex_range("face")
    b = np.zeros(60)
    b[3] = 2.0
    basis = np.asarray(face_model.identity_basis[3], np.float64)[face]
    expected = 2.0 * np.linalg.norm(basis, axis=-1).mean() * 10
    assert identity_shape_error_mm(face_model, np.zeros(60), b) == pytest.approx(expected, rel=1e-5)
    assert identity_shape_error_mm(face_model, np.zeros(60), b) < identity_rms_mm(face_model, np.zeros(60), b)
    rng = np.random.default_rng(5)
    a, c = rng.normal(size=(4, 60)), rng.normal(size=(4, 100))   # batched; fewer modes are zero-padded
    err = identity_shape_error_mm(face_model, a, c)
    assert err.shape == (4,)
    np.testing.assert_allclose(err, [identity_shape_error_mm(face_model, x, y) for x, y in zip(a, c)], rtol=1e-6)
    assert identity_shape_error_mm(face_model, b, np.pad(b, (0, 40))) == pytest.approx(0.0)
    from learner.cnet import ShapeError     # the training measure, on a subsample of the same vertices
    torch_err = ShapeError(face_model, 100)(torch.from_numpy(a).float(), torch.from_numpy(c).float()).numpy()
    np.testing.assert_allclose(torch_err, err, rtol=0.03)


def test_distance_matrix_equals_pairwise_shape_rms(face_model):
    """The Gram-matrix shortcut gives the same mm as forming every pair's shape difference."""
    rng = np.random.default_rng(4)
    a, b = rng.normal(size=(5, 60)), rng.normal(size=(3, 40))          # fewer modes are zero-padded
    d = identity_distance_matrix_mm(face_model, a, b)
    assert d.shape == (5, 3)
    expected = [[float(identity_rms_mm(face_model, x, y)) for y in b] for x in a]
    np.testing.assert_allclose(d, expected, rtol=1e-5)
    np.testing.assert_allclose(np.diag(identity_distance_matrix_mm(face_model, a, a)), 0.0, atol=1e-4)


def test_untrained_head_is_plain_averaging():
    from learner.cnet import ConfidenceHead, weighted_identity

    head = ConfidenceHead(16, 60)
    conf = head(torch.randn(6, 16)).reshape(2, 3, 60)
    assert torch.allclose(conf, torch.ones_like(conf))
    ids = torch.randn(2, 3, 60)
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]])
    agg = weighted_identity(ids, conf, mask)
    assert torch.allclose(agg[0], ids[0, :2].mean(0), atol=1e-6) and torch.allclose(agg[1], ids[1].mean(0), atol=1e-6)


@pytest.fixture(scope="module")
def multiview(tmp_path_factory):
    from facerig_cli.main import main

    root = tmp_path_factory.mktemp("mv")
    for name, count, seed in (("train", 40, 31), ("test", 20, 32)):
        assert main(["synth", "render", "--count", str(count), "--size", "128", "--out", str(root / name),
                     "--workers", "1", "--seed", str(seed), "--views-per-identity", "5", "--no-progress"]) == 0
    return root


def test_multiview_corpus_shares_one_person_per_set(multiview):
    from facemodel import FaceParams
    from synth.corpus import open_corpus

    c = open_corpus(multiview / "train")
    assert c.manifest["generator"]["views_per_identity"] == 5
    p = FaceParams.from_vector(c.load_all(["params"])["params"], c.layout)
    ident, albedo, yaw = np.asarray(p.identity), np.asarray(p.albedo), np.asarray(p.rotation)[:, 0]
    for s in range(0, 40, 5):
        assert np.all(ident[s:s + 5] == ident[s]) and np.all(albedo[s:s + 5] == albedo[s])
        assert np.unique(yaw[s:s + 5]).size == 5
    assert not np.allclose(ident[0], ident[5])


@pytest.mark.slow
def test_cnet_trains_compares_and_exports(multiview, tmp_path):
    import onnx
    import onnxruntime as ort

    from facerig_cli.main import main

    out = tmp_path / "cnet"
    assert main(["cnet", "train", "--train", str(multiview / "train"), "--test", str(multiview / "test"),
                 "--regressor", str(SHIPPED), "--out", str(out), "--steps", "40"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["train_sets"] == 8 and report["test_sets"] == 4 and report["views_per_set"] == 5
    for row in report["table5_vertex_mm"].values():
        assert set(row) == {"single_photo", "naive_average", "global_score", "elementwise"}
        assert all(0.5 < v < 20 for v in row.values())
    assert report["onnx_max_log_diff"] < 1e-4
    meta = {p.key: p.value for p in onnx.load(str(out / "cnet.onnx")).metadata_props}
    assert meta["facerig.cnet_mode"] == "elementwise" and meta["facerig.n_identity"] == "60"
    assert float(meta["facerig.same_person_rms_mm"]) > 0
    sess = ort.InferenceSession(str(out / "cnet.onnx"), providers=["CPUExecutionProvider"])
    conf = sess.run(["confidence"], {"image": np.random.default_rng(0).random((3, 3, 128, 128), np.float32)})[0]
    assert conf.shape == (3, 60) and np.all(conf > 0)
    assert "| 5 |" in (out / "table5.md").read_text()
