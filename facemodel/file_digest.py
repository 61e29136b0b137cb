"""A file's own sha256 recorded inside it, so that a bit-rotted model is refused instead of giving
silent garbage (an ONNX file with a flipped byte in its weights still loads and runs).

A file cannot contain the hash of its own final bytes, so the recorded digest is that of the file with
the digest's 64 characters replaced by :data:`PLACEHOLDER`: the writer stores the placeholder (an ONNX
metadata value ``facerig.sha256``), saves, hashes and overwrites the placeholder in place (same length,
so no length field changes); the reader undoes that substitution and hashes again. Needs no ONNX
parser: the add-on checks with onnxruntime's metadata alone.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from .outputs import atomic_write_bytes

DIGEST_KEY = "facerig.sha256"
PLACEHOLDER = "0" * 64


class DigestError(ValueError):
    """The placeholder is not in the file exactly once, so the digest cannot be recorded."""


def seal(path: Path | str) -> str:
    """Replace the one :data:`PLACEHOLDER` in ``path`` by the file's digest (atomically); returns it."""
    path = Path(path)
    data = path.read_bytes()
    marker = PLACEHOLDER.encode()
    if data.count(marker) != 1:
        raise DigestError(f"{path.name}: the digest placeholder occurs {data.count(marker)} times, not once")
    digest = hashlib.sha256(data).hexdigest()
    atomic_write_bytes(path, data.replace(marker, digest.encode()))
    return digest


def matches(path: Path | str, recorded: str) -> bool:
    """Whether ``path``'s bytes hash to ``recorded``, the digest :func:`seal` wrote into them."""
    data = Path(path).read_bytes()
    token = recorded.encode()
    if len(recorded) != 64 or data.count(token) != 1:
        return False
    return hashlib.sha256(data.replace(token, PLACEHOLDER.encode())).hexdigest() == recorded


__all__ = ["DIGEST_KEY", "PLACEHOLDER", "DigestError", "matches", "seal"]
