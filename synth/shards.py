"""One shard of a corpus: the settings that determine its content and the renderer that makes it.

A :class:`ShardRenderer` lives in a worker (a local process, :mod:`synth.workers`, or a Ray actor,
:mod:`synth.ray_render`): it samples parameters, forms the faces in numpy, renders them with Blender
(:mod:`synth.blender_scene`, imported only there) and labels them (:mod:`synth.labels`).

Determinism: image ``i`` is a pure function of the generator settings and
``seeds[i] = image_seed(seed, i)``; shard ``k`` holds images ``k·shard_size …``. Worker count,
interruption and resumption therefore never change the corpus content.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator

import cv2
import numpy as np

from facemodel import FaceModel, FaceParams, ParamLayout
from facemodel.formation import mesh_camera_space, project_to_image
from facemodel.priors import PoseRange, sample_albedo, sample_params

from .augment import AugmentConfig, Augmenter, list_photos
from .labels import (VISIBILITY_TOLERANCE_CM, VertexShading, draw_polygons, image_rngs, image_seed,
                     landmark_visibility, neck_opening_visible, neck_ring, occluded)

log = logging.getLogger(__name__)

ENGINE_NAMES = ("workbench", "cycles")

WORKBENCH_AA = ("OFF", "FXAA", "5", "8", "11", "16", "32")

MIN_SIZE, MAX_SIZE = 32, 2048

BATCH = 16                   # faces formed together in numpy (amortises the basis concatenation)

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
            d["views"] = self.views.generator_entry()
            # pixels come from photos: SH/albedo labels do not describe them (geometry labels do)
            d["appearance_labels"] = False
        d["augment"] = self.augment.to_dict()
        d["pose_prior_deg"] = {"yaw": self.yaw_max, "pitch": self.pitch_max, "roll": self.roll_max}
        d["backgrounds"] = {"dir": str(Path(self.backgrounds).resolve()) if self.backgrounds else None,
                            "count": len(photos),
                            "names_sha256": hashlib.sha256("\n".join(p.name for p in photos).encode()).hexdigest()}
        d["face_model"] = {"file": model.path.name if model.path else None, "sha256": _file_sha256(model.path)}
        d["layout_version"] = LAYOUT_VERSION
        d["blender"] = software_versions().get("bpy")  # rasterisation may change between Blender releases
        d["visibility"] = ("self-occlusion: a landmark is visible when a render-depth pixel within "
                           f"±{self.supersample} render px is no more than {VISIBILITY_TOLERANCE_CM} cm in "
                           "front of it and it lies inside the image; synthetic occluders are reported "
                           "separately in 'occluded'")
        d["masks"] = "1 where the rendered head (alpha ≥ 0.5) is seen and not covered by an occluder"
        d["seeds"] = "image_seed(seed, i) = SeedSequence([seed, i]); params and augmentation streams spawn from it"
        return d


def software_versions() -> dict[str, str]:
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
                               scratch_parent=scratch_parent or ram_dir())
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
                "visibility_visible_jaw": vis_jaw, "occluded": occluded(aug.occluder, lm),
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


def make_renderer(settings: RenderSettings, scratch_parent: Path | None = None) -> ShardRenderer:
    """The shard renderer ``settings`` ask for: views of reconstructions bring their own
    (``settings.views.renderer``, :class:`synth.views.ViewShardRenderer`), else prior samples. Passed in
    through the settings, so the workers here and the Ray actors never import :mod:`synth.views`."""
    cls = settings.views.renderer if settings.views is not None else ShardRenderer
    return cls(settings, scratch_parent=scratch_parent)


def ram_dir() -> Path | None:
    """``/dev/shm`` when writable (frames never touch the disk), else the default temp dir."""
    shm = Path("/dev/shm")
    return shm if shm.is_dir() and os.access(shm, os.W_OK) else None


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

    def take(self, limit: int | None = None) -> list[int]:
        """The next indices to hand out (until ``depth`` are outstanding; at most ``limit`` of them)."""
        out = []
        while not self.exhausted and len(self.outstanding) < self.depth and (limit is None or len(out) < limit):
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
