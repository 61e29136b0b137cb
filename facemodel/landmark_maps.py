"""Index maps from other landmark schemes onto the iBUG/Multi-PIE 68 points facerig uses.

``MEDIAPIPE_TO_68``: one MediaPipe FaceMesh (468-point) vertex per iBUG point. Shared by the
add-on's detector (``blender_addon.detect``: the 68 points define the canonical crop box) and the
MediaPipe peer baseline (``evaluation.mediapipe_baseline``), so both use one documented table.
It was derived from MediaPipe's published semantic connection sets and ICT-FaceKit's own
Multi-PIE-68 vertices on a mean FaceMesh shape of non-test photos; no 68-point annotation of any
dataset was used. ``python -m evaluation.mediapipe_baseline derive`` reproduces it; the full
provenance is in that module's docstring.
"""

from __future__ import annotations

# fmt: off
MEDIAPIPE_TO_68: tuple[int, ...] = (
    # jaw 0-16 (FACEMESH_FACE_OVAL)
    162, 127, 93, 132, 172, 150, 149, 148, 152, 377, 378, 379, 397, 361, 323, 356, 389,
    # right brow 17-21, left brow 22-26 (FACEMESH_RIGHT/LEFT_EYEBROW: the upper edge)
    70, 63, 105, 66, 107, 336, 296, 334, 293, 300,
    # nose bridge 27-30, lower nose 31-35 (FACEMESH_NOSE)
    168, 197, 195, 4, 98, 97, 2, 326, 327,
    # right eye 36-41, left eye 42-47 (FACEMESH_RIGHT/LEFT_EYE)
    33, 160, 158, 133, 153, 144, 362, 385, 387, 263, 373, 380,
    # outer lips 48-59, inner lips 60-67 (the two loops of FACEMESH_LIPS)
    61, 39, 37, 0, 267, 269, 291, 405, 314, 17, 84, 181,
    78, 81, 13, 311, 308, 402, 14, 178,
)
# fmt: on
