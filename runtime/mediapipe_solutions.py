"""MediaPipe's legacy ``face_detection`` and ``face_mesh`` without the rest of MediaPipe.

Why: ``import mediapipe`` runs ``mediapipe/__init__.py``, which imports every legacy solution
(``drawing_utils`` needs matplotlib, ``objectron`` attrs) and the whole Tasks API (its audio module
needs sounddevice, cffi and the PortAudio library). The add-on uses two solutions whose own imports
are only MediaPipe's compiled bindings, its protobuf messages and numpy; importing them without
running those two package ``__init__`` files lets the extension zip leave matplotlib (and its
fonttools, kiwisolver, pyparsing, cycler, dateutil, packaging), sounddevice, cffi and attrs out —
about 17 MB per platform (``facerig addon build`` lists what the zip bundles).
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from types import ModuleType
from typing import Any

# Packages whose __init__ is deferred: it runs only if something else asks the package for more.
_EAGER_PACKAGES = ("mediapipe", "mediapipe.python.solutions")


def _deferred_package(name: str) -> None:
    """Put package ``name`` in ``sys.modules`` without running its ``__init__``.

    It is the module object a normal import would make (same spec, ``__path__``), so submodules
    import into it as usual. Anything else in Blender that imports ``mediapipe`` gets this object;
    its first look-up of a name the submodules did not set (``mediapipe.solutions``, ``tasks``,
    ``__version__``) runs the real ``__init__`` then, with the ImportError that would have come
    without this add-on if its dependencies are missing.
    """
    parent = name.rpartition(".")[0]
    if parent:
        importlib.import_module(parent)
    spec = importlib.util.find_spec(name)
    if spec is None or spec.loader is None:
        raise ImportError(f"No module named {name!r}", name=name)
    module = importlib.util.module_from_spec(spec)

    def complete(attr: str) -> Any:
        if attr.startswith("__") and attr != "__version__":
            raise AttributeError(attr)
        del module.__dict__["__getattr__"]   # once: the real __init__ defines the rest
        spec.loader.exec_module(module)
        return getattr(module, attr)

    module.__dict__["__getattr__"] = complete
    sys.modules[name] = module


def legacy_face_solutions() -> tuple[ModuleType, ModuleType]:
    """``(face_detection, face_mesh)`` from ``mediapipe.python.solutions``; ImportError without MediaPipe."""
    for name in _EAGER_PACKAGES:
        if name not in sys.modules:
            _deferred_package(name)
    return (importlib.import_module("mediapipe.python.solutions.face_detection"),
            importlib.import_module("mediapipe.python.solutions.face_mesh"))


__all__ = ["legacy_face_solutions"]
