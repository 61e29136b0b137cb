"""``facerig photos prepare``: real photos → a landmark-supervised training corpus."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from .args import add_int


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("photos", help="prepare real photos for training (detector landmarks, canonical crops)")
    psub = p.add_subparsers(dest="photos_command", metavar="ACTION", required=True)
    prep = psub.add_parser("prepare", help="detect faces, crop them as the regressor expects and store MediaPipe "
                                           "68-point landmarks (resumable)")
    prep.add_argument("--images", type=Path, action="append", required=True, metavar="DIR",
                      help="folder of photos (repeat for several)")
    prep.add_argument("--out", type=Path, required=True, metavar="DIR", help="photo corpus directory")
    add_int(prep, "--size", lo=32, hi=1024, default=128, help="crop side in pixels (default 128, the regressor's)")
    add_int(prep, "--limit", lo=1, help="only the first N photos (sorted by folder, then name)")
    prep.add_argument("--no-progress", action="store_true")
    prep.set_defaults(func=cmd_prepare)


def cmd_prepare(args: argparse.Namespace) -> int:
    from facemodel.outputs import check_output_dir
    from learner.photo_corpus import build_photo_corpus

    check_output_dir(args.out, "photo corpus folder")
    manifest = build_photo_corpus(args.images, args.out, args.size, args.limit, progress=not args.no_progress)
    print(json.dumps({"out": str(args.out), "faces": manifest["count"], "photos": manifest["files_total"],
                      "skipped": manifest["skipped"]}))
    return 0
