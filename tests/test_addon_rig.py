"""ARKit names, Live Link Face captures, head placement, rig weights (numpy) and the head in a scene (bpy):
separate parts, rest pose, jaw driver, teeth behind closed lips, photo expression, sculpt copy, animation."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from runtime.arkit import (ARKIT_NAMES, MISSING_IN_ICT, ROTATION_COLUMNS, CaptureError, expression_record,
                                 key_set, read_live_link_csv)
from blender_addon.placement import Obstacle, free_offset
from runtime.testing import build_constant_regressor, plausible_params

from .conftest import FACES

ASTRONAUT = FACES / "demo" / "astronaut_eileen_collins_nasa.png"


def write_live_link_csv(path: Path, rows: list[dict[str, float]], fps: int = 60, start: str = "10:20:30") -> Path:
    """A capture in Live Link Face's published column order: Timecode (HH:MM:SS:FF.fff), BlendShapeCount,
    the 52 shapes in PascalCase, the 9 head and eye angles; one row per frame at ``fps``."""
    columns = [a[0].upper() + a[1:] for a in ARKIT_NAMES] + list(ROTATION_COLUMNS)
    h, m, s0 = (int(v) for v in start.split(":"))
    lines = [",".join(["Timecode", "BlendShapeCount", *columns])]
    for i, row in enumerate(rows):
        s, f = divmod(i, fps)
        values = [row.get(a, 0.0) for a in ARKIT_NAMES] + [row.get(r, 0.0) for r in ROTATION_COLUMNS]
        lines.append(",".join([f"{h:02d}:{m:02d}:{s0 + s:02d}:{f:02d}.000", "61", *(f"{v:.6f}" for v in values)]))
    path.write_text("\n".join(lines) + "\n")
    return path


# -- names ------------------------------------------------------------------------------------------
def test_arkit_key_set_covers_ict(face_model) -> None:
    assert len(ARKIT_NAMES) == len(set(ARKIT_NAMES)) == 52
    keys = key_set(face_model.expression_names, "arkit")
    assert keys.names == [a for a in ARKIT_NAMES if a not in MISSING_IN_ICT] and len(keys.names) == 51
    names = list(face_model.expression_names)
    w = np.zeros(53)
    w[names.index("browInnerUp_L")], w[names.index("browInnerUp_R")] = 0.2, 0.6
    w[names.index("eyeBlink_L")], w[names.index("jawOpen")] = 0.7, 0.3
    values = dict(zip(keys.names, keys.values(w)))
    assert values["browInnerUp"] == pytest.approx(0.4) and values["eyeBlinkLeft"] == pytest.approx(0.7)
    assert values["jawOpen"] == pytest.approx(0.3) and values["eyeBlinkRight"] == 0.0
    disp = keys.displacements(face_model.expression_basis)
    np.testing.assert_allclose(disp[keys.names.index("cheekPuff")],
                               face_model.expression_basis[names.index("cheekPuff_L")]
                               + face_model.expression_basis[names.index("cheekPuff_R")])
    assert keys.targets("tongueOut") == [] and keys.targets("cheekPuff") == ["cheekPuff"]
    ict = key_set(face_model.expression_names, "ict")
    assert ict.names == names and ict.targets("browInnerUp") == ["browInnerUp_L", "browInnerUp_R"]
    assert ict.targets("eyeBlinkLeft") == ["eyeBlink_L"]
    record = expression_record(face_model.expression_names, w)
    assert list(record["expression_arkit"]) == list(ARKIT_NAMES) and record["expression_arkit"]["tongueOut"] is None
    assert record["expression_ict"]["eyeBlink_L"] == pytest.approx(0.7)
    with pytest.raises(ValueError, match="naming"):
        key_set(face_model.expression_names, "apple")


def test_live_link_csv_reading(tmp_path: Path) -> None:
    rows = [{"jawOpen": i / 89, "eyeBlinkLeft": 1.4, "HeadYaw": 10.0 * i / 89} for i in range(90)]   # 1.5 s at 60
    capture = read_live_link_csv(write_live_link_csv(tmp_path / "take.csv", rows), angles="degrees")
    assert capture.capture_fps == 60 and len(capture.times) == 90      # frame field reached 59: 60 fps
    np.testing.assert_allclose(capture.times, np.arange(90) / 60)
    np.testing.assert_allclose(capture.weights["jawOpen"], np.arange(90) / 89, atol=1e-6)
    assert capture.weights["eyeBlinkLeft"].max() == 1.0                 # clipped to [0, 1]
    assert capture.rotations["HeadYaw"][-1] == pytest.approx(math.radians(10.0))
    frames, at24 = capture.resample(24.0)
    assert len(frames) == 36 and at24.times[-1] == pytest.approx(35 / 24)
    np.testing.assert_allclose(at24.weights["jawOpen"], np.clip(at24.times * 60 / 89, 0, 1), atol=1e-6)
    thirty = read_live_link_csv(write_live_link_csv(tmp_path / "t30.csv", rows[:45], fps=30))
    assert thirty.capture_fps == 30 and thirty.duration == pytest.approx(44 / 30)
    (tmp_path / "bad.csv").write_text("Frame,JawOpen\n1,0.5\n")
    with pytest.raises(CaptureError, match="Timecode"):
        read_live_link_csv(tmp_path / "bad.csv")
    (tmp_path / "nan.csv").write_text("Timecode,JawOpen\n00:00:00:01.000,open\n")
    with pytest.raises(CaptureError, match="not a number"):
        read_live_link_csv(tmp_path / "nan.csv")


def test_free_offset_places_heads_side_by_side() -> None:
    head_lo, head_hi = np.array([-0.12, -0.13, -0.19]), np.array([0.12, 0.09, 0.15])
    assert free_offset(head_lo, head_hi, []) == (0.0, [])
    placed: list[Obstacle] = []
    for i in range(3):
        x, _ = free_offset(head_lo, head_hi, placed)
        placed.append(Obstacle(f"H{i}", head_lo + [x, 0, 0], head_hi + [x, 0, 0], True))
    xs = [o.lo[0] for o in placed]
    assert xs[0] == -0.12 and all(b.lo[0] >= a.hi[0] + 0.099 for a, b in zip(placed, placed[1:]))
    cube = Obstacle("Cube", np.full(3, -1.0), np.full(3, 1.0), False)
    floor = Obstacle("Floor", np.array([-20, -20, -0.3]), np.array([20, 20, -0.29]), False)
    x, passed = free_offset(head_lo, head_hi, [cube, floor])
    assert passed == ["Cube"] and x == pytest.approx(1.0 + 0.1 + 0.12)


def test_rig_weights(face_model) -> None:
    from blender_addon.rig import DEFORM_BONES, part_polygons, rig_layout

    layout = rig_layout(face_model, face_model.neutral)
    total = sum(layout.weights[b] for b in DEFORM_BONES)
    np.testing.assert_allclose(total, 1.0, atol=1e-6)
    assert (layout.weights["head"][face_model.vertex_range("narrow_face")] == 1).all()    # the face is rigid
    s = layout.neck_coordinate
    neck = face_model.vertex_range("head_neck")
    assert (layout.weights["root"][neck][s[neck] < 0.02] > 0.99).all()                      # the collar stays
    assert math.degrees(layout.jaw_open_angle) == pytest.approx(25.3, abs=0.5)               # ICT's jawOpen
    polys = part_polygons(face_model, teeth=False)
    assert "Teeth" not in polys and sum(len(p) for p in polys.values()) < len(face_model.faces)


# -- Blender ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def scene_heads(face_model, tmp_path_factory: pytest.TempPathFactory):
    """Three heads built into Blender's default scene (with its cube): ARKit names; ICT names and no teeth."""
    bpy = pytest.importorskip("bpy")
    from blender_addon.build_mesh import BuildOptions, build_face
    from runtime.pipeline import reconstruct_photo

    regressor = build_constant_regressor(tmp_path_factory.mktemp("onnx") / "constant.onnx",
                                         plausible_params(face_model, rotation=(0.3, 0.1, -0.05)))
    bpy.ops.wm.read_factory_settings(use_empty=False)
    recon = reconstruct_photo(ASTRONAUT, model=regressor, face_model=face_model)
    results = [build_face(face_model, recon, BuildOptions(texture_size=128, name="A"), bpy.context),
               build_face(face_model, recon, BuildOptions(texture_size=128, name="B"), bpy.context),
               build_face(face_model, recon, BuildOptions(texture_size=128, name="C", shape_key_names="ict",
                                                          teeth=False), bpy.context)]
    return recon, results


def _world_box(objects) -> tuple[np.ndarray, np.ndarray]:
    import bpy
    from mathutils import Vector

    bpy.context.view_layer.update()
    pts = np.array([tuple(o.matrix_world @ Vector(c)) for o in objects for c in o.bound_box])
    return pts.min(0), pts.max(0)


def _evaluated(obj) -> np.ndarray:
    """Evaluated vertex positions in the rig object's space (world minus the rig's place)."""
    import bpy

    from blender_addon.render_setup import evaluated_world_vertices

    bpy.context.view_layer.update()
    rig = obj.parent if obj.parent is not None else obj
    return evaluated_world_vertices(obj) - np.array(rig.matrix_world)[:3, 3]


def test_heads_side_by_side_and_out_of_the_cube(scene_heads) -> None:
    import bpy

    _, results = scene_heads
    cube = bpy.data.objects["Cube"]
    assert cube.location[:] == (0.0, 0.0, 0.0) and cube.visible_get()         # the default cube is left alone
    cube_lo, cube_hi = _world_box([cube])
    boxes = [_world_box([r.mesh_object, *r.parts.values()]) for r in results]
    for lo, hi in boxes:
        centre = 0.5 * (lo + hi)
        assert not ((centre > cube_lo) & (centre < cube_hi)).all()             # not swallowed by the cube
    for i in range(3):
        for j in range(i + 1, 3):
            (alo, ahi), (blo, bhi) = boxes[i], boxes[j]
            assert not ((alo < bhi).all() and (ahi > blo).all()), (i, j)     # no two heads overlap
    assert "Cube" in results[0].notes[0] and "A_rig" in results[1].notes[0]
    for r in results:                                                         # rig unrotated; pose on the bones
        assert np.allclose(np.array(r.armature_object.matrix_world)[:3, :3], np.eye(3))
        assert r.armature_object.pose.bones["head"].rotation_quaternion.angle > 0.01


def test_camera_matches_photo_beside_the_cube(scene_heads, face_model) -> None:
    """Moved out of the cube and posed on its bones, the head still overlays the photo through its camera."""
    import bpy
    from bpy_extras.object_utils import world_to_camera_view
    from mathutils import Vector

    from facemodel import project
    from facemodel.formation import mesh_camera_space

    recon, results = scene_heads
    r = results[1]
    scene = bpy.context.scene
    bpy.context.view_layer.update()
    ev = r.mesh_object.evaluated_get(bpy.context.evaluated_depsgraph_get())
    lm = face_model.landmark_indices()
    world = [r.mesh_object.matrix_world @ ev.data.vertices[int(i)].co for i in lm]
    w, h = recon.width, recon.height
    px = [(p.x * w, (1 - p.y) * h) for p in (world_to_camera_view(scene, r.camera_object, Vector(q)) for q in world)]
    expected = project(mesh_camera_space(face_model.arrays.subset(lm), recon.params), recon.params.camera, w, h)
    np.testing.assert_allclose(np.array(px), expected, atol=0.05)


def test_naming_option_and_toothless(scene_heads, face_model) -> None:
    _, results = scene_heads
    ict = results[2]
    assert [k.name for k in ict.mesh_object.data.shape_keys.key_blocks[1:]] == list(face_model.expression_names)
    assert set(ict.parts) == {"Eye.L", "Eye.R", "Lashes"}                     # no teeth
    eye = results[0].parts["Eye.L"]
    assert eye.parent_type == "BONE" and eye.parent_bone == "eye.L" and eye.data.shape_keys is None


def test_jaw_bone_drives_jaw_open_and_leaves_the_throat(scene_heads, face_model) -> None:
    """Rotating the jaw bone gives exactly the mesh of jawOpen (never both), throat vertices stay."""
    from blender_addon.expression import find_head, neutral_expression, rest_head_pose

    _, results = scene_heads
    r = results[0]
    rig = find_head(r.mesh_object)
    neutral_expression(rig)
    rest_head_pose(rig)
    skin, teeth = r.mesh_object, r.parts["Teeth"]
    rest_skin, rest_teeth = _evaluated(skin), _evaluated(teeth)
    jaw = r.armature_object.pose.bones["jaw"]
    jaw.rotation_euler[0] = 0.5 * r.armature_object["facerig_jaw_open_angle"]
    try:
        open_skin, open_teeth = _evaluated(skin), _evaluated(teeth)
        key = skin.data.shape_keys.key_blocks
        assert key["jawOpen"].value == pytest.approx(0.5, abs=1e-5)
    finally:
        jaw.rotation_euler[0] = 0.0
    n = len(skin.data.vertices)
    np.testing.assert_allclose(open_skin - rest_skin, 0.5 * (_key_co(key["jawOpen"]) - _key_co(key["Basis"])),
                               atol=2e-6)
    assert np.linalg.norm(open_teeth - rest_teeth, axis=1).max() > 0.01      # lower teeth follow (> 1 cm)
    v = face_model.neutral
    throat = np.flatnonzero((np.arange(n) >= 9409) & (np.arange(n) <= 11247)
                            & (v[:n, 1] < v[face_model.landmark_indices()[8], 1] - 2.0))
    assert len(throat) > 100 and np.linalg.norm(open_skin - rest_skin, axis=1)[throat].max() < 5e-4   # ICT: 0.2 mm


def _teeth_hits(result) -> int:
    """Rays from straight ahead through a grid over the mouth: how many hit the teeth first."""
    import bpy
    from mathutils import Vector

    bpy.context.view_layer.update()
    depsgraph = bpy.context.evaluated_depsgraph_get()
    origin = np.array(result.armature_object.matrix_world)[:3, 3]
    hits = 0
    for x in np.linspace(-0.02, 0.02, 21):
        for z in np.linspace(-0.045, -0.022, 47):
            start = Vector(origin + [x, -0.5, z])
            hit, _, _, _, obj, _ = bpy.context.scene.ray_cast(depsgraph, start, Vector((0, 1, 0)))
            hits += bool(hit and obj == result.parts["Teeth"])
    return hits


def test_teeth_hidden_behind_closed_lips(scene_heads) -> None:
    from blender_addon.expression import find_head, neutral_expression, rest_head_pose, set_key_values

    _, results = scene_heads
    r = results[1]
    rig = find_head(r.mesh_object)
    rest_head_pose(rig)
    neutral_expression(rig)
    assert _teeth_hits(r) == 0
    assert r.parts["Teeth"].data.shape_keys.key_blocks["teethTuck"].value == pytest.approx(1.0)
    set_key_values(rig, {"jawOpen": 0.4})
    try:
        assert _teeth_hits(r) > 20
        assert r.parts["Teeth"].data.shape_keys.key_blocks["teethTuck"].value == 0.0
    finally:
        neutral_expression(rig)


def test_photo_expression_sculpt_copy_and_panel(scene_heads, face_model) -> None:
    import bpy

    import blender_addon
    from runtime.arkit import key_set

    recon, results = scene_heads
    r = results[0]
    blender_addon.register()
    try:
        bpy.context.view_layer.objects.active = r.parts["Lashes"]       # any part of the head will do
        assert bpy.ops.facerig.photo_expression(state="NEUTRAL", pose=True) == {"FINISHED"}
        keys = r.mesh_object.data.shape_keys.key_blocks
        assert all(k.value == 0 for k in keys[1:])
        assert r.armature_object.pose.bones["head"].rotation_quaternion.angle < 1e-6
        assert bpy.ops.facerig.photo_expression(state="PHOTO", pose=True) == {"FINISHED"}
        expected = key_set(face_model.expression_names, "arkit").values(recon.params.expression)
        np.testing.assert_allclose([k.value for k in keys[1:]], expected, atol=1e-5)
        assert r.armature_object.pose.bones["head"].rotation_quaternion.angle > 0.01
        skin = _evaluated(r.mesh_object)
        assert bpy.ops.facerig.sculpt_copy() == {"FINISHED"}
        copy = bpy.context.view_layer.objects.active
        assert copy.data.shape_keys is None and not copy.modifiers and copy.parent is None
        assert copy.data is not r.mesh_object.data and len(copy.data.vertices) == len(skin)
        co = np.empty(len(skin) * 3, np.float32)
        copy.data.vertices.foreach_get("co", co)
        basis = _key_co(keys["Basis"])
        mix = basis + sum(k.value * (_key_co(k) - basis) for k in keys[1:])
        np.testing.assert_allclose(co.reshape(-1, 3), mix, atol=1e-6)
        bpy.data.objects.remove(copy)
        from blender_addon.rig_operators import VIEW3D_PT_facerig_rig

        bpy.context.view_layer.objects.active = r.mesh_object
        assert VIEW3D_PT_facerig_rig.poll(bpy.context)
    finally:
        blender_addon.unregister()


def _key_co(block) -> np.ndarray:
    out = np.empty(len(block.data) * 3, np.float32)
    block.data.foreach_get("co", out)
    return out.reshape(-1, 3)


def test_neck_deforms_smoothly(scene_heads, face_model) -> None:
    """Head bone turned ±40°, neck bone bent 40° forward and back: no folded triangles in the neck, folds
    between neighbouring triangles change by less than 50°, and the bottom of the neck stays put."""
    from mathutils import Matrix

    from blender_addon.armature import bone_basis_rotation, rest_pose
    from blender_addon.rig import deformation_report, rig_layout

    _, results = scene_heads
    r = results[0]
    arm, skin = r.armature_object, r.mesh_object
    from blender_addon.expression import find_head, neutral_expression

    neutral_expression(find_head(skin))
    rest_pose(arm)
    rest = _evaluated(skin).astype(np.float64)
    n = len(rest)
    tri = np.concatenate([face_model.faces[:, [0, 1, 2]], face_model.faces[face_model.faces[:, 3] >= 0][:, [0, 2, 3]]])
    tri = tri[(tri < n).all(1)]
    v = face_model.neutral
    neck = np.concatenate([face_model.vertex_range("head_neck"),
                           np.flatnonzero((np.arange(n) < 9409) & (v[:n, 1] < v[face_model.landmark_indices()[8], 1]))])
    s = rig_layout(face_model, v).neck_coordinate
    collar = neck[s[neck] <= 0.02]
    reports = {}
    try:
        for name, bone, axis, degrees in (("turn +40", "head", "Z", 40), ("turn -40", "head", "Z", -40),
                                          ("bend fwd 40", "neck", "X", 40), ("bend back 40", "neck", "X", -40)):
            rest_pose(arm)
            pb = arm.pose.bones[bone]
            pb.rotation_quaternion = bone_basis_rotation(pb, Matrix.Rotation(math.radians(degrees), 3, axis))
            posed = _evaluated(skin).astype(np.float64)
            reports[name] = deformation_report(rest, posed, tri, neck)
            assert np.linalg.norm(posed - rest, axis=1)[collar].max() < 5e-4, name          # < 0.5 mm
    finally:
        rest_pose(arm)
    for name, rep in reports.items():
        assert rep.folded == 0 and rep.max_fold_deg < 50, (name, rep)


@pytest.mark.slow   # last in this file: it opens other .blend files, which ends the fixture's scene
def test_live_link_capture_round_trip(face_model, tmp_path: Path) -> None:
    """facerig reconstruct → facerig animate with a 60 fps capture into a 30 fps scene: keys at the right
    frames with the right values, jaw, head and eye bones rotated."""
    bpy = pytest.importorskip("bpy")
    from mathutils import Matrix

    from blender_addon.expression import heads_in
    from facerig_cli.main import main

    regressor = build_constant_regressor(tmp_path / "c.onnx", plausible_params(face_model))
    assert main(["reconstruct", str(ASTRONAUT), "-o", str(tmp_path / "head.blend"), "--model", str(regressor),
                 "--texture-size", "128"]) == 0
    rows = [{"jawOpen": i / 60, "eyeBlinkLeft": 0.5, "browInnerUp": 0.25 + i / 240, "tongueOut": 1.0,
             "HeadYaw": 0.3 * i / 60, "LeftEyeYaw": 0.2} for i in range(61)]      # one second at 60 fps
    csv = write_live_link_csv(tmp_path / "take.csv", rows)
    assert main(["animate", str(tmp_path / "head.blend"), str(csv), "-o", str(tmp_path / "anim.blend"),
                 "--fps", "30"]) == 0
    bpy.ops.wm.open_mainfile(filepath=str(tmp_path / "anim.blend"))
    scene = bpy.context.scene
    assert scene.render.fps == 30 and scene.frame_end >= scene.frame_start + 30
    rig = heads_in(bpy.data.objects)[0]
    keys = rig.head.data.shape_keys.key_blocks
    for offset in (0, 9, 30):          # frame k at 30 fps = row 2k of the 60 fps capture
        scene.frame_set(scene.frame_start + offset)
        t = offset / 30
        assert keys["eyeBlinkLeft"].value == pytest.approx(0.5, abs=1e-5)
        assert keys["browInnerUp"].value == pytest.approx(0.25 + 60 * t / 240, abs=1e-5)
        assert keys["jawOpen"].value == pytest.approx(60 * t / 60, abs=1e-4)   # through the jaw bone's driver
        head = rig.arm.pose.bones["head"].matrix.to_3x3() @ rig.arm.data.bones["head"].matrix_local.to_3x3().inverted()
        neck = rig.arm.pose.bones["neck"].matrix.to_3x3() @ rig.arm.data.bones["neck"].matrix_local.to_3x3().inverted()
        yaw = math.atan2(head[1][0], head[0][0])          # about the vertical axis (rig space Z)
        assert yaw == pytest.approx(0.3 * t, abs=1e-4) and Matrix(neck).to_quaternion().angle == \
            pytest.approx(0.4 * 0.3 * t, abs=1e-4)
        eye = rig.arm.pose.bones["eye.L"].matrix.to_3x3() @ rig.arm.data.bones["eye.L"].matrix_local.to_3x3().inverted()
        assert math.atan2(eye[1][0], eye[0][0]) == pytest.approx(0.3 * t + 0.2, abs=1e-4)   # on top of the head
    assert "tongueOut" not in keys
    assert main(["animate", str(tmp_path / "head.blend"), str(tmp_path / "missing.csv"), "-o",
                 str(tmp_path / "x.blend")]) == 2

