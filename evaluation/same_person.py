"""``facerig eval same-person``: identity error of several photos of one person, as the add-on makes it.

On a multi-view corpus (``facerig synth render --views-per-identity K``) every set is one identity seen
from K sides. For the first 1, 2, 3, … views of each set the report gives the identity shape error (mean
face-region vertex distance, mm; the C-Net's Table 5 measure) of

* ``network``: the regressor's identities, C-Net weighted (the same-person path without refinement);
* ``refined``: each view's identity refined on its FaceMesh points first, then weighted the same way
  (the same-person path as shipped, ``runtime.same_person.reconstruct_same_person``);

and the single-view means of both. FaceMesh is out of its domain on renders (its 51-point NME there is
about twice its photo error), so its points are blended with the exact projections of the vertices
they stand for: exact + ``scale`` × (FaceMesh − exact). ``scale`` 0.45 puts them near FaceMesh's photo
accuracy, 1 is FaceMesh as it is on renders, 0 exact points. Views where FaceMesh finds no face keep the
network's identity, and the regressor's trust limit applies as in the add-on.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from tqdm import tqdm

from facemodel import FaceModel, FaceParams
from facemodel.aggregation import aggregate_identity, identity_shape_error_mm
from facemodel.formation import landmarks_2d
from facemodel.landmark_fit import LandmarkRefiner
from facemodel.landmark_maps import MEDIAPIPE_TO_68, MEDIAPIPE_TO_ICT
from facemodel.outputs import write_json

log = logging.getLogger(__name__)

DEFAULT_SCALES = (0.45, 1.0)


@dataclass
class Views:
    """Per view of the corpus: the network's prediction, FaceMesh's points and the exact ones."""

    params: list[FaceParams]         # regressor output per view (crop camera)
    facemesh: np.ndarray             # (N, 468, 2) FaceMesh on the render, crop px; NaN where it found no face
    exact: np.ndarray                # (N, 468, 2) the points' ICT vertices projected (68-map points: ICT's own)
    true_identity: np.ndarray        # (N, n_true)
    confidences: np.ndarray | None   # (N, n) or (N, 1) C-Net output; None = plain averaging
    views_per_set: int


def exact_facemesh_points(model: FaceModel, params: FaceParams, image_size: int) -> np.ndarray:
    """(468, 2) where FaceMesh's points would be if it were exact: its ICT vertices projected, and for the
    68 points the iBUG map uses, ICT's Multi-PIE landmark vertices (what the inner-51 fit compares to)."""
    pts = np.asarray(landmarks_2d(model.arrays.subset(np.asarray(MEDIAPIPE_TO_ICT)), params, image_size, image_size),
                     np.float64)
    ibug = model.arrays.subset(model.landmark_indices("fixed"))
    pts[list(MEDIAPIPE_TO_68)] = np.asarray(landmarks_2d(ibug, params, image_size, image_size), np.float64)
    return pts


def collect(corpus_dir: Path, regressor: Any, cnet: Any, model: FaceModel, max_sets: int | None = None,
            progress: bool = True) -> Views:
    """Run the regressor, the C-Net and FaceMesh on the first ``max_sets`` sets of a multi-view corpus."""
    import cv2

    from synth.corpus import open_corpus

    from .identity_consistency import FIT_CROP_SIZE
    from .mediapipe_baseline import FaceMeshRunner

    corpus = open_corpus(corpus_dir)
    k = int(corpus.manifest.get("generator", {}).get("views_per_identity", 1))
    if k < 2:
        raise ValueError(f"{corpus_dir} has one view per identity; render one with --views-per-identity 5")
    n = len(corpus) // k * k if max_sets is None else min(max_sets * k, len(corpus) // k * k)
    if n == 0:
        raise ValueError(f"{corpus_dir} holds no complete set of {k} views")
    size = regressor.input_size
    if corpus.image_size != size:
        raise ValueError(f"corpus images are {corpus.image_size}², the regressor reads {size}²")
    params, mesh, exact, true, conf = [], [], [], [], []
    runner = FaceMeshRunner()
    try:
        with tqdm(total=n, desc="views", unit="view", disable=not progress) as bar:
            for shard in corpus.iter_shards(["images", "params"]):
                for i in range(len(shard["images"])):
                    if len(params) >= n:
                        break
                    img = shard["images"][i]
                    gt = FaceParams.from_vector(shard["params"][i].astype(np.float32), corpus.layout)
                    params.append(regressor.predict(img))
                    points = runner.centred_points(cv2.resize(img, (FIT_CROP_SIZE, FIT_CROP_SIZE),
                                                              interpolation=cv2.INTER_LINEAR), size)
                    mesh.append(np.full((len(MEDIAPIPE_TO_ICT), 2), np.nan) if points is None else points)
                    exact.append(exact_facemesh_points(model, gt, size))
                    true.append(np.asarray(gt.identity, np.float64))
                    if cnet is not None:   # one crop at a time: any corpus size fits in memory
                        conf.append(cnet.predict(img[None])[0])
                    bar.update()
                if len(params) >= n:
                    break
    finally:
        runner.close()
    return Views(params, np.stack(mesh), np.stack(exact), np.stack(true), np.stack(conf) if conf else None, k)


def refined_identities(views: Views, refiner: LandmarkRefiner, scale: float, image_size: int,
                       max_disagreement: float) -> tuple[np.ndarray, int]:
    """((N, n) each view's identity refined on its proxy points, how many views kept the network's)."""
    out, kept = [], 0
    for p, mesh, exact in zip(views.params, views.facemesh, views.exact):
        if np.isnan(mesh).any():
            out.append(np.asarray(p.identity, np.float64))
            kept += 1
            continue
        fit = refiner.refine(p, exact + scale * (mesh - exact), image_size, max_disagreement=max_disagreement)
        kept += bool(fit.skipped)
        out.append(np.asarray(fit.params.identity, np.float64))
    return np.stack(out), kept


def set_errors(model: FaceModel, views: Views, identities: np.ndarray, photos: int) -> tuple[float, float]:
    """(mean error of the first ``photos`` views' aggregate per set, mean single-view error of those views)."""
    k = views.views_per_set
    agg, single = [], []
    for s in range(len(identities) // k):
        idx = np.arange(s * k, s * k + photos)
        c = None if views.confidences is None else views.confidences[idx]
        agg.append(identity_shape_error_mm(model, aggregate_identity(identities[idx], c), views.true_identity[idx[0]]))
        single.append(identity_shape_error_mm(model, identities[idx], views.true_identity[idx]).mean())
    return float(np.mean(agg)), float(np.mean(single))


def run(corpus_dir: Path, json_path: Path, onnx_path: Path | None = None, cnet_path: Path | None = None,
        model_path: str | None = None, scales: Sequence[float] = DEFAULT_SCALES, max_sets: int | None = None,
        progress: bool = True) -> dict[str, Any]:
    """Measure and write the JSON report (see the module docstring)."""
    from runtime.same_person import NO_CNET, cnet_for
    from runtime.pipeline import get_regressor

    if any(not 0.0 <= s <= 10.0 for s in scales):
        raise ValueError(f"scales must lie in [0, 10], got {list(scales)}")
    regressor = get_regressor(onnx_path)
    cnet, notes = cnet_for(regressor, cnet_path)
    model = FaceModel.load(model_path)
    refiner = LandmarkRefiner.from_model(model)
    views = collect(Path(corpus_dir), regressor, cnet, model, max_sets, progress)
    k = views.views_per_set
    photo_counts = sorted({c for c in (1, 2, 3, 5, k) if c <= k})
    network_ids = np.stack([np.asarray(p.identity, np.float64) for p in views.params])
    network = {c: set_errors(model, views, network_ids, c) for c in photo_counts}
    found = int((~np.isnan(views.facemesh[:, 0, 0])).sum())
    report: dict[str, Any] = {
        "corpus": str(corpus_dir), "regressor": regressor.model_version,
        "cnet": cnet.model_version if cnet is not None else NO_CNET, "notes": notes,
        "sets": len(views.params) // k, "views_per_set": k, "facemesh_found": found, "views": len(views.params),
        "max_disagreement": regressor.refine_max_disagreement,
        "measure": "mean face-region vertex distance of identity shapes, mm",
        "network": {str(c): {"aggregate_mm": a, "single_mm": s} for c, (a, s) in network.items()},
        "refined": {}}
    for scale in scales:
        ids, kept = refined_identities(views, refiner, float(scale), regressor.input_size,
                                       regressor.refine_max_disagreement)
        rows = {str(c): dict(zip(("aggregate_mm", "single_mm"), set_errors(model, views, ids, c)))
                for c in photo_counts}
        report["refined"][f"{scale:g}"] = {"unrefined_views": kept, **rows}
        log.info("scale %g: %s", scale, {c: round(r["aggregate_mm"], 3) for c, r in rows.items()})
    json_path = write_json(json_path, report)
    return report


def format_table(report: dict[str, Any]) -> str:
    """The report as a Markdown table: photos × (network, refined at each scale)."""
    scales = list(report["refined"])
    lines = ["| photos | network, aggregate | " + " | ".join(f"refined (scale {s}), aggregate" for s in scales) + " |",
             "|---" * (2 + len(scales)) + "|"]
    for c, row in report["network"].items():
        cells = [f"{row['aggregate_mm']:.3f}"] + [f"{report['refined'][s][c]['aggregate_mm']:.3f}" for s in scales]
        lines.append(f"| {c} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
