"""The "Face" tab in the 3D viewport sidebar."""

from __future__ import annotations

from typing import Any

import bpy

from . import operators


class FACERIG_UL_extra_photos(bpy.types.UIList):
    """More photos of the same person, by file name."""

    def draw_item(self, context: Any, layout: Any, data: Any, item: Any, icon: int, active_data: Any,
                  active_propname: str, index: int = 0, flt_flag: int = 0) -> None:
        name = bpy.path.basename(item.name) or "(no file)"
        layout.label(text=name, icon="IMAGE_DATA")


def draw_extra_photos(layout: Any, settings: Any) -> None:
    """The same-person list with add/remove buttons (one head from all photos when not empty)."""
    box = layout.box()
    box.label(text="More photos of this person", icon="COMMUNITY")
    row = box.row()
    row.template_list("FACERIG_UL_extra_photos", "", settings, "extra_photos", settings, "extra_photos_index",
                      rows=2)
    col = row.column(align=True)
    col.operator(operators.FACERIG_OT_extra_photo_add.bl_idname, icon="ADD", text="")
    col.operator(operators.FACERIG_OT_extra_photo_remove.bl_idname, icon="REMOVE", text="")
    if len(settings.extra_photos):
        box.label(text=f"One head from {len(settings.extra_photos) + 1} photos", icon="INFO")


def draw_same_person_info(layout: Any, obj: Any) -> None:
    """Which photos made the active head and which looked like someone else."""
    import json

    if int(obj.get("facerig_photo_count", 1)) < 2:
        return
    box = layout.box()
    box.label(text=f"{obj['facerig_photo_count']} photos, C-Net {obj.get('facerig_cnet_version', '?')}")
    for source in json.loads(obj.get("facerig_outliers", "[]")):
        box.label(text=f"{bpy.path.basename(source)}: a different person?", icon="ERROR")


class SidebarPanel:
    """Where facerig's panels live (a mix-in, as Blender's own panels share these): the 3D View's sidebar,
    tab "Face"."""

    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = "Face"


class VIEW3D_PT_facerig(SidebarPanel, bpy.types.Panel):
    bl_label = "Face from Photo"
    bl_idname = "VIEW3D_PT_facerig"

    def draw(self, context: Any) -> None:
        layout = self.layout
        settings = context.scene.facerig
        if not operators.face_model_available(context):
            box = layout.box()
            box.label(text="Face model (ICT-FaceKit) not found", icon="ERROR")
            row = box.row()
            row.operator(operators.FACERIG_OT_fetch_face_model.bl_idname, icon="IMPORT")
            row.operator(operators.FACERIG_OT_choose_face_model.bl_idname, icon="FILEBROWSER")
        layout.prop(settings, "filepath")
        draw_extra_photos(layout, settings)
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
        col.prop(settings, "remove_lighting")
        col.prop(settings, "build_armature")
        col.prop(settings, "add_camera")
        col.prop(settings, "refine")
        col.prop(settings, "shape_key_names")
        col.prop(settings, "teeth")
        layout.operator(operators.FACERIG_OT_reconstruct.bl_idname, icon="USER")
        obj = context.active_object
        if obj is not None and obj.get("facerig_model_version"):
            box = layout.box()
            box.label(text=f"{obj.name}: model {obj['facerig_model_version']}")
            draw_same_person_info(layout, obj)


CLASSES = (FACERIG_UL_extra_photos, VIEW3D_PT_facerig)


def register() -> None:
    for cls in CLASSES:
        bpy.utils.register_class(cls)


def unregister() -> None:
    for cls in reversed(CLASSES):
        bpy.utils.unregister_class(cls)
