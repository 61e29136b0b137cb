"""Evaluation metrics, numpy only, exactly as defined in docs/conventions.md "Metrics".

One implementation for every consumer: the photo evaluation harness (``evaluation/``), the
synthetic validation of the learner (``learner/evaluate.py``) and the model card. Keeping the
definitions here (rather than in a torch- or cv2-bound package) means a number reported by
training and a number reported by ``facerig eval`` are computed by the same lines.

Conventions
-----------
* Landmark arrays are ``(…, 68, 2)`` pixels; a batch axis is optional everywhere.
* NME values are returned as **percentages**.
* Vertex arrays are ``(…, V, 3)`` in the model unit (cm); vertex errors are returned in **mm**.
* Yaw bins are over ``|yaw|`` in degrees: ``[0, 30)``, ``[30, 60)``, ``[60, 90]``; anything beyond
  90° (a regressor may overshoot on profiles) falls into the last bin rather than being dropped,
  so every sample is counted once.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Mapping

import numpy as np

from .geometry import euler_to_matrix, procrustes_align
from .model import EYE_CORNERS, INNER_51

if TYPE_CHECKING:
    from .model import FaceModel, ModelArrays
    from .params import FaceParams

YAW_BINS: tuple[tuple[float, float], ...] = ((0.0, 30.0), (30.0, 60.0), (60.0, 90.0))
MM_PER_UNIT = 10.0  # model unit is cm


def yaw_bin_label(lo: float, hi: float) -> str:
    """``"0-30"`` — the key used in the JSON reports of ``facerig eval``."""
    return f"{int(lo)}-{int(hi)}"


YAW_BIN_LABELS: tuple[str, ...] = tuple(yaw_bin_label(lo, hi) for lo, hi in YAW_BINS)


# -- landmark errors ------------------------------------------------------------------------
def point_errors(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """(…, N) Euclidean 2-D error per point."""
    pred, gt = np.asarray(pred, np.float64), np.asarray(gt, np.float64)
    if pred.shape != gt.shape or pred.shape[-1] != 2:
        raise ValueError(f"prediction {pred.shape} and ground truth {gt.shape} must both be (…, N, 2)")
    return np.linalg.norm(pred - gt, axis=-1)


def bbox_size(gt68: np.ndarray) -> np.ndarray:
    """(…,) sqrt(w·h) of the ground-truth landmark bounding box over **all 68** points.

    The normaliser always comes from the full 68-point box, also when only the inner 51 points
    are scored, so NME-51 and NME-68 of one face share a denominator (3DDFA's protocol).
    """
    gt68 = np.asarray(gt68, np.float64)
    wh = gt68.max(-2) - gt68.min(-2)
    return np.sqrt(np.maximum(wh[..., 0] * wh[..., 1], 0.0))


def interocular(gt68: np.ndarray) -> np.ndarray:
    """(…,) distance between the outer eye corners (points 36 and 45), the 300W normaliser."""
    gt68 = np.asarray(gt68, np.float64)
    return np.linalg.norm(gt68[..., EYE_CORNERS[0], :] - gt68[..., EYE_CORNERS[1], :], axis=-1)


def _nme(pred: np.ndarray, gt: np.ndarray, norm: np.ndarray, points: tuple[int, ...] | None) -> np.ndarray:
    err = point_errors(pred, gt)
    if points is not None:
        err = err[..., list(points)]
    with np.errstate(divide="ignore", invalid="ignore"):
        out = err.mean(-1) / norm * 100.0
    return np.where(norm > 0, out, np.nan)


def nme_bbox(pred: np.ndarray, gt: np.ndarray, points: tuple[int, ...] | None = None) -> np.ndarray:
    """(…,) NME in % normalised by sqrt(w·h) of the GT 68-point box; ``points`` selects e.g. INNER_51."""
    return _nme(pred, gt, bbox_size(gt), points)


def nme_interocular(pred: np.ndarray, gt: np.ndarray, points: tuple[int, ...] | None = None) -> np.ndarray:
    """(…,) NME in % normalised by the outer-eye-corner distance of the ground truth."""
    return _nme(pred, gt, interocular(gt), points)


def landmark_nmes(pred: np.ndarray, gt: np.ndarray) -> dict[str, np.ndarray]:
    """The four landmark numbers of the reports: bbox/inter-ocular × 68/51, each (…,) in %."""
    return {"nme_bbox_68": nme_bbox(pred, gt), "nme_bbox_51": nme_bbox(pred, gt, INNER_51),
            "nme_io_68": nme_interocular(pred, gt), "nme_io_51": nme_interocular(pred, gt, INNER_51)}


LANDMARK_GROUPS: dict[str, tuple[int, ...]] = {
    "jaw": tuple(range(0, 17)), "brows": tuple(range(17, 27)), "nose": tuple(range(27, 36)),
    "eyes": tuple(range(36, 48)), "mouth": tuple(range(48, 68)),
}


def group_nme_bbox(pred: np.ndarray, gt: np.ndarray) -> dict[str, np.ndarray]:
    """(…,) bbox NME (%) per facial part — a diagnostic of where a method's error comes from."""
    return {name: nme_bbox(pred, gt, pts) for name, pts in LANDMARK_GROUPS.items()}


# -- yaw bins -------------------------------------------------------------------------------
def yaw_bin_masks(yaw_deg: np.ndarray) -> dict[str, np.ndarray]:
    """{"0-30": mask, "30-60": mask, "60-90": mask} over |yaw|; > 90° goes to the last bin.

    Non-finite yaws (a failed pose estimate) belong to no bin.
    """
    a = np.abs(np.asarray(yaw_deg, np.float64))
    finite = np.isfinite(a)
    out: dict[str, np.ndarray] = {}
    for i, (lo, hi) in enumerate(YAW_BINS):
        upper = (a < hi) if i < len(YAW_BINS) - 1 else np.ones_like(finite)
        out[YAW_BIN_LABELS[i]] = finite & (a >= lo) & upper
    return out


def binned_means(values: np.ndarray, yaw_deg: np.ndarray) -> dict[str, dict[str, float | int | None]]:
    """{bin: {"n": count, "mean": mean or None}} of ``values`` per |yaw| bin (NaN values ignored)."""
    values = np.asarray(values, np.float64)
    out: dict[str, dict[str, float | int | None]] = {}
    for label, mask in yaw_bin_masks(yaw_deg).items():
        sel = values[mask & np.isfinite(values)]
        out[label] = {"n": int(sel.size), "mean": float(sel.mean()) if sel.size else None}
    return out


def balanced_mean(bin_means: Mapping[str, float | None]) -> float | None:
    """Unweighted mean of the per-bin means, over the bins that hold samples.

    This is the "balanced" NME of the AFLW2000-3D protocol: it keeps a test set dominated by
    frontal faces from hiding profile errors. With an empty bin the mean is over the others
    (and the report's per-bin ``n`` shows it); ``None`` if all bins are empty.
    """
    filled = [float(v) for v in bin_means.values() if v is not None and np.isfinite(v)]
    return float(np.mean(filled)) if filled else None


def nan_mean(values: np.ndarray) -> float | None:
    """Mean over finite entries; ``None`` (JSON null) when there are none."""
    v = np.asarray(values, np.float64)
    v = v[np.isfinite(v)]
    return float(v.mean()) if v.size else None


def means_by_bin(values: np.ndarray, yaw_deg: np.ndarray) -> dict[str, float | None]:
    """{"all": mean, "0-30": mean, …} of ``values`` (NaN ignored): one report entry per error kind."""
    values = np.asarray(values, np.float64)
    return {"all": nan_mean(values), **{b: nan_mean(values[m]) for b, m in yaw_bin_masks(yaw_deg).items()}}


# -- 3-D errors -----------------------------------------------------------------------------
def vertex_error_mm(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """(…,) mean Euclidean vertex distance in mm for vertices in cm (camera space as given)."""
    pred, gt = np.asarray(pred, np.float64), np.asarray(gt, np.float64)
    return np.linalg.norm(pred - gt, axis=-1).mean(-1) * MM_PER_UNIT


def vertex_error_aligned_mm(pred: np.ndarray, gt: np.ndarray, scale: bool = False) -> np.ndarray:
    """(…,) vertex error in mm after rigid Procrustes alignment of ``pred`` onto ``gt`` (shape only).

    Rotation + translation, no scale: a face predicted too large at the right distance (or too
    small and too close) keeps its size error, which is a shape error a user sees. ``scale=True``
    also fits a uniform scale (similarity alignment, as NoW-style benchmarks do): a diagnostic of
    how much of the error is overall size, which one view shows only through perspective.
    """
    pred, gt = np.asarray(pred, np.float64), np.asarray(gt, np.float64)
    batch = pred.shape[:-2]
    p2, g2 = pred.reshape((-1,) + pred.shape[-2:]), gt.reshape((-1,) + gt.shape[-2:])
    aligned = np.stack([procrustes_align(a, b, scale) for a, b in zip(p2, g2)]) if len(p2) else p2
    return vertex_error_mm(aligned, g2).reshape(batch)


def rotation_error_deg(rot_pred: np.ndarray, rot_gt: np.ndarray) -> np.ndarray:
    """(…,) geodesic angle of R_predᵀ R_gt in degrees for (yaw, pitch, roll) radians."""
    rp = euler_to_matrix(np.asarray(rot_pred, np.float64))
    rg = euler_to_matrix(np.asarray(rot_gt, np.float64))
    r = np.swapaxes(rp, -1, -2) @ rg
    cos = (np.trace(r, axis1=-2, axis2=-1) - 1.0) / 2.0
    return np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))


def expression_mae(expr_pred: np.ndarray, expr_gt: np.ndarray) -> np.ndarray:
    """(…,) mean absolute blendshape weight error over the 53 expressions."""
    return np.abs(np.asarray(expr_pred, np.float64) - np.asarray(expr_gt, np.float64)).mean(-1)


# -- curves ---------------------------------------------------------------------------------
def cumulative_error_curve(errors: np.ndarray, max_error: float, steps: int = 200
                           ) -> tuple[np.ndarray, np.ndarray]:
    """(thresholds, fraction of samples with error ≤ threshold); failures (NaN/inf) never count."""
    e = np.asarray(errors, np.float64)
    thr = np.linspace(0.0, max_error, steps)
    if e.size == 0:
        return thr, np.zeros_like(thr)
    e = np.where(np.isfinite(e), e, np.inf)
    return thr, (e[None, :] <= thr[:, None]).mean(1)


def auc_at(errors: np.ndarray, max_error: float, steps: int = 1000) -> float:
    """Area under the cumulative error curve up to ``max_error``, normalised to [0, 1]."""
    thr, frac = cumulative_error_curve(errors, max_error, steps)
    return float(np.trapz(frac, thr) / max_error)


def failure_rate(errors: np.ndarray, threshold: float) -> float:
    """Fraction of samples with error above ``threshold`` (failures to predict count as above)."""
    e = np.asarray(errors, np.float64)
    if e.size == 0:
        return float("nan")
    return float((~(np.where(np.isfinite(e), e, np.inf) <= threshold)).mean())


# -- retrieval ------------------------------------------------------------------------------------
def retrieval_ranks(distances: np.ndarray) -> np.ndarray:
    """(N,) rank of the true match for queries ``i`` against a gallery (N, G), match ``j = i``.

    Rank 0 = the true match is the nearest; ties count against it (a constant predictor that
    gives every gallery entry the same distance ranks last, not first).
    """
    d = np.asarray(distances, np.float64)
    if d.ndim != 2 or d.shape[1] < d.shape[0]:
        raise ValueError(f"distances must be (N, G) with G ≥ N, got shape {d.shape}")
    own = d[np.arange(len(d)), np.arange(len(d))]
    others = d <= own[:, None]
    others[np.arange(len(d)), np.arange(len(d))] = False
    return others.sum(1)


# -- all per-sample errors of a prediction against exact ground truth -----------------------------
def sample_errors(model: "FaceModel", pred: "FaceParams", gt: "FaceParams", image_size: int,
                  gt_landmarks: np.ndarray | None = None, attribution: bool = False) -> dict[str, np.ndarray]:
    """(N,) arrays of every synthetic metric for batched predicted and ground-truth parameters.

    Vertex errors on the face region (vertices 0–9408) in camera space and after rigid alignment,
    the four landmark NMEs on the fixed 68 points, expression MAE and rotation error. One function
    for the learner's validation and ``facerig eval synthetic``, so both report the same numbers.
    ``gt_landmarks`` (N, 68, 2) are a corpus' stored points; without them ``gt`` is projected.
    ``attribution`` adds the entries of :func:`aligned_error_attribution`, reusing the two meshes
    formed here instead of forming them again.
    """
    from .formation import landmarks_2d, mesh_camera_space

    face = _face_arrays(model)
    lms = model.arrays.subset(model.landmark_indices("fixed"))
    vp, vg = mesh_camera_space(face, pred), mesh_camera_space(face, gt)
    lp = landmarks_2d(lms, pred, image_size, image_size)
    lg = landmarks_2d(lms, gt, image_size, image_size) if gt_landmarks is None else np.asarray(gt_landmarks)
    out = {"vertex_mm_camera": vertex_error_mm(vp, vg), "vertex_mm_aligned": vertex_error_aligned_mm(vp, vg),
           **landmark_nmes(lp, lg), "expression_mae": expression_mae(pred.expression, gt.expression),
           "rotation_deg": rotation_error_deg(pred.rotation, gt.rotation)}
    if attribution:
        out.update(_attribution(face, pred, gt, vp, vg))
    return out


# -- where the aligned vertex error comes from ------------------------------------------------
def aligned_error_attribution(model: "FaceModel", pred: "FaceParams", gt: "FaceParams"
                              ) -> dict[str, np.ndarray]:
    """(N,) aligned face-region vertex errors (mm) of partial predictions, to see what limits shape.

    Each entry replaces one part of the ground truth and keeps the rest exact, so the rigid
    alignment removes pose and only that part's error remains:

    * ``identity_only`` — predicted identity, true expression;
    * ``expression_only`` — true identity, predicted expression;
    * ``mean_identity`` — identity 0 (the mean face), true expression: what predicting no identity
      at all would score, the baseline ``identity_only`` has to beat;
    * ``truncated_identity`` — true identity cut to the prediction's number of modes: the floor a
      regressor with that many modes cannot go below;
    * ``scale_free``, ``identity_only_scale_free``, ``mean_identity_scale_free`` — the whole
      prediction, ``identity_only`` and ``mean_identity`` after a similarity alignment (uniform
      scale too): what remains once overall size, which trades against distance in one view, is
      forgiven.
    """
    from .formation import mesh_camera_space

    face = _face_arrays(model)
    return _attribution(face, pred, gt, mesh_camera_space(face, pred), mesh_camera_space(face, gt))


def _attribution(face: "ModelArrays", pred: "FaceParams", gt: "FaceParams", pred_mesh: np.ndarray,
                 gt_mesh: np.ndarray) -> dict[str, np.ndarray]:
    """:func:`aligned_error_attribution` given the already formed face meshes of ``pred`` and ``gt``."""
    variants = {"identity_only": replace(gt, identity=pred.with_identity_modes(gt.n_identity).identity),
                "expression_only": replace(gt, expression=np.asarray(pred.expression, np.float32)),
                **_identity_reference_variants(gt, pred.n_identity)}
    meshes = _variant_meshes(face, variants)
    out = {k: vertex_error_aligned_mm(meshes[k], gt_mesh) for k in variants}
    out["scale_free"] = vertex_error_aligned_mm(pred_mesh, gt_mesh, scale=True)
    for k in ("identity_only", "mean_identity"):
        out[f"{k}_scale_free"] = vertex_error_aligned_mm(meshes[k], gt_mesh, scale=True)
    return out


def identity_reference_errors(model: "FaceModel", gt: "FaceParams", n_identity: int) -> dict[str, np.ndarray]:
    """(N,) ``mean_identity`` and ``truncated_identity`` errors of :func:`aligned_error_attribution`.

    The two references any identity estimate with ``n_identity`` modes is read against; they need
    no prediction, so the identity bound (``facerig eval identity-bound``) reports them too.
    """
    from .formation import mesh_camera_space

    face = _face_arrays(model)
    target = mesh_camera_space(face, gt)
    meshes = _variant_meshes(face, _identity_reference_variants(gt, n_identity))
    return {k: vertex_error_aligned_mm(m, target) for k, m in meshes.items()}


def _identity_reference_variants(gt: "FaceParams", n_identity: int) -> dict[str, "FaceParams"]:
    return {"mean_identity": replace(gt, identity=np.zeros_like(np.asarray(gt.identity))),
            "truncated_identity": replace(gt, identity=gt.with_identity_modes(n_identity)
                                          .with_identity_modes(gt.n_identity).identity)}


def _variant_meshes(face: "ModelArrays", variants: Mapping[str, "FaceParams"]) -> dict[str, np.ndarray]:
    """Camera-space face-region mesh of each parameter variant."""
    from .formation import mesh_camera_space

    return {k: mesh_camera_space(face, v) for k, v in variants.items()}


def _face_arrays(model: "FaceModel") -> "ModelArrays":
    """The model restricted to the face region (vertices 0–9408), where every vertex error is taken."""
    return model.arrays.subset(model.vertex_range("face"))


def identity_mode_report(model: "FaceModel", ks: tuple[int, ...] = (20, 40, 60, 80, 100)) -> list[dict[str, float]]:
    """How much face-region geometry the leading k identity modes capture (justifies n_identity).

    Coefficients are independent N(0, 1), so the vertex-space variance is Σ‖B_i‖²: ``cum_var``
    is the share of the first k modes, ``trunc_rms_mm`` the RMS vertex error of dropping the rest,
    ``fit_rms_mm`` the RMS error left after the best least-squares fit with k modes (the modes
    are not orthogonal, so the others can partly absorb the dropped ones).
    """
    face = model.vertex_range("face")
    b = model.identity_basis[:, face].reshape(model.n_identity, -1).astype(np.float64)
    energy = (b * b).sum(1)
    out = []
    for k in ks:
        rest = b[k:]
        if k < len(b) and k > 0:
            q, _ = np.linalg.qr(b[:k].T)
            resid = rest.T - q @ (q.T @ rest.T)
            fit = np.sqrt((resid ** 2).sum() / len(face)) * 10
        else:
            fit = 0.0 if k >= len(b) else np.sqrt(energy.sum() / len(face)) * 10
        out.append({"k": k, "cum_var": float(energy[:k].sum() / energy.sum()),
                    "trunc_rms_mm": float(np.sqrt(energy[k:].sum() / len(face)) * 10), "fit_rms_mm": float(fit)})
    return out
