"""Rendering on a real local Ray instance (``--ray auto`` → ``ray.init(num_cpus=2)``): the same manifest
and shard bytes as the local workers; a lost actor and a killed driver resume as locally; streaming
work lists; an unreachable cluster is a one-line error."""

from __future__ import annotations

import itertools
import json
import os
import signal
import socket
import subprocess
import time
import tracemalloc
from pathlib import Path

import pytest

from synth.corpus import MANIFEST, open_corpus

from .test_synth_render import shard_count, synth

ARGS = ["--count", "10", "--size", "64", "--shard-size", "1", "--seed", "7", "--supersample", "2"]


def descendants(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        for task in Path(f"/proc/{p}/task").glob("*"):
            try:
                kids = [int(k) for k in (task / "children").read_text().split()]
            except OSError:
                continue
            out += kids
            todo += kids
    return out


def actor_pids(pid: int) -> list[int]:
    """The Ray render actors (process title ``ray::ShardWorker…``) under the driver ``pid``."""
    found = []
    for p in descendants(pid):
        try:
            if Path(f"/proc/{p}/cmdline").read_bytes().startswith(b"ray::ShardWorker"):
                found.append(p)
        except OSError:
            pass
    return found


def wait_until(cond, proc: subprocess.Popen, timeout: float = 180, what: str = "") -> None:
    t0 = time.time()
    while not cond():
        assert proc.poll() is None, f"run ended before {what}: {proc.communicate()}"
        assert time.time() - t0 < timeout, f"timed out waiting for {what}"
        time.sleep(0.05)


@pytest.fixture(scope="module")
def local_corpus(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("local") / "c"
    r = synth("render", *ARGS, "--out", str(out), workers=1)
    assert r.returncode == 0, r.stderr
    return out


def _same_corpus(a: Path, b: Path) -> None:
    ma, mb = (json.loads((p / MANIFEST).read_text()) for p in (a, b))
    for key in ("shards", "counts", "generator", "keys", "layout", "image_size", "shard_size"):
        assert ma[key] == mb[key], key
    open_corpus(a, verify=True)
    open_corpus(b, verify=True)


@pytest.mark.slow
def test_ray_render_lost_actor_and_killed_driver_match_local(local_corpus, tmp_path):
    out = tmp_path / "ray"
    render = ("render", *ARGS, "--out", str(out), "--ray", "auto")
    # 1. a Ray actor dies (process SIGKILLed): its shards go to the others, the run goes on
    proc = synth(*render, workers=2, wait=False)
    try:
        wait_until(lambda: shard_count(out) >= 1 and len(actor_pids(proc.pid)) == 2, proc, what="two actors")
        os.kill(actor_pids(proc.pid)[0], signal.SIGKILL)
        n = shard_count(out)
        # 2. then the driver is killed outright
        wait_until(lambda: shard_count(out) >= n + 2, proc, what="shards after the lost actor")
        proc.send_signal(signal.SIGKILL)
        _, err = proc.communicate(timeout=60)
        assert "Ray render actor was lost" in err
    finally:
        if proc.poll() is None:
            proc.kill()
    time.sleep(2)
    assert not actor_pids(proc.pid)
    assert 0 < len(open_corpus(out, verify=True)) < 10
    # 3. the same command finishes it: byte-identical to the local workers' corpus
    r = synth(*render, workers=2)
    assert r.returncode == 0, r.stderr
    _same_corpus(out, local_corpus)
    assert "rendered" in r.stdout and not list(out.glob("*.part"))


def test_unreachable_ray_address_is_one_line(tmp_path):
    with socket.socket() as s:   # a port on this machine that nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    t0 = time.time()
    r = synth("render", "--count", "2", "--out", str(tmp_path / "c"), "--ray", f"127.0.0.1:{port}", timeout=60)
    err = r.stderr.strip().splitlines()
    assert r.returncode == 2 and err[-1].startswith("facerig: error: cannot reach the Ray cluster at 127.0.0.1:")
    assert sum(ln.startswith("facerig:") for ln in err) == 1 and not (tmp_path / "c").exists()
    assert time.time() - t0 < 30
    r = synth("render", "--count", "2", "--out", str(tmp_path / "c"), "--ray", "nohost")
    assert r.returncode == 2 and "HOST:PORT" in r.stderr


def test_shard_list_is_streamed():
    """``--count 99999999999999``: the work list is generated as rendering goes, in bounded memory."""
    from synth.render import RenderSettings, ShardFeeder, pending_shards

    settings = RenderSettings(count=99_999_999_999_999, size=64)
    settings.validate()
    tracemalloc.start()
    t0 = time.perf_counter()
    feeder = ShardFeeder(pending_shards(settings, {0: None, 2: None}), depth=4)
    first = feeder.take()
    for k in first[:2]:
        feeder.finished(k)
    more = feeder.take()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert first == [1, 3, 4, 5] and more == [6, 7] and feeder.outstanding == {4, 5, 6, 7}
    assert peak < 1_000_000 and time.perf_counter() - t0 < 1.0
    assert list(itertools.islice(pending_shards(settings, {}), 3)) == [0, 1, 2]
    assert settings.n_shards == 390_625_000_000


@pytest.mark.slow
def test_views_on_ray_match_local(tmp_path):
    """``synth views --ray``: the reconstructions travel to the actors through the object store; same bytes."""
    import numpy as np

    from facemodel import ParamLayout
    from facerig_cli.main import main
    from synth.views import write_reconstructions

    from .test_learner_common import tiny_arrays

    a = tiny_arrays(n=2, size=128, seed=3)
    recon = write_reconstructions(tmp_path / "recon", a["images"], a["params"], ParamLayout(100),
                                  np.array(["a.jpg", "b.jpg"]), {}, {})
    args = ["synth", "views", "--from", str(recon), "--no-progress", "--rotations", "1", "--relight", "1", "--seed", "4"]
    assert main([*args, "--out", str(tmp_path / "local"), "--workers", "1"]) == 0
    assert main([*args, "--out", str(tmp_path / "ray"), "--workers", "2", "--ray", "auto"]) == 0
    _same_corpus(tmp_path / "ray", tmp_path / "local")
    assert len(open_corpus(tmp_path / "ray")) == 4
