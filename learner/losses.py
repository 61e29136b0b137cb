"""Training losses. Geometry goes through ``facemodel`` (torch tensors in, torch tensors out).

Terms (each weighted by :class:`learner.config.LossConfig`; weight 0 = not computed):

* ``param``: InverseFaceNet's model-space parameter loss (eq. 6–8): squared parameter errors
  weighted per coefficient and per group (ω). Identity modes are N(0, 1) but move the face by
  very different amounts, so a coefficient's weight is the RMS displacement of its basis over
  the face region (cm per unit), likewise for expressions; the other groups are weighted by
  1/std of the training targets. Translation is compared as (u, v, log depth).
* ``vertex3d``: MobileFace's 3D vertex loss (eq. 3): mean Euclidean distance (cm) over a fixed
  ~1000-vertex subset of the face region, by default in "rotated" space (R·v, translation
  left to the 2D terms, whose depth is better determined by image scale).
* ``vertex2d``: MobileFace's 2D projection loss (eq. 4): mean pixel distance of the projected
  subset, in percent of the image width.
* ``landmark``: masked 2D landmark loss over a *unified* point set, so datasets with different
  point sets (synthetic fixed-jaw 68, photo annotations with a visible jaw contour) are fused:
  each dataset fills its slots of the target vector and the mask.
* ``keypoint``: the keypoint branch's soft-argmax points (``network.keypoints``) against the
  true projections of the same evenly spread face vertices, in percent of the image width.
* priors on identity (‖α‖²), expression (L1: sparse activations), albedo (standardised ‖·‖²) and the
  corrective field (eigenvalue-weighted, Σ_k λ_k/λ_1 |c_k|², cm²), averaged over the samples without
  parameter labels only. Renders have no corrective field: their parameter target for it is zero (the
  corpus layout has none; :meth:`FaceLoss._gt_in_net_layout` pads it), and the vertex terms see it.

Samples without parameter labels (``has_params`` false, e.g. photos with landmarks only) only
contribute to the landmark and prior terms.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch

from facemodel import FaceModel, FaceParams, ModelArrays, ParamLayout
from facemodel.formation import mesh_camera_space, mesh_model_space, project_to_image
from facemodel.geometry import rigid_transform
from facemodel.harmonics import corrective_point_basis, corrective_prior_weights
from facemodel.model import JAWLINE_VISIBLE_LEFT, JAWLINE_VISIBLE_RIGHT

from .config import LossConfig
from .network import OutputStats, translation_to_uvlogd

# Unified landmark vector: slots 0–67 = the 68 fixed-jaw model landmarks, 68–75 = visible jaw
# contour right (replaces 68-pt 0–7), 76–83 = visible jaw contour left (replaces 9–16).
N_UNIFIED = 84
_JAW_R, _JAW_L = list(range(0, 8)), list(range(9, 17))
# scheme → unified slot of each of its source points.
LANDMARK_SCHEMES: dict[str, np.ndarray] = {
    # synthetic corpora: projections of the fixed 68 landmark vertices
    "fixed68": np.arange(68),
    # photo annotations (iBUG/300W/Helen 68): the jaw follows the visible contour, the chin and
    # the 51 inner points are the fixed ones
    "ibug68": np.array([68 + i for i in range(8)] + [8] + [76 + i for i in range(8)] + list(range(17, 68))),
    # the 16 contour points of a 68-point set (corpus ``landmarks_visible_jaw``); others ignored
    "visible_jaw68": np.array([68 + i for i in range(8)] + [-1] + [76 + i for i in range(8)] + [-1] * 51),
    # MediaPipe FaceMesh mapped to 68 (facemodel.landmark_maps): its jaw is FACE_OVAL, fixed mesh
    # vertices like the model's own fixed jaw, so all 68 fill the fixed slots
    "mediapipe68": np.arange(68),
}


def unified_vertex_indices(model: FaceModel) -> np.ndarray:
    """(84,) mesh vertex of each unified landmark slot."""
    return np.concatenate([model.landmark_indices("fixed"), JAWLINE_VISIBLE_RIGHT, JAWLINE_VISIBLE_LEFT])


def to_unified(points: np.ndarray, scheme: str, valid: np.ndarray | None = None
               ) -> tuple[np.ndarray, np.ndarray]:
    """Source landmarks (N, K, 2) → unified targets (N, 84, 2) and mask (N, 84)."""
    slots = LANDMARK_SCHEMES[scheme]
    points = np.asarray(points, np.float32)
    if points.shape[-2] != len(slots):
        raise ValueError(f"landmark scheme {scheme!r} has {len(slots)} points, got {points.shape[-2]}")
    n = points.shape[0]
    target = np.zeros((n, N_UNIFIED, 2), np.float32)
    mask = np.zeros((n, N_UNIFIED), bool)
    ok = np.ones(points.shape[:2], bool) if valid is None else np.asarray(valid, bool)
    ok = ok & np.isfinite(points).all(-1)
    keep = slots >= 0
    target[:, slots[keep]] = np.where(ok[:, keep, None], points[:, keep], 0)
    mask[:, slots[keep]] = ok[:, keep]
    return target, mask


def face_vertex_subset(model: FaceModel, count: int) -> np.ndarray:
    """Fixed, evenly spread subset of the 9409 face-region vertices (mesh order is spatial)."""
    face = model.vertex_range("face")
    count = min(count, len(face))
    return face[np.round(np.linspace(0, len(face) - 1, count)).astype(np.int64)]


def keypoint_vertices(model: FaceModel, count: int) -> np.ndarray:
    """The face vertices the keypoint branch predicts: an even spread over the face region."""
    return face_vertex_subset(model, count)


def basis_rms(basis_flat: np.ndarray, vertices: np.ndarray) -> np.ndarray:
    """(K,) RMS vertex displacement (cm per unit coefficient) of each basis over ``vertices``."""
    k = basis_flat.shape[0]
    b = basis_flat.reshape(k, -1, 3)[:, vertices].astype(np.float64)
    return np.sqrt((b ** 2).sum(-1).mean(-1))


@dataclass
class Batch:
    """One training batch, all torch tensors. ``params`` use the corpus layout (all identity
    modes the data has, so vertex targets are the true shapes); pixel coordinates are in
    the network's input resolution."""

    images: torch.Tensor          # (B, 3, S, S) float in [0, 1], channels_last
    params: torch.Tensor          # (B, P_gt)
    has_params: torch.Tensor      # (B,) bool
    landmarks: torch.Tensor       # (B, 84, 2) px
    landmark_mask: torch.Tensor   # (B, 84) bool
    appearance_ok: torch.Tensor | None = None  # (B,) bool: SH/albedo labels match the pixels


class FaceLoss:
    """All loss terms for one network layout; holds torch copies of the needed model arrays."""

    def __init__(self, model: FaceModel, layout: ParamLayout, gt_layout: ParamLayout, config: LossConfig,
                 stats: OutputStats, image_size: int, dtype: torch.dtype = torch.float32,
                 n_keypoints: int = 0) -> None:
        self.config, self.layout, self.gt_layout, self.size = config, layout, gt_layout, image_size
        self.face_idx = face_vertex_subset(model, config.n_face_vertices)
        arrays = model.arrays
        face_np = arrays.subset(self.face_idx)
        lm_np = arrays.subset(unified_vertex_indices(model))
        as_t = lambda a: torch.as_tensor(np.asarray(a), dtype=dtype if np.asarray(a).dtype.kind == "f" else None)  # noqa: E731
        self.face: ModelArrays = face_np.map(as_t)
        self.landmarks: ModelArrays = lm_np.map(as_t)
        self.keypoint_arrays: ModelArrays | None = None
        if n_keypoints:
            self.keypoint_arrays = arrays.subset(keypoint_vertices(model, n_keypoints)).map(as_t)
        all_face = model.vertex_range("face")
        s = layout.slices
        w = np.ones(layout.size - 3, np.float64)
        w[s["identity"]] = basis_rms(arrays.identity_basis[: layout.n_identity], all_face)
        w[s["expression"]] = basis_rms(arrays.expression_basis, all_face)
        k_corr = layout.n_corrective
        corr_raw = slice(s["corrective"].start - 3, s["corrective"].stop - 3)   # the raw vector has no camera
        if k_corr:
            field = corrective_point_basis(arrays.corrective_basis, k_corr).reshape(3 * k_corr, -1)
            w[corr_raw] = basis_rms(field, all_face)
        self.corrective_weight = torch.as_tensor(corrective_prior_weights(arrays.corrective_eigenvalues)[:k_corr],
                                                 dtype=dtype)
        other = slice(s["rotation"].start, s["albedo"].stop)
        w[other] = 1.0 / stats.std[other].astype(np.float64)
        self.param_weight = torch.as_tensor(w, dtype=dtype)
        self.albedo_mean = torch.as_tensor(stats.mean[s["albedo"]], dtype=dtype)
        self.albedo_std = torch.as_tensor(stats.std[s["albedo"]], dtype=dtype)
        self.groups = {g: s[g] for g in ("identity", "expression", "rotation", "translation", "sh", "albedo")}
        self.groups["corrective"] = corr_raw

    def to(self, device: torch.device | str) -> "FaceLoss":
        """Move the model arrays and weights to ``device`` (in place; returns self)."""
        move = lambda a: a.to(device) if isinstance(a, torch.Tensor) else a  # noqa: E731
        self.face, self.landmarks = self.face.map(move), self.landmarks.map(move)
        if self.keypoint_arrays is not None:
            self.keypoint_arrays = self.keypoint_arrays.map(move)
        self.param_weight, self.albedo_mean, self.albedo_std = (
            move(self.param_weight), move(self.albedo_mean), move(self.albedo_std))
        return self

    @property
    def device(self) -> torch.device:
        return self.param_weight.device

    # -- helpers -----------------------------------------------------------------------------
    def _gt_in_net_layout(self, gt: torch.Tensor) -> torch.Tensor:
        """Ground truth in the network's layout (identity and corrective truncated or zero-padded)."""
        gs = self.gt_layout.slices
        k = min(self.gt_layout.n_identity, self.layout.n_identity)
        ident = gt.new_zeros(gt.shape[0], self.layout.n_identity)
        ident[:, :k] = gt[:, gs["identity"]][:, :k]
        corr = gt.new_zeros(gt.shape[0], 3 * self.layout.n_corrective)
        m = 3 * min(self.gt_layout.n_corrective, self.layout.n_corrective)
        corr[:, :m] = gt[:, gs["corrective"]][:, :m]
        return torch.cat([ident, gt[:, gs["identity"].stop: gs["camera"].stop], corr], 1)

    def _raw(self, vec: torch.Tensor) -> torch.Tensor:
        s = self.layout.slices
        return torch.cat([vec[:, : s["translation"].start], translation_to_uvlogd(vec[:, s["translation"]]),
                          vec[:, s["translation"].stop: s["camera"].start], vec[:, s["corrective"]]], 1)

    # -- terms -------------------------------------------------------------------------------
    def param_loss(self, pred: torch.Tensor, gt: torch.Tensor, appearance_ok: torch.Tensor | None = None
                   ) -> torch.Tensor:
        """(B,) Σ_groups ω_g Σ_i (w_i Δp_i)² (InverseFaceNet eq. 6–8).

        ``appearance_ok`` false drops the SH and albedo groups of that sample (colour-jittered
        pixels that those labels no longer describe).
        """
        diff = (self._raw(pred) - self._raw(self._gt_in_net_layout(gt))) * self.param_weight
        sq = diff * diff
        total = pred.new_zeros(pred.shape[0])
        for g, sl in self.groups.items():
            omega = self.config.omega.get(g, 1.0)
            if omega and sl.stop > sl.start:
                term = omega * sq[:, sl].sum(1)
                if appearance_ok is not None and g in ("sh", "albedo"):
                    term = term * appearance_ok.to(term.dtype)
                total = total + term
        return total

    def vertices(self, params: FaceParams) -> torch.Tensor:
        space = self.config.vertex3d_space
        if space == "model":
            return mesh_model_space(self.face, params)
        if space == "camera":
            return mesh_camera_space(self.face, params)
        return rigid_transform(mesh_model_space(self.face, params), params.rotation, params.rotation * 0)

    def vertex3d_loss(self, pred: FaceParams, gt: FaceParams) -> torch.Tensor:
        """(B,) mean Euclidean vertex distance in cm (MobileFace eq. 3)."""
        return _mean_distance(self.vertices(pred) - self.vertices(gt))

    def vertex2d_loss(self, pred: FaceParams, gt: FaceParams) -> torch.Tensor:
        """(B,) mean projected distance in percent of the image width (MobileFace eq. 4)."""
        p = project_to_image(mesh_camera_space(self.face, pred), pred, self.size, self.size)
        g = project_to_image(mesh_camera_space(self.face, gt), gt, self.size, self.size)
        return _mean_distance(p - g) * (100.0 / self.size)

    def predicted_landmarks(self, pred: FaceParams) -> torch.Tensor:
        """(B, 84, 2) unified landmarks of the predicted faces, pixels."""
        return project_to_image(mesh_camera_space(self.landmarks, pred), pred, self.size, self.size)

    def landmark_loss(self, pred: FaceParams, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(B,) masked mean landmark distance in percent of the image width; 0 without points."""
        d = _distance(self.predicted_landmarks(pred) - target) * mask
        n = mask.sum(1)
        return d.sum(1) / n.clamp_min(1) * (100.0 / self.size)

    def keypoint_loss(self, points: torch.Tensor, gt: FaceParams) -> torch.Tensor:
        """(B,) mean distance of the keypoint branch's points to the true projections, % of width."""
        if self.keypoint_arrays is None:
            raise ValueError("this loss was built without keypoints (n_keypoints=0)")
        target = project_to_image(mesh_camera_space(self.keypoint_arrays, gt), gt, self.size, self.size)
        return _mean_distance(points - target) * (100.0 / self.size)

    def __call__(self, pred_vec: torch.Tensor, batch: Batch, keypoints: torch.Tensor | None = None
                 ) -> tuple[torch.Tensor, dict[str, float]]:
        """Total loss (scalar) and the per-term means (unweighted, for logging). ``keypoints``:
        the keypoint branch's (B, K, 2) output; without it (validation) that term is left out."""
        c = self.config
        pred = FaceParams.from_vector(pred_vec, self.layout)
        gt = FaceParams.from_vector(batch.params, self.gt_layout)
        has = batch.has_params.to(pred_vec.dtype)
        n_lab = has.sum().clamp_min(1)
        total = pred_vec.new_zeros(())
        terms: dict[str, torch.Tensor] = {}
        if c.param:
            terms["param"] = (self.param_loss(pred_vec, batch.params, batch.appearance_ok) * has).sum() / n_lab
        if c.vertex3d:
            terms["vertex3d"] = (self.vertex3d_loss(pred, gt) * has).sum() / n_lab
        if c.vertex2d:
            terms["vertex2d"] = (self.vertex2d_loss(pred, gt) * has).sum() / n_lab
        if c.keypoint and keypoints is not None:
            terms["keypoint"] = (self.keypoint_loss(keypoints, gt) * has).sum() / n_lab
        if c.landmark:
            has_lm = batch.landmark_mask.any(1).to(pred_vec.dtype)
            lm_pred = pred if c.landmark_identity_unlabelled else _identity_detached_where(pred, ~batch.has_params)
            terms["landmark"] = (self.landmark_loss(lm_pred, batch.landmarks, batch.landmark_mask) * has_lm
                                 ).sum() / has_lm.sum().clamp_min(1)
        # Priors only where no parameter label pins the face (labelled samples have exact targets).
        unl = 1.0 - has
        n_unl = unl.sum().clamp_min(1)
        if c.prior_identity:
            terms["prior_identity"] = (pred.identity.square().mean(1) * unl).sum() / n_unl
        if c.prior_expression:
            terms["prior_expression"] = (pred.expression.abs().mean(1) * unl).sum() / n_unl
        if c.prior_corrective and self.layout.n_corrective:
            energy = (pred.corrective.square().sum(-1) * self.corrective_weight).sum(-1)
            terms["prior_corrective"] = (energy * unl).sum() / n_unl
        if c.prior_albedo:
            terms["prior_albedo"] = (((pred.albedo - self.albedo_mean) / self.albedo_std).square().mean(1) * unl
                                     ).sum() / n_unl
        for name, value in terms.items():
            total = total + getattr(c, name) * value
        return total, {k: float(v.detach()) for k, v in terms.items()}


def _identity_detached_where(pred: FaceParams, rows: torch.Tensor) -> FaceParams:
    """``pred`` with the identity of ``rows`` cut from the graph (same values, no gradient there)."""
    return replace(pred, identity=torch.where(rows[:, None], pred.identity.detach(), pred.identity))


def _distance(d: torch.Tensor) -> torch.Tensor:
    """Euclidean norm on the last axis, smooth at 0 (finite gradient for a perfect prediction)."""
    return torch.sqrt((d * d).sum(-1) + 1e-8)


def _mean_distance(d: torch.Tensor) -> torch.Tensor:
    return _distance(d).mean(-1)
