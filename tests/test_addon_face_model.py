"""Getting the face model inside Blender (issue 36.4): the preferences' Download Face Model and Choose
Local File buttons, the offline refusal, and a missing-model error that says what to do in Blender.

The "download" is a file:// URL of a miniature ICT-FaceKit archive (conftest ``mini_archive``); the
add-on's data folder is a temporary one (``operators.addon_data_dir``; the installed extension's is
Blender's extension user directory, checked in test_addon_extension.py).
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest

from .conftest import FACES

bpy = pytest.importorskip("bpy")


@pytest.fixture()
def addon(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """The add-on registered, with its data folder in ``tmp_path/data`` and online access off."""
    import blender_addon
    from blender_addon import operators

    bpy.ops.wm.read_factory_settings(use_empty=True)
    monkeypatch.setattr(operators, "addon_data_dir", lambda: tmp_path / "data")
    bpy.context.preferences.system.use_online_access = False
    blender_addon.register()
    try:
        yield operators
    finally:
        blender_addon.unregister()


def test_download_from_a_file_url_installs_the_model(addon, mini_archive, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from facemodel import FaceModel

    archive, truth = mini_archive
    assert not bpy.app.online_access          # file:// needs no online access, as for Blender's own repositories
    assert bpy.ops.facerig.fetch_face_model(url=archive.as_uri()) == {"FINISHED"}
    installed = tmp_path / "data" / "ict_facekit_light.npz"
    np.testing.assert_allclose(FaceModel.load(installed).neutral, truth["neutral"], atol=1e-4)
    assert (tmp_path / "data" / "ICT-FaceKit-LICENSE.txt").read_text().startswith("MIT")
    monkeypatch.delenv("FACERIG_FACE_MODEL")
    assert addon.resolve_face_model(bpy.context) == str(installed)


def test_download_refused_when_online_access_is_off(addon, tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="online access is off.*Choose Local File"):
        bpy.ops.facerig.fetch_face_model(url="https://example.invalid/ICT-FaceKit.zip")
    assert not (tmp_path / "data").exists()


def test_choose_a_local_zip_folder_or_npz(addon, mini_archive, tmp_path: Path) -> None:
    from facemodel import FaceModel

    archive, truth = mini_archive
    installed = tmp_path / "data" / "ict_facekit_light.npz"
    assert bpy.ops.facerig.choose_face_model(filepath=str(archive)) == {"FINISHED"}
    np.testing.assert_allclose(FaceModel.load(installed).identity_basis, truth["identity"], atol=1e-4)
    kept = tmp_path / "kept.npz"
    installed.rename(kept)
    assert bpy.ops.facerig.choose_face_model(filepath=str(kept)) == {"FINISHED"}      # validated and copied
    assert installed.read_bytes() == kept.read_bytes()
    installed.unlink()
    with zipfile.ZipFile(archive) as zf:
        zf.extractall(tmp_path / "unzipped")
    assert bpy.ops.facerig.choose_face_model(filepath=str(tmp_path / "unzipped")) == {"FINISHED"}
    np.testing.assert_allclose(FaceModel.load(installed).expression_basis, truth["expression"], atol=1e-4)
    (tmp_path / "notes.txt").write_text("not a model")
    with pytest.raises(RuntimeError, match="not ICT-FaceKit's zip"):
        bpy.ops.facerig.choose_face_model(filepath=str(tmp_path / "notes.txt"))
    broken = tmp_path / "broken.npz"
    np.savez(broken, neutral=np.zeros((3, 3)))
    with pytest.raises(RuntimeError, match="lacks arrays"):
        bpy.ops.facerig.choose_face_model(filepath=str(broken))
    assert FaceModel.load(installed).n_vertices == 70     # a refused file replaces nothing


def test_missing_model_says_how_to_get_it_in_blender(addon, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FACERIG_FACE_MODEL")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "empty-cache"))
    assert not addon.face_model_available(bpy.context)
    with pytest.raises(RuntimeError, match="Preferences › Add-ons › facerig.*Download Face Model") as info:
        bpy.ops.facerig.reconstruct(filepath=str(FACES / "demo" / "grace_hopper.jpg"))
    assert "facerig model fetch" not in str(info.value)
    from .test_addon_build import _Layout

    layout = _Layout()
    prefs = type("Prefs", (), {"layout": layout, "regressor_path": "", "face_model_path": "", "cnet_path": ""})()
    addon.FACERIG_AddonPreferences.draw(prefs, bpy.context)
    drawn = [c[1] for c in layout.calls if c[0] == "operator"]
    assert ("facerig.fetch_face_model",) in drawn and ("facerig.choose_face_model",) in drawn
