"""``facerig eval detection``: which faces the photo pipeline finds, by |yaw|, on a synthetic corpus.

Why: the regressor is trained up to ±90° yaw, but a face reaches it only through the detector. The
full-range detector boxes nearly every face; FaceMesh, which confirms a box and gives the landmarks the
crop is placed on, fails on most profiles. Faces it cannot confirm are reconstructed from the box alone
(``runtime.detect.detect_faces(…, unconfirmed=True)``, crop re-placed on the network's own points).
This measures both: how many faces are found confirmed only (as before) and with unconfirmed faces (as
now), and how well the newly found ones reconstruct against the same network on their exact crop.

Renders are crops with the face filling them; a detector needs context, so each render is upscaled by
``UPSCALE`` and put on a neutral canvas with a margin of ``MARGIN`` × its side on every side. The render's
own frame in the canvas is its exact crop. FaceMesh is outside its domain on renders (it confirms fewer
frontal renders than photos), so the "confirmed" rates are a lower bound for photos; the trend with yaw is
the point.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from facemodel import FaceModel, FaceParams, metrics
from facemodel.formation import mesh_camera_space
from facemodel.outputs import write_json

UPSCALE = 3          # 128² renders → 384², about a photo's face size
MARGIN = 1.0 / 3.0   # canvas margin per side, × the upscaled render's side (384 → 640² canvas)
CANVAS_GREY = 128


@dataclass(frozen=True)
class Placed:
    """A render on its canvas and where its exact crop lies there."""

    canvas: np.ndarray
    crop_box: tuple[float, float, float, float]


def place_on_canvas(render: np.ndarray) -> Placed:
    """The render upscaled by ``UPSCALE`` in the middle of a grey canvas."""
    import cv2

    side = int(render.shape[0]) * UPSCALE
    margin = int(round(side * MARGIN))
    big = cv2.resize(render, (side, side), interpolation=cv2.INTER_CUBIC)
    canvas = np.full((side + 2 * margin, side + 2 * margin, 3), CANVAS_GREY, np.uint8)
    canvas[margin:margin + side, margin:margin + side] = big
    return Placed(canvas, (float(margin), float(margin), float(margin + side), float(margin + side)))


def crop_offsets(box: tuple[float, ...], exact: tuple[float, ...]) -> tuple[float, float]:
    """(largest centre offset, |side ratio − 1|) of ``box`` against ``exact``, as fractions of its side."""
    side = exact[2] - exact[0]
    centre = max(abs((box[0] + box[2]) - (exact[0] + exact[2])), abs((box[1] + box[3]) - (exact[1] + exact[3]))) / 2
    return centre / side, abs((box[2] - box[0]) / side - 1.0)


def run(corpus_dir: Path, json_path: Path, onnx_path: Path | str | None = None, model_path: str | None = None,
        limit: int | None = None) -> dict[str, Any]:
    """Detect every render (confirmed only, then with unconfirmed faces) and write the JSON report."""
    from tqdm import tqdm

    from runtime.detect import detect_faces
    from runtime.photo import crop_square
    from runtime.pipeline import get_regressor, reconstruct_photo
    from synth.corpus import open_corpus

    corpus = open_corpus(corpus_dir)
    n = len(corpus) if limit is None else min(limit, len(corpus))
    if n < 1:
        raise ValueError(f"{corpus_dir} holds no renders")
    model = FaceModel.load(model_path)
    face = model.arrays.subset(model.vertex_range("face"))
    regressor = get_regressor(onnx_path)
    size = regressor.input_size
    yaw, confirmed, found = np.full(n, np.nan), np.zeros(n, bool), np.zeros(n, bool)
    new_mm, exact_mm = np.full(n, np.nan), np.full(n, np.nan)
    centre_off, side_off = np.full(n, np.nan), np.full(n, np.nan)
    done = 0
    with tqdm(total=n, desc="detection", unit="render") as bar:
        for shard in corpus.iter_shards(["images", "params", "pose_deg"]):
            for i in range(len(shard["images"])):
                if done >= n:
                    break
                placed = place_on_canvas(shard["images"][i])
                yaw[done] = abs(float(shard["pose_deg"][i, 0]))
                confirmed[done] = bool(detect_faces(placed.canvas))
                faces = detect_faces(placed.canvas, unconfirmed=True)
                found[done] = bool(faces)
                if faces and not confirmed[done]:
                    gt = FaceParams.from_vector(shard["params"][i].astype(np.float32), corpus.layout)
                    truth = mesh_camera_space(face, gt)
                    rec = reconstruct_photo(placed.canvas, faces=faces, refine=False, model=regressor,
                                            face_model=model)
                    exact = regressor.predict(crop_square(placed.canvas, placed.crop_box, size)[None])[0].numpy()
                    new_mm[done] = float(metrics.vertex_error_aligned_mm(mesh_camera_space(face, rec.crop_params),
                                                                         truth))
                    exact_mm[done] = float(metrics.vertex_error_aligned_mm(mesh_camera_space(face, exact), truth))
                    centre_off[done], side_off[done] = crop_offsets(rec.crop_box, placed.crop_box)
                done += 1
                bar.update()
            if done >= n:
                break
    newly = found & ~confirmed
    bins = metrics.yaw_bin_masks(yaw)
    report = {
        "corpus": str(corpus_dir), "n": int(n), "regressor": regressor.model_version,
        "n_by_bin": {"all": int(n), **{b: int(m.sum()) for b, m in bins.items()}},
        "found_confirmed": metrics.means_by_bin(confirmed.astype(float), yaw),
        "found_with_unconfirmed": metrics.means_by_bin(found.astype(float), yaw),
        "newly_found_n": {"all": int(newly.sum()), **{b: int((newly & m).sum()) for b, m in bins.items()}},
        "newly_found_aligned_mm": metrics.means_by_bin(new_mm, yaw),
        "newly_found_exact_crop_aligned_mm": metrics.means_by_bin(exact_mm, yaw),
        "newly_found_crop_centre_offset": metrics.means_by_bin(centre_off, yaw),
        "newly_found_crop_side_offset": metrics.means_by_bin(side_off, yaw),
        "about": f"renders ×{UPSCALE} on a grey canvas (margin {MARGIN:.2f} × side); found = share of renders with a "
                 "face; newly found = faces only found unconfirmed, reconstructed without refinement; crop offsets "
                 "as fractions of the exact crop's side",
    }
    json_path = write_json(json_path, report)
    return report


def format_table(report: dict[str, Any]) -> str:
    """The report as a plain-text table (what the command prints)."""
    def pct(v: float | None) -> str:
        return "   –  " if v is None else f"{100 * v:5.1f}%"

    def mm(v: float | None) -> str:
        return "   –  " if v is None else f"{v:6.2f}"

    cols = ["all", *metrics.YAW_BIN_LABELS]
    rows = [("found, confirmed only", pct, "found_confirmed"),
            ("found, with unconfirmed", pct, "found_with_unconfirmed"),
            ("newly found: aligned mm", mm, "newly_found_aligned_mm"),
            ("  same on the exact crop", mm, "newly_found_exact_crop_aligned_mm"),
            ("  crop centre off", pct, "newly_found_crop_centre_offset")]
    lines = [f"{'':26s}" + "".join(f"{c:>9s}" for c in cols),
             f"{'renders':26s}" + "".join(f"{report['n_by_bin'][c]:>9d}" for c in cols)]
    for label, fmt, key in rows:
        lines.append(f"{label:26s}" + "".join(f"{fmt(report[key].get(c)):>9s}" for c in cols))
    lines.append(f"{'newly found (count)':26s}" + "".join(f"{report['newly_found_n'][c]:>9d}" for c in cols))
    return "\n".join(lines)
