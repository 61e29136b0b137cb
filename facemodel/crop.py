"""The canonical face crop: where a face sits in the network's input image.

Training renders and photo crops must agree, so both derive the crop from 2-D landmarks
the same way: a square centred on the landmark bounding box, moved up a little to include
the forehead, with side ``CROP_SCALE × max(width, height)`` of the box. The photo pipeline
gets those landmarks from the detector (or the ground-truth box in evaluation).
"""

from __future__ import annotations

import numpy as np

CROP_SCALE = 1.6        # crop side / max(bbox width, bbox height)
CROP_CENTER_UP = 0.10   # centre moved up by this fraction of the crop side


def canonical_crop_box(points: np.ndarray, scale: float = CROP_SCALE,
                       center_up: float = CROP_CENTER_UP) -> tuple[float, float, float, float]:
    """(x0, y0, x1, y1) of the square crop for 2-D landmarks (N, 2) in pixels."""
    pts = np.asarray(points, np.float64)
    lo, hi = pts.min(0), pts.max(0)
    side = scale * float(max(hi[0] - lo[0], hi[1] - lo[1]))
    if side <= 0:
        raise ValueError("landmarks span no area; cannot place a crop")
    cx = 0.5 * (lo[0] + hi[0])
    cy = 0.5 * (lo[1] + hi[1]) - center_up * side
    return (cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2)


def points_to_crop(points: np.ndarray, box: tuple[float, float, float, float], size: int) -> np.ndarray:
    """Photo pixel coordinates (…, 2) → pixels of the ``size``-px crop of ``box`` (x0, y0, x1, y1)."""
    x0, y0, x1, y1 = box
    p = np.asarray(points, np.float64)
    return np.stack([(p[..., 0] - x0) * size / (x1 - x0), (p[..., 1] - y0) * size / (y1 - y0)], -1)


def points_from_crop(points: np.ndarray, box: tuple[float, float, float, float], size: int) -> np.ndarray:
    """Inverse of :func:`points_to_crop`: crop pixels (…, 2) → photo pixels."""
    x0, y0, x1, y1 = box
    p = np.asarray(points, np.float64)
    return np.stack([x0 + p[..., 0] * (x1 - x0) / size, y0 + p[..., 1] * (y1 - y0) / size], -1)


def box_from_detection(box: tuple[float, float, float, float], scale: float = 1.0
                       ) -> tuple[float, float, float, float]:
    """Square box with the same centre as ``box`` and side ``scale × max(w, h)``."""
    x0, y0, x1, y1 = box
    side = scale * max(x1 - x0, y1 - y0)
    cx, cy = 0.5 * (x0 + x1), 0.5 * (y0 + y1)
    return (cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2)
