"""Rig space: facerig's camera space turned into Blender's Z-up world, in metres.

Camera space (y up, looking down −z, DEVELOPERS.md) becomes Blender's world by one fixed rotation
``CAMERA_TO_WORLD`` (+90° about X), applied to the mesh data and the camera alike, so a frontal head stands
upright facing −Y (Blender's front view). Units are metres (the model's centimetres × 0.01; projection is
scale-free). Used by the builder (:mod:`build_mesh`), the expression/pose operators and the animation import.
"""

from __future__ import annotations

import math

import numpy as np
from mathutils import Matrix, Vector

from .rt import facemodel

CM_TO_M = 0.01

CAMERA_TO_WORLD = Matrix.Rotation(math.pi / 2, 4, "X")


def rest_vertices(model: "facemodel.FaceModel", params: "facemodel.FaceParams") -> np.ndarray:
    """Identity applied, no expression, model space (cm): the shape-key basis."""
    ident = np.asarray(params.identity, np.float32)
    n = ident.shape[-1]
    return model.neutral + (ident @ model.identity_basis[:n].reshape(n, -1)).reshape(model.neutral.shape)


def to_rig_space(vectors_cm: np.ndarray) -> np.ndarray:
    """Model-space cm (y up, face +z) → rig space m (z up, face −y): ``CAMERA_TO_WORLD`` (+90° about X,
    i.e. (x, y, z) → (x, −z, y), done as that exact axis swap) and × 0.01."""
    v = np.asarray(vectors_cm, np.float32)
    out = np.empty(v.shape, np.float32)
    np.multiply(v[..., 0], CM_TO_M, out=out[..., 0])
    np.multiply(v[..., 2], -CM_TO_M, out=out[..., 1])
    np.multiply(v[..., 1], CM_TO_M, out=out[..., 2])
    return out


def world_rotation(params: "facemodel.FaceParams") -> np.ndarray:
    """The photo's head rotation in rig space (3×3): ``C · R(rotation) · C⁻¹``."""
    c = np.array(CAMERA_TO_WORLD.to_3x3(), np.float64)
    return c @ facemodel.geometry.euler_to_matrix(np.asarray(params.rotation, np.float64)) @ c.T


def camera_matrix(params: "facemodel.FaceParams", face_offset: np.ndarray | None = None) -> Matrix:
    """The photo camera for a face posed as ``world = R_world · x + face_offset`` (x in rig space, m)."""
    t = np.asarray(params.translation, np.float64) * CM_TO_M
    c = np.array(CAMERA_TO_WORLD.to_3x3(), np.float64)
    offset = np.zeros(3) if face_offset is None else np.asarray(face_offset, np.float64)
    return Matrix.Translation(Vector(offset - c @ t)) @ CAMERA_TO_WORLD
