"""``facerig eval synthetic``: the regressor's 3-D, landmark, expression and pose errors on a corpus.

Ground truth is exact here, so this is where vertex errors (camera space and after rigid
alignment), expression and rotation errors can be measured at all; binned by the ground-truth
|yaw|. The regressor runs through onnxruntime exactly as the add-on runs it (not through
torch), so the numbers are those of the shipped model. Metric definitions:
:mod:`facemodel.metrics` (docs/conventions.md, "Metrics"; the learner's validation uses the same).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from facemodel import FaceModel, FaceParams, ParamLayout, metrics
from facemodel.outputs import write_json

log = logging.getLogger(__name__)

METRIC_KEYS = ("vertex_mm_camera", "vertex_mm_aligned", "nme_bbox_68", "expression_mae", "rotation_deg")
ATTRIBUTION_KEYS = ("identity_only", "expression_only", "mean_identity", "truncated_identity", "scale_free",
                    "identity_only_scale_free", "mean_identity_scale_free")
BATCH = 64


def summarize(errors: dict[str, np.ndarray], yaw_deg: np.ndarray) -> dict[str, Any]:
    """Stable JSON: overall means, per-|yaw|-bin means with counts, balanced means."""
    out: dict[str, Any] = {"n": int(len(yaw_deg))}
    for k in METRIC_KEYS:
        out[k] = metrics.nan_mean(errors[k])
    bins: dict[str, dict[str, Any]] = {}
    for label, mask in metrics.yaw_bin_masks(yaw_deg).items():
        bins[label] = {"n": int(mask.sum()), **{k: metrics.nan_mean(errors[k][mask]) for k in METRIC_KEYS}}
    out["yaw_bins"] = bins
    out["balanced"] = {k: metrics.balanced_mean({b: v[k] for b, v in bins.items()}) for k in METRIC_KEYS}
    if all(k in errors for k in ATTRIBUTION_KEYS):
        out["aligned_attribution_mm"] = {
            "about": "aligned vertex error with only this part predicted (see facemodel.metrics."
                     "aligned_error_attribution); mean_identity and truncated_identity use no prediction; "
                     "*_scale_free after a similarity alignment (overall size forgiven)",
            **{k: metrics.means_by_bin(errors[k], yaw_deg) for k in ATTRIBUTION_KEYS}}
    out["units"] = {"vertex_mm_camera": "mm", "vertex_mm_aligned": "mm", "nme_bbox_68": "percent",
                    "expression_mae": "blendshape weight", "rotation_deg": "degrees"}
    return out


def _resize(images: np.ndarray, size: int) -> np.ndarray:
    if images.shape[1] == size:
        return images
    import cv2

    interp = cv2.INTER_AREA if images.shape[1] > size else cv2.INTER_LINEAR
    return np.stack([cv2.resize(im, (size, size), interpolation=interp) for im in images])


def run(corpus_dir: Path, json_path: Path, onnx_path: Path | None = None, model_path: str | None = None,
        limit: int | None = None, plot: bool = True, progress: bool = True) -> dict[str, Any]:
    """Predict every corpus image with the ONNX regressor and write the report (+ ``<stem>.png``)."""
    from synth.corpus import open_corpus

    from .regressor import default_onnx_path, load_regressor

    corpus = open_corpus(corpus_dir)
    regressor = load_regressor(onnx_path or default_onnx_path())
    size = regressor.input_size
    model = FaceModel.load(model_path)
    gt_layout: ParamLayout = corpus.layout
    cols: dict[str, list[np.ndarray]] = {k: [] for k in METRIC_KEYS + ATTRIBUTION_KEYS}
    yaws: list[np.ndarray] = []
    total = min(len(corpus), limit) if limit else len(corpus)
    done = 0
    bar = tqdm(total=total, desc="eval synthetic", unit="img", disable=not progress)
    for shard in corpus.iter_shards(["images", "params", "landmarks", "pose_deg"]):
        for i in range(0, len(shard["images"]), BATCH):
            if done >= total:
                break
            j = min(i + BATCH, len(shard["images"]), i + total - done)
            crops = _resize(shard["images"][i:j], size)
            pred = regressor.predict(crops)
            gt = FaceParams.from_vector(shard["params"][i:j].astype(np.float32), gt_layout)
            errs = metrics.sample_errors(model, pred, gt, corpus.image_size, shard["landmarks"][i:j][:, :68],
                                         attribution=True)
            for k in METRIC_KEYS + ATTRIBUTION_KEYS:
                cols[k].append(np.asarray(errs[k], np.float64))
            yaws.append(shard["pose_deg"][i:j, 0].astype(np.float64))
            done += j - i
            bar.update(j - i)
        if done >= total:
            break
    bar.close()
    errors = {k: np.concatenate(v) if v else np.zeros(0) for k, v in cols.items()}
    yaw = np.concatenate(yaws) if yaws else np.zeros(0)
    report = summarize(errors, yaw)
    report.update({"corpus": str(corpus_dir), "model": str(onnx_path or default_onnx_path()),
                   "image_size": corpus.image_size, "regressor_input_size": size,
                   "yaw_source": "ground truth (corpus pose_deg)"})
    json_path = write_json(json_path, report)
    if plot:
        from .report import error_vs_yaw_figure

        png = error_vs_yaw_figure(yaw, {k: errors[k] for k in METRIC_KEYS}, json_path.with_suffix(".png"),
                                  title=f"synthetic errors against |yaw| ({len(yaw)} images)",
                                  units=report["units"])
        log.info("wrote %s", png)
    return report
