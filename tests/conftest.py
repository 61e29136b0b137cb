"""Shared fixtures: the face model from ../shared, a sandboxed home for Blender, tmp dirs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("FACERIG_SHARED", ROOT.parent / "shared"))   # a worktree elsewhere: set it
MODEL_NPZ = Path(os.environ.get("FACERIG_FACE_MODEL", SHARED / "facemodel" / "ict_facekit_light.npz"))
OBJ_SAMPLES = SHARED / "facemodel" / "ict_obj_samples"
FACES = SHARED / "faces"


@pytest.fixture(scope="session", autouse=True)
def sandbox_user_dirs(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Keep Blender, caches and configs out of the user's home during tests."""
    home = tmp_path_factory.mktemp("home")
    for var, sub in (("BLENDER_USER_RESOURCES", "blender"), ("XDG_CONFIG_HOME", "config"),
                     ("XDG_CACHE_HOME", "cache"), ("XDG_DATA_HOME", "data")):
        os.environ[var] = str(home / sub)
        (home / sub).mkdir()
    os.environ["FACERIG_FACE_MODEL"] = str(MODEL_NPZ)


@pytest.fixture(scope="session")
def model_path() -> Path:
    if not MODEL_NPZ.is_file():
        pytest.fail(f"face model not found at {MODEL_NPZ}; put ../shared beside the repo")
    return MODEL_NPZ


@pytest.fixture(scope="session")
def face_model(model_path: Path):
    from facemodel import FaceModel

    return FaceModel.load(model_path)
