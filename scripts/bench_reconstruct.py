#!/usr/bin/env python
"""Benchmark photo → parameters → rigged Blender object, split by stage.

Targets (issue 5): photo → parameters < 50 ms after load; photo → finished rigged object in
Blender < 1 s. Without a trained model at blender_addon/models/ the regressor is the untrained
learner network exported to ONNX (same architecture and cost as the trained one), or, without
torch, the constant stand-in (whose regress time is then meaningless).

    .venv/bin/python scripts/bench_reconstruct.py [--repeat 10] [--model M.onnx] [PHOTO ...]
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DEMO = ROOT.parent / "shared" / "faces" / "demo"
os.environ.setdefault("FACERIG_FACE_MODEL", str(ROOT.parent / "shared" / "facemodel" / "ict_facekit_light.npz"))
os.environ.setdefault("GLOG_minloglevel", "2")
log = logging.getLogger("bench")


def bench_model(tmp: Path, face_model) -> tuple[Path, str]:  # noqa: ANN001
    from runtime.regressor import DEFAULT_MODEL_PATH
    from runtime.testing import build_constant_regressor, plausible_params, regressor_metadata

    if DEFAULT_MODEL_PATH.is_file():
        return DEFAULT_MODEL_PATH, "trained (shipped)"
    target = plausible_params(face_model)
    try:
        import onnx
        import torch

        from learner.config import NetworkConfig
        from learner.network import FaceRegressor, OutputStats, params_to_raw

        raw = params_to_raw(torch.as_tensor(target.to_vector()[None], dtype=torch.float64), target.layout)
        stats = OutputStats(raw[0].numpy().astype(np.float32), np.full(raw.shape[1], 1e-3, np.float32))
        net = FaceRegressor(NetworkConfig(n_identity=target.n_identity), stats).eval()
        path = tmp / "untrained.onnx"
        torch.onnx.export(net, (torch.rand(1, 3, 128, 128),), str(path), input_names=["image"],
                          output_names=["params"], dynamic_axes={"image": {0: "N"}, "params": {0: "N"}},
                          opset_version=17, dynamo=False)
        m = onnx.load(str(path))
        for k, v in regressor_metadata(target.n_identity, 128).items():
            m.metadata_props.add(key=k, value=v)
        onnx.save(m, str(path))
        return path, "untrained learner network (real cost)"
    except Exception as exc:  # noqa: BLE001 - any failure falls back to the stand-in
        log.warning("learner export failed (%s); using the constant stand-in", exc)
        return build_constant_regressor(tmp / "constant.onnx", target), "constant stand-in (regress time meaningless)"


def stats(values: list[float]) -> str:
    return f"{statistics.median(values):7.1f} ms (min {min(values):.1f}, max {max(values):.1f})"


def detector_choice(photos: list[Path], repeat: int) -> None:
    """FaceDetection vs FaceMesh alone vs the two-stage pipeline actually used."""
    from mediapipe.python.solutions import face_detection, face_mesh

    from runtime.detect import detect_faces
    from runtime.photo import load_image

    fd = face_detection.FaceDetection(model_selection=1, min_detection_confidence=0.5)
    fm = face_mesh.FaceMesh(static_image_mode=True, max_num_faces=5, refine_landmarks=False)
    print("\ndetector (median over photos × repeats):")
    for name, fn in (("face_detection full-range only (boxes)", fd.process),
                     ("face_mesh on the full image (468 pts)", fm.process),
                     ("used: detection + face_mesh per face crop", detect_faces)):
        times = []
        for p in photos:
            img = load_image(p)
            fn(img)
            for _ in range(repeat):
                t = time.perf_counter()
                fn(img)
                times.append((time.perf_counter() - t) * 1e3)
        print(f"  {name:44s} {stats(times)}")


def main() -> int:
    from facerig_cli.blender_env import isolate_blender_user_config

    isolate_blender_user_config()   # read_factory_settings below must not touch the user's Blender
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("photos", nargs="*", type=Path)
    ap.add_argument("--repeat", type=int, default=10)
    ap.add_argument("--model", type=Path)
    ap.add_argument("--texture-size", type=int, default=1024)
    ap.add_argument("--no-blender", action="store_true")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    photos = args.photos or sorted(DEMO.glob("*.*"))

    import blender_addon.operators  # noqa: F401 - imports bpy
    from runtime.pipeline import get_regressor, reconstruct_photo
    from facemodel import FaceModel

    face_model = FaceModel.load()
    with tempfile.TemporaryDirectory() as tmp:
        model_path, kind = (args.model, "given") if args.model else bench_model(Path(tmp), face_model)
        t = time.perf_counter()
        reg = get_regressor(model_path)
        load_ms = (time.perf_counter() - t) * 1e3
        print(f"regressor: {kind}; session load {load_ms:.0f} ms; input {reg.input_size}²")
        cold = reconstruct_photo(photos[0], model=reg, face_model=face_model)
        print("cold first photo (MediaPipe graph creation included): "
              + ", ".join(f"{k} {v:.1f}" for k, v in cold.timings.items()) + " ms")
        split: dict[str, list[float]] = {}
        recons = []
        for p in photos:
            for _ in range(args.repeat):
                r = reconstruct_photo(p, model=reg, face_model=face_model)
                for k, v in r.timings.items():
                    split.setdefault(k, []).append(v)
                after = sum(v for k, v in r.timings.items() if k not in ("model_load", "decode"))
                split.setdefault("photo→params after decode", []).append(after)
            recons.append(r)
        print(f"\nphoto pipeline ({len(photos)} photos × {args.repeat}):")
        names = {"refine_landmarks": "FaceMesh on the crop", "refine": "landmark fit"}
        for k in [k for k in split if k != "model_load"]:
            print(f"  {names.get(k, k):28s} {stats(split[k])}")
        batch = np.stack([r.crop for r in recons] * 4)
        reg.predict(batch)
        t = time.perf_counter()
        reg.predict(batch)
        print(f"  batched regress ({len(batch)} crops)   {(time.perf_counter() - t) * 1e3 / len(batch):7.2f} ms/crop")
        detector_choice(photos, max(2, args.repeat // 2))
        if not args.no_blender:
            bench_blender(face_model, recons, args)
    return 0


def bench_blender(face_model, recons: list, args: argparse.Namespace) -> None:  # noqa: ANN001
    import bpy

    from blender_addon.build_mesh import BuildOptions, build_face

    bpy.ops.wm.read_factory_settings(use_empty=True)
    opts = BuildOptions(texture_size=args.texture_size)
    t = time.perf_counter()
    first = build_face(face_model, recons[0], opts)
    cold = (time.perf_counter() - t) * 1e3
    split: dict[str, list[float]] = {}
    totals, end_to_end = [], []
    for i in range(args.repeat):
        recon = recons[i % len(recons)]
        bpy.ops.wm.read_factory_settings(use_empty=True)
        t = time.perf_counter()
        res = build_face(face_model, recon, opts)
        totals.append((time.perf_counter() - t) * 1e3)
        end_to_end.append(totals[-1] + sum(v for k, v in recon.timings.items() if k != "model_load"))
        for k, v in res.timings.items():
            split.setdefault(k, []).append(v)
    print(f"\nBlender build (texture {args.texture_size}², armature, camera; {args.repeat} runs; "
          f"cold first build {cold:.0f} ms incl. one-off UV rasterisation):")
    for k, v in split.items():
        print(f"  {k:28s} {stats(v)}")
    print(f"  {'total build':28s} {stats(totals)}")
    print(f"  {'photo file → rigged object':28s} {stats(end_to_end)}")
    del first


if __name__ == "__main__":
    sys.exit(main())
