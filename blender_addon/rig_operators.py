"""Operators and the "Rig" panel for a built head: photo expression ↔ neutral, photo pose ↔ rest,
Live Link Face capture import, sculpt-ready copy. Each acts on the head the active object belongs to."""

from __future__ import annotations

from typing import Any

import bpy
from bpy.props import BoolProperty, EnumProperty, FloatProperty, IntProperty, StringProperty

from .expression import (apply_photo_expression, apply_photo_pose, find_head, neutral_expression,
                         rest_head_pose, sculpt_copy)
from .ui import SidebarPanel


def _head(op: Any, context: Any) -> Any:
    rig = find_head(context.active_object)
    if rig is None:
        op.report({"ERROR"}, "select a head made by facerig (its skin, eyes, teeth, lashes or rig)")
    return rig


class _HeadOperator:
    @classmethod
    def poll(cls, context: Any) -> bool:
        return find_head(context.active_object) is not None


class FACERIG_OT_photo_expression(_HeadOperator, bpy.types.Operator):
    """Put the photo's expression (and pose) on the head, or reset it to neutral (and the rest pose)"""

    bl_idname = "facerig.photo_expression"
    bl_label = "Photo Expression"
    bl_options = {"REGISTER", "UNDO"}

    state: EnumProperty(name="State", default="NEUTRAL",  # type: ignore[valid-type]
                        items=[("PHOTO", "Photo", "the expression (and pose) seen in the photo"),
                               ("NEUTRAL", "Neutral", "every shape key at 0, jaw closed (and the rest pose)")])
    pose: BoolProperty(name="Pose too", default=False,  # type: ignore[valid-type]
                       description="also put the photo's head pose on (or take it off) the neck and head bones")

    def execute(self, context: Any) -> set[str]:
        rig = _head(self, context)
        if rig is None:
            return {"CANCELLED"}
        if self.state == "PHOTO":
            apply_photo_expression(rig)
            if self.pose:
                apply_photo_pose(rig)
        else:
            neutral_expression(rig)
            if self.pose:
                rest_head_pose(rig)
        context.view_layer.update()
        return {"FINISHED"}


class FACERIG_OT_sculpt_copy(_HeadOperator, bpy.types.Operator):
    """Copy the head's skin with the current shape-key mix applied and no keys or rig, ready for Multires"""

    bl_idname = "facerig.sculpt_copy"
    bl_label = "Sculpt-Ready Copy"
    bl_options = {"REGISTER", "UNDO"}

    def execute(self, context: Any) -> set[str]:
        rig = _head(self, context)
        if rig is None:
            return {"CANCELLED"}
        copy = sculpt_copy(rig, context)
        for obj in context.view_layer.objects:
            obj.select_set(False)
        copy.select_set(True)
        context.view_layer.objects.active = copy
        self.report({"INFO"}, f"{copy.name}: shape keys applied, no rig (add Multires to sculpt)")
        return {"FINISHED"}


class FACERIG_OT_import_capture(_HeadOperator, bpy.types.Operator):
    """Animate the head with a Live Link Face capture (CSV): shape keys, jaw, head and eye bones"""

    bl_idname = "facerig.import_capture"
    bl_label = "Import Live Link Capture"
    bl_options = {"REGISTER", "UNDO"}

    filepath: StringProperty(subtype="FILE_PATH", options={"SKIP_SAVE"})  # type: ignore[valid-type]
    filter_glob: StringProperty(default="*.csv", options={"HIDDEN", "SKIP_SAVE"})  # type: ignore[valid-type]
    capture_fps: FloatProperty(name="Capture fps", default=0.0, min=0.0,  # type: ignore[valid-type]
                               description="the rate of the timecode's frame field; 0 = from the file, else 60")
    angles: EnumProperty(name="Angles", default="radians",  # type: ignore[valid-type]
                         items=[("radians", "Radians", "as ARKit reports them"), ("degrees", "Degrees", "")])
    start_frame: IntProperty(name="Start frame", default=-1,  # type: ignore[valid-type]
                             description="-1 = the scene's first frame")
    head_rotation: BoolProperty(name="Head rotation", default=True)  # type: ignore[valid-type]
    eye_rotation: BoolProperty(name="Eye rotation", default=True)  # type: ignore[valid-type]

    def invoke(self, context: Any, event: Any) -> set[str]:
        context.window_manager.fileselect_add(self)
        return {"RUNNING_MODAL"}

    def execute(self, context: Any) -> set[str]:
        from .animation import apply_capture
        from .rt import load

        rig = _head(self, context)
        if rig is None:
            return {"CANCELLED"}
        try:
            capture = load("arkit").read_live_link_csv(bpy.path.abspath(self.filepath), self.capture_fps or None, self.angles)
        except (OSError, ValueError) as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        report = apply_capture(rig, capture, context.scene, None if self.start_frame < 0 else self.start_frame,
                               self.head_rotation, self.eye_rotation)
        self.report({"INFO"}, report.describe())
        return {"FINISHED"}


class VIEW3D_PT_facerig_rig(SidebarPanel, bpy.types.Panel):
    bl_label = "Head Rig"
    bl_idname = "VIEW3D_PT_facerig_rig"

    @classmethod
    def poll(cls, context: Any) -> bool:
        return find_head(context.active_object) is not None

    def draw(self, context: Any) -> None:
        layout = self.layout
        rig = find_head(context.active_object)
        layout.label(text=f"{rig.head.name}: {rig.naming.upper()} shape keys")
        row = layout.row(align=True)
        row.operator(FACERIG_OT_photo_expression.bl_idname, text="Photo Expression").state = "PHOTO"
        row.operator(FACERIG_OT_photo_expression.bl_idname, text="Neutral").state = "NEUTRAL"
        row = layout.row(align=True)
        op = row.operator(FACERIG_OT_photo_expression.bl_idname, text="Photo + Pose")
        op.state, op.pose = "PHOTO", True
        op = row.operator(FACERIG_OT_photo_expression.bl_idname, text="Neutral + Rest Pose")
        op.state, op.pose = "NEUTRAL", True
        layout.operator(FACERIG_OT_import_capture.bl_idname, icon="ANIM")
        layout.operator(FACERIG_OT_sculpt_copy.bl_idname, icon="SCULPTMODE_HLT")


CLASSES = (FACERIG_OT_photo_expression, FACERIG_OT_sculpt_copy, FACERIG_OT_import_capture, VIEW3D_PT_facerig_rig)
register, unregister = bpy.utils.register_classes_factory(CLASSES)
