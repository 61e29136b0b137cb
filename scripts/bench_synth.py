#!/usr/bin/env python
"""Benchmark the synthetic corpus renderer: images/s, where the time goes, memory over many images.

    .venv/bin/python scripts/bench_synth.py                     # everything (a few minutes)
    .venv/bin/python scripts/bench_synth.py --only throughput --engines workbench
    .venv/bin/python scripts/bench_synth.py --only rss --rss-images 10000

Sections:

* ``throughput``: real ``render_corpus`` runs (workers, shard writing, augmentation on) for each
  engine × size × worker count. images/s counts from the first worker being ready, i.e.
  without Blender's ~3 s start-up (reported separately as wall time).
* ``stages``: one worker-like process renders images with per-stage timers (sampling, numpy
  image formation, Blender mesh update, Blender render, EXR read, labels, augmentation) and
  the anti-aliasing variants (supersampling, Workbench FXAA / multi-sample AA).
* ``rss``: one process renders many images and samples its resident memory.

The machine is shared: numbers vary with other load (the load average is printed).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import resource
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

os.environ.setdefault("FACERIG_FACE_MODEL", str(ROOT.parent / "shared" / "facemodel" / "ict_facekit_light.npz"))


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def cpu_seconds() -> float:
    u = resource.getrusage(resource.RUSAGE_SELF)
    return u.ru_utime + u.ru_stime


def _stage_worker(settings, n_images: int, warmup: int, rss_every: int, conn) -> None:
    """Runs in a spawned process (like a render worker): per-stage timings and RSS samples."""
    from synth.render import THREAD_ENV, ShardRenderer

    os.environ.update(THREAD_ENV)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.dup2(devnull, 2)
    r = ShardRenderer(settings)
    for _ in r.render_images(range(warmup)):
        pass
    r.timings.reset()
    r.culled_frames = 0
    rss = [(0, rss_mb())]
    t0, c0 = time.perf_counter(), cpu_seconds()
    done = 0
    chunk = min(rss_every, 64) if rss_every else 64  # BATCH-sized calls, as in render_shard
    while done < n_images:
        m = min(chunk, n_images - done)
        for _ in r.render_images(range(warmup + done, warmup + done + m)):
            pass
        done += m
        if rss_every and done % rss_every < chunk:
            rss.append((done, rss_mb()))
    wall, cpu = time.perf_counter() - t0, cpu_seconds() - c0
    conn.send({"wall": wall, "cpu": cpu, "n": n_images, "stages": dict(r.timings.seconds), "rss": rss,
               "culled": r.culled_frames})
    r.close()


def run_stage_process(settings, n_images: int, warmup: int = 3, rss_every: int = 0) -> dict:
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    from synth.workers import thread_env

    with thread_env():
        p = ctx.Process(target=_stage_worker, args=(settings, n_images, warmup, rss_every, child))
        p.start()
    out = parent.recv()
    p.join()
    return out


def section_throughput(args) -> list[dict]:
    from synth.render import RenderSettings, render_corpus

    rows = []
    for engine in args.engines:
        n = args.images if engine == "workbench" else args.cycles_images
        for size in args.sizes:
            for workers in args.workers:
                with tempfile.TemporaryDirectory(prefix="bench-synth-") as tmp:
                    settings = RenderSettings(count=n, size=size, engine=engine, seed=1,
                                              shard_size=max(1, n // (4 * workers)))
                    t0 = time.perf_counter()
                    rep = render_corpus(settings, Path(tmp) / "c", workers=workers, progress=False)
                    wall = time.perf_counter() - t0
                row = {"engine": engine, "size": size, "workers": workers, "images": n,
                       "images_per_s": round(rep.images_per_second, 1),
                       "wall_s_incl_startup": round(wall, 1), "load": round(os.getloadavg()[0], 2)}
                print(f"  {engine:9s} {size:4d}²  workers={workers}  {row['images_per_s']:6.1f} images/s "
                      f"({n} images; wall incl. Blender start-up {wall:.1f} s; load {row['load']})", flush=True)
                rows.append(row)
    return rows


def section_stages(args) -> list[dict]:
    from synth.augment import AugmentConfig
    from synth.render import RenderSettings

    variants = []
    for size in args.sizes:
        variants.append((f"workbench {size}² (default)", RenderSettings(count=1, size=size)))
    base = RenderSettings(count=1, size=128)
    if args.quick:
        variants = variants[:len(args.sizes)]
    else:
        variants += [
            ("workbench 128² no augmentation", replace(base, augment=AugmentConfig.off())),
            ("workbench 128² supersample 2", replace(base, supersample=2)),
            ("workbench 128² workbench_aa FXAA", replace(base, workbench_aa="FXAA")),
            ("workbench 128² workbench_aa 8", replace(base, workbench_aa="8")),
        ]
    if "cycles" in args.engines and not args.quick:
        variants.append(("cycles 128² 8 samples", replace(base, engine="cycles")))
    rows = []
    for name, settings in variants:
        n = args.stage_images if settings.engine == "workbench" else max(4, args.stage_images // 10)
        res = run_stage_process(settings, n)
        per = {k: round(v / res["n"] * 1000, 2) for k, v in sorted(res["stages"].items(), key=lambda kv: -kv[1])}
        row = {"variant": name, "ms_per_image_wall": round(res["wall"] / res["n"] * 1000, 1),
               "ms_per_image_cpu": round(res["cpu"] / res["n"] * 1000, 1),
               "stages_ms": per, "culled_share": round(res["culled"] / res["n"], 2),
               "load": round(os.getloadavg()[0], 2)}
        stages = ", ".join(f"{k} {v}" for k, v in per.items())
        print(f"  {name:34s} {row['ms_per_image_wall']:6.1f} ms/image wall, {row['ms_per_image_cpu']:6.1f} ms cpu"
              f" | {stages} | back-face culled {row['culled_share']:.0%}", flush=True)
        rows.append(row)
    return rows


def section_rss(args) -> dict:
    from synth.render import RenderSettings

    every = max(1, args.rss_images // 20)
    res = run_stage_process(RenderSettings(count=1, size=128), args.rss_images, rss_every=every)
    rss = res["rss"]
    print("  images → RSS MB: " + ", ".join(f"{n}: {m:.0f}" for n, m in rss), flush=True)
    first = [m for n, m in rss if n >= every]
    growth = first[-1] - first[0] if len(first) > 1 else 0.0
    print(f"  growth after the first {every} images: {growth:+.1f} MB over {args.rss_images} images "
          f"({res['n'] / res['wall']:.1f} images/s in one process)", flush=True)
    return {"images": args.rss_images, "rss_mb": rss, "growth_mb": round(growth, 1)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", choices=("throughput", "stages", "rss"), action="append")
    ap.add_argument("--engines", nargs="+", default=["workbench", "cycles"], choices=("workbench", "cycles"))
    ap.add_argument("--sizes", nargs="+", type=int, default=[128, 224])
    ap.add_argument("--workers", nargs="+", type=int, default=[1, 2])
    ap.add_argument("--images", type=int, default=400, help="images per Workbench throughput run")
    ap.add_argument("--cycles-images", type=int, default=16, help="images per Cycles throughput run")
    ap.add_argument("--stage-images", type=int, default=100, help="images per stage-profile variant")
    ap.add_argument("--rss-images", type=int, default=2000, help="images for the memory check")
    ap.add_argument("--quick", action="store_true", help="stages: only the default settings per size")
    ap.add_argument("--json", type=Path, help="also write all results here")
    args = ap.parse_args()
    sections = args.only or ["throughput", "stages", "rss"]
    print(f"bench_synth: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}", flush=True)
    results = {}
    if "throughput" in sections:
        print("throughput (render_corpus: workers, shard writes, augmentation on):", flush=True)
        results["throughput"] = section_throughput(args)
    if "stages" in sections:
        print("where the time goes (one worker process; ms per image):", flush=True)
        results["stages"] = section_stages(args)
    if "rss" in sections:
        print(f"memory over {args.rss_images} images (one worker process, Workbench 128²):", flush=True)
        results["rss"] = section_rss(args)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
