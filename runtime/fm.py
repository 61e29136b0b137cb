"""Where ``facemodel`` and the shipped models come from, in a checkout and inside the Blender extension.

The extension zip carries ``facemodel/`` and ``runtime/`` inside the add-on package (Blender extensions
must not touch ``sys.path``), so there the face model package is this package's sibling; a checkout or
an installed facerig imports the top-level package. The ONNX models and the corrective-field basis stay
in the add-on's ``models/`` folder either way (``blender_addon/models`` here, ``<extension>/models``
there), where the docs, the tests and the extension's users find them.
"""

from __future__ import annotations

from pathlib import Path

try:
    from .. import facemodel  # type: ignore[attr-defined]  # vendored copy (extension build)

    ADDON_DIR = Path(__file__).resolve().parents[1]
except ImportError:   # top-level package: "attempted relative import beyond top-level package"
    import facemodel

    ADDON_DIR = Path(__file__).resolve().parents[1] / "blender_addon"

MODELS_DIR = ADDON_DIR / "models"

# ICT-FaceKit Light's corrective-field basis, precomputed (`facerig model harmonics --bundle
# blender_addon/models`): Blender's Python has no scipy to compute it.
facemodel.harmonics.add_search_dir(MODELS_DIR)

__all__ = ["ADDON_DIR", "MODELS_DIR", "facemodel"]
