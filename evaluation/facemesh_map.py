"""Derive the FaceMesh-468 → ICT vertex table the dense refinement fits
(``facemodel.landmark_maps.MEDIAPIPE_TO_ICT`` and ``MEDIAPIPE_SPREAD_MM``).

Why from photos, not from geometry: mediapipe 0.10.21 ships no canonical FaceMesh mesh, and a
nearest-vertex match after a rigid alignment would mix up neighbours where the two models'
proportions differ. Instead, on unlabelled photos as the add-on sees them (detector box, canonical
crop), each face is refined on FaceMesh's inner 51 points — the semantic landmarks both models share
(``MEDIAPIPE_TO_68`` / ICT's Multi-PIE vertices) — ICT's camera-facing face-region vertices are
projected, and each FaceMesh point votes for the nearest projected vertex (within ``VOTE_RADIUS_PX``
of the 128-px crop). Per point, the table holds the vertex nearest the votes' mean position on ICT's
mean face, and the votes' RMS spread there (mm): how well-defined the point is. Points on the face
oval slide along the silhouette and forehead points along the hairline (spread 15–50 mm); the dense
fit leaves out points above ``facemodel.landmark_fit.DENSE_SPREAD_LIMIT_MM``.

No landmark annotation of any dataset is used; the photos only need a face.

    python -m evaluation.facemesh_map --images ../shared/faces/unlabeled/utkface_200 \\
        --images ../shared/faces/unlabeled/celeba_89x109 --every 10 --json out/facemesh_map.json
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from facemodel import FaceModel, FaceParams, geometry
from facemodel.formation import facing_camera, mesh_camera_space, project_to_image
from facemodel.landmark_maps import MEDIAPIPE_TO_68
from facemodel.outputs import write_json

log = logging.getLogger(__name__)

VOTE_RADIUS_PX = 3.0        # a point farther than this (128-px crop) from every vertex does not vote
N_FACEMESH = 468


def votes_for_face(model: FaceModel, params: FaceParams, points: np.ndarray, size: int) -> np.ndarray:
    """(468,) the camera-facing face-region vertex nearest each FaceMesh point (−1: none within reach).

    ``params``: the face refined on the inner 51 points, in a ``size`` crop; ``points``: (468, 2) FaceMesh
    points in that crop.
    """
    from scipy.spatial import cKDTree

    verts = np.asarray(mesh_camera_space(model.arrays, params), np.float64)
    normals = geometry.vertex_normals(verts, model.triangles, model.vertex_faces)
    region = model.vertex_range("face")      # ICT vertices 0–9408, the metrics' face region
    visible = np.asarray(facing_camera(verts[region], normals[region]))
    pixels = np.asarray(project_to_image(verts[region][visible], params, size, size), np.float64)
    dist, nearest = cKDTree(pixels).query(np.asarray(points, np.float64))
    radius = VOTE_RADIUS_PX * size / 128
    return np.where(dist < radius, region[visible][nearest], -1)


def collect_votes(photos: Sequence[Path], model: FaceModel, onnx_path: Path | str | None = None,
                  progress: bool = True) -> tuple[np.ndarray, dict[str, str]]:
    """((N, 468) votes, {photo: why skipped}) over single-face photos whose inner fit was not gated out."""
    from runtime.pipeline import get_refiner, get_regressor

    from .refinement_inputs import refinement_inputs

    regressor = get_regressor(Path(onnx_path) if onnx_path else None)
    refiner = get_refiner(model)
    inner = np.asarray(MEDIAPIPE_TO_68, np.int64)
    rows: list[np.ndarray] = []
    skipped: dict[str, str] = {}
    for item in refinement_inputs(photos, regressor, skipped, progress, "facemesh votes"):
        fit = refiner.refine(item.crop_params, item.points[inner], item.size,
                             max_disagreement=regressor.refine_max_disagreement)
        if fit.skipped:
            skipped[str(item.path)] = fit.skipped
            continue
        rows.append(votes_for_face(model, fit.params, item.points, item.size))
    return (np.stack(rows) if rows else np.zeros((0, N_FACEMESH), np.int64)), skipped


@dataclass(frozen=True)
class FaceMeshTable:
    """Per FaceMesh point: the ICT vertex, the votes' RMS spread on the mean face (mm), the share that voted."""

    vertex: np.ndarray      # (468,) int
    spread_mm: np.ndarray   # (468,)
    share: np.ndarray       # (468,)


def table_from_votes(votes: np.ndarray, model: FaceModel) -> FaceMeshTable:
    """The vertex nearest each point's mean vote position on ICT's mean face (a mode vote would
    split between neighbouring vertices; the mean is stable from a few dozen photos)."""
    votes = np.asarray(votes, np.int64)
    if votes.ndim != 2 or votes.shape[1] != N_FACEMESH or len(votes) == 0:
        raise ValueError(f"votes must be (N ≥ 1, {N_FACEMESH}), got {votes.shape}")
    mean_face = np.asarray(model.neutral, np.float64)
    region = mean_face[model.vertex_range("face")]   # starts at vertex 0, so an index here is a vertex id
    vertex = np.zeros(N_FACEMESH, np.int64)
    spread = np.full(N_FACEMESH, np.inf)
    share = (votes >= 0).mean(0)
    for k in range(N_FACEMESH):
        chosen = votes[votes[:, k] >= 0, k]
        if len(chosen) == 0:
            vertex[k] = -1
            continue
        pos = mean_face[chosen]
        centre = pos.mean(0)
        vertex[k] = int(np.argmin(np.linalg.norm(region - centre, axis=1)))
        spread[k] = float(np.sqrt(((pos - centre) ** 2).sum(1).mean())) * 10.0   # model cm → mm
    return FaceMeshTable(vertex, spread, share)


def python_source(table: FaceMeshTable) -> str:
    """The two tuples as they appear in ``facemodel/landmark_maps.py``."""
    def rows(values: list[str]) -> str:
        return "\n".join("    " + ", ".join(values[i:i + 16]) + "," for i in range(0, len(values), 16))

    spread = [f"{min(s, 99.9):.1f}" for s in table.spread_mm]
    return (f"MEDIAPIPE_TO_ICT: tuple[int, ...] = (\n{rows([str(int(v)) for v in table.vertex])}\n)\n"
            f"MEDIAPIPE_SPREAD_MM: tuple[float, ...] = (\n{rows(spread)}\n)\n")


def main(argv: Sequence[str] | None = None) -> int:
    from .pts import list_images

    ap = argparse.ArgumentParser(prog="python -m evaluation.facemesh_map", description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=Path, action="append", required=True, help="folder of photos (repeatable)")
    ap.add_argument("--every", type=int, default=1, help="use every N-th photo of each folder")
    ap.add_argument("--model", type=Path, default=None, help="regressor ONNX (default: the shipped one)")
    ap.add_argument("--face-model", default=None)
    ap.add_argument("--json", type=Path, required=True, help="write the table and its statistics here")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        photos = [p for folder in args.images for p in list_images(folder)[::max(args.every, 1)]]
    except FileNotFoundError as exc:
        raise SystemExit(f"error: {exc}") from None
    model = FaceModel.load(args.face_model)
    votes, skipped = collect_votes(photos, model, args.model)
    if len(votes) < 20:
        raise SystemExit(f"only {len(votes)} usable photos; the table needs at least 20")
    table = table_from_votes(votes, model)
    write_json(args.json, {"photos": len(photos), "used": int(len(votes)), "skipped": skipped,
                           "vertex": table.vertex.tolist(), "spread_mm": [round(float(s), 2) for s in table.spread_mm],
                           "share": table.share.round(4).tolist()})
    print(python_source(table))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
