"""One long-lived worker thread per purpose, for the second core inside one photo.

Why a module: the fit's Gram matrix (:mod:`.landmark_solver`) and the photo pipeline's second FaceMesh pass
(``runtime.pipeline``) each hand work to a second thread several times a photo. Starting a thread per call
costs more than the work, so each gets one pool of one worker, made on first use and kept; and a forked child
(a torch DataLoader worker, say) has none of its parent's threads but would find the parent's pool and wait on
it forever, so the pools are forgotten at fork and the child makes its own.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor

# Threads one photo uses by default: the second core where there is one. Batch workers (a photo per core) use 1.
PHOTO_THREADS = 2 if (os.cpu_count() or 1) >= 2 else 1

_POOLS: dict[str, ThreadPoolExecutor] = {}
_LOCK = threading.Lock()
os.register_at_fork(after_in_child=_POOLS.clear)


def side_thread(name: str) -> ThreadPoolExecutor:
    """The one-worker pool for ``name`` (its thread is called ``facerig-<name>``), made on first use."""
    with _LOCK:
        pool = _POOLS.get(name)
        if pool is None:
            pool = _POOLS[name] = ThreadPoolExecutor(1, thread_name_prefix=f"facerig-{name}")
        return pool


__all__ = ["PHOTO_THREADS", "side_thread"]
