"""Sampling every parameter group, after InverseFaceNet section 5, adapted to ICT-FaceKit.

* identity ~ N(0, 1) per mode (the ICT basis is already scaled to unit variance), clipped ±3;
* expressions: sparse activations. Each action (a left/right pair or a single shape) is active
  with its own probability; pairs are correlated (the other side follows with a small
  asymmetry), antagonists (jawLeft/jawRight, mouthLeft/mouthRight, eyeLookUp/Down) are
  exclusive, and both eyes share one gaze direction;
* pose: yaw, pitch, roll uniform in the given ranges (degrees, ±);
* lighting: ambient plus one lamp from the camera's hemisphere with a slight colour tint,
  plus small second-order noise — a bright constant band;
* albedo: the full skin tone range (``tone`` uniform in [−1, 1]) and the regional tints.

Translation is not sampled directly: :func:`place_in_crop` puts the face where the canonical
crop of its landmarks would put it, with scale and shift jitter, like a detector crop.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from .crop import canonical_crop_box
from .formation import landmarks_2d
from .lighting import directional_sh
from .model import ModelArrays
from .params import ALBEDO_NAMES, DEFAULT_CAMERA, N_EXPRESSIONS, FaceParams

# Probability that an action is active in a sample (others by default 0.12).
ACTION_PROBABILITY = {"jawOpen": 0.35, "mouthSmile": 0.3, "eyeBlink": 0.2, "browInnerUp": 0.2,
                      "mouthClose": 0.05, "cheekPuff": 0.05, "eyeLook": 0.5}
DEFAULT_ACTION_PROBABILITY = 0.10
EXCLUSIVE = (("jawLeft", "jawRight"), ("mouthLeft", "mouthRight"))
GAZE_SHAPES = {"eyeLookUp", "eyeLookDown", "eyeLookIn", "eyeLookOut"}


@dataclass(frozen=True)
class PoseRange:
    """Half-ranges in degrees of the uniform pose prior."""

    yaw: float = 90.0
    pitch: float = 30.0
    roll: float = 20.0


def _actions(names: tuple[str, ...]) -> dict[str, list[int]]:
    """Group expression indices into actions: 'mouthSmile' → [idx_L, idx_R]."""
    groups: dict[str, list[int]] = {}
    for i, n in enumerate(names):
        base = n[:-2] if n.endswith(("_L", "_R")) else n
        groups.setdefault(base, []).append(i)
    return groups


def sample_expressions(rng: np.random.Generator, n: int, names: tuple[str, ...],
                       neutral_fraction: float = 0.15) -> np.ndarray:
    """(n, 53) sparse, left/right-correlated expression weights in [0, 1]."""
    assert len(names) == N_EXPRESSIONS
    out = np.zeros((n, len(names)), np.float32)
    idx = {nm: i for i, nm in enumerate(names)}
    actions = _actions(names)
    for base, members in actions.items():
        if base in GAZE_SHAPES:
            continue
        p = ACTION_PROBABILITY.get(base, DEFAULT_ACTION_PROBABILITY)
        active = rng.random(n) < p
        value = rng.beta(1.3, 2.0, n)
        for k, m in enumerate(members):
            asym = rng.normal(0, 0.12, n) if k else 0.0
            out[:, m] = np.where(active, np.clip(value + asym, 0, 1), 0)
    for a, b in EXCLUSIVE:
        drop_a = rng.random(n) < 0.5
        out[drop_a, idx[a]] = 0
        out[~drop_a, idx[b]] = 0
    # One gaze for both eyes: horizontal h (+ = towards the subject's left) and vertical g.
    look = rng.random(n) < ACTION_PROBABILITY["eyeLook"]
    h = np.where(look, rng.uniform(-1, 1, n), 0) * rng.uniform(0.3, 1.0, n)
    g = np.where(look, rng.uniform(-1, 1, n), 0) * rng.uniform(0.2, 0.8, n)
    out[:, idx["eyeLookOut_L"]] = np.clip(h, 0, 1)
    out[:, idx["eyeLookIn_R"]] = np.clip(h, 0, 1)
    out[:, idx["eyeLookIn_L"]] = np.clip(-h, 0, 1)
    out[:, idx["eyeLookOut_R"]] = np.clip(-h, 0, 1)
    for side in ("_L", "_R"):
        out[:, idx["eyeLookUp" + side]] = np.clip(g, 0, 1)
        out[:, idx["eyeLookDown" + side]] = np.clip(-g, 0, 1)
    out[rng.random(n) < neutral_fraction] = 0
    return out


def sample_sh(rng: np.random.Generator, n: int) -> np.ndarray:
    """(n, 9, 3) lighting: ambient + one lamp from the front hemisphere + a little noise."""
    out = np.empty((n, 9, 3), np.float32)
    for i in range(n):
        d = rng.normal(size=3)
        d[2] = abs(d[2]) + 0.3          # lamps come from the camera's side
        tint = np.clip(rng.normal(1.0, 0.06, 3), 0.8, 1.2)
        out[i] = directional_sh(d, ambient=rng.uniform(0.45, 0.95), strength=rng.uniform(0.25, 1.0),
                                color=tint)
        out[i, 4:] += rng.normal(0, 0.04, (5, 3))
    return out


def sample_albedo(rng: np.random.Generator, n: int) -> np.ndarray:
    """(n, 7) skin model parameters (see :mod:`facemodel.albedo`)."""
    a = np.clip(rng.normal(0, 1, (n, len(ALBEDO_NAMES))), -2.5, 2.5)
    a[:, ALBEDO_NAMES.index("tone")] = rng.uniform(-1, 1, n)
    a[:, ALBEDO_NAMES.index("undertone")] *= 0.6
    a[:, ALBEDO_NAMES.index("redness")] *= 0.6
    return a.astype(np.float32)


def sample_rotation(rng: np.random.Generator, n: int, pose: PoseRange) -> np.ndarray:
    deg = np.stack([rng.uniform(-pose.yaw, pose.yaw, n), rng.uniform(-pose.pitch, pose.pitch, n),
                    rng.uniform(-pose.roll, pose.roll, n)], -1)
    return np.deg2rad(deg).astype(np.float32)


def place_in_crop(landmark_arrays: ModelArrays, params: FaceParams, scale: np.ndarray | float = 1.0,
                  shift: np.ndarray | float = 0.0, iterations: int = 6) -> np.ndarray:
    """Translations (…, 3) that put each face where the canonical crop puts a detected face.

    ``scale`` > 1 makes the face larger than canonical; ``shift`` (…, 2) moves its crop
    centre, in units of the image side. Fixed-point iteration on depth and lateral offset
    (perspective makes the relation mildly non-linear; six steps converge to < 0.01 px).
    """
    batch = params.batch_shape
    scale = np.broadcast_to(np.asarray(scale, np.float64), batch)
    shift = np.broadcast_to(np.asarray(shift, np.float64), batch + (2,))
    t = np.zeros(batch + (3,), np.float64)
    t[..., 2] = -100.0
    focal = np.asarray(params.camera, np.float64)[..., 0]
    for _ in range(iterations):
        trial = replace(params, translation=t.astype(np.float32))
        pts = np.asarray(landmarks_2d(landmark_arrays, trial, 1, 1), np.float64)
        flat_pts = pts.reshape(-1, pts.shape[-2], 2)
        boxes = np.array([canonical_crop_box(p) for p in flat_pts]).reshape(batch + (4,))
        side = boxes[..., 2] - boxes[..., 0]
        centre = 0.5 * (boxes[..., :2] + boxes[..., 2:])
        target_side = 1.0 / scale
        target_centre = np.asarray(params.camera, np.float64)[..., 1:] + shift
        depth = -t[..., 2]
        t[..., 0] += (target_centre[..., 0] - centre[..., 0]) * depth / focal
        t[..., 1] -= (target_centre[..., 1] - centre[..., 1]) * depth / focal
        new_depth = depth * side / target_side
        t[..., :2] *= (new_depth / depth)[..., None]
        t[..., 2] = -new_depth
    return t.astype(np.float32)


def sample_params(rng: np.random.Generator, n: int, expression_names: tuple[str, ...],
                  landmark_arrays: ModelArrays, n_identity: int = 100, pose: PoseRange = PoseRange(),
                  scale_jitter: float = 0.1, shift_jitter: float = 0.05, identity: np.ndarray | None = None,
                  albedo: np.ndarray | None = None) -> FaceParams:
    """``n`` random faces placed like jittered detector crops (camera = ``DEFAULT_CAMERA``).

    ``identity`` (n, n_identity) / ``albedo`` (n, 7) given: those people, in new poses,
    expressions and lighting (multi-view sets of one person).
    """
    if identity is None:
        identity = np.clip(rng.normal(0, 1, (n, n_identity)), -3, 3).astype(np.float32)
    identity = np.asarray(identity, np.float32).reshape(n, -1)
    params = FaceParams(identity=identity, expression=sample_expressions(rng, n, expression_names),
                        rotation=sample_rotation(rng, n, pose), translation=np.zeros((n, 3), np.float32),
                        sh=sample_sh(rng, n),
                        albedo=sample_albedo(rng, n) if albedo is None else np.asarray(albedo, np.float32).reshape(n, -1),
                        camera=np.tile(np.asarray(DEFAULT_CAMERA, np.float32), (n, 1)))
    scale = rng.uniform(1 - scale_jitter, 1 + scale_jitter, n)
    shift = rng.uniform(-shift_jitter, shift_jitter, (n, 2))
    params.translation = place_in_crop(landmark_arrays, params, scale, shift)
    return params
