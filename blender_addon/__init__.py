"""facerig Blender extension: one photo → a rigged, textured ICT-FaceKit head with ARKit shape keys.

The bpy edge of facerig: the photo pipeline it calls is the bpy-free ``runtime`` package (vendored inside
the extension, found through ``rt``); bpy is imported by ``build_mesh``, ``operators`` and ``ui``, which
:func:`register` loads lazily, so this package (and ``rig``) import without Blender.
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
