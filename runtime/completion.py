"""Texture completion: where the photo can be trusted on the head, and what to paint elsewhere
(numpy + OpenCV, no bpy).

A photo sees the front of the face; projected naively it also paints hair, hats, glasses and the
background onto the skull, temples and ears, the collar onto the neck and — stretched — the eye's
lash line over the eyelid that a blink uncovers. Here

1. **Trust** of a photo colour on a surface point = its visibility (facing and z-buffer,
   ``texture.vertex_visibility``) × either 1 in the *core face* — inside the jaw line and up to a
   little above the brows, where brows, lips and eyes are legitimately not skin-coloured — or, outside
   it (forehead above, temples, ears, neck, scalp, and the eyelid band a blink uncovers), the
   likelihood that the colour is skin: a Gaussian in CIELAB fitted to the photo's own reliable skin
   (cheeks, nose, chin), :class:`SkinColour`.
2. **Fill** where trust is low: the fitted albedo (``facemodel.albedo``, the network's skin-tone
   parameters) scaled per channel to the photo's skin (medians over reliable skin), times a smooth
   correction — the log ratio photo/fill on trusted vertices diffused over the mesh (so it crosses
   UV seams) and fading to 1 a few centimetres away — so the fill meets the photo without a seam and
   the back of the head gets the face's tone instead of a dark smear.

Arrays of colours are float sRGB 0–255 per vertex unless said otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np

from .fm import facemodel

CORE_BROW_LIFT_CM = 1.2            # the core face reaches this far above the brow landmarks
CORE_FALLOFF_CM = 0.8              # … and fades out over this distance inside its outline (at the jaw's
                                   # edge the skin test decides: neck, collar or background behind it)
LID_MOTION_CM = (0.15, 0.4)        # blink displacement over which the eyelid leaves the core (0 → 1)
SKIN_DISTANCE = (2.0, 3.5)         # Mahalanobis distance in Lab: full skin likelihood → none
SKIN_STD_FLOOR = np.array([4.0, 2.5, 2.5])   # Lab std never tighter than this (a flat, evenly lit face)
LIGHTNESS_SCALE = 1.6              # shading varies lightness more than chroma: wider in L
MIN_SKIN_SAMPLES = 40
ROUGHNESS_WINDOW = 0.03            # local-std window, as a share of the face's size in the photo
ROUGHNESS = (1.3, 2.2)             # × the skin's own roughness: full likelihood → none
ROUGHNESS_FLOOR = 2.0              # a very clean photo's skin std is not taken below this
DIFFUSION_STEPS = 60               # mesh smoothing steps for the fill's correction (≈ 3–5 cm reach)
DIFFUSION_PRIOR = 0.15             # weight of "no correction" in the fill's correction: where the diffused
                                   # trust is low (far from the photo, or a few stray pixels) it fades
SKIN_MATERIALS = ("M_Face", "M_BackHead")
SKIN_REACH_CM = (3.0, 6.0)         # skin-coloured photo pixels believed up to here from the core face
GRAZING = (0.3, 0.6)               # cos(view angle) over which a skin-coloured pixel outside the core counts


def to_lab(rgb255: np.ndarray) -> np.ndarray:
    """(K, 3) sRGB 0–255 → (K, 3) CIELAB (L 0–100)."""
    rgb = np.ascontiguousarray(np.asarray(rgb255, np.float32).reshape(-1, 1, 3) * (1.0 / 255.0))
    return cv2.cvtColor(np.clip(rgb, 0.0, 1.0), cv2.COLOR_RGB2Lab).reshape(-1, 3)


@dataclass
class SkinColour:
    """The photo's skin: a Gaussian of its colour in CIELAB (L stretched by ``LIGHTNESS_SCALE``) and
    how smooth it is (local luminance standard deviation, :func:`photo_roughness`): hair of a
    skin-like colour (blond on fair skin, dark on dark skin) differs from skin by its strands."""

    mean: np.ndarray               # (3,) Lab
    inv_cov: np.ndarray            # (3, 3)
    roughness: float = 4.0         # typical local std of the photo's skin (sRGB 0–255 luminance)

    def distance(self, rgb255: np.ndarray) -> np.ndarray:
        d = to_lab(rgb255) - self.mean
        d2 = (d @ self.inv_cov) * d
        return np.sqrt(np.maximum(d2.sum(1), 0.0))

    def likelihood(self, rgb255: np.ndarray, roughness: np.ndarray | None = None) -> np.ndarray:
        """(K,) in [0, 1]: 1 within ``SKIN_DISTANCE[0]`` standard deviations, 0 beyond ``[1]``; times
        1 up to ``ROUGHNESS[0]`` × the skin's own roughness, 0 from ``[1]`` × it."""
        lo, hi = SKIN_DISTANCE
        out = np.clip((hi - self.distance(rgb255)) / (hi - lo), 0.0, 1.0)
        if roughness is not None:
            r_lo, r_hi = (f * max(self.roughness, ROUGHNESS_FLOOR) for f in ROUGHNESS)
            out *= np.clip((r_hi - roughness) / (r_hi - r_lo), 0.0, 1.0)
        return out.astype(np.float32)


def photo_roughness(image: np.ndarray, face_px: float) -> np.ndarray:
    """(H, W) float32 local standard deviation of the photo's luminance over a window of
    ``ROUGHNESS_WINDOW`` × the face's size in pixels: low on skin, high on hair, fabric and edges."""
    grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).astype(np.float32)
    k = max(3, int(round(face_px * ROUGHNESS_WINDOW)))
    mean = cv2.blur(grey, (k, k))
    return np.sqrt(np.maximum(cv2.blur(grey * grey, (k, k)) - mean * mean, 0.0))


def fit_skin_colour(samples_rgb255: np.ndarray, fallback_rgb255: np.ndarray,
                    roughness: np.ndarray | None = None) -> SkinColour:
    """Robust Gaussian of skin samples (two trimming rounds at the 80th percentile of distance) and
    their median roughness; with fewer than ``MIN_SKIN_SAMPLES`` a broad one around ``fallback_rgb255``."""
    floor = np.diag(SKIN_STD_FLOOR ** 2)
    scale = np.diag([1.0 / LIGHTNESS_SCALE, 1.0, 1.0])
    if len(samples_rgb255) < MIN_SKIN_SAMPLES:
        mean = to_lab(np.asarray(fallback_rgb255, np.float32).reshape(1, 3))[0]
        return SkinColour(mean, np.linalg.inv(floor * 4.0))
    typical = float(np.median(roughness)) if roughness is not None and len(roughness) else 4.0
    lab = to_lab(samples_rgb255).astype(np.float64)
    keep = np.ones(len(lab), bool)
    for _ in range(2):
        mean = np.median(lab[keep], 0)
        cov = np.cov((lab[keep] - mean).T) + floor
        d = lab - mean
        dist = np.einsum("ki,ij,kj->k", d, np.linalg.inv(cov), d)
        keep = dist <= np.percentile(dist, 80)
    mean = np.median(lab[keep], 0)
    cov = np.cov((lab[keep] - mean).T) + floor
    cov = np.linalg.inv(scale) @ cov @ np.linalg.inv(scale)   # widen L
    return SkinColour(mean.astype(np.float32), np.linalg.inv(cov).astype(np.float32), typical)


@lru_cache(maxsize=4)
def _core_and_skin(model: "facemodel.FaceModel") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    albedo = facemodel.albedo
    v = model.neutral.astype(np.float64)
    lm = v[model.landmarks68]
    lift = CORE_BROW_LIFT_CM * np.array([0.25, 0.6, 1, 1, 1, 1, 1, 1, 0.6, 0.25])   # less at the brows' outer
    brows = lm[26:16:-1, :2] + lift[:, None] * np.array([0.0, 1.0])              # ends: temples' hair
    outline = np.concatenate([lm[2:15, :2], brows])   # jaw from below the cheekbones: temples are not core
    xy = v[:, :2]
    inside = albedo._inside(xy, outline)
    depth = np.where(inside, albedo._segment_distance(xy, outline, closed=True), 0.0)
    front = v[:, 2] > lm[:, 2].min() - 2.0
    skin = np.zeros(len(v), bool)      # the outer surface: face, head and neck (not the mouth and eye sockets)
    skin[np.concatenate([model.vertex_range("face"), model.vertex_range("head_neck")])] = True
    core = np.clip(depth / CORE_FALLOFF_CM, 0.0, 1.0) * front * skin
    blink = [model.expression_names.index(n) for n in model.expression_names if n.startswith("eyeBlink")]
    motion = np.linalg.norm(model.expression_basis[blink], axis=-1).max(0) if blink else np.zeros(len(v))
    lo, hi = LID_MOTION_CM
    core *= 1.0 - np.clip((motion - lo) / (hi - lo), 0.0, 1.0)
    axes = model.arrays.albedo_axes            # the albedo's regional tints: weight × a fixed direction
    names = facemodel.ALBEDO_NAMES

    def region(name: str, direction: np.ndarray) -> np.ndarray:
        return np.abs(axes[names.index(name)]).max(1) / np.abs(direction).max()

    reliable = ((core >= 0.99) & (region("lips", albedo.LIP_AXIS) < 0.1) & (region("brows", albedo.BROW_AXIS) < 0.1)
                & (region("eye_region", albedo.EYE_REGION_AXIS) < 0.3) & model.region_masks["narrow_face"])
    centres = v[core >= 0.5][::4]
    near = np.full(len(v), np.inf)
    pts = v[skin]                      # distance to the core face: |a|² + |b|² − 2ab, one matrix product
    d2 = (pts ** 2).sum(1)[:, None] + (centres ** 2).sum(1)[None] - 2.0 * pts @ centres.T
    near[skin] = np.sqrt(np.maximum(d2.min(1), 0.0))
    lo, hi = SKIN_REACH_CM
    reach = np.clip((hi - near) / (hi - lo), 0.0, 1.0) * skin
    return core.astype(np.float32), reliable, reach.astype(np.float32)


def core_face(model: "facemodel.FaceModel") -> np.ndarray:
    """(V,) in [0, 1]: 1 on the inner face (jaw line to just above the brows, the eyelid band a blink
    uncovers excepted), fading outside; 0 off the skin."""
    return _core_and_skin(model)[0]


def skin_reach(model: "facemodel.FaceModel") -> np.ndarray:
    """(V,) in [0, 1]: how far outside the core face a skin-coloured photo pixel is still believed —
    1 within ``SKIN_REACH_CM[0]`` of it (forehead, temples, ears, upper neck), 0 beyond ``[1]`` (the
    crown and back of the head, where a skin-coloured pixel is more likely a blond strand or a wall)."""
    return _core_and_skin(model)[2]


def prior(model: "facemodel.FaceModel", facing: np.ndarray) -> np.ndarray:
    """(V, 2): the core face, and how much a skin-coloured pixel counts outside it — the skin reach ×
    a view-angle falloff (``GRAZING``: from ~70° on, a photo's colour there is stretched, shaded and
    mixed with what lies behind the silhouette). ``facing``: (V,) cosine of normal and view direction.
    Interpolated into texels together."""
    lo, hi = GRAZING
    graze = np.clip((facing - lo) / (hi - lo), 0.0, 1.0)
    return np.stack([core_face(model), skin_reach(model) * graze * graze * (3.0 - 2.0 * graze)], 1)


def reliable_skin(model: "facemodel.FaceModel") -> np.ndarray:
    """(V,) bool: inner-face vertices that are skin on nearly everyone (cheeks, nose, chin, forehead
    centre): not lips, brows or the eye region."""
    return _core_and_skin(model)[1]


def photo_trust(visibility: np.ndarray, likelihood: np.ndarray, prior: np.ndarray) -> np.ndarray:
    """Visibility × (core + (1 − core) × outside × skin likelihood), per vertex or texel; ``prior``
    (K, 2) holds core and outside (:func:`prior`)."""
    core, outside = prior[:, 0], prior[:, 1]
    return (visibility * (core + (1.0 - core) * outside * likelihood)).astype(np.float32)


def clean_likelihood(likelihood: np.ndarray) -> np.ndarray:
    """A tile's (T, T) skin likelihood without specks and thin strands (hair, frames): eroded, then
    blurred, both about T/200 texels."""
    t = likelihood.shape[0]
    k = max(3, (t // 200) | 1)
    out = cv2.erode(likelihood, np.ones((k, k), np.uint8))
    return cv2.GaussianBlur(out, (0, 0), max(0.5, t / 400))


@lru_cache(maxsize=4)
def _skin_neighbours(model: "facemodel.FaceModel") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The skin polygons' vertices, their neighbours as a padded table of local indices (a vertex's own
    index fills the gaps) and each row's neighbour count."""
    sel = np.isin(model.face_material, [model.material_names.index(m) for m in SKIN_MATERIALS])
    faces = model.faces[sel]
    nxt = np.where(np.roll(faces, -1, axis=1) >= 0, np.roll(faces, -1, axis=1), faces[:, :1])
    ok = faces >= 0
    a, b = faces[ok], nxt[ok]
    pairs = np.unique(np.concatenate([np.stack([a, b], 1), np.stack([b, a], 1)]), axis=0)
    pairs = pairs[pairs[:, 0] != pairs[:, 1]]
    verts, local = np.unique(pairs, return_inverse=True)
    local = local.reshape(-1, 2)
    counts = np.bincount(local[:, 0], minlength=len(verts))
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    col = np.arange(len(local)) - starts[local[:, 0]]
    table = np.repeat(np.arange(len(verts))[:, None], counts.max(), axis=1)
    table[local[:, 0], col] = local[:, 1]
    return verts, table, counts.astype(np.float32)


def diffuse(model: "facemodel.FaceModel", values: np.ndarray, weights: np.ndarray,
            steps: int = DIFFUSION_STEPS) -> tuple[np.ndarray, np.ndarray]:
    """Normalised diffusion over the skin mesh: (w·x, w) smoothed ``steps`` times (each skin vertex
    half itself, half its neighbours' mean). Returns the smoothed weighted sum (V, C) and weight (V,);
    vertices off the skin keep their own."""
    verts, table, counts = _skin_neighbours(model)
    state = np.empty((len(verts), values.shape[1] + 1), np.float32)
    state[:, :-1] = values[verts] * weights[verts, None]
    state[:, -1] = weights[verts]
    pad = (table.shape[1] - counts)[:, None]               # padding entries point at the vertex itself
    inv = (0.5 / counts)[:, None]
    columns = [np.ascontiguousarray(table[:, k]) for k in range(table.shape[1])]
    for _ in range(steps):
        sums = np.take(state, columns[0], axis=0)          # np.take on rows: ~20× faster than state[table]
        for col in columns[1:]:
            sums += np.take(state, col, axis=0)
        sums -= pad * state
        state = 0.5 * state + sums * inv
    total = values * weights[:, None]
    weight = weights.astype(np.float32).copy()
    total[verts], weight[verts] = state[:, :-1], state[:, -1]
    return total, weight


def skin_fill(model: "facemodel.FaceModel", albedo_params: np.ndarray, colours: np.ndarray,
              trust: np.ndarray, skin: np.ndarray | None = None) -> np.ndarray:
    """(V, 3) sRGB 0–255 colour for every vertex where the photo is not trusted: the fitted albedo
    matched to the photo's skin, corrected towards the trusted photo colours nearby — only those that
    look like skin (``skin``: visibility × skin likelihood, the core's brows, hair and eyes excluded),
    so a fringe or a sideburn does not darken the fill beside it."""
    arrays = model.arrays
    albedo = facemodel.albedo.vertex_albedo(arrays.albedo_base, arrays.albedo_axes,
                                            np.asarray(albedo_params, np.float32))
    photo = facemodel.lighting.srgb_decode(np.asarray(colours, np.float32) * (1.0 / 255.0))
    reliable = reliable_skin(model) & (trust > 0.6)
    if reliable.sum() >= MIN_SKIN_SAMPLES:
        gain = np.median(photo[reliable], 0) / np.maximum(np.median(albedo[reliable], 0), 1e-4)
    else:
        gain = np.ones(3, np.float32)
    fill = albedo * gain
    log_ratio = np.log(np.maximum(photo, 1e-3)) - np.log(np.maximum(fill, 1e-3))
    source = trust if skin is None else np.minimum(trust, skin)
    w = np.where(source > 0.05, source, 0.0).astype(np.float32)
    total, weight = diffuse(model, log_ratio, w)
    correction = total / (weight + DIFFUSION_PRIOR)[:, None]   # little nearby trust → little correction
    fill = fill * np.exp(np.clip(correction, -2.0, 2.0))
    return facemodel.lighting.srgb_encode(fill) * 255.0
