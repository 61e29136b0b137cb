"""What facerig accepts, in one place (docs/robustness.md): the photo pixel budget and the texture size.

A photo's size is read from its header before anything is decoded, so a 30000 × 30000 PNG (2.6 MB on
disk, 2.7 GB decoded) is refused in milliseconds instead of exhausting memory or crashing MediaPipe;
large photos that are accepted are decoded reduced, because neither the detector (which works on at
most 1280 px, and on tiles for small faces) nor the texture (a few thousand pixels across the face)
needs more. No heavy imports: the add-on's panel and the command line's argument checks read these.
"""

from __future__ import annotations

import os

PIXEL_LIMIT = 250_000_000        # photos with more pixels are refused (a 20000 × 12500 panorama is the limit)
DECODE_MAX_PIXELS = 40_000_000   # larger photos are decoded reduced by 2, 4, 8 … to at most this (≈ 7700 × 5200)

MIN_TEXTURE_SIZE = 64
MAX_TEXTURE_SIZE = 4096          # texels per side; 8192 needed 8.3 GB and ended in an OpenCV assertion
# Peak memory of `facerig reconstruct … -o x.glb` grows with the texture's texels (float32 colour, weight
# and coverage maps per material, images handed to Blender): 845 MB at 1024², 1.11 GB at 2048², 2.70 GB at
# 4096² (docs/robustness.md), i.e. ≈ 130 bytes a texel over a base of ≈ 0.6 GB; 8192² took 8.3 GB.
TEXTURE_BYTES_PER_TEXEL = 130
TEXTURE_BASE_BYTES = 600 * 2**20


class LimitError(ValueError):
    """A value outside what facerig accepts (one clear line)."""


def megapixels(width: int, height: int) -> str:
    return f"{width * height / 1e6:.0f} MP" if width * height >= 1e6 else f"{width * height / 1e6:.2f} MP"


def decode_reduction(width: int, height: int, max_pixels: int | None = DECODE_MAX_PIXELS) -> int:
    """The power-of-two factor (1, 2, 4 …) a ``width`` × ``height`` photo is decoded reduced by, so that it
    has at most ``max_pixels`` (None: always 1). Powers of two are what JPEG decoders scale by for free."""
    factor = 1
    if max_pixels:
        while (width // factor) * (height // factor) > max_pixels:
            factor *= 2
    return factor


def available_memory() -> int | None:
    """Bytes the system can still give (Linux ``MemAvailable``); None where unknown."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    if hasattr(os, "sysconf"):
        try:
            return int(os.sysconf("SC_AVPHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
        except (OSError, ValueError):
            return None
    return None


def check_texture_size(size: int, memory: int | None = -1) -> int:
    """``size`` when it is within [MIN_TEXTURE_SIZE, MAX_TEXTURE_SIZE] and its estimated peak memory fits
    what the system has available (``memory``: bytes, None = unknown, -1 = ask the system)."""
    size = int(size)
    if not MIN_TEXTURE_SIZE <= size <= MAX_TEXTURE_SIZE:
        raise LimitError(f"texture size must be between {MIN_TEXTURE_SIZE} and {MAX_TEXTURE_SIZE}, got {size}")
    memory = available_memory() if memory == -1 else memory
    need = TEXTURE_BASE_BYTES + TEXTURE_BYTES_PER_TEXEL * size * size
    if memory is not None and need > memory:
        raise LimitError(f"texture size {size} needs about {need / 2**30:.1f} GiB of memory, and "
                         f"{memory / 2**30:.1f} GiB are available; choose a smaller one")
    return size


__all__ = ["DECODE_MAX_PIXELS", "MAX_TEXTURE_SIZE", "MIN_TEXTURE_SIZE", "PIXEL_LIMIT", "LimitError",
           "available_memory", "check_texture_size", "decode_reduction", "megapixels"]
