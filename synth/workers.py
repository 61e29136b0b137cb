"""Local worker processes of a render: one Blender per process, started with ``spawn``.

Each worker renders whole shards and writes them atomically itself (:func:`synth.corpus.write_shard_file`),
then reports the checksum to the main process, which records it — so a killed run loses at most the
shards in flight, and rerunning the same command renders exactly the missing ones.

Each worker talks to the main process over its own pipe (shard numbers in, reports out), not through
``multiprocessing`` queues: a queue's locks are named POSIX semaphores in ``/dev/shm`` that stay there
when the run and its resource tracker are killed together (``kill -9`` of the process group); a pipe is
gone with its processes.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Iterator

from facemodel.outputs import pid_alive

from .corpus import CorpusWriter, ShardInfo, write_shard_file
from .shards import RenderError, RenderSettings, ShardFeeder, ram_dir, make_renderer

log = logging.getLogger(__name__)

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
                 conn: Any, parent_pid: int) -> None:
    """Entry point of a worker process: render the shards ``conn`` sends until a ``None``, and report
    ``(kind, worker_id, payload)`` on it."""
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
        renderer = make_renderer(settings, scratch_parent=Path(log_path).parent)
        conn.send(("ready", worker_id, None))
        while True:
            k = conn.recv()
            if k is None:
                break
            arrays = renderer.render_shard(k, progress=lambda n: conn.send(("progress", worker_id, n)))
            if os.getppid() != parent_pid:
                return  # orphaned: the new run will render this shard itself
            info = write_shard_file(out_dir, k, arrays)
            conn.send(("done", worker_id, info))
        conn.send(("exit", worker_id, None))
    except BaseException:  # noqa: BLE001 — report anything to the main process
        with contextlib.suppress(OSError):
            conn.send(("error", worker_id, traceback.format_exc()))
        raise
    finally:
        if renderer is not None:
            renderer.close()


@contextlib.contextmanager
def thread_env() -> Iterator[None]:
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


def _clean_stale_run_dirs() -> None:
    """Remove run directories of runs that were killed outright (their main process is gone)."""
    import shutil

    base = ram_dir() or Path(tempfile.gettempdir())
    for d in base.glob("facerig-synth-run-*-*"):
        try:
            pid = int(d.name.split("-")[3])
        except (IndexError, ValueError):
            continue
        if not pid_alive(pid):
            shutil.rmtree(d, ignore_errors=True)


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


def render_local(settings: RenderSettings, out: Path, writer: CorpusWriter, shards: Iterator[int], n_todo: int,
                 n_workers: int, progress: bool, startup_timeout: float) -> tuple[int, float]:
    """Render the pending shards with ``n_workers`` spawned Blender processes; (images, seconds)."""
    import multiprocessing as mp

    from tqdm import tqdm

    from multiprocessing.connection import wait

    ctx = mp.get_context("spawn")
    feeder = ShardFeeder(shards, depth=2 * n_workers)
    # One run directory (RAM if possible) for worker logs and frame scratch files.
    _clean_stale_run_dirs()
    logdir = Path(tempfile.mkdtemp(prefix=f"facerig-synth-run-{os.getpid()}-", dir=ram_dir()))
    procs, conns = [], []
    with thread_env():
        for w in range(n_workers):
            ours, theirs = ctx.Pipe(duplex=True)
            proc = ctx.Process(target=_worker_main, name=f"facerig-synth-{w}", daemon=True,
                               args=(w, settings, str(out), str(logdir / f"worker{w}.log"), theirs, os.getpid()))
            proc.start()
            theirs.close()   # the child holds its end: our copy would keep the pipe open after the child died
            procs.append(proc)
            conns.append(ours)
    assigned = [0] * n_workers   # shards sent to each worker and not yet reported done
    stopped = [False] * n_workers

    def feed() -> None:
        """Top each worker up to two shards (the feeder's depth); a stop sign to all once none are left."""
        for w in sorted(range(n_workers), key=lambda i: assigned[i]):
            if stopped[w] or assigned[w] >= 2:
                continue
            for k in feeder.take(limit=2 - assigned[w]):
                _send(w, k)
                assigned[w] += 1
        if feeder.exhausted:
            for w in range(n_workers):
                if not stopped[w]:
                    _send(w, None)
                    stopped[w] = True

    def _send(w: int, message: Any) -> None:
        with contextlib.suppress(OSError):   # a dead worker is reported by the liveness check below
            conns[w].send(message)

    def receive(timeout: float) -> list[tuple[str, int, Any]]:
        messages = []
        for c in wait([c for c in conns if not c.closed], timeout=timeout):
            try:
                messages.append(c.recv())
            except (EOFError, OSError):   # the worker is gone: its exit code says how
                c.close()
        return messages

    feed()
    bar = tqdm(total=n_todo, unit="img", desc="render", disable=not progress, smoothing=0.1)
    rendered = 0
    t_start = time.perf_counter()
    last_event = last_check = time.perf_counter()
    ready = 0
    try:
        while feeder.unfinished:
            messages = receive(0.5) or [("", -1, None)]
            for kind, wid, payload in messages:
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
                    assigned[wid] -= 1
                    feed()
                elif kind == "error":
                    raise RenderError(f"render worker {wid} failed; finished shards are kept — rerun the "
                                      f"same command to resume.\n{payload}")
            kind = messages[-1][0]
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
            if not kind and feeder.unfinished and not any(p.is_alive() for p in procs):
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
        for c in conns:
            c.close()
        _clean_run_dir(logdir, keep_logs=unfinished)
    return rendered, time.perf_counter() - t_start
