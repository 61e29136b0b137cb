"""Shared fixtures: the face model from ../shared, a sandboxed home for Blender, tmp dirs."""

from __future__ import annotations

import atexit
import json
import os
import shutil
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("FACERIG_SHARED", ROOT.parent / "shared"))   # a worktree elsewhere: set it
MODEL_NPZ = Path(os.environ.get("FACERIG_FACE_MODEL", SHARED / "facemodel" / "ict_facekit_light.npz"))
OBJ_SAMPLES = SHARED / "facemodel" / "ict_obj_samples"
FACES = SHARED / "faces"
# Wheels downloaded for the extension zips, kept between runs (tests/test_addon_package.py)
WHEEL_CACHE = Path(os.environ.get("FACERIG_WHEEL_CACHE") or ROOT / "build" / "wheels")


def _sandbox_user_dirs() -> Path:
    """Keep Blender, caches and configs out of the user's home during tests. Set when pytest loads this
    file, before any test module imports bpy: bpy reads the user's preferences (and syncs extension
    wheels) as it starts."""
    from facerig_cli.blender_env import USER_OVERRIDES

    home = Path(tempfile.mkdtemp(prefix="facerig-tests-home-"))
    atexit.register(shutil.rmtree, home, ignore_errors=True)
    for var, sub in (("BLENDER_USER_RESOURCES", "blender"), ("XDG_CONFIG_HOME", "config"),
                     ("XDG_CACHE_HOME", "cache"), ("XDG_DATA_HOME", "data")):
        os.environ[var] = str(home / sub)
        (home / sub).mkdir()
    for var in USER_OVERRIDES:
        os.environ.pop(var, None)
    os.environ["FACERIG_FACE_MODEL"] = str(MODEL_NPZ)
    return home


SANDBOX_HOME = _sandbox_user_dirs()


@pytest.fixture(scope="session")
def extension_zips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The extension zip of every platform, built from :data:`WHEEL_CACHE` (filled from PyPI the first
    time); skips the test when the wheels cannot be downloaded."""
    from facerig_cli.addon_build import PLATFORM_TAGS, build_addon, runtime_distributions, zip_name

    out = tmp_path_factory.mktemp("dist")
    dists = runtime_distributions()
    try:
        return {p: build_addon(out / zip_name(p), p, WHEEL_CACHE, dists) for p in PLATFORM_TAGS}
    except RuntimeError as exc:
        if "pip download failed" in str(exc):
            pytest.skip(f"wheels not downloadable here (offline?): {str(exc)[:200]}")
        raise


@pytest.fixture(scope="session")
def model_path() -> Path:
    if not MODEL_NPZ.is_file():
        pytest.fail(f"face model not found at {MODEL_NPZ}; put ../shared beside the repo")
    return MODEL_NPZ


@pytest.fixture(scope="session")
def face_model(model_path: Path):
    from facemodel import FaceModel

    return FaceModel.load(model_path)


# -- a miniature ICT-FaceKit download, to exercise archive → npz end to end ------------------


def _write_obj(path: Path, verts: np.ndarray, faces: list[list[int]] | None = None) -> None:
    lines = [f"v {x:.6f} {y:.6f} {z:.6f}" for x, y, z in verts]
    if faces is not None:
        lines += ["vt 0 0", "vt 1 0", "vt 1 1", "vt 0 1", "usemtl M_Face"]
        lines += ["f " + " ".join(f"{v + 1}/{k + 1}" for k, v in enumerate(f)) for f in faces[:2]]
        for name in ("M_BackHead", "M_GumsTongue", "M_Teeth", "M_ScleraLeft", "M_IrisLeft", "M_ScleraRight",
                     "M_IrisRight", "M_LacrimalFluid", "M_EyeBlend", "M_EyeOcclusion", "M_EyeLashes"):
            lines += [f"usemtl {name}", "f " + " ".join(f"{v + 1}/{k + 1}" for k, v in enumerate(faces[2]))]
    path.write_text("\n".join(lines) + "\n")


@pytest.fixture(scope="session")
def mini_archive(tmp_path_factory, model_path) -> tuple[Path, dict]:
    """A zip laid out like GitHub's ICT-FaceKit archive, with a 70-vertex model."""
    return write_mini_archive(tmp_path_factory.mktemp("mini"), model_path)


def write_mini_archive(root: Path, model_path: Path) -> tuple[Path, dict]:
    """:func:`mini_archive` in ``root`` (also used by the bad-input matrix's fetch cases)."""
    root.mkdir(parents=True, exist_ok=True)
    folder = root / "ICT-FaceKit-master" / "FaceXModel"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    neutral = rng.normal(size=(70, 3)).round(4)
    with np.load(model_path) as ref:
        names = [str(n) for n in ref["expression_names"]]
    _write_obj(folder / "generic_neutral_mesh.obj", neutral, [[0, 1, 2, 3], [3, 4, 5], [6, 7, 8]])
    ident = rng.normal(size=(100, 70, 3)).round(4)
    expr = rng.normal(size=(53, 70, 3)).round(4)
    for i in range(100):
        _write_obj(folder / f"identity{i:03d}.obj", neutral + ident[i])
    for k, n in enumerate(names):
        _write_obj(folder / f"{n}.obj", neutral + expr[k])
    (folder / "vertex_indices.json").write_text(json.dumps(
        {"expressions": names, "idx_to_landmark_verts": list(range(68))}))
    (root / "ICT-FaceKit-master" / "LICENSE").write_text("MIT License (test)")
    archive = root / "ICT-FaceKit-master.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for f in sorted((root / "ICT-FaceKit-master").rglob("*")):
            zf.write(f, f.relative_to(root).as_posix())
    return archive, {"neutral": neutral, "identity": ident, "expression": expr}
