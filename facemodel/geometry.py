"""Mesh geometry from parameters: rotation matrices, blendshapes, rigid transform, normals.

All functions are batched over leading axes and work on numpy arrays or torch tensors
(see :mod:`facemodel.xp`), so the learner differentiates through exactly this code.

Rotation convention (documented in docs/conventions.md, "Pose"): ``rotation = (yaw, pitch, roll)``
in radians and ``R = Rz(roll) @ Rx(pitch) @ Ry(yaw)``. Yaw turns the head about the model's
vertical axis (+yaw moves the nose towards +x, the image right), pitch nods it (+pitch turns
the face downwards, towards -y), roll tilts it in the image plane (counter-clockwise as
seen by the camera). Gimbal lock is at pitch = ±90°, far outside face poses, so yaw spans
±90° (profiles) without singularity.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .xp import cross, namespace, normalize


def euler_to_matrix(rotation: Any) -> Any:
    """(…, 3) yaw, pitch, roll in radians → (…, 3, 3) rotation matrices."""
    xp = namespace(rotation)
    yaw, pitch, roll = rotation[..., 0], rotation[..., 1], rotation[..., 2]
    cy, sy = xp.cos(yaw), xp.sin(yaw)
    cp, sp = xp.cos(pitch), xp.sin(pitch)
    cr, sr = xp.cos(roll), xp.sin(roll)
    zero, one = yaw * 0, yaw * 0 + 1
    ry = xp.stack([cy, zero, sy, zero, one, zero, -sy, zero, cy], -1)
    rx = xp.stack([one, zero, zero, zero, cp, -sp, zero, sp, cp], -1)
    rz = xp.stack([cr, -sr, zero, sr, cr, zero, zero, zero, one], -1)
    shape = tuple(rotation.shape[:-1]) + (3, 3)
    return rz.reshape(shape) @ rx.reshape(shape) @ ry.reshape(shape)


def matrix_to_euler(matrix: np.ndarray) -> np.ndarray:
    """Inverse of :func:`euler_to_matrix` (numpy), valid for |pitch| < 90°."""
    m = np.asarray(matrix, dtype=np.float64)
    # R = Rz Rx Ry: m[2,1] = sin(pitch); m[2,0] = -cos(p) sin(y); m[2,2] = cos(p) cos(y);
    # m[0,1] = -sin(r) cos(p); m[1,1] = cos(r) cos(p).
    pitch = np.arcsin(np.clip(m[..., 2, 1], -1.0, 1.0))
    yaw = np.arctan2(-m[..., 2, 0], m[..., 2, 2])
    roll = np.arctan2(-m[..., 0, 1], m[..., 1, 1])
    return np.stack([yaw, pitch, roll], -1)


def blend(neutral: Any, basis_flat: Any, coeffs: Any) -> Any:
    """neutral (V, 3) + coeffs (…, K) @ basis_flat (K, V·3) → (…, V, 3)."""
    offsets = coeffs @ basis_flat
    return neutral + offsets.reshape(tuple(coeffs.shape[:-1]) + tuple(neutral.shape))


def model_vertices(neutral: Any, identity_basis_flat: Any, expression_basis_flat: Any,
                   identity: Any, expression: Any) -> Any:
    """Model-space vertices (cm) for identity (…, Ni) and expression (…, 53) weights.

    ``identity_basis_flat`` may hold more modes than ``identity`` has columns; the leading
    modes are used, so a network predicting fewer identity modes needs no padding.
    """
    n_id = identity.shape[-1]
    xp = namespace(identity, expression)
    coeffs = xp.concatenate([identity, expression], -1)
    basis = xp.concatenate([identity_basis_flat[:n_id], expression_basis_flat], 0)
    return blend(neutral, basis, coeffs)


def rigid_transform(vertices: Any, rotation: Any, translation: Any) -> Any:
    """Model → camera space: R(rotation) · v + translation, batched over leading axes."""
    r = euler_to_matrix(rotation)
    return vertices @ r.swapaxes(-1, -2) + translation[..., None, :]


def triangulate(faces: np.ndarray) -> np.ndarray:
    """(F, 4) quads/triangles padded with -1 → (T, 3) triangles (fan split of quads)."""
    faces = np.asarray(faces)
    tri_a = faces[:, [0, 1, 2]]
    quads = faces[faces[:, 3] >= 0]
    tri_b = quads[:, [0, 2, 3]]
    return np.ascontiguousarray(np.concatenate([tri_a, tri_b], 0).astype(np.int64))


def vertex_face_table(triangles: np.ndarray, n_vertices: int) -> np.ndarray:
    """(V, max_degree) incident-triangle indices, padded with T (an extra zero row).

    A fixed-width gather table lets :func:`vertex_normals` sum face normals with plain
    fancy indexing, identical in numpy and torch (no scatter-add needed).
    """
    n_tri = len(triangles)
    vert = triangles.reshape(-1)
    tri = np.repeat(np.arange(n_tri), 3)
    order = np.argsort(vert, kind="stable")
    vert, tri = vert[order], tri[order]
    counts = np.bincount(vert, minlength=n_vertices)
    width = max(int(counts.max()), 1)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    slot = np.arange(len(vert)) - starts[vert]
    table = np.full((n_vertices, width), n_tri, dtype=np.int64)
    table[vert, slot] = tri
    return table


def face_normals(vertices: Any, triangles: Any) -> Any:
    """Area-weighted (unnormalised) triangle normals (…, T, 3), counter-clockwise front."""
    a = vertices[..., triangles[:, 0], :]
    b = vertices[..., triangles[:, 1], :]
    c = vertices[..., triangles[:, 2], :]
    return cross(b - a, c - a)


def vertex_normals(vertices: Any, triangles: Any, vf_table: Any) -> Any:
    """Unit vertex normals: the area-weighted mean of incident triangle normals."""
    xp = namespace(vertices)
    fn = face_normals(vertices, triangles)
    pad = fn[..., :1, :] * 0
    fn = xp.concatenate([fn, pad], -2)
    return normalize(fn[..., vf_table, :].sum(-2))


def procrustes_align(source: np.ndarray, target: np.ndarray, scale: bool = False) -> np.ndarray:
    """Align ``source`` (N, 3) onto ``target``: rotation + translation, and a uniform scale if ``scale``."""
    s_mean, t_mean = source.mean(0), target.mean(0)
    s, t = source - s_mean, target - t_mean
    u, sv, vt = np.linalg.svd(s.T @ t)
    d = np.sign(np.linalg.det(u @ vt))
    rot = u @ np.diag([1.0, 1.0, d]) @ vt
    k = float((sv * [1.0, 1.0, d]).sum() / (s * s).sum()) if scale else 1.0
    return k * (s @ rot) + t_mean
