"""Weak supervision from real photos: ONNX → torch import, photo landmark corpora, mixed training."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from learner.config import Config
from runtime.regressor import run_onnx
from learner.onnx_import import OnnxImportError, freeze_batchnorm, network_from_onnx

from .test_learner_common import TINY_SIZE, tiny_config, tiny_data

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "blender_addon" / "models" / "facerig_regressor.onnx"
FACES = ROOT.parent / "shared" / "faces"
UTK = FACES / "unlabeled" / "utkface_200"


def _real_crops(n: int, size: int) -> np.ndarray:
    import cv2

    files = sorted(UTK.iterdir())[:n]
    imgs = [cv2.resize(cv2.imread(str(f))[:, :, ::-1], (size, size), interpolation=cv2.INTER_AREA) for f in files]
    return np.stack(imgs).transpose(0, 3, 1, 2).astype(np.float32) / 255.0


def test_onnx_import_reproduces_the_shipped_model():
    net = network_from_onnx(SHIPPED)
    images = _real_crops(4, net.config.input_size)
    with torch.no_grad():
        ours = net(torch.as_tensor(images)).numpy()
    assert np.abs(ours - run_onnx(SHIPPED, images)).max() < 1e-4


def test_onnx_import_rejects_bad_files(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x00not onnx at all")
    with pytest.raises(OnnxImportError):
        network_from_onnx(bad)
    cfg = Config()
    cfg.train.init = str(SHIPPED)
    with pytest.raises(ValueError, match="freeze_batchnorm"):
        cfg.validate()


def test_frozen_batchnorm_keeps_running_statistics():
    net = network_from_onnx(SHIPPED).train()
    freeze_batchnorm(net)
    before = {k: v.clone() for k, v in net.state_dict().items() if "running" in k}
    net(torch.rand(4, 3, 128, 128))
    after = net.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


@pytest.fixture(scope="module")
def photo_corpus(tmp_path_factory):
    """A real photo corpus: 8 UTKFace photos, a blank image (no face) and a text file (unreadable)."""
    import cv2

    from learner.photo_corpus import build_photo_corpus

    src = tmp_path_factory.mktemp("photos")
    for f in sorted(UTK.iterdir())[:8]:
        (src / f.name).write_bytes(f.read_bytes())
    cv2.imwrite(str(src / "zz_blank.png"), np.full((200, 200, 3), 128, np.uint8))
    (src / "zz_notes.jpg").write_text("not an image")
    out = tmp_path_factory.mktemp("corpus") / "photos"
    manifest = build_photo_corpus([src], out, size=TINY_SIZE, progress=False)
    return src, out, manifest


def test_photo_corpus_has_landmarks_on_the_face(photo_corpus):
    from learner.photo_corpus import load_photo_corpus

    _, out, manifest = photo_corpus
    assert manifest["count"] == 8 and manifest["files_total"] == 10
    assert manifest["skipped"] == {"no face": 1, "unreadable or too small": 1}
    data = load_photo_corpus(out)
    assert data.images.shape == (8, TINY_SIZE, TINY_SIZE, 3) and data.images.dtype == np.uint8
    lm = data.landmarks
    # canonical crop: the 68 points span 1/1.6 of the crop, centred, a little below the middle
    span = (lm.max(1) - lm.min(1)).max(1)
    np.testing.assert_allclose(span, TINY_SIZE / 1.6, rtol=1e-3)
    centre = 0.5 * (lm.max(1) + lm.min(1))
    np.testing.assert_allclose(centre[:, 0], TINY_SIZE / 2, atol=1e-3)
    np.testing.assert_allclose(centre[:, 1], TINY_SIZE * 0.6, atol=1e-3)
    # the eyes are above the mouth, the right eye (36–41) on the image's left
    assert (lm[:, 36:48, 1].mean(1) < lm[:, 48:68, 1].mean(1)).all()
    assert (lm[:, 36:42, 0].mean(1) < lm[:, 42:48, 0].mean(1)).all()


def test_photo_corpus_resumes_and_detects_corruption(photo_corpus, tmp_path):
    import shutil

    from learner.photo_corpus import PhotoCorpusError, build_photo_corpus, load_photo_corpus

    src, out, manifest = photo_corpus
    copy = tmp_path / "photos"
    shutil.copytree(out, copy)
    stamp = (copy / "shard-00000.npz").stat().st_mtime_ns
    again = build_photo_corpus([src], copy, size=TINY_SIZE, progress=False)   # nothing left to do
    assert again["count"] == manifest["count"] and (copy / "shard-00000.npz").stat().st_mtime_ns == stamp
    with pytest.raises(PhotoCorpusError, match="other settings"):
        build_photo_corpus([src], copy, size=TINY_SIZE * 2, progress=False)
    shard = copy / "shard-00000.npz"
    shard.write_bytes(shard.read_bytes()[:-100])
    with pytest.raises(PhotoCorpusError, match="corrupt"):
        load_photo_corpus(copy)
    rebuilt = build_photo_corpus([src], copy, size=TINY_SIZE, progress=False)  # same command repairs it
    assert rebuilt["count"] == manifest["count"]
    assert load_photo_corpus(copy).images.shape[0] == manifest["count"]


def test_incomplete_photo_corpus_loads_with_a_warning(photo_corpus, tmp_path, caplog):
    """A corpus still being prepared (no final count, fewer photos processed than listed) says so."""
    import json
    import logging
    import shutil

    from learner.photo_corpus import load_photo_corpus

    _, out, manifest = photo_corpus
    copy = tmp_path / "photos"
    shutil.copytree(out, copy)
    with caplog.at_level(logging.WARNING, logger="learner.photo_corpus"):
        load_photo_corpus(copy)
    assert "incomplete" not in caplog.text
    partial = {k: v for k, v in json.loads((copy / "manifest.json").read_text()).items() if k != "count"}
    partial["files_total"] = 25                      # as if 15 more photos were still to come
    (copy / "manifest.json").write_text(json.dumps(partial))
    with caplog.at_level(logging.WARNING, logger="learner.photo_corpus"):
        data = load_photo_corpus(copy)
    assert data.images.shape[0] == manifest["count"]
    assert "incomplete: 10 of 25 photos processed" in caplog.text


def test_priors_only_act_on_samples_without_labels(face_model):
    from facemodel import ParamLayout
    from learner.losses import Batch, FaceLoss
    from learner.network import OutputStats

    data = tiny_data()
    cfg = tiny_config().loss
    cfg.prior_identity = 1.0
    layout = ParamLayout(60)
    loss = FaceLoss(face_model, layout, data.layout, cfg, OutputStats.identity(layout), TINY_SIZE)
    b = data.batch(torch.arange(4), TINY_SIZE)
    pred = torch.zeros(4, layout.size)
    pred[:, :60] = 2.0                                   # α = 2 everywhere: ‖α‖²/60 = 4
    pred[:, layout.slices["translation"]] = torch.tensor([0.0, 0.0, -100.0])
    pred[:, layout.slices["camera"]] = torch.tensor([4.0, 0.5, 0.5])
    _, terms = loss(pred, b)
    assert terms["prior_identity"] == 0.0                # all labelled
    b2 = Batch(b.images, b.params, torch.tensor([True, False, True, False]), b.landmarks, b.landmark_mask)
    _, terms = loss(pred, b2)
    assert terms["prior_identity"] == pytest.approx(4.0)


def test_training_mixes_photos_with_renders(photo_corpus, tmp_path, face_model):
    from learner.data import FaceData
    from learner.photo_corpus import load_photo_corpus
    from learner.train import Trainer

    photos = load_photo_corpus(photo_corpus[1])
    mixed = FaceData.concatenate([tiny_data(), FaceData.from_photo_landmarks(photos.images, photos.landmarks,
                                                                             "mediapipe68")])
    assert int(mixed.has_params.sum()) == 48 and len(mixed) == 56
    assert torch.isfinite(mixed.params).all()
    cfg = tiny_config(steps=6)
    cfg.train.val_fraction = 0.3
    cfg.loss.prior_identity = 0.1
    t = Trainer([], tmp_path / "run", cfg, face_model=face_model, progress=False, data=mixed)
    summary = t.run()
    m = summary["metrics"]
    assert np.isfinite(m["val/photo_nme_bbox_68"]) and m["val/photo_n"] >= 1
    assert np.isfinite(m["val/vertex_mm_aligned"])
    rows = [json.loads(r) for r in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    train_rows = [r for r in rows if r["kind"] == "train"]
    assert all(np.isfinite(r["loss"]) and "loss/landmark" in r for r in train_rows)


def test_keypoint_network_exports_and_imports(tmp_path):
    from learner.config import NetworkConfig
    from learner.export import write_onnx
    from learner.network import build_network

    cfg = NetworkConfig(input_size=64, n_identity=10, width=0.5, head_width=32, keypoints=6)
    torch.manual_seed(1)
    net = build_network(cfg).eval()
    with torch.no_grad():          # as if trained: no two tensors equal (the exporter merges
        for p in net.parameters():  # identical initializers), batch-norm folding not trivial
            p.add_(torch.rand_like(p) * 0.01)
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    out = tmp_path / "kp.onnx"
    meta = {"facerig.input_size": "64", "facerig.n_identity": "10", "facerig.keypoints": "6"}
    write_onnx(net.to(memory_format=torch.contiguous_format), torch.rand(2, 3, 64, 64), out, "params", meta)
    images = _real_crops(3, 64)
    with torch.no_grad():
        ref = net(torch.as_tensor(images)).numpy()
    got = run_onnx(out, images)
    assert np.abs(got - ref).max() < 1e-4
    assert np.abs(run_onnx(out, images[:1]) - ref[:1]).max() < 1e-4      # dynamic batch
    back = network_from_onnx(out, NetworkConfig(width=0.5, head_width=32))
    assert back.config.keypoints == 6
    with torch.no_grad():
        assert np.abs(back(torch.as_tensor(images)).numpy() - ref).max() < 1e-4
