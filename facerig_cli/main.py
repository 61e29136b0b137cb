"""``facerig`` command line: one subcommand module per package, registered here."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from facerig_cli.errors import CommandError

# Modules that add subcommands; each defines ``register(subparsers)``. Imported lazily so
# ``facerig --help`` stays fast and a missing optional extra breaks only its own command.
COMMAND_MODULES = (
    "facerig_cli.model_cmd",
    "facerig_cli.synth_cmd",
    "facerig_cli.train_cmd",
    "facerig_cli.photos_cmd",
    "facerig_cli.reconstruct_cmd",
    "facerig_cli.eval_cmd",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="facerig", description="Single-photo 3D face reconstruction to an editable, rigged face.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:
                continue  # command module not written yet
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    if not getattr(args, "func", None):
        parser.print_help()
        return 0 if args.command is None else 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("facerig: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 — user-facing errors become one clear line
        from facemodel import FaceModelError, LayoutError
        from synth.corpus import CorpusError

        if isinstance(exc, (CommandError, FaceModelError, LayoutError, CorpusError, FileNotFoundError, ValueError)):
            print(f"facerig: error: {exc}", file=sys.stderr)
            return 2
        raise


if __name__ == "__main__":
    sys.exit(main())
