#!/usr/bin/env python
"""Scaling figures (docs/scaling.md): the training data path's ceiling, training images/s in one
process against two gloo processes, and renders/s with 1 and 2 Ray workers against local workers.

    .venv/bin/python scripts/bench_scale.py --corpus corpora/test --json out/scale.json [--only loader train render]

* ``loader``: the batches of :class:`learner.loader.StepBatches` (gather uint8 rows, convert to float,
  augment; batch 64 at the corpus' size) consumed by nothing, from 1 … ``--max-workers`` DataLoader worker
  processes, and a per-stage profile in one process on one thread (where a core's time goes).
* ``train``: ``facerig train`` (batch 64, the default network), one process (2 threads) against
  ``torchrun --nproc-per-node 2`` (gloo, 1 thread each): the median of the logged images/s (wall), and
  images per CPU second from two run lengths (start-up cancels).
* ``render``: ``facerig synth render --size 128`` with 1 and 2 local workers and with ``--ray auto`` on a
  local Ray instance of 1 and 2 CPUs: images/s after the workers started (wall), and images per CPU
  second from two counts.

Every figure is a wall-clock rate on this machine: on a shared machine say how loaded it was (the
report records the 1-minute load average before and after each part).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _load() -> float:
    return os.getloadavg()[0]


def bench_loader(corpus: Path, max_workers: int, seconds: float, batch: int = 64) -> dict[str, Any]:
    import torch

    from learner.config import Config
    from learner.data import BatchOrder, load_corpora, split_indices
    from learner.loader import StepBatches, iterate_steps
    from learner.cpu_tuning import tune_malloc

    tune_malloc()
    torch.set_num_threads(1)
    cfg = Config()
    data = load_corpora([corpus])
    train_idx, _ = split_indices(len(data), cfg.train.val_fraction, 0)
    idx = torch.as_tensor(train_idx)
    size = data.image_size
    ds = StepBatches(data, idx, BatchOrder(len(idx), batch, 0), size, data.layout, cfg.augment, 0)
    out: dict[str, Any] = {"batch": batch, "size": size, "images": len(data), "workers": {}}
    for workers in range(0, max_workers + 1):
        it = iterate_steps(ds, 0, 10**9, workers)
        for _ in range(max(2, 2 * workers)):   # warm-up: workers started, queues full
            next(it)
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            next(it)
            n += 1
        out["workers"][workers] = n * batch / (time.perf_counter() - t0)
        del it
    out["profile_ms_per_batch"] = _profile_stages(ds, steps=40)
    return out


def _profile_stages(ds: Any, steps: int) -> dict[str, float]:
    """CPU milliseconds per batch of each stage, one process, one thread (wrapping augment's steps).

    CPU time (``time.process_time``), not wall time: on a loaded machine it still says what one core
    can do; ``images_per_core_second`` is the ceiling of one loader worker."""
    import learner.augment as A

    times: dict[str, float] = {}

    def timed(name: str, fn: Any) -> Any:
        def run(*a: Any, **k: Any) -> Any:
            t = time.process_time()
            r = fn(*a, **k)
            times[name] = times.get(name, 0.0) + time.process_time() - t
            return r
        return run

    names = ("_photo_crop", "roll_images", "_gain", "_color", "_cutout", "_blur", "_noise")
    saved = {n: getattr(A, n) for n in names}
    for n in names:
        setattr(A, n, timed(n.strip("_"), saved[n]))
    try:
        t_all = 0.0
        for s in range(steps):
            t = time.process_time()
            idx = ds.indices(s)
            t1 = time.process_time()
            ds.data.batch(idx, ds.size)
            times["gather_convert"] = times.get("gather_convert", 0.0) + time.process_time() - t1
            ds[s]
            t_all += time.process_time() - t
    finally:
        for n, fn in saved.items():
            setattr(A, n, fn)
    # ds[s] gathers again: the whole batch's time is t_all minus one extra gather
    out = {k: v / steps * 1e3 for k, v in times.items()}
    out["total"] = t_all / steps * 1e3 - out["gather_convert"]
    out["augment_other"] = out["total"] - sum(v for k, v in out.items() if k != "total")
    out["images_per_core_second"] = ds.order.batch_size / (out["total"] / 1e3)
    return out


def _children_cpu() -> float:
    """CPU seconds of this process's finished children (and theirs, as far as they were waited for)."""
    import resource

    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def _run(cmd: list[str], env: dict[str, str]) -> tuple[subprocess.CompletedProcess, float]:
    before = _children_cpu()
    r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    if r.returncode:
        raise RuntimeError(f"{' '.join(cmd[:6])} … failed:\n{r.stderr[-2000:]}")
    return r, _children_cpu() - before


def bench_train(corpus: Path, steps: int) -> dict[str, float]:
    """Wall images/s (median of the logged rows after warm-up) and CPU cost per image: the CPU time of a
    run of ``steps`` minus that of a run of ``steps // 4`` (start-up, loading and validation cancel), per
    image — on a loaded machine the CPU figure is the one to trust."""
    from learner.config import Config

    env = {**os.environ, "PYTHONPATH": str(ROOT), "MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": "100000000000"}
    out: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for mode in ("one_process_2_threads", "two_gloo_processes_1_thread"):
            cpu = {}
            for n in (max(4, steps // 4), steps):
                cfg = Config()
                cfg.train.steps, cfg.train.log_every, cfg.train.val_every = n, 4, 10**6
                cfg.train.checkpoint_every, cfg.train.val_max = 10**6, 16
                config = Path(tmp) / f"cfg{n}.json"
                cfg.save(config)
                run = Path(tmp) / f"{mode}{n}"
                base = ["-m", "facerig_cli.main", "train", "--corpus", str(corpus), "--config", str(config),
                        "--no-progress", "--device", "cpu", "--out", str(run)]
                launcher = ([sys.executable] if mode.startswith("one") else
                            [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-addr",
                             "127.0.0.1", "--master-port", "29533"])
                _, cpu[n] = _run(launcher + base, env)
                rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
                rates = [x["images_per_s"] for x in rows if x["kind"] == "train"][1:]
            lo, hi = sorted(cpu)
            out[f"{mode}_wall_images_per_s"] = float(statistics.median(rates))
            out[f"{mode}_images_per_cpu_s"] = (hi - lo) * cfg.train.batch_size / (cpu[hi] - cpu[lo])
    return out


def bench_render(count: int) -> dict[str, float]:
    """Images/s after the workers started (wall), and for local workers images per CPU second from the
    difference of a ``count`` run and a ``count // 4`` run (start-up cancels)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out: dict[str, float] = {}
    for name, extra in (("local_1_worker", ["--workers", "1"]), ("local_2_workers", ["--workers", "2"]),
                        ("ray_1_cpu", ["--workers", "1", "--ray", "auto"]),
                        ("ray_2_cpus", ["--workers", "2", "--ray", "auto"])):
        cpu = {}
        for n in (count // 4, count):
            with tempfile.TemporaryDirectory() as tmp:
                cmd = [sys.executable, "-m", "facerig_cli.main", "synth", "render", "--count", str(n), "--size", "128",
                       "--seed", "3", "--shard-size", "16", *extra, "--out", str(Path(tmp) / "c"), "--no-progress"]
                r, cpu[n] = _run(cmd, env)
        m = re.search(r"\(([\d.]+) images/s\)", r.stdout)
        out[f"{name}_wall_images_per_s"] = float(m.group(1)) if m else float("nan")
        if not name.startswith("ray"):   # Ray's workers are not this process's children: their CPU is not seen
            out[f"{name}_images_per_cpu_s"] = (count - count // 4) / max(cpu[count] - cpu[count // 4], 1e-9)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", type=Path, required=True, help="a rendered corpus (128² for the documented figures)")
    ap.add_argument("--json", type=Path, required=True)
    ap.add_argument("--only", nargs="*", choices=("loader", "train", "render"), default=["loader", "train", "render"])
    ap.add_argument("--max-workers", type=int, default=2, help="loader workers measured: 0 … N (default 2)")
    ap.add_argument("--seconds", type=float, default=20.0, help="seconds per loader measurement")
    ap.add_argument("--train-steps", type=int, default=60)
    ap.add_argument("--render-count", type=int, default=256)
    args = ap.parse_args()
    os.environ.setdefault("FACERIG_FACE_MODEL", str(ROOT.parent / "shared" / "facemodel" / "ict_facekit_light.npz"))
    report: dict[str, Any] = {"date": time.strftime("%Y-%m-%d"), "cpu_count": os.cpu_count()}
    parts = {"loader": lambda: bench_loader(args.corpus, args.max_workers, args.seconds),
             "train": lambda: bench_train(args.corpus, args.train_steps),
             "render": lambda: bench_render(args.render_count)}
    for name in args.only:
        before = _load()
        report[name] = parts[name]()
        report[name]["load_avg_1min"] = [before, _load()]
        print(name, json.dumps(report[name]), flush=True)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
