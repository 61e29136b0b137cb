"""Perspective pinhole camera shared by the renderer, the learner and the add-on.

Conventions (docs/conventions.md):

* Camera space is Blender's camera space: the camera sits at the origin, looks down −z,
  +y is up and +x is right. A face in front of the camera has z < 0; the model's face
  looks down its own +z, so the identity rotation shows the face frontally.
* Pixel coordinates: u to the right, v downwards, origin at the top-left *corner* of the
  image; the centre of pixel (i, j) is (i + 0.5, j + 0.5).
* Intrinsics are stored relative to the image, so they survive resizing: ``focal`` is the
  focal length divided by the image width, ``cx``/``cy`` the principal point divided by the
  width/height. The training crops use ``DEFAULT_CAMERA = (4.0, 0.5, 0.5)``: a 128-pixel
  crop has a 512-pixel focal length and its principal point at the centre.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .xp import namespace


def project(points: Any, camera: Any, width: float, height: float) -> Any:
    """Camera-space points (…, N, 3) → pixel coordinates (…, N, 2).

    ``camera`` (…, 3) holds (focal/width, cx/width, cy/height). Points behind the camera
    project to nonsense; callers keep faces in front (z < 0).
    """
    f = camera[..., 0:1, None] * width
    cx = camera[..., 1:2, None] * width
    cy = camera[..., 2:3, None] * height
    depth = -points[..., 2:3]
    xp = namespace(points, camera)
    u = cx + f * points[..., 0:1] / depth
    v = cy - f * points[..., 1:2] / depth
    return xp.concatenate([u, v], -1)


def unproject(pixels: np.ndarray, depth: np.ndarray, camera: np.ndarray, width: float,
              height: float) -> np.ndarray:
    """Inverse of :func:`project` for given positive depths (distance along −z)."""
    f = camera[..., 0] * width
    cx, cy = camera[..., 1] * width, camera[..., 2] * height
    x = (pixels[..., 0] - cx) * depth / f
    y = -(pixels[..., 1] - cy) * depth / f
    return np.stack([x, y, -depth], -1)


@dataclass(frozen=True)
class BlenderCamera:
    """Blender camera data settings that reproduce :func:`project` exactly."""

    lens_mm: float
    sensor_width_mm: float
    sensor_fit: str
    shift_x: float
    shift_y: float
    resolution_x: int
    resolution_y: int


def blender_camera(camera: np.ndarray, width: int, height: int,
                   sensor_width_mm: float = 36.0) -> BlenderCamera:
    """Map (focal/width, cx/width, cy/height) to Blender lens, sensor and shift.

    With ``sensor_fit='HORIZONTAL'`` Blender's focal length in pixels is
    ``lens / sensor_width · width`` and its shifts are fractions of the width. A positive shift
    moves the frame right/up, so a point on the optical axis appears at u = 0.5 − shift_x and
    v = 0.5 + shift_y · width/height (verified against Cycles renders and
    ``world_to_camera_view`` in the add-on tests).
    """
    focal, cx, cy = (float(v) for v in np.asarray(camera).reshape(3))
    return BlenderCamera(lens_mm=focal * sensor_width_mm, sensor_width_mm=sensor_width_mm,
                         sensor_fit="HORIZONTAL", shift_x=0.5 - cx,
                         shift_y=(cy - 0.5) * height / width, resolution_x=int(width),
                         resolution_y=int(height))


def crop_camera(camera: np.ndarray, width: int, height: int, box: tuple[float, float, float, float],
                out_width: int, out_height: int) -> np.ndarray:
    """Intrinsics of a crop: the pixels inside ``box`` (x0, y0, x1, y1) resampled to the output size.

    Cropping and resizing a pinhole image is again a pinhole image, so a reconstruction in
    crop coordinates maps back to the photo (and back again) exactly.
    """
    x0, y0, x1, y1 = box
    sx, sy = out_width / (x1 - x0), out_height / (y1 - y0)
    f_px = camera[0] * width * sx
    cx = (camera[1] * width - x0) * sx
    cy = (camera[2] * height - y0) * sy
    return np.array([f_px / out_width, cx / out_width, cy / out_height], np.float32)
