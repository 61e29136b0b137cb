"""Photo I/O, square crops and detection for the harness: exactly the add-on's photo pipeline.

The harness measures what users run, so it calls ``runtime.photo`` and
``runtime.detect`` (numpy/OpenCV/MediaPipe; no bpy) rather than a copy of them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from runtime import detect as addon_detect
from runtime import photo as addon_photo
from facemodel.crop import points_from_crop

log = logging.getLogger(__name__)

Box = tuple[float, float, float, float]


def load_image(path: Path | str) -> np.ndarray:
    """(H, W, 3) uint8 RGB, upright (EXIF), any bit depth or channel count; never decoded reduced, because
    labels (.pts) are in the file's pixels (the pixel limit still applies)."""
    return np.asarray(addon_photo.load_image(path, max_decode_pixels=None))


def crop_square(image: np.ndarray, box: Box, size: int) -> np.ndarray:
    """``box`` resampled to (size, size, 3) as the add-on crops for the regressor."""
    return np.asarray(addon_photo.crop_square(image, box, size))


def crop_to_photo(points: np.ndarray, box: Box, size: int) -> np.ndarray:
    """Map (…, 2) crop pixel coordinates back to the photo (exact inverse of the crop)."""
    return points_from_crop(points, box, size)


@dataclass(frozen=True)
class Detection:
    """A detected face: the box to match against annotations and the network crop it implies."""

    box: Box        # landmark box of the detector's 68 points (matched against annotations)
    crop_box: Box   # canonical crop the photo pipeline feeds the regressor


def detect_faces(image: np.ndarray) -> list[Detection]:
    """Faces in the photo, as the add-on finds them (FaceMesh 68 points → canonical crop)."""
    return [Detection(points_box(np.asarray(face.landmarks)), tuple(float(v) for v in face.crop_box))
            for face in addon_detect.detect_faces(image)]


def box_iou(a: Box, b: Box) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def points_box(points: np.ndarray) -> Box:
    p = np.asarray(points, np.float64)
    lo, hi = p.min(0), p.max(0)
    return (float(lo[0]), float(lo[1]), float(hi[0]), float(hi[1]))
