"""One identity from several photos of one person (Deep3DFaceRecon's C-Net aggregation, eq. 7).

Each photo k gives identity coefficients α_k and a positive confidence c_k per coefficient (the
C-Net, ``learner/aggregate.py``); the person's identity is the element-wise confidence-weighted
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


def identity_rms_mm(model: "FaceModel", a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """RMS distance (mm) over the face region between identity shapes ``a`` (…, n) and ``b`` (…, n)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    n = max(a.shape[-1], b.shape[-1])
    pad = lambda x: np.concatenate([x, np.zeros(x.shape[:-1] + (n - x.shape[-1],))], -1)  # noqa: E731
    d = pad(a) - pad(b)
    face = model.vertex_range("face")
    basis = np.asarray(model.identity_basis[:n], np.float64)[:, face]        # (n, F, 3) cm
    disp = np.einsum("...k,kfc->...fc", d, basis)
    return np.sqrt((disp ** 2).sum(-1).mean(-1)) * 10.0


def flag_outliers(model: "FaceModel", identities: np.ndarray, aggregate: np.ndarray, threshold_mm: float
                  ) -> np.ndarray:
    """(K,) bool: photos whose identity is farther than ``threshold_mm`` (RMS) from the aggregate —
    most likely a different person."""
    return identity_rms_mm(model, identities, aggregate[None]) > threshold_mm


__all__ = ["aggregate_identity", "identity_rms_mm", "flag_outliers"]
