"""The eyes' textures: a white sclera, the iris disc in the photo's iris colour, the pupil (numpy, no bpy).

The iris colour is read from the photo where the reconstruction's iris ring is seen (:func:`iris_colour`),
else the albedo model's ``iris`` parameter (:func:`albedo_iris_srgb`); the eye shells are coloured by radius
from the optical axis, as ``facemodel.albedo`` does for the renderer.
"""

from __future__ import annotations

import numpy as np

from . import completion, uv
from .fm import facemodel

EYE_MATERIALS = ("M_ScleraLeft", "M_IrisLeft", "M_ScleraRight", "M_IrisRight")

EYE_TEXTURE_SIZE = 256

SCLERA_RGB = np.array([0.86, 0.84, 0.80], np.float32)

PUPIL_RGB = np.array([0.03, 0.03, 0.03], np.float32)

LIMBAL_DARKENING = 0.45      # the iris' outer rim (limbal ring) is this much darker than its colour


def eye_colours(model: "facemodel.FaceModel", iris_rgb: np.ndarray) -> np.ndarray:
    """(V, 3) sRGB eye colours: white sclera, iris disc, pupil.

    Both eye shells are coloured by radius from the optical axis, as ``facemodel.albedo`` does for
    the renderer (``eye_disc_coordinates``).
    """
    idx, r, front = facemodel.albedo.eye_disc_coordinates(model)
    out = np.tile(SCLERA_RGB, (model.n_vertices, 1))
    t = np.clip((facemodel.albedo.IRIS_RADIUS - r) / 0.08, 0, 1)[:, None] * front[:, None]   # soft iris edge
    limbus = np.clip((r / facemodel.albedo.IRIS_RADIUS - 0.7) / 0.3, 0, 1)[:, None]        # darker rim
    iris = np.asarray(iris_rgb, np.float32) * (1.0 - LIMBAL_DARKENING * limbus)
    col = SCLERA_RGB * (1 - t) + iris * t
    p = np.clip((facemodel.albedo.PUPIL_RADIUS - r) / 0.04, 0, 1)[:, None] * front[:, None]
    out[idx] = col * (1 - p) + PUPIL_RGB * p
    return out

IRIS_RING = (1.4, 0.85)      # sampled between these × the pupil's and × the iris' radius: no pupil, no limbus

IRIS_MIN_SAMPLES = 8

IRIS_MAX_LIGHTNESS = 72.0    # a median lighter than this (Lab L) is sclera, glare or a lens: not an iris

IRIS_MIN_SKIN_DELTA_E = 15.0  # a median this close to the skin (CIE76) is an eyelid


def albedo_iris_srgb(albedo: np.ndarray) -> np.ndarray:
    """(3,) sRGB [0, 1] iris colour of the albedo model's ``iris`` parameter (brown … blue-grey)."""
    a = facemodel.albedo
    t = float(np.asarray(albedo, np.float32)[facemodel.ALBEDO_NAMES.index("iris")])
    log_mid = 0.5 * (np.log(a.IRIS_BROWN) + np.log(a.IRIS_BLUE_GREY))
    log_axis = 0.5 * (np.log(a.IRIS_BLUE_GREY) - np.log(a.IRIS_BROWN))
    return facemodel.lighting.srgb_encode(np.exp(log_mid + t * log_axis)).astype(np.float32)


def iris_colour(model: "facemodel.FaceModel", image: np.ndarray, pix: np.ndarray, weight: np.ndarray,
                albedo: np.ndarray | None = None, skin_rgb: np.ndarray | None = None) -> np.ndarray:
    """(3,) sRGB [0, 1]: the photo's iris colour — pixels under the visible iris ring of both eyes
    (the eye shells' vertices between pupil and limbus, ``facemodel.albedo.eye_disc_coordinates``),
    their darkest fifth (lashes, pupil, shadow) and brightest tenth (catch-lights) left out, median;
    the albedo's iris parameter instead when there are too few samples or the result is implausible:
    lighter than an iris (sclera, glare, a lens) or within ``IRIS_MIN_SKIN_DELTA_E`` of the photo's skin
    ``skin_rgb`` (0–255; a closed or squinting eye, or eyes the fit missed)."""
    idx, r, front = facemodel.albedo.eye_disc_coordinates(model)
    ring = front & (r > IRIS_RING[0] * facemodel.albedo.PUPIL_RADIUS) & (r < IRIS_RING[1] * facemodel.albedo.IRIS_RADIUS)
    idx = idx[ring]
    idx = idx[weight[idx] > 0.5]
    fallback = albedo_iris_srgb(albedo) if albedo is not None else np.array([0.25, 0.17, 0.11], np.float32)
    if len(idx) < IRIS_MIN_SAMPLES:
        return fallback
    colours = uv.sample(image, np.ascontiguousarray(pix[idx], np.float32))
    lightness = completion.to_lab(colours)[:, 0]
    lo, hi = np.percentile(lightness, [20, 90])
    keep = (lightness >= lo) & (lightness <= hi)
    colour = np.median(colours[keep] if keep.sum() >= IRIS_MIN_SAMPLES // 2 else colours, 0)
    lab = completion.to_lab(colour[None])[0]
    if lab[0] > IRIS_MAX_LIGHTNESS:
        return fallback
    if skin_rgb is not None and np.linalg.norm(lab - completion.to_lab(np.asarray(skin_rgb)[None])[0]) < IRIS_MIN_SKIN_DELTA_E:
        return fallback
    return (colour / 255.0).astype(np.float32)
