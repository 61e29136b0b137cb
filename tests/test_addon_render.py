"""The built head renders (Cycles, tiny frames): the scene gets a World and lights only where it has
none, the lashes are strands with alpha, and a blink closes the eye to skin."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from runtime import completion

from .conftest import FACES, ROOT

bpy = pytest.importorskip("bpy")

ASTRONAUT = FACES / "demo" / "astronaut_eileen_collins_nasa.png"   # NASA, public domain; no glasses


def _example():
    """examples/render_head.py as a module (its camera placement is what the tests aim with)."""
    spec = importlib.util.spec_from_file_location("render_head", ROOT / "examples" / "render_head.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def head(face_model):
    from blender_addon.build_mesh import BuildOptions, build_face
    from runtime.pipeline import reconstruct_photo

    bpy.ops.wm.read_factory_settings(use_empty=True)
    recon = reconstruct_photo(ASTRONAUT)
    result = build_face(face_model, recon, BuildOptions(texture_size=256, name="Astro"), bpy.context)
    return recon, result


def _render(size: int, samples: int = 4) -> np.ndarray:
    """The scene's camera view, Cycles on the CPU, as float RGB (row 0 = top) in display space."""
    scene = bpy.context.scene
    scene.render.engine = "CYCLES"
    scene.cycles.device = "CPU"
    scene.cycles.samples = samples
    scene.cycles.use_denoising = False
    scene.render.resolution_x = scene.render.resolution_y = size
    scene.render.resolution_percentage = 100
    scene.view_settings.view_transform = "Standard"
    bpy.ops.render.render()
    result = bpy.data.images["Render Result"]
    path = Path(bpy.app.tempdir or "/tmp") / "facerig_test_render.png"
    scene.render.image_settings.file_format = "PNG"
    result.save_render(filepath=str(path))
    img = bpy.data.images.load(str(path))
    px = np.array(img.pixels[:], np.float32).reshape(size, size, 4)[::-1, :, :3]
    bpy.data.images.remove(img)
    return px


def _aim_at(example, result, model, centre_of: np.ndarray, size_m: float) -> None:
    """A camera straight in front of the head, framing ``size_m`` around the world point ``centre_of``."""
    scene = bpy.context.scene
    cam = bpy.data.objects.get("TestCamera")
    if cam is None:
        cam = bpy.data.objects.new("TestCamera", bpy.data.cameras.new("TestCamera"))
        scene.collection.objects.link(cam)
        cam.data.lens = example.LENS_MM
    centre, right, up, forward, _ = example.head_frame(result.mesh_object, model)
    example.place_camera(cam, centre_of, right, up, forward, size_m, 0.0)
    scene.camera = cam


def _world_points(obj, indices: np.ndarray) -> np.ndarray:
    from blender_addon.render_setup import evaluated_world_vertices

    return evaluated_world_vertices(obj)[indices]


def _to_pixels(points: np.ndarray, size: int) -> np.ndarray:
    from bpy_extras.object_utils import world_to_camera_view
    from mathutils import Vector

    scene = bpy.context.scene
    uv = np.array([world_to_camera_view(scene, scene.camera, Vector(p.tolist()))[:2] for p in points])
    return np.stack([uv[:, 0] * size, (1 - uv[:, 1]) * size], 1)


@pytest.mark.slow
def test_empty_scene_gets_world_and_lights_and_renders(face_model, head) -> None:
    from blender_addon.render_setup import LIGHTS_COLLECTION, WORLD_NAME

    recon, result = head
    scene = bpy.context.scene
    assert scene.world is not None and scene.world.name == WORLD_NAME
    lights = [o for o in scene.objects if o.type == "LIGHT"]
    assert len(lights) == 3 and all(o.users_collection[0].name == LIGHTS_COLLECTION for o in lights)
    example = _example()
    centre = example.head_frame(result.mesh_object, face_model)[0]
    _aim_at(example, result, face_model, centre, 0.3)
    lit = _render(48)
    face = lit[14:34, 16:32]                           # the middle of the frame: the face
    assert face.mean() > 0.2, face.mean()
    world, hidden = scene.world, [o for o in lights]
    scene.world = None
    for light in hidden:
        light.hide_render = True
    try:
        dark = _render(48)
    finally:
        scene.world = world
        for light in hidden:
            light.hide_render = False
    assert dark.max() < 0.02                            # what F12 gave before: black


def test_an_artists_world_and_lights_are_left_alone(face_model, head) -> None:
    from blender_addon.build_mesh import BuildOptions, build_face
    from blender_addon.render_setup import LIGHTS_COLLECTION, WORLD_NAME

    recon, _ = head
    scene = bpy.data.scenes.new("Artist")              # a scene of its own (the module's head stays)
    context = SimpleNamespace(scene=scene, view_layer=scene.view_layers[0])
    options = {"texture_size": 64, "add_camera": False, "build_armature": False}
    world = bpy.data.worlds.new("Artist World")
    world.color = (0.1, 0.2, 0.3)
    scene.world = world
    light = bpy.data.objects.new("Artist Light", bpy.data.lights.new("Artist Light", "SPOT"))
    light.data.energy = 123.0
    scene.collection.objects.link(light)
    n_worlds, n_collections = len(bpy.data.worlds), len(bpy.data.collections)
    build_face(face_model, recon, BuildOptions(name="A", **options), context)
    assert scene.world == world and tuple(world.color) == pytest.approx((0.1, 0.2, 0.3))
    assert [o.name for o in scene.objects if o.type == "LIGHT"] == ["Artist Light"]
    assert light.data.energy == 123.0 and len(bpy.data.worlds) == n_worlds
    assert len(bpy.data.collections) == n_collections + 1          # the head's own, no light rig
    # a World but no lights: the lights are added, the World kept
    bpy.data.objects.remove(light)
    build_face(face_model, recon, BuildOptions(name="B", **options), context)
    lights = [o for o in scene.objects if o.type == "LIGHT"]
    assert scene.world == world and len(lights) == 3
    assert all(LIGHTS_COLLECTION in o.users_collection[0].name for o in lights)
    # a second head reuses what the first one brought; a scene without a World gets the add-on's
    build_face(face_model, recon, BuildOptions(name="C", **options), context)
    assert len([o for o in scene.objects if o.type == "LIGHT"]) == 3
    scene.world = None
    build_face(face_model, recon, BuildOptions(name="D", **options), context)
    assert scene.world.name == WORLD_NAME and len(bpy.data.worlds) == n_worlds   # reused, not a second one


def test_lashes_have_alpha(head, face_model) -> None:
    _, result = head
    mat = result.mesh_object.data.materials[face_model.material_names.index("M_EyeLashes")]
    bsdf = next(n for n in mat.node_tree.nodes if n.type == "BSDF_PRINCIPLED")
    (link,) = [lk for lk in mat.node_tree.links if lk.to_socket == bsdf.inputs["Alpha"]]
    assert link.from_node.type == "TEX_IMAGE" and link.from_node.image.alpha_mode == "STRAIGHT"
    if hasattr(mat, "surface_render_method"):
        assert mat.surface_render_method == "DITHERED"


@pytest.mark.slow
def test_a_blink_closes_to_skin(face_model, head) -> None:
    """Close-up of the right eye: open, the lashes are strands (not a dark block over the lid);
    blinking, the eye's opening turns nearly the colour of the skin above it (not a dark smear)."""
    recon, result = head
    example = _example()
    obj = result.mesh_object
    lm = face_model.landmarks68
    size = 64
    example.set_expression(obj, ())
    eye = _world_points(obj, lm[36:42])
    _aim_at(example, result, face_model, eye.mean(0), 0.05)
    opening = _to_pixels(eye, size)
    lid, brow = _to_pixels(_world_points(obj, lm[[37, 38, 19, 20]]), size).reshape(2, 2, 2).mean(1)
    above = lid + 0.45 * (brow - lid)                  # the skin between the eye and the brow
    open_px = _render(size, samples=8)
    example.set_expression(obj, ("eyeBlink",))
    try:
        closed_px = _render(size, samples=8)
    finally:
        example.set_expression(obj, ())
    import cv2

    mask = np.zeros((size, size), np.uint8)
    cv2.fillConvexPoly(mask, np.round(opening).astype(np.int32), 1)
    mask = cv2.erode(mask, np.ones((3, 3), np.uint8)).astype(bool)
    corners_y = opening[[0, 3], 1].mean()
    lid_mask = mask & (np.arange(size)[:, None] < corners_y)   # above the corners: the lid, not the lash line
    cx, cy = np.round(above).astype(int)
    skin = closed_px[cy - 3:cy + 3, cx - 3:cx + 3].reshape(-1, 3).mean(0)
    lid = closed_px[lid_mask].mean(0)
    d_closed = np.linalg.norm(completion.to_lab(lid[None] * 255)[0] - completion.to_lab(skin[None] * 255)[0])
    d_open = np.linalg.norm(completion.to_lab(open_px[lid_mask].mean(0)[None] * 255)[0]
                            - completion.to_lab(skin[None] * 255)[0])
    assert lid_mask.sum() > 15
    # measured: opaque lash cards and the photo's lash line stretched over the lid gave 31 (open 46) and
    # 17 % dark pixels in the eye's opening; strands with alpha and the completed lid give 22 (open 37), 2 %
    assert d_closed < 26.0 and d_closed < 0.7 * d_open, (d_closed, d_open)
    assert (closed_px[mask].mean(1) < 0.25).mean() < 0.08
    # the lash line above the open eye: strands over skin, not an opaque card
    top = np.round(opening[[1, 2]].mean(0)).astype(int)
    band = open_px[top[1] - 3:top[1], top[0] - 4:top[0] + 4].reshape(-1, 3).mean(1)
    assert (band < 0.08).mean() < 0.6


def test_example_row_is_photo_then_views_then_expressions():
    """``render_head.py --row`` (the README's picture): the photo around the face, every view of the first
    expression, then the front of each further one — rendering only those shots."""
    example = _example()
    expressions, views = ["neutral", "smile"], ["front", "3/4", "profile"]
    order = example.shots(expressions, views, True)
    assert order == [("neutral", "front"), ("neutral", "3/4"), ("neutral", "profile"), ("smile", "front")]
    assert len(example.shots(expressions, views, False)) == 6
    photo = np.zeros((300, 400, 3), np.uint8)
    photo[:, 300:] = 200                       # the face is at the right edge: the square shifts inside
    square = example.photo_square(photo, (320.0, 100.0, 420.0, 200.0), 32)
    assert square.shape == (32, 32, 3)
    assert square[:, -8:].min() == 200 and square[:, :4].max() == 0   # 400 - 125 = 275: 25 dark px of 125
    pictures = {shot: np.full((32, 32, 3), 50 * i, np.uint8) for i, shot in enumerate(order)}
    row = example.picture_row(square, pictures, order)
    assert row.shape == (32, 32 * 5, 3)
    assert row[20:, 32 * 4 + 20:].min() == 150    # the smile, last (below its label)
