"""Writing the scene: .blend, glTF, FBX and OBJ (the formats the CLI's ``-o`` and the add-on offer)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import bpy

from .materials import PACK_ON_SAVE


def pack_generated_images() -> int:
    """Pack facerig's in-memory images (call before saving; the add-on does it in save_pre)."""
    count = 0
    for img in bpy.data.images:
        if img.get(PACK_ON_SAVE) and img.packed_file is None:
            img.pack()
            count += 1
    return count

EXPORT_FORMATS = (".blend", ".glb", ".gltf", ".fbx", ".obj")

# Per-target normals are 4/5 of the glTF export's time (the exporter reads 53 × 100k corner normals through
# Python lists) and 60 % of the file; viewers shade the moved vertices with the base normals instead, which
# the small facial displacements barely show (docs/addon-look.md, "glTF export time").
GLTF_MORPH_NORMALS = False


def _save_images_beside(path: "Any") -> None:
    """OBJ/MTL reference texture files: write facerig's images as PNGs into ``<name>_textures/`` and
    point the images at them, unpacked — Blender's OBJ writer names a packed image by its bare file
    name (or a path relative to nothing), so the .mtl would miss the folder. A packed image's PNG bytes
    are written as they are (no re-encoding); the images are packed again when a .blend is saved."""
    folder = path.parent / f"{path.stem}_textures"
    folder.mkdir(parents=True, exist_ok=True)
    for img in bpy.data.images:
        if img.get(PACK_ON_SAVE):
            target = folder / f"{bpy.path.clean_name(img.name)}.png"
            img.file_format = "PNG"
            if img.packed_file is not None:
                target.write_bytes(img.packed_file.data)
                img.unpack(method="REMOVE")
                img.filepath_raw = str(target)
            else:
                img.filepath_raw = str(target)
                img.save()


def export_scene(path: "str | Any", objects: list[Any] | None = None) -> None:
    """Write the current scene (or ``objects``) by extension; glTF keeps shape-key names as morph targets."""
    path = Path(path)
    ext = path.suffix.lower()
    path.parent.mkdir(parents=True, exist_ok=True)
    if ext != ".obj":  # exporters embed packed images; unpacked generated ones may be dropped
        pack_generated_images()
    if ext == ".blend":
        bpy.ops.wm.save_as_mainfile(filepath=str(path), compress=True)
        return
    if objects is not None:
        for obj in bpy.context.view_layer.objects:
            obj.select_set(obj in objects)
    selected = objects is not None
    if ext in (".glb", ".gltf"):
        bpy.ops.export_scene.gltf(filepath=str(path), export_format="GLB" if ext == ".glb" else "GLTF_SEPARATE",
                                  use_selection=selected, export_morph=True, export_skins=True,
                                  export_cameras=True, export_yup=True, export_apply=False,
                                  export_morph_normal=GLTF_MORPH_NORMALS)
    elif ext == ".fbx":
        # No lights, as glTF (its export_lights is off): the render rig is the .blend's; and Blender 5.0's own
        # FBX importer fails on any FBX light ('CyclesLightSettings' has no 'cast_shadow').
        bpy.ops.export_scene.fbx(filepath=str(path), use_selection=selected, add_leaf_bones=False,
                                 path_mode="COPY", embed_textures=True, bake_anim=False,
                                 object_types={"ARMATURE", "CAMERA", "EMPTY", "MESH", "OTHER"})
    elif ext == ".obj":
        _save_images_beside(path)
        bpy.ops.wm.obj_export(filepath=str(path), export_selected_objects=selected, export_materials=True,
                              path_mode="RELATIVE", forward_axis="NEGATIVE_Z", up_axis="Y")
    else:
        raise ValueError(f"cannot write {path.name}: use one of {', '.join(EXPORT_FORMATS)} or .json")
