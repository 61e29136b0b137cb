"""Photos tagged with a colour space other than sRGB, converted to sRGB.

Phones store Display P3 (iPhone JPEG and HEIC), cameras and editors Adobe RGB; OpenCV ignores
the embedded ICC profile, so those pixels would be read as sRGB: the network (trained on sRGB
renders) and the projected texture would see washed-out or shifted colour. LittleCMS (inside
Pillow's ImageCms) converts them; untagged and sRGB-tagged photos are left untouched. No bpy.
"""

from __future__ import annotations

import functools
import io
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

BAND_MIN_PIXELS = 1_000_000      # larger images are converted in row bands on several threads
MAX_BANDS = 4


def is_srgb_description(description: str) -> bool:
    """The usual sRGB profiles ("sRGB IEC61966-2.1", "sRGB built-in", "sRGB v4 …") say so."""
    return "srgb" in description.lower()


@functools.lru_cache(maxsize=8)
def _transform(icc: bytes) -> Any:
    """A LittleCMS transform profile → sRGB (relative colorimetric, the usual photo intent); None
    when none is needed (sRGB, not an RGB profile, no Pillow) or the profile cannot be read."""
    try:
        from PIL import ImageCms
    except ImportError:  # pragma: no cover - Pillow ships with the detector's dependencies
        return None
    try:
        source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        description = ImageCms.getProfileDescription(source).strip()
        if source.profile.xcolor_space.strip() != "RGB" or is_srgb_description(description):
            return None
        transform = ImageCms.buildTransform(source, ImageCms.createProfile("sRGB"), "RGB", "RGB",
                                            renderingIntent=ImageCms.Intent.RELATIVE_COLORIMETRIC)
    except (ImageCms.PyCMSError, OSError, ValueError) as exc:
        log.warning("ignoring an unreadable colour profile (%s): colours are read as sRGB", exc)
        return None
    log.debug("converting colours from %r to sRGB", description)
    return transform


def to_srgb(rgb: np.ndarray, icc: bytes | None) -> np.ndarray:
    """uint8 RGB (H, W, 3) in the colour space of ``icc`` → sRGB (the same array when no conversion
    is needed). LittleCMS runs on one thread per call, so large photos go in row bands at once."""
    transform = _transform(bytes(icc)) if icc else None
    if transform is None:
        return rgb
    from PIL import Image, ImageCms

    def convert(band: np.ndarray) -> np.ndarray:
        return np.asarray(ImageCms.applyTransform(Image.fromarray(np.ascontiguousarray(band)), transform))

    bands = 1
    if rgb.shape[0] * rgb.shape[1] >= BAND_MIN_PIXELS:
        bands = min(os.cpu_count() or 1, MAX_BANDS, max(1, rgb.shape[0] // 64))
    if bands == 1:
        return convert(rgb)
    with ThreadPoolExecutor(bands) as pool:
        return np.concatenate(list(pool.map(convert, np.array_split(rgb, bands))), axis=0)
