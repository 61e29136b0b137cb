"""``facerig`` command line: one subcommand module per package, registered here."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys


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


# Errors that mean "the input or a file is wrong", not "facerig has a bug": printed as one line,
# exit code 2. Named, not imported, so a failing command never pulls in heavy modules it did not
# use; an error of a class can only have been raised once its module is loaded.
USER_ERRORS = (
    "facerig_cli.errors:CommandError",
    "facemodel.model:FaceModelError",
    "synth.corpus:CorpusError",
    "synth.render:RenderError",
    "synth.views:ReconstructionError",
    "learner.photo_corpus:PhotoCorpusError",
    "learner.devices:DistributedError",
)


def is_user_error(exc: BaseException) -> bool:
    """True for the errors :data:`USER_ERRORS` names and for missing files and bad values."""
    if isinstance(exc, (FileNotFoundError, ValueError)):
        return True
    for spec in USER_ERRORS:
        module, name = spec.split(":")
        cls = getattr(sys.modules.get(module), name, None)
        if cls is not None and isinstance(exc, cls):
            return True
    return False


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
        if is_user_error(exc):
            print(f"facerig: error: {exc}", file=sys.stderr)
            return 2
        raise


if __name__ == "__main__":
    sys.exit(main())
