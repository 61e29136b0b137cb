#!/usr/bin/env python
"""Benchmark the learner on this machine: training images/s and ONNX latency.

    .venv/bin/python scripts/bench_train.py [--corpus DIR] [--batch-size 64] [--seconds 40]

Training throughput covers the full step (batch gather from uint8 memory, augmentation,
forward, all losses, backward, AdamW); without ``--corpus`` random images with sampled
parameters stand in (same cost). ONNX latency: batch 1, one onnxruntime thread, median.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from learner.cpu_tuning import configure_runtime  # noqa: E402

configure_runtime(2)

import numpy as np  # noqa: E402


def fake_data(n: int, size: int):
    from facemodel import FaceModel, ParamLayout
    from facemodel.priors import sample_params
    from learner.data import FaceData

    model = FaceModel.load()
    rng = np.random.default_rng(0)
    lm = model.arrays.subset(model.landmark_indices())
    p = sample_params(rng, n, model.expression_names, lm, n_identity=100)
    from facemodel import landmarks_2d

    images = rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)
    return FaceData.from_arrays(images, np.asarray(p.to_vector(), np.float32), ParamLayout(100),
                                np.asarray(landmarks_2d(lm, p, size, size), np.float32)), model


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--corpus", type=Path, action="append")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--seconds", type=float, default=40.0)
    ap.add_argument("--no-augment", action="store_true")
    ap.add_argument("--width", type=float, default=None, help="network.width (default: the config's)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    from learner.config import Config
    from learner.export import export_onnx
    from learner.train import Trainer

    cfg = Config()
    cfg.network.input_size = args.size
    cfg.train.batch_size = args.batch_size
    cfg.train.steps = 10**6
    cfg.augment.enabled = not args.no_augment
    if args.width is not None:
        cfg.network.width = args.width
    with tempfile.TemporaryDirectory() as tmp:
        if args.corpus:
            trainer = Trainer(args.corpus, Path(tmp) / "run", cfg, progress=False)
        else:
            data, model = fake_data(max(2048, 4 * args.batch_size), args.size)
            trainer = Trainer([], Path(tmp) / "run", cfg, progress=False, face_model=model, data=data)
        for s in range(3):   # warm-up
            trainer.train_step(s)
        times, step, t_end = [], 3, time.perf_counter() + args.seconds
        while time.perf_counter() < t_end:
            t0 = time.perf_counter()
            trainer.train_step(step)
            times.append(time.perf_counter() - t0)
            step += 1
        t = np.array(times)
        print(f"train: width {cfg.network.width}, batch {args.batch_size} at {args.size}², {len(t)} steps: "
              f"median {args.batch_size / np.median(t):.0f} images/s, mean {args.batch_size * len(t) / t.sum():.0f}")
        trainer.step = step
        trainer.save()
        onnx_path = Path(tmp) / "m.onnx"
        export_onnx(trainer.paths.last, onnx_path)
        x = np.random.default_rng(0).uniform(0, 1, (1, 3, args.size, args.size)).astype(np.float32)
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        sess = ort.InferenceSession(str(onnx_path), opts, providers=["CPUExecutionProvider"])
        for _ in range(20):
            sess.run(None, {"image": x})
        lat = []
        for _ in range(300):
            t0 = time.perf_counter()
            sess.run(None, {"image": x})
            lat.append(time.perf_counter() - t0)
        print(f"onnx: batch 1, 1 thread: median {np.median(lat) * 1e3:.2f} ms, p90 {np.percentile(lat, 90) * 1e3:.2f} ms")


if __name__ == "__main__":
    main()
