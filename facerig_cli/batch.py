"""``facerig reconstruct`` over many photos, one by one or on ``--workers`` processes.

Why processes: the photo pipeline is single-threaded Python around MediaPipe, onnxruntime and the numpy
fit, so one process per core is what fills a machine for batch users (datasets of photos, video frames).
Each worker loads the regressor, MediaPipe and the face model once and then takes photos one at a time;
a photo is reconstructed exactly as in the serial loop (nothing carries over from one photo to the next),
so the files written are the same. Outcomes come back in the photos' order; a photo that fails
(unreadable, no face, …) comes back as its one-line reason, and the others go on.
"""

from __future__ import annotations

import argparse
import multiprocessing
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_WORKER_ARGS: argparse.Namespace | None = None   # the command's options, in a worker process


@dataclass(frozen=True)
class Outcome:
    """What became of one photo (picklable: it travels back from a worker)."""

    photo: Path
    out: Path
    seconds: float
    error: Exception | None = None          # the PhotoError that made it skip the photo
    faces: list[str] = field(default_factory=list)   # every face found, described, largest first
    face_index: int = 0


def reconstruct_one(photo: Path, out: Path, args: argparse.Namespace, catch: bool = True) -> Outcome:
    """One photo through :func:`reconstruct.reconstruct_to_file`; with ``catch`` a ``PhotoError`` (this
    photo's problem) becomes the outcome's ``error`` instead of propagating."""
    from runtime.photo import PhotoError

    from .reconstruct import reconstruct_to_file

    t = time.perf_counter()
    try:
        recon = reconstruct_to_file(photo, out, args)["_recon"]
    except PhotoError as exc:
        if not catch:
            raise
        return Outcome(photo, out, time.perf_counter() - t, error=exc)
    return Outcome(photo, out, time.perf_counter() - t, faces=[f.describe() for f in recon.faces],
                   face_index=recon.face_index)


def _worker_regressor(model: Any) -> Any:
    """The regressor a worker uses (the pipeline's: one onnxruntime thread, the workers fill the cores)."""
    from runtime.pipeline import get_regressor

    return get_regressor(model)


def _start_worker(args: argparse.Namespace) -> None:
    global _WORKER_ARGS
    from runtime.pipeline import set_photo_threads

    set_photo_threads(1)   # a photo per core: no second thread inside a photo
    _WORKER_ARGS = argparse.Namespace(**{**vars(args), "model": _worker_regressor(args.model)})


def _work(photo: Path, out: Path) -> Outcome:
    assert _WORKER_ARGS is not None, "worker not started"
    return reconstruct_one(photo, out, _WORKER_ARGS)


def reconstruct_all(photos: list[Path], outs: list[Path], args: argparse.Namespace, workers: int = 1
                    ) -> Iterator[Outcome]:
    """The outcome of every photo, in order; ``workers`` > 1 runs them on that many processes (spawned:
    MediaPipe and onnxruntime threads do not survive a fork)."""
    if workers < 1:
        raise ValueError(f"--workers must be at least 1, got {workers}")
    if workers == 1 or len(photos) == 1:
        for photo, out in zip(photos, outs):
            yield reconstruct_one(photo, out, args, catch=len(photos) > 1)
        return
    _worker_regressor(args.model)   # a missing or broken model: its one-line error here, not a broken pool
    picklable = argparse.Namespace(**{k: v for k, v in vars(args).items() if k != "func"})
    with ProcessPoolExecutor(min(workers, len(photos)), mp_context=multiprocessing.get_context("spawn"),
                             initializer=_start_worker, initargs=(picklable,)) as pool:
        yield from pool.map(_work, photos, outs)


def describe_rate(count: int, seconds: float, workers: int) -> str:
    """The batch's throughput line."""
    rate = count / seconds if seconds > 0 else float("inf")
    return f"{count} photos in {seconds:.1f} s: {rate:.2f} photos/s ({workers} worker{'s' * (workers > 1)})"


def check_batch_options(args: Any, formats: tuple[str, ...]) -> None:
    """``--workers`` > 1 writes parameters (.json) of photos reconstructed one by one: mesh formats are built
    in Blender (one scene per process) and ``--same-person`` is one reconstruction."""
    if args.workers > 1 and args.same_person:
        raise ValueError("--workers applies to photos reconstructed one by one, not to --same-person")
    if args.workers > 1 and any(suffix != ".json" for suffix in formats):
        raise ValueError("--workers > 1 writes .json parameters only (mesh formats are built one at a time "
                         "in Blender); use --format json")
