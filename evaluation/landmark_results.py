"""What a landmark benchmark produces per image: a method's :class:`Prediction` and the :class:`ImageResult`
against the labelled points (read by :mod:`evaluation.landmarks`, which runs the methods, and by the
figures of :mod:`evaluation.report`)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from facemodel import metrics

from .imaging import Box

NME_KEYS = ("nme_bbox_68", "nme_bbox_51", "nme_io_68", "nme_io_51")


@dataclass
class Prediction:
    """One method's output for one face, photo pixels."""

    points68: np.ndarray                       # (68, 2), the reported variant
    rotation: np.ndarray                       # (3,) yaw, pitch, roll radians
    crop_box: Box
    variants: dict[str, np.ndarray] = field(default_factory=dict)  # contour → (68, 2)


class Landmarker(Protocol):
    name: str

    def predict(self, image: np.ndarray, crop_box: Box, ref_box: Box) -> Prediction | None:
        """68 points of the face that ``crop_box`` frames and ``ref_box`` outlines, or None."""


@dataclass
class ImageResult:
    name: str
    gt: np.ndarray
    prediction: Prediction | None
    error: str = ""
    box: Box | None = None
    annotation_yaw_deg: float = math.nan   # from the labelled points, the same for every method

    @property
    def ok(self) -> bool:
        return self.prediction is not None

    @property
    def yaw_deg(self) -> float:
        return float(np.degrees(self.prediction.rotation[0])) if self.prediction is not None else math.nan

    def nmes(self, points: np.ndarray | None = None) -> dict[str, float]:
        pts = points if points is not None else (self.prediction.points68 if self.prediction else None)
        if pts is None:
            return {k: math.nan for k in NME_KEYS}
        return {k: float(v) for k, v in metrics.landmark_nmes(pts, self.gt).items()}
