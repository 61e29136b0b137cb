"""Run small dense solves on one BLAS thread.

The landmark fit solves a ~120×120 system ten times per photo. OpenBLAS spreads even that over
all cores, and next to MediaPipe's own threads on a 2-core machine the hand-offs cost more than
the arithmetic: 44 ms per fit inside the pipeline against 15–18 ms on one thread (``facerig bench``).
``threadpoolctl`` would do this but is not a dependency; numpy's bundled OpenBLAS exports
``openblas_set_num_threads`` (with an ILP64 suffix in the pip wheels), which is all it takes. The
fit's Cholesky and Gram matrix come from scipy's LAPACK when scipy is installed, and scipy's wheels
bundle their own OpenBLAS (``scipy_openblas_set_num_threads``): both are steered.
Where no such library is found (another BLAS, e.g. Accelerate or MKL) the context is a no-op.
"""
from __future__ import annotations

import contextlib
import ctypes
import logging
import threading
import importlib.util
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

_SUFFIXES = ("64_", "_64_", "")
_PREFIXES = ("openblas", "scipy_openblas")
_lock = threading.RLock()   # re-entrant: a fit may call another fit


class _OpenBlasThreads:
    """get/set of one loaded OpenBLAS library's thread count."""

    def __init__(self, lib: ctypes.CDLL, prefix: str, suffix: str) -> None:
        self._get = getattr(lib, f"{prefix}_get_num_threads{suffix}")
        self._set = getattr(lib, f"{prefix}_set_num_threads{suffix}")
        self._get.restype = ctypes.c_int
        self._get.argtypes = []
        self._set.restype = None
        self._set.argtypes = [ctypes.c_int]

    def get(self) -> int:
        return int(self._get())

    def set(self, n: int) -> None:
        self._set(int(n))


def _candidate_libraries(package_dir: Path) -> list[Path]:
    """OpenBLAS copies a wheel bundles next to its package (Linux ``<name>.libs``, Windows ``.libs``,
    macOS ``.dylibs``)."""
    dirs = [package_dir.parent / f"{package_dir.name}.libs", package_dir / ".libs", package_dir / ".dylibs"]
    return sorted(p for d in dirs if d.is_dir() for p in d.iterdir() if "openblas" in p.name.lower())


def _openblas_in(package_dir: Path) -> _OpenBlasThreads | None:
    for path in _candidate_libraries(package_dir):
        try:
            lib = ctypes.CDLL(str(path))   # already loaded by the package: the same handle
        except OSError as err:
            log.debug("cannot open %s: %s", path, err)
            continue
        for prefix in _PREFIXES:
            for suffix in _SUFFIXES:
                if hasattr(lib, f"{prefix}_set_num_threads{suffix}") and hasattr(lib, f"{prefix}_get_num_threads{suffix}"):
                    return _OpenBlasThreads(lib, prefix, suffix)
    return None


@lru_cache(maxsize=1)
def numpy_openblas() -> _OpenBlasThreads | None:
    """numpy's OpenBLAS thread control, or None when numpy does not use a bundled OpenBLAS."""
    found = _openblas_in(Path(np.__file__).resolve().parent)
    if found is None:
        log.debug("no bundled OpenBLAS found next to numpy; BLAS thread count left alone")
    return found


@lru_cache(maxsize=1)
def scipy_openblas() -> _OpenBlasThreads | None:
    """The OpenBLAS scipy's wheel bundles (a second copy, with its own threads), or None (no scipy, or
    one built against a system BLAS)."""
    spec = importlib.util.find_spec("scipy")
    if spec is None or not spec.submodule_search_locations:
        return None
    return _openblas_in(Path(list(spec.submodule_search_locations)[0]).resolve())


@contextlib.contextmanager
def single_blas_thread() -> Iterator[None]:
    """Inside the block numpy's and scipy's OpenBLAS use one thread; the previous counts are restored after."""
    libraries = [lib for lib in (numpy_openblas(), scipy_openblas()) if lib is not None]
    if not libraries:
        yield
        return
    with _lock:   # the setting is process-wide: serialise so concurrent callers restore correctly
        before = [lib.get() for lib in libraries]
        for lib in libraries:
            lib.set(1)
        try:
            yield
        finally:
            for lib, count in zip(libraries, before):
                lib.set(count)
