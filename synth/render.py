"""Corpus rendering: open (or resume) a corpus and render what it lacks, locally or on Ray.

The main process never imports bpy: it owns the :class:`synth.corpus.CorpusWriter` (the only
writer of the manifest) and hands shard indices to worker processes (:mod:`synth.workers`) or Ray
actors (:mod:`synth.ray_render`), each holding a :class:`synth.shards.ShardRenderer`. A killed run
loses at most the shards in flight, and rerunning the same command renders exactly the missing ones.
The settings and the per-image labels live in :mod:`synth.shards` and :mod:`synth.labels`; their
names are re-exported here, the module callers know.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from facemodel import FaceModel

from .augment import list_photos
from .corpus import CorpusWriter
from .labels import image_rngs, image_seed, landmark_visibility
from .shards import (EXTRA_KEYS, RenderError, RenderSettings, ShardFeeder, ShardRenderer, pending_shards,
                     software_versions)
from .workers import THREAD_ENV, render_local

log = logging.getLogger(__name__)


@dataclass
class RenderReport:
    """What a run did (returned to the CLI and the benchmark)."""

    out: Path
    rendered_images: int
    skipped_images: int
    total_images: int
    seconds: float
    images_per_second: float


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
                          settings.generator(model, photos), extra_keys=extra, software=software_versions())
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
            rendered, seconds = render_local(settings, out, writer, shards, n_todo, min(workers, shards_todo),
                                              progress, startup_timeout)
        total = sum(i.count for i in writer.done.values())
        return RenderReport(out, rendered, skipped, total, seconds, rendered / max(seconds, 1e-9))
    finally:
        writer.close()
        log.debug("render_corpus finished in %.1f s", time.perf_counter() - t0)


__all__ = ["EXTRA_KEYS", "RenderError", "RenderReport", "RenderSettings", "ShardFeeder", "ShardRenderer", "THREAD_ENV",
           "image_rngs", "image_seed", "landmark_visibility", "pending_shards", "render_corpus"]
