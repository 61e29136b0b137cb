"""Network output contract, configuration files and the synthetic metrics."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from facemodel import DEFAULT_CAMERA, FaceParams, ParamLayout
from learner.config import Config, NetworkConfig
from learner.evaluate import (evaluate_synthetic, identity_mode_report, nme_bbox, rotation_error_deg,
                              yaw_bin_masks)
from learner.network import OutputStats, build_network, params_to_raw


def test_output_is_the_plain_layout():
    cfg = NetworkConfig(input_size=64, n_identity=20, width=0.5, head_width=64)
    layout = ParamLayout(20)
    rng = np.random.default_rng(0)
    target = rng.normal(0, 1, (50, layout.size)).astype(np.float32)
    target[:, layout.slices["translation"]] = [2.0, -1.0, -100.0]
    target[:, layout.slices["translation"].stop - 1] *= rng.uniform(0.9, 1.1, 50)
    stats = OutputStats.from_params(target, layout)
    net = build_network(cfg, stats).eval()
    with torch.no_grad():
        out = net(torch.rand(3, 3, 64, 64))
    assert out.shape == (3, layout.size)
    p = FaceParams.from_vector(out, layout)
    assert float(p.expression.min()) >= 0 and float(p.expression.max()) <= 1
    np.testing.assert_allclose(p.camera.numpy(), np.tile(DEFAULT_CAMERA, (3, 1)), rtol=1e-6)
    # an untrained network starts near the data mean (tiny last layer): ~1 m in front of the camera
    np.testing.assert_allclose(p.translation[:, 2].numpy(), -100.0, rtol=0.05)
    raw = params_to_raw(torch.as_tensor(target[:2]), layout)
    assert raw.shape == (2, layout.size - 3)


def test_config_toml_json_and_typos(tmp_path):
    toml = tmp_path / "c.toml"
    toml.write_text('[network]\nn_identity = 40\n[loss]\nlandmark = 0.5\nomega = { sh = 0.7 }\n'
                    '[augment]\nblur_sigma = [0.5, 1.0]\n[train]\nsteps = 10\n')
    cfg = Config.load(toml)
    assert cfg.network.n_identity == 40 and cfg.loss.landmark == 0.5 and cfg.train.steps == 10
    assert cfg.loss.omega["sh"] == 0.7 and cfg.loss.omega["identity"] == Config().loss.omega["identity"]
    assert cfg.augment.blur_sigma == (0.5, 1.0)
    js = tmp_path / "c.json"
    js.write_text(json.dumps(cfg.to_dict()))
    assert Config.load(js) == cfg
    toml.write_text("[train]\nstpes = 3\n")
    with pytest.raises(ValueError, match="stpes"):
        Config.load(toml)
    toml.write_text("[train]\nsteps = 2.5\n")
    with pytest.raises(ValueError, match="integer"):
        Config.load(toml)
    with pytest.raises(FileNotFoundError):
        Config.load(tmp_path / "missing.toml")


@pytest.mark.parametrize("path", sorted((Path(__file__).parents[1] / "learner" / "configs").glob("*.toml")),
                         ids=lambda p: p.name)
def test_shipped_config_files_load_and_validate(path):
    Config.load(path).validate()


def test_keypoint_loss_needs_the_branch():
    cfg = Config()
    cfg.loss.keypoint = 1.0
    with pytest.raises(ValueError, match="keypoint branch"):
        cfg.validate()
    cfg.network.keypoints = 16
    cfg.validate()


def test_identity_mode_report_supports_the_default(face_model):
    rows = {r["k"]: r for r in identity_mode_report(face_model, (40, 60, 100))}
    assert rows[60]["cum_var"] > 0.985 and rows[60]["fit_rms_mm"] < 0.65
    assert rows[100]["trunc_rms_mm"] == 0 and rows[40]["fit_rms_mm"] > rows[60]["fit_rms_mm"]


def test_metrics_hand_computed(face_model):
    from facemodel.priors import sample_params

    lm = face_model.arrays.subset(face_model.landmark_indices())
    gt = sample_params(np.random.default_rng(1), 6, face_model.expression_names, lm, n_identity=100)
    gt.rotation[:, 0] = np.deg2rad([5, -20, 40, -50, 70, -89])
    gt_vec = np.asarray(gt.to_vector(), np.float32)
    perfect = evaluate_synthetic(face_model, gt_vec, ParamLayout(100), gt_vec, ParamLayout(100), 128)
    assert perfect["count"] == {"all": 6, "0-30": 2, "30-60": 2, "60-90": 2}
    for name in ("vertex_mm_camera", "vertex_mm_aligned", "nme_bbox_68", "nme_bbox_51", "nme_io_68", "expression_mae",
                 "rotation_deg"):
        assert perfect[name]["all"] < 1e-2, name
    # a pure translation: camera-space error = |t| in mm, zero after rigid alignment
    moved = gt_vec.copy()
    moved[:, ParamLayout(100).slices["translation"]] += [0.3, 0.0, 0.4]
    s = evaluate_synthetic(face_model, moved, ParamLayout(100), gt_vec, ParamLayout(100), 128)
    assert s["vertex_mm_camera"]["all"] == pytest.approx(5.0, rel=1e-4)
    assert s["vertex_mm_aligned"]["all"] < 1e-3
    np.testing.assert_allclose(rotation_error_deg(np.array([[0.1, 0.0, 0.0]]), np.array([[0.0, 0.0, 0.0]])),
                               np.degrees(0.1), rtol=1e-6)
    box = np.array([[[0, 0], [4, 0], [4, 9], [0, 9]]], np.float64)
    assert nme_bbox(box + [1.2, 0], box)[0] == pytest.approx(1.2 / 6 * 100)
    bins = yaw_bin_masks(np.array([0, 29.9, 30, -60, 95]))
    assert bins["0-30"].tolist() == [True, True, False, False, False]
    assert bins["60-90"].tolist() == [False, False, False, True, True]


def test_keypoint_branch_reads_out_heat_map_peaks():
    cfg = NetworkConfig(input_size=64, n_identity=10, width=0.5, head_width=32, keypoints=3)
    net = build_network(cfg).eval()
    dec = net.keypoints
    # a sharp peak in cell (row 2, column 5) of the stride-8 map → that cell's centre in pixels
    heat = torch.full((1, 3, 8, 8), -50.0)
    heat[0, 0, 2, 5] = 50.0
    heat[0, 1, 7, 0] = 50.0
    heat[0, 2] = 0.0                        # flat map: the image centre
    dec.heat.forward = lambda x: heat       # noqa: ARG005 — bypass the learned maps
    with torch.no_grad():
        params, points = net.forward_train(torch.rand(1, 3, 64, 64))
    np.testing.assert_allclose(points[0].numpy(), [[44, 20], [4, 60], [32, 32]], atol=1e-3)
    assert params.shape == (1, ParamLayout(10).size)


def test_keypoint_network_trains_its_points():
    torch.manual_seed(0)
    cfg = NetworkConfig(input_size=64, n_identity=10, width=0.5, head_width=32, keypoints=4)
    net = build_network(cfg)
    opt = torch.optim.Adam(net.parameters(), 3e-3)
    images = torch.rand(8, 3, 64, 64).contiguous(memory_format=torch.channels_last)
    target = torch.rand(8, 4, 2) * 40 + 12
    first = None
    for _ in range(60):
        _, points = net.forward_train(images)
        loss = (points - target).norm(dim=-1).mean()
        first = first if first is not None else float(loss.detach())
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(loss) < 0.5 * first
