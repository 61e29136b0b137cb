"""Blender side: a reconstruction → head mesh and parts, shape keys, armature, textured material, camera.

World convention (:mod:`space`): camera space (y up, looking down −z, DEVELOPERS.md) is turned into
Blender's Z-up world by one fixed rotation ``CAMERA_TO_WORLD`` (+90° about X), applied to the mesh data
and the camera alike, so a frontal head stands upright facing −Y (Blender's front view) in *rig space*.
The rig object carries only the head's place in the scene (identity rotation; heads are put side
by side, :mod:`placement`); the photo's pose is on the neck and head bones (:func:`armature.pose_head`),
and the camera is placed so that its view reproduces ``facemodel.camera.project`` exactly and the mesh
overlays the photo. Units are metres (the model's centimetres × 0.01; projection is scale-free).

The head is five objects sharing one material list (slot = ICT material, ``model.material_names``):
the skin (with mouth, sockets and eye overlays; its vertex indices up to the teeth are ICT's), the two
eyeballs (parented to the eye bones), the teeth and the lashes (parented to the head bone). Shape
keys are ARKit's names by default (:mod:`runtime.arkit`); the parts' keys follow the head's by drivers and the
jaw bone drives ``jawOpen``.

Mesh data is written with ``foreach_set`` (``from_pydata`` would take ~10× longer). Writing the scene to a
file is :mod:`export`.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import bpy
import numpy as np
from mathutils import Matrix

from . import armature as rigging
from .placement import free_offset, scene_obstacles
from .rig import PARTS, TEETH_TUCK, TUCK_OPEN_CM, lip_gap_terms, part_polygons, rig_layout, teeth_tuck_offsets
from .expression import apply_expression
from .materials import head_materials, image_from_array
from .render_setup import ensure_render_setup, object_centre
from .rt import facemodel, load
from .space import camera_matrix, rest_vertices, to_rig_space, world_rotation

arkit, same_person, texture = load("arkit"), load("same_person"), load("texture")
log = logging.getLogger(__name__)

BACKGROUND_MAX_SIDE = 2048
PROP_PREFIX = "facerig_"


PART_KEY_MIN_M = 1e-4     # a part gets a key that moves it by more than this (0.1 mm; less is the model's noise)

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
    shape_key_names: str = "arkit"   # "arkit": Apple's 52 names (tongueOut missing); "ict": the model's 53
    teeth: bool = True               # False: a toothless head (no teeth object)
    place_beside: bool = True        # put the head beside earlier heads / out of objects it would sit in
    light_scene: bool = True         # add a World / light rig when the scene has none (render_setup)


@dataclass
class BuildResult:
    mesh_object: Any
    armature_object: Any | None
    camera_object: Any | None
    collection: Any
    timings: dict[str, float] = field(default_factory=dict)
    parts: dict[str, Any] = field(default_factory=dict)     # "Eye.L", "Eye.R", "Teeth", "Lashes" → object
    notes: list[str] = field(default_factory=list)          # what the artist should know (placement)

    @property
    def objects(self) -> list[Any]:
        return [o for o in (self.mesh_object, *self.parts.values(), self.armature_object, self.camera_object)
                if o is not None]


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


def build_mesh_data(model: "facemodel.FaceModel", vertices_m: np.ndarray, name: str,
                    polygons: np.ndarray | None = None) -> tuple[Any, np.ndarray]:
    """A mesh of ICT's ``polygons`` (default all) with UVs, material indices (ICT's slots) and smooth
    shading; returns it and the model vertex index of each of its vertices (sorted)."""
    polygons = np.arange(len(model.faces)) if polygons is None else np.asarray(polygons)
    faces = model.faces[polygons]
    used = faces >= 0
    verts = np.unique(faces[used])
    remap = np.full(model.n_vertices, -1, np.int64)
    remap[verts] = np.arange(len(verts))
    sizes = np.where(faces[:, 3] >= 0, 4, 3)
    corners = remap[faces[used]]
    uv_idx = model.face_uvs[polygons][used]
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int32)
    me = bpy.data.meshes.new(name)
    me.vertices.add(len(verts))
    me.vertices.foreach_set("co", np.asarray(vertices_m[verts], np.float32).ravel())
    me.loops.add(len(corners))
    me.loops.foreach_set("vertex_index", corners.astype(np.int32))
    me.polygons.add(len(faces))
    me.polygons.foreach_set("loop_start", starts)
    me.polygons.foreach_set("material_index", model.face_material[polygons].astype(np.int32))
    me.update(calc_edges=True)
    uv = me.uv_layers.new(name="UVMap")
    uv.data.foreach_set("uv", model.uvs[uv_idx].astype(np.float32).ravel())
    me.polygons.foreach_set("use_smooth", np.ones(len(faces), bool))
    me.validate(clean_customdata=False)
    return me, verts


def add_shape_keys(obj: Any, names: list[str], basis_m: np.ndarray, deltas_m: np.ndarray,
                   values: np.ndarray | None = None) -> None:
    """Basis plus one key per name (``deltas_m`` (K, V, 3) rig space), sliders 0..1, values as given."""
    obj.shape_key_add(name="Basis", from_mix=False)
    base = np.asarray(basis_m, np.float32)
    for i, name in enumerate(names):
        kb = obj.shape_key_add(name=name, from_mix=False)
        points = getattr(kb, "points", kb.data)  # ShapeKey.points: the fast raw-array path (100× faster)
        points.foreach_set("co", (base + deltas_m[i]).astype(np.float32).ravel())
        kb.slider_min, kb.slider_max = 0.0, 1.0
        kb.value = 0.0 if values is None else float(np.clip(values[i], 0.0, 1.0))
    obj.data.shape_keys.use_relative = True


CORRECTIVE_KEY = "facerig_corrective"


def corrective_offsets(model: "facemodel.FaceModel", params: "facemodel.FaceParams") -> np.ndarray | None:
    """The corrective field (``params.corrective``, :mod:`facemodel.harmonics`) as rig-space offsets (V, 3) m,
    or None for a face without coefficients (a regressor from before the corrective field)."""
    coeffs = np.asarray(params.corrective, np.float32)
    if coeffs.shape[-2] == 0:
        return None
    return to_rig_space(facemodel.harmonics.corrective_displacement(model.arrays.corrective_basis, coeffs))


def add_corrective_key(obj: Any, basis_m: np.ndarray, offsets_m: np.ndarray,
                       min_move_m: float = PART_KEY_MIN_M) -> Any | None:
    """The corrective field as its own shape key ``facerig_corrective`` on top of the identity basis, at value
    1 — what the photo fit found — with a 0–2 slider, so an artist can dial between "a face like the person"
    (0) and the fitted face (1). glTF and FBX carry it as one more morph target. A part the field does not
    move by more than ``min_move_m`` (the teeth) gets no key; returns the key block, or None."""
    if not np.abs(offsets_m).max(initial=0.0) > min_move_m:
        return None
    if obj.data.shape_keys is None:
        obj.shape_key_add(name="Basis", from_mix=False)
    kb = obj.shape_key_add(name=CORRECTIVE_KEY, from_mix=False)
    points = getattr(kb, "points", kb.data)
    points.foreach_set("co", (np.asarray(basis_m, np.float32) + offsets_m).astype(np.float32).ravel())
    kb.slider_min, kb.slider_max = 0.0, 2.0
    kb.value = 1.0
    return kb


def _photo_image(created: _Created, name: str, photo: np.ndarray) -> Any:
    import cv2

    h, w = photo.shape[:2]
    scale = min(1.0, BACKGROUND_MAX_SIDE / max(h, w))
    if scale < 1.0:  # camera intrinsics are relative to the image: the overlay is unchanged
        photo = cv2.resize(photo, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA)
    return image_from_array(created, name, np.ascontiguousarray(photo[::-1]))


def add_camera(created: _Created, name: str, params: "facemodel.FaceParams", photo_img: Any, width: int,
               height: int, context: Any, make_active: bool, face_offset: np.ndarray | None = None) -> Any:
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
    cam.matrix_world = camera_matrix(params, face_offset)
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


def store_same_person(target: Any, same: "same_person.SamePersonReconstruction") -> None:
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
    photos = recon.photos if isinstance(recon, same_person.SamePersonReconstruction) else [recon]
    return texture.bake_texture_views(model, [(p.params, p.image) for p in photos], size, remove_lighting)


def build_face(model: "facemodel.FaceModel", recon: Any, options: BuildOptions | None = None,
               context: Any = None, progress: ProgressFn | None = None) -> BuildResult:
    """Create the rigged, textured head (and camera) of ``recon`` in the current scene.

    ``recon`` is a :class:`runtime.pipeline.PhotoReconstruction` or, for several photos of one person, a
    :class:`runtime.same_person.SamePersonReconstruction`: aggregated identity, texture merged from every
    photo, pose/expression/camera of its primary (most frontal) photo.
    All-or-nothing: on any error every datablock made so far is removed and the error re-raised.
    """
    options = options or BuildOptions()
    context = context or bpy.context
    progress = progress or (lambda f, m: None)
    created = _Created()
    timings: dict[str, float] = {}
    same = recon if isinstance(recon, same_person.SamePersonReconstruction) else None
    photo = same.primary if same is not None else recon
    params = photo.params
    try:
        t = time.perf_counter()
        progress(0.05, "mesh")
        rest = rest_vertices(model, params)
        rig_rest = to_rig_space(rest)
        polygons = part_polygons(model, teeth=options.teeth)
        me, head_verts = build_mesh_data(model, rig_rest, options.name, polygons["Head"])
        created.add(bpy.data.meshes, me)
        obj = created.add(bpy.data.objects, bpy.data.objects.new(options.name, me))
        parts = {}
        for part, polys in polygons.items():
            if part != "Head":
                pme, pverts = build_mesh_data(model, rig_rest, f"{options.name}_{part}", polys)
                created.add(bpy.data.meshes, pme)
                parts[part] = (created.add(bpy.data.objects, bpy.data.objects.new(f"{options.name}_{part}", pme)),
                               pverts)
        t = _timed(timings, "mesh", t)

        progress(0.2, "shape keys")
        keys = arkit.key_set(model.expression_names, options.shape_key_names)
        deltas = to_rig_space(keys.displacements(model.expression_basis))   # (K, V, 3) m
        add_shape_keys(obj, keys.names, rig_rest[head_verts], deltas[:, head_verts])
        corrective = corrective_offsets(model, params)
        if corrective is not None:
            add_corrective_key(obj, rig_rest[head_verts], corrective[head_verts], min_move_m=0.0)
        motion = np.abs(deltas).max(axis=2)                                  # (K, V): how far each key moves each vertex
        for part, (pobj, pverts) in parts.items():
            add_part_keys(model, keys, pobj, part, rig_rest, deltas, pverts, motion[:, pverts].max(axis=1))
            if corrective is not None:
                add_corrective_key(pobj, rig_rest[pverts], corrective[pverts])
        t = _timed(timings, "shape_keys", t)

        progress(0.45, "texture")
        baked = bake_views(model, recon, options.texture_size, options.remove_lighting)
        t = _timed(timings, "texture_bake", t)
        images = {m: image_from_array(created, f"{options.name}_{m}", tex) for m, tex in baked.images.items()}
        materials = head_materials(created, options.name, model, images, baked.iris_color)
        for mat_name in model.material_names:
            me.materials.append(materials[mat_name])
        t = _timed(timings, "texture_images", t)

        for pobj, _ in parts.values():
            for mat in me.materials:       # every object keeps ICT's full slot list: material_index = ICT's
                pobj.data.materials.append(mat)

        coll = created.add(bpy.data.collections, bpy.data.collections.new(options.name))
        context.scene.collection.children.link(coll)
        for o in (obj, *(p for p, _ in parts.values())):
            coll.objects.link(o)
        rotation = world_rotation(params)
        arm = None
        if options.build_armature:
            progress(0.7, "armature")
            layout = rig_layout(model, rest)
            arm = rigging.build_armature(created, options.name, {b: to_rig_space(p) for b, p in layout.heads.items()},
                                         {b: to_rig_space(p) for b, p in layout.tails.items()}, layout.parents,
                                         context, coll)
            obj.parent = arm
            obj.matrix_parent_inverse = Matrix.Identity(4)
            obj.matrix_basis = Matrix.Identity(4)
            rigging.add_vertex_groups(obj, {b: w[head_verts] for b, w in layout.weights.items()})
            mod = obj.modifiers.new("Armature", "ARMATURE")
            mod.object = arm
            for part, (pobj, _) in parts.items():
                rigging.parent_to_bone(pobj, arm, PARTS[part][1])
            rigging.add_jaw_driver(obj.data.shape_keys, arm, layout.jaw_open_angle)
            face_offset = rigging.pose_head(arm, rotation)
            store_properties(arm, photo, params)
            if same is not None:
                store_same_person(arm, same)
        else:
            for pobj, _ in parts.values():
                pobj.parent = obj
            placed = np.eye(4)
            placed[:3, :3] = rotation
            obj.matrix_world = Matrix(placed.tolist())
            face_offset = np.zeros(3)
        lip_gaps = lip_gap_terms(model, keys.mix, keys.names, min_cm=0.1)
        for pobj, _ in parts.values():
            link_part_keys(pobj, obj, lip_gaps)
        notes: list[str] = []
        if options.place_beside:
            posed = rig_rest @ rotation.T + face_offset
            shift, passed = free_offset(posed.min(0), posed.max(0),
                                        scene_obstacles(context.scene, exclude={obj, *(p for p, _ in parts.values())}))
            if shift:
                (arm or obj).location.x += shift
                face_offset = face_offset + [shift, 0.0, 0.0]
                notes.append(f"placed {shift:.2f} m along X, beside " + ", ".join(passed))
        for o in (obj, *(p for p, _ in parts.values())):
            o[PROP_PREFIX + "shape_key_names"] = keys.naming
        if arm is not None:
            arm[PROP_PREFIX + "shape_key_names"] = keys.naming
        obj[PROP_PREFIX + "expression_names"] = json.dumps(list(model.expression_names))
        apply_expression(obj, np.asarray(params.expression, np.float64))
        t = _timed(timings, "armature", t)

        cam = None
        if options.add_camera:
            progress(0.85, "camera")
            photo_img = _photo_image(created, f"{options.name}_photo", photo.image)
            cam = add_camera(created, options.name, params, photo_img, photo.width, photo.height, context,
                             options.make_active_camera, face_offset)
            coll.objects.link(cam)
        if options.light_scene:   # a World and three lights, only where the scene has none
            context.view_layer.update()
            ensure_render_setup(created, context.scene, object_centre(obj))
        store_properties(obj, photo, params)
        if same is not None:
            store_same_person(obj, same)
        obj["facerig_texture_coverage"] = json.dumps(baked.coverage)
        obj["facerig_texture_lighting"] = "removed" if options.remove_lighting else "photo"
        overlay_error = load("pipeline").overlay_error

        if photo.face.confirmed:   # vs the detected landmarks (primary photo); an unconfirmed face has none
            obj["facerig_overlay_nme"] = overlay_error(model, photo)
        _timed(timings, "camera", t)
        progress(1.0, "done")
    except BaseException:
        created.remove_all()
        raise
    return BuildResult(obj, arm, cam, coll, timings, {p: o for p, (o, _) in parts.items()}, notes)


def add_part_keys(model: "facemodel.FaceModel", keys: "arkit.KeySet", pobj: Any, part: str, rig_rest: np.ndarray,
                  deltas: np.ndarray, verts: np.ndarray, motion: np.ndarray) -> None:
    """The head's keys that move this part (``motion``: each key's largest move of it; teeth: the jaw's,
    lashes: blinks, looks, …), plus the teeth's ``teethTuck`` (teeth out of sight behind closed lips)."""
    moving = np.flatnonzero(motion > PART_KEY_MIN_M)
    names = [keys.names[k] for k in moving]
    part_deltas = deltas[moving][:, verts]
    if part == "Teeth":
        tuck = to_rig_space(teeth_tuck_offsets(model))
        names.append(TEETH_TUCK)
        part_deltas = np.concatenate([part_deltas, tuck[None]], 0)
    if names:
        add_shape_keys(pobj, names, rig_rest[verts], part_deltas)
    pobj[PROP_PREFIX + "part"] = part


def link_part_keys(pobj: Any, head: Any, lip_gaps: list[dict[str, float]]) -> None:
    """Drivers: a part's keys follow the head's keys of the same name (the head's ``jawOpen`` follows the
    jaw bone); ``teethTuck`` = 1 while the lips are closed, 0 once they are ``TUCK_OPEN_CM`` further
    apart than at rest anywhere along the mouth (``facerig_lip_gap_N``: the gap change at the centre and
    both sides, linear in the head's keys)."""
    if pobj.data.shape_keys is None:
        return
    key = pobj.data.shape_keys
    for kb in key.key_blocks[1:]:
        if kb.name != TEETH_TUCK:
            rigging.add_copy_driver(key, kb.name, head.data.shape_keys)
    if TEETH_TUCK in key.key_blocks:
        gaps = []
        for i, terms in enumerate(lip_gaps):
            prop = f"{PROP_PREFIX}lip_gap_{i}"
            pobj[prop] = 0.0
            rigging.add_linear_driver(pobj, f'["{prop}"]', head.data.shape_keys, terms)
            gaps.append(("OBJECT", pobj, f'["{prop}"]'))
        opening = "max(" + ", ".join(f"k{i}" for i in range(len(gaps))) + ")" if len(gaps) > 1 else "k0"
        rigging.add_prop_driver(key.key_blocks[TEETH_TUCK], "value",
                                f"max(0.0, min(1.0, 1.0 - {opening} / {TUCK_OPEN_CM}))", gaps)


