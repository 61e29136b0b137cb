"""facerig's face model core: ICT-FaceKit Light, parameters, camera, lighting, priors.

numpy only; imports neither bpy nor torch (torch tensors pass through via ``facemodel.xp``).
"""

from .camera import blender_camera, crop_camera, project, unproject
from .crop import CROP_SCALE, canonical_crop_box
from . import file_digest, harmonics, landmark_fit, lighting_fit, outputs, side_thread
from .landmark_maps import MEDIAPIPE_TO_68
from .formation import Formed, form, landmarks_2d, mesh_camera_space, mesh_model_space, vertex_colors
from .model import (EYE_CORNERS, INNER_51, LICENSE, FaceModel, FaceModelError, ModelArrays,
                    resolve_model_path)
from .params import (ALBEDO_NAMES, DEFAULT_CAMERA, DEFAULT_FOCAL, DEFAULT_N_CORRECTIVE, LAYOUT_VERSION,
                     N_EXPRESSIONS, FaceParams, LayoutError, ParamLayout)

__all__ = [
    "ALBEDO_NAMES", "CROP_SCALE", "DEFAULT_CAMERA", "DEFAULT_FOCAL", "DEFAULT_N_CORRECTIVE", "EYE_CORNERS", "INNER_51",
    "LAYOUT_VERSION", "LICENSE", "MEDIAPIPE_TO_68", "N_EXPRESSIONS", "FaceModel", "FaceModelError", "FaceParams",
    "Formed", "LayoutError", "ModelArrays", "ParamLayout", "blender_camera", "canonical_crop_box", "harmonics",
    "crop_camera", "form", "landmark_fit", "landmarks_2d", "mesh_camera_space", "mesh_model_space", "project",
    "resolve_model_path", "unproject", "vertex_colors",
]
