"""``facerig train`` on corpora from the real renderer (``synth.render``) and from
``synth.corpus.CorpusWriter``: multi-corpus loading, CLI resume and user errors, and a real
SIGKILL in the middle of training followed by ``--resume``."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from facemodel import ParamLayout
from learner.checkpoint import load_checkpoint
from learner.data import load_corpora

from .test_learner_common import tiny_arrays, tiny_config

ROOT = Path(__file__).resolve().parents[1]


def write_corpus(path: Path, n_identity: int = 100, shard_size: int = 24) -> Path:
    from synth.corpus import CorpusWriter

    a = dict(tiny_arrays())
    layout = ParamLayout(n_identity)
    if n_identity < 100:  # drop the trailing identity modes
        a["params"] = np.concatenate([a["params"][:, :n_identity], a["params"][:, 100:]], 1)
    with CorpusWriter(path, 64, layout, shard_size, {"test": "tiny", "n_identity": n_identity}) as w:
        for k, start in enumerate(range(0, len(a["images"]), shard_size)):
            w.write_shard(k, {key: v[start:start + shard_size] for key, v in a.items()})
    return path


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """48 images from the real corpus renderer (Blender workbench, 64², backgrounds, occluders)."""
    from synth.render import RenderSettings, render_corpus

    out = tmp_path_factory.mktemp("corpus") / "c"
    render_corpus(RenderSettings(count=48, size=64, shard_size=24), out, workers=1, progress=False)
    return out


def test_load_corpora_fuses_layouts(tmp_path, corpus):
    small = write_corpus(tmp_path / "c50", n_identity=50)
    data = load_corpora([corpus, small], visible_jaw=True)
    assert len(data) == 96 and data.layout == ParamLayout(100)
    np.testing.assert_array_equal(data.params[48:, 50:100].numpy(), 0)          # zero-padded modes
    ref = tiny_arrays()["params"]
    np.testing.assert_array_equal(data.params[48:, :50].numpy(), ref[:, :50])
    np.testing.assert_array_equal(data.params[48:, 100:].numpy(), ref[:, 100:])
    assert bool(data.landmark_mask.all()) and data.images.dtype == torch.uint8
    with pytest.raises(FileNotFoundError):
        load_corpora([tmp_path / "nope"])


def _config_file(tmp_path: Path, steps: int, checkpoint_every: int) -> Path:
    cfg = tiny_config(steps=steps)
    cfg.train.checkpoint_every = checkpoint_every
    path = tmp_path / "cfg.json"
    cfg.save(path)
    return path


@pytest.mark.slow
def test_cli_train_resume_and_user_errors(tmp_path, corpus, capsys):
    from facerig_cli.main import main

    cfg = _config_file(tmp_path, steps=4, checkpoint_every=2)
    run = tmp_path / "run"
    assert main(["train", "--corpus", str(corpus), "--out", str(run), "--config", str(cfg), "--no-progress"]) == 0
    assert "trained to step 4" in capsys.readouterr().out
    assert main(["train", "--corpus", str(corpus), "--out", str(run), "--resume", "--steps", "6",
                 "--no-progress"]) == 0
    assert load_checkpoint(run / "last.pt")["step"] == 6
    from learner.evaluate import evaluate_checkpoint

    summary = evaluate_checkpoint(run / "last.pt", [corpus])
    assert summary["count"]["all"] == 48 and np.isfinite(summary["vertex_mm_aligned"]["balanced"])
    assert main(["train", "--corpus", str(corpus), "--out", str(run), "--config", str(cfg)]) == 2
    assert "--resume" in capsys.readouterr().err
    assert main(["train", "--corpus", str(tmp_path / "missing"), "--out", str(tmp_path / "r2")]) == 2
    # a corrupted corpus shard is a one-line user error, not a traceback
    bad = write_corpus(tmp_path / "bad")
    shard = bad / "shard-00001.npz"
    raw = bytearray(shard.read_bytes())
    raw[len(raw) // 2] ^= 1
    shard.write_bytes(bytes(raw))
    assert main(["train", "--corpus", str(bad), "--out", str(tmp_path / "r3"), "--config", str(cfg)]) == 2
    assert "checksum" in capsys.readouterr().err


@pytest.mark.slow
def test_sigkill_then_resume_equals_straight_run(tmp_path, corpus):
    from facerig_cli.main import main

    steps = 12
    cfg = _config_file(tmp_path, steps=steps, checkpoint_every=2)
    killed = tmp_path / "killed"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "facerig_cli.main", "train", "--corpus", str(corpus), "--out",
                             str(killed), "--config", str(cfg), "--no-progress"], env=env, cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 120
        while not (killed / "last.pt").exists() and proc.poll() is None and time.time() < deadline:
            time.sleep(0.02)
        time.sleep(0.1)   # land somewhere in the middle of a later step
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    at_kill = load_checkpoint(killed / "last.pt")["step"]
    assert proc.returncode == -signal.SIGKILL and 0 < at_kill < steps, (proc.returncode, at_kill)
    assert main(["train", "--corpus", str(corpus), "--out", str(killed), "--resume", "--no-progress"]) == 0
    straight = tmp_path / "straight"
    assert main(["train", "--corpus", str(corpus), "--out", str(straight), "--config", str(cfg),
                 "--no-progress"]) == 0
    a, b = load_checkpoint(straight / "last.pt"), load_checkpoint(killed / "last.pt")
    assert a["step"] == b["step"] == steps
    for k, v in a["model"].items():
        torch.testing.assert_close(b["model"][k], v, rtol=0, atol=1e-5, msg=k)
    rows = [json.loads(x) for x in (killed / "metrics.jsonl").read_text().splitlines()]
    steps_logged = [r["step"] for r in rows if r["kind"] == "train"]
    assert steps_logged == sorted(set(steps_logged)) and steps_logged[-1] == steps
