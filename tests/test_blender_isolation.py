"""``facerig`` never touches the user's Blender configuration (issue 36.1).

A fake user configuration (``$XDG_CONFIG_HOME/blender/5.0``, where Blender on Linux keeps it when no
BLENDER_USER_* variable is set) gets a small extension with a wheel installed and enabled, as a user's
Blender would have it. ``read_factory_settings`` with that configuration deletes the unpacked wheel
(the bug); ``facerig reconstruct … .blend`` — which calls ``read_factory_settings`` — leaves every file
of it as it was.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from runtime.testing import build_constant_regressor, plausible_params
from facerig_cli.blender_env import USER_OVERRIDES, isolate_blender_user_config

from .conftest import FACES, ROOT, SANDBOX_HOME

pytest.importorskip("bpy")

PROBE_MANIFEST = """schema_version = "1.0.0"
id = "probe_ext"
version = "1.0.0"
name = "Probe"
tagline = "An extension with a wheel, as a user would have installed"
maintainer = "facerig tests"
type = "add-on"
blender_version_min = "4.2.0"
license = ["SPDX:GPL-3.0-or-later"]
wheels = ["./wheels/facerigprobe-1.0-py3-none-any.whl"]
"""

INSTALL = """
import sys, bpy
res = bpy.ops.extensions.package_install_files(filepath=sys.argv[1], repo="user_default", enable_on_install=True)
assert res == {"FINISHED"}, res
bpy.ops.wm.save_userpref()
"""


def _probe_extension(path: Path) -> Path:
    """An extension zip whose only wheel is a one-module pure-Python package."""
    wheel_path = path.with_suffix(".whl")
    with zipfile.ZipFile(wheel_path, "w") as wheel:
        info = "facerigprobe-1.0.dist-info"
        wheel.writestr("facerigprobe/__init__.py", "VALUE = 42\n")
        wheel.writestr(f"{info}/METADATA", "Metadata-Version: 2.1\nName: facerigprobe\nVersion: 1.0\n")
        wheel.writestr(f"{info}/WHEEL", "Wheel-Version: 1.0\nGenerator: tests\nRoot-Is-Purelib: true\n"
                                        "Tag: py3-none-any\n")
        wheel.writestr(f"{info}/RECORD", "".join(f"{n},,\n" for n in (
            "facerigprobe/__init__.py", f"{info}/METADATA", f"{info}/WHEEL", f"{info}/RECORD")))
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("blender_manifest.toml", PROBE_MANIFEST)
        zf.writestr("__init__.py", "def register():\n    import facerigprobe\n\n\ndef unregister():\n    pass\n")
        zf.write(wheel_path, "wheels/facerigprobe-1.0-py3-none-any.whl")
    return path


def _user_env(tmp: Path) -> dict[str, str]:
    """The environment of a user who never set a BLENDER_USER_* variable, with a home in ``tmp``."""
    env = {k: v for k, v in os.environ.items() if k not in ("BLENDER_USER_RESOURCES",) + USER_OVERRIDES}
    env.update(HOME=str(tmp / "home"), XDG_CONFIG_HOME=str(tmp / "home" / ".config"),
               XDG_CACHE_HOME=str(tmp / "home" / ".cache"), PYTHONPATH=str(ROOT))
    return env


def _snapshot(root: Path) -> dict[str, str]:
    return {f.relative_to(root).as_posix(): hashlib.sha256(f.read_bytes()).hexdigest()
            for f in sorted(root.rglob("*")) if f.is_file()}


@pytest.fixture()
def user_blender(tmp_path: Path) -> tuple[dict[str, str], Path]:
    """(environment, the user's Blender configuration folder) with the probe extension installed."""
    env = _user_env(tmp_path)
    (tmp_path / "home" / ".config").mkdir(parents=True)
    res = subprocess.run([sys.executable, "-c", INSTALL, str(_probe_extension(tmp_path / "probe.zip"))],
                         env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    config = tmp_path / "home" / ".config" / "blender"
    files = _snapshot(config)
    assert any(name.endswith("site-packages/facerigprobe/__init__.py") for name in files), sorted(files)
    return env, config


def test_factory_settings_on_the_users_config_delete_extension_wheels(user_blender) -> None:
    """The mechanism behind the bug, so this test notices if Blender changes it."""
    env, config = user_blender
    res = subprocess.run([sys.executable, "-c", "import bpy; bpy.ops.wm.read_factory_settings(use_empty=True)"],
                         env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert not any("site-packages/facerigprobe" in name for name in _snapshot(config))


@pytest.mark.slow
def test_reconstruct_leaves_the_users_blender_untouched(user_blender, face_model, tmp_path: Path) -> None:
    env, config = user_blender
    before = _snapshot(config)
    onnx = build_constant_regressor(tmp_path / "constant.onnx", plausible_params(face_model))
    out = tmp_path / "head.blend"
    res = subprocess.run([sys.executable, "-m", "facerig_cli.main", "reconstruct",
                          str(FACES / "demo" / "astronaut_eileen_collins_nasa.png"), "-o", str(out),
                          "--model", str(onnx), "--texture-size", "256"],
                         env=env, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    assert out.stat().st_size > 1_000_000
    assert _snapshot(config) == before


def test_isolation_sets_a_fresh_directory(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(sys.modules, "bpy", raising=False)
    monkeypatch.setenv("BLENDER_USER_RESOURCES", "/somewhere/the/users")
    monkeypatch.setenv("BLENDER_USER_EXTENSIONS", "/somewhere/the/users/extensions")
    path = isolate_blender_user_config()
    assert path is not None and path.is_dir() and not any(path.iterdir())
    assert os.environ["BLENDER_USER_RESOURCES"] == str(path)
    assert "BLENDER_USER_EXTENSIONS" not in os.environ
    path.rmdir()


def test_isolation_is_too_late_once_bpy_is_imported(monkeypatch: pytest.MonkeyPatch) -> None:
    import bpy

    monkeypatch.setitem(sys.modules, "bpy", bpy)
    monkeypatch.setenv("BLENDER_USER_RESOURCES", "/kept")
    assert isolate_blender_user_config() is None
    assert os.environ["BLENDER_USER_RESOURCES"] == "/kept"


def test_the_test_session_uses_its_own_blender_configuration() -> None:
    import bpy

    for kind in ("CONFIG", "EXTENSIONS", "SCRIPTS", "DATAFILES"):
        assert Path(bpy.utils.user_resource(kind)).is_relative_to(SANDBOX_HOME), kind
