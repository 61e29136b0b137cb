"""Head pose from 68 image points: a PnP fit of ICT-FaceKit's mean-face landmarks.

Used twice: for MediaPipe's yaw (it predicts no pose of its own) and for the annotation yaw
that bins a labelled benchmark (Helen has no pose labels). Both use facerig's crop camera, so
the angles are in the same convention as the regressor's rotation (``facemodel.geometry``).
"""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING

import numpy as np

from facemodel.crop import canonical_crop_box
from facemodel.geometry import matrix_to_euler
from facemodel.model import INNER_51

from .imaging import Box

if TYPE_CHECKING:
    from facemodel import FaceModel

PNP_FOCAL = 4.0  # focal / crop width, facerig's DEFAULT_CAMERA


@lru_cache(maxsize=1)
def face_model(model_path: str | None = None) -> "FaceModel":
    """The ICT-FaceKit model, loaded once per process (≈ 0.7 s): the PnP reference below and the
    facerig landmarker that scores the same images share it."""
    from facemodel import FaceModel

    return FaceModel.load(model_path)


@lru_cache(maxsize=1)
def ict_mean_landmarks(model_path: str | None = None) -> np.ndarray:
    """(68, 3) ICT-FaceKit mean-face landmark vertices (cm, model space)."""
    model = face_model(model_path)
    return model.neutral[model.landmark_indices("fixed")].astype(np.float64)


def pnp_pose(points68: np.ndarray, reference68: np.ndarray, box: Box, focal: float = PNP_FOCAL
             ) -> np.ndarray:
    """(yaw, pitch, roll) radians of a face from its 2-D inner landmarks, facerig's convention.

    The camera is facerig's crop camera for ``box`` (focal = ``focal`` × box side, principal
    point at the box centre), so the angle is measured as the regressor would see the crop.
    OpenCV's camera looks down +z with +y down; facerig's looks down −z with +y up, i.e.
    ``R = D R_cv`` with ``D = diag(1, −1, −1)``.
    """
    import cv2

    x0, y0, x1, y1 = box
    side = x1 - x0
    k = np.array([[focal * side, 0, 0.5 * (x0 + x1)], [0, focal * side, 0.5 * (y0 + y1)], [0, 0, 1]])
    obj = np.ascontiguousarray(reference68[list(INNER_51)], np.float64)
    img = np.ascontiguousarray(np.asarray(points68, np.float64)[list(INNER_51)])
    ok, rvec, tvec = cv2.solvePnP(obj, img, k, None, flags=cv2.SOLVEPNP_EPNP)
    if ok:
        ok, rvec, tvec = cv2.solvePnP(obj, img, k, None, rvec, tvec, useExtrinsicGuess=True,
                                      flags=cv2.SOLVEPNP_ITERATIVE)
    if not ok:
        return np.full(3, np.nan)
    r_cv, _ = cv2.Rodrigues(rvec)
    r = np.diag([1.0, -1.0, -1.0]) @ r_cv
    if tvec[2, 0] < 0:  # PnP found the mirror solution behind the camera
        return np.full(3, np.nan)
    return matrix_to_euler(r)


def annotation_yaw_deg(gt68: np.ndarray, model_path: str | None = None) -> float:
    """Yaw (degrees) of an annotated face: PnP of its 68 labelled points in their canonical crop.

    The same for every method scored on the image, so per-|yaw|-bin means and the balanced mean
    compare methods (and models) on the same images — binning by each method's own predicted yaw
    moves faces near a bin edge between bins from one model to the next.
    """
    gt68 = np.asarray(gt68, np.float64)
    return float(np.degrees(pnp_pose(gt68, ict_mean_landmarks(model_path), canonical_crop_box(gt68))[0]))
