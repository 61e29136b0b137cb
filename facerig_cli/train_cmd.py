"""``facerig train`` and ``facerig export``: the learner's command line."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    t = sub.add_parser("train", help="train the face regressor on rendered corpora (resumable)")
    t.add_argument("--corpus", type=Path, action="append", required=True, metavar="DIR",
                   help="corpus directory (repeat to combine corpora)")
    t.add_argument("--out", type=Path, required=True, metavar="RUN", help="run directory (checkpoints, logs)")
    t.add_argument("--config", type=Path, help="TOML or JSON config (see learner/config.py for the keys)")
    t.add_argument("--resume", action="store_true", help="continue the run in --out from last.pt")
    t.add_argument("--steps", type=int, help="override train.steps")
    t.add_argument("--batch-size", type=int, help="override train.batch_size (new runs only)")
    t.add_argument("--no-progress", action="store_true", help="no progress bar (logs only)")
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("export", help="export a trained run to ONNX for the add-on")
    e.add_argument("run", type=Path, help="run directory or checkpoint file")
    e.add_argument("--out", type=Path, required=True, help="ONNX file to write")
    e.add_argument("--checkpoint", choices=("best", "last"), default="best",
                   help="which checkpoint of a run directory (default: best, else last)")
    e.set_defaults(func=cmd_export)


def cmd_train(args: argparse.Namespace) -> int:
    from learner.runtime import tune_malloc

    tune_malloc()  # before the corpora are loaded (see learner/runtime.py)
    from learner.config import Config
    from learner.train import train

    config = Config.load(args.config) if args.config else None
    if args.steps is not None or args.batch_size is not None:
        if args.resume and args.batch_size is not None:
            raise ValueError("--batch-size cannot change on --resume")
        if config is None and args.resume:
            from learner.checkpoint import load_checkpoint

            config = Config.from_dict(load_checkpoint(args.out / "last.pt")["config"])
        config = config or Config()
        if args.steps is not None:
            config.train.steps = args.steps
        if args.batch_size is not None:
            config.train.batch_size = args.batch_size
    from synth.corpus import CorpusError

    from .errors import CommandError

    try:
        summary = train(args.corpus, args.out, config, resume=args.resume, progress=not args.no_progress)
    except KeyboardInterrupt as exc:
        print(f"facerig: {exc or 'interrupted'}")
        return 130
    except CorpusError as exc:
        raise CommandError(str(exc)) from None
    m = summary["metrics"]
    print(f"trained to step {summary['step']} ({summary['images_per_s']:.0f} images/s); "
          f"val vertex {m.get('val/vertex_mm', float('nan')):.2f} mm, aligned "
          f"{m.get('val/vertex_aligned_mm', float('nan')):.2f} mm, NME {m.get('val/nme_bbox_68', float('nan')):.2f} %; "
          f"run in {args.out}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from learner.export import export_onnx, resolve_checkpoint

    info = export_onnx(resolve_checkpoint(args.run, args.checkpoint), args.out)
    print(json.dumps(info))
    return 0
