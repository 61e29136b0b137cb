"""Where ``facemodel`` comes from: the copy vendored into the extension, else the installed one.

The extension zip carries ``facemodel/`` inside the add-on package (Blender extensions must
not touch ``sys.path``), while a development checkout imports the top-level package.
"""

from __future__ import annotations

from pathlib import Path

try:
    from . import facemodel  # type: ignore[attr-defined]  # vendored copy (extension build)
except ImportError:
    import facemodel

# ICT-FaceKit Light's corrective-field basis, precomputed (`facerig model harmonics --bundle
# blender_addon/models`): Blender's Python has no scipy to compute it.
facemodel.harmonics.add_search_dir(Path(__file__).resolve().parent / "models")

__all__ = ["facemodel"]
