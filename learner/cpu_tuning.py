"""Process settings that make CPU training ~3–4× faster on this class of machine.

glibc returns every large freed block to the OS (``mmap``/``trim``), so each training step
page-faults its activations in again. ``MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=1e11`` stop
that. glibc reads those variables once at start-up, so setting ``os.environ`` from Python is
too late for the running process: :func:`configure_runtime` calls ``mallopt`` directly (same
effect, measured 87 → 256 images/s) and also exports the variables for child processes.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os

import torch

log = logging.getLogger(__name__)
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
MALLOC_ENV = {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": "100000000000"}


def tune_malloc() -> bool:
    """Keep freed memory in the heap (no mmap for big blocks, no trimming). False if not glibc."""
    for k, v in MALLOC_ENV.items():
        os.environ.setdefault(k, v)
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        ok = libc.mallopt(M_MMAP_MAX, 0) == 1 and libc.mallopt(M_TRIM_THRESHOLD, 2**31 - 1) == 1
    except (OSError, AttributeError):
        ok = False
    if not ok:
        log.warning("could not tune malloc (not glibc?); CPU training may be several times slower")
    return ok


def configure_runtime(threads: int = 2) -> None:
    """malloc tuning plus a fixed torch thread count (results are reproducible per thread count)."""
    tune_malloc()
    if threads > 0:
        torch.set_num_threads(threads)
