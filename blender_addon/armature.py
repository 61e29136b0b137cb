"""Blender side of the rig: armature, skin weights, bone posing, bone parenting and shape-key drivers.

Everything lives in the rig object's space, which is the world's orientation (Z up, face towards −Y):
the rig object itself only carries the head's place in the scene (identity rotation), and a pose, the
photo's included, is on the bones.
"""

from __future__ import annotations

from typing import Any

import bpy
import numpy as np
from mathutils import Matrix, Vector

from .rig import BONES, DEFORM_BONES, NECK_SHARE, split_rotation

JAW_ANGLE_PROP = "facerig_jaw_open_angle"     # on the rig: signed local-X rotation (rad) that is jawOpen = 1


def build_armature(created: Any, name: str, heads: dict[str, np.ndarray], tails: dict[str, np.ndarray],
                   parents: dict[str, str | None], context: Any, collection: Any) -> Any:
    """An armature object with ``BONES`` at the given heads/tails (rig space, m)."""
    arm_data = created.add(bpy.data.armatures, bpy.data.armatures.new(name + "_rig"))
    arm = created.add(bpy.data.objects, bpy.data.objects.new(name + "_rig", arm_data))
    collection.objects.link(arm)
    view_layer = context.view_layer
    prev_active = view_layer.objects.active
    view_layer.objects.active = arm
    bpy.ops.object.mode_set(mode="EDIT")
    try:
        for bone in BONES:
            eb = arm_data.edit_bones.new(bone)
            eb.head = Vector(heads[bone])
            eb.tail = Vector(tails[bone])
        for bone in BONES:
            parent = parents[bone]
            if parent:
                arm_data.edit_bones[bone].parent = arm_data.edit_bones[parent]
                arm_data.edit_bones[bone].use_connect = bone == "head"
            arm_data.edit_bones[bone].use_deform = bone in DEFORM_BONES
    finally:
        bpy.ops.object.mode_set(mode="OBJECT")
        view_layer.objects.active = prev_active
    arm.show_in_front = True
    arm_data.display_type = "STICK"
    for pb in arm.pose.bones:
        pb.rotation_mode = "XYZ" if pb.name == "jaw" else "QUATERNION"
    return arm


def add_vertex_groups(obj: Any, weights: dict[str, np.ndarray]) -> None:
    """Vertex groups from float weights; quantised to 1/255 so ``add`` runs per level, not per vertex."""
    for bone in DEFORM_BONES:
        w = weights.get(bone)
        vg = obj.vertex_groups.new(name=bone)
        if w is None:
            continue
        q = np.round(w * 255).astype(np.int32)
        order = np.argsort(q, kind="stable")
        levels, starts = np.unique(q[order], return_index=True)
        bounds = list(starts[1:]) + [len(order)]
        for level, a, b in zip(levels, starts, bounds):
            if level > 0:
                vg.add(order[a:b].tolist(), float(level) / 255.0, "REPLACE")


def bone_basis_rotation(pose_bone: Any, rotation: Matrix) -> Any:
    """The pose-bone quaternion that turns the bone by ``rotation`` (3×3, rig space) about its head."""
    rest = pose_bone.bone.matrix_local.to_3x3()
    return (rest.inverted() @ rotation @ rest).to_quaternion()


def pose_head(arm: Any, rotation: np.ndarray, share: float = NECK_SHARE) -> np.ndarray:
    """Turn the head by ``rotation`` (3×3, rig space) on the neck and head bones (``share`` on the neck);
    returns the translation (rig space, m) the face moves by on top of ``rotation`` about the rig origin,
    so a camera can be placed to match: face point x → rotation · x + returned."""
    neck_r, head_r = split_rotation(rotation, share)
    for bone, r in (("neck", neck_r), ("head", head_r)):
        pb = arm.pose.bones[bone]
        pb.rotation_mode = "QUATERNION"
        pb.rotation_quaternion = bone_basis_rotation(pb, Matrix(r.tolist()))
    pn = np.array(arm.data.bones["neck"].head_local)
    ph = np.array(arm.data.bones["head"].head_local)
    return pn + neck_r @ (ph - pn) - np.asarray(rotation) @ ph


def rest_pose(arm: Any) -> None:
    for pb in arm.pose.bones:
        pb.location = (0.0, 0.0, 0.0)
        pb.rotation_quaternion = (1.0, 0.0, 0.0, 0.0)
        pb.rotation_euler = (0.0, 0.0, 0.0)
        pb.scale = (1.0, 1.0, 1.0)


def parent_to_bone(obj: Any, arm: Any, bone: str) -> None:
    """Bone-parent ``obj`` (vertices in rig space) so that it sits where it is at rest and follows ``bone``."""
    b = arm.data.bones[bone]
    obj.parent = arm
    obj.parent_type = "BONE"
    obj.parent_bone = bone
    obj.matrix_basis = Matrix.Identity(4)
    obj.matrix_parent_inverse = (b.matrix_local @ Matrix.Translation((0.0, b.length, 0.0))).inverted()


def jaw_open_sign(arm: Any) -> float:
    """+1 if a positive rotation about the jaw bone's local X moves the chin down, else −1."""
    rest = arm.data.bones["jaw"].matrix_local
    return 1.0 if rest.col[2][2] < 0 else -1.0


def add_jaw_driver(key: Any, arm: Any, angle: float) -> None:
    """``key.key_blocks["jawOpen"].value`` = the jaw bone's local X rotation / ``angle`` (clamped to [0, 1]):
    the bone opens the mouth through ICT's own jawOpen shape and never skins it a second time."""
    signed = jaw_open_sign(arm) * angle
    arm[JAW_ANGLE_PROP] = signed
    fc = key.key_blocks["jawOpen"].driver_add("value")
    drv = fc.driver
    drv.type = "SCRIPTED"
    var = drv.variables.new()
    var.name = "jaw"
    var.type = "TRANSFORMS"
    tgt = var.targets[0]
    tgt.id = arm
    tgt.bone_target = "jaw"
    tgt.transform_type = "ROT_X"
    tgt.transform_space = "LOCAL_SPACE"
    drv.expression = f"max(0.0, min(1.0, jaw * {1.0 / signed:.8f}))"   # a "simple expression": no Python needed


def add_prop_driver(owner: Any, path: str, expression: str, sources: list[tuple[str, Any, str]]) -> None:
    """A scripted driver on ``owner``'s property ``path``: ``expression`` of variables ``k0``, ``k1``, … that
    read ``(id_type, id, data_path)`` each. Keep ``expression`` to Blender's simple expressions
    (arithmetic, min, max; ≤ 256 characters) so it runs without Python scripts enabled."""
    if len(expression) > 255:
        raise ValueError(f"driver expression too long ({len(expression)} characters)")
    drv = owner.driver_add(path).driver
    drv.type = "SCRIPTED"
    for i, (id_type, ident, data_path) in enumerate(sources):
        var = drv.variables.new()
        var.name = f"k{i}"
        var.type = "SINGLE_PROP"
        var.targets[0].id_type = id_type
        var.targets[0].id = ident
        var.targets[0].data_path = data_path
    drv.expression = expression


def add_copy_driver(key: Any, name: str, source_key: Any) -> None:
    """``key``'s ``name`` follows ``source_key``'s key of the same name."""
    add_prop_driver(key.key_blocks[name], "value", "k0", [("KEY", source_key, f'key_blocks["{name}"].value')])


def add_linear_driver(owner: Any, path: str, source_key: Any, terms: dict[str, float]) -> None:
    """``owner``'s ``path`` = Σ coefficient · ``source_key``'s key value (coefficients to 3 significant digits)."""
    names = list(terms)
    expression = "".join(f"{terms[n]:+.3g}*k{i}" for i, n in enumerate(names)) or "0.0"
    add_prop_driver(owner, path, expression, [("KEY", source_key, f'key_blocks["{n}"].value') for n in names])
