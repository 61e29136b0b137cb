"""One identity from several photos of one person (Deep3DFaceRecon's C-Net aggregation, eq. 7).

Each photo k gives identity coefficients α_k and a positive confidence c_k per coefficient (the
C-Net, ``learner/cnet.py``); the person's identity is the element-wise confidence-weighted
mean α = Σ_k c_k ⊙ α_k / Σ_k c_k. Equal confidences give plain averaging; one confidence per
photo (``(K, 1)``) gives the global-score variant.

Distances between identities are measured as shapes, not coefficients: the RMS vertex distance
over the face region (mm), because modes move the face by very different amounts.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from .model import FaceModel


def aggregate_identity(identities: np.ndarray, confidences: np.ndarray | None = None) -> np.ndarray:
    """(n,) confidence-weighted mean of (K, n) identities; ``confidences`` (K, n) or (K, 1) > 0."""
    a = np.asarray(identities, np.float64)
    if a.ndim != 2 or len(a) == 0:
        raise ValueError(f"identities must be (K, n) with K ≥ 1, got shape {a.shape}")
    c = np.ones_like(a) if confidences is None else np.broadcast_to(np.asarray(confidences, np.float64), a.shape)
    if not np.all(c > 0):
        raise ValueError("confidences must be positive")
    return ((c * a).sum(0) / c.sum(0)).astype(np.float32)


def _pad_modes(x: np.ndarray, n: int) -> np.ndarray:
    """Identities (…, k) with zero coefficients appended up to ``n`` modes."""
    return np.concatenate([x, np.zeros(x.shape[:-1] + (n - x.shape[-1],), x.dtype)], -1)


def _face_basis(model: "FaceModel", n: int, dtype: type) -> np.ndarray:
    """(n, F·3) the first ``n`` identity modes over the face region, cm."""
    return np.asarray(model.identity_basis[:n, model.vertex_range("face")], dtype).reshape(n, -1)


def identity_rms_mm(model: "FaceModel", a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """RMS distance (mm) over the face region between identity shapes ``a`` (…, n) and ``b`` (…, n)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    n = max(a.shape[-1], b.shape[-1])
    d = (_pad_modes(a, n) - _pad_modes(b, n)).astype(np.float32)
    basis = _face_basis(model, n, np.float32)
    disp = (d.reshape(-1, n) @ basis).reshape(d.shape[:-1] + (-1, 3)).astype(np.float64)
    return np.sqrt((disp ** 2).sum(-1).mean(-1)) * 10.0


def identity_shape_error_mm(model: "FaceModel", a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Mean vertex distance (mm) over the face region between identity shapes ``a`` (…, n) and ``b``
    (…, n): the error the C-Net is trained and reported on (``learner.cnet.ShapeError``)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    n = max(a.shape[-1], b.shape[-1])
    d = (_pad_modes(a, n) - _pad_modes(b, n)).astype(np.float32)
    disp = (d.reshape(-1, n) @ _face_basis(model, n, np.float32)).reshape(d.shape[:-1] + (-1, 3))
    return np.linalg.norm(disp.astype(np.float64), axis=-1).mean(-1) * 10.0


def identity_distance_matrix_mm(model: "FaceModel", a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(A, B) RMS face-region distances (mm) between every identity of ``a`` (A, n) and ``b`` (B, n).

    The same distance as :func:`identity_rms_mm`, computed through the Gram matrix of the basis
    over the face region (n × n) so that hundreds × hundreds of pairs need no mesh each.
    """
    a, b = np.atleast_2d(np.asarray(a, np.float64)), np.atleast_2d(np.asarray(b, np.float64))
    n = max(a.shape[-1], b.shape[-1])
    a, b = _pad_modes(a, n), _pad_modes(b, n)
    basis = _face_basis(model, n, np.float64)
    gram = basis @ basis.T / (basis.shape[1] // 3)                        # cm² per vertex
    ga, gb = a @ gram, b @ gram
    sq = (ga * a).sum(1)[:, None] + (gb * b).sum(1)[None, :] - 2.0 * ga @ b.T
    return np.sqrt(np.clip(sq, 0.0, None)) * 10.0


def leave_one_out_distances(model: "FaceModel", identities: np.ndarray, confidences: np.ndarray | None = None
                            ) -> np.ndarray:
    """(K,) RMS shape distance (mm) of each photo's identity from the aggregate of the *other* photos.

    Leaving the photo out keeps an odd one from pulling the reference towards itself (with K
    photos it would otherwise count for 1/K of it); one photo alone has distance 0.
    """
    a = np.asarray(identities, np.float64)
    k = len(a)
    if k < 2:
        return np.zeros(k)
    c = np.ones_like(a) if confidences is None else np.broadcast_to(np.asarray(confidences, np.float64), a.shape)
    others = np.stack([aggregate_identity(np.delete(a, i, 0), np.delete(c, i, 0)) for i in range(k)])
    return identity_rms_mm(model, a, others)


def flag_outliers(model: "FaceModel", identities: np.ndarray, threshold_mm: float,
                  confidences: np.ndarray | None = None) -> np.ndarray:
    """(K,) bool: photos farther than ``threshold_mm`` from the others' aggregate (leave-one-out) —
    most likely a different person. Never flags when fewer than 3 photos (no majority to trust)."""
    d = leave_one_out_distances(model, identities, confidences)
    if len(d) < 3:
        return np.zeros(len(d), bool)
    return d > threshold_mm


__all__ = ["aggregate_identity", "identity_rms_mm", "identity_shape_error_mm", "identity_distance_matrix_mm",
           "leave_one_out_distances", "flag_outliers"]
