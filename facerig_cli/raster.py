"""A small painter's-algorithm triangle rasteriser (OpenCV) for previews and contact sheets.

Not the training renderer (that is Blender, in ``synth/``): this draws flat-shaded
triangles far-to-near so people can look at the model and priors without starting Blender.
"""

from __future__ import annotations

import cv2
import numpy as np


def draw_mesh(pixels: np.ndarray, depth: np.ndarray, colors: np.ndarray, triangles: np.ndarray,
              width: int, height: int, background: tuple[float, float, float] = (0.15, 0.15, 0.18),
              supersample: int = 2) -> np.ndarray:
    """uint8 (H, W, 3) image of front-facing triangles; ``depth`` is distance (larger = farther)."""
    s = supersample
    img = np.empty((height * s, width * s, 3), np.float32)
    img[:] = background
    p = pixels[triangles] * s                                  # (T, 3, 2)
    e1, e2 = p[:, 1] - p[:, 0], p[:, 2] - p[:, 0]
    front = (e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]) < 0    # counter-clockwise in y-up = cw in y-down
    tri = triangles[front]
    order = np.argsort(-depth[tri].mean(1))
    tri = tri[order]
    pts = np.round(pixels[tri] * s * 16).astype(np.int32)     # 4 fractional bits
    col = colors[tri].mean(1)
    for poly, c in zip(pts, col):
        cv2.fillConvexPoly(img, poly, c.tolist(), lineType=cv2.LINE_8, shift=4)
    img = cv2.resize(img, (width, height), interpolation=cv2.INTER_AREA)
    return (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)


def draw_points(image: np.ndarray, points: np.ndarray, color: tuple[int, int, int] = (255, 60, 60),
                radius: int = 1) -> np.ndarray:
    out = image.copy()
    for x, y in np.asarray(points):
        if np.isfinite(x) and np.isfinite(y):
            cv2.circle(out, (int(round(x)), int(round(y))), radius, color, -1, lineType=cv2.LINE_AA)
    return out


def headlight(normals: np.ndarray) -> np.ndarray:
    """(V, 3) grey clay colours of unit camera-space normals under a light from above the camera."""
    light = np.array([0.3, 0.4, 1.0]) / np.linalg.norm([0.3, 0.4, 1.0])
    lum = 0.15 + 0.8 * np.clip(normals @ light, 0, 1)
    return np.repeat(lum[:, None], 3, axis=1) * np.array([0.85, 0.8, 0.78])
