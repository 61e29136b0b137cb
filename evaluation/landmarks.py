"""``facerig eval landmarks``: 68-point accuracy on labelled photos, facerig or MediaPipe.

Protocol (docs/conventions.md "Metrics", AFLW2000-3D style): each image is cropped from the box of
its ground-truth landmarks (``box='gt'``, the default; Helen photos hold several people and the
annotated one is the one the box names) or from the detector box that overlaps that box most
(``box='detect'``; no overlapping detection = a failure). Failures count in ``failed`` and in
the cumulative error curve (as never reaching any threshold) but not in the NME means.

Helen has no pose labels, so the |yaw| bins use the *annotation* yaw: a PnP fit of ICT's mean-face
inner 51 points to the labelled ones (:func:`evaluation.pose.annotation_yaw_deg`). Every method and
every model is then binned on the same images; each prediction's own yaw stays in the CSV.
"""

from __future__ import annotations

import csv
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from facemodel import FaceParams, metrics
from facemodel.crop import canonical_crop_box, points_to_crop
from facemodel.outputs import atomic_open, write_json

from .imaging import Box, box_iou, detect_faces, load_image, points_box
from .landmark_results import NME_KEYS, ImageResult, Landmarker, Prediction
from .pose import annotation_yaw_deg
from .pts import LabelledImage, list_labelled_images

log = logging.getLogger(__name__)

METHODS = ("facerig", "mediapipe")
BOX_MODES = ("gt", "detect")
DEFAULT_CONTOUR = "march"  # best measured on Helen; see evaluation/contour.py
MIN_DETECTION_IOU = 0.3
FAILURE_THRESHOLD = 8.0  # % bbox NME above which an image counts as a failure in "failure_rate_8"


# -- predictors ---------------------------------------------------------------------------------------
class MediaPipeLandmarker:
    """Adapter: :class:`evaluation.mediapipe_baseline.MediaPipeLandmarks` → :class:`Prediction`."""

    name = "mediapipe"

    def __init__(self, model_path: str | None = None) -> None:
        from .mediapipe_baseline import MediaPipeLandmarks

        self.impl = MediaPipeLandmarks(model_path=model_path)

    def predict(self, image: np.ndarray, crop_box: Box, ref_box: Box) -> Prediction | None:
        out = self.impl.predict(image, crop_box, ref_box)
        if out is None:
            return None
        return Prediction(out.points68, out.rotation, out.crop_box, {"facemesh": out.points68})


class FacerigLandmarker:
    """The ONNX regressor on facerig's canonical crop, landmarks projected for each contour."""

    name = "facerig"

    def __init__(self, onnx_path: Path | str, contour: str = DEFAULT_CONTOUR, model_path: str | None = None
                 ) -> None:
        from .contour import CONTOURS, ContourLandmarks
        from .pose import face_model
        from .regressor import load_regressor

        if contour not in CONTOURS:
            raise ValueError(f"--contour must be one of {', '.join(CONTOURS)}")
        self.contour = contour
        self.regressor = load_regressor(onnx_path)
        self.size = self.regressor.input_size
        self.projector = ContourLandmarks(face_model(model_path))   # shared with the annotation yaw

    def regress(self, image: np.ndarray, crop_box: Box) -> FaceParams | None:
        """The network's crop params (numpy), or None when they are not finite."""
        from .imaging import crop_square

        params = self.regressor.predict(crop_square(image, crop_box, self.size)[None])
        p = (params[0] if params.batch_shape else params).numpy()
        return p if np.all(np.isfinite(np.asarray(p.to_vector()))) else None

    def prediction(self, p: FaceParams, crop_box: Box) -> Prediction:
        """Every contour variant of crop params ``p``, in photo pixels."""
        from .imaging import crop_to_photo

        variants = {c: crop_to_photo(v, crop_box, self.size)
                    for c, v in self.projector.all_variants(p, self.size, self.size).items()}
        return Prediction(variants[self.contour], np.asarray(p.rotation, np.float64), crop_box, variants)

    def predict(self, image: np.ndarray, crop_box: Box, ref_box: Box) -> Prediction | None:
        p = self.regress(image, crop_box)
        return None if p is None else self.prediction(p, crop_box)


class RefinedFacerigLandmarker(FacerigLandmarker):
    """The regressor, then the add-on's refinement on MediaPipe FaceMesh's points (the dense fit).

    FaceMesh runs as in :class:`MediaPipeLandmarker` (same crop, same face choice); the fit is
    ``facemodel.landmark_fit.LandmarkRefiner`` with the add-on's settings. Where FaceMesh
    finds no face, or its points are too far from the regressor's to be trusted, the regressor's
    own prediction stands (counted in ``unrefined``).
    """

    name = "facerig+refine"

    def __init__(self, onnx_path: Path | str, contour: str = DEFAULT_CONTOUR, model_path: str | None = None,
                 corrective_prior: float | None = None) -> None:
        from facemodel.landmark_fit import LandmarkRefiner

        from .mediapipe_baseline import MediaPipeLandmarks

        super().__init__(onnx_path, contour, model_path)
        self.mediapipe = MediaPipeLandmarks(model_path=model_path)
        self.refiner = LandmarkRefiner.from_model(self.projector.model, corrective_prior=corrective_prior)
        self.max_disagreement = float(self.regressor.refine_max_disagreement)   # the model's own limit
        self.unrefined = 0

    def predict(self, image: np.ndarray, crop_box: Box, ref_box: Box) -> Prediction | None:
        p = self.regress(image, crop_box)
        if p is None:
            return None
        detected = self.mediapipe.predict(image, crop_box, ref_box)
        if detected is None:
            self.unrefined += 1
        else:
            fit = self.refiner.refine(p, points_to_crop(detected.points, crop_box, self.size), self.size,
                                      max_disagreement=self.max_disagreement)
            self.unrefined += bool(fit.skipped)
            p = fit.params
        return self.prediction(p, crop_box)


def make_landmarker(method: str, onnx_path: Path | str | None, contour: str, model_path: str | None,
                    refine: bool = False, corrective_prior: float | None = None) -> Landmarker:
    if corrective_prior is not None and not refine:
        raise ValueError("--corrective-prior applies to --refine")
    if method == "mediapipe":
        if refine:
            raise ValueError("--refine applies to --method facerig")
        return MediaPipeLandmarker(model_path)
    if method == "facerig":
        from .regressor import default_onnx_path

        if refine:
            return RefinedFacerigLandmarker(onnx_path or default_onnx_path(), contour, model_path, corrective_prior)
        return FacerigLandmarker(onnx_path or default_onnx_path(), contour, model_path)
    raise ValueError(f"--method must be one of {', '.join(METHODS)}")


# -- the run ---------------------------------------------------------------------------------------------
def start_box(image: np.ndarray, gt: np.ndarray, box_mode: str) -> tuple[Box | None, Box | None, str]:
    """(crop box, reference box) the method starts from, or (None, None, reason).

    ``gt``: the canonical crop of the annotated landmarks. ``detect``: the detection whose box
    overlaps the annotated face most (IoU ≥ 0.3), with the crop the photo pipeline derives.
    """
    gt_box = points_box(gt)
    if box_mode == "gt":
        return canonical_crop_box(gt), gt_box, ""
    if box_mode != "detect":
        raise ValueError(f"--box must be one of {', '.join(BOX_MODES)}")
    dets = detect_faces(image)
    if not dets:
        return None, None, "no face detected"
    ious = [box_iou(d.box, gt_box) for d in dets]
    best = int(np.argmax(ious))
    if ious[best] < MIN_DETECTION_IOU:
        return None, None, f"no detection overlaps the annotated face (best IoU {ious[best]:.2f})"
    return dets[best].crop_box, dets[best].box, ""


def evaluate_images(items: list[LabelledImage], landmarker: Landmarker, box_mode: str = "gt",
                    progress: bool = True, model_path: str | None = None) -> list[ImageResult]:
    """Run ``landmarker`` on every labelled image; ``model_path`` is the face model for the annotation yaw."""
    results = []
    for item in tqdm(items, desc=f"eval {landmarker.name}", unit="img", disable=not progress):
        gt = item.landmarks()
        if gt.shape != (68, 2):
            raise ValueError(f"{item.pts_path} has {len(gt)} points; the benchmark needs 68")
        yaw = annotation_yaw_deg(gt, model_path)
        image = load_image(item.image_path)
        crop_box, ref_box, reason = start_box(image, gt, box_mode)
        if crop_box is None or ref_box is None:
            results.append(ImageResult(item.name, gt, None, reason, annotation_yaw_deg=yaw))
            continue
        pred = landmarker.predict(image, crop_box, ref_box)
        results.append(ImageResult(item.name, gt, pred, "" if pred is not None else "method found no face",
                                   crop_box, yaw))
    return results


def summarize(results: list[ImageResult], variant: str | None = None) -> dict[str, Any]:
    """The JSON numbers (percent) for the reported points or for one named contour variant."""
    def pts(r: ImageResult) -> np.ndarray | None:
        if r.prediction is None:
            return None
        return r.prediction.variants.get(variant) if variant else r.prediction.points68

    per = [r.nmes(pts(r)) if r.ok else {k: math.nan for k in NME_KEYS} for r in results]
    cols = {k: np.array([p[k] for p in per]) for k in NME_KEYS}
    yaw = np.array([r.annotation_yaw_deg for r in results])
    ok = np.array([r.ok for r in results], bool)
    out: dict[str, Any] = {"n": int(ok.sum()), "failed": int((~ok).sum())}
    for k in NME_KEYS:
        out[k] = metrics.nan_mean(cols[k][ok])
    bins: dict[str, dict[str, Any]] = {}
    for label, mask in metrics.yaw_bin_masks(yaw).items():
        m = mask & ok
        bins[label] = {"n": int(m.sum()), **{k: metrics.nan_mean(cols[k][m]) for k in NME_KEYS}}
    out["nme_bbox_68_balanced"] = metrics.balanced_mean({b: v["nme_bbox_68"] for b, v in bins.items()})
    out["nme_bbox_51_balanced"] = metrics.balanced_mean({b: v["nme_bbox_51"] for b, v in bins.items()})
    out["yaw_bins"] = bins
    if ok.any():  # diagnostic: where the error comes from (bbox NME over each part's points)
        preds = np.stack([pts(r) for r, good in zip(results, ok) if good])
        gts = np.stack([r.gt for r, good in zip(results, ok) if good])
        out["nme_bbox_by_part"] = {k: float(v.mean()) for k, v in metrics.group_nme_bbox(preds, gts).items()}
    e68 = np.where(ok, cols["nme_bbox_68"], np.inf)
    out["auc_bbox_68_at_7"] = metrics.auc_at(e68, 7.0) if len(e68) else None
    out["failure_rate_8"] = metrics.failure_rate(e68, FAILURE_THRESHOLD) if len(e68) else None
    return out


def build_report(results: list[ImageResult], method: str, box_mode: str, contour: str | None,
                 images_dir: Path, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Full JSON: the stable keys first, then per-variant numbers and provenance."""
    report: dict[str, Any] = {**summarize(results)}
    report.update({"unit": "percent", "method": method, "box": box_mode, "contour": contour,
                   "images": str(images_dir), "n_images": len(results),
                   "failed_images": {r.name: r.error for r in results if not r.ok},
                   "yaw_source": "annotation: PnP of ICT mean-face inner 51 points to the labelled ones, "
                                 "the same bins for every method (predicted pose per image in the CSV)"})
    variants = sorted({v for r in results if r.prediction for v in r.prediction.variants})
    if method == "facerig" and variants:
        report["by_contour"] = {v: summarize(results, v) for v in variants}
    if extra:
        report.update(extra)
    return report


def write_csv(results: list[ImageResult], path: Path) -> Path:
    """One row per image: NMEs (%), pose (degrees), status; variant NMEs for facerig."""
    variants = sorted({v for r in results if r.prediction for v in r.prediction.variants})
    header = ["image", "ok", "error", "annotation_yaw_deg", "yaw_deg", "pitch_deg", "roll_deg", *NME_KEYS]
    header += [f"nme_bbox_68_{v}" for v in variants if len(variants) > 1]
    with atomic_open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        for r in results:
            rot = np.degrees(r.prediction.rotation) if r.prediction is not None else [math.nan] * 3
            n = r.nmes()
            row = [r.name, int(r.ok), r.error, f"{r.annotation_yaw_deg:.3f}", *(f"{a:.3f}" for a in rot),
                   *(f"{n[k]:.4f}" for k in NME_KEYS)]
            if len(variants) > 1:
                for v in variants:
                    p = r.prediction.variants.get(v) if r.prediction else None
                    row.append(f"{r.nmes(p)['nme_bbox_68']:.4f}" if p is not None else "nan")
            w.writerow(row)
    return path


def run(images_dir: Path, json_path: Path, method: str = "facerig", box_mode: str = "gt",
        contour: str = DEFAULT_CONTOUR, onnx_path: Path | None = None, model_path: str | None = None,
        limit: int | None = None, plot: bool = True, progress: bool = True, refine: bool = False,
        corrective_prior: float | None = None) -> dict[str, Any]:
    """Evaluate, then write ``json_path`` plus ``<stem>.csv`` and ``<stem>.png`` beside it.

    ``refine`` (facerig only): the add-on's refinement on MediaPipe FaceMesh points after the
    regressor (:class:`RefinedFacerigLandmarker`); ``corrective_prior``: the corrective field's prior strength
    (None: the add-on's, ``landmark_fit.CORRECTIVE_PRIOR``; 0: the field is not fitted).
    """
    if method not in METHODS:
        raise ValueError(f"--method must be one of {', '.join(METHODS)}")
    if box_mode not in BOX_MODES:
        raise ValueError(f"--box must be one of {', '.join(BOX_MODES)}")
    items = list_labelled_images(images_dir, limit=limit)
    landmarker = make_landmarker(method, onnx_path, contour, model_path, refine, corrective_prior)
    results = evaluate_images(items, landmarker, box_mode, progress, model_path)
    extra: dict[str, Any] = {}
    if method == "mediapipe":
        from .mediapipe_baseline import MEDIAPIPE_TO_68

        extra["mediapipe_to_68"] = list(MEDIAPIPE_TO_68)
        extra["mapping_provenance"] = ("evaluation.mediapipe_baseline: semantic groups of mediapipe "
                                       "face_mesh_connections, positions from ICT-FaceKit's 68 vertices, "
                                       "mean FaceMesh shape of non-benchmark images; not fitted to any labels")
    else:
        from .regressor import default_onnx_path

        extra["model"] = str(onnx_path or default_onnx_path())
        extra["refine"] = refine
        if refine:
            from facemodel import landmark_fit as lf

            # what LandmarkRefiner fits: the dense points (these settings) up to DENSE_FULL_YAW_DEG, the
            # inner 51 from DENSE_NONE_YAW_DEG, both in between
            extra["refine_settings"] = {**lf.DENSE_REFINE_SETTINGS.__dict__, "points": "FaceMesh dense",
                                        "n_points": int(len(lf.dense_point_indices())),
                                        "inner_51": dict(lf.INNER_REFINE_SETTINGS.__dict__),
                                        "dense_full_yaw_deg": lf.DENSE_FULL_YAW_DEG,
                                        "dense_none_yaw_deg": lf.DENSE_NONE_YAW_DEG}
            extra["refine_settings"]["corrective_prior"] = (lf.CORRECTIVE_PRIOR if corrective_prior is None
                                                            else corrective_prior)   # 0: the field is not fitted
            extra["unrefined"] = getattr(landmarker, "unrefined", 0)
            extra["refine_max_disagreement"] = getattr(landmarker, "max_disagreement", None)
        meta = getattr(getattr(landmarker, "regressor", None), "metadata", None)
        if meta:
            extra["model_card"] = meta.get("facerig.model_card")
    report = build_report(results, method, box_mode, contour if method == "facerig" else None, images_dir, extra)
    json_path = write_json(json_path, report, default=_json_default)
    csv_path = write_csv(results, json_path.with_suffix(".csv"))
    log.info("wrote %s and %s", json_path, csv_path)
    if plot:
        from .report import landmark_figure

        png = landmark_figure(results, items, json_path.with_suffix(".png"),
                              title=f"{landmarker.name} ({box_mode} box) on {Path(images_dir).name}")
        log.info("wrote %s", png)
    return report


def _json_default(o: Any) -> Any:
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    raise TypeError(f"{type(o).__name__} is not JSON serialisable")
