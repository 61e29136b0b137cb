"""``facerig eval identity-consistency``: does the regressor tell people apart on real photos?

Real photos have no 3-D ground truth, so identity accuracy cannot be measured on them; what can
be measured without any label is whether the predicted identity belongs to the *person* rather
than to the photo. Each face is predicted twice, from its canonical crop and from the mirrored
crop (the same person; the canonical crop is symmetric, so mirroring gives the crop of the
mirrored photo). Reported, as RMS face-region shape distances (mm):

* ``within_mirror_mm`` — a face against its own mirror image: how much identity moves with
  things that are not the person (lighting side, pose sign, hair parting);
* ``between_mm`` — a mirrored face against every *other* face (the images are assumed to show
  different people; repeats only make the figures pessimistic);
* ``mirror_retrieval_top1`` / ``top5`` / ``median_rank`` — how often the mirrored face finds its
  own original as the nearest (among the 5 nearest) identity of all faces.

With ``refine`` each prediction (plain and mirrored) is first refined on FaceMesh's points of
its crop, as the add-on does (:mod:`facemodel.landmark_fit`, the model's own disagreement limit),
and the refined identities are compared.

A model that predicts the same face for everyone scores ``within`` 0 but retrieves nothing, and
one that predicts noise scores high ``between`` and also retrieves nothing; only person-specific
identities score on both. Not a substitute for several photos per person (the mirror shares
expression, lighting and camera), but it rests on hundreds of faces instead of a handful.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from facemodel import FaceModel, metrics
from facemodel.aggregation import identity_distance_matrix_mm
from facemodel.crop import canonical_crop_box
from facemodel.outputs import write_json

from .imaging import crop_square, detect_faces, load_image
from .pts import IMAGE_SUFFIXES, list_images, list_labelled_images

log = logging.getLogger(__name__)

BOX_MODES = ("gt", "detect")
BATCH = 64
FIT_CROP_SIZE = 256   # FaceMesh sees the canonical crop at this size, as in the add-on's refinement


@dataclass
class Crops:
    """Canonical crops of one face per usable image, and why the others were left out."""

    images: np.ndarray            # (N, S, S, 3) uint8
    names: list[str]
    skipped: dict[str, str]       # image name → reason
    fit_images: np.ndarray | None = None   # (N, FIT_CROP_SIZE, FIT_CROP_SIZE, 3): the same crops for FaceMesh


def collect_crops(folder: Path | str, box_mode: str, size: int, limit: int | None = None,
                  progress: bool = True, fit_crops: bool = False) -> Crops:
    """Crops from ``.pts`` landmarks (``gt``) or from the add-on's detector (``detect``: the
    largest face of each image — the detector lists faces largest first — so folders of
    unlabelled photos work)."""
    folder = Path(folder)
    if box_mode not in BOX_MODES:
        raise ValueError(f"--box must be one of {', '.join(BOX_MODES)}")
    if box_mode == "gt":
        entries = [(it.image_path, it) for it in list_labelled_images(folder, limit=limit)]
    else:
        paths = list_images(folder)
        if not paths:
            raise FileNotFoundError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {folder}")
        entries = [(p, None) for p in paths[:limit]]
    crops, fits, names, skipped = [], [], [], {}
    for path, item in tqdm(entries, desc="crop faces", unit="img", disable=not progress):
        try:
            image = load_image(path)
        except (OSError, ValueError) as exc:   # the add-on's PhotoError is a ValueError
            skipped[path.name] = f"unreadable: {exc}"
            continue
        if item is not None:
            box = canonical_crop_box(item.landmarks())
        else:
            faces = detect_faces(image)
            if not faces:
                skipped[path.name] = "no face detected"
                continue
            box = faces[0].crop_box
        crops.append(crop_square(image, box, size))
        if fit_crops:
            fits.append(crop_square(image, box, FIT_CROP_SIZE))
        names.append(path.name)
    if len(crops) < 2:
        raise ValueError(f"identity consistency needs at least 2 faces; {folder} gave {len(crops)} "
                         f"({len(skipped)} images skipped)")
    return Crops(np.stack(crops), names, skipped, np.stack(fits) if fit_crops else None)


def predict_identities(regressor: Any, crops: np.ndarray) -> np.ndarray:
    """(N, n) identity coefficients, in batches."""
    out = [np.asarray(regressor.predict(crops[i:i + BATCH]).identity, np.float64)
           for i in range(0, len(crops), BATCH)]
    return np.concatenate(out)


def refined_identities(regressor: Any, crops: np.ndarray, fit_crops: np.ndarray, model: FaceModel,
                       progress: bool = True) -> tuple[np.ndarray, int]:
    """((N, n) identities refined on FaceMesh's points of each crop, how many were left unrefined).

    FaceMesh runs on the ``FIT_CROP_SIZE`` copy of the crop; of its faces the one nearest the crop's
    centre is the face (the canonical crop centres it). No face, or points beyond the regressor's
    disagreement limit, leave the network's identity.
    """
    from facemodel.landmark_fit import LandmarkRefiner

    from .mediapipe_baseline import FaceMeshRunner

    size = crops.shape[1]
    refiner = LandmarkRefiner.from_model(model)
    limit = regressor.refine_max_disagreement   # the model's own (both regressor classes read it)
    runner = FaceMeshRunner()
    ids, unrefined = [], 0
    try:
        for i in tqdm(range(len(crops)), desc="refine", unit="face", disable=not progress):
            p = regressor.predict(crops[i:i + 1])[0].numpy()   # one at a time: any folder size fits in memory
            points = runner.centred_points(fit_crops[i], size)
            if points is None:
                unrefined += 1
                ids.append(np.asarray(p.identity, np.float64))
                continue
            fit = refiner.refine(p, points, size, max_disagreement=limit)
            unrefined += bool(fit.skipped)
            ids.append(np.asarray(fit.params.identity, np.float64))
    finally:
        runner.close()
    return np.stack(ids), unrefined


def split_distances(d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(own mirror image (N,), other people (N·(N−1),)) of a query × gallery distance matrix."""
    return np.diag(d).copy(), d[~np.eye(len(d), dtype=bool)]


def consistency(d: np.ndarray, spread: np.ndarray) -> dict[str, Any]:
    """The report's figures from distances (N, N) of mirrored face ``i`` to plain face ``j`` (mm) and
    each face's distance from the mean face (N,)."""
    n = len(d)
    within, between = split_distances(d)
    ranks = metrics.retrieval_ranks(d)
    med_within, med_between = float(np.median(within)), float(np.median(between))
    return {"n": n, "within_mirror_mm": med_within, "within_mirror_mm_mean": float(within.mean()),
            "between_mm": med_between,
            "between_over_within": med_between / med_within if med_within > 0 else None,
            "mirror_retrieval_top1": float((ranks == 0).mean()),
            "mirror_retrieval_top5": float((ranks < 5).mean()),
            "median_rank": float(np.median(ranks)), "chance_top1": 1.0 / n,
            "spread_from_mean_face_mm": float(np.median(spread)),
            "per_image": {"within_mirror_mm": within.tolist(), "rank": ranks.tolist()}}


def run(images_dir: Path, json_path: Path, onnx_path: Path | None = None, model_path: str | None = None,
        box_mode: str = "gt", limit: int | None = None, plot: bool = True, progress: bool = True,
        refine: bool = False) -> dict[str, Any]:
    """Crop, predict plain and mirrored (``refine``: then refine both), write ``json_path`` (and ``<stem>.png``)."""
    from .regressor import default_onnx_path, load_regressor

    onnx_path = onnx_path or default_onnx_path()
    regressor = load_regressor(onnx_path)
    model = FaceModel.load(model_path)
    crops = collect_crops(images_dir, box_mode, regressor.input_size, limit, progress, fit_crops=refine)
    mirrored = np.ascontiguousarray(crops.images[:, :, ::-1])
    unrefined = None
    if refine:
        assert crops.fit_images is not None
        ids, u1 = refined_identities(regressor, crops.images, crops.fit_images, model, progress)
        ids_mirror, u2 = refined_identities(regressor, mirrored, np.ascontiguousarray(crops.fit_images[:, :, ::-1]),
                                            model, progress)
        unrefined = u1 + u2
    else:
        ids = predict_identities(regressor, crops.images)
        ids_mirror = predict_identities(regressor, mirrored)
    d = identity_distance_matrix_mm(model, ids_mirror, ids)          # query i (mirror) × gallery j
    spread = identity_distance_matrix_mm(model, ids, np.zeros((1, ids.shape[1])))[:, 0]
    report = consistency(d, spread)
    report["per_image"]["name"] = crops.names
    report.update({"images": str(images_dir), "box": box_mode, "model": str(onnx_path), "refine": refine,
                   "unrefined": unrefined,
                   "skipped": crops.skipped, "units": "mm, RMS face-region shape distance of identities",
                   "about": "each face against its own mirrored crop (within) and against every other "
                            "face (between); images are assumed to show different people"})
    json_path = write_json(json_path, report)
    if plot:
        from .report import distance_histogram_figure

        within, between = split_distances(d)
        png = distance_histogram_figure(
            {"own mirror image": within, "other people": between},
            json_path.with_suffix(".png"),
            title=f"identity distances, {len(d)} faces (top-1 mirror retrieval "
                  f"{report['mirror_retrieval_top1']:.0%})", xlabel=report["units"])
        log.info("wrote %s", png)
    return report


__all__ = ["Crops", "collect_crops", "consistency", "predict_identities", "refined_identities", "run",
           "split_distances"]
