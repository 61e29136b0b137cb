"""User-facing command errors, in a module of their own so every subcommand and ``main`` share
one class even when ``facerig_cli.main`` runs as ``__main__`` (``python -m facerig_cli.main``)."""

from __future__ import annotations


class CommandError(RuntimeError):
    """A user-facing error: printed as one line, exit code 2."""
