"""Argument checks shared by the subcommands: numeric ranges (stated in ``--help``) and ``--overwrite``.

A value out of range is refused by argparse before anything is loaded, with one line that names the
option and the range (``facerig synth render: error: argument --count: must be 1…100000000, got 0``), so a
typo never turns into minutes of work or an exhausted memory (docs/robustness.md).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any, Callable

# Upper bounds that keep one run within what a workstation holds; each is stated in --help.
MAX_RENDER_COUNT = 100_000_000       # images in one corpus (~5 TB at 128²)
MAX_STEPS = 100_000_000              # optimiser steps of one run
MAX_BATCH = 4096
MAX_WORKERS = 256
MAX_PREVIEW = 256                    # faces on a contact sheet (each 192 × 576 px)
MAX_LOADER_WORKERS = 64              # training loader processes per rank (learner.devices checks the same)


def _number(kind: type, lo: float | None, hi: float | None) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {'an integer' if kind is int else 'a number'}, "
                                             f"got {text!r}") from None
        if kind is float and value != value:  # NaN passes every comparison
            raise argparse.ArgumentTypeError(f"must be a number, got {text!r}")
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            raise argparse.ArgumentTypeError(f"must be {describe_range(lo, hi)}, got {text}")
        return value

    parse.__name__ = kind.__name__   # argparse names the type in its own messages
    return parse


def describe_range(lo: float | None, hi: float | None) -> str:
    if hi is None:
        return f"at least {lo:g}" if isinstance(lo, float) else f"at least {lo}"
    if lo is None:
        return f"at most {hi}"
    return f"{lo}…{hi}"


def int_range(lo: int | None = 1, hi: int | None = None) -> Callable[[str], int]:
    """argparse ``type`` for an integer in [lo, hi] (None: unbounded on that side)."""
    return _number(int, lo, hi)


def float_range(lo: float | None = None, hi: float | None = None) -> Callable[[str], float]:
    return _number(float, lo, hi)


def add_int(parser: argparse.ArgumentParser, *flags: str, lo: int | None = 1, hi: int | None = None,
            help: str = "", **kwargs: Any) -> argparse.Action:
    """``parser.add_argument`` for an integer whose range is checked and appended to the help text."""
    text = f"{help} [{describe_range(lo, hi)}]" if help else f"[{describe_range(lo, hi)}]"
    return parser.add_argument(*flags, type=int_range(lo, hi), help=text.replace("%", "%%"), **kwargs)


def add_overwrite(parser: argparse.ArgumentParser, what: str = "output files") -> None:
    parser.add_argument("--overwrite", action="store_true",
                        help=f"replace {what} that exist (default: refuse, so no earlier result is lost)")


def texture_size(text: str) -> int:
    """``--texture-size``: within limits.MIN/MAX_TEXTURE_SIZE and what the memory available allows."""
    from runtime.limits import LimitError, check_texture_size

    value = int_range(None, None)(text)
    try:
        return check_texture_size(value)
    except LimitError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


texture_size.__name__ = "int"


class UsageError(SystemExit):
    """A bad command line, already reported on stderr; ``main`` returns its code (2) instead of exiting."""


class OneLineParser(argparse.ArgumentParser):
    """argparse, with an error as one line (the usage is one ``--help`` away) and exit code 2."""

    def error(self, message: str) -> Any:
        self._print_message(f"{self.prog}: error: {message} (see {self.prog} --help)\n", sys.stderr)
        raise UsageError(2)


__all__ = ["MAX_BATCH", "MAX_LOADER_WORKERS", "MAX_PREVIEW", "MAX_RENDER_COUNT", "MAX_STEPS", "MAX_WORKERS", "OneLineParser", "UsageError", "add_int",
           "add_overwrite", "float_range", "int_range", "texture_size"]
