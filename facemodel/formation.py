"""Image formation: parameters → camera-space mesh → pixels and colours.

This is the only implementation of the forward model. The renderer writes its outputs
(vertex positions and colours) into Blender, the learner differentiates through it with
torch tensors (``ModelArrays.map(torch.as_tensor)``), and the add-on uses it to build the
mesh and the camera. Every function is batched over the leading axes of ``params``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .albedo import vertex_albedo
from .camera import project
from .geometry import model_vertices, rigid_transform, vertex_normals
from .harmonics import corrective_displacement
from .lighting import radiance, srgb_encode
from .model import ModelArrays
from .params import FaceParams
from .xp import namespace


def mesh_model_space(arrays: ModelArrays, params: FaceParams) -> Any:
    """(…, V, 3) vertices in model space (cm), before pose: the morphable model plus the corrective field."""
    verts = model_vertices(arrays.neutral, arrays.identity_basis, arrays.expression_basis,
                           params.identity, params.expression)
    if params.corrective.shape[-2] == 0:
        return verts
    return verts + corrective_displacement(arrays.corrective_basis, params.corrective)


def mesh_camera_space(arrays: ModelArrays, params: FaceParams) -> Any:
    """(…, V, 3) vertices in camera space (cm)."""
    return rigid_transform(mesh_model_space(arrays, params), params.rotation, params.translation)


def project_to_image(points_camera: Any, params: FaceParams, width: int, height: int) -> Any:
    """(…, N, 2) pixel positions of camera-space points under the params' camera."""
    return project(points_camera, params.camera, width, height)


def vertex_colors(arrays: ModelArrays, params: FaceParams, vertices_camera: Any,
                  encode: bool = True) -> Any:
    """(…, V, 3) per-vertex colour: sRGB if ``encode`` else linear radiance."""
    normals = vertex_normals(vertices_camera, arrays.triangles, arrays.vertex_faces)
    albedo = vertex_albedo(arrays.albedo_base, arrays.albedo_axes, params.albedo)
    lin = radiance(albedo, normals, params.sh)
    return srgb_encode(lin) if encode else lin


@dataclass
class Formed:
    """Everything the forward model produces for one batch of parameters."""

    vertices: Any      # (…, V, 3) camera space, cm
    pixels: Any        # (…, V, 2) image positions
    colors: Any        # (…, V, 3) sRGB in [0, 1]


def form(arrays: ModelArrays, params: FaceParams, width: int, height: int,
         with_colors: bool = True) -> Formed:
    """Full forward model for ``width`` × ``height`` images."""
    verts = mesh_camera_space(arrays, params)
    pix = project_to_image(verts, params, width, height)
    colors = vertex_colors(arrays, params, verts) if with_colors else None
    return Formed(verts, pix, colors)


def landmarks_2d(arrays_landmarks: ModelArrays, params: FaceParams, width: int, height: int) -> Any:
    """Pixel landmarks from a vertex subset (``model.arrays.subset(model.landmark_indices())``)."""
    return project_to_image(mesh_camera_space(arrays_landmarks, params), params, width, height)


def facing_camera(vertices_camera: Any, normals: Any) -> Any:
    """(…, V) bool: the vertex normal points towards the camera (back-face test)."""
    xp = namespace(vertices_camera)
    return (normals * -vertices_camera).sum(-1) > xp.zeros_like(vertices_camera[..., 0])
