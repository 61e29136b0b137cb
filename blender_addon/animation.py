"""A Live Link Face capture → keyframes on a built head (bpy).

Blendshape channels become shape-key animation on the skin (an action on its Key; with ICT names a joined
ARKit channel keys both halves), ``JawOpen`` becomes jaw-bone rotation (the bone drives the key), head
angles become neck and head bone rotation (the same 40/60 split as the photo's pose) and eye angles the
eye bones. The capture is resampled to the scene's frame rate: one key per scene frame, linear between
the capture's samples, so a 60 fps take lasts as many seconds in a 24 or 30 fps scene.

Angles follow facemodel's convention in the head's own frame: yaw turns the face toward its own left,
pitch down, roll as ``R = Rz(roll) Rx(pitch) Ry(yaw)``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import bpy
import numpy as np
from mathutils import Matrix

from .armature import JAW_ANGLE_PROP, bone_basis_rotation
from .expression import HeadRig, neutral_expression
from .rt import facemodel, load
from .rig import split_rotation

arkit = load("arkit")

log = logging.getLogger(__name__)

LINEAR = 1   # Keyframe.interpolation enum value of 'LINEAR'


@dataclass
class AnimationReport:
    frames: tuple[int, int]
    scene_fps: float
    capture_fps: float
    channels: list[str] = field(default_factory=list)      # ARKit channels keyed
    ignored: list[str] = field(default_factory=list)       # channels the head has no key for (tongueOut)
    bones: list[str] = field(default_factory=list)

    def describe(self) -> str:
        text = (f"{len(self.channels)} shape channels, bones {', '.join(self.bones) or 'none'}: frames "
                f"{self.frames[0]}–{self.frames[1]} at {self.scene_fps:g} fps (captured at {self.capture_fps:g} fps)")
        return text + (f"; no key for {', '.join(self.ignored)}" if self.ignored else "")


def _fcurves(id_block: Any, name: str) -> Any:
    """A new action on ``id_block`` and the collection its F-curves are made in (layered actions with
    slots since Blender 4.4, the action's own ``fcurves`` before)."""
    ad = id_block.animation_data or id_block.animation_data_create()
    action = bpy.data.actions.new(name)
    ad.action = action
    if not hasattr(action, "slots"):
        return action.fcurves
    from bpy_extras import anim_utils

    slot = ad.action_slot
    if slot is None:
        slot = action.slots.new(id_type=id_block.id_type, name=id_block.name)
        ad.action_slot = slot
    return anim_utils.action_ensure_channelbag_for_slot(action, slot).fcurves


def _key(fcurves: Any, path: str, index: int, frames: np.ndarray, values: np.ndarray) -> None:
    fc = fcurves.new(path, index=index)
    fc.keyframe_points.add(len(frames))
    fc.keyframe_points.foreach_set("co", np.column_stack([frames, values]).astype(np.float32).ravel())
    fc.keyframe_points.foreach_set("interpolation", np.full(len(frames), LINEAR, np.int32))
    fc.update()


def _rotations(capture: "arkit.Capture", prefix: str) -> np.ndarray | None:
    """(N, 3, 3) rig-space rotations from ``<prefix>Yaw/Pitch/Roll`` (missing angles are 0), or None."""
    from .space import CAMERA_TO_WORLD

    names = [f"{prefix}{a}" for a in ("Yaw", "Pitch", "Roll")]
    if not any(n in capture.rotations for n in names):
        return None
    n = len(capture.times)
    angles = np.stack([capture.rotations.get(k, np.zeros(n)) for k in names], 1)
    c = np.array(CAMERA_TO_WORLD.to_3x3(), np.float64)
    return np.stack([c @ facemodel.geometry.euler_to_matrix(a) @ c.T for a in angles])


def _key_bone_rotations(fcurves: Any, pose_bone: Any, frames: np.ndarray, rotations: list[np.ndarray]) -> None:
    quats = np.array([tuple(bone_basis_rotation(pose_bone, Matrix(r.tolist()))) for r in rotations])
    quats *= np.where(quats[:, :1] < 0, -1.0, 1.0)           # one hemisphere: no flips between keys
    pose_bone.rotation_mode = "QUATERNION"
    for i in range(4):
        _key(fcurves, f'pose.bones["{pose_bone.name}"].rotation_quaternion', i, frames, quats[:, i])


def apply_capture(rig: HeadRig, capture: "arkit.Capture", scene: Any, start_frame: int | None = None,
                  head_rotation: bool = True, eye_rotation: bool = True) -> AnimationReport:
    """Key ``capture`` onto the head at the scene's frame rate, from ``start_frame`` (default the scene's
    first frame); the photo expression is set to neutral first so keys the capture lacks rest at 0."""
    fps = scene.render.fps / scene.render.fps_base
    offsets, sampled = capture.resample(fps)
    start = scene.frame_start if start_frame is None else int(start_frame)
    frames = (start + offsets).astype(np.float64)
    keys = arkit.key_set(rig.ict_names, rig.naming)
    neutral_expression(rig)
    report = AnimationReport((start, int(frames[-1])), fps, capture.capture_fps)
    shape_curves = _fcurves(rig.head.data.shape_keys, f"{rig.head.name}_capture")
    arm_curves = _fcurves(rig.arm, f"{rig.arm.name}_capture") if rig.arm is not None else None
    jaw_driven = rig.arm is not None and JAW_ANGLE_PROP in rig.arm
    for channel, values in sampled.weights.items():
        targets = keys.targets(channel)
        if not targets:
            report.ignored.append(channel)
            continue
        report.channels.append(channel)
        for name in targets:
            if name == "jawOpen" and jaw_driven:
                _key(arm_curves, 'pose.bones["jaw"].rotation_euler', 0, frames,
                     values * float(rig.arm[JAW_ANGLE_PROP]))
                report.bones.append("jaw")
            else:
                _key(shape_curves, f'key_blocks["{name}"].value', 0, frames, values)
    if rig.arm is not None:
        head = _rotations(sampled, "Head") if head_rotation else None
        if head is not None:
            split = [split_rotation(r) for r in head]
            _key_bone_rotations(arm_curves, rig.arm.pose.bones["neck"], frames, [s[0] for s in split])
            _key_bone_rotations(arm_curves, rig.arm.pose.bones["head"], frames, [s[1] for s in split])
            report.bones += ["neck", "head"]
        for prefix, bone in (("LeftEye", "eye.L"), ("RightEye", "eye.R")):
            eye = _rotations(sampled, prefix) if eye_rotation else None
            if eye is not None:
                _key_bone_rotations(arm_curves, rig.arm.pose.bones[bone], frames, list(eye))
                report.bones.append(bone)
    scene.frame_end = max(scene.frame_end, int(frames[-1]))
    log.info("%s: %s", rig.head.name, report.describe())
    return report
