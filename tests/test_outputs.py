"""``facemodel.outputs``: the one atomic-write path, output checks and folder locks."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from facemodel import outputs


def test_atomic_write_replaces_or_keeps(tmp_path: Path) -> None:
    target = tmp_path / "a" / "r.txt"
    outputs.atomic_write_text(target, "one")
    assert target.read_text() == "one"
    with pytest.raises(RuntimeError):
        with outputs.atomic_open(target, "w") as fh:
            fh.write("half of tw")
            raise RuntimeError("killed")
    assert target.read_text() == "one" and sorted(p.name for p in target.parent.iterdir()) == ["r.txt"]
    os.chmod(target, 0o640)
    outputs.atomic_write_text(target, "two")
    assert target.read_text() == "two" and target.stat().st_mode & 0o777 == 0o640   # mode kept


def test_staged_output_moves_every_file_main_last(tmp_path: Path) -> None:
    out = tmp_path / "k.gltf"
    out.write_text("old gltf")
    (tmp_path / "k.bin").write_text("old bin")
    with pytest.raises(ValueError):
        with outputs.staged_output(out) as staged:
            staged.write_text("new gltf")
            (staged.parent / "k.bin").write_text("new bin")
            raise ValueError("exporter failed")
    assert out.read_text() == "old gltf" and (tmp_path / "k.bin").read_text() == "old bin"
    with outputs.staged_output(out) as staged:
        staged.write_text("new gltf")
        (staged.parent / "k.bin").write_text("new bin")
        (staged.parent / "k_textures").mkdir()
        (staged.parent / "k_textures" / "skin.png").write_bytes(b"png")
    assert out.read_text() == "new gltf" and (tmp_path / "k.bin").read_text() == "new bin"
    assert (tmp_path / "k_textures" / "skin.png").read_bytes() == b"png"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["k.bin", "k.gltf", "k_textures"]


def test_temporaries_of_killed_writers_are_removed(tmp_path: Path) -> None:
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    stale_file = tmp_path / f".r.json.{dead}.part"
    stale_file.write_text("left by kill -9")
    stale_stage = tmp_path / f".k.glb.{dead}.part"
    stale_stage.mkdir()
    (stale_stage / "k.glb").write_text("half")
    live = tmp_path / f".r.json.{os.getppid()}.part"   # a running writer's: kept
    live.write_text("in progress")
    outputs.write_json(tmp_path / "r.json", {"a": 1})
    with outputs.staged_output(tmp_path / "k.glb") as staged:
        staged.write_text("glb")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["k.glb", "r.json", live.name])


def test_checks(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    assert outputs.check_output_file(tmp_path / "new" / "deeper" / "x.json") == tmp_path / "new" / "deeper" / "x.json"
    assert not (tmp_path / "new").exists()   # a check creates nothing
    with pytest.raises(outputs.OutputError, match="exists; not replacing it"):
        outputs.check_output_file(tmp_path / "f")
    outputs.check_output_file(tmp_path / "f", overwrite=True)
    with pytest.raises(outputs.OutputError, match="is a file, not a folder"):
        outputs.check_output_dir(tmp_path / "f" / "sub")
    with pytest.raises(outputs.OutputError, match="it is a file, not a folder"):
        outputs.check_output_dir(tmp_path / "f")
    os.mkfifo(tmp_path / "pipe")
    with pytest.raises(outputs.OutputError, match="not a regular file"):
        outputs.check_output_file(tmp_path / "pipe", overwrite=True)


def test_folder_lock_refuses_a_second_process(tmp_path: Path) -> None:
    code = ("import sys; from facemodel.outputs import folder_lock\n"
            "try:\n    folder_lock(sys.argv[1]).__enter__()\nexcept OSError as e:\n    print(e); sys.exit(3)")
    with outputs.folder_lock(tmp_path / "run", what="the run folder"):
        res = subprocess.run([sys.executable, "-c", code, str(tmp_path / "run")], capture_output=True, text=True)
        assert res.returncode == 3 and "being written by another process" in res.stdout
    res = subprocess.run([sys.executable, "-c", code, str(tmp_path / "run")], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout   # released when the holder is done
