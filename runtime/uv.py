"""ICT's UV atlas as texels: which triangle covers each texel of a tile, and values carried between
vertices, texels and photo pixels (numpy + OpenCV, no bpy).

ICT-FaceKit lays its UVs out in tiles: u ∈ [0, 1] is the face (M_Face), u ∈ [1, 2] the back of the head,
neck and ears (M_BackHead); the eyes have their own. A tile's triangles are rasterised once in UV space
(triangle id per texel, cached per model and size; it does not depend on the photo) and every texel gets
barycentric coordinates. Arrays are in Blender pixel order: row 0 is v = 0 (the bottom of the image).
Used by the photo projection (:mod:`runtime.texture`) and the eye textures (:mod:`runtime.eyes`).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from .fm import facemodel

TILES = {"M_Face": 0, "M_BackHead": 1}     # material → UV tile (u offset)

_UV_RASTER_CACHE: dict[tuple[int, int, str], "UVRaster"] = {}


@dataclass
class UVRaster:
    """Which triangle covers each texel of one tile, and where inside it."""

    texels: np.ndarray        # (K,) flat indices (Blender order) of covered texels
    vertices: np.ndarray      # (3, K) int32 mesh vertex indices of the covering triangle (rows contiguous)
    bary: np.ndarray          # (3, K) float32 barycentric weights
    size: int


def _tile_triangles(model: "facemodel.FaceModel", material: str) -> tuple[np.ndarray, np.ndarray]:
    mat = model.material_names.index(material)
    sel = model.face_material == mat
    faces, fuv = model.faces[sel], model.face_uvs[sel]
    quads = faces[:, 3] >= 0
    tri_v = np.concatenate([faces[:, [0, 1, 2]], faces[quads][:, [0, 2, 3]]])
    tri_uv = np.concatenate([fuv[:, [0, 1, 2]], fuv[quads][:, [0, 2, 3]]])
    return tri_v.astype(np.int64), tri_uv.astype(np.int64)


def uv_raster(model: "facemodel.FaceModel", material: str, size: int) -> UVRaster:
    """Rasterise one UV tile (cached: depends on topology and size only)."""
    key = (id(model), size, material)
    if key in _UV_RASTER_CACHE:
        return _UV_RASTER_CACHE[key]
    tri_v, tri_uv = _tile_triangles(model, material)
    uv = model.uvs[tri_uv].astype(np.float64)                     # (T, 3, 2)
    uv[..., 0] -= TILES.get(material, np.floor(uv[..., 0].min()))
    px = uv * size                                                 # continuous texel coords, row = v
    ids = np.full((size, size), -1, np.int32)
    pts = np.round((px - 0.5) * 16).astype(np.int32)               # OpenCV: integer = pixel centre; 4 fraction bits
    for t, poly in enumerate(pts):
        cv2.fillConvexPoly(ids, poly, int(t), lineType=cv2.LINE_8, shift=4)
    ids = _grow_ids(ids, 2)                                        # cover seam texels too
    texels = np.flatnonzero(ids.reshape(-1) >= 0)
    tri = ids.reshape(-1)[texels]
    row, col = np.divmod(texels, size)
    px_x = np.ascontiguousarray(px[..., 0].T, np.float32)         # (3, T): 1-D gathers are fast
    px_y = np.ascontiguousarray(px[..., 1].T, np.float32)
    ax, ay = px_x[0][tri], px_y[0][tri]
    v0x, v0y = px_x[1][tri] - ax, px_y[1][tri] - ay
    v1x, v1y = px_x[2][tri] - ax, px_y[2][tri] - ay
    v2x, v2y = col.astype(np.float32) + 0.5 - ax, row.astype(np.float32) + 0.5 - ay
    den = v0x * v1y - v1x * v0y
    den[np.abs(den) < 1e-12] = 1e-12
    w1 = (v2x * v1y - v1x * v2y) / den
    w2 = (v0x * v2y - v2x * v0y) / den
    bary = np.stack([1 - w1 - w2, w1, w2])                          # (3, K)
    np.clip(bary, 0.0, None, out=bary)          # clamp to the triangle: padding and edge texels
    bary /= bary.sum(0, keepdims=True)          # take the nearest surface point, never extrapolate
    raster = UVRaster(texels, np.ascontiguousarray(tri_v[tri].T.astype(np.int32)),
                      np.ascontiguousarray(bary, np.float32), size)
    _UV_RASTER_CACHE[key] = raster
    return raster


def _grow_ids(ids: np.ndarray, steps: int) -> np.ndarray:
    """Extend triangle ids into empty neighbours (texture padding against seam bleeding)."""
    out = ids.astype(np.float32)                             # exact below 2**24; dilate has no int32
    for _ in range(steps):
        grown = cv2.dilate(out, np.ones((3, 3), np.uint8))     # max id of the neighbourhood
        empty = out < 0
        out[empty] = grown[empty]
    return out.astype(np.int32)


def vertex_texture(model: "facemodel.FaceModel", material: str, values: np.ndarray, size: int) -> np.ndarray:
    """Per-vertex values (V, C) → float32 (size, size, C) over ``material``'s UV tile (uncovered
    texels: the material's median)."""
    r = uv_raster(model, material, size)
    values = np.asarray(values, np.float32)
    tex = np.empty((size * size, values.shape[1]), np.float32)
    tex[:] = np.median(values[model.material_vertices(material)], 0)
    tex[r.texels] = interpolate_rows(values, r)
    return tex.reshape(size, size, values.shape[1])


def interpolate_rows(values: np.ndarray, r: UVRaster) -> np.ndarray:
    """Barycentric interpolation of per-vertex rows (V, C) at every covered texel: (K, C)."""
    out = np.take(values, r.vertices[0], axis=0)
    out *= r.bary[0][:, None]
    for i in (1, 2):
        out += np.take(values, r.vertices[i], axis=0) * r.bary[i][:, None]
    return out


def bake_vertex_colours(model: "facemodel.FaceModel", material: str, colours: np.ndarray, size: int) -> np.ndarray:
    """Per-vertex colours (V, 3) in [0, 1] → uint8 texture of ``material``'s UV tile."""
    return (np.clip(vertex_texture(model, material, colours, size), 0, 1) * 255 + 0.5).astype(np.uint8)


def interpolate(values: np.ndarray, r: UVRaster) -> np.ndarray:
    """Barycentric interpolation of per-vertex values (V,) at every covered texel (K,)."""
    out = np.take(values, r.vertices[0])
    out *= r.bary[0]
    for i in (1, 2):
        term = np.take(values, r.vertices[i])
        term *= r.bary[i]
        out += term
    return out


def sample(image: np.ndarray, xy: np.ndarray) -> np.ndarray:
    """Bilinear photo colours (or a single-channel map's values) at continuous positions (K, 2) →
    (K, 3) (or (K,)) float32."""
    k = len(xy)
    if k == 0:
        return np.zeros((0,) + image.shape[2:], np.float32)
    cols = 1024
    rows = -(-k // cols)
    maps = np.zeros((rows * cols, 2), np.float32)
    maps[:k] = xy - 0.5                                       # continuous → OpenCV pixel-centre index
    maps = maps.reshape(rows, cols, 2)
    out = cv2.remap(image, maps[..., 0], maps[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    channels = image.shape[2:]
    return out.reshape((-1,) + channels)[:k].astype(np.float32)


def texture_for_file(texture: np.ndarray) -> np.ndarray:
    """Blender pixel order → top-first RGB for writing with OpenCV/PIL (after RGB→BGR)."""
    return np.ascontiguousarray(texture[::-1])
