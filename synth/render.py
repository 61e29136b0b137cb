"""Corpus rendering: settings, per-image sampling, labels, and the worker processes.

The main process never imports bpy: it owns the :class:`synth.corpus.CorpusWriter` (the only
writer of the manifest) and hands shard indices to worker processes started with the
multiprocessing ``spawn`` method, one Blender per process. Each worker renders whole shards
and writes them atomically itself (:func:`synth.corpus.write_shard_file`), then reports the
checksum to the main process, which records it — so a killed run loses at most the shards in
flight, and rerunning the same command renders exactly the missing ones.

Determinism: image ``i`` is a pure function of the generator settings and
``seeds[i] = image_seed(seed, i)``; shard ``k`` holds images ``k·shard_size …``. Worker count,
interruption and resumption therefore never change the corpus content.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import sys
import queue
import signal
import tempfile
import time
import traceback
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Iterator

import cv2
import numpy as np

from facemodel import FaceModel, FaceParams, ParamLayout
from facemodel.model import OVERLAY_MATERIALS
from facemodel.albedo import vertex_albedo
from facemodel.formation import mesh_camera_space, project_to_image
from facemodel.geometry import face_normals
from facemodel.lighting import radiance
from facemodel.priors import PoseRange, sample_albedo, sample_params
from facemodel.xp import normalize

from .augment import AugmentConfig, Augmenter, list_photos
from .corpus import CorpusWriter, ShardInfo, write_shard_file

log = logging.getLogger(__name__)

ENGINE_NAMES = ("workbench", "cycles")
WORKBENCH_AA = ("OFF", "FXAA", "5", "8", "11", "16", "32")
MIN_SIZE, MAX_SIZE = 32, 2048
BATCH = 16                   # faces formed together in numpy (amortises the basis concatenation)
VISIBILITY_TOLERANCE_CM = 1.0
EXTRA_KEYS = {               # beyond the DEVELOPERS.md contract; declared in the manifest
    "visibility_visible_jaw": ("bool", (68,)),
    "occluded": ("bool", (68,)),
    "aug_flags": ("uint16", ()),
}


class RenderError(RuntimeError):
    """A render run failed (a worker crashed or was killed); finished shards are kept."""


@dataclass(frozen=True)
class RenderSettings:
    """Everything that determines corpus content (``count``/``workers`` only how much/how fast)."""

    count: int
    size: int = 128
    seed: int = 0
    yaw_max: float = 90.0
    pitch_max: float = 30.0
    roll_max: float = 20.0
    engine: str = "workbench"
    supersample: int = 1
    workbench_aa: str = "OFF"
    cycles_samples: int = 8
    shard_size: int = 256
    n_identity: int = 100
    scale_jitter: float = 0.1
    shift_jitter: float = 0.05
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    backgrounds: Path | None = None
    model_path: Path | None = None
    views: Any = None     # synth.views.ViewSettings: render views of reconstructions, not prior samples
    views_per_identity: int = 1   # > 1: images i·K … i·K+K−1 show one person (same identity and skin)

    def validate(self) -> None:
        """Reject bad values with a message naming the option (CLI users see it as one line)."""
        if not isinstance(self.count, int) or self.count < 1:
            raise ValueError(f"--count must be a positive number of images, got {self.count}")
        if not MIN_SIZE <= self.size <= MAX_SIZE:
            raise ValueError(f"--size must be between {MIN_SIZE} and {MAX_SIZE} pixels, got {self.size}")
        if self.engine not in ENGINE_NAMES:
            raise ValueError(f"unknown --engine {self.engine!r}; choose from {', '.join(ENGINE_NAMES)}")
        if not 0 <= self.yaw_max <= 90:
            raise ValueError(f"--yaw-max must be in [0, 90] degrees, got {self.yaw_max}")
        if not 0 <= self.pitch_max <= 60:
            raise ValueError(f"--pitch-max must be in [0, 60] degrees, got {self.pitch_max}")
        if not 0 <= self.roll_max <= 90:
            raise ValueError(f"--roll-max must be in [0, 90] degrees, got {self.roll_max}")
        if not 1 <= self.supersample <= 4:
            raise ValueError(f"--supersample must be 1…4, got {self.supersample}")
        if self.workbench_aa not in WORKBENCH_AA:
            raise ValueError(f"--workbench-aa must be one of {', '.join(WORKBENCH_AA)}")
        if self.cycles_samples < 1:
            raise ValueError("--cycles-samples must be at least 1")
        if self.shard_size < 1:
            raise ValueError(f"--shard-size must be at least 1, got {self.shard_size}")
        if not 0 <= self.n_identity <= 100:
            raise ValueError(f"--n-identity must be in [0, 100], got {self.n_identity}")
        if not 0 <= self.seed < 2**63:
            raise ValueError(f"--seed must be a non-negative integer, got {self.seed}")
        if self.views is not None:
            self.views.validate()
        if not 1 <= self.views_per_identity <= 1000:
            raise ValueError(f"--views-per-identity must be 1…1000, got {self.views_per_identity}")

    @property
    def layout(self) -> ParamLayout:
        return ParamLayout(n_identity=self.n_identity)

    @property
    def n_shards(self) -> int:
        return -(-self.count // self.shard_size)

    def shard_range(self, k: int) -> range:
        return range(k * self.shard_size, min(self.count, (k + 1) * self.shard_size))

    def generator(self, model: FaceModel, photos: list[Path]) -> dict[str, Any]:
        """The manifest's generator settings: what a resumed run must reproduce exactly."""
        from facemodel.params import LAYOUT_VERSION

        d = asdict(self)
        for k in ("count", "model_path", "backgrounds", "augment", "views"):
            d.pop(k)
        if self.views_per_identity == 1:   # the default: keeps manifests of earlier corpora comparable
            d.pop("views_per_identity")
        if self.views is not None:
            from .views import read_reconstructions

            d["views"] = self.views.to_dict()
            d["views"]["source_sha256"] = read_reconstructions(self.views.source)[1]["sha256"]
            # pixels come from photos: SH/albedo labels do not describe them (geometry labels do)
            d["appearance_labels"] = False
        d["augment"] = self.augment.to_dict()
        d["pose_prior_deg"] = {"yaw": self.yaw_max, "pitch": self.pitch_max, "roll": self.roll_max}
        d["backgrounds"] = {"dir": str(Path(self.backgrounds).resolve()) if self.backgrounds else None,
                            "count": len(photos),
                            "names_sha256": hashlib.sha256("\n".join(p.name for p in photos).encode()).hexdigest()}
        d["face_model"] = {"file": model.path.name if model.path else None, "sha256": _file_sha256(model.path)}
        d["layout_version"] = LAYOUT_VERSION
        d["blender"] = _software().get("bpy")  # rasterisation may change between Blender releases
        d["visibility"] = ("self-occlusion: a landmark is visible when a render-depth pixel within "
                           f"±{self.supersample} render px is no more than {VISIBILITY_TOLERANCE_CM} cm in "
                           "front of it and it lies inside the image; synthetic occluders are reported "
                           "separately in 'occluded'")
        d["masks"] = "1 where the rendered head (alpha ≥ 0.5) is seen and not covered by an occluder"
        d["seeds"] = "image_seed(seed, i) = SeedSequence([seed, i]); params and augmentation streams spawn from it"
        return d


def _software() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("facerig", "bpy", "numpy", "opencv-contrib-python"):
        with contextlib.suppress(PackageNotFoundError):
            out[name] = version(name)
    return out


def _file_sha256(path: Path | None) -> str | None:
    if path is None:
        return None
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 22):
            h.update(block)
    return h.hexdigest()


def image_seed(seed: int, index: int) -> int:
    """Per-image seed (int63): reproduces image ``index`` without rendering the others."""
    a, b = np.random.SeedSequence([int(seed), int(index)]).generate_state(2, np.uint32)
    return int(((int(a) << 32) | int(b)) & (2**63 - 1))


def image_rngs(img_seed: int) -> tuple[np.random.Generator, np.random.Generator]:
    """Independent streams for the face parameters and for augmentation."""
    s_params, s_aug = np.random.SeedSequence(int(img_seed)).spawn(2)
    return np.random.default_rng(s_params), np.random.default_rng(s_aug)


def landmark_visibility(points: np.ndarray, depth_points: np.ndarray, depth_map: np.ndarray,
                        radius: int = 1, tolerance: float = VISIBILITY_TOLERANCE_CM) -> np.ndarray:
    """(K,) bool: inside the image and not hidden behind other surface (z-buffer test).

    ``points`` (K, 2) pixels and ``depth_map`` at the same (render) resolution. A point counts
    as visible when any depth pixel within ``radius`` is at most ``tolerance`` in front of it,
    which keeps points on silhouettes and steep surfaces visible; the nose hiding the far
    cheek (several cm in front) still hides.
    """
    h, w = depth_map.shape
    p = np.floor(points).astype(np.int64)
    inside = (p[:, 0] >= 0) & (p[:, 0] < w) & (p[:, 1] >= 0) & (p[:, 1] < h)
    offs = np.arange(-radius, radius + 1)
    xs = np.clip(p[:, 0:1, None] + offs[None, None, :], 0, w - 1)          # (K, 1, R)
    ys = np.clip(p[:, 1:2, None] + offs[None, :, None], 0, h - 1)          # (K, R, 1)
    window = depth_map[ys, xs]                                               # (K, R, R)
    unhidden = (window >= depth_points[:, None, None] - tolerance).any((1, 2))
    return inside & unhidden


def draw_polygons(model: FaceModel) -> np.ndarray:
    """The render topology for Blender: ICT's polygons without the transparent overlay
    materials (the surface of ``render_triangles``), plus flipped copies of the lashes.

    Back-face culling makes Workbench ≈30 % faster on llvmpipe and changes nothing where the
    surface is closed. ICT's eyelashes are single-sided cards, so they get a back side; the
    only other opening a camera can look into is the neck, handled per frame by
    :func:`neck_opening_visible`. The silhouette is unchanged.
    """
    keep = ~np.isin(model.face_material, [model.material_names.index(m) for m in OVERLAY_MATERIALS])
    faces = model.faces[keep]
    lash = model.region_masks["lashes"][np.where(faces >= 0, faces, faces[:, :1])].all(1)
    flipped = faces[lash].copy()
    quads = flipped[:, 3] >= 0
    flipped[quads] = flipped[quads][:, [0, 3, 2, 1]]   # keeps the 0–2 diagonal Blender splits on
    flipped[~quads, :3] = flipped[~quads][:, [0, 2, 1]]
    return np.concatenate([faces, flipped], 0)


def neck_ring(model: FaceModel) -> np.ndarray:
    """Vertices on the open boundary at the bottom of the neck."""
    t = model.render_triangles
    edges = np.sort(np.concatenate([t[:, [0, 1]], t[:, [1, 2]], t[:, [2, 0]]]), 1)
    uniq, counts = np.unique(edges, axis=0, return_counts=True)
    boundary = np.unique(uniq[counts == 1])
    return boundary[np.isin(boundary, model.vertex_range("head_neck"))]


def neck_opening_visible(vertices: np.ndarray, ring: np.ndarray, inside_point: np.ndarray,
                         margin: float = 0.05) -> bool:
    """Is the camera (origin) on the outer side of the neck opening's plane (it may look in)?"""
    pts = vertices[ring].astype(np.float64)
    centre = pts.mean(0)
    normal = np.linalg.svd(pts - centre)[2][-1]
    if np.dot(normal, inside_point - centre) > 0:
        normal = -normal  # point out of the head
    return float(np.dot(normal, -centre)) / float(np.linalg.norm(centre)) > -margin


class VertexShading:
    """:func:`facemodel.formation.vertex_colors` (linear) for many faces of one topology, faster.

    Same composition of facemodel's maths — ``face_normals`` → area-weighted vertex normals →
    ``vertex_albedo`` → ``radiance`` — except that the per-vertex sum of incident face normals
    is one sparse incidence-matrix product (0.2 ms per face) instead of facemodel's
    fixed-width gather (≈ 5 ms and a (B, V, 32, 3) temporary). Tested equal to facemodel.
    """

    def __init__(self, arrays: Any) -> None:
        import scipy.sparse

        self.arrays = arrays
        tri = np.asarray(arrays.triangles)
        n_v = int(arrays.neutral.shape[0])
        rows = tri.reshape(-1)
        cols = np.repeat(np.arange(len(tri)), 3)
        self.incidence = scipy.sparse.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)),
                                                 shape=(n_v, len(tri)))

    def normals(self, vertices: np.ndarray) -> np.ndarray:
        """(B, V, 3) unit vertex normals of (B, V, 3) camera-space vertices."""
        fn = face_normals(vertices, self.arrays.triangles)                  # (B, T, 3)
        b, t = fn.shape[0], fn.shape[1]
        sums = self.incidence @ fn.transpose(1, 0, 2).reshape(t, b * 3)     # (V, B·3)
        return normalize(np.ascontiguousarray(sums.reshape(-1, b, 3).transpose(1, 0, 2)))

    def __call__(self, params: FaceParams, vertices: np.ndarray) -> np.ndarray:
        """(B, V, 3) linear radiance, as ``vertex_colors(..., encode=False)``."""
        albedo = vertex_albedo(self.arrays.albedo_base, self.arrays.albedo_axes, params.albedo)
        return radiance(albedo, self.normals(vertices), params.sh)


class StageTimer:
    """Accumulated wall time per pipeline stage (the benchmark reports where the time goes)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[stage] = self.seconds.get(stage, 0.0) + time.perf_counter() - t0

    def reset(self) -> None:
        self.seconds.clear()


# -- the per-worker renderer ----------------------------------------------------------------------
class ShardRenderer:
    """Samples, forms, renders and labels the images of a shard (lives in a worker process)."""

    def __init__(self, settings: RenderSettings, scratch_parent: Path | None = None) -> None:
        from .blender_scene import FaceScene, SceneSettings  # bpy: only in workers

        self.s = settings
        self.model = FaceModel.load(settings.model_path)
        self.arrays = self.model.arrays
        self.lm_fixed = self.model.landmark_indices("fixed")
        self.lm_visible = self.model.landmark_indices("visible")
        self.lm_arrays = self.arrays.subset(self.lm_fixed)
        self.pose = PoseRange(yaw=settings.yaw_max, pitch=settings.pitch_max, roll=settings.roll_max)
        self.scene = FaceScene(draw_polygons(self.model), self.model.n_vertices,
                               SceneSettings(size=settings.size, engine=settings.engine,
                                             supersample=settings.supersample,
                                             workbench_aa=settings.workbench_aa,
                                             cycles_samples=settings.cycles_samples),
                               scratch_parent=scratch_parent or _ram_dir())
        self.augmenter = Augmenter(settings.augment, settings.size, list_photos(settings.backgrounds))
        self.shading = VertexShading(self.arrays)
        self.neck_ring = neck_ring(self.model)
        self.head_point = int(self.lm_fixed[30])  # nose tip: inside the neck opening's half-space
        self.culled_frames = 0
        self.timings = StageTimer()
        self.scene.timings = self.timings

    def sample(self, index: int) -> tuple[FaceParams, int, np.random.Generator]:
        seed = image_seed(self.s.seed, index)
        rng_params, rng_aug = image_rngs(seed)
        identity = albedo = None
        if self.s.views_per_identity > 1:   # one person per group: identity and skin from the group's stream
            group = np.random.default_rng([self.s.seed, index // self.s.views_per_identity, 7])
            identity = np.clip(group.normal(0, 1, (1, self.s.n_identity)), -3, 3)
            albedo = sample_albedo(group, 1)
        p = sample_params(rng_params, 1, self.model.expression_names, self.lm_arrays,
                          n_identity=self.s.n_identity, pose=self.pose,
                          scale_jitter=self.s.scale_jitter, shift_jitter=self.s.shift_jitter,
                          identity=identity, albedo=albedo)
        return p, seed, rng_aug

    def render_images(self, indices: range) -> Iterator[dict[str, Any]]:
        """Yield one label dict per image, forming faces in numpy batches of ``BATCH``."""
        size, k, t = self.s.size, self.s.supersample, self.timings
        idx = list(indices)
        for start in range(0, len(idx), BATCH):
            chunk = idx[start:start + BATCH]
            with t("sample"):
                samples = [self.sample(i) for i in chunk]
                params = FaceParams.stack([p[0] for p, _, _ in samples])
            with t("form_mesh"):
                verts = mesh_camera_space(self.arrays, params)
                lm = project_to_image(verts[:, self.lm_fixed], params, size, size)
                lm_vis = project_to_image(verts[:, self.lm_visible], params, size, size)
            with t("form_colors"):
                colors = self.shading(params, verts)
            for j, (_, seed, rng_aug) in enumerate(samples):
                yield self.render_labelled(params[j], verts[j], colors[j], lm[j], lm_vis[j], seed, rng_aug)

    def render_labelled(self, params: FaceParams, verts: np.ndarray, colors: np.ndarray, lm: np.ndarray,
                        lm_vis: np.ndarray, seed: int, rng_aug: np.random.Generator,
                        background: np.ndarray | None = None) -> dict[str, Any]:
        """Render one formed face (``params`` of one image, camera-space ``verts``, linear ``colors``,
        its fixed/visible-jaw landmarks) and return its label dict; ``background`` as in
        :class:`synth.augment.Augmenter`."""
        size, k, t = self.s.size, self.s.supersample, self.timings
        with t("labels"):
            cull = not neck_opening_visible(verts, self.neck_ring, verts[self.head_point])
            self.culled_frames += cull
        frame = self.scene.render(verts, colors, params.camera, backface_culling=cull)
        with t("labels"):
            rgba = frame.rgba
            if k > 1:
                rgba = cv2.resize(rgba, (size, size), interpolation=cv2.INTER_AREA)
            vis = landmark_visibility(lm * k, -verts[self.lm_fixed, 2], frame.depth, radius=k)
            vis_jaw = landmark_visibility(lm_vis * k, -verts[self.lm_visible, 2], frame.depth, radius=k)
            box = np.concatenate([lm.min(0), lm.max(0)])
        with t("augment"):
            aug = self.augmenter(rng_aug, rgba, box, background=background)
        return {"images": aug.image, "params": params.to_vector().astype(np.float32),
                "landmarks": lm.astype(np.float32), "landmarks_visible_jaw": lm_vis.astype(np.float32),
                "visibility": vis, "masks": ((rgba[..., 3] >= 0.5) & ~aug.occluder).astype(np.uint8),
                "pose_deg": np.degrees(params.rotation).astype(np.float32), "seeds": np.int64(seed),
                "visibility_visible_jaw": vis_jaw, "occluded": _occluded(aug.occluder, lm),
                "aug_flags": np.uint16(aug.flags)}

    def render_shard(self, k: int, progress: Any = None) -> dict[str, np.ndarray]:
        rows = []
        for row in self.render_images(self.s.shard_range(k)):
            rows.append(row)
            if progress is not None:
                progress(1)
        return {key: np.stack([r[key] for r in rows]) for key in rows[0]}

    def close(self) -> None:
        self.scene.close()


def _occluded(mask: np.ndarray, points: np.ndarray) -> np.ndarray:
    h, w = mask.shape
    p = np.floor(points).astype(np.int64)
    inside = (p[:, 0] >= 0) & (p[:, 0] < w) & (p[:, 1] >= 0) & (p[:, 1] < h)
    out = np.zeros(len(points), bool)
    out[inside] = mask[p[inside, 1], p[inside, 0]]
    return out


# -- worker processes -------------------------------------------------------------------------------
# Worker environment: one worker per core, so BLAS stays single-threaded and llvmpipe rasterises
# in the calling thread (LP_NUM_THREADS=0: no hand-off to a helper thread); and glibc
# keeps freed memory instead of returning it (large numpy temporaries would otherwise be
# mmap'd and zero-filled by the kernel on every image: ~15 % of a worker's time).
THREAD_ENV = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
              "NUMEXPR_NUM_THREADS": "1", "LP_NUM_THREADS": "0",
              "MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": "100000000000"}


def _die_with_parent() -> None:
    """Linux: get SIGKILLed when the parent dies, so a killed run leaves no orphan renderer."""
    with contextlib.suppress(Exception):
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _worker_main(worker_id: int, settings: RenderSettings, out_dir: str, log_path: str,
                 tasks: Any, results: Any, parent_pid: int) -> None:
    """Entry point of a worker process: render shards from ``tasks`` until a ``None``."""
    _die_with_parent()
    if os.getppid() != parent_pid:
        return
    # A spawned child inherits the parent's sys.path; if the parent had imported bpy, that holds
    # Blender's scripts/modules folder, whose inner ``bpy`` would shadow the real module here.
    sys.path[:] = [p for p in sys.path if not (os.sep + "bpy" + os.sep in p and "scripts" in p)]
    # Blender prints per-frame lines and EGL warnings: keep them out of the user's terminal.
    with open(log_path, "ab", buffering=0) as fh:
        os.dup2(fh.fileno(), 2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    logging.basicConfig(level=logging.INFO, format=f"worker{worker_id} %(levelname)s %(name)s: %(message)s")
    renderer = None
    try:
        if settings.views is not None:
            from .views import ViewShardRenderer

            renderer = ViewShardRenderer(settings, scratch_parent=Path(log_path).parent)
        else:
            renderer = ShardRenderer(settings, scratch_parent=Path(log_path).parent)
        results.put(("ready", worker_id, None))
        while True:
            k = tasks.get()
            if k is None:
                break
            arrays = renderer.render_shard(k, progress=lambda n: results.put(("progress", worker_id, n)))
            if os.getppid() != parent_pid:
                return  # orphaned: the new run will render this shard itself
            info = write_shard_file(out_dir, k, arrays)
            results.put(("done", worker_id, info))
        results.put(("exit", worker_id, None))
    except BaseException:  # noqa: BLE001 — report anything to the main process
        results.put(("error", worker_id, traceback.format_exc()))
        raise
    finally:
        if renderer is not None:
            renderer.close()


@contextlib.contextmanager
def _thread_env() -> Iterator[None]:
    """Workers are one per core: keep BLAS and llvmpipe single-threaded inside them."""
    old = {k: os.environ.get(k) for k in THREAD_ENV}
    os.environ.update(THREAD_ENV)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@dataclass
class RenderReport:
    """What a run did (returned to the CLI and the benchmark)."""

    out: Path
    rendered_images: int
    skipped_images: int
    total_images: int
    seconds: float
    images_per_second: float


def _ram_dir() -> Path | None:
    """``/dev/shm`` when writable (frames never touch the disk), else the default temp dir."""
    shm = Path("/dev/shm")
    return shm if shm.is_dir() and os.access(shm, os.W_OK) else None


def _clean_stale_run_dirs() -> None:
    """Remove run directories of runs that were killed outright (their main process is gone)."""
    import shutil

    base = _ram_dir() or Path(tempfile.gettempdir())
    for d in base.glob("facerig-synth-run-*-*"):
        try:
            pid = int(d.name.split("-")[3])
        except (IndexError, ValueError):
            continue
        if pid != os.getpid() and not _pid_alive(pid):
            shutil.rmtree(d, ignore_errors=True)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _clean_run_dir(run_dir: Path, keep_logs: bool) -> None:
    """Remove frame scratch files (also those of killed workers); logs stay after a failure."""
    import shutil

    for p in run_dir.iterdir():
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
        elif not keep_logs:
            p.unlink(missing_ok=True)
    if not keep_logs:
        with contextlib.suppress(OSError):
            run_dir.rmdir()


def _log_tail(path: Path, lines: int = 15) -> str:
    with contextlib.suppress(OSError):
        text = path.read_text(errors="replace").splitlines()
        useful = [t for t in text if "EGL" not in t and "Saved:" not in t]
        return "\n".join(useful[-lines:])
    return ""


def pending_shards(settings: RenderSettings, done: Any) -> Iterator[int]:
    """Shard indices still to render, generated lazily: ``--count`` may ask for 10¹⁴ images without
    the run holding a list of them (memory stays bounded by the shards in flight)."""
    return (k for k in range(settings.n_shards) if k not in done)


class ShardFeeder:
    """Hands out shard indices from a lazy iterator, at most ``depth`` ahead of what is finished, and
    knows which are outstanding; the local workers' queue and the Ray backend both draw from it."""

    def __init__(self, shards: Iterator[int], depth: int) -> None:
        self.shards, self.depth = shards, max(1, depth)
        self.outstanding: set[int] = set()
        self.exhausted = False

    def take(self) -> list[int]:
        """The next indices to hand out (until ``depth`` are outstanding)."""
        out = []
        while not self.exhausted and len(self.outstanding) < self.depth:
            k = next(self.shards, None)
            if k is None:
                self.exhausted = True
                break
            self.outstanding.add(k)
            out.append(k)
        return out

    def finished(self, k: int) -> None:
        self.outstanding.discard(k)

    @property
    def unfinished(self) -> bool:
        return bool(self.outstanding) or not self.exhausted


def render_corpus(settings: RenderSettings, out: Path | str, workers: int = 1, progress: bool = True,
                  startup_timeout: float = 300.0, ray: str | None = None) -> RenderReport:
    """Render (or resume/extend) a corpus in ``out`` with ``workers`` Blender processes, or on a Ray
    cluster (``ray``: ``auto`` or the head's address; ``synth.ray_render``). Either way the shards are
    byte-identical for the same settings, and a killed run resumes with the same command."""
    settings.validate()
    if workers < 1:
        raise ValueError(f"--workers must be at least 1, got {workers}")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"output {out} exists and is a file; give a directory")
    cluster = None
    if ray is not None:   # fail fast on an unreachable cluster, before the output folder is touched
        from .ray_render import connect

        cluster = connect(ray, num_cpus=workers)   # a new local instance gets --workers CPUs
    try:
        return _render_into(settings, out, workers, progress, startup_timeout, cluster)
    finally:
        if cluster is not None:
            cluster.close()


def _render_into(settings: RenderSettings, out: Path, workers: int, progress: bool, startup_timeout: float,
                 cluster: Any) -> RenderReport:
    """:func:`render_corpus` once the backend is chosen: open the corpus, render what is missing."""
    photos = list_photos(settings.backgrounds)
    model = FaceModel.load(settings.model_path)
    settings = replace(settings, model_path=model.path)
    extra = {k: (d, s) for k, (d, s) in EXTRA_KEYS.items()}
    writer = CorpusWriter(out, settings.size, settings.layout, settings.shard_size,
                          settings.generator(model, photos), extra_keys=extra, software=_software())
    t0 = time.perf_counter()
    try:
        done = writer.done
        have = sum(i.count for i in done.values())
        if have > settings.count:
            raise ValueError(f"{out} already holds {have} images, more than --count {settings.count}; "
                             "corpora only grow")
        for k, info in done.items():  # a partial tail shard of a smaller earlier run
            if k >= settings.n_shards or info.count != len(settings.shard_range(k)):
                writer.drop_shard(k)
        done = writer.done
        writer.set_requested(settings.count)
        skipped = sum(i.count for i in done.values())
        n_todo = settings.count - skipped           # every shard in ``done`` is complete and in range
        shards_todo = settings.n_shards - len(done)
        if skipped:
            log.info("resuming %s: %d images present, %d to render", out, skipped, n_todo)
        if not shards_todo:
            return RenderReport(out, 0, skipped, skipped, 0.0, 0.0)
        shards = pending_shards(settings, done)
        if cluster is not None:
            from .ray_render import render_on_ray

            rendered, seconds = render_on_ray(cluster, settings, photos, writer, shards, n_todo, progress)
        else:
            rendered, seconds = _render_local(settings, out, writer, shards, n_todo, min(workers, shards_todo),
                                              progress, startup_timeout)
        total = sum(i.count for i in writer.done.values())
        return RenderReport(out, rendered, skipped, total, seconds, rendered / max(seconds, 1e-9))
    finally:
        writer.close()
        log.debug("render_corpus finished in %.1f s", time.perf_counter() - t0)


def _render_local(settings: RenderSettings, out: Path, writer: CorpusWriter, shards: Iterator[int], n_todo: int,
                  n_workers: int, progress: bool, startup_timeout: float) -> tuple[int, float]:
    """Render the pending shards with ``n_workers`` spawned Blender processes; (images, seconds)."""
    import multiprocessing as mp

    from tqdm import tqdm

    ctx = mp.get_context("spawn")
    tasks, results = ctx.Queue(), ctx.Queue()
    feeder = ShardFeeder(shards, depth=2 * n_workers)
    closed = False

    def feed() -> None:
        nonlocal closed
        for k in feeder.take():
            tasks.put(k)
        if feeder.exhausted and not closed:   # then one stop sign per worker
            for _ in range(n_workers):
                tasks.put(None)
            closed = True

    feed()
    # One run directory (RAM if possible) for worker logs and frame scratch files.
    _clean_stale_run_dirs()
    logdir = Path(tempfile.mkdtemp(prefix=f"facerig-synth-run-{os.getpid()}-", dir=_ram_dir()))
    procs = []
    with _thread_env():
        for w in range(n_workers):
            proc = ctx.Process(target=_worker_main, name=f"facerig-synth-{w}", daemon=True,
                               args=(w, settings, str(out), str(logdir / f"worker{w}.log"), tasks, results,
                                     os.getpid()))
            proc.start()
            procs.append(proc)
    bar = tqdm(total=n_todo, unit="img", desc="render", disable=not progress, smoothing=0.1)
    rendered = 0
    t_start = time.perf_counter()
    last_event = last_check = time.perf_counter()
    ready = 0
    try:
        while feeder.unfinished:
            try:
                kind, wid, payload = results.get(timeout=0.5)
            except queue.Empty:
                kind, wid, payload = "", -1, None
            if kind == "ready":
                ready += 1
                if ready == 1:
                    t_start = time.perf_counter()
            elif kind == "progress":
                rendered += payload
                bar.update(payload)
            elif kind == "done":
                info: ShardInfo = payload
                writer.add_shard(info)
                feeder.finished(info.index)
                feed()
            elif kind == "error":
                raise RenderError(f"render worker {wid} failed; finished shards are kept — rerun the "
                                  f"same command to resume.\n{payload}")
            now = time.perf_counter()
            if kind:
                last_event = now
                if now - last_check < 1.0:
                    continue
            last_check = now
            for i, p in enumerate(procs):  # a killed worker sends nothing: look for it
                if not p.is_alive() and p.exitcode != 0:
                    tail = _log_tail(logdir / f"worker{i}.log")
                    raise RenderError(f"render worker {p.name} exited unexpectedly (code {p.exitcode}); "
                                      f"finished shards are kept — rerun the same command to resume "
                                      f"(worker logs: {logdir})" + (f"\n{tail}" if tail else ""))
            if not kind and feeder.unfinished and not any(p.is_alive() for p in procs) and results.empty():
                raise RenderError(f"render workers stopped with {len(feeder.outstanding)} shards missing; "
                                  "rerun the same command to resume")
            if not ready and time.perf_counter() - last_event > startup_timeout:
                raise RenderError(f"render workers did not start within {startup_timeout:.0f} s")
    finally:
        bar.close()
        unfinished = feeder.unfinished
        for p in procs:
            p.join(timeout=5.0 if not unfinished else 0.1)
            if p.is_alive():
                p.terminate()
                p.join(timeout=5.0)
        _clean_run_dir(logdir, keep_logs=unfinished)
    return rendered, time.perf_counter() - t_start
