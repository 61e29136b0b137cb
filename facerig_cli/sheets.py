"""Pictures drawn without Blender: a small painter's-algorithm triangle rasteriser (OpenCV), the contact
sheet of random faces from the priors (``facerig model preview``) and the demo's photo → head sheet
(``facerig demo``).

Not the training renderer (that is Blender, in ``synth/``): this draws flat-shaded triangles far-to-near
so people can look at the model, the priors and a reconstruction without starting Blender.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from tqdm import tqdm

from facemodel import FaceModel, FaceParams, form, landmarks_2d
from facemodel.outputs import OutputError, atomic_output
from facemodel.priors import PoseRange, place_in_crop, sample_params

log = logging.getLogger(__name__)


# -- the rasteriser -----------------------------------------------------------------------------------
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


# -- random faces from the priors (facerig model preview) ---------------------------------------------
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


# -- the demo's sheet (facerig demo) ------------------------------------------------------------------
def write_image(path: Path, rgb: np.ndarray) -> Path:
    """An RGB uint8 image as PNG/JPEG by ``path``'s extension, atomically; a failed encoding is an error
    (``cv2.imwrite`` only returns False)."""
    with atomic_output(path) as tmp:
        if not cv2.imwrite(str(tmp), cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2BGR)):
            raise OutputError(f"cannot write {path}: the image could not be encoded")
    return path


def render_sheet(recon: Any, result: Any, panel: int = 384) -> np.ndarray:
    """photo | overlay | shaded front | textured front | shaded 3/4 | textured 3/4 (numpy raster)."""
    from runtime.pipeline import load_face_model
    from runtime.texture import posed_geometry

    model = load_face_model(None)
    params = recon.params
    image = recon.image
    h, w = image.shape[:2]
    cam, normals, pix = posed_geometry(model, params, w, h)
    tris = model.render_triangles
    keep = ~np.isin(tris, model.vertex_range("eyelashes")).any(1)
    tris = tris[keep]
    shade = headlight(normals)
    tex_colours = _vertex_texture_colours(model, result)
    photo_panel = _fit(image, panel)
    over = draw_mesh(pix, -cam[:, 2], shade, tris, w, h, background=(0, 0, 0))
    mask = draw_mesh(pix, -cam[:, 2], np.ones_like(shade), tris, w, h, background=(0, 0, 0))[..., :1] > 0
    overlay = np.where(mask, (0.45 * image + 0.55 * over).astype(np.uint8), image)
    panels = [photo_panel, _fit(overlay, panel)]
    p = params.numpy()
    for yaw in (0.0, np.deg2rad(35.0)):
        view = replace(p, rotation=np.array([yaw, 0.0, 0.0], np.float32),
                       translation=np.array([0.0, -1.0, -125.0], np.float32), camera=np.array([4.0, 0.5, 0.5], np.float32))
        vcam, vn, vpix = posed_geometry(model, view, panel, panel)
        panels.append(draw_mesh(vpix, -vcam[:, 2], headlight(vn), tris, panel, panel))
        panels.append(draw_mesh(vpix, -vcam[:, 2], tex_colours, tris, panel, panel))
    sheet = np.concatenate(panels, axis=1)
    labels = ["photo", "overlay", "shaded front", "textured front", "shaded 3/4", "textured 3/4"]
    for i, text in enumerate(labels):
        cv2.putText(sheet, text, (i * panel + 8, 22), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (255, 255, 255), 2, cv2.LINE_AA)
    return sheet


def _vertex_texture_colours(model: Any, result: Any) -> np.ndarray:
    """Per-vertex colours sampled from the baked textures (through Blender's images)."""
    mesh = result.mesh_object.data
    colours = np.full((model.n_vertices, 3), 0.6, np.float32)
    for slot, mat in enumerate(mesh.materials):
        img = next((n.image for n in mat.node_tree.nodes if n.type == "TEX_IMAGE" and n.image), None)
        sel = model.face_material == slot
        corners = model.faces[sel]
        uvc = model.face_uvs[sel]
        ok = corners >= 0
        vidx, uidx = corners[ok], uvc[ok]
        if img is None:
            colours[vidx] = np.asarray(mat.diffuse_color[:3]) ** (1 / 2.2)
            continue
        iw, ih = img.size
        px = np.empty(iw * ih * 4, np.float32)
        img.pixels.foreach_get(px)
        px = px.reshape(ih, iw, 4)
        uv = model.uvs[uidx] % 1.0
        colours[vidx] = px[np.clip((uv[:, 1] * ih).astype(int), 0, ih - 1), np.clip((uv[:, 0] * iw).astype(int), 0, iw - 1), :3]
    return colours


def _fit(image: np.ndarray, size: int) -> np.ndarray:
    h, w = image.shape[:2]
    s = size / max(h, w)
    small = cv2.resize(image, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)
    out = np.full((size, size, 3), 30, np.uint8)
    y0, x0 = (size - small.shape[0]) // 2, (size - small.shape[1]) // 2
    out[y0:y0 + small.shape[0], x0:x0 + small.shape[1]] = small
    return out
