"""Projecting the photo onto the reconstructed head's UV atlas (numpy + OpenCV, no bpy).

ICT-FaceKit lays its UVs out in tiles: u ∈ [0, 1] is the face (M_Face), u ∈ [1, 2] the back
of the head, neck and ears (M_BackHead); both tiles are left/right symmetric. Per tile:

1. texel → surface: the tile's triangles are rasterised once in UV space (:mod:`runtime.uv`: triangle
   id per texel, cached per model and size; it does not depend on the photo) and every texel gets
   barycentric coordinates;
2. surface → photo: vertices are posed and projected with the predicted camera; texels
   interpolate their photo position and sample the photo (``cv2.remap``, bilinear);
3. visibility: a vertex counts as seen when it faces the camera and passes a z-buffer test
   (minimum depth of all surface vertices splatted into a coarse image grid, eroded to close
   gaps); texels blend with a weight that fades out at grazing angles, times the *skin trust*
   (``completion``): 1 on the core face, elsewhere the likelihood that the photo shows skin there.
   With *Remove lighting*, each photo is first divided by its shading: SH lighting fitted to its
   own face pixels (``facemodel.lighting_fit``, the network's lighting as prior), relative to the
   face's mean so the exposure stays;
4. filling: untrusted texels take the mirrored texel (u → 1 − u within the tile) when that one
   was trusted, the rest the skin fill (``completion.skin_fill``: the fitted albedo matched to the
   photo's skin, corrected towards the photo nearby), with a soft seam;
5. the eyes: textures coloured by radius, the iris in the photo's iris colour (:mod:`runtime.eyes`).

Arrays are in Blender pixel order: row 0 is v = 0 (the bottom of the image).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import cv2
import numpy as np

from . import completion, eyes, uv
from .fm import facemodel

log = logging.getLogger(__name__)

TILE_SCALE = {"M_Face": 1.0, "M_BackHead": 0.5}  # the back of the head is mostly filled: half size
SEAM = (0.05, 0.6)                         # photo/mirror weight over which the texture turns from fill to photo
SEAM_BLEND, SEAM_PRIOR = 1 / 128, 0.1      # the fill takes the photo's colour difference this far (× tile)
ZBUFFER_CELLS = 160                        # z-buffer grid cells across the face's projected width
DEPTH_TOLERANCE_CM = 0.7
FACING_START, FACING_FULL = 0.05, 0.35     # cos(angle to the camera) where the weight rises 0 → 1
SHADING_FLOOR = 0.25                       # relative shading below this is not divided out further
LUMINANCE = np.array([0.2126, 0.7152, 0.0722], np.float32)   # Rec. 709 / sRGB primaries


def facing_cosine(vertices_cam: np.ndarray, normals: np.ndarray) -> np.ndarray:
    """(V,) cosine between each vertex normal and the direction to the camera."""
    view = -vertices_cam / np.linalg.norm(vertices_cam, axis=1, keepdims=True)
    return (normals * view).sum(1)


def vertex_visibility(vertices_cam: np.ndarray, normals: np.ndarray, pixels: np.ndarray,
                      occluders: np.ndarray) -> np.ndarray:
    """(V,) weight in [0, 1]: facing the camera × passing the z-buffer test."""
    facing = np.clip((facing_cosine(vertices_cam, normals) - FACING_START) / (FACING_FULL - FACING_START), 0.0, 1.0)
    depth = -vertices_cam[:, 2]
    occ = pixels[occluders]
    lo, hi = occ.min(0), occ.max(0)
    cell = max(float(hi[0] - lo[0]), 1e-6) / ZBUFFER_CELLS
    grid = np.floor((pixels - lo) / cell).astype(np.int64)
    shape = (int((hi[1] - lo[1]) / cell) + 3, ZBUFFER_CELLS + 3)
    zbuf = np.full(shape, np.inf, np.float32)
    gi = np.clip(grid[occluders], 0, np.array(shape[::-1]) - 1)
    np.minimum.at(zbuf, (gi[:, 1], gi[:, 0]), depth[occluders].astype(np.float32))
    zbuf = cv2.erode(zbuf, np.ones((3, 3), np.uint8))          # min over neighbours closes gaps
    g = np.clip(grid, 0, np.array(shape[::-1]) - 1)
    visible = depth <= zbuf[g[:, 1], g[:, 0]] + DEPTH_TOLERANCE_CM
    return (facing * visible).astype(np.float32)


@dataclass
class BakedTexture:
    """Per material: an RGB texture (Blender pixel order) and the share that saw the photo."""

    images: dict[str, np.ndarray]       # material → uint8 (S, S, 3), row 0 = bottom
    coverage: dict[str, float]          # material → fraction of covered texels seen in the photo
    iris_color: np.ndarray              # (3,) float sRGB in [0, 1]


def posed_geometry(model: "facemodel.FaceModel", params: "facemodel.FaceParams", width: int, height: int
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Camera-space vertices, unit normals and photo pixels of the reconstructed face."""
    p = params.numpy()
    cam = facemodel.formation.mesh_camera_space(model.arrays, p)   # with the corrective field
    normals = facemodel.geometry.vertex_normals(cam, model.triangles, model.vertex_faces)
    pix = facemodel.camera.project(cam, np.asarray(p.camera, np.float32), width, height)
    return cam, normals, pix


@dataclass
class Projection:
    """One photo projected into the face/head tiles, before hole filling (what views blend)."""

    colours: dict[str, np.ndarray]      # material → float32 (T·T, 3) photo colour per texel (row 0 = v 0)
    weights: dict[str, np.ndarray]      # material → float32 (T·T,) visibility weight in [0, 1]
    sizes: dict[str, int]               # material → tile side T
    vertex_weight: np.ndarray           # (V,) per-vertex visibility in the photo the iris colour comes from
    pixels: np.ndarray                  # (V, 2) that photo's pixel of every vertex
    image: np.ndarray                   # that photo (uint8 RGB)
    vertex_colours: np.ndarray | None = None   # (V, 3) float sRGB 0–255 photo colour of every vertex
    vertex_trust: np.ndarray | None = None     # (V,) visibility × skin trust (``completion.photo_trust``)
    vertex_skin: np.ndarray | None = None      # (V,) visibility × skin likelihood, the core's brows and hair too
    albedo: np.ndarray | None = None           # (7,) albedo parameters the fill starts from
    skin_rgb: np.ndarray | None = None         # (3,) sRGB 0–255 the photo's typical skin (reliable, trusted)

    def eye_visibility(self, model: "facemodel.FaceModel") -> float:
        """How well this photo sees the irises: summed visibility of the iris vertices."""
        return float(self.vertex_weight[model.material_vertices("M_IrisLeft", "M_IrisRight")].sum())


def photo_lighting(model: "facemodel.FaceModel", params: "facemodel.FaceParams", image: np.ndarray,
                   normals: np.ndarray, pixels: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """(9, 3) SH lighting fitted to the photo's own pixels of the face vertices it sees well
    (``facemodel.lighting_fit``; the network's lighting as the prior): the network learned its
    lighting on renders and under-states a real photo's side light."""
    h, w = image.shape[:2]
    seen = np.flatnonzero(model.region_masks["narrow_face"] & (weight > 0.5) & (pixels[:, 0] >= 0)
                          & (pixels[:, 0] < w) & (pixels[:, 1] >= 0) & (pixels[:, 1] < h))
    colour = uv.sample(image, np.ascontiguousarray(pixels[seen], np.float32)) * (1.0 / 255.0)
    return facemodel.lighting_fit.fit_face_lighting(model.arrays, params, seen, normals[seen],
                                                    facemodel.lighting.srgb_decode(colour))


def relative_shading(model: "facemodel.FaceModel", sh: np.ndarray, normals: np.ndarray,
                     weight: np.ndarray) -> np.ndarray:
    """(V,) the luminance of every vertex's SH shading, divided by its mean over the face vertices
    the photo sees, floored at ``SHADING_FLOOR``.

    Dividing a photo by it removes the light's direction but keeps the photo's exposure and colour:
    neither the absolute albedo (light strength × skin brightness) nor the light's colour (against
    the skin's) is knowable from one photo, and a texture with the photo's brightness and skin tone
    is what an artist expects. The floor keeps deep shadow, where the photo holds little but noise,
    from being blown up."""
    shade = facemodel.lighting.shading(normals, np.asarray(sh, np.float32).reshape(9, 3)) @ LUMINANCE
    seen = model.region_masks["face"] & (weight > 0.5)
    mean = float(shade[seen].mean()) if seen.any() else 0.0
    if not mean > 0:
        return np.ones(len(shade), np.float32)
    return np.maximum(shade / mean, SHADING_FLOOR).astype(np.float32)


def _remove_shading(sample: np.ndarray, shade: np.ndarray) -> np.ndarray:
    """sRGB 0–255 colours (K, 3) ÷ relative shading (K,), in linear light."""
    lin = facemodel.lighting.srgb_decode(sample * (1.0 / 255.0)) / shade[:, None]
    return (facemodel.lighting.srgb_encode(lin) * 255.0).astype(np.float32)


def project_photo(model: "facemodel.FaceModel", params: "facemodel.FaceParams", image: np.ndarray,
                  size: int = 1024, remove_lighting: bool = False) -> Projection:
    """Colour and visibility weight of every face/head texel as seen in ``image`` (no filling).

    ``remove_lighting`` divides the photo by its lighting (``photo_lighting``, ``relative_shading``),
    so the texture can be lit again in Blender; several photos, each under its own light, then agree."""
    h, w = image.shape[:2]
    cam, normals, pix = posed_geometry(model, params, w, h)
    masks = model.region_masks
    occluders = np.flatnonzero(masks["render_visible"] & ~masks["lashes"])
    weight = vertex_visibility(cam, normals, pix, occluders)
    inside = (pix[:, 0] >= 0) & (pix[:, 0] < w) & (pix[:, 1] >= 0) & (pix[:, 1] < h)
    weight *= inside
    shade = (relative_shading(model, photo_lighting(model, params, image, normals, pix, weight), normals, weight)
             if remove_lighting else None)
    vertex_colours = uv.sample(image, np.ascontiguousarray(pix, np.float32))
    if shade is not None:
        vertex_colours = _remove_shading(vertex_colours, shade)
    roughness_map = completion.photo_roughness(image, float(np.ptp(pix[model.landmarks68], 0).max()))
    vertex_roughness = uv.sample(roughness_map, np.ascontiguousarray(pix, np.float32))
    reliable = completion.reliable_skin(model) & (weight > 0.6)
    skin = completion.fit_skin_colour(vertex_colours[reliable], _albedo_srgb(model, params), vertex_roughness[reliable])
    prior = completion.prior(model, facing_cosine(cam, normals))
    vertex_likelihood = skin.likelihood(vertex_colours, vertex_roughness)
    vertex_trust = completion.photo_trust(weight, vertex_likelihood, prior)
    pix_c = np.ascontiguousarray(pix, np.float32).view(np.complex64).reshape(-1)  # x + iy: one gather for both
    colours, weights, sizes = {}, {}, {}
    for material in uv.TILES:
        tile_size = max(16, int(round(size * TILE_SCALE[material])))
        r = uv.uv_raster(model, material, tile_size)
        xy = uv.interpolate(pix_c, r).view(np.float32).reshape(-1, 2)            # (K, 2)
        sample = uv.sample(image, xy)
        if shade is not None:
            sample = _remove_shading(sample, uv.interpolate(shade, r))
        likelihood = _tile_likelihood(skin, sample, uv.sample(roughness_map, xy), r)[r.texels]
        wt = completion.photo_trust(np.clip(uv.interpolate(weight, r), 0.0, 1.0), likelihood,
                                    uv.interpolate_rows(prior, r))
        colour = np.zeros((tile_size * tile_size, 3), np.float32)
        wmap = np.zeros(tile_size * tile_size, np.float32)
        colour[r.texels] = sample
        wmap[r.texels] = wt
        # soften per-vertex visibility flips (z-buffer noise) so seen/mirrored texels blend, not speckle
        covered = np.zeros(tile_size * tile_size, np.float32)
        covered[r.texels] = 1.0
        sigma = max(0.5, tile_size / 512)
        wmap = (cv2.GaussianBlur(wmap.reshape(tile_size, tile_size), (0, 0), sigma).reshape(-1)
                * covered * (wmap > 0.02))
        colours[material], weights[material], sizes[material] = colour, wmap, tile_size
    seen_skin = completion.reliable_skin(model) & (vertex_trust > 0.6)
    skin_rgb = np.median(vertex_colours[seen_skin], 0) if seen_skin.sum() >= completion.MIN_SKIN_SAMPLES else None
    return Projection(colours, weights, sizes, weight, pix, image, vertex_colours, vertex_trust,
                      weight * vertex_likelihood, np.asarray(params.albedo, np.float32), skin_rgb)


def _tile_likelihood(skin: "completion.SkinColour", sample: np.ndarray, roughness: np.ndarray, r: uv.UVRaster
                     ) -> np.ndarray:
    """(T·T,) skin likelihood of a tile's photo colours, cleaned of specks (``completion.clean_likelihood``);
    worked out at half the tile's size (a quarter of the colour conversions), then scaled up."""
    t = r.size
    half = (max(8, t // 2),) * 2
    colour = np.zeros((t * t, 4), np.float32)
    colour[r.texels, :3] = sample
    colour[r.texels, 3] = roughness
    covered = np.zeros(t * t, np.float32)
    covered[r.texels] = 1.0
    small = cv2.resize(colour.reshape(t, t, 4), half, interpolation=cv2.INTER_AREA).reshape(-1, 4)
    cover = cv2.resize(covered.reshape(t, t), half, interpolation=cv2.INTER_AREA).reshape(-1)
    small /= np.maximum(cover, 1e-3)[:, None]               # coverage-normalised: no dark island rims
    lik = np.zeros(len(small), np.float32)
    ok = cover > 0
    lik[ok] = skin.likelihood(small[ok, :3], small[ok, 3])
    lik = completion.clean_likelihood(lik.reshape(half))
    return cv2.resize(lik, (t, t), interpolation=cv2.INTER_LINEAR).reshape(-1)


def _albedo_srgb(model: "facemodel.FaceModel", params: "facemodel.FaceParams") -> np.ndarray:
    """(3,) sRGB 0–255 of the fitted albedo's typical skin: the skin model when the photo shows none."""
    arrays = model.arrays
    lin = facemodel.albedo.vertex_albedo(arrays.albedo_base, arrays.albedo_axes, np.asarray(params.albedo, np.float32))
    return facemodel.lighting.srgb_encode(np.median(lin[completion.reliable_skin(model)], 0)) * 255.0


def blend_projections(model: "facemodel.FaceModel", projections: list[Projection]) -> Projection:
    """Visibility-weighted blend: colour Σ wᵢcᵢ / Σ wᵢ, weight min(Σ wᵢ, 1) — each texel comes
    mostly from the photos that see it frontally. The per-vertex fields (iris colour) are those of
    the photo that sees the eyes best. One projection is returned unchanged."""
    if not projections:
        raise ValueError("no projections to blend")
    if len(projections) == 1:
        return projections[0]
    first = projections[0]
    colours, weights = {}, {}
    for material in first.colours:
        if any(p.sizes[material] != first.sizes[material] for p in projections):
            raise ValueError("projections were made with different texture sizes")
        total = np.zeros_like(first.weights[material])
        acc = np.zeros_like(first.colours[material])
        for p in projections:
            total += p.weights[material]
            acc += p.colours[material] * p.weights[material][:, None]
        colours[material] = np.divide(acc, total[:, None], out=np.zeros_like(acc), where=total[:, None] > 0)
        weights[material] = np.minimum(total, 1.0)
    seen_eyes = max(projections, key=lambda p: p.eye_visibility(model))     # first of equals
    trust = np.sum([p.vertex_trust for p in projections], 0)
    acc = np.sum([p.vertex_colours * p.vertex_trust[:, None] for p in projections], 0)
    vertex_colours = np.divide(acc, trust[:, None], out=np.zeros_like(acc), where=trust[:, None] > 0)
    skin = np.minimum(np.sum([p.vertex_skin for p in projections], 0), 1.0)
    return Projection(colours, weights, dict(first.sizes), seen_eyes.vertex_weight, seen_eyes.pixels,
                      seen_eyes.image, vertex_colours, np.minimum(trust, 1.0), skin, seen_eyes.albedo,
                      seen_eyes.skin_rgb)


def bake_projection(model: "facemodel.FaceModel", projection: Projection) -> BakedTexture:
    """Fill the holes of a (blended) projection per tile (``completion.skin_fill``) and add the eye
    textures."""
    images, coverage = {}, {}
    fill = completion.skin_fill(model, projection.albedo, projection.vertex_colours, projection.vertex_trust,
                                projection.vertex_skin)
    for material, colour in projection.colours.items():
        t = projection.sizes[material]
        weight = projection.weights[material].reshape(t, t)
        fill_tex = uv.vertex_texture(model, material, fill, t)
        images[material], coverage[material] = _fill(colour.reshape(t, t, 3), weight, fill_tex)
    iris = eyes.iris_colour(model, projection.image, projection.pixels, projection.vertex_weight, projection.albedo,
                       projection.skin_rgb)
    colours = eyes.eye_colours(model, iris)
    for material in eyes.EYE_MATERIALS:
        images[material] = uv.bake_vertex_colours(model, material, colours, eyes.EYE_TEXTURE_SIZE)
    return BakedTexture(images, coverage, iris)


def bake_texture(model: "facemodel.FaceModel", params: "facemodel.FaceParams", image: np.ndarray,
                 size: int = 1024, remove_lighting: bool = False) -> BakedTexture:
    """Project ``image`` (uint8 RGB, the photo ``params`` refers to) into the face/head tiles."""
    return bake_projection(model, project_photo(model, params, image, size, remove_lighting))


def bake_texture_views(model: "facemodel.FaceModel", views: list[tuple["facemodel.FaceParams", np.ndarray]],
                       size: int = 1024, remove_lighting: bool = False) -> BakedTexture:
    """Several photos of one head (``(params, image)`` each, one shared identity) → one texture:
    projections blended by visibility, holes filled once; the iris colour comes from the photo
    that sees the eyes best."""
    if not views:
        raise ValueError("no views to bake")
    projections = [project_photo(model, params, image, size, remove_lighting) for params, image in views]
    return bake_projection(model, blend_projections(model, projections))


def _fill(colour: np.ndarray, weight: np.ndarray, fill: np.ndarray) -> tuple[np.ndarray, float]:
    """Mirror, then the skin fill where neither side was trusted; returns uint8 texture and the share
    of texels the photo itself covers (weight > 0.5)."""
    mirror_c = np.ascontiguousarray(colour[:, ::-1])
    mirror_w = np.ascontiguousarray(weight[:, ::-1])
    coef_m = (1.0 - weight) * mirror_w
    total = weight + coef_m
    inv = 1.0 / np.maximum(total, 1e-3)
    out = colour * (weight * inv)[..., None] + mirror_c * (coef_m * inv)[..., None]
    a = np.clip((total - SEAM[0]) / (SEAM[1] - SEAM[0]), 0.0, 1.0)
    a = (a * a * (3.0 - 2.0 * a))[..., None]               # smoothstep: a soft seam, 0 where nothing was seen
    size = colour.shape[0]                                   # the photo's local colour, carried a little way
    small = (max(8, size // 4),) * 2                         # into the fill (no step at the seam): smooth, so
    sigma = max(1.0, small[0] * SEAM_BLEND)                  # worked out at a quarter of the size
    near = cv2.GaussianBlur(cv2.resize((out - fill) * a, small, interpolation=cv2.INTER_AREA), (0, 0), sigma)
    near /= cv2.GaussianBlur(cv2.resize(a[..., 0], small, interpolation=cv2.INTER_AREA), (0, 0), sigma)[..., None] \
        + SEAM_PRIOR
    fill = fill + cv2.resize(near, (size, size), interpolation=cv2.INTER_LINEAR)
    out = fill + (out - fill) * a
    seen = float(np.count_nonzero(weight > 0.5)) / weight.size
    return cv2.convertScaleAbs(out), seen


