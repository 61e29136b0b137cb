"""A minimal reader for the uncompressed (multi-part) OpenEXR files the renderer writes.

Why: Blender cannot hand render-pass pixels to Python in background mode (the Viewer-node
image is not produced headless), so each frame is written to an uncompressed multilayer EXR
in RAM (``/dev/shm``) and read back here. That keeps colour linear and float (composited
and sRGB-encoded later with :mod:`facemodel.lighting`, exactly as the learner models it) and
brings the depth pass for the landmark visibility test — at ~1 ms, far cheaper than PNG
encoding or ray casting. Only what Blender writes is supported: scanline images, compression
NONE, HALF/FLOAT channels; anything else raises :class:`ExrError`.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

MAGIC = 20000630
_PIXEL_DTYPES = {1: np.dtype("<f2"), 2: np.dtype("<f4"), 0: np.dtype("<u4")}


class ExrError(ValueError):
    """The file is not an EXR this reader understands."""


def _cstring(buf: bytes, pos: int) -> tuple[str, int]:
    end = buf.index(b"\0", pos)
    return buf[pos:end].decode("latin-1"), end + 1


def _parse_header(buf: bytes, pos: int) -> tuple[dict[str, tuple[str, bytes]], int]:
    attrs: dict[str, tuple[str, bytes]] = {}
    while buf[pos] != 0:
        name, pos = _cstring(buf, pos)
        typ, pos = _cstring(buf, pos)
        (size,) = struct.unpack_from("<i", buf, pos)
        pos += 4
        attrs[name] = (typ, buf[pos:pos + size])
        pos += size
    return attrs, pos + 1


def _channels(raw: bytes) -> list[tuple[str, int]]:
    out, pos = [], 0
    while raw[pos] != 0:
        name, pos = _cstring(raw, pos)
        ptype, _plinear, xs, ys = struct.unpack_from("<iB3xii", raw, pos)
        pos += 16
        if xs != 1 or ys != 1:
            raise ExrError(f"channel {name} is subsampled; unsupported")
        out.append((name, ptype))
    return out


def read_exr(path: Path | str) -> dict[str, np.ndarray]:
    """All channels of an uncompressed scanline EXR as float32 (H, W) arrays, row 0 = top."""
    buf = Path(path).read_bytes()
    if len(buf) < 8 or struct.unpack_from("<i", buf, 0)[0] != MAGIC:
        raise ExrError(f"{path} is not an OpenEXR file")
    flags = struct.unpack_from("<I", buf, 4)[0] >> 8
    tiled, deep, multipart = bool(flags & 0x2), bool(flags & 0x8), bool(flags & 0x10)
    if tiled or deep:
        raise ExrError(f"{path}: tiled/deep EXR unsupported")
    pos = 8
    headers = []
    while True:
        attrs, pos = _parse_header(buf, pos)
        headers.append(attrs)
        if not multipart or buf[pos] == 0:
            pos += 1 if multipart else 0
            break
    parts = []
    for attrs in headers:
        if attrs.get("compression", ("", b"\0"))[1] != b"\0":
            raise ExrError(f"{path}: compressed EXR unsupported (render with exr_codec NONE)")
        x0, y0, x1, y1 = struct.unpack("<iiii", attrs["dataWindow"][1])
        width, height = x1 - x0 + 1, y1 - y0 + 1
        chans = _channels(attrs["channels"][1])
        n_chunks = height
        offsets = np.frombuffer(buf, "<u8", n_chunks, pos).astype(np.int64)
        pos += 8 * n_chunks
        parts.append((width, height, y0, chans, offsets))
    out: dict[str, np.ndarray] = {}
    for width, height, y0, chans, offsets in parts:
        fields = [(name, _PIXEL_DTYPES[ptype], (width,)) for name, ptype in chans]
        line = np.dtype(fields)
        chunk = np.dtype(([("part", "<i4")] if multipart else []) + [("y", "<i4"), ("size", "<i4"), ("data", line)])
        stride = np.diff(offsets)
        if len(stride) == 0 or np.all(stride == chunk.itemsize):
            chunks = np.frombuffer(buf, chunk, height, int(offsets[0]))
        else:  # chunks not contiguous: gather them one by one
            chunks = np.concatenate([np.frombuffer(buf, chunk, 1, int(o)) for o in offsets])
        if np.any(chunks["size"] != line.itemsize):
            raise ExrError(f"{path}: unexpected scanline size")
        rows, ys = chunks["data"], chunks["y"]
        order = np.argsort(ys - y0, kind="stable")
        for name, _ptype in chans:
            out[name] = np.asarray(rows[name][order], np.float32)
    return out
