"""Which model vertices stand for the 68 points: fixed, visible-jawline, or contour marching.

Annotators place jaw points 0–16 on the *visible* outline of the face. A 3-D model's fixed jaw
vertices sit on the physical jawline, which leaves the outline as soon as the head turns: on
the side turned away from the camera the cheek becomes the silhouette. Three variants:

``fixed``
    ICT-FaceKit's ``landmarks_multipie68``: the points the regressor is trained against (the
    corpus' ``landmarks``; ``landmarks_visible_jaw`` is optional supervision), so it measures
    what the network learned. The JSON always carries all three variants under ``by_contour``.
``visible``
    ICT-FaceKit's documented alternative jaw vertices (docs/conventions.md, "The face model file"), fixed
    but further forward; closer to the outline of frontal and moderately turned faces.
``march``
    For each jaw point, the vertices on a horizontal line of the mean face between the fixed
    jaw vertex and the front of the face; per image the one farthest out (in the image, on the
    point's side of the face) is taken, i.e. the silhouette along that line — the landmark
    marching of 3DDFA (Zhu et al., CVPR 2016), simplified to horizontal lines on the mean face.
    On the side facing the camera the fixed vertex remains outermost, so it is kept there.

The default of ``facerig eval landmarks`` is ``march``, chosen by measurement on
Helen (330 photos, ground-truth box, shipped synthetic-only model): NME bbox 68 = 6.83 % (march),
6.93 % (fixed), 7.41 % (visible); yaw-balanced 6.69 / 7.19 / 7.50 %. The 51 inner points are the
same in all three.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from facemodel import FaceModel, FaceParams
from facemodel.formation import landmarks_2d

CONTOURS = ("fixed", "visible", "march")
JAW_RIGHT = tuple(range(0, 8))    # subject's right, image left when frontal
JAW_LEFT = tuple(range(9, 17))
LINE_HALF_HEIGHT_CM = 0.3
LINE_MIN_DEPTH_CM = -0.5          # candidates may sit at most this far behind the fixed vertex


@dataclass
class ContourLandmarks:
    """Projects the 68 points of predicted parameters for every contour variant."""

    model: FaceModel

    def __post_init__(self) -> None:
        fixed = self.model.landmark_indices("fixed")
        visible = self.model.landmark_indices("visible")
        self._arrays = {"fixed": self.model.arrays.subset(fixed), "visible": self.model.arrays.subset(visible)}
        narrow = self.model.vertex_range("narrow_face")
        nv = self.model.neutral[narrow]
        lines: list[np.ndarray] = []
        for k in JAW_RIGHT + JAW_LEFT:
            p = self.model.neutral[fixed[k]]
            side = np.sign(p[0])
            sel = ((np.abs(nv[:, 1] - p[1]) <= LINE_HALF_HEIGHT_CM) & (nv[:, 0] * side > 0)
                   & (np.abs(nv[:, 0]) <= abs(p[0]) + 0.2) & (nv[:, 2] >= p[2] + LINE_MIN_DEPTH_CM))
            cand = np.unique(np.concatenate([[fixed[k], visible[k]], narrow[sel]]))
            lines.append(cand)
        self._line_sizes = [len(c) for c in lines]
        self._line_vertices = np.concatenate(lines)
        self._arrays["march"] = self.model.arrays.subset(self._line_vertices)
        self._sides = np.array([-1.0] * len(JAW_RIGHT) + [1.0] * len(JAW_LEFT))

    @property
    def line_sizes(self) -> list[int]:
        return list(self._line_sizes)

    def landmarks(self, params: FaceParams, width: int, height: int, contour: str = "fixed") -> np.ndarray:
        """(…, 68, 2) pixel landmarks of ``params`` in a ``width`` × ``height`` image."""
        if contour not in CONTOURS:
            raise ValueError(f"contour must be one of {CONTOURS}, not {contour!r}")
        if contour != "march":
            return np.asarray(landmarks_2d(self._arrays[contour], params, width, height))
        base = np.asarray(landmarks_2d(self._arrays["fixed"], params, width, height)).copy()
        cand = np.asarray(landmarks_2d(self._arrays["march"], params, width, height))
        # Outermost along each line: max of side · (u − u_nose), the nose tip (30) as the centre.
        centre_u = base[..., 30:31, 0]
        start = 0
        for j, k in enumerate(JAW_RIGHT + JAW_LEFT):
            n = self._line_sizes[j]
            seg = cand[..., start:start + n, :]
            score = self._sides[j] * (seg[..., 0] - centre_u)
            best = np.argmax(score, axis=-1)
            base[..., k, :] = np.take_along_axis(seg, best[..., None, None], axis=-2)[..., 0, :]
            start += n
        return base

    def all_variants(self, params: FaceParams, width: int, height: int) -> dict[str, np.ndarray]:
        return {c: self.landmarks(params, width, height, c) for c in CONTOURS}
