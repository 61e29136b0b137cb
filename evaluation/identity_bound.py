"""``facerig eval identity-bound``: how well identity *could* be known from one view's 2-D points.

A reference for the regressor's identity error that no network sets: for each corpus face, the
projections of its 68 landmarks or of a dense set of face vertices, disturbed by σ-pixel noise,
are fitted with the true pose, expression and camera (:mod:`facemodel.identity_fit`). The report
gives the aligned face-region error of those identities next to the mean face (predicting no
identity) and the 60-mode truncation floor, per |yaw| bin. Every point counts as observed, also
self-occluded ones, so the figures are optimistic at large yaw — a bound, not a method.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from facemodel import FaceModel, FaceParams, metrics
from facemodel.identity_fit import BoundCase, identity_bound
from facemodel.outputs import write_json

log = logging.getLogger(__name__)

DEFAULT_SIGMAS = (0.5, 1.0, 2.0, 4.0)
DENSE_STRIDE = 8  # every 8th face-region vertex: 1,177 points, as dense as the bound gets useful


def point_sets(model: FaceModel) -> dict[str, np.ndarray]:
    """The fitted point sets: the 68 fixed landmarks, the FaceMesh points the add-on's dense refinement
    fits (``facemodel.landmark_maps.MEDIAPIPE_TO_ICT``, 397), and a dense face-region subset."""
    from facemodel.landmark_fit import dense_point_indices
    from facemodel.landmark_maps import MEDIAPIPE_TO_ICT

    return {"landmarks68": model.landmark_indices("fixed"),
            "facemesh397": np.asarray(MEDIAPIPE_TO_ICT, np.int64)[dense_point_indices()],
            "dense": model.vertex_range("face")[::DENSE_STRIDE]}


def run(corpus_dir: Path, json_path: Path, model_path: str | None = None, limit: int = 512,
        sigmas: Sequence[float] = DEFAULT_SIGMAS, n_identity: int = 60, seed: int = 0) -> dict[str, Any]:
    """Fit identities for the first ``limit`` corpus faces and write the JSON report."""
    from synth.corpus import open_corpus

    corpus = open_corpus(corpus_dir)
    model = FaceModel.load(model_path)
    params = corpus.load_all(["params", "pose_deg"])
    n = min(limit, len(corpus))
    gt = FaceParams.from_vector(params["params"][:n].astype(np.float32), corpus.layout)
    yaw = params["pose_deg"][:n, 0].astype(np.float64)
    n_identity = min(n_identity, gt.n_identity)  # a corpus with fewer modes is fitted in all of them

    reference = metrics.identity_reference_errors(model, gt, n_identity)
    sets = point_sets(model)
    cases = [BoundCase(name, float(s), solve_t) for name in sets for s in sigmas for solve_t in (True, False)]
    log.info("fitting %d faces × %d cases", n, len(cases))
    errors = identity_bound(model, gt, corpus.image_size, cases, sets, n_identity=n_identity, seed=seed)

    rows = [{"points": c.points, "n_points": int(len(sets[c.points])), "sigma_px": c.sigma_px,
             "distance": "unknown" if c.solve_translation else "known", **metrics.means_by_bin(errors[c], yaw)}
            for c in cases]
    report = {"n": n, "corpus": str(corpus_dir), "image_size": corpus.image_size, "n_identity": n_identity,
              "seed": seed, "yaw_bins_n": {b: int(m.sum()) for b, m in metrics.yaw_bin_masks(yaw).items()},
              **{k: metrics.means_by_bin(v, yaw) for k, v in reference.items()},
              "fits": rows, "units": "mm, face-region vertices after rigid alignment",
              "about": "identity fitted to projected points with σ px Gaussian noise, true rotation, expression "
                       "and camera; distance unknown = translation fitted too. All points count as observed."}
    json_path = write_json(json_path, report)
    return report


def format_table(report: dict[str, Any]) -> str:
    """The report as a plain-text table (what the command prints)."""
    lines = [f"mean face {report['mean_identity']['all']:.2f} mm, 60-mode floor "
             f"{report['truncated_identity']['all']:.2f} mm ({report['n']} faces)",
             f"{'points':12s} {'σ px':>5s} {'distance':>8s} {'all':>6s} " + " ".join(f"{b:>6s}" for b in
                                                                                   metrics.YAW_BIN_LABELS)]
    for r in report["fits"]:
        bins = " ".join(f"{r[b]:6.2f}" if r[b] is not None else f"{'-':>6s}" for b in metrics.YAW_BIN_LABELS)
        lines.append(f"{r['points']:12s} {r['sigma_px']:5.2f} {r['distance']:>8s} {r['all']:6.2f} {bins}")
    return "\n".join(lines)
