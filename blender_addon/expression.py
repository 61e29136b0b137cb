"""A built head's expression and pose: the photo's, neutral, and a sculpt-ready copy (bpy).

The photo's expression and pose are stored on the head (``facerig_params``, ICT weights and rotation),
so they can be reset to neutral and put back at any time. The expression is on the shape keys, with
``jawOpen`` on the jaw bone (which drives that key); the pose is on the neck and head bones.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import bpy
import numpy as np

from .rt import facemodel, load

PROP_PREFIX = "facerig_"


@dataclass
class HeadRig:
    """The objects of one built head."""

    head: Any                                    # the skin mesh (shape keys, photo parameters)
    arm: Any | None                              # the rig, if built
    parts: list[Any] = field(default_factory=list)

    @property
    def naming(self) -> str:
        return str(self.head.get(PROP_PREFIX + "shape_key_names", "ict"))

    @property
    def ict_names(self) -> list[str]:
        return json.loads(self.head[PROP_PREFIX + "expression_names"])


def find_head(obj: Any) -> HeadRig | None:
    """The head ``obj`` belongs to: the skin, one of its parts, its rig or its camera's collection."""
    if obj is None:
        return None
    candidates = [obj, obj.parent] + list(obj.children) + [c for c in (obj.parent.children if obj.parent else [])]
    for coll in getattr(obj, "users_collection", []):
        candidates += list(coll.objects)
    for c in candidates:
        if c is not None and c.type == "MESH" and c.get(PROP_PREFIX + "expression_names") \
                and not c.get(PROP_PREFIX + "part"):
            arm = c.parent if c.parent is not None and c.parent.type == "ARMATURE" else None
            owner = arm or c
            parts = [p for p in owner.children_recursive if p.get(PROP_PREFIX + "part")]
            return HeadRig(c, arm, parts)
    return None


def heads_in(objects: Any) -> list[HeadRig]:
    """Every facerig head among ``objects`` (skins with the head properties), in name order."""
    skins = sorted((o for o in objects if o.type == "MESH" and o.get(PROP_PREFIX + "expression_names")
                    and not o.get(PROP_PREFIX + "part")), key=lambda o: o.name)
    return [h for h in (find_head(o) for o in skins) if h is not None]


def photo_params(head: Any) -> "facemodel.FaceParams":
    return facemodel.FaceParams.from_json(head[PROP_PREFIX + "params"])


def set_key_values(rig: HeadRig, values: dict[str, float]) -> None:
    """Shape-key values on the head; ``jawOpen`` goes to the jaw bone when a rig drives it."""
    from .armature import JAW_ANGLE_PROP

    blocks = rig.head.data.shape_keys.key_blocks
    for name, value in values.items():
        if name == "jawOpen" and rig.arm is not None and JAW_ANGLE_PROP in rig.arm:
            rig.arm.pose.bones["jaw"].rotation_euler[0] = float(value) * float(rig.arm[JAW_ANGLE_PROP])
        elif name in blocks:
            blocks[name].value = float(np.clip(value, 0.0, 1.0))


def apply_expression(head: Any, ict_weights: np.ndarray) -> None:
    """Set the head's keys (and jaw) to ICT expression weights, mapped to the head's naming."""
    rig = find_head(head) or HeadRig(head, None)
    keys = load("arkit").key_set(rig.ict_names, rig.naming)
    set_key_values(rig, dict(zip(keys.names, keys.values(ict_weights))))


def apply_photo_expression(rig: HeadRig) -> None:
    apply_expression(rig.head, np.asarray(photo_params(rig.head).expression, np.float64))


def neutral_expression(rig: HeadRig) -> None:
    """Every key at 0 and the jaw closed; the eyes looking ahead."""
    set_key_values(rig, {kb.name: 0.0 for kb in rig.head.data.shape_keys.key_blocks[1:]} | {"jawOpen": 0.0})


def apply_photo_pose(rig: HeadRig) -> None:
    """The photo's head pose on the neck and head bones (the rig object itself stays unrotated)."""
    from .armature import pose_head
    from .space import world_rotation

    if rig.arm is not None:
        pose_head(rig.arm, world_rotation(photo_params(rig.head)))


def rest_head_pose(rig: HeadRig) -> None:
    if rig.arm is not None:
        for bone in ("neck", "head"):
            rig.arm.pose.bones[bone].rotation_quaternion = (1.0, 0.0, 0.0, 0.0)


def sculpt_copy(rig: HeadRig, context: Any) -> Any:
    """A copy of the skin with the current shape-key mix applied, no keys, no rig: ready for Multires
    and sculpting. It sits where the head's rest pose is and is left unparented in the head's collection."""
    src = rig.head
    me = src.data.copy()
    me.name = src.name + "_sculpt"
    copy = bpy.data.objects.new(src.name + "_sculpt", me)
    for coll in src.users_collection:
        coll.objects.link(copy)
    copy.matrix_world = (rig.arm or src).matrix_world.copy()
    if me.shape_keys is not None:
        mix = np.empty(len(me.vertices) * 3, np.float32)
        depsgraph = context.evaluated_depsgraph_get()
        evaluated = src.evaluated_get(depsgraph)
        # the key mix without the armature: the basis plus every key's weighted offset
        blocks = src.data.shape_keys.key_blocks
        basis = np.empty_like(mix)
        blocks[0].data.foreach_get("co", basis)
        mix[:] = basis
        tmp = np.empty_like(mix)
        for kb in blocks[1:]:
            value = evaluated.data.shape_keys.key_blocks[kb.name].value if evaluated.data.shape_keys else kb.value
            if value and not kb.mute:
                kb.data.foreach_get("co", tmp)
                mix += value * (tmp - basis)
        copy.shape_key_clear()
        me.vertices.foreach_set("co", mix)
        me.update()
    for key in list(copy.keys()):
        if key.startswith(PROP_PREFIX):
            del copy[key]
    copy[PROP_PREFIX + "sculpt_of"] = src.name
    copy.vertex_groups.clear()
    return copy
