"""The installable extension: build the zip, install it into a bpy-only environment, reconstruct.

"bpy-only": a fresh virtual environment whose only packages are bpy and bpy's own
requirements (numpy, requests, zstandard, cython and theirs), linked from the project venv
instead of re-downloading the 300 MB bpy wheel. Everything else the add-on needs
(onnxruntime, OpenCV, MediaPipe, pillow-heif and their runtime imports) must come from the zip's wheels/.
Building the zip downloads those wheels from PyPI (``pip download``; conftest ``extension_zips``);
without network and without a warm cache the build cannot bundle them and the test is skipped.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

from runtime.testing import build_constant_regressor, plausible_params

from .conftest import FACES

pytestmark = pytest.mark.slow

BPY_REQUIREMENTS = ("bpy", "numpy", "numpy.libs", "requests", "urllib3", "idna", "certifi", "charset_normalizer",
                    "zstandard", "Cython", "cython.py", "pyximport")

SCRIPT = r"""
import sys, bpy
res = bpy.ops.extensions.package_install_files(filepath=sys.argv[1], repo="user_default", enable_on_install=True)
assert res == {"FINISHED"}, res
assert any("facerig" in a.module for a in bpy.context.preferences.addons)
res = bpy.ops.facerig.reconstruct(filepath=sys.argv[2], model_path=sys.argv[3], texture_size=256)
assert res == {"FINISHED"}, res
obj = bpy.context.view_layer.objects.active
import cv2, mediapipe, onnxruntime, pillow_heif
for mod in (cv2, mediapipe, onnxruntime, pillow_heif):
    assert "extensions" in mod.__file__, mod.__file__   # from the bundled wheels, not the dev venv
import importlib.util
for pruned in ("matplotlib", "sounddevice", "attr"):   # MediaPipe declares them; the add-on never imports them
    assert importlib.util.find_spec(pruned) is None, pruned
keys = obj.data.shape_keys.key_blocks
print("RESULT", obj.name, len(obj.data.vertices), len(keys), int("facerig_corrective" in keys))
# the preferences' Download Face Model, with the zip's vendored facemodel.convert, into the extension's user folder
assert bpy.ops.facerig.fetch_face_model(url=sys.argv[4]) == {"FINISHED"}
import os
installed = os.path.join(bpy.utils.extension_path_user("bl_ext.user_default.facerig"), "ict_facekit_light.npz")
assert os.path.isfile(installed), installed
print("MODEL", installed)
"""


@pytest.fixture(scope="module")
def extension_zip(extension_zips: dict[str, Path]) -> Path:
    return extension_zips["linux-x64"]


def test_zip_layout(extension_zip: Path) -> None:
    with zipfile.ZipFile(extension_zip) as zf:
        names = set(zf.namelist())
        manifest = tomllib.loads(zf.read("blender_manifest.toml").decode())
    assert {"__init__.py", "build_mesh.py", "rt.py", "runtime/__init__.py", "runtime/pipeline.py", "runtime/fm.py",
            "facemodel/__init__.py", "facemodel/camera.py"} <= names
    assert not any("__pycache__" in n for n in names)
    assert manifest["id"] == "facerig" and manifest["platforms"] == ["linux-x64"]
    wheels = manifest["wheels"]
    assert all(w.lstrip("./") in names for w in wheels)
    joined = " ".join(wheels)
    for dist in ("onnxruntime", "opencv_python_headless", "mediapipe", "protobuf", "pillow_heif"):
        assert dist in joined
    for dist in ("numpy", "torch", "matplotlib", "sounddevice", "opencv_contrib"):
        assert dist not in joined


def test_install_in_bpy_only_env_and_reconstruct(extension_zip: Path, face_model, mini_archive,
                                                 tmp_path: Path) -> None:
    site = Path(sys.prefix) / "lib" / "python3.11" / "site-packages"
    onlybpy = tmp_path / "bpy_only"
    onlybpy.mkdir()
    for name in BPY_REQUIREMENTS:
        if (site / name).exists():
            (onlybpy / name).symlink_to(site / name)
    venv = tmp_path / "venv"
    subprocess.run([sys._base_executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    (venv / "lib" / "python3.11" / "site-packages" / "bpy_only.pth").write_text(str(onlybpy) + "\n")
    home = tmp_path / "home"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    for var in ("BLENDER_USER_RESOURCES", "XDG_CONFIG_HOME", "XDG_CACHE_HOME", "XDG_DATA_HOME"):
        (home / var).mkdir(parents=True)
        env[var] = str(home / var)
    probe = subprocess.run([str(venv / "bin" / "python"), "-c", "import cv2"], capture_output=True, env=env)
    assert probe.returncode != 0, "the clean environment must not see OpenCV"
    onnx_path = build_constant_regressor(tmp_path / "constant.onnx", plausible_params(face_model))
    script = tmp_path / "run.py"
    script.write_text(SCRIPT)
    from PIL import Image

    from runtime.photo import pillow_image

    pillow_image()                                      # registers the HEIF writer for this process
    phone_photo = tmp_path / "IMG_0001.HEIC"            # a phone's format: read by the bundled pillow-heif
    with Image.open(FACES / "demo" / "astronaut_eileen_collins_nasa.png") as im:
        im.convert("RGB").save(phone_photo, quality=90)
    res = subprocess.run([str(venv / "bin" / "python"), str(script), str(extension_zip),
                          str(phone_photo), str(onnx_path), mini_archive[0].as_uri()],
                         capture_output=True, text=True, env=env, timeout=600)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    # the skin (eyes, teeth, lashes apart): Basis, 51 ARKit keys and the corrective field's key, whose basis the
    # zip ships (Blender's Python has no scipy to compute it)
    assert "RESULT" in res.stdout and " 17799 53 1" in res.stdout
    assert f"MODEL {home / 'BLENDER_USER_RESOURCES'}/extensions/.user/user_default/facerig/" in res.stdout
