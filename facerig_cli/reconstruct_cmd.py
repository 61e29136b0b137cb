"""``facerig reconstruct`` and ``facerig demo`` (``facerig addon build`` is in ``addon_build``).

reconstruct: photos → .blend / .glb / .gltf / .fbx / .obj (Blender, via ``blender_addon``) or
.json (parameters only; no Blender needed); one output per photo, or with ``--same-person`` one head
from all photos (identity aggregated by the C-Net, texture merged). demo: the public-domain astronaut photo from
scikit-image through the whole pipeline, plus a PNG contact sheet (:mod:`sheets`). The work itself is in
:mod:`reconstruct` (one photo) and :mod:`batch` (many).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

from facemodel.outputs import check_output_dir

from .args import add_overwrite, int_range, texture_size
from .reconstruct import (ALL_FORMATS, BLENDER_FORMATS, check_models, check_outputs, expand_photo_args,
                          export_atomically, output_paths, reconstruct_same_person_to_file, reconstruct_to_file)
from .sheets import render_sheet, write_image

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("reconstruct", help="photo(s) → rigged face: .blend, .glb, .fbx, .obj or .json (params)")
    p.add_argument("photos", nargs="+", type=Path, metavar="PHOTO",
                   help="photo files, or folders whose photos (JPEG, PNG, HEIC, …) are all taken")
    p.add_argument("-o", "--out", type=Path, required=True,
                   help="output file (format by extension); with several photos a directory or a "
                        "name that gets the photo name appended")
    p.add_argument("--format", choices=[f[1:] for f in ALL_FORMATS], default="blend",
                   help="format when OUT is a directory (default blend)")
    p.add_argument("--same-person", action="store_true",
                   help="the photos show one person: build ONE head (identity aggregated over all photos, "
                        "texture merged, pose/expression/camera from the most frontal photo)")
    p.add_argument("--cnet", type=Path, help="confidence network for --same-person (default: $FACERIG_CNET, then "
                                             "blender_addon/models/facerig_cnet.onnx; none = plain average)")
    p.add_argument("--workers", type=int_range(1), default=1, metavar="N",
                   help="reconstruct on N processes, one per core (.json output; the same files as one by one)")
    add_overwrite(p)
    _common(p)
    p.set_defaults(func=cmd_reconstruct)

    d = sub.add_parser("demo", help="reconstruct the public-domain astronaut photo (scikit-image) and render it")
    d.add_argument("-o", "--out", type=Path, default=Path("facerig_demo"), help="output directory")
    _common(d)
    d.set_defaults(func=cmd_demo)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--face", type=int_range(0, None), default=None, metavar="N",
                   help="face index, 0 = largest (default) [at least 0]")
    p.add_argument("--model", type=Path, help="ONNX regressor (default: blender_addon/models/facerig_regressor.onnx)")
    p.add_argument("--face-model", type=Path, help="ICT face model npz (default: $FACERIG_FACE_MODEL, then cache)")
    p.add_argument("--texture-size", type=texture_size, default=1024, metavar="PX",
                   help="texture side in texels (default 1024) [64…4096, and what the memory available allows]")
    p.add_argument("--remove-lighting", action="store_true",
                   help="divide the photo's lighting (fitted to the face) out of the texture, to light the head again "
                        "(default: the texture shows the photo as lit)")
    p.add_argument("--no-armature", action="store_true")
    p.add_argument("--no-camera", action="store_true")
    p.add_argument("--shape-key-names", choices=("arkit", "ict"), default="arkit",
                   help="shape keys / glTF morph targets named as Apple's ARKit blendshapes (default; 51 of the 52, "
                        "no tongueOut) or as ICT-FaceKit's 53 (eyeBlink_L, split browInnerUp_L/_R, …)")
    p.add_argument("--no-teeth", action="store_true", help="a toothless head (no teeth object)")
    p.add_argument("--no-refine", action="store_true",
                   help="keep the network's prediction as is (default: refine it on the detected landmarks, "
                        "≈ 12 ms a photo; with --same-person each photo's shape is refined before they are averaged; "
                        "docs/reconstruct.md)")


def cmd_reconstruct_same_person(args: argparse.Namespace, out: Path) -> int:
    t = time.perf_counter()
    same = reconstruct_same_person_to_file(args.photos, out, args)["_same"]
    print(f"{len(same.photos)} photo(s) of one person → {out} ({time.perf_counter() - t:.2f} s; "
          f"C-Net {same.cnet_version})")
    means = same.confidence_summary()
    for k, photo in enumerate(same.photos):
        mark = "*" if k == same.primary_index else " "
        flag = "  ← looks like a different person" if same.outliers[k] else ""
        print(f"  {mark} {photo.source}: {same.distances_mm[k]:.2f} mm from the aggregate, "
              f"mean confidence {means[k]:.3g}{flag}")
    for skipped in same.skipped:
        print(f"  skipped {skipped.source}: {skipped.reason}")
    print(f"  (* = primary photo: pose, expression and camera; flag threshold {same.threshold_mm:.2f} mm)")
    if same.skipped:   # the head was written from the others; the exit code tells a script that not all counted
        print(f"facerig: error: {len(same.skipped)} of {len(args.photos)} photos skipped: "
              + ", ".join(Path(s.source).name for s in same.skipped), file=sys.stderr)
        return 2
    return 0


def cmd_reconstruct(args: argparse.Namespace) -> int:
    from .batch import check_batch_options, describe_rate, reconstruct_all

    args.photos = expand_photo_args(args.photos)
    outs = output_paths(args.photos[:1] if args.same_person else args.photos, args.out, args.format)
    check_outputs(outs, args.overwrite)
    check_batch_options(args, tuple(o.suffix.lower() for o in outs))
    if len(args.photos) == 1:   # one photo: a bad one is refused before the models load (a batch skips it)
        from runtime.photo import check_photo

        check_photo(args.photos[0])
    check_models(args, any(o.suffix.lower() in BLENDER_FORMATS for o in outs))
    if args.same_person:
        return cmd_reconstruct_same_person(args, outs[0])
    if args.cnet:
        log.warning("--cnet is only used with --same-person; each photo is reconstructed on its own")
    failed: list[tuple[Path, str]] = []
    t = time.perf_counter()
    for done in reconstruct_all(args.photos, outs, args, args.workers):
        if done.error is not None:   # this photo's problem (unreadable, missing, no face, no face N): go on
            print(f"{done.photo}: skipped: {done.error}", file=sys.stderr)
            failed.append((done.photo, str(done.error)))
            continue
        print(f"{done.photo} → {done.out} ({done.seconds:.2f} s)")
        if len(done.faces) > 1:
            print(f"  {len(done.faces)} faces found; reconstructed {done.face_index} (choose with --face N):")
            for i, face in enumerate(done.faces):
                print(f"  {'*' if i == done.face_index else ' '} {i}: {face}")
    if len(args.photos) > 1:
        print(describe_rate(len(args.photos) - len(failed), time.perf_counter() - t, args.workers))
    if failed:   # the others were written; the exit code still tells a script that not all were
        print(f"facerig: error: {len(failed)} of {len(args.photos)} photos failed: "
              + ", ".join(p.name for p, _ in failed), file=sys.stderr)
        return 2
    return 0

# -- demo ---------------------------------------------------------------------------------------------
def cmd_demo(args: argparse.Namespace) -> int:
    from skimage import data

    out = check_output_dir(args.out)   # the demo's own three files in it are replaced on every run
    photo = out / "astronaut.png"
    write_image(photo, data.astronaut())
    report = reconstruct_to_file(photo, out / "astronaut.blend", args)
    export_atomically(out / "astronaut.glb")
    recon, result = report["_recon"], report["_result"]
    write_image(out / "astronaut_demo.png", render_sheet(recon, result))
    print(f"demo written to {out}/: astronaut.blend, astronaut.glb, astronaut_demo.png "
          f"(photo → params {sum(v for k, v in recon.timings.items() if k != 'model_load'):.0f} ms, "
          f"build {sum(result.timings.values()):.0f} ms)")
    return 0


__all__ = ["register"]
