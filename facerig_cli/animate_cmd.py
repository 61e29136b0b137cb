"""``facerig animate``: a Live Link Face capture (CSV) → keyframes on a head built by ``facerig reconstruct``."""

from __future__ import annotations

import argparse
from pathlib import Path

from facemodel.outputs import check_output_file

from .args import add_overwrite, describe_range, float_range
from .errors import CommandError

FPS_RANGE = (1.0, 1000.0)   # frames per second a scene or a capture may have


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("animate", help="apply a Live Link Face capture (CSV) to a head .blend as animation")
    p.add_argument("head", type=Path, help="a .blend written by facerig reconstruct")
    p.add_argument("capture", type=Path, help="Live Link Face CSV (Timecode, BlendShapeCount, the 52 ARKit "
                                              "shapes, head and eye angles)")
    p.add_argument("-o", "--out", type=Path, required=True, help="output: .blend, or .glb/.gltf/.fbx")
    p.add_argument("--head-name", help="which head, when the file has several (the object name)")
    p.add_argument("--fps", type=float_range(*FPS_RANGE),
                   help=f"set the scene's frame rate first (default: keep the file's) [{describe_range(*FPS_RANGE)}]")
    p.add_argument("--capture-fps", type=float_range(*FPS_RANGE),
                   help="the rate the timecode's frame field counts (default: from the file, else 60) "
                        f"[{describe_range(*FPS_RANGE)}]")
    p.add_argument("--start-frame", type=int, help="first frame (default: the scene's start)")
    p.add_argument("--angles", choices=("radians", "degrees"), default="radians",
                   help="unit of the file's head and eye angles (default radians, as ARKit reports them)")
    p.add_argument("--no-head-rotation", action="store_true", help="leave the head and neck bones as they are")
    p.add_argument("--no-eye-rotation", action="store_true", help="leave the eye bones as they are")
    add_overwrite(p, "an output file that exists (the head file itself included)")
    p.set_defaults(func=cmd_animate)


def cmd_animate(args: argparse.Namespace) -> int:
    try:
        import bpy
    except ImportError as exc:
        raise ValueError(f"Blender's bpy module is needed for facerig animate ({exc})") from None
    from blender_addon.animation import apply_capture
    from runtime.arkit import read_live_link_csv
    from blender_addon.export import EXPORT_FORMATS
    from blender_addon.expression import heads_in

    from .reconstruct import export_atomically

    if not args.head.is_file():
        raise FileNotFoundError(f"head file not found: {args.head}")
    if args.out.suffix.lower() not in EXPORT_FORMATS:
        raise CommandError(f"cannot write {args.out.name}: use one of {', '.join(EXPORT_FORMATS)}")
    check_output_file(args.out, overwrite=args.overwrite, what="animated head")
    capture = read_live_link_csv(args.capture, args.capture_fps, args.angles)
    bpy.ops.wm.open_mainfile(filepath=str(args.head), load_ui=False)
    heads = heads_in(bpy.data.objects)
    if args.head_name:
        heads = [h for h in heads if h.head.name == args.head_name]
    if len(heads) != 1:
        names = ", ".join(h.head.name for h in heads_in(bpy.data.objects)) or "none"
        raise CommandError(f"{args.head.name}: {len(heads)} matching facerig heads (heads: {names}); "
                           + ("choose one with --head-name" if len(heads) > 1 else "build one with facerig reconstruct"))
    scene = bpy.context.scene
    if args.fps:
        scene.render.fps, scene.render.fps_base = round(args.fps), round(args.fps) / args.fps
    report = apply_capture(heads[0], capture, scene, args.start_frame, not args.no_head_rotation,
                           not args.no_eye_rotation)
    export_atomically(args.out)
    print(f"{args.capture.name} → {args.out}: {report.describe()}")
    return 0
