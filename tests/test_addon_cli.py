"""``facerig reconstruct`` / ``facerig demo`` on the command line."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from runtime.testing import build_constant_regressor, plausible_params
from facemodel import FaceParams
from facerig_cli.main import main
from facerig_cli.reconstruct import output_paths

from .conftest import FACES

ASTRONAUT = FACES / "demo" / "astronaut_eileen_collins_nasa.png"
GRACE = FACES / "demo" / "grace_hopper.jpg"


@pytest.fixture(scope="module")
def regressor_path(face_model, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_constant_regressor(tmp_path_factory.mktemp("onnx") / "constant.onnx", plausible_params(face_model))


def test_output_paths() -> None:
    a, b = Path("a.jpg"), Path("dir/b.png")
    assert output_paths([a], Path("out.glb"), "blend") == [Path("out.glb")]
    assert output_paths([a, b], Path("o/face.fbx"), "blend") == [Path("o/face-a.fbx"), Path("o/face-b.fbx")]
    assert output_paths([a, b], Path("outdir"), "glb") == [Path("outdir/a.glb"), Path("outdir/b.glb")]
    same_stem = [Path("x/a.jpg"), Path("x/a.heic"), Path("y/a.jpg"), Path("y/b.jpg")]   # nothing overwritten
    assert output_paths(same_stem, Path("o"), "json") == [Path("o/a_jpg.json"), Path("o/a_heic.json"),
                                                          Path("o/a_jpg_2.json"), Path("o/b.json")]


def test_a_folder_of_photos(tmp_path: Path, regressor_path: Path, capsys: pytest.CaptureFixture) -> None:
    folder = tmp_path / "shoot"
    folder.mkdir()
    shutil.copy(ASTRONAUT, folder / "b.png")
    shutil.copy(GRACE, folder / "a.jpg")
    (folder / "notes.txt").write_text("not a photo")
    assert main(["reconstruct", str(folder), "-o", str(tmp_path / "out"), "--format", "json",
                 "--model", str(regressor_path)]) == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.json", "b.json"]
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["reconstruct", str(empty), "-o", str(tmp_path / "e"), "--model", str(regressor_path)]) == 2
    assert "no photos" in capsys.readouterr().err


def test_reconstruct_json(tmp_path: Path, regressor_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "params"
    assert main(["reconstruct", str(ASTRONAUT), str(GRACE), "-o", str(out), "--format", "json",
                 "--model", str(regressor_path)]) == 0
    for stem in (ASTRONAUT.stem, GRACE.stem):
        doc = json.loads((out / f"{stem}.json").read_text())
        params = FaceParams.from_dict(doc["params"])
        assert params.expression.shape == (53,) and len(doc["landmarks"]) == 68
        assert len(doc["expression_ict"]) == 53 and len(doc["expression_arkit"]) == 52    # both namings
        assert doc["expression_arkit"]["tongueOut"] is None and doc["expression_arkit_missing"] == ["tongueOut"]
        assert doc["image_size"][0] > 0 and "detect" in doc["timings_ms"]
        assert doc["refinement"]["landmark_error_after_px"] < doc["refinement"]["landmark_error_before_px"]
        assert FaceParams.from_dict(doc["regressed_crop_params"]).expression.shape == (53,)
    assert "→" in capsys.readouterr().out
    assert main(["reconstruct", str(GRACE), "-o", str(tmp_path / "raw.json"), "--model", str(regressor_path),
                 "--no-refine"]) == 0
    doc = json.loads((tmp_path / "raw.json").read_text())
    assert doc["refinement"] is None and "regressed_crop_params" not in doc


def test_reconstruct_user_errors(tmp_path: Path, regressor_path: Path, capsys: pytest.CaptureFixture) -> None:
    bad = tmp_path / "bad.jpg"
    bad.write_text("hello")
    assert main(["reconstruct", str(bad), "-o", str(tmp_path / "x.json"), "--model", str(regressor_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("facerig: error:") and "not a readable image" in err and err.count("\n") == 1
    assert main(["reconstruct", str(ASTRONAUT), "-o", str(tmp_path / "x.stl"), "--model", str(regressor_path)]) == 2
    assert "unknown output format" in capsys.readouterr().err
    assert main(["reconstruct", str(ASTRONAUT), "-o", str(tmp_path / "x.json"),
                 "--model", str(tmp_path / "none.onnx")]) == 2
    assert "regressor model not found" in capsys.readouterr().err
    assert main(["reconstruct", str(ASTRONAUT), "-o", str(tmp_path / "x.json"), "--face", "3",
                 "--model", str(regressor_path)]) == 2
    assert "face 3 does not exist" in capsys.readouterr().err


def test_batch_goes_on_past_a_bad_photo(tmp_path: Path, regressor_path: Path, capsys: pytest.CaptureFixture) -> None:
    """Several photos: an unreadable, a missing and a faceless one are each reported and skipped, every
    other photo is written (no partial files), and the exit code says that not all were."""
    import cv2

    bad = tmp_path / "bad.jpg"
    bad.write_text("hello")
    grey = tmp_path / "grey.png"
    cv2.imwrite(str(grey), np.full((240, 240, 3), 128, np.uint8))
    out = tmp_path / "batch"
    photos = [ASTRONAUT, bad, tmp_path / "missing.jpg", grey, GRACE]
    assert main(["reconstruct", *map(str, photos), "-o", str(out), "--format", "json",
                 "--model", str(regressor_path)]) == 2
    assert sorted(p.name for p in out.iterdir()) == sorted([f"{ASTRONAUT.stem}.json", f"{GRACE.stem}.json"])
    for name in out.iterdir():
        assert FaceParams.from_dict(json.loads(name.read_text())["params"]).expression.shape == (53,)
    captured = capsys.readouterr()
    assert captured.out.count("→") == 2
    assert "bad.jpg: skipped: bad.jpg is not a readable image" in captured.err
    assert "missing.jpg: skipped: photo not found" in captured.err
    assert "grey.png: skipped: no face found" in captured.err
    assert captured.err.strip().splitlines()[-1] == \
        "facerig: error: 3 of 5 photos failed: bad.jpg, missing.jpg, grey.png"
    # a face index that one photo lacks is that photo's problem too
    assert main(["reconstruct", str(ASTRONAUT), str(GRACE), "-o", str(tmp_path / "face1"), "--format", "json",
                 "--face", "1", "--model", str(regressor_path)]) == 2
    assert "face 1 does not exist" in capsys.readouterr().err


def test_workers_write_the_same_files(tmp_path: Path, regressor_path: Path, capsys: pytest.CaptureFixture) -> None:
    """--workers 2: the same .json files as one by one (timings aside), a bad photo reported and skipped,
    exit code 2, the throughput line; mesh formats and --same-person are refused."""
    bad = tmp_path / "bad.jpg"
    bad.write_text("hello")
    photos = [ASTRONAUT, bad, GRACE]
    runs = {}
    for workers in ("1", "2"):
        out = tmp_path / f"w{workers}"
        assert main(["reconstruct", *map(str, photos), "-o", str(out), "--format", "json", "--workers", workers,
                     "--model", str(regressor_path)]) == 2
        captured = capsys.readouterr()
        assert "bad.jpg: skipped: bad.jpg is not a readable image" in captured.err
        assert captured.err.strip().splitlines()[-1] == "facerig: error: 1 of 3 photos failed: bad.jpg"
        assert captured.out.count("→") == 2 and "2 photos in" in captured.out and "photos/s" in captured.out
        assert captured.out.index(ASTRONAUT.name) < captured.out.index(GRACE.name)   # the photos' order
        runs[workers] = {p.name: json.loads(p.read_text()) for p in sorted(out.iterdir())}
    assert sorted(runs["2"]) == sorted([f"{ASTRONAUT.stem}.json", f"{GRACE.stem}.json"])
    for name, doc in runs["1"].items():
        other = runs["2"][name]
        doc.pop("timings_ms"), other.pop("timings_ms")
        assert doc == other
    for extra in (["--format", "blend"], ["--same-person"]):
        assert main(["reconstruct", str(ASTRONAUT), str(GRACE), "-o", str(tmp_path / "x"), "--workers", "2",
                     *extra, "--model", str(regressor_path)]) == 2
        assert "--workers" in capsys.readouterr().err
    assert main(["reconstruct", str(GRACE), "-o", str(tmp_path / "y"), "--workers", "0", "--format", "json",
                 "--model", str(regressor_path)]) == 2
    assert "at least 1" in capsys.readouterr().err
    assert main(["reconstruct", str(ASTRONAUT), str(GRACE), "-o", str(tmp_path / "z"), "--workers", "2", "--format",
                 "json", "--model", str(tmp_path / "none.onnx")]) == 2
    assert "regressor model not found" in capsys.readouterr().err


@pytest.mark.slow
def test_reconstruct_blend_and_demo(tmp_path: Path, regressor_path: Path) -> None:
    pytest.importorskip("bpy")
    import cv2

    assert main(["reconstruct", str(GRACE), "-o", str(tmp_path / "g.blend"), "--model", str(regressor_path),
                 "--texture-size", "256", "--remove-lighting"]) == 0
    assert (tmp_path / "g.blend").stat().st_size > 1_000_000
    import bpy

    bpy.ops.wm.open_mainfile(filepath=str(tmp_path / "g.blend"))
    heads = [o for o in bpy.data.objects if o.get("facerig_texture_lighting")]
    assert [o["facerig_texture_lighting"] for o in heads] == ["removed"]
    assert main(["demo", "-o", str(tmp_path / "demo"), "--model", str(regressor_path), "--texture-size", "256"]) == 0
    for name in ("astronaut.blend", "astronaut.glb", "astronaut_demo.png"):
        assert (tmp_path / "demo" / name).stat().st_size > 10_000, name
    sheet = cv2.imread(str(tmp_path / "demo" / "astronaut_demo.png"))
    assert sheet.shape[1] == 6 * sheet.shape[0] and sheet.std() > 20
    assert np.isfinite(sheet).all()
