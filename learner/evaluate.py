"""Synthetic evaluation: the metrics of docs/conventions.md "Metrics", by |yaw| bin.

Used for validation during training, the model card and the evaluation issue. All maths in
numpy through ``facemodel`` (the same forward model as training and rendering).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from facemodel import FaceModel, FaceParams, ParamLayout
from facemodel.metrics import (YAW_BINS, balanced_mean, identity_mode_report, nme_bbox, rotation_error_deg,
                               sample_errors, yaw_bin_masks)

# The metric definitions live in facemodel.metrics (shared with ``facerig eval``), so training
# logs and evaluation reports compute the same numbers; re-exported here for convenience (also
# ``identity_mode_report``, which the model card and the choice of n_identity use).
__all__ = ["YAW_BINS", "evaluate_checkpoint", "evaluate_synthetic", "flatten_metrics", "identity_mode_report",
           "nme_bbox", "per_sample_errors", "predict", "rotation_error_deg", "summarize", "yaw_bin_masks"]


@torch.no_grad()
def predict(network: torch.nn.Module, images: torch.Tensor, size: int, batch_size: int = 128) -> np.ndarray:
    """Network outputs for uint8 images (N, S, S, 3) in eval mode."""
    was_training = network.training
    network.eval()
    device = next(network.parameters()).device   # the images go where the network is (CPU or GPU)
    out = []
    for i in range(0, len(images), batch_size):
        x = images[i:i + batch_size].to(device).permute(0, 3, 1, 2).float().div_(255.0)
        if x.shape[-1] != size:
            x = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", antialias=True)
        out.append(network(x.contiguous(memory_format=torch.channels_last)).float().cpu().numpy())
    network.train(was_training)
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


def per_sample_errors(model: FaceModel, pred_vec: np.ndarray, pred_layout: ParamLayout, gt_vec: np.ndarray,
                      gt_layout: ParamLayout, image_size: int, gt_landmarks: np.ndarray | None = None,
                      chunk: int = 256) -> dict[str, np.ndarray]:
    """Per-sample metrics: vertex errors (mm, face region 0–9408), NME (%), expression MAE,
    rotation error (deg). ``gt_landmarks`` (N, 68, 2) px, else projected from ``gt_vec``."""
    cols: dict[str, list[np.ndarray]] = {}
    for i in range(0, len(pred_vec), chunk):
        p = FaceParams.from_vector(np.asarray(pred_vec[i:i + chunk], np.float32), pred_layout)
        g = FaceParams.from_vector(np.asarray(gt_vec[i:i + chunk], np.float32), gt_layout)
        lg = None if gt_landmarks is None else np.asarray(gt_landmarks[i:i + chunk], np.float32)
        for k, v in sample_errors(model, p, g, image_size, lg).items():
            cols.setdefault(k, []).append(np.asarray(v, np.float64))
    return {k: np.concatenate(v) for k, v in cols.items()}


def summarize(errors: dict[str, np.ndarray], yaw_deg: np.ndarray) -> dict[str, Any]:
    """{metric: {"all", "0-30", "30-60", "60-90", "balanced"}} plus bin counts (NaNs ignored)."""
    bins = yaw_bin_masks(yaw_deg)
    out: dict[str, Any] = {"count": {"all": int(len(yaw_deg)), **{k: int(m.sum()) for k, m in bins.items()}}}
    for name, values in errors.items():
        ok = np.isfinite(values)
        row: dict[str, float] = {"all": float(values[ok].mean()) if ok.any() else float("nan")}
        for b, m in bins.items():
            row[b] = float(values[m & ok].mean()) if (m & ok).any() else float("nan")
        bal = balanced_mean({b: row[b] for b in bins})
        row["balanced"] = float("nan") if bal is None else bal
        out[name] = row
    return out


def evaluate_synthetic(model: FaceModel, pred_vec: np.ndarray, pred_layout: ParamLayout, gt_vec: np.ndarray,
                       gt_layout: ParamLayout, image_size: int, gt_landmarks: np.ndarray | None = None
                       ) -> dict[str, Any]:
    """All synthetic metrics, binned by the ground-truth |yaw|."""
    yaw = np.degrees(FaceParams.from_vector(np.asarray(gt_vec), gt_layout).rotation[..., 0])
    errors = per_sample_errors(model, pred_vec, pred_layout, gt_vec, gt_layout, image_size, gt_landmarks)
    return summarize(errors, yaw)


def flatten_metrics(summary: dict[str, Any], prefix: str = "val/") -> dict[str, float]:
    """{'val/vertex_mm_camera': …, 'val/vertex_mm_camera@60-90': …} for CSV/JSONL logs."""
    out = {}
    for name, row in summary.items():
        if name == "count":
            continue
        for key, value in row.items():
            out[f"{prefix}{name}" if key == "all" else f"{prefix}{name}@{key}"] = value
    return out


def evaluate_checkpoint(checkpoint: Any, corpora: list[Any], max_images: int | None = None,
                        face_model: FaceModel | None = None) -> dict[str, Any]:
    """Metrics of a trained checkpoint on whole corpora (e.g. a held-out test render)."""
    from .data import load_corpora
    from .checkpoint import load_network

    net, state = load_network(checkpoint)
    data = load_corpora(corpora)
    if max_images is not None:
        data = data.subset(np.arange(min(max_images, len(data))))
    size = net.config.input_size
    pred = predict(net, data.images, size)
    lm68 = (data.landmarks[:, :68] * (size / data.image_size)).numpy()
    return evaluate_synthetic(face_model or FaceModel.load(), pred, net.layout, data.params.numpy(), data.layout,
                              size, lm68)
