"""The learner's corrective head: fine-tuned from the shipped ONNX (zero-initialised, the rest frozen),
its loss terms, and its export in the ONNX layout (a few steps, real code path)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from facemodel import FaceParams, ParamLayout
from runtime.regressor import run_onnx

from .test_learner_common import TINY_SIZE, tiny_config, tiny_data

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "blender_addon" / "models" / "facerig_regressor.onnx"


def _config(steps: int):
    cfg = tiny_config(steps=steps)
    cfg.network.input_size, cfg.network.width, cfg.network.head_width = 128, 0.75, 1024   # the shipped network
    cfg.network.n_corrective = 20
    cfg.train.init, cfg.train.freeze_batchnorm, cfg.train.trainable = str(SHIPPED), True, "corrective"
    cfg.train.lr = 1e-2
    cfg.loss.prior_corrective = 0.1
    return cfg


def _mixed_data():
    """Renders with full labels plus the same faces as if photos (68 landmarks only)."""
    from learner.data import FaceData

    renders = tiny_data(16)
    photos = FaceData.from_photo_landmarks(renders.images.numpy(), renders.landmarks[:, :68].numpy() + 1.5,
                                           "mediapipe68")
    return FaceData.concatenate([renders, photos])


@pytest.mark.slow
def test_corrective_head_fine_tunes_from_the_shipped_model_and_exports(tmp_path, face_model):
    from facerig_cli.main import main
    from learner.onnx_import import network_from_onnx
    from learner.train import Trainer

    cfg = _config(steps=4)
    t = Trainer([], tmp_path / "run", cfg, face_model=face_model, progress=False, data=_mixed_data())
    images = torch.as_tensor(tiny_data(16).images[:4].numpy().transpose(0, 3, 1, 2) / 255.0, dtype=torch.float32)
    images = torch.nn.functional.interpolate(images, size=(128, 128), mode="bilinear")
    shipped = run_onnx(SHIPPED, images.numpy())
    t.net.eval()
    with torch.no_grad():
        start = t.net(images).numpy()
    assert start.shape == (4, shipped.shape[1] + 60)
    np.testing.assert_allclose(start[:, :-60], shipped, atol=1e-4)     # the shipped model's outputs …
    assert not start[:, -60:].any()                                      # … and exactly no field
    t.run()
    t.net.eval()
    with torch.no_grad():
        after = t.net(images).numpy()
    np.testing.assert_allclose(after[:, :-60], shipped, atol=1e-4)     # only the corrective head moved
    assert np.abs(after[:, -60:]).max() > 1e-4
    out = tmp_path / "corrective.onnx"
    assert main(["export", str(tmp_path / "run"), "--out", str(out)]) == 0
    np.testing.assert_allclose(run_onnx(out, images.numpy()), after, atol=1e-4)
    from runtime.regressor import Regressor

    reg = Regressor(out)
    assert reg.layout == ParamLayout(60, n_corrective=20) and reg.layout.version == 2
    p = reg.predict((images.numpy().transpose(0, 2, 3, 1) * 255).astype(np.uint8))
    assert p.corrective.shape == (4, 20, 3)
    assert network_from_onnx(out).config.n_corrective == 20             # and it imports back


def test_corrective_targets_and_prior(face_model):
    from learner.config import LossConfig
    from learner.losses import FaceLoss
    from learner.network import OutputStats

    data = tiny_data(8)
    layout = ParamLayout(60, n_corrective=4)
    cfg = LossConfig(prior_corrective=1.0)
    loss = FaceLoss(face_model, layout, data.layout, cfg, OutputStats.identity(layout), TINY_SIZE)
    gt = loss._gt_in_net_layout(data.params[:2])
    assert gt.shape == (2, layout.size) and not gt[:, layout.slices["corrective"]].any()   # renders: zero field
    pred = FaceParams.from_vector(gt.clone(), layout)
    pred.corrective[:] = torch.tensor([1.0, 0.0, 0.0])      # 1 cm along x in every harmonic
    b = data.batch(torch.arange(2), TINY_SIZE)
    b.has_params = torch.tensor([False, False])
    _, terms = loss(pred.to_vector(), b)
    lam = face_model.harmonics.eigenvalues[:4]
    assert terms["prior_corrective"] == pytest.approx(float((lam / lam[0]).sum()), rel=1e-5)
