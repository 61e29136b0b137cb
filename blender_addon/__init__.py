"""facerig Blender extension: one photo → a rigged, textured ICT-FaceKit head with ARKit shape keys.

Importable without Blender: the photo pipeline (``photo``, ``detect``, ``regressor``,
``pipeline``, ``texture``, ``rig``) needs only numpy, OpenCV, onnxruntime and MediaPipe; bpy is
imported by ``build_mesh``, ``operators`` and ``ui``, which :func:`register` loads lazily.
"""

from __future__ import annotations


def register() -> None:
    """Blender entry point: register operators, preferences and the "Face" sidebar panel."""
    from . import operators, rig_operators, ui

    operators.register()
    ui.register()
    rig_operators.register()


def unregister() -> None:
    from . import operators, rig_operators, ui

    rig_operators.unregister()
    ui.unregister()
    operators.unregister()
