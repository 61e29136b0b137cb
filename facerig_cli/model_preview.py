"""Contact sheet of random faces from the priors: sampled pose, front and side views."""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import numpy as np
from tqdm import tqdm

from facemodel import FaceModel, FaceParams, form, landmarks_2d
from facemodel.outputs import atomic_output
from facemodel.priors import PoseRange, place_in_crop, sample_params

from .raster import draw_mesh, draw_points

log = logging.getLogger(__name__)
TILE = 192


def render_tile(model: FaceModel, params: FaceParams, size: int = TILE) -> np.ndarray:
    """One face (unbatched params) drawn with its 68 fixed landmarks (red) and visible jawline (cyan)."""
    f = form(model.arrays, params, size, size)
    img = draw_mesh(f.pixels, -f.vertices[:, 2], f.colors, model.render_triangles, size, size)
    visible = landmarks_2d(model.arrays.subset(model.landmark_indices("visible")), params, size, size)
    img = draw_points(img, visible[:17], (60, 220, 255))
    return draw_points(img, f.pixels[model.landmark_indices()], (255, 60, 60))


def with_pose(model: FaceModel, params: FaceParams, yaw_deg: float) -> FaceParams:
    p = replace(params, rotation=np.array([np.deg2rad(yaw_deg), 0, 0], np.float32))
    p.translation = place_in_crop(model.arrays.subset(model.landmark_indices()), p)
    return p


def write_contact_sheet(out: Path, count: int = 16, seed: int = 0, model_path: Path | None = None) -> Path:
    import imageio.v3 as iio

    model = FaceModel.load(model_path)
    rng = np.random.default_rng(seed)
    lm_arrays = model.arrays.subset(model.landmark_indices())
    params = sample_params(rng, count, model.expression_names, lm_arrays, pose=PoseRange())
    cols = 4
    rows = int(np.ceil(count / cols))
    sheet = np.full((rows * TILE, cols * 3 * TILE, 3), 255, np.uint8)
    for i in tqdm(range(count), desc="contact sheet", unit="face"):
        p = params[i]
        tiles = [render_tile(model, p), render_tile(model, with_pose(model, p, 0)),
                 render_tile(model, with_pose(model, p, 90))]
        r, c = divmod(i, cols)
        sheet[r * TILE:(r + 1) * TILE, c * 3 * TILE:(c + 1) * 3 * TILE] = np.concatenate(tiles, 1)
    with atomic_output(out) as tmp:
        iio.imwrite(tmp, sheet)
    log.info("contact sheet: %d faces (sampled pose | front | side), seed %d", count, seed)
    return out
