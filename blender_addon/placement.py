"""Where a new head goes in a scene: beside the heads already there, never inside another object.

The core (:func:`free_offset`) is numpy on axis-aligned boxes, so it is tested without Blender;
:func:`scene_obstacles` reads the boxes of a Blender scene's visible meshes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

GAP_M = 0.1                 # space left between two heads (m)
LARGE_OBJECT_M = 4.0        # objects larger than this (floors, rooms, backdrops) never push a head aside


@dataclass
class Obstacle:
    name: str
    lo: np.ndarray          # (3,) world box, m
    hi: np.ndarray
    is_head: bool           # a facerig head (or one of its parts): boxes must not overlap

    @property
    def size(self) -> float:
        return float((self.hi - self.lo).max())


def _overlaps(lo: np.ndarray, hi: np.ndarray, ob: Obstacle) -> bool:
    return bool((lo < ob.hi).all() and (hi > ob.lo).all())


def _contains(point: np.ndarray, ob: Obstacle) -> bool:
    return bool((point > ob.lo).all() and (point < ob.hi).all())


def free_offset(lo: np.ndarray, hi: np.ndarray, obstacles: list[Obstacle], gap: float = GAP_M) -> tuple[float, list[str]]:
    """The smallest shift along +x that puts the box ``lo..hi`` beside every earlier head (no overlap) and
    out of any object that would swallow it (one that contains the box's centre, e.g. the default cube;
    objects over ``LARGE_OBJECT_M`` are ignored). Returns the shift and the names stepped past."""
    lo, hi = np.asarray(lo, float), np.asarray(hi, float)
    relevant = [o for o in obstacles if o.is_head or o.size <= LARGE_OBJECT_M]
    x, passed = 0.0, []
    for _ in range(len(relevant) + 1):
        shift = np.array([x, 0.0, 0.0])
        centre = 0.5 * (lo + hi) + shift
        hits = [o for o in relevant if (_overlaps(lo + shift, hi + shift, o) if o.is_head else _contains(centre, o))]
        if not hits:
            return x, passed
        passed = list(dict.fromkeys(passed + [o.name for o in hits]))
        x = max(float(o.hi[0]) for o in hits) + gap - float(lo[0])
    return x, passed


def scene_obstacles(scene: Any, exclude: set[Any] | None = None) -> list[Obstacle]:
    """World boxes of the scene's visible meshes; facerig heads (objects carrying ``facerig_model_version``,
    their rigs' children included) are marked as heads."""
    from mathutils import Vector

    exclude = exclude or set()
    out = []
    for ob in scene.objects:
        if ob.type != "MESH" or ob in exclude or not ob.visible_get():
            continue
        corners = np.array([tuple(ob.matrix_world @ Vector(c)) for c in ob.bound_box])
        owner = ob.parent if ob.parent is not None else ob
        is_head = bool(ob.get("facerig_model_version") or owner.get("facerig_model_version")
                       or ob.get("facerig_part"))
        name = owner.name if is_head else ob.name      # a head's skin and parts count as one (its rig)
        out.append(Obstacle(name, corners.min(0), corners.max(0), is_head))
    return out
