"""Armature layout, skin weights and deformation checks for an ICT head (numpy; the bpy side copies them).

Bones (model space, cm, +y up, face looking +z), all derived from the identity-applied mesh so they
follow the reconstructed head:

* ``root``  at the base of the neck; the body: the bottom of the neck is weighted to it, so turning the
  head or bending the neck never moves the collar line;
* ``neck``  base of the neck → skull base; bends the neck;
* ``head``  skull base (≈ the atlanto-occipital joint) → crown; the face, skull, mouth, teeth and lashes;
* ``jaw``   hinge → chin. It skins nothing: its rotation *drives* the ``jawOpen`` shape key
  (``JAW_OPEN_ANGLE`` ↔ 1; the key is ICT's own jaw motion, lips, teeth and tongue included), so bone and
  key never add up and the throat stays with the neck;
* ``eye.L`` / ``eye.R`` at each eyeball centre, pointing forward (character's left = +x); the eyeballs are
  separate objects parented to them.

Weights between root, neck and head follow a coordinate ``s`` along the neck between two slanted planes:
the neck's bottom cut (lower in front than at the back) and the head line from under the chin to the
skull base. ``s`` = 0 at the bottom, 1 at the head line; "moves with the neck" rises smoothly over the
whole neck, "moves with the head" over its upper part, and the face (ICT's narrow face region) moves
rigidly with the head, so the photo's pose on the head and neck bones still overlays the photo exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .rt import facemodel

BONES = ("root", "neck", "head", "jaw", "eye.L", "eye.R")
DEFORM_BONES = ("root", "neck", "head")
NECK_SHARE = 0.4              # share of a head pose the neck takes (the rest is on the head bone)
HEAD_BLEND_START = 0.25       # s where the head's weight starts rising (1 at the head line)
NECK_BLEND_END = 1.0          # s where the neck (and head) weight reaches 1 from the bottom
NECK_EASE = 0.15              # the neck weight's quadratic start (share of the ramp)


@dataclass
class RigLayout:
    """Bone heads/tails (model space, cm), parents, per-vertex weights per deforming bone, and the jaw."""

    heads: dict[str, np.ndarray]
    tails: dict[str, np.ndarray]
    parents: dict[str, str | None]
    weights: dict[str, np.ndarray]       # bone → (V,) float32; rows sum to 1 over DEFORM_BONES
    jaw_open_angle: float                # radians of jaw rotation that equal jawOpen = 1
    neck_coordinate: np.ndarray          # (V,) s: 0 at the neck's bottom cut, 1 at the head line


def smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3 - 2 * x)


def ease_in_ramp(x: np.ndarray, ease: float = NECK_EASE) -> np.ndarray:
    """0 → 1 over [0, 1]: quadratic for ``x < ease`` (the neck's bottom starts moving with zero slope, so
    the collar line stays), then linear (a bend spread evenly along the neck: the fewest folds)."""
    x = np.clip(x, 0.0, 1.0)
    return np.where(x < ease, x * x / (2 * ease), x - ease / 2) / (1 - ease / 2)


def lower_teeth(model: "facemodel.FaceModel") -> np.ndarray:
    """The teeth ``jawOpen`` moves (the lower set); the upper set stays with the skull."""
    teeth = model.vertex_range("teeth")
    jaw = model.expression_basis[list(model.expression_names).index("jawOpen")]
    return teeth[np.linalg.norm(jaw[teeth], axis=1) > 0.1]


def jaw_open_motion(model: "facemodel.FaceModel", vertices: np.ndarray) -> tuple[float, np.ndarray]:
    """ICT's ``jawOpen`` on the lower teeth is a rotation about the x axis (0.2 mm from rigid): its angle
    (radians) and its hinge point in the y-z plane (cm, model space)."""
    low = lower_teeth(model)
    jaw = model.expression_basis[list(model.expression_names).index("jawOpen")]
    a = np.asarray(vertices, np.float64)[low][:, 1:]
    b = a + jaw[low][:, 1:]
    ca, cb = a.mean(0), b.mean(0)
    u, _, vt = np.linalg.svd((a - ca).T @ (b - cb))
    rot = vt.T @ u.T
    angle = float(np.arctan2(rot[1, 0], rot[0, 0]))
    hinge = np.linalg.solve(np.eye(2) - rot, cb - rot @ ca)     # the point the rotation keeps fixed
    return abs(angle), hinge


def _plane_coordinate(points: np.ndarray, bottom: tuple[np.ndarray, np.ndarray],
                      top: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """s in the y-z plane: 0 on the line through ``bottom``'s two (y, z) points, 1 on ``top``'s, from the
    distances above the one and below the other (so two non-parallel lines still give a smooth coordinate)."""
    def above(p: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        d = (b - a) / np.linalg.norm(b - a)
        n = np.array([-d[1], d[0]])
        return (p - a) @ (n if n[0] > 0 else -n)          # n points up (+y)

    yz = points[:, 1:]
    d0 = above(yz, *bottom)
    d1 = -above(yz, *top)
    return d0 / np.maximum(d0 + d1, 1e-6)


def rig_layout(model: "facemodel.FaceModel", vertices: np.ndarray) -> RigLayout:
    """Bones and weights for the identity-applied rest mesh ``vertices`` (V, 3) in cm."""
    v = np.asarray(vertices, np.float64)
    lm = model.landmark_indices()
    eye_l = v[model.vertex_range("eyeball_left")].mean(0)
    eye_r = v[model.vertex_range("eyeball_right")].mean(0)
    chin = v[lm[8]]
    angle, hinge_yz = jaw_open_motion(model, v)
    hinge = np.array([0.0, hinge_yz[0], hinge_yz[1]])
    skin = np.concatenate([model.vertex_range("face"), model.vertex_range("head_neck")])
    mid = skin[np.abs(v[skin, 0]) < 1.0]
    front, back = mid[v[mid, 2] > 0], mid[v[mid, 2] <= 0]
    bottom_front = v[front[np.argmin(v[front, 1])], 1:]            # the lowest point of the throat
    bottom_back = v[back[np.argmin(v[back, 1])], 1:]              # the lowest point of the nape
    narrow = model.vertex_range("narrow_face")
    narrow_mid = narrow[np.abs(v[narrow, 0]) < 1.0]
    under_chin = v[narrow_mid[np.argmin(v[narrow_mid, 1])], 1:]    # the face region's lowest point
    nape = back[(v[back, 1] < chin[1] + 3.0) & (v[back, 1] > bottom_back[0] + 2.0)]
    skull_back = v[nape[np.argmax(v[nape, 2])], 1:] if len(nape) else bottom_back + [8.0, 3.0]  # nape's deepest
    s = _plane_coordinate(v, (bottom_front, bottom_back), (under_chin - [0.5, 0.0], skull_back))

    neck_base = np.array([0.0, *(0.5 * (bottom_front + bottom_back) + [2.0, 0.0])])
    skull_base = np.array([0.0, *(0.5 * (under_chin + skull_back) + [1.5, 0.0])])
    y_top = float(v[:, 1].max())
    heads = {"root": neck_base, "neck": neck_base, "head": skull_base, "jaw": hinge, "eye.L": eye_l, "eye.R": eye_r}
    tails = {"root": neck_base + [0.0, -4.0, 0.0], "neck": skull_base, "head": np.array([0.0, y_top, skull_base[2]]),
             "jaw": chin, "eye.L": eye_l + [0.0, 0.0, 2.0], "eye.R": eye_r + [0.0, 0.0, 2.0]}
    parents = {"root": None, "neck": "root", "head": "neck", "jaw": "head", "eye.L": "head", "eye.R": "head"}

    with_head = smoothstep((s - HEAD_BLEND_START) / (1.0 - HEAD_BLEND_START))
    with_neck = np.maximum(ease_in_ramp(s / NECK_BLEND_END), with_head)
    rigid = np.ones(len(v), bool)
    rigid[skin] = False
    rigid[narrow] = True                      # the face moves with the head: the overlay stays exact
    with_head[rigid] = with_neck[rigid] = 1.0
    weights = {"root": (1.0 - with_neck).astype(np.float32), "neck": (with_neck - with_head).astype(np.float32),
               "head": with_head.astype(np.float32)}
    return RigLayout(heads, tails, parents, weights, angle, s)


def axis_angle_matrix(axis: np.ndarray, angle: float) -> np.ndarray:
    a = np.asarray(axis, np.float64) / max(float(np.linalg.norm(axis)), 1e-12)
    k = np.array([[0, -a[2], a[1]], [a[2], 0, -a[0]], [-a[1], a[0], 0]])
    return np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * (k @ k)


def split_rotation(rotation: np.ndarray, share: float = NECK_SHARE) -> tuple[np.ndarray, np.ndarray]:
    """``(neck, head)`` with ``neck @ head == rotation``: the neck takes ``share`` of the angle about the
    same axis, the head the rest."""
    r = np.asarray(rotation, np.float64)
    angle = float(np.arccos(np.clip((np.trace(r) - 1) / 2, -1.0, 1.0)))
    if angle < 1e-9:
        return np.eye(3), np.eye(3)
    axis = np.array([r[2, 1] - r[1, 2], r[0, 2] - r[2, 0], r[1, 0] - r[0, 1]])
    if np.linalg.norm(axis) < 1e-9:           # 180°: any perpendicular axis from the symmetric part
        axis = np.linalg.eigh(r + np.eye(3))[1][:, -1]
    neck = axis_angle_matrix(axis, share * angle)
    return neck, neck.T @ r


@dataclass
class DeformationReport:
    """How a pose deforms a mesh region: edge stretch and fold, worst and 99th percentile."""

    max_strain: float          # max |posed edge length / rest length − 1|
    p99_strain: float
    max_fold_deg: float        # max change of the angle between two neighbouring triangles (degrees)
    p99_fold_deg: float
    folded: int                # inner edges whose two triangles meet at more than 90° posed, not at rest

    def as_dict(self) -> dict[str, float]:
        return {k: round(float(v), 4) for k, v in self.__dict__.items()}


def deformation_report(rest: np.ndarray, posed: np.ndarray, triangles: np.ndarray,
                       vertices: np.ndarray) -> DeformationReport:
    """Edge strain and fold change of the triangles whose three vertices are all in ``vertices``."""
    keep = np.isin(triangles, vertices).all(1)
    tri = triangles[keep]
    edges = np.concatenate([tri[:, [0, 1]], tri[:, [1, 2]], tri[:, [2, 0]]])
    owner = np.tile(np.arange(len(tri)), 3)
    key = np.sort(edges, axis=1)
    rest_len = np.linalg.norm(rest[key[:, 0]] - rest[key[:, 1]], axis=1)
    posed_len = np.linalg.norm(posed[key[:, 0]] - posed[key[:, 1]], axis=1)
    strain = np.abs(posed_len / np.maximum(rest_len, 1e-9) - 1.0)

    def normals(p: np.ndarray) -> np.ndarray:
        n = np.cross(p[tri[:, 1]] - p[tri[:, 0]], p[tri[:, 2]] - p[tri[:, 0]])
        return n / np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-12)

    n0, n1 = normals(rest), normals(posed)
    order = np.lexsort((key[:, 1], key[:, 0]))
    k_sorted = key[order]
    same = (k_sorted[1:] == k_sorted[:-1]).all(1)
    a, b = owner[order][:-1][same], owner[order][1:][same]           # the two triangles of an inner edge
    dihedral0 = np.degrees(np.arccos(np.clip((n0[a] * n0[b]).sum(1), -1, 1)))
    dihedral1 = np.degrees(np.arccos(np.clip((n1[a] * n1[b]).sum(1), -1, 1)))
    fold = np.abs(dihedral1 - dihedral0)
    folded = int(((dihedral1 > 90) & (dihedral0 <= 90)).sum())
    return DeformationReport(float(strain.max()), float(np.percentile(strain, 99)),
                             float(fold.max()) if len(fold) else 0.0,
                             float(np.percentile(fold, 99)) if len(fold) else 0.0, folded)


# -- separate objects: eyes, teeth, lashes ---------------------------------------------------------
PARTS: dict[str, tuple[tuple[str, ...], str]] = {     # object suffix → (ICT materials, parent bone)
    "Eye.L": (("M_ScleraLeft", "M_IrisLeft"), "eye.L"),
    "Eye.R": (("M_ScleraRight", "M_IrisRight"), "eye.R"),
    "Teeth": (("M_Teeth",), "head"),
    "Lashes": (("M_EyeLashes",), "head"),
}
TEETH_TUCK = "teethTuck"       # the teeth object's own key: teeth drawn up/down behind the lips
TUCK_OPEN_CM = 0.3             # lips this much further apart than at rest (cm) show the teeth fully
TUCK_SHIFT_CM = (1.2, -1.0, -0.3)   # upper teeth up, lower teeth down, both back (cm) when tucked


def part_polygons(model: "facemodel.FaceModel", teeth: bool = True) -> dict[str, np.ndarray]:
    """Polygon indices per object: ``"Head"`` (skin, mouth, sockets, eye overlays) and the ``PARTS``;
    without ``teeth`` the teeth are in no object (a toothless head)."""
    names = list(model.material_names)
    out: dict[str, np.ndarray] = {}
    taken = np.zeros(len(model.faces), bool)
    for part, (materials, _) in PARTS.items():
        mask = np.isin(model.face_material, [names.index(m) for m in materials])
        taken |= mask
        if part != "Teeth" or teeth:
            out[part] = np.flatnonzero(mask)
    return {"Head": np.flatnonzero(~taken), **out}


def lip_gap_terms(model: "facemodel.FaceModel", mix: np.ndarray, key_names: list[str],
                  min_cm: float = 0.02) -> list[dict[str, float]]:
    """How each shape key changes the vertical gap between the inner lips (cm per unit value), at the
    centre and both sides (68-point pairs 62/66, 61/67, 63/65). Keys are linear, so a key mix's gap
    change is exactly the weighted sum; terms under ``min_cm`` are dropped."""
    lm = model.landmark_indices()
    out = []
    for up, low in ((62, 66), (61, 67), (63, 65)):
        d = mix @ (model.expression_basis[:, lm[up], 1] - model.expression_basis[:, lm[low], 1])
        out.append({key_names[k]: float(d[k]) for k in np.flatnonzero(np.abs(d) >= min_cm)})
    return out


def teeth_tuck_offsets(model: "facemodel.FaceModel") -> np.ndarray:
    """(V_teeth, 3) cm: the tuck's displacement of every tooth vertex (model space, teeth range order):
    upper teeth up, lower teeth down, both back, out of sight behind closed lips."""
    teeth = model.vertex_range("teeth")
    lower = np.isin(teeth, lower_teeth(model))
    up, down, back = TUCK_SHIFT_CM
    out = np.zeros((len(teeth), 3))
    out[:, 1] = np.where(lower, down, up)
    out[:, 2] = back
    return out
