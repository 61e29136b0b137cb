"""``facerig model``: info, fetch, convert and preview the ICT-FaceKit face model."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from .args import MAX_PREVIEW, add_int, add_overwrite


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("model", help="the face model: info, fetch, convert, preview")
    msub = p.add_subparsers(dest="model_command", metavar="ACTION")

    info = msub.add_parser("info", help="print what is loaded (path, vertices, modes, licence)")
    info.add_argument("--model", type=Path, help="npz path (default: $FACERIG_FACE_MODEL, then the cache)")
    info.add_argument("--json", action="store_true", help="print JSON")
    info.set_defaults(func=cmd_info)

    fetch = msub.add_parser("fetch", help="download ICT-FaceKit (MIT) from GitHub, convert and cache it")
    fetch.add_argument("--url", help="archive URL (default: the ICT-FaceKit master archive); file:// works")
    fetch.add_argument("--sha256", help="expected archive checksum")
    fetch.add_argument("-o", "--out", type=Path, help="npz path (default: the user cache); the archive is "
                                                      "downloaded to a private temporary folder beside it")
    add_overwrite(fetch, "a face model npz")
    fetch.set_defaults(func=cmd_fetch)

    conv = msub.add_parser("convert", help="convert a local ICT-FaceKit folder or zip to the npz")
    conv.add_argument("source", type=Path)
    conv.add_argument("-o", "--out", type=Path, help="npz path (default: the user cache)")
    add_overwrite(conv, "a face model npz")
    conv.set_defaults(func=cmd_convert)

    prev = msub.add_parser("preview", help="contact sheet PNG of random faces with landmarks")
    prev.add_argument("-o", "--out", type=Path, default=Path("face_samples.png"),
                      help="PNG to write (default face_samples.png; replaced if it exists)")
    add_int(prev, "-n", "--count", lo=1, hi=MAX_PREVIEW, default=16, help="faces on the sheet (default 16)")
    add_int(prev, "--seed", lo=0, hi=2**63 - 1, default=0, help="random seed (default 0)")
    prev.add_argument("--model", type=Path)
    prev.set_defaults(func=cmd_preview)

    harm = msub.add_parser("harmonics", help="compute and cache the face region's manifold harmonics (the "
                                             "corrective field's basis); optionally draw them")
    harm.add_argument("--model", type=Path)
    harm.add_argument("--sheet", type=Path, help="also write a contact sheet PNG (modes, faces with/without)")
    add_int(harm, "--seed", lo=0, hi=2**63 - 1, default=0, help="random seed of the sheet's faces (default 0)")
    harm.add_argument("--bundle", type=Path, metavar="DIR",
                      help="also write the basis into DIR for the add-on, whose Blender Python has no scipy "
                           "(blender_addon/models)")
    harm.set_defaults(func=cmd_harmonics)
    p.set_defaults(func=lambda a: p.print_help() or 2)


def cmd_info(args: argparse.Namespace) -> int:
    from facemodel import FaceModel

    info = FaceModel.load(args.model).info()
    if args.json:
        print(json.dumps(info, indent=1))
    else:
        for k, v in info.items():
            print(f"{k:15s} {', '.join(v) if isinstance(v, list) else v}")
    return 0


def cmd_fetch(args: argparse.Namespace) -> int:
    from facemodel.convert import ICT_ARCHIVE_URL, fetch

    path = fetch(args.url or ICT_ARCHIVE_URL, args.out, args.sha256, overwrite=args.overwrite)
    print(f"face model written to {path}")
    return 0


def cmd_convert(args: argparse.Namespace) -> int:
    from facemodel.convert import convert_source

    print(f"face model written to {convert_source(args.source, args.out, overwrite=args.overwrite)}")
    return 0


def cmd_preview(args: argparse.Namespace) -> int:
    from facemodel.outputs import check_output_file

    from .sheets import write_contact_sheet

    check_output_file(args.out, overwrite=True, what="contact sheet")
    print(f"contact sheet written to {write_contact_sheet(args.out, args.count, args.seed, args.model)}")
    return 0


def cmd_harmonics(args: argparse.Namespace) -> int:
    import time

    from facemodel import FaceModel
    from facemodel.harmonics import cache_path, compute_harmonics, load_harmonics, save_harmonics

    from facemodel.outputs import check_output_dir, check_output_file

    if args.sheet:
        check_output_file(args.sheet, overwrite=True, what="contact sheet")
    if args.bundle:
        check_output_dir(args.bundle, what="bundle folder")
    model = FaceModel.load(args.model)
    t = time.process_time()
    compute_harmonics(model)
    seconds = time.process_time() - t
    h = load_harmonics(model)
    print(f"{h.k} harmonics of {len(h.region)} face-region vertices, computed in {seconds:.2f} s CPU, "
          f"cached at {cache_path(model)}")
    print("eigenvalues " + " ".join(f"{v:.1f}" for v in h.eigenvalues))
    if args.bundle:
        print(f"bundled copy written to {save_harmonics(model, args.bundle)}")
    if args.sheet:
        from .harmonics_sheet import write_harmonics_sheet

        print(f"contact sheet written to {write_harmonics_sheet(args.sheet, model, args.seed)}")
    return 0
