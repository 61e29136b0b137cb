"""The "Face" tab in the 3D viewport sidebar."""

from __future__ import annotations

from typing import Any

import bpy

from . import operators


class VIEW3D_PT_facerig(bpy.types.Panel):
    bl_label = "Face from Photo"
    bl_idname = "VIEW3D_PT_facerig"
    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = "Face"

    def draw(self, context: Any) -> None:
        layout = self.layout
        settings = context.scene.facerig
        if not operators.face_model_available(context):
            box = layout.box()
            box.label(text="Face model (ICT-FaceKit) not found", icon="ERROR")
            box.operator(operators.FACERIG_OT_fetch_face_model.bl_idname, icon="IMPORT")
        layout.prop(settings, "filepath")
        row = layout.row()
        row.operator(operators.FACERIG_OT_detect_faces.bl_idname, icon="VIEWZOOM")
        faces = operators._DETECTED["faces"]
        if faces and operators._DETECTED["path"] == bpy.path.abspath(settings.filepath):
            if len(faces) > 1:
                layout.prop(settings, "face")
            else:
                layout.label(text="1 face found", icon="CHECKMARK")
        col = layout.column(heading="Options")
        col.prop(settings, "texture_size")
        col.prop(settings, "build_armature")
        col.prop(settings, "add_camera")
        layout.operator(operators.FACERIG_OT_reconstruct.bl_idname, icon="USER")
        obj = context.active_object
        if obj is not None and obj.get("facerig_model_version"):
            box = layout.box()
            box.label(text=f"{obj.name}: model {obj['facerig_model_version']}")


CLASSES = (VIEW3D_PT_facerig,)


def register() -> None:
    for cls in CLASSES:
        bpy.utils.register_class(cls)


def unregister() -> None:
    for cls in reversed(CLASSES):
        bpy.utils.unregister_class(cls)
