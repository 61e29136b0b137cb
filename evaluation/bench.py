"""``facerig bench``: how fast each stage is, measured through the packages' own entry points.

Every number is a median (robust to the other processes on a shared machine) of repeated
wall-clock timings. A stage whose code or inputs are not available is recorded as ``null``
with a ``<key>_reason`` string — never as an estimate — so a report always says what was
actually measured. Heavy stages (torch training, Blender) run in a subprocess, keeping this
process torch-free and the measurement free of import costs.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from facemodel.outputs import write_json

log = logging.getLogger(__name__)

KEYS = ("regressor_ms", "photo_to_params_ms", "phone_heic_12mp_ms", "small_face_24mp_ms", "same_person_3_photos_ms",
        "photo_to_blender_s", "synth_images_per_s_128", "train_images_per_s_128")
SMALL_FACE_CANVAS = (4000, 6000)   # h, w: 24 MP
SMALL_FACE_PHOTO_WIDTH = 240       # the bench photo's width in it (the astronaut's face ≈ 50 px: found only on tiles)
SMALL_FACE_RUNS = 3
PHONE_SIZE = (3024, 4032)          # h, w: a 12-MP phone photo
PHONE_RUNS = 5
SAME_PERSON_RUNS = 5
MIN_REGRESSOR_RUNS = 200
PHOTO_RUNS = 300                   # photo_to_params_ms: median of this many (issue 34: ≤ 25 ms)
TRAIN_STEPS = 60


class Unavailable(Exception):
    """A stage cannot be measured here; the message becomes ``<key>_reason``."""


def median_ms(fn: Callable[[], Any], runs: int, warmup: int = 5) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1e3)
    return float(statistics.median(times))


def default_photo() -> Path:
    """The public-domain astronaut photo that ships with scikit-image (a built-in demo)."""
    try:
        import skimage.data
    except ImportError as exc:
        raise Unavailable(f"no --photo given and scikit-image is missing ({exc})") from None
    path = Path(tempfile.gettempdir()) / "facerig_bench_astronaut.png"
    if not path.is_file():
        import cv2

        cv2.imwrite(str(path), skimage.data.astronaut()[:, :, ::-1])
    return path


def _onnx(onnx_path: Path | None) -> Path:
    from .regressor import default_onnx_path

    path = Path(onnx_path) if onnx_path else default_onnx_path()
    if not path.is_file():
        raise Unavailable(f"no regressor model at {path} (train and export one, or pass --model)")
    return path


def bench_regressor(onnx_path: Path | None, runs: int) -> float:
    """Median ms of one batch-1 prediction with a 1-thread onnxruntime session."""
    from .regressor import load_regressor

    reg = load_regressor(_onnx(onnx_path), threads=1)
    s = reg.input_size
    crop = np.random.default_rng(0).integers(0, 256, (1, s, s, 3), dtype=np.uint8)
    return median_ms(lambda: reg.predict(crop), max(runs, 1))


def bench_photo_to_params(onnx_path: Path | None, photo: Path, runs: int = PHOTO_RUNS
                          ) -> tuple[float, dict[str, Any]]:
    """Median ms of decode + detect + crop + regress + refine (``runtime.pipeline.reconstruct_photo``).

    The detail holds the pipeline's own per-stage medians (:data:`PHOTO_STAGES` says what each is), so a
    slow total can be attributed, and the process CPU time per photo (all threads; less disturbed than
    wall time by other work on a shared machine).
    """
    cpu: list[float] = []
    total, detail = _time_reconstruct(onnx_path, photo, runs, warmup=2, cpu=cpu)
    return total, {"photo": str(photo), "runs": runs, **detail,
                   "process_cpu_ms": float(statistics.median(cpu[-runs:])), "stages": PHOTO_STAGES}


PHOTO_STAGES = {"decode_ms": "file → upright sRGB pixels (runtime.photo.load_image)",
                "detect_ms": "face detector + FaceMesh on each detected face (runtime.detect.detect_faces)",
                "crop_ms": "canonical crop resampled to the network's input",
                "regress_ms": "the ONNX regressor on the crop",
                "refine_landmarks_ms": "FaceMesh again, on the canonical crop, placed on the first pass's points (the "
                                       "points the fit uses; on 2 cores it runs beside the network: its own time)",
                "refine_ms": "the landmark fit (facemodel.landmark_fit.LandmarkRefiner.prepare, then refine on the "
                             "points; on 2 cores the preparation runs beside FaceMesh's second pass: both counted)"}


def _time_reconstruct(onnx_path: Path | None, photo: Path | np.ndarray, runs: int, warmup: int,
                      cpu: list[float] | None = None) -> tuple[float, dict[str, float]]:
    """(median ms of ``reconstruct_photo``, the pipeline's own per-stage medians)."""
    try:
        from runtime.pipeline import get_regressor, reconstruct_photo
    except ImportError as exc:
        raise Unavailable(f"runtime.pipeline not available ({exc})") from None
    model = get_regressor(_onnx(onnx_path))  # loaded once: the add-on keeps the session
    return median_ms_with_stages(lambda: reconstruct_photo(photo, model=model), runs, warmup, cpu)


def median_ms_with_stages(call: Callable[[], Any], runs: int, warmup: int, cpu: list[float] | None = None
                          ) -> tuple[float, dict[str, float]]:
    """(median ms of ``call``, the median of each stage its result reports in ``.timings``), so a slow
    total can be attributed; ``cpu`` collects each call's process CPU ms."""
    stages: dict[str, list[float]] = {}

    def once() -> None:
        c = time.process_time()
        for k, v in call().timings.items():
            stages.setdefault(k, []).append(float(v))
        if cpu is not None:
            cpu.append((time.process_time() - c) * 1e3)

    total = median_ms(once, runs, warmup=warmup)
    return total, {f"{k}_ms": float(statistics.median(v[-runs:])) for k, v in stages.items() if k != "model_load"}


def _read_bgr(photo: Path) -> np.ndarray:
    """The bench photo as OpenCV BGR for the stages that compose new pictures from it."""
    import cv2

    image = cv2.imread(str(photo), cv2.IMREAD_COLOR)
    if image is None:
        raise Unavailable(f"cannot read {photo}")
    return image


def bench_small_face(onnx_path: Path | None, photo: Path, runs: int = SMALL_FACE_RUNS
                     ) -> tuple[float, dict[str, Any]]:
    """Median ms of ``reconstruct_photo`` on a 24-MP picture holding the bench photo 240 px wide: the
    whole-image detector passes find nothing, the tiled one finds the face (the worst case of tiling)."""
    try:
        import cv2

        from runtime.photo import PhotoError
    except ImportError as exc:
        raise Unavailable(f"runtime.photo not available ({exc})") from None
    image = _read_bgr(photo)
    h = int(round(image.shape[0] * SMALL_FACE_PHOTO_WIDTH / image.shape[1]))
    small = cv2.resize(image, (SMALL_FACE_PHOTO_WIDTH, h), interpolation=cv2.INTER_AREA)[:, :, ::-1]
    canvas = np.full(SMALL_FACE_CANVAS + (3,), 170, np.uint8)
    y, x = SMALL_FACE_CANVAS[0] // 2, SMALL_FACE_CANVAS[1] // 2
    canvas[y:y + h, x:x + SMALL_FACE_PHOTO_WIDTH] = small
    try:
        total, detail = _time_reconstruct(onnx_path, canvas, runs, warmup=1)
    except PhotoError as exc:   # a --photo whose face is too small at this size
        raise Unavailable(f"{photo.name} at {SMALL_FACE_PHOTO_WIDTH} px in a 24-MP picture: {exc}") from None
    return total, {"photo": str(photo), "canvas": list(SMALL_FACE_CANVAS), "photo_width_px": SMALL_FACE_PHOTO_WIDTH,
                   "runs": runs, **detail}


def bench_phone_heic(onnx_path: Path | None, photo: Path, runs: int = PHONE_RUNS) -> tuple[float, dict[str, Any]]:
    """Median ms of ``reconstruct_photo`` on the bench photo as a phone saves it: scaled to cover a
    12-MP frame and stored as HEIC (decoding it through pillow-heif is most of the difference to
    ``photo_to_params_ms``)."""
    try:
        import cv2

        from runtime.photo import heif_supported, pillow_image
    except ImportError as exc:
        raise Unavailable(f"runtime.photo not available ({exc})") from None
    if not heif_supported():
        raise Unavailable("pillow-heif is not installed")
    image = _read_bgr(photo)
    (h, w), (ph, pw) = image.shape[:2], PHONE_SIZE
    s = max(pw / w, ph / h)
    big = cv2.resize(image, (round(w * s), round(h * s)), interpolation=cv2.INTER_CUBIC)
    y, x = (big.shape[0] - ph) // 2, (big.shape[1] - pw) // 2
    frame = np.ascontiguousarray(big[y:y + ph, x:x + pw, ::-1])
    with tempfile.TemporaryDirectory() as tmp:
        heic = Path(tmp) / "IMG_0001.HEIC"
        pillow_image().fromarray(frame).save(heic, quality=80)
        total, detail = _time_reconstruct(onnx_path, heic, runs, warmup=1)
        size_mb = heic.stat().st_size / 1e6
    return total, {"photo": str(photo), "size": [pw, ph], "heic_mb": round(size_mb, 2), "runs": runs, **detail}


def bench_same_person(onnx_path: Path | None, photo: Path, runs: int = SAME_PERSON_RUNS
                      ) -> tuple[float, dict[str, Any]]:
    """Median ms of ``reconstruct_same_person`` on three views of one photo (as given, mirrored, 80 %
    scale): three single-photo passes, the C-Net, the aggregate and two landmark fits a photo."""
    try:
        import cv2

        from runtime.same_person import reconstruct_same_person
        from runtime.pipeline import get_regressor
    except ImportError as exc:
        raise Unavailable(f"runtime.same_person not available ({exc})") from None
    model = get_regressor(_onnx(onnx_path))
    image = _read_bgr(photo)
    small = cv2.resize(image, None, fx=0.8, fy=0.8, interpolation=cv2.INTER_AREA)
    views = [np.ascontiguousarray(v[:, :, ::-1]) for v in (image, image[:, ::-1], small)]
    total, detail = median_ms_with_stages(lambda: reconstruct_same_person(views, regressor=model), runs, warmup=1)
    return total, {"photo": str(photo), "views": "as given, mirrored, 80 % scale", "runs": runs, **detail}


BLENDER_SCRIPT = r"""
import json, sys, time
import bpy
import blender_addon
blender_addon.register()
op = getattr(bpy.ops, "facerig", None)
if op is None or not hasattr(op, "reconstruct"):
    print(json.dumps({"error": "the add-on registers no bpy.ops.facerig.reconstruct operator"}))
    sys.exit(0)
times = []
for _ in range(3):
    for obj in list(bpy.data.objects):
        bpy.data.objects.remove(obj, do_unlink=True)
    t = time.perf_counter()
    result = op.reconstruct(filepath=sys.argv[-2], model_path=sys.argv[-1])
    times.append(time.perf_counter() - t)
    if result != {"FINISHED"} or not any(o.type == "MESH" for o in bpy.data.objects):
        print(json.dumps({"error": f"reconstruct returned {sorted(result)} and built no mesh"}))
        sys.exit(0)
print(json.dumps({"seconds": sorted(times)[1], "objects": sorted(o.type for o in bpy.data.objects)}))
"""


def bench_photo_to_blender(onnx_path: Path | None, photo: Path) -> float:
    """Median of 3 runs of the add-on's reconstruct operator in bpy (subprocess)."""
    import importlib.util

    if importlib.util.find_spec("bpy") is None:
        raise Unavailable("bpy is not installed")
    onnx = _onnx(onnx_path)
    out = subprocess.run([sys.executable, "-c", BLENDER_SCRIPT, str(photo), str(onnx)], capture_output=True,
                         text=True, timeout=900)
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("{")]
    if out.returncode != 0 or not lines:
        tail = (out.stderr.strip().splitlines() or ["no output"])[-1]
        raise Unavailable(f"reconstruct operator failed: {tail}")
    res = json.loads(lines[-1])
    if "error" in res:
        raise Unavailable(res["error"])
    return float(res["seconds"])


def bench_synth(workers: int = 2, count: int = 1536) -> float:
    """Images per second of the corpus renderer at 128² with ``workers`` Blender processes.

    Renders a throw-away corpus of ``count`` images (6 shards) through ``synth.render.render_corpus``,
    the code path of ``facerig synth render``; includes Blender start-up, like a real run.
    """
    import importlib.util

    if importlib.util.find_spec("bpy") is None:
        raise Unavailable("bpy is not installed (pip install 'facerig[render]')")
    from synth.render import RenderSettings, render_corpus

    with tempfile.TemporaryDirectory() as tmp:
        report = render_corpus(RenderSettings(count=count, size=128, seed=12345), Path(tmp) / "bench",
                               workers=workers, progress=False)
    return float(report.images_per_second)


TRAIN_SCRIPT = r"""
import json, statistics, sys, tempfile
from pathlib import Path
from learner.config import Config
from learner.train import train
cfg = Config()
cfg.train.steps = int(sys.argv[-1])
cfg.train.log_every = max(1, cfg.train.steps // 6)
cfg.train.val_every = 10 ** 9
cfg.train.checkpoint_every = 10 ** 9
cfg.network.input_size = 128
with tempfile.TemporaryDirectory() as out:
    summary = train([sys.argv[-2]], out, cfg, progress=False)
    rows = [json.loads(line) for line in (Path(out) / "metrics.jsonl").read_text().splitlines() if line.strip()]
rates = [r["images_per_s"] for r in rows if r.get("kind") == "train" and "images_per_s" in r]
steady = rates[1:] or rates  # the first window holds the warm-up steps
print(json.dumps({"images_per_s": statistics.median(steady) if steady else summary["images_per_s"],
                  "windows": rates, "overall_images_per_s": summary["images_per_s"],
                  "batch_size": cfg.train.batch_size}))
"""


def bench_train(corpus: Path | None, steps: int = TRAIN_STEPS) -> tuple[float, dict[str, Any]]:
    """Training images per second at 128²: ``learner.train.train`` for a few steps (subprocess).

    The rate is the median over the trainer's own logging windows after the first (which holds
    the warm-up), i.e. time in training steps only — not start-up, corpus loading or saving.
    """
    import importlib.util

    if importlib.util.find_spec("learner.train") is None:
        raise Unavailable("learner.train is not available")
    if corpus is None:
        raise Unavailable("no corpus to train on (pass --corpus DIR)")
    env = {**os.environ, "MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": "100000000000"}
    out = subprocess.run([sys.executable, "-c", TRAIN_SCRIPT, str(corpus), str(steps)], capture_output=True,
                         text=True, timeout=1800, env=env)
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("{")]
    if out.returncode != 0 or not lines:
        tail = (out.stderr.strip().splitlines() or ["no output"])[-1]
        raise Unavailable(f"training run failed: {tail}")
    res = json.loads(lines[-1])
    return float(res.pop("images_per_s")), {"corpus": str(corpus), "steps": steps, **res}


def run(json_path: Path, onnx_path: Path | None = None, photo: Path | None = None, runs: int = MIN_REGRESSOR_RUNS,
        only: list[str] | None = None, corpus: Path | None = None, photo_runs: int = PHOTO_RUNS) -> dict[str, Any]:
    """Measure every stage (or ``only`` these keys) and write ``json_path``."""
    unknown = sorted(set(only or []) - set(KEYS))
    if unknown:
        raise ValueError(f"unknown bench keys {unknown}; choose from {', '.join(KEYS)}")
    wanted = set(only) if only else set(KEYS)
    if runs < MIN_REGRESSOR_RUNS:
        log.warning("regressor_ms from %d runs (< %d: not for the record)", runs, MIN_REGRESSOR_RUNS)

    def photo_path() -> Path:
        if photo is not None:
            if not Path(photo).is_file():
                raise FileNotFoundError(f"photo {photo} does not exist")
            return Path(photo)
        return default_photo()

    stages: dict[str, Callable[[], float | tuple[float, dict[str, Any]]]] = {
        "regressor_ms": lambda: bench_regressor(onnx_path, runs),
        "photo_to_params_ms": lambda: bench_photo_to_params(onnx_path, photo_path(), photo_runs),
        "phone_heic_12mp_ms": lambda: bench_phone_heic(onnx_path, photo_path()),
        "small_face_24mp_ms": lambda: bench_small_face(onnx_path, photo_path()),
        "same_person_3_photos_ms": lambda: bench_same_person(onnx_path, photo_path()),
        "photo_to_blender_s": lambda: bench_photo_to_blender(onnx_path, photo_path()),
        "synth_images_per_s_128": lambda: bench_synth(2),
        "train_images_per_s_128": lambda: bench_train(corpus),
    }
    report: dict[str, Any] = {}
    for key in KEYS:
        if key not in wanted:
            report[key], report[f"{key}_reason"] = None, "not requested (--only)"
            continue
        try:
            value = stages[key]()
            if isinstance(value, tuple):
                value, report[f"{key}_detail"] = value
            report[key] = float(value)
            log.info("%s = %.4g", key, report[key])
        except Unavailable as exc:
            report[key], report[f"{key}_reason"] = None, str(exc)
            log.info("%s: not measured (%s)", key, exc)
    report["regressor_runs"] = runs
    report["model"] = _model_identity(onnx_path)
    report["environment"] = {"cpu_count": os.cpu_count(), "machine": platform.machine(),
                             "python": platform.python_version(), "load_avg_1min": _load()}
    json_path = write_json(json_path, report)
    return report


def _model_identity(onnx_path: Path | None) -> dict[str, Any] | None:
    """Which regressor the timings belong to (a test fixture must never pass for the real model)."""
    try:
        path = _onnx(onnx_path)
    except Unavailable:
        return None
    import hashlib

    info: dict[str, Any] = {"path": str(path), "sha256_12": hashlib.sha256(path.read_bytes()).hexdigest()[:12]}
    try:
        import onnxruntime as ort

        meta = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).get_modelmeta()
        info["model_card"] = meta.custom_metadata_map.get("facerig.model_card")
    except Exception as exc:  # noqa: BLE001 — identity is informative only
        info["model_card_error"] = str(exc)
    return info


def _load() -> float | None:
    try:
        return float(os.getloadavg()[0])
    except OSError:
        return None
