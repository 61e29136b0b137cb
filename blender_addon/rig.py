"""Armature layout and skin weights for an ICT head (numpy; the bpy side only copies them).

Bones (model space, cm, +y up, face looking +z), all derived from the identity-applied mesh
so they follow the reconstructed head:

* ``root``  at the base of the neck, pointing up; carries nothing (moves the whole rig);
* ``neck``  base of the neck → skull base; bends the neck;
* ``head``  skull base → crown; everything above the neck that is not jaw or eyes;
* ``jaw``   hinge (in front of the ears, at the 68-point jaw top) → chin; weights follow ICT's
  own ``jawOpen`` blendshape: a vertex moves with the jaw as much as jawOpen moves it
  relative to the chin, which gives the lower teeth, tongue, chin and lower lip exactly and
  a smooth falloff over the cheeks;
* ``eye.L`` / ``eye.R`` at each eyeball centre, pointing forward (character's left = +x).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .fm import facemodel

BONES = ("root", "neck", "head", "jaw", "eye.L", "eye.R")


@dataclass
class RigLayout:
    """Bone heads/tails (model space, cm), parents and per-vertex weights per bone."""

    heads: dict[str, np.ndarray]
    tails: dict[str, np.ndarray]
    parents: dict[str, str | None]
    weights: dict[str, np.ndarray]       # bone → (V,) float32; rows sum to 1 over deforming bones


def _smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3 - 2 * x)


def rig_layout(model: "facemodel.FaceModel", vertices: np.ndarray) -> RigLayout:
    """Bones and weights for the identity-applied rest mesh ``vertices`` (V, 3) in cm."""
    v = np.asarray(vertices, np.float64)
    lm = model.landmark_indices()
    eye_l = v[model.vertex_range("eyeball_left")].mean(0)
    eye_r = v[model.vertex_range("eyeball_right")].mean(0)
    chin = v[lm[8]]
    hinge = 0.5 * (v[lm[0]] + v[lm[16]])                     # between the ears, at the jaw top
    hinge = np.array([0.0, hinge[1] - 1.0, hinge[2] - 1.5])
    head_neck = v[model.vertex_range("head_neck")]
    y_bottom = float(head_neck[:, 1].min())
    y_top = float(v[:, 1].max())
    neck_z = float(np.median(head_neck[head_neck[:, 1] < y_bottom + 3.0][:, 2]))
    neck_base = np.array([0.0, y_bottom, neck_z])
    skull_base = np.array([0.0, chin[1] + 0.5 * (hinge[1] - chin[1]), neck_z + 1.0])
    heads = {"root": neck_base, "neck": neck_base, "head": skull_base, "jaw": hinge,
             "eye.L": eye_l, "eye.R": eye_r}
    tails = {"root": neck_base + [0.0, 0.0, -4.0], "neck": skull_base, "head": np.array([0.0, y_top, skull_base[2]]),
             "jaw": chin, "eye.L": eye_l + [0.0, 0.0, 2.0], "eye.R": eye_r + [0.0, 0.0, 2.0]}
    parents = {"root": None, "neck": "root", "head": "neck", "jaw": "head", "eye.L": "head", "eye.R": "head"}

    n = len(v)
    jaw_idx = model.expression_names.index("jawOpen")
    disp = np.linalg.norm(model.expression_basis[jaw_idx], axis=1)
    w_jaw = _smoothstep(disp / max(float(disp[lm[8]]), 1e-6))
    w_jaw[v[:, 1] > hinge[1] + 1.0] = 0.0                    # nothing above the hinge follows the jaw
    eyes = {"eye.L": model.vertex_range("eyeball_left"), "eye.R": model.vertex_range("eyeball_right")}
    # The neck bends below the jaw line; the face region never does.
    neck_top = chin[1] - 1.0
    w_neck = _smoothstep((neck_top - v[:, 1]) / max(neck_top - y_bottom, 1e-6) * 1.5)
    w_neck[: model.vertex_range("narrow_face")[-1] + 1] = 0.0
    w_jaw = np.minimum(w_jaw, 1.0 - w_neck)
    weights = {b: np.zeros(n, np.float32) for b in BONES}
    weights["jaw"] = w_jaw.astype(np.float32)
    weights["neck"] = w_neck.astype(np.float32)
    weights["head"] = np.clip(1.0 - w_jaw - w_neck, 0.0, 1.0).astype(np.float32)
    for bone, idx in eyes.items():
        for other in ("jaw", "neck", "head"):
            weights[other][idx] = 0.0
        weights[bone][idx] = 1.0
    return RigLayout(heads, tails, parents, weights)
