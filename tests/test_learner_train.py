"""Training end to end on a tiny rendered set: loss goes down, resume is exact, checkpoints are
verified, and the ONNX export matches torch."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from learner.checkpoint import CheckpointError, load_checkpoint
from learner.train import Trainer

from .test_learner_common import TINY_SIZE, tiny_config, tiny_data

FACES = Path(__file__).resolve().parents[2] / "shared" / "faces"


def run(out: Path, face_model, steps: int, stop_at: int | None = None, resume: bool = False, **cfg_kw):
    cfg = None if resume else tiny_config(steps=steps, **cfg_kw)
    t = Trainer([], out, cfg, resume=resume, face_model=face_model, progress=False, data=tiny_data())
    return t, t.run(stop_at=stop_at)


@pytest.fixture(scope="module")
def straight_run(tmp_path_factory, face_model):
    out = tmp_path_factory.mktemp("straight")
    trainer, summary = run(out, face_model, steps=8)
    return out, trainer, summary


@pytest.mark.slow
def test_resume_after_stop_is_identical(tmp_path, face_model, straight_run):
    _, straight, summary = straight_run
    assert summary["step"] == 8 and (straight.paths.root / "last.pt").is_file()
    out = tmp_path / "resumed"
    first, _ = run(out, face_model, steps=8, stop_at=4)
    assert load_checkpoint(out / "last.pt")["step"] == 4
    # a killed process may have logged rows past its last checkpoint: they must be dropped
    with open(out / "metrics.jsonl", "a") as f:
        f.write(json.dumps({"kind": "train", "step": 6, "loss": 123.0}) + "\n")
    with pytest.raises(ValueError, match="--resume"):
        run(out, face_model, steps=8)
    second, summary2 = run(out, face_model, steps=8, resume=True)
    assert summary2["step"] == 8 and summary2["steps_this_run"] == 4
    a, b = straight.net.state_dict(), second.net.state_dict()
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=0, atol=1e-6, msg=k)
    sa, sb = straight.optimizer.state_dict()["state"], second.optimizer.state_dict()["state"]
    for k in sa:
        torch.testing.assert_close(sb[k]["exp_avg_sq"], sa[k]["exp_avg_sq"], rtol=0, atol=1e-9)
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert 123.0 not in [r.get("loss") for r in rows]
    assert [r["step"] for r in rows if r["kind"] == "train"] == [2, 4, 6, 8]
    assert (out / "curves.png").stat().st_size > 0 and (out / "train.csv").is_file() and (out / "val.csv").is_file()
    with pytest.raises(FileNotFoundError, match="nothing to resume"):
        run(tmp_path / "empty", face_model, steps=8, resume=True)


@pytest.mark.slow
def test_training_reduces_the_loss(tmp_path, face_model):
    cfg_kw = dict(batch_size=16)
    t = Trainer([], tmp_path / "fit", tiny_config(steps=40, **cfg_kw), face_model=face_model, progress=False,
                data=tiny_data())
    t.config.augment.enabled = False
    t.config.train.lr = 2e-3
    idx = t.train_idx[:16]

    def fixed_batch_loss() -> float:
        t.net.train()   # batch statistics, as in training
        with torch.no_grad():
            batch = t.train_data.batch(idx, TINY_SIZE)
            return float(t.loss(t.net(batch.images), batch)[0])

    before = fixed_batch_loss()
    summary = t.run()
    after = fixed_batch_loss()
    assert after < 0.8 * before, (before, after)
    assert summary["images_per_s"] > 0 and np.isfinite(summary["metrics"]["val/vertex_mm_camera"])


@pytest.mark.slow
def test_corrupted_checkpoint_is_rejected(tmp_path, straight_run, capsys):
    from facerig_cli.main import main

    src = straight_run[0] / "last.pt"
    raw = src.read_bytes()
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(CheckpointError, match="corrupted"):
        load_checkpoint(truncated)
    # one flipped byte inside tensor data: torch loads it silently, the checksum does not
    flipped = bytearray(raw)
    flipped[len(raw) // 2] ^= 0x40
    bad = tmp_path / "flipped.pt"
    bad.write_bytes(bytes(flipped))
    with pytest.raises(CheckpointError, match="corrupted"):
        load_checkpoint(bad)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    assert main(["export", str(garbage), "--out", str(tmp_path / "m.onnx")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("facerig: error: checkpoint") and "corrupted" in err and len(err.splitlines()) == 1


def _demo_crops(size: int) -> np.ndarray:
    """Centre squares of the public-domain/CC0 demo photos, resized to the input size."""
    import imageio.v3 as iio
    from PIL import Image

    out = []
    for path in sorted((FACES / "demo").iterdir()):
        img = np.asarray(iio.imread(path))[..., :3] if iio.imread(path).ndim == 3 else None
        if img is None:
            continue
        h, w = img.shape[:2]
        s = min(h, w)
        crop = img[(h - s) // 2:(h - s) // 2 + s, (w - s) // 2:(w - s) // 2 + s]
        out.append(np.asarray(Image.fromarray(crop).resize((size, size), Image.BILINEAR)))
    return np.stack(out)


@pytest.mark.slow
def test_onnx_export_matches_torch(tmp_path, straight_run):
    import onnx

    from facerig_cli.main import main
    from learner.checkpoint import load_network
    from runtime.regressor import run_onnx

    run_dir = straight_run[0]
    out = tmp_path / "model.onnx"
    assert main(["export", str(run_dir), "--out", str(out)]) == 0
    props = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert props["facerig.layout_version"] == "2" and props["facerig.n_identity"] == "60"
    assert props["facerig.n_corrective"] == "0"
    assert props["facerig.input_size"] == str(TINY_SIZE) and float(props["facerig.crop_scale"]) == 1.6
    assert "synthetic" in props["facerig.model_card"] and "facerig.crop_center_up" in props
    photos = _demo_crops(TINY_SIZE)
    rendered = tiny_data().images[:5].numpy()
    images = np.concatenate([photos, rendered]).transpose(0, 3, 1, 2).astype(np.float32) / 255.0
    net, _ = load_network(run_dir / "best.pt")
    with torch.no_grad():
        ref = net(torch.as_tensor(images).contiguous(memory_format=torch.channels_last)).numpy()
    got = run_onnx(out, images)
    assert got.shape == ref.shape == (len(images), 156)
    assert np.abs(got - ref).max() < 1e-4
    single = run_onnx(out, images[:1])      # dynamic batch
    assert np.abs(single - ref[:1]).max() < 1e-4
