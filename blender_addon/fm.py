"""Where ``facemodel`` comes from: the copy vendored into the extension, else the installed one.

The extension zip carries ``facemodel/`` inside the add-on package (Blender extensions must
not touch ``sys.path``), while a development checkout imports the top-level package.
"""

from __future__ import annotations

try:
    from . import facemodel  # type: ignore[attr-defined]  # vendored copy (extension build)
except ImportError:
    import facemodel

__all__ = ["facemodel"]
