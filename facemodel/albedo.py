"""A small parametric reflectance model: skin tone axes plus regional tints.

Per-vertex linear-RGB albedo is ``exp(base + Σ_k p_k · axis_k)``: log space keeps every
colour positive and makes "darker" and "lighter" symmetric. Seven parameters
(``ALBEDO_NAMES``), with their prior ranges (``facemodel.priors``):

=============  ==============  ================================================================
parameter      prior           effect
=============  ==============  ================================================================
tone           U(−1, 1)        skin lightness from very dark (−1, ≈ Fitzpatrick VI) to very
                               light (+1, ≈ I): albedo (0.07, 0.042, 0.030) … (0.68, 0.47, 0.38)
undertone      N(0, 1)·0.6     + warm/olive (more green, less blue), − pink/cool
redness        N(0, 1)·0.6     overall flush (more red)
lips           N(0, 1)         lip colour strength (redder and darker for +)
brows          N(0, 1)         brow hair darkness (− blond, + black)
eye_region     N(0, 1)         darker eyelids/under-eyes (make-up, shadow) for +
iris           N(0, 1)         − dark brown … + blue-grey; the pupil stays black
=============  ==============  ================================================================

Teeth, gums, sclera, lashes and the mouth socket have fixed albedo. Regions are soft masks
built once on the neutral mesh from the 68 landmarks and the ICT materials.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .mesh import FaceMesh
from .params import ALBEDO_NAMES
from .xp import namespace

SKIN_DARK = np.array([0.07, 0.042, 0.030])
SKIN_LIGHT = np.array([0.68, 0.47, 0.38])
FIXED_ALBEDO = {
    "teeth": (0.70, 0.66, 0.56), "gums_tongue": (0.50, 0.17, 0.17), "sclera": (0.72, 0.69, 0.65),
    "lashes": (0.02, 0.018, 0.016), "mouth_socket": (0.10, 0.025, 0.025), "pupil": (0.008, 0.008, 0.008),
}
IRIS_BROWN = np.array([0.10, 0.05, 0.025])
IRIS_BLUE_GREY = np.array([0.18, 0.25, 0.33])
# Log-albedo directions (per unit parameter).
AXIS_UNDERTONE = np.array([0.02, 0.07, -0.16])
AXIS_REDNESS = np.array([0.10, -0.05, -0.03])
LIP_TINT = np.array([0.15, -0.30, -0.18])          # at lips = 0
LIP_AXIS = np.array([0.06, -0.14, -0.08])
BROW_TINT = np.array([-1.0, -1.05, -1.1])          # at brows = 0
BROW_AXIS = np.array([-0.35, -0.35, -0.35])
EYE_REGION_TINT = np.array([-0.10, -0.14, -0.12])  # at eye_region = 0
EYE_REGION_AXIS = np.array([-0.10, -0.12, -0.08])


def log_albedo(base: Any, axes: Any, albedo_params: Any) -> Any:
    """(V, 3) base, (7, V, 3) axes, (…, 7) parameters → (…, V, 3) log albedo."""
    n_v = base.shape[0]
    flat = albedo_params @ axes.reshape(axes.shape[0], n_v * 3)
    return base + flat.reshape(tuple(albedo_params.shape[:-1]) + (n_v, 3))


def vertex_albedo(base: Any, axes: Any, albedo_params: Any) -> Any:
    """Linear RGB albedo per vertex, (…, V, 3)."""
    xp = namespace(albedo_params)
    return xp.exp(log_albedo(base, axes, albedo_params))


def _segment_distance(points: np.ndarray, polyline: np.ndarray, closed: bool) -> np.ndarray:
    """Distance (N,) from 2-D points to a polyline."""
    a = polyline
    b = np.roll(polyline, -1, axis=0) if closed else polyline[1:]
    a = a[: len(b)]
    ab = b - a
    t = ((points[:, None] - a[None]) * ab[None]).sum(-1) / np.maximum((ab * ab).sum(-1), 1e-12)
    proj = a[None] + np.clip(t, 0, 1)[..., None] * ab[None]
    return np.linalg.norm(points[:, None] - proj, axis=-1).min(1)


def _inside(points: np.ndarray, polygon: np.ndarray) -> np.ndarray:
    """Even-odd point-in-polygon test (N,) for 2-D points."""
    x, y = points[:, 0:1], points[:, 1:2]
    x0, y0 = polygon[:, 0], polygon[:, 1]
    x1, y1 = np.roll(x0, -1), np.roll(y0, -1)
    crosses = ((y0 > y) != (y1 > y)) & (x < (x1 - x0) * (y - y0) / (y1 - y0 + 1e-12) + x0)
    return crosses.sum(1) % 2 == 1


def region_weights(model: FaceMesh) -> dict[str, np.ndarray]:
    """Soft (V,) weights for lips, brows and eye region on the frontal skin."""
    v = model.neutral.astype(np.float64)
    lm = v[model.landmarks68]
    skin = np.isin(model.vertex_material, [model.material_names.index("M_Face")])
    front = skin & (v[:, 2] > lm[:, 2].min() - 2.0)
    xy = v[:, :2]
    out = {}
    lips = lm[48:60, :2]
    d = _segment_distance(xy, lips, closed=True)
    w = np.where(_inside(xy, lips), 1.0, np.exp(-(d / 0.12) ** 2))
    out["lips"] = np.where(front, w, 0.0)
    brow_w = np.zeros(len(v))
    for seg in (lm[17:22, :2], lm[22:27, :2]):
        shifted = seg - np.array([0.0, 0.35])
        brow_w = np.maximum(brow_w, np.exp(-(_segment_distance(xy, shifted, closed=False) / 0.4) ** 4))
    out["brows"] = np.where(front, brow_w, 0.0)
    eye_w = np.zeros(len(v))
    for sl in (slice(36, 42), slice(42, 48)):
        contour = lm[sl, :2]
        d = _segment_distance(xy, contour, closed=True)
        eye_w = np.maximum(eye_w, np.where(_inside(xy, contour), 1.0, np.exp(-(d / 0.9) ** 2)))
    out["eye_region"] = np.where(front, eye_w * (1 - out["brows"]), 0.0)
    return out


IRIS_RADIUS = 0.6    # cm from the optical axis
PUPIL_RADIUS = 0.22


def eye_disc_coordinates(model: FaceMesh) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Eye vertices (iris and sclera shells of both eyes), their radius from the eye's optical
    axis (cm, neutral face) and whether they are on the front of the eye.

    ICT's sclera shell also covers the iris as a clear cornea, and an opaque material would hide
    the iris behind it, so renderer and add-on colour both shells by this radius.
    """
    v = model.neutral
    out_idx, out_r, out_front = [], [], []
    for side in ("Left", "Right"):
        iris_idx = model.material_vertices(f"M_Iris{side}")
        apex = v[iris_idx[np.argmax(v[iris_idx, 2])]]
        idx = np.concatenate([iris_idx, model.material_vertices(f"M_Sclera{side}")])
        out_idx.append(idx)
        out_r.append(np.linalg.norm(v[idx, :2] - apex[:2], axis=1))
        out_front.append(v[idx, 2] > apex[2] - 1.0)
    return np.concatenate(out_idx), np.concatenate(out_r), np.concatenate(out_front)


def _iris_and_pupil(model: FaceMesh) -> tuple[np.ndarray, np.ndarray]:
    """Masks of the visible iris disc and the pupil on each eyeball (radius from the optical axis)."""
    idx, r, front = eye_disc_coordinates(model)
    iris = np.zeros(model.n_vertices, bool)
    pupil = np.zeros(model.n_vertices, bool)
    iris[idx[front & (r < IRIS_RADIUS)]] = True
    pupil[idx[front & (r < PUPIL_RADIUS)]] = True
    return iris, pupil


def albedo_tables(model: FaceMesh) -> tuple[np.ndarray, np.ndarray]:
    """Per-vertex log-albedo base (V, 3) and parameter axes (7, V, 3), float32."""
    n_v = model.n_vertices
    names = model.material_names
    mat = model.vertex_material
    base = np.zeros((n_v, 3))
    axes = np.zeros((len(ALBEDO_NAMES), n_v, 3))
    mid = 0.5 * (np.log(SKIN_DARK) + np.log(SKIN_LIGHT))
    half = 0.5 * (np.log(SKIN_LIGHT) - np.log(SKIN_DARK))

    skin = np.isin(mat, [names.index(m) for m in ("M_Face", "M_BackHead", "M_EyeBlend", "M_EyeOcclusion",
                                                  "M_LacrimalFluid")]) | (mat < 0)
    regions = region_weights(model)
    base[skin] = mid
    for name, axis in (("tone", half), ("undertone", AXIS_UNDERTONE), ("redness", AXIS_REDNESS)):
        axes[ALBEDO_NAMES.index(name), skin] = axis
    for name, tint, axis in (("lips", LIP_TINT, LIP_AXIS), ("brows", BROW_TINT, BROW_AXIS),
                             ("eye_region", EYE_REGION_TINT, EYE_REGION_AXIS)):
        w = regions[name][:, None]
        base += w * tint
        axes[ALBEDO_NAMES.index(name)] += w * axis

    def fix(mask: np.ndarray, rgb: Any) -> None:
        base[mask] = np.log(np.asarray(rgb))
        axes[:, mask] = 0.0

    socket = np.zeros(n_v, bool)
    socket[model.vertex_range("mouth_socket")] = True
    fix(socket, FIXED_ALBEDO["mouth_socket"])
    fix(mat == names.index("M_Teeth"), FIXED_ALBEDO["teeth"])
    fix(mat == names.index("M_GumsTongue"), FIXED_ALBEDO["gums_tongue"])
    fix(np.isin(mat, [names.index("M_ScleraLeft"), names.index("M_ScleraRight"),
                      names.index("M_IrisLeft"), names.index("M_IrisRight")]), FIXED_ALBEDO["sclera"])
    fix(mat == names.index("M_EyeLashes"), FIXED_ALBEDO["lashes"])
    iris, pupil = _iris_and_pupil(model)
    base[iris] = 0.5 * (np.log(IRIS_BROWN) + np.log(IRIS_BLUE_GREY))
    axes[ALBEDO_NAMES.index("iris"), iris] = 0.5 * (np.log(IRIS_BLUE_GREY) - np.log(IRIS_BROWN))
    fix(pupil, FIXED_ALBEDO["pupil"])
    return base.astype(np.float32), axes.astype(np.float32)
