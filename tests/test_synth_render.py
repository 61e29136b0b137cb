"""Rendering with Blender: labels agree with pixels, determinism, resume after kill, corruption.

Every render runs the real CLI in a subprocess (Blender lives only in its worker processes).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from facemodel import FaceParams
from facemodel.formation import form
from facemodel.geometry import vertex_normals
from synth.augment import FLAG
from synth.corpus import MANIFEST, CorpusError, open_corpus, shard_name

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
# The resume scenario: 24 images in 8 shards, augmentation on (photo backgrounds too), 2×
# supersampling (slow enough to kill mid-run).
BASE_ARGS = ["--count", "24", "--size", "64", "--shard-size", "3", "--seed", "5", "--supersample", "2"]


def synth(*args: str, workers: int = 1, wait: bool = True, timeout: float = 240):
    cmd = [sys.executable, "-m", "facerig_cli.main", "synth", *args]
    if args and args[0] == "render":
        cmd += ["--workers", str(workers), "--no-progress"]
    if not wait:   # its own process group, so a test can kill the run with everything it started
        return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                start_new_session=True)
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def shard_count(path: Path) -> int:
    try:
        return int(json.loads((path / MANIFEST).read_text())["counts"]["shards"])
    except (OSError, ValueError, KeyError):
        return 0


def wait_for_shards(proc: subprocess.Popen, path: Path, n: int, timeout: float = 180) -> None:
    t0 = time.time()
    while shard_count(path) < n:
        assert proc.poll() is None, f"run ended before it could be killed: {proc.communicate()}"
        assert time.time() - t0 < timeout, "no shard appeared in time"
        time.sleep(0.01)


def worker_pids(pid: int) -> list[int]:
    """Blender worker processes (multiprocessing spawn children) of the CLI process."""
    out = []
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    for c in children:
        cmdline = Path(f"/proc/{c}/cmdline").read_bytes().replace(b"\0", b" ")
        if b"spawn_main" in cmdline and b"resource_tracker" not in cmdline:
            out.append(int(c))
    return out


def silhouette(pixels: np.ndarray, triangles: np.ndarray, size: int, k: int = 4) -> np.ndarray:
    """Pixels at least half covered by the projected triangles (cv2.fillPoly at k× resolution)."""
    sil = np.zeros((size * k, size * k), np.uint8)
    pts = np.round(pixels[triangles] * k * 16 - 8).astype(np.int32)  # 4 fractional bits, centre offset
    for tri in pts:
        cv2.fillConvexPoly(sil, tri, 1, lineType=cv2.LINE_8, shift=4)
    cover = cv2.resize(sil.astype(np.float32), (size, size), interpolation=cv2.INTER_AREA)
    return cover >= 0.5


@pytest.fixture(scope="module")
def clean_corpus(tmp_path_factory) -> Path:
    """Unaugmented renders on black: pixels are pure image formation."""
    out = tmp_path_factory.mktemp("synth") / "clean"
    r = synth("render", "--count", "6", "--size", "128", "--shard-size", "3", "--seed", "11",
              "--no-augment", "--out", str(out))
    assert r.returncode == 0, r.stderr
    assert "rendered 6 images" in r.stdout
    return out


@pytest.fixture(scope="module")
def resume_args(tmp_path_factory) -> list[str]:
    """BASE_ARGS plus a folder of two background photos."""
    d = tmp_path_factory.mktemp("backgrounds")
    rng = np.random.default_rng(0)
    for i in range(2):
        img = cv2.resize(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8), (160, 120), interpolation=cv2.INTER_CUBIC)
        cv2.imwrite(str(d / f"bg{i}.png"), img)
    return [*BASE_ARGS, "--backgrounds", str(d)]


@pytest.fixture(scope="module")
def reference_corpus(tmp_path_factory, resume_args) -> Path:
    """The uninterrupted run of resume_args (2 workers) that resumed runs must reproduce."""
    out = tmp_path_factory.mktemp("synth") / "reference"
    r = synth("render", *resume_args, "--out", str(out), workers=2)
    assert r.returncode == 0, r.stderr
    return out


def check_against_facemodel(corpus_dir: Path, face_model, iou_min: float = 0.97,
                            colour_tol: tuple[float, float] = (2.0, 5.0)) -> None:
    """Labels vs pixels; ``colour_tol`` = (median, 75th percentile) error in 8-bit levels."""
    c = open_corpus(corpus_dir, verify=True)
    d = c.load_all()
    size = c.image_size
    for i in range(len(c)):
        p = FaceParams.from_vector(d["params"][i], c.layout)
        f = form(face_model.arrays, p, size, size)
        # landmarks are the projected GT vertices
        np.testing.assert_allclose(d["landmarks"][i], f.pixels[face_model.landmark_indices()], atol=1e-3)
        np.testing.assert_allclose(d["landmarks_visible_jaw"][i], f.pixels[face_model.landmark_indices("visible")],
                                   atol=1e-3)
        np.testing.assert_allclose(d["pose_deg"][i], np.degrees(p.rotation), atol=1e-4)
        # the projected mesh silhouette is the rendered face
        mask = d["masks"][i].astype(bool)
        sil = silhouette(f.pixels, face_model.render_triangles, size)
        iou = (mask & sil).sum() / (mask | sil).sum()
        assert iou > iou_min, f"image {i}: IoU {iou:.4f}"
        # visible landmarks lie on the rendered face
        lm = d["landmarks"][i][d["visibility"][i]]
        grown = cv2.dilate(mask.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
        on = grown[np.clip(lm[:, 1].astype(int), 0, size - 1), np.clip(lm[:, 0].astype(int), 0, size - 1)]
        assert on.mean() > 0.97, f"image {i}: only {on.mean():.2f} of visible landmarks on the face"
        # rendered colours are facemodel's sRGB vertex colours (front-facing skin away from edges)
        normals = vertex_normals(f.vertices, face_model.triangles, face_model.vertex_faces)
        view = -f.vertices / np.linalg.norm(f.vertices, axis=1, keepdims=True)
        front = ((normals * view).sum(1) > 0.6) & face_model.region_masks["face"]
        q = np.floor(f.pixels[front]).astype(int)
        inside = (q >= 1).all(1) & (q < size - 1).all(1)
        q = q[inside]
        interior = cv2.erode(mask.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)[q[:, 1], q[:, 0]]
        rendered = d["images"][i][q[interior, 1], q[interior, 0]].astype(float)
        expected = np.asarray(f.colors)[front][inside][interior] * 255  # form() gives srgb_encode(radiance)
        err = np.abs(rendered - expected).max(1)
        assert np.median(err) <= colour_tol[0] and np.percentile(err, 75) <= colour_tol[1], (
            np.median(err), np.percentile(err, 75))
        # the self-occlusion labels mean something: profiles hide some of the 68 points
        if abs(d["pose_deg"][i][0]) > 45:
            assert not d["visibility"][i].all()


def test_workbench_labels_match_pixels(clean_corpus, face_model):
    check_against_facemodel(clean_corpus, face_model)
    c = open_corpus(clean_corpus)
    gen = c.generator
    assert gen["engine"] == "workbench" and gen["augment"]["enabled"] is False
    assert c.load_all(["aug_flags"])["aug_flags"].tolist() == [0] * 6


def test_removing_the_true_lighting_recovers_the_albedo(clean_corpus, face_model):
    """The add-on's *Remove lighting* fits SH lighting to the pixels and divides its shading out: with
    the true geometry, a clean render's face texture comes close to its albedo (up to one gain per
    channel; the light's colour is kept on purpose, so a coloured lamp leaves a little)."""
    from facemodel.albedo import vertex_albedo
    from facemodel.lighting import srgb_decode
    from runtime import texture
    from runtime.uv import interpolate, uv_raster

    c = open_corpus(clean_corpus)
    d = c.load_all(["images", "params"])
    size = 256
    spreads = []
    r = uv_raster(face_model, "M_Face", size)
    narrow = face_model.region_masks["narrow_face"][r.vertices].all(0)
    for image, vector in zip(d["images"], d["params"]):
        params = FaceParams.from_vector(vector.astype(np.float32), c.layout)
        albedo = vertex_albedo(face_model.arrays.albedo_base, face_model.arrays.albedo_axes, params.albedo)
        truth = np.stack([interpolate(np.ascontiguousarray(albedo[:, k]), r) for k in range(3)], 1)
        spread, brightness = [], []
        for remove in (False, True):
            proj = texture.project_photo(face_model, params, image, size, remove_lighting=remove)
            colour, weight = proj.colours["M_Face"][r.texels], proj.weights["M_Face"][r.texels]
            ok = (weight > 0.5) & narrow & (colour > 3).all(1) & (colour < 252).all(1)
            ratio = np.log(np.maximum(srgb_decode(colour[ok] / 255.0), 1e-4)) - np.log(truth[ok])
            spread.append(float(np.abs(ratio - np.median(ratio, 0)).mean()))   # log units, gain removed
            brightness.append(float(srgb_decode(colour[weight > 0.5] / 255.0).mean()))
        assert abs(brightness[1] / brightness[0] - 1) < 0.15, brightness          # the photo's exposure stays
        assert spread[1] < 0.09, spread                                         # measured 0.049–0.079
        spreads.append(spread)
    raw, removed = np.mean(spreads, axis=0)
    assert removed < 0.4 * raw, (raw, removed)                                  # measured 0.064 against 0.197


def test_cycles_labels_match_pixels(tmp_path, face_model):
    out = tmp_path / "cycles"
    r = synth("render", "--engine", "cycles", "--cycles-samples", "4", "--count", "2", "--size", "64",
              "--no-augment", "--seed", "2", "--yaw-max", "40", "--out", str(out))
    assert r.returncode == 0, r.stderr
    # 64² and 4 random samples per pixel (box filter): pixels average over more of the face
    check_against_facemodel(out, face_model, iou_min=0.95, colour_tol=(3.5, 12.0))


def test_resume_after_kill_reproduces_uninterrupted_run(reference_corpus, resume_args, tmp_path):
    """Same seed → byte-identical shards, whatever the interruptions and the worker count."""
    out = tmp_path / "resumed"
    render = ("render", *resume_args, "--out", str(out))
    # 1. kill a Blender worker mid-run: the CLI stops with a clear message, finished shards stay
    proc = synth(*render, wait=False)
    wait_for_shards(proc, out, 1)
    workers = worker_pids(proc.pid)
    assert workers, "no worker process found"
    os.kill(workers[0], signal.SIGKILL)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 2 and "exited unexpectedly" in err and "rerun the same command" in err
    n1 = len(open_corpus(out, verify=True))
    assert 0 < n1 < 24
    # 2. rerun and SIGKILL the whole command, with every process it started, mid-run: whatever is listed is
    # intact, and nothing is left in /dev/shm (multiprocessing queues' named semaphores stayed there)
    shm_before = set(Path("/dev/shm").glob("*")) if Path("/dev/shm").is_dir() else set()
    proc = synth(*render, workers=2, wait=False)
    wait_for_shards(proc, out, shard_count(out) + 1)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=60)
    if Path("/dev/shm").is_dir():
        assert not {p for p in set(Path("/dev/shm").glob("*")) - shm_before if p.name.startswith("sem.")}
    c = open_corpus(out, verify=True)
    assert n1 < len(c) < 24 or len(c) == 24
    # 3. rerun to completion: identical to the uninterrupted 2-worker run, byte for byte
    r = synth(*render, workers=1)
    assert r.returncode == 0, r.stderr
    a, b = open_corpus(out, verify=True), open_corpus(reference_corpus, verify=True)
    assert len(a) == len(b) == 24 and not list(out.glob("*.part"))
    assert [s.sha256 for s in a.shards] == [s.sha256 for s in b.shards]
    da, db = a.load_all(), b.load_all()
    for key in db:
        np.testing.assert_array_equal(da[key], db[key], err_msg=key)
    assert len(np.unique(da["seeds"])) == 24 and da["aug_flags"].any()
    assert (da["aug_flags"] & FLAG["bg_photo"]).any()  # workers read the --backgrounds folder
    # 4. rerunning a complete corpus renders nothing
    r = synth(*render)
    assert r.returncode == 0 and "nothing to render" in r.stdout


def test_corrupt_shard_detected_and_rerendered(reference_corpus, resume_args, tmp_path):
    import shutil

    out = tmp_path / "copy"
    shutil.copytree(reference_corpus, out)
    shard = out / shard_name(2)
    data = bytearray(shard.read_bytes())
    data[1000] ^= 0x55
    shard.write_bytes(bytes(data))
    r = synth("info", str(out), "--verify")
    assert r.returncode == 2 and "shard-00002.npz: checksum mismatch" in r.stderr
    with pytest.raises(CorpusError, match="checksum mismatch"):
        open_corpus(out).load_all(["images"])
    r = synth("render", *resume_args, "--out", str(out))
    assert r.returncode == 0 and "rendered 3 images" in r.stdout, r.stdout + r.stderr
    assert open_corpus(out, verify=True).shards == open_corpus(reference_corpus).shards


def test_resume_with_other_settings_refused(reference_corpus, resume_args, tmp_path):
    import shutil

    out = tmp_path / "copy"
    shutil.copytree(reference_corpus, out)
    args = [a if a != "5" else "6" for a in resume_args]  # another seed
    r = synth("render", *args, "--out", str(out))
    assert r.returncode == 2 and "different settings" in r.stderr and "seed" in r.stderr


def test_preview(reference_corpus, tmp_path):
    png = tmp_path / "sheet.png"
    r = synth("preview", str(reference_corpus), "-o", str(png), "-n", "12")
    assert r.returncode == 0, r.stderr
    img = cv2.imread(str(png))
    assert img is not None and img.shape[0] > 400 and img.shape[1] > 400
