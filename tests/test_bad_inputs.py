"""The bad-input matrix (issues 35 and 37): every bad photo, model, argument and output path ends in exit
code 2 with one line on stderr, no traceback, no temporary file left, nothing of the user's lost, and the
other photos of a batch written.

Most cases call ``main()`` in-process (fast); the ones about tracebacks, memory, kills, full disks and
permissions run the real command in a subprocess. Every input is a small generated file.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

from runtime.testing import build_constant_regressor, plausible_params
from facerig_cli.main import main

from .conftest import FACES, MODEL_NPZ, ROOT
from .conftest import write_mini_archive

GRACE = FACES / "demo" / "grace_hopper.jpg"


def _png_header_only(path: Path, width: int, height: int) -> Path:
    """A real 1-bit PNG of ``width`` × ``height`` written row by row (30000² is 110 kB on disk, 2.7 GB decoded)."""
    import struct
    import zlib

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    comp = zlib.compressobj(9)
    row = b"\x00" + bytes((width + 7) // 8)
    data = b"".join(comp.compress(row) for _ in range(height)) + comp.flush()
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0))
                     + chunk(b"IDAT", data) + chunk(b"IEND", b""))
    return path


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One small file per kind of photo, good and bad."""
    import cv2
    from PIL import Image

    d = tmp_path_factory.mktemp("photos")
    rgb = np.asarray(Image.open(GRACE).convert("RGB"))
    out: dict[str, Path] = {"good": d / "good.jpg", "good2": d / "good2.jpg"}
    shutil.copy(GRACE, out["good"])
    shutil.copy(GRACE, out["good2"])
    (out.setdefault("zero", d / "zero.jpg")).write_bytes(b"")
    png = cv2.imencode(".png", rgb[:, :, ::-1])[1].tobytes()
    (out.setdefault("truncated", d / "truncated.png")).write_bytes(png[: len(png) // 3])
    (out.setdefault("text", d / "text.jpg")).write_text("this is not an image\n")
    Image.new("RGB", (1, 1)).save(out.setdefault("one_pixel", d / "one_pixel.png"))
    Image.fromarray(rgb).convert("CMYK").save(out.setdefault("cmyk", d / "cmyk.jpg"))
    cv2.imwrite(str(out.setdefault("16bit", d / "sixteen.png")), (rgb[:, :, ::-1].astype(np.uint16) * 257))
    frames = [Image.fromarray(rgb), Image.fromarray(255 - rgb)]
    frames[0].save(out.setdefault("gif", d / "animated.gif"), save_all=True, append_images=frames[1:], duration=100)
    Image.new("RGB", (200, 200), (128, 128, 128)).save(out.setdefault("no_face", d / "grey.png"))
    shutil.copy(GRACE, out.setdefault("unknown_ext", d / "photo.data"))
    shutil.copy(GRACE, out.setdefault("unicode", d / "фото ü 写真.jpg"))
    _png_header_only(out.setdefault("huge", d / "huge.png"), 30000, 30000)
    return out


@pytest.fixture(scope="module")
def regressor(face_model, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_constant_regressor(tmp_path_factory.mktemp("onnx") / "constant.onnx", plausible_params(face_model))


@pytest.fixture(scope="module")
def models(face_model, regressor: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Broken regressors and face models."""
    import onnx

    from facemodel import file_digest

    d = tmp_path_factory.mktemp("bad_models")
    out = {"corrupt_onnx": d / "corrupt.onnx", "nan_onnx": d / "nan.onnx", "sealed": d / "sealed.onnx",
           "rotted": d / "rotted.onnx", "truncated_npz": d / "truncated.npz", "wrong_npz": d / "wrong.npz",
           "three_modes": d / "three_modes.npz"}
    out["corrupt_onnx"].write_bytes(regressor.read_bytes()[:200] + os.urandom(500))
    nan = plausible_params(face_model)
    nan.identity[:] = np.nan
    build_constant_regressor(out["nan_onnx"], nan)
    proto = onnx.load(str(regressor))
    proto.metadata_props.add(key=file_digest.DIGEST_KEY, value=file_digest.PLACEHOLDER)
    onnx.save(proto, str(out["sealed"]))
    file_digest.seal(out["sealed"])
    data = bytearray(out["sealed"].read_bytes())
    vector = np.asarray(plausible_params(face_model).to_vector(), np.float32).tobytes()
    at = bytes(data).index(vector[40:56])     # a byte inside the weights: rotted, the file still loads
    data[at + 3] ^= 0x40
    out["rotted"].write_bytes(bytes(data))
    out["truncated_npz"].write_bytes(MODEL_NPZ.read_bytes()[:100_000])
    np.savez(out["wrong_npz"], something=np.zeros(3))
    with np.load(MODEL_NPZ) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["identity_basis"] = arrays["identity_basis"][:3]
    np.savez(out["three_modes"], **arrays)
    return out


def cli(capsys: pytest.CaptureFixture, *args: object) -> tuple[int, str, str]:
    rc = main([str(a) for a in args])
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def assert_one_line_error(rc: int, err: str, *fragments: str) -> None:
    assert rc == 2, err
    lines = [ln for ln in err.splitlines() if ln.startswith("facerig")]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def assert_no_temporaries(folder: Path) -> None:
    from facemodel.outputs import is_temp_name

    left = [p.name for p in folder.rglob("*") if is_temp_name(p.name)] if folder.exists() else []
    assert not left, left


# -- photos ----------------------------------------------------------------------------------------
BAD_PHOTOS = [
    ("zero", "not a readable image"),
    ("truncated", "not a readable image"),
    ("text", "not a readable image"),
    ("one_pixel", "at least 48 pixels"),
    ("no_face", "no face found"),
    ("huge", "facerig reads photos of up to 250 MP"),
]


@pytest.mark.parametrize("kind, message", BAD_PHOTOS, ids=[k for k, _ in BAD_PHOTOS])
def test_bad_photo(photos, regressor, tmp_path, capsys, kind, message) -> None:
    rc, _, err = cli(capsys, "reconstruct", photos[kind], "-o", tmp_path / "x.json", "--model", regressor)
    assert_one_line_error(rc, err, message)
    assert not (tmp_path / "x.json").exists()
    assert_no_temporaries(tmp_path)


GOOD_PHOTOS = ["cmyk", "16bit", "gif", "unknown_ext", "unicode"]


@pytest.mark.parametrize("kind", GOOD_PHOTOS)
def test_unusual_photo_is_read(photos, regressor, tmp_path, capsys, kind) -> None:
    out = tmp_path / "выход ü.json"
    rc, _, err = cli(capsys, "reconstruct", photos[kind], "-o", out, "--model", regressor, "--no-refine")
    assert rc == 0, err
    doc = json.loads(out.read_text())
    assert doc["image_size"] == [512, 600] and doc["decode_scale"] == 1
    assert_no_temporaries(tmp_path)


def test_fifo_is_not_a_photo(regressor, tmp_path, capsys) -> None:
    fifo = tmp_path / "pipe.jpg"
    os.mkfifo(fifo)
    rc, _, err = cli(capsys, "reconstruct", fifo, "-o", tmp_path / "x.json", "--model", regressor)
    assert_one_line_error(rc, err, "not a regular file")


def test_face_index_out_of_range(photos, regressor, tmp_path, capsys) -> None:
    rc, _, err = cli(capsys, "reconstruct", photos["good"], "-o", tmp_path / "x.json", "--model", regressor,
                     "--face", 5)
    assert_one_line_error(rc, err, "face 5 does not exist")
    rc, _, err = cli(capsys, "reconstruct", photos["good"], "-o", tmp_path / "x.json", "--face", -1)
    assert_one_line_error(rc, err, "--face: must be at least 0")


def test_batch_writes_the_good_photos(photos, regressor, tmp_path, capsys) -> None:
    out = tmp_path / "out"
    rc, _, err = cli(capsys, "reconstruct", photos["good"], photos["text"], photos["no_face"], photos["good2"],
                     "-o", out, "--format", "json", "--model", regressor, "--no-refine")
    assert_one_line_error(rc, err, "2 of 4 photos failed", "text.jpg", "grey.png")
    assert sorted(p.name for p in out.iterdir()) == ["good.json", "good2.json"]


def test_same_person_with_a_skipped_photo_exits_2(photos, regressor, tmp_path, capsys) -> None:
    out = tmp_path / "head.json"
    rc, _, err = cli(capsys, "reconstruct", photos["good"], photos["no_face"], photos["good2"], "--same-person",
                     "-o", out, "--model", regressor, "--cnet", tmp_path / "no_cnet.onnx", "--no-refine")
    assert_one_line_error(rc, err, "1 of 3 photos skipped", "grey.png")
    assert len(json.loads(out.read_text())["photos"]) == 2   # the head is still written from the others


def test_huge_png_is_refused_fast_in_little_memory(photos, regressor, tmp_path) -> None:
    """The 30000² PNG that crashed MediaPipe after ~2 min and 5.4 GB: refused from its header."""
    # the process's own peak (VmHWM; ru_maxrss would include the forked pytest image, kept across exec)
    code = ("import re, time; from facerig_cli.main import main; t = time.perf_counter(); "
            f"rc = main(['reconstruct', {str(photos['huge'])!r}, '-o', {str(tmp_path / 'x.json')!r}, "
            f"'--model', {str(regressor)!r}]); "
            "hwm = re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read()).group(1); "
            "print(rc, time.perf_counter() - t, hwm)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    rc, seconds, peak_kb = res.stdout.split()
    assert int(rc) == 2 and "30000×30000" not in res.stderr and "900 MP" in res.stderr, res.stderr
    assert float(seconds) < 2.0 and int(peak_kb) < 500_000, res.stdout
    assert "Traceback" not in res.stderr


def test_large_photo_is_decoded_reduced(tmp_path) -> None:
    from runtime import photo

    big = np.zeros((3000, 2000, 3), np.uint8)
    big[1000:2000, 500:1500] = 200
    import cv2

    cv2.imwrite(str(tmp_path / "big.jpg"), big)
    cv2.imwrite(str(tmp_path / "big.png"), big)
    for name in ("big.jpg", "big.png"):
        decoded = photo.decode_photo(tmp_path / name, max_decode_pixels=1_000_000)
        assert decoded.scale == 4 and decoded.image.shape == (750, 500, 3) and decoded.photo_size == (2000, 3000)
        assert abs(int(decoded.image[375, 250, 0]) - 200) <= 2
        assert photo.load_image(tmp_path / name, max_decode_pixels=None).shape == (3000, 2000, 3)


# -- models ----------------------------------------------------------------------------------------
BAD_MODELS = [
    ("corrupt_onnx", "--model", "not a loadable ONNX model"),
    ("nan_onnx", "--model", "non-finite values"),
    ("rotted", "--model", "is damaged"),
    ("truncated_npz", "--face-model", "not a readable face model"),
    ("wrong_npz", "--face-model", "lacks arrays"),
    ("three_modes", "--face-model", "has 3 identity modes"),
]


@pytest.mark.parametrize("kind, flag, message", BAD_MODELS, ids=[k for k, _, _ in BAD_MODELS])
def test_bad_model(photos, models, regressor, tmp_path, capsys, kind, flag, message) -> None:
    extra = [] if flag == "--model" else ["--model", regressor]
    rc, _, err = cli(capsys, "reconstruct", photos["good"], "-o", tmp_path / "x.json", flag, models[kind], *extra)
    assert_one_line_error(rc, err, message)
    assert not (tmp_path / "x.json").exists()
    assert_no_temporaries(tmp_path)


def test_sealed_model_loads(photos, models, tmp_path, capsys) -> None:
    rc, _, err = cli(capsys, "reconstruct", photos["good"], "-o", tmp_path / "x.json", "--model", models["sealed"],
                     "--no-refine")
    assert rc == 0, err


def test_json_never_holds_nan(tmp_path) -> None:
    from facemodel.outputs import write_json

    with pytest.raises(ValueError, match=r"non-finite number at params\.identity\.1"):
        write_json(tmp_path / "x.json", {"params": {"identity": [0.0, float("nan")]}})
    assert list(tmp_path.iterdir()) == []


# -- arguments -------------------------------------------------------------------------------------
BAD_ARGUMENTS = [
    (["reconstruct", "P", "-o", "O/x.glb", "--texture-size", "8192"], "--texture-size: texture size must be between"),
    (["reconstruct", "P", "-o", "O/x.glb", "--texture-size", "0"], "--texture-size"),
    (["reconstruct", "P", "-o", "O/x.glb", "--texture-size", "-5"], "--texture-size"),
    (["reconstruct", "P", "-o", "O/x.stl"], "unknown output format"),
    (["model", "preview", "-n", "100000", "-o", "O/s.png"], "--count: must be 1…256"),
    (["synth", "render", "--count", "99999999999999", "--out", "O/c"], "--count: must be 1…100000000"),
    (["synth", "render", "--count", "1e10", "--out", "O/c"], "--count: must be an integer"),
    (["synth", "preview", "O", "-n", "0"], "--count: must be 1…256"),
    (["train", "--corpus", "O", "--out", "O/run", "--steps", "-5"], "--steps: must be 1…100000000"),
    (["train", "--corpus", "O", "--out", "O/run", "--batch-size", "0"], "--batch-size"),
    (["bootstrap", "--real", "O", "--synthetic", "O", "--init", "P", "--out", "O/b", "--rounds", "0"], "--rounds"),
    (["cnet", "train", "--train", "O", "--test", "O", "--out", "O/c", "--steps", "0"], "--steps"),
    (["photos", "prepare", "--images", "O", "--out", "O/p", "--size", "8"], "--size: must be 32…1024"),
    (["eval", "synthetic", "--corpus", "O", "--json", "O/r.json", "--limit", "0"], "--limit: must be at least 1"),
    (["bench", "--json", "O/b.json", "--runs", "0"], "--runs"),
]


@pytest.mark.parametrize("argv, message", BAD_ARGUMENTS, ids=[" ".join(a[:2]) + " " + a[-2] for a, _ in BAD_ARGUMENTS])
def test_bad_argument(photos, tmp_path, capsys, argv, message) -> None:
    argv = [str(photos["good"]) if a == "P" else a.replace("O", str(tmp_path), 1) if a.startswith("O") else a
            for a in argv]
    rc, _, err = cli(capsys, *argv)
    assert_one_line_error(rc, err, message)
    assert sorted(tmp_path.iterdir()) == []   # nothing made


def test_help_states_the_ranges(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["synth", "render", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "[1…100000000]" in text and "[32…1024]" in text
    with pytest.raises(SystemExit):
        main(["reconstruct", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "[64…4096" in text and "--overwrite" in text


def test_texture_size_beyond_memory() -> None:
    from runtime.limits import LimitError, check_texture_size

    assert check_texture_size(2048, memory=None) == 2048
    with pytest.raises(LimitError, match="GiB of memory"):
        check_texture_size(4096, memory=1 << 30)


# -- outputs ---------------------------------------------------------------------------------------
def test_output_paths_checked_before_any_work(photos, regressor, tmp_path, capsys) -> None:
    a_file = tmp_path / "file.txt"
    a_file.write_text("mine")
    folder = tmp_path / "x.json"
    folder.mkdir()
    cases = [
        (["reconstruct", photos["good"], "-o", a_file / "x.json"], "file.txt is a file, not a folder"),
        (["reconstruct", photos["good"], "-o", folder], "it is a folder"),
        (["reconstruct", photos["good"], photos["good2"], "-o", a_file / "out", "--format", "glb"], "not a folder"),
        (["reconstruct", photos["good"], "--same-person", "-o", a_file / "h.blend"], "not a folder"),
        (["demo", "-o", a_file], "is a file, not a folder"),
        (["synth", "render", "--count", "4", "--out", a_file / "c"], "not a folder"),
        (["train", "--corpus", tmp_path, "--out", a_file], "is a file, not a folder"),
        (["export", tmp_path, "--out", folder], "it is a folder"),
        (["eval", "synthetic", "--corpus", tmp_path, "--json", folder], "it is a folder"),
        (["eval", "landmarks", "--images", tmp_path, "--json", a_file / "r.json"], "not a folder"),
        (["addon", "build", "--no-wheels", "-o", a_file], "is a file, not a folder"),
        (["addon", "build", "--no-wheels", "-o", a_file / "x.zip"], "not a folder"),
        (["model", "preview", "-o", a_file / "s.png"], "not a folder"),
        (["model", "fetch", "--url", "file:///nonexistent.zip", "-o", folder], "it is a folder"),
        (["photos", "prepare", "--images", tmp_path, "--out", a_file], "is a file, not a folder"),
    ]
    for argv, message in cases:
        t = time.perf_counter()
        rc, _, err = cli(capsys, *argv, *(["--model", regressor] if argv[0] == "reconstruct" else []))
        assert_one_line_error(rc, err, message)
        assert time.perf_counter() - t < 5, argv   # refused up front, not after the work
    assert a_file.read_text() == "mine" and list(folder.iterdir()) == []


def test_existing_outputs_are_kept_unless_overwrite(photos, regressor, tmp_path, capsys) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "good2.json").write_text("earlier result")
    rc, _, err = cli(capsys, "reconstruct", photos["good"], photos["good2"], "-o", out, "--format", "json",
                     "--model", regressor, "--no-refine")
    assert_one_line_error(rc, err, "good2.json exists", "--overwrite")
    assert sorted(p.name for p in out.iterdir()) == ["good2.json"]   # nothing done: refused before any photo
    assert (out / "good2.json").read_text() == "earlier result"
    rc, _, err = cli(capsys, "reconstruct", photos["good"], photos["good2"], "-o", out, "--format", "json",
                     "--model", regressor, "--no-refine", "--overwrite")
    assert rc == 0, err
    assert json.loads((out / "good2.json").read_text())["source"].endswith("good2.jpg")


def test_simulated_full_disk_leaves_nothing(photos, regressor, tmp_path, capsys, monkeypatch) -> None:
    """ENOSPC when the file is flushed (what a full disk gives): one line naming the file, the previous
    file kept, no temporary left."""
    out = tmp_path / "x.json"
    out.write_text("previous")

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    rc, _, err = cli(capsys, "reconstruct", photos["good"], "-o", out, "--model", regressor, "--no-refine",
                     "--overwrite")
    assert_one_line_error(rc, err, f"cannot write {out}: the disk is full")
    assert out.read_text() == "previous"
    assert_no_temporaries(tmp_path)


@pytest.mark.parametrize("code, reason", [(errno.EACCES, "permission denied"), (errno.EROFS, "read-only"),
                                          (errno.EISDIR, "it is a folder"), (errno.ENOTDIR, "not a folder")])
def test_every_write_error_is_one_line(tmp_path, capsys, monkeypatch, code, reason) -> None:
    """An OSError while writing (after the up-front checks passed: the folder changed meanwhile)."""
    from facemodel import outputs

    real_open = open

    def failing_open(path, mode="r", *args, **kwargs):   # noqa: ANN001
        if "w" in mode and ".part" in str(path):
            raise OSError(code, os.strerror(code), str(path))
        return real_open(path, mode, *args, **kwargs)

    monkeypatch.setattr("builtins.open", failing_open)
    with pytest.raises(outputs.OutputError) as exc:
        outputs.write_json(tmp_path / "r.json", {"a": 1})
    assert str(exc.value) == f"cannot write {tmp_path / 'r.json'}: {outputs._REASONS[code]}" and reason in str(exc.value)
    assert list(tmp_path.iterdir()) == []


def test_locked_output_folders_are_refused(tmp_path, capsys) -> None:
    from facemodel.outputs import folder_lock

    with folder_lock(tmp_path / "corpus"):
        rc, _, err = cli(capsys, "synth", "render", "--count", "4", "--out", tmp_path / "corpus", "--no-progress")
        assert_one_line_error(rc, err, "is being written by another process")
    report = tmp_path / "reports" / "r.json"
    with folder_lock(report.parent, f".{report.name}.lock"):
        rc, _, err = cli(capsys, "eval", "synthetic", "--corpus", tmp_path / "corpus", "--json", report)
        assert_one_line_error(rc, err, "is being written by another process")


def test_truncated_corpus_manifest(tmp_path, capsys) -> None:
    corpus = tmp_path / "c"
    corpus.mkdir()
    (corpus / "manifest.json").write_text('{"format": "facerig-synth-corpus", "lay')
    rc, _, err = cli(capsys, "synth", "info", corpus)
    assert_one_line_error(rc, err, "manifest.json is damaged", "render it again")


# -- fetch -----------------------------------------------------------------------------------------
def test_fetch_never_touches_the_users_files(tmp_path, capsys) -> None:
    """fetch next to a same-named zip: the user's ICT-FaceKit.zip and an unrelated licence file stay; a
    failed conversion leaves no npz and no download behind."""
    dl = tmp_path / "dl"
    dl.mkdir()
    (dl / "ICT-FaceKit.zip").write_bytes(b"the user's own zip")
    (dl / "ICT-FaceKit-LICENSE.txt").write_text("the user's notes")
    bad = tmp_path / "bad.zip"
    with zipfile.ZipFile(bad, "w") as zf:
        zf.writestr("README.md", "no model here")
    rc, _, err = cli(capsys, "model", "fetch", "--url", bad.as_uri(), "-o", dl / "ict.npz")
    assert_one_line_error(rc, err)
    assert sorted(p.name for p in dl.iterdir()) == ["ICT-FaceKit-LICENSE.txt", "ICT-FaceKit.zip"]
    assert (dl / "ICT-FaceKit.zip").read_bytes() == b"the user's own zip"
    (dl / "ict.npz").write_bytes(b"an earlier model")
    rc, _, err = cli(capsys, "model", "fetch", "--url", bad.as_uri(), "-o", dl / "ict.npz")
    assert_one_line_error(rc, err, "ict.npz exists", "--overwrite")
    assert (dl / "ict.npz").read_bytes() == b"an earlier model"


def test_fetch_next_to_a_zip_of_the_same_name(tmp_path, capsys) -> None:
    archive, _ = write_mini_archive(tmp_path / "src", MODEL_NPZ)
    dl = tmp_path / "dl"
    dl.mkdir()
    (dl / "ICT-FaceKit.zip").write_bytes(b"the user's own zip")
    (dl / "ICT-FaceKit-LICENSE.txt").write_text("the user's notes")
    rc, out, err = cli(capsys, "model", "fetch", "--url", archive.as_uri(), "-o", dl / "ict.npz")
    assert rc == 0, err
    assert (dl / "ICT-FaceKit.zip").read_bytes() == b"the user's own zip"
    assert (dl / "ICT-FaceKit-LICENSE.txt").read_text() == "the user's notes"
    assert sorted(p.name for p in dl.iterdir()) == ["ICT-FaceKit-LICENSE.txt", "ICT-FaceKit.zip", "ict.npz"]


# -- real processes: tracebacks, full disks, permissions, kills --------------------------------------
def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "GLOG_minloglevel": "3"}


def _facerig(*args: object) -> list[str]:
    return [sys.executable, "-m", "facerig_cli.main", *map(str, args)]


def _user_namespaces() -> bool:
    return shutil.which("unshare") is not None and subprocess.run(
        ["unshare", "-Urm", "true"], capture_output=True).returncode == 0


def test_output_under_a_file_in_a_real_process(photos, regressor, tmp_path) -> None:
    (tmp_path / "file").write_text("x")
    res = subprocess.run(_facerig("reconstruct", photos["good"], "-o", tmp_path / "file" / "x.glb",
                                  "--model", regressor), capture_output=True, text=True, env=_env(), timeout=120)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert res.stderr.strip().splitlines()[-1].startswith("facerig: error: cannot write output")


@pytest.mark.skipif(not _user_namespaces(), reason="no user namespaces here: the full disk is simulated instead")
@pytest.mark.parametrize("options", ["size=4k", "ro"])
def test_full_and_read_only_disk(photos, regressor, tmp_path, options) -> None:
    """A 4-kB tmpfs (a real ENOSPC on write) and a read-only one, mounted in a private namespace."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    cmd = " ".join(map(str, _facerig("reconstruct", f"'{photos['good']}'", "-o", mnt / "x.json",
                                     "--model", regressor, "--no-refine")))
    script = f"mount -t tmpfs -o {options} tmpfs {mnt} && {cmd}; echo rc=$?; ls -A {mnt}"
    res = subprocess.run(["unshare", "-Urm", "sh", "-c", script], capture_output=True, text=True, env=_env(),
                         timeout=120)
    assert "rc=2" in res.stdout and res.stdout.strip().endswith("rc=2"), (res.stdout, res.stderr)  # nothing left
    last = res.stderr.strip().splitlines()[-1]
    expected = "the disk is full" if options.startswith("size") else "read-only"
    assert last.startswith("facerig: error:") and expected in last and "Traceback" not in res.stderr


def _as_nobody() -> list[str] | None:
    if os.geteuid() != 0:
        return []
    tool = shutil.which("setpriv")
    return [tool, "--reuid=65534", "--regid=65534", "--clear-groups"] if tool else None


@pytest.mark.skipif(_as_nobody() is None, reason="running as root without setpriv")
def test_permission_denied_as_a_user(photos, regressor) -> None:
    """The output folder belongs to someone else: refused before any work, as one line."""
    prefix = _as_nobody()
    with tempfile.TemporaryDirectory() as d:
        base = Path(d)
        os.chmod(base, 0o755)
        theirs = base / "theirs"
        theirs.mkdir(mode=0o755)
        for src in (photos["good"], regressor):
            shutil.copy(src, base / src.name)
            os.chmod(base / src.name, 0o644)
        if not prefix:   # not root: the folder is made unwritable instead
            os.chmod(theirs, 0o555)
        res = subprocess.run(prefix + _facerig("reconstruct", base / photos["good"].name, "-o", theirs / "x.json",
                                               "--model", base / regressor.name, "--no-refine"),
                             capture_output=True, text=True, env={**_env(), "HOME": d}, timeout=120)
        os.chmod(theirs, 0o755)
        assert res.returncode == 2, res.stderr
        last = res.stderr.strip().splitlines()[-1]
        assert last == f"facerig: error: cannot write output {theirs / 'x.json'}: permission denied in {theirs}"
        assert list(theirs.iterdir()) == []


@pytest.mark.slow
def test_kill_during_glb_export_keeps_the_old_file(photos, regressor, tmp_path) -> None:
    """SIGKILL while Blender writes the .glb: the user's previous k.glb is whole; the next run removes
    what the killed one left and writes a new one."""
    pytest.importorskip("bpy")
    out = tmp_path / "k.glb"
    out.write_bytes(b"glTF the user's good export")
    proc = subprocess.Popen(_facerig("reconstruct", photos["good"], "-o", out, "--model", regressor, "--no-refine",
                                     "--texture-size", 256, "--overwrite"),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=_env())
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        staged = [p for p in tmp_path.iterdir() if p.name.startswith(".k.glb.")]
        if staged:
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.005)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL, "the export finished before it could be killed"
    assert out.read_bytes() == b"glTF the user's good export"
    res = subprocess.run(_facerig("reconstruct", photos["good"], "-o", out, "--model", regressor, "--no-refine",
                                  "--texture-size", 256, "--overwrite"),
                         capture_output=True, text=True, env=_env(), timeout=300)
    assert res.returncode == 0, res.stderr
    assert out.read_bytes()[:4] == b"glTF" and out.stat().st_size > 100_000
    assert sorted(p.name for p in tmp_path.iterdir()) == ["k.glb"]


@pytest.mark.slow
def test_failed_glb_export_keeps_the_old_file(photos, regressor, tmp_path, capsys, monkeypatch) -> None:
    """A full disk in the middle of Blender's export (simulated where the staged file is flushed)."""
    pytest.importorskip("bpy")
    out = tmp_path / "k.glb"
    out.write_bytes(b"glTF the user's good export")

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    rc, _, err = cli(capsys, "reconstruct", photos["good"], "-o", out, "--model", regressor, "--no-refine",
                     "--texture-size", 256, "--overwrite")
    assert_one_line_error(rc, err, f"cannot write {out}: the disk is full")
    assert out.read_bytes() == b"glTF the user's good export"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["k.glb"]


# -- Blender -----------------------------------------------------------------------------------------
def test_operator_reports_bad_inputs_and_leaves_the_scene(photos, models, regressor, tmp_path) -> None:
    """In Blender the same errors are reports (RuntimeError in background mode, a message in the UI), never
    a traceback, and the scene keeps exactly what it had."""
    bpy = pytest.importorskip("bpy")
    import blender_addon

    bpy.ops.wm.read_factory_settings(use_empty=True)
    blender_addon.register()
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    try:
        before = {k: len(getattr(bpy.data, k)) for k in ("objects", "meshes", "images", "materials", "collections")}
        cases = [(dict(filepath=str(photos["huge"])), "facerig reads photos of up to 250 MP"),
                 (dict(filepath=str(fifo)), "not a regular file"),
                 (dict(filepath=str(photos["text"])), "not a readable image"),
                 (dict(filepath=str(photos["good"]), model_path=str(models["nan_onnx"])), "non-finite values"),
                 (dict(filepath=str(photos["good"]), model_path=str(models["rotted"])), "is damaged")]
        for kwargs, message in cases:
            kwargs.setdefault("model_path", str(regressor))
            with pytest.raises(RuntimeError, match=message) as exc:
                bpy.ops.facerig.reconstruct(**kwargs)
            assert "Traceback" not in str(exc.value)
        after = {k: len(getattr(bpy.data, k)) for k in before}
        assert after == before
    finally:
        blender_addon.unregister()
