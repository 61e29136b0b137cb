"""``facerig`` command line: one subcommand module per package, registered here."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from .args import OneLineParser, UsageError


# Modules that add subcommands; each defines ``register(subparsers)``. Imported lazily so
# ``facerig --help`` stays fast and a missing optional extra breaks only its own command.
COMMAND_MODULES = (
    "facerig_cli.model_cmd",
    "facerig_cli.synth_cmd",
    "facerig_cli.train_cmd",
    "facerig_cli.photos_cmd",
    "facerig_cli.reconstruct_cmd",
    "facerig_cli.addon_build",
    "facerig_cli.animate_cmd",
    "facerig_cli.eval_cmd",
)


# Errors that mean "the input or a file is wrong", not "facerig has a bug": printed as one line,
# exit code 2. Named, not imported, so a failing command never pulls in heavy modules it did not
# use; an error of a class can only have been raised once its module is loaded.
USER_ERRORS = (
    "facerig_cli.errors:CommandError",
    "facemodel.outputs:OutputError",
    "facemodel.mesh:FaceModelError",
    "synth.corpus:CorpusError",
    "synth.shards:RenderError",
    "synth.views:ReconstructionError",
    "learner.photo_corpus:PhotoCorpusError",
    "learner.devices:DistributedError",
)


def is_user_error(exc: BaseException) -> bool:
    """True for the errors :data:`USER_ERRORS` names, for missing files and bad values, and for the
    OSErrors of a file that cannot be read or written (full disk, no permission, read-only …)."""
    from facemodel.outputs import WRITE_ERRNOS

    if isinstance(exc, (FileNotFoundError, ValueError, MemoryError)):
        return True
    if isinstance(exc, OSError) and exc.errno in WRITE_ERRNOS:
        return True
    for spec in USER_ERRORS:
        module, name = spec.split(":")
        cls = getattr(sys.modules.get(module), name, None)
        if cls is not None and isinstance(exc, cls):
            return True
    return False


def user_message(exc: BaseException) -> str:
    """The one line a user error is shown as (an OSError as ``PATH: reason``)."""
    from facemodel.outputs import OutputError, describe_os_error

    if isinstance(exc, MemoryError):
        return "out of memory; try smaller values (docs/robustness.md lists the limits)"
    if isinstance(exc, OSError) and not isinstance(exc, OutputError) and exc.errno is not None and exc.filename:
        return describe_os_error(exc, exc.filename, action="")
    return str(exc)


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
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
    from .blender_env import isolate_blender_user_config

    isolate_blender_user_config()   # before anything imports bpy: never the user's Blender configuration
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except UsageError as exc:   # already reported, as one line
        return int(exc.code or 2)
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
            print(f"facerig: error: {user_message(exc)}", file=sys.stderr)
            return 2
        raise


if __name__ == "__main__":
    sys.exit(main())
