"""Array-namespace dispatch so one copy of the image-formation maths serves numpy and torch.

facemodel never imports torch. When the learner passes torch tensors, the functions here
find the already-imported torch module through ``sys.modules`` and use it; otherwise numpy.
Only operations spelled identically in both libraries are used by callers
(``xp.stack``, ``xp.sin``, ``xp.cross``-free maths, method calls such as ``.sum(-1)``).
"""

from __future__ import annotations

import sys
from types import ModuleType
from typing import Any

import numpy as np


def is_torch(x: Any) -> bool:
    return type(x).__module__.startswith("torch")


def namespace(*arrays: Any) -> ModuleType:
    """numpy, or torch if any argument is a torch tensor."""
    for a in arrays:
        if is_torch(a):
            return sys.modules["torch"]
    return np


def asarray_like(value: Any, like: Any) -> Any:
    """Convert a numpy constant to the array type, dtype and device of ``like``."""
    if is_torch(like):
        torch = sys.modules["torch"]
        return torch.as_tensor(np.asarray(value), dtype=like.dtype, device=like.device)
    return np.asarray(value, dtype=like.dtype if hasattr(like, "dtype") else None)


def cross(a: Any, b: Any) -> Any:
    """Cross product on the last axis (numpy and torch disagree on the default axis)."""
    ax, ay, az = a[..., 0], a[..., 1], a[..., 2]
    bx, by, bz = b[..., 0], b[..., 1], b[..., 2]
    xp = namespace(a, b)
    return xp.stack([ay * bz - az * by, az * bx - ax * bz, ax * by - ay * bx], -1)


def normalize(v: Any, eps: float = 1e-12) -> Any:
    """Unit vectors on the last axis; zero vectors stay zero."""
    xp = namespace(v)
    n = xp.sqrt((v * v).sum(-1))[..., None]
    return v / (n + eps)
