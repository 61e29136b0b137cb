"""Blender side: a reconstruction → mesh, shape keys, armature, textured material, camera.

World convention: camera space (y up, looking down −z, DEVELOPERS.md) is turned into Blender's
Z-up world by one fixed rotation ``CAMERA_TO_WORLD`` (+90° about X), applied to the head and
the camera alike, and shifted so the head's model origin sits at the world origin. Then

* head (armature, or the mesh without one): ``matrix_world = C · R(rotation)``;
* camera: location ``−C · translation``, rotation ``C``; lens/sensor from
  ``facemodel.camera.blender_camera`` for the photo size, shift included;

so the camera view reproduces ``facemodel.camera.project`` exactly and the mesh overlays
the photo, while a frontal head stands upright facing −Y (Blender's front view). Units are
metres (the model's centimetres × 0.01; projection is scale-free).

Mesh data is written with ``foreach_set`` (``from_pydata`` would take ~10× longer).
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import bpy
import numpy as np
from mathutils import Matrix, Vector

from .aggregate import SamePersonReconstruction
from .fm import facemodel
from .materials import PACK_ON_SAVE, head_materials, image_from_array
from .render_setup import ensure_render_setup, object_centre
from .rig import BONES, rig_layout
from .texture import bake_texture_views

log = logging.getLogger(__name__)

CM_TO_M = 0.01
CAMERA_TO_WORLD = Matrix.Rotation(math.pi / 2, 4, "X")
BACKGROUND_MAX_SIDE = 2048
PROP_PREFIX = "facerig_"


ProgressFn = Callable[[float, str], None]


@dataclass
class BuildOptions:
    """What to build; the add-on panel and the CLI expose these."""

    texture_size: int = 1024
    remove_lighting: bool = False    # texture divided by the photo's fitted lighting, to be lit again in Blender
    build_armature: bool = True
    add_camera: bool = True
    name: str = "Face"
    make_active_camera: bool = True
    light_scene: bool = True         # add a World / light rig when the scene has none (render_setup)


@dataclass
class BuildResult:
    mesh_object: Any
    armature_object: Any | None
    camera_object: Any | None
    collection: Any
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def objects(self) -> list[Any]:
        return [o for o in (self.mesh_object, self.armature_object, self.camera_object) if o is not None]


class _Created:
    """Every datablock made so far, so a failure removes them all (nothing half-built)."""

    def __init__(self) -> None:
        self.items: list[tuple[Any, Any]] = []

    def add(self, collection: Any, block: Any) -> Any:
        self.items.append((collection, block))
        return block

    def remove_all(self) -> None:
        for coll, block in reversed(self.items):
            try:
                coll.remove(block)
            except (ReferenceError, RuntimeError):
                pass
        self.items.clear()


def _timed(timings: dict[str, float], key: str, t0: float) -> float:
    now = time.perf_counter()
    timings[key] = timings.get(key, 0.0) + (now - t0) * 1e3
    return now


def rest_vertices(model: "facemodel.FaceModel", params: "facemodel.FaceParams") -> np.ndarray:
    """Identity applied, no expression, model space (cm): the shape-key basis."""
    ident = np.asarray(params.identity, np.float32)
    n = ident.shape[-1]
    return model.neutral + (ident @ model.identity_basis[:n].reshape(n, -1)).reshape(model.neutral.shape)


def head_matrix(params: "facemodel.FaceParams") -> Matrix:
    r = facemodel.geometry.euler_to_matrix(np.asarray(params.rotation, np.float64))
    return CAMERA_TO_WORLD @ Matrix([list(r[0]) + [0], list(r[1]) + [0], list(r[2]) + [0], [0, 0, 0, 1]])


def camera_matrix(params: "facemodel.FaceParams") -> Matrix:
    t = Vector(np.asarray(params.translation, np.float64) * CM_TO_M)
    return Matrix.Translation(-(CAMERA_TO_WORLD.to_3x3() @ t)) @ CAMERA_TO_WORLD


def build_mesh_data(model: "facemodel.FaceModel", vertices_cm: np.ndarray, name: str) -> Any:
    """One mesh with the ICT topology, UVs, material indices and smooth shading."""
    faces = model.faces
    sizes = np.where(faces[:, 3] >= 0, 4, 3)
    corners = faces.reshape(-1)[faces.reshape(-1) >= 0]
    uv_idx = model.face_uvs.reshape(-1)[faces.reshape(-1) >= 0]
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int32)
    me = bpy.data.meshes.new(name)
    me.vertices.add(len(vertices_cm))
    me.vertices.foreach_set("co", (vertices_cm * CM_TO_M).astype(np.float32).ravel())
    me.loops.add(len(corners))
    me.loops.foreach_set("vertex_index", corners.astype(np.int32))
    me.polygons.add(len(faces))
    me.polygons.foreach_set("loop_start", starts)
    me.polygons.foreach_set("material_index", model.face_material.astype(np.int32))
    me.update(calc_edges=True)
    uv = me.uv_layers.new(name="UVMap")
    uv.data.foreach_set("uv", model.uvs[uv_idx].astype(np.float32).ravel())
    me.polygons.foreach_set("use_smooth", np.ones(len(faces), bool))
    me.validate(clean_customdata=False)
    return me


def add_shape_keys(obj: Any, model: "facemodel.FaceModel", basis_cm: np.ndarray, weights: np.ndarray) -> None:
    """Basis plus one key per model expression, named exactly as the model names them."""
    obj.shape_key_add(name="Basis", from_mix=False)
    base = (basis_cm * CM_TO_M).astype(np.float32)
    for i, name in enumerate(model.expression_names):
        kb = obj.shape_key_add(name=name, from_mix=False)
        points = getattr(kb, "points", kb.data)  # ShapeKey.points: the fast raw-array path (100× faster)
        points.foreach_set("co", (base + model.expression_basis[i] * CM_TO_M).ravel())
        kb.slider_min, kb.slider_max = 0.0, 1.0
        kb.value = float(np.clip(weights[i], 0.0, 1.0))
    obj.data.shape_keys.use_relative = True


def pack_generated_images() -> int:
    """Pack facerig's in-memory images (call before saving; the add-on does it in save_pre)."""
    count = 0
    for img in bpy.data.images:
        if img.get(PACK_ON_SAVE) and img.packed_file is None:
            img.pack()
            count += 1
    return count


def _photo_image(created: _Created, name: str, photo: np.ndarray) -> Any:
    import cv2

    h, w = photo.shape[:2]
    scale = min(1.0, BACKGROUND_MAX_SIDE / max(h, w))
    if scale < 1.0:  # camera intrinsics are relative to the image: the overlay is unchanged
        photo = cv2.resize(photo, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA)
    return image_from_array(created, name, np.ascontiguousarray(photo[::-1]))


def add_vertex_groups(obj: Any, weights: dict[str, np.ndarray]) -> None:
    """Vertex groups from float weights; quantised to 1/255 so ``add`` runs per level, not per vertex."""
    for bone in BONES:
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


def build_armature(created: _Created, name: str, layout: Any, context: Any, collection: Any) -> Any:
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
            eb.head = Vector(layout.heads[bone] * CM_TO_M)
            eb.tail = Vector(layout.tails[bone] * CM_TO_M)
        for bone in BONES:
            parent = layout.parents[bone]
            if parent:
                arm_data.edit_bones[bone].parent = arm_data.edit_bones[parent]
                arm_data.edit_bones[bone].use_connect = bone in ("head",)
        arm_data.edit_bones["root"].use_deform = False
    finally:
        bpy.ops.object.mode_set(mode="OBJECT")
        view_layer.objects.active = prev_active
    arm.show_in_front = True
    arm_data.display_type = "STICK"
    return arm


def add_camera(created: _Created, name: str, params: "facemodel.FaceParams", photo_img: Any, width: int,
               height: int, context: Any, make_active: bool) -> Any:
    bc = facemodel.camera.blender_camera(np.asarray(params.camera), width, height)
    cam_data = created.add(bpy.data.cameras, bpy.data.cameras.new(name + "_camera"))
    cam_data.lens = bc.lens_mm
    cam_data.sensor_width = bc.sensor_width_mm
    cam_data.sensor_fit = bc.sensor_fit
    cam_data.shift_x, cam_data.shift_y = bc.shift_x, bc.shift_y
    cam_data.clip_start, cam_data.clip_end = 0.01, 100.0
    cam_data.show_background_images = True
    bg = cam_data.background_images.new()
    bg.image = photo_img
    bg.display_depth = "BACK"
    bg.frame_method = "STRETCH"
    bg.alpha = 1.0
    cam = created.add(bpy.data.objects, bpy.data.objects.new(name + "_camera", cam_data))
    cam.matrix_world = camera_matrix(params)
    scene = context.scene
    if make_active or scene.camera is None:
        scene.camera = cam
        scene.render.resolution_x, scene.render.resolution_y = bc.resolution_x, bc.resolution_y
        scene.render.resolution_percentage = 100
        if max(width, height) > BACKGROUND_MAX_SIDE:
            scene.render.resolution_percentage = max(1, int(100 * BACKGROUND_MAX_SIDE / max(width, height)))
    return cam


def store_properties(target: Any, recon: Any, params: "facemodel.FaceParams") -> None:
    target[PROP_PREFIX + "params"] = params.to_json(indent=None)
    target[PROP_PREFIX + "model_version"] = str(recon.model_version)
    target[PROP_PREFIX + "source"] = str(recon.source)
    target[PROP_PREFIX + "face_index"] = int(recon.face_index)
    target[PROP_PREFIX + "crop_box"] = [float(v) for v in recon.crop_box]
    target[PROP_PREFIX + "image_size"] = [int(recon.width), int(recon.height)]
    target[PROP_PREFIX + "units"] = "m (model cm × 0.01)"
    # JSON: which points were fitted, error before/after, why skipped; null = refinement off (raw network output)
    target[PROP_PREFIX + "refinement"] = json.dumps(getattr(recon, "refinement", None))


def store_same_person(target: Any, same: SamePersonReconstruction) -> None:
    """Which photos made the head, how much each counted, which looked like someone else."""
    summary = same.summary()
    target[PROP_PREFIX + "same_person"] = json.dumps(summary)
    target[PROP_PREFIX + "photos"] = json.dumps(same.sources)
    target[PROP_PREFIX + "photo_count"] = len(same.photos)
    target[PROP_PREFIX + "outliers"] = json.dumps([p["source"] for p in summary["photos"] if p["different_person"]])
    target[PROP_PREFIX + "cnet_version"] = same.cnet_version


def bake_views(model: "facemodel.FaceModel", recon: Any, size: int, remove_lighting: bool = False) -> Any:
    """Every photo of the reconstruction blended by visibility (one photo: its plain bake); with
    ``remove_lighting`` each photo is divided by its own fitted lighting before they blend."""
    photos = recon.photos if isinstance(recon, SamePersonReconstruction) else [recon]
    return bake_texture_views(model, [(p.params, p.image) for p in photos], size, remove_lighting)


def build_face(model: "facemodel.FaceModel", recon: Any, options: BuildOptions | None = None,
               context: Any = None, progress: ProgressFn | None = None) -> BuildResult:
    """Create the rigged, textured head (and camera) of ``recon`` in the current scene.

    ``recon`` is a :class:`pipeline.PhotoReconstruction` or, for several photos of one person, a
    :class:`aggregate.SamePersonReconstruction`: aggregated identity, texture merged from every
    photo, pose/expression/camera of its primary (most frontal) photo.
    All-or-nothing: on any error every datablock made so far is removed and the error re-raised.
    """
    options = options or BuildOptions()
    context = context or bpy.context
    progress = progress or (lambda f, m: None)
    created = _Created()
    timings: dict[str, float] = {}
    same = recon if isinstance(recon, SamePersonReconstruction) else None
    photo = same.primary if same is not None else recon
    params = photo.params
    try:
        t = time.perf_counter()
        progress(0.05, "mesh")
        rest = rest_vertices(model, params)
        me = created.add(bpy.data.meshes, build_mesh_data(model, rest, options.name))
        obj = created.add(bpy.data.objects, bpy.data.objects.new(options.name, me))
        t = _timed(timings, "mesh", t)

        progress(0.2, "shape keys")
        add_shape_keys(obj, model, rest, np.asarray(params.expression, np.float32))
        t = _timed(timings, "shape_keys", t)

        progress(0.45, "texture")
        baked = bake_views(model, recon, options.texture_size, options.remove_lighting)
        t = _timed(timings, "texture_bake", t)
        images = {m: image_from_array(created, f"{options.name}_{m}", tex) for m, tex in baked.images.items()}
        materials = head_materials(created, options.name, model, images, baked.iris_color)
        for mat_name in model.material_names:
            me.materials.append(materials[mat_name])
        t = _timed(timings, "texture_images", t)

        coll = created.add(bpy.data.collections, bpy.data.collections.new(options.name))
        context.scene.collection.children.link(coll)
        coll.objects.link(obj)
        arm = None
        if options.build_armature:
            progress(0.7, "armature")
            layout = rig_layout(model, rest)
            arm = build_armature(created, options.name, layout, context, coll)
            arm.matrix_world = head_matrix(params)
            obj.parent = arm
            obj.matrix_parent_inverse = Matrix.Identity(4)
            obj.matrix_basis = Matrix.Identity(4)
            add_vertex_groups(obj, layout.weights)
            mod = obj.modifiers.new("Armature", "ARMATURE")
            mod.object = arm
            store_properties(arm, photo, params)
            if same is not None:
                store_same_person(arm, same)
        else:
            obj.matrix_world = head_matrix(params)
        t = _timed(timings, "armature", t)

        cam = None
        if options.add_camera:
            progress(0.85, "camera")
            photo_img = _photo_image(created, f"{options.name}_photo", photo.image)
            cam = add_camera(created, options.name, params, photo_img, photo.width, photo.height, context,
                             options.make_active_camera)
            coll.objects.link(cam)
        if options.light_scene:   # a World and three lights, only where the scene has none
            context.view_layer.update()
            ensure_render_setup(created, context.scene, object_centre(obj))
        store_properties(obj, photo, params)
        if same is not None:
            store_same_person(obj, same)
        obj["facerig_texture_coverage"] = json.dumps(baked.coverage)
        obj["facerig_texture_lighting"] = "removed" if options.remove_lighting else "photo"
        from .pipeline import overlay_error

        if photo.face.confirmed:   # vs the detected landmarks (primary photo); an unconfirmed face has none
            obj["facerig_overlay_nme"] = overlay_error(model, photo)
        _timed(timings, "camera", t)
        progress(1.0, "done")
    except BaseException:
        created.remove_all()
        raise
    return BuildResult(obj, arm, cam, coll, timings)


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
    from pathlib import Path

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
        bpy.ops.export_scene.fbx(filepath=str(path), use_selection=selected, add_leaf_bones=False,
                                 path_mode="COPY", embed_textures=True, bake_anim=False)
    elif ext == ".obj":
        _save_images_beside(path)
        bpy.ops.wm.obj_export(filepath=str(path), export_selected_objects=selected, export_materials=True,
                              path_mode="RELATIVE", forward_axis="NEGATIVE_Z", up_axis="Y")
    else:
        raise ValueError(f"cannot write {path.name}: use one of {', '.join(EXPORT_FORMATS)} or .json")
