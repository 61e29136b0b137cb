"""The photo runtime (``runtime/``) and ``facemodel``, under whichever names they have here.

The extension zip vendors both packages inside the add-on (Blender extensions must not touch
``sys.path``), a checkout imports the top-level ones; :mod:`runtime.fm` makes the same choice for
``facemodel``. The add-on is the bpy edge above the runtime: it imports it, never the other way round.
``load("pipeline")`` imports a runtime submodule on first use, so registering the add-on in Blender
does not load OpenCV, MediaPipe or onnxruntime.
"""

from __future__ import annotations

from importlib import import_module
from types import ModuleType

try:
    from . import runtime  # type: ignore[attr-defined]  # vendored copy (extension build)
except ImportError:
    import runtime


def load(name: str) -> ModuleType:
    """The runtime's submodule ``name`` (``"pipeline"``, ``"detect"``, …)."""
    return import_module(f"{runtime.__name__}.{name}")


facemodel = load("fm").facemodel


__all__ = ["facemodel", "load", "runtime"]
