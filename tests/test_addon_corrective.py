"""The corrective field in Blender: its own shape key on top of the identity, carried by glTF and FBX."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from runtime.testing import build_constant_regressor, plausible_params

from .conftest import FACES

bpy = pytest.importorskip("bpy")

ASTRONAUT = FACES / "demo" / "astronaut_eileen_collins_nasa.png"


@pytest.fixture(scope="module")
def built(face_model, tmp_path_factory: pytest.TempPathFactory):
    from blender_addon.build_mesh import BuildOptions, build_face
    from runtime.pipeline import reconstruct_photo

    params = plausible_params(face_model, rotation=(0.2, 0.05, 0.0)).with_corrective_modes(20)
    params.corrective = np.random.default_rng(3).normal(0, 0.15, (20, 3)).astype(np.float32)
    onnx = build_constant_regressor(tmp_path_factory.mktemp("onnx") / "corrective.onnx", params)
    bpy.ops.wm.read_factory_settings(use_empty=True)
    recon = reconstruct_photo(ASTRONAUT, model=onnx, refine=False)
    result = build_face(face_model, recon, BuildOptions(texture_size=256, name="Corr"), bpy.context)
    return recon, result


def _key_co(key) -> np.ndarray:
    co = np.empty(len(key.data) * 3, np.float32)
    key.data.foreach_get("co", co)
    return co.reshape(-1, 3)


def _model_vertices(face_model, polygons: np.ndarray) -> np.ndarray:
    faces = face_model.faces[polygons]
    return np.unique(faces[faces >= 0])   # build_mesh_data's vertex order


def test_corrective_is_its_own_key_on_top_of_the_identity(built, face_model) -> None:
    from runtime.arkit import key_set
    from blender_addon.build_mesh import CORRECTIVE_KEY, part_polygons
    from blender_addon.space import to_rig_space

    recon, result = built
    keys = result.mesh_object.data.shape_keys.key_blocks
    names = [k.name for k in keys]
    arkit = key_set(face_model.expression_names).names
    assert names == ["Basis", *arkit, CORRECTIVE_KEY]          # expression keys untouched
    key = keys[CORRECTIVE_KEY]
    assert key.value == 1.0 and key.slider_min == 0.0 and key.slider_max == 2.0
    assert key.relative_key.name == "Basis"
    offset_m = _key_co(key) - _key_co(keys["Basis"])
    polygons = part_polygons(face_model)
    head = _model_vertices(face_model, polygons["Head"])
    field = to_rig_space(face_model.harmonics.basis @ np.asarray(recon.params.corrective))   # (V, 3) m, rig space
    np.testing.assert_allclose(offset_m, field[head], atol=2e-6)
    assert np.abs(offset_m).max() > 1e-3                      # mm-sized: the key really moves the face
    back = face_model.neutral[head, 2] < -5                   # the back of the head stays put
    assert np.abs(offset_m[back]).max() < 1e-7
    # the lashes follow the lids: their own key, driven by the skin's
    lashes = result.parts["Lashes"].data.shape_keys
    assert CORRECTIVE_KEY in lashes.key_blocks
    lash_offset = _key_co(lashes.key_blocks[CORRECTIVE_KEY]) - _key_co(lashes.key_blocks["Basis"])
    np.testing.assert_allclose(lash_offset, field[_model_vertices(face_model, polygons["Lashes"])], atol=2e-6)
    assert any(d.data_path == f'key_blocks["{CORRECTIVE_KEY}"].value' for d in lashes.animation_data.drivers)


def test_gltf_and_fbx_carry_the_corrective_morph_target(built, face_model, tmp_path: Path) -> None:
    from runtime.arkit import key_set
    from blender_addon.build_mesh import CORRECTIVE_KEY
    from blender_addon.export import export_scene

    export_scene(tmp_path / "face.glb")
    export_scene(tmp_path / "face.fbx")
    skin = built[1].mesh_object.name
    for path, importer in ((tmp_path / "face.glb", bpy.ops.import_scene.gltf),
                           (tmp_path / "face.fbx", bpy.ops.import_scene.fbx)):
        bpy.ops.wm.read_factory_settings(use_empty=True)
        importer(filepath=str(path))
        meshes = [o for o in bpy.data.objects if o.type == "MESH" and o.name.startswith(skin)
                  and o.data.shape_keys and len(o.data.shape_keys.key_blocks) > 40]
        assert len(meshes) == 1, path.name
        names = [k.name for k in meshes[0].data.shape_keys.key_blocks[1:]]
        assert names == [*key_set(face_model.expression_names).names, CORRECTIVE_KEY], path.name
