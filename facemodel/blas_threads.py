"""Run small dense solves on one BLAS thread.

The landmark fit solves a ~120×120 system ten times per photo. OpenBLAS spreads even that over
all cores, and next to MediaPipe's own threads on a 2-core machine the hand-offs cost more than
the arithmetic: 44 ms per fit inside the pipeline against 15–18 ms on one thread (``facerig bench``).
``threadpoolctl`` would do this but is not a dependency; numpy's bundled OpenBLAS exports
``openblas_set_num_threads`` (with an ILP64 suffix in the pip wheels), which is all it takes.
Where no such library is found (another BLAS, e.g. Accelerate or MKL) the context is a no-op.
"""
from __future__ import annotations

import contextlib
import ctypes
import logging
import threading
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

_SUFFIXES = ("64_", "_64_", "")
_lock = threading.RLock()   # re-entrant: a fit may call another fit


class _OpenBlasThreads:
    """get/set of one loaded OpenBLAS library's thread count."""

    def __init__(self, lib: ctypes.CDLL, suffix: str) -> None:
        self._get = getattr(lib, f"openblas_get_num_threads{suffix}")
        self._set = getattr(lib, f"openblas_set_num_threads{suffix}")
        self._get.restype = ctypes.c_int
        self._get.argtypes = []
        self._set.restype = None
        self._set.argtypes = [ctypes.c_int]

    def get(self) -> int:
        return int(self._get())

    def set(self, n: int) -> None:
        self._set(int(n))


def _candidate_libraries() -> list[Path]:
    """OpenBLAS copies a numpy wheel bundles (Linux ``numpy.libs``, Windows ``.libs``, macOS ``.dylibs``)."""
    pkg = Path(np.__file__).resolve().parent
    dirs = [pkg.parent / "numpy.libs", pkg / ".libs", pkg / ".dylibs"]
    return sorted(p for d in dirs if d.is_dir() for p in d.iterdir() if "openblas" in p.name.lower())


@lru_cache(maxsize=1)
def numpy_openblas() -> _OpenBlasThreads | None:
    """numpy's OpenBLAS thread control, or None when numpy does not use a bundled OpenBLAS."""
    for path in _candidate_libraries():
        try:
            lib = ctypes.CDLL(str(path))   # already loaded by numpy: the same handle
        except OSError as err:
            log.debug("cannot open %s: %s", path, err)
            continue
        for suffix in _SUFFIXES:
            if hasattr(lib, f"openblas_set_num_threads{suffix}") and hasattr(lib, f"openblas_get_num_threads{suffix}"):
                return _OpenBlasThreads(lib, suffix)
    log.debug("no bundled OpenBLAS found next to numpy; BLAS thread count left alone")
    return None


@contextlib.contextmanager
def single_blas_thread() -> Iterator[None]:
    """Inside the block numpy's OpenBLAS uses one thread; the previous count is restored after."""
    blas = numpy_openblas()
    if blas is None:
        yield
        return
    with _lock:   # the setting is process-wide: serialise so concurrent callers restore correctly
        before = blas.get()
        blas.set(1)
        try:
            yield
        finally:
            blas.set(before)
