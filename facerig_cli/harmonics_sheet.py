"""Contact sheet of the corrective field (``facerig model harmonics --sheet``): the first manifold
harmonics on the face, and a few faces without / with a corrective field and the difference.

Drawn with the numpy rasteriser from the model alone (no photos), so the PNG may be committed.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import numpy as np

from facemodel import FaceModel, FaceParams, form
from facemodel.geometry import vertex_normals
from facemodel.harmonics import corrective_displacement, corrective_prior_weights
from facemodel.outputs import atomic_output
from facemodel.priors import PoseRange, sample_params

from .sheets import draw_mesh, headlight, with_pose

log = logging.getLogger(__name__)
TILE = 160
COLS = 6
N_MODES = 12
N_FACES = 4
PRIOR_SD_CM = 0.12      # the sheet's faces: coefficient sd of the first harmonic (cm), λ₁/λ_k-scaled after


def _label(img: np.ndarray, text: str) -> np.ndarray:
    import cv2

    out = img.copy()
    cv2.putText(out, text, (5, 15), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (20, 20, 20), 1, cv2.LINE_AA)
    return out


def _draw(model: FaceModel, params: FaceParams, colours: np.ndarray | None = None) -> np.ndarray:
    f = form(model.arrays, params, TILE, TILE, with_colors=False)
    if colours is None:
        colours = headlight(vertex_normals(f.vertices, model.triangles, model.vertex_faces))
    return draw_mesh(f.pixels, -f.vertices[:, 2], colours, model.render_triangles, TILE, TILE,
                     background=(1.0, 1.0, 1.0))


def _diverging(values: np.ndarray, scale: float) -> np.ndarray:
    from matplotlib import colormaps

    return colormaps["RdBu_r"](np.clip(0.5 + 0.5 * values / scale, 0, 1))[:, :3]


def write_harmonics_sheet(out: Path, model: FaceModel, seed: int = 0) -> Path:
    """Rows 1–2: harmonics 1–12 on the mean face (red +, blue −, each to its own maximum). Rows below: a
    face from the priors at 30° yaw, the same with a corrective field drawn from the eigenvalue-weighted
    prior, and the displacement's size (white 0 → red ≥ 5 mm)."""
    from PIL import Image

    h = model.harmonics
    front = with_pose(model, FaceParams.neutral(n_identity=0), 0.0)
    tiles = []
    for k in range(N_MODES):
        phi = h.basis[:, k]
        tile = _draw(model, front, _diverging(phi, float(np.abs(phi).max())))
        tiles.append(_label(tile, f"k={k + 1}  lambda={h.eigenvalues[k]:.0f}"))
    rng = np.random.default_rng(seed)
    faces = sample_params(rng, N_FACES, model.expression_names, model.arrays.subset(model.landmark_indices()),
                          n_identity=60, pose=PoseRange())
    sd = PRIOR_SD_CM / np.sqrt(corrective_prior_weights(h.eigenvalues))
    for i in range(N_FACES):
        plain = with_pose(model, replace(faces[i], expression=np.zeros_like(faces[i].expression)), 30.0)
        corr = replace(plain, corrective=(rng.normal(size=(h.k, 3)) * sd[:, None]).astype(np.float32))
        size_mm = 10 * np.linalg.norm(corrective_displacement(h.basis, corr.corrective), axis=1)
        heat = _diverging(np.clip(size_mm, 0, 5), 5.0)
        tiles += [_label(_draw(model, plain), "without"), _label(_draw(model, corr), "with corrective"),
                  _label(_draw(model, corr, heat), f"|d| max {size_mm.max():.1f} mm")]
    sheet = np.concatenate([np.concatenate(tiles[i:i + COLS], 1) for i in range(0, len(tiles), COLS)], 0)
    # a 256-colour palette keeps the committed PNG small (≈ 1/3 the size), invisible on smooth shading
    with atomic_output(out) as tmp:
        Image.fromarray(sheet).quantize(256, method=Image.Quantize.MEDIANCUT).save(tmp, format="PNG", optimize=True)
    log.info("harmonics contact sheet: %d modes, %d faces (seed %d)", N_MODES, N_FACES, seed)
    return out
