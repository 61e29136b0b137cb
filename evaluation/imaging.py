"""Photo I/O and square crops: the add-on's functions when present, a local equivalent otherwise.

The harness must measure the photo pipeline the add-on ships, so it calls
``blender_addon.photo.load_image`` / ``crop_square`` and ``blender_addon.detect.detect_faces``
when those exist. While the add-on is being written the local fallbacks below follow the same
contract (RGB uint8 images; a crop box (x0, y0, x1, y1) in continuous corner-origin pixels
resampled to size × size), so results do not change meaning when the add-on lands.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

log = logging.getLogger(__name__)

Box = tuple[float, float, float, float]


def _addon(module: str, name: str) -> Callable[..., Any] | None:
    try:
        mod = __import__(f"blender_addon.{module}", fromlist=[name])
    except ImportError:
        return None
    return getattr(mod, name, None)


def load_image(path: Path | str) -> np.ndarray:
    """(H, W, 3) uint8 RGB; EXIF orientation is the add-on's business when it provides the loader."""
    fn = _addon("photo", "load_image")
    if fn is not None:
        return np.asarray(fn(path))
    import cv2

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image {path} does not exist")
    data = np.fromfile(str(path), np.uint8)
    img = cv2.imdecode(data, cv2.IMREAD_COLOR)
    if img is None:
        raise ValueError(f"{path} is not a readable image")
    return np.ascontiguousarray(img[:, :, ::-1])


def crop_square(image: np.ndarray, box: Box, size: int) -> np.ndarray:
    """``box`` resampled to (size, size, 3); outside the photo is black (as in training crops)."""
    fn = _addon("photo", "crop_square")
    if fn is not None:
        return np.asarray(fn(image, box, size))
    return local_crop_square(image, box, size)


def local_crop_square(image: np.ndarray, box: Box, size: int) -> np.ndarray:
    """Bilinear resampling with area pre-filtering when shrinking (avoids aliasing on big photos)."""
    import cv2

    x0, y0, x1, y1 = (float(v) for v in box)
    scale = (x1 - x0) / size  # source pixels per output pixel
    src = image
    factor = int(np.floor(scale))
    if factor >= 2:  # shrink by an integer factor first: INTER_AREA averages, warpAffine would alias
        h, w = image.shape[:2]
        nw, nh = max(1, round(w / factor)), max(1, round(h / factor))
        src = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_AREA)
        fx, fy = nw / w, nh / h
        x0, x1, y0, y1 = x0 * fx, x1 * fx, y0 * fy, y1 * fy
    sx, sy = (x1 - x0) / size, (y1 - y0) / size
    # Output pixel centre j + 0.5 ↔ source continuous x0 + (j + 0.5)·s ↔ source index that − 0.5.
    m = np.array([[sx, 0.0, x0 + 0.5 * sx - 0.5], [0.0, sy, y0 + 0.5 * sy - 0.5]], np.float64)
    return cv2.warpAffine(src, m, (size, size), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0))


def crop_to_photo(points: np.ndarray, box: Box, size: int) -> np.ndarray:
    """Map (…, 2) crop pixel coordinates back to the photo (exact inverse of the crop)."""
    x0, y0, x1, y1 = box
    p = np.asarray(points, np.float64)
    return np.stack([x0 + p[..., 0] * (x1 - x0) / size, y0 + p[..., 1] * (y1 - y0) / size], -1)


@dataclass(frozen=True)
class Detection:
    """A detected face: the box to match against annotations and the network crop it implies."""

    box: Box        # face extent used for matching (landmark box when the detector gives landmarks)
    crop_box: Box   # canonical crop the photo pipeline would feed the regressor


def detect_faces(image: np.ndarray) -> list[Detection]:
    """Faces in the photo: the add-on's detector (what users run) or MediaPipe's detector directly.

    The add-on returns FaceMesh-derived 68 points per face and crops with
    ``canonical_crop_box`` of those, so its crop is used as is. The fallback has only a
    BlazeFace box, which is treated as a landmark box for the canonical crop.
    """
    fn = _addon("detect", "detect_faces")
    if fn is not None:
        out = []
        for face in fn(image):
            lm = np.asarray(getattr(face, "landmarks", np.zeros((0, 2))))
            box = points_box(lm) if lm.size else tuple(float(v) for v in face.box)
            crop = tuple(float(v) for v in face.crop_box) if hasattr(face, "crop_box") else _crop_of(box)
            out.append(Detection(box, crop))
        return out
    return [Detection(b, _crop_of(b)) for b in _mediapipe_detect(image)]


def _crop_of(box: Box) -> Box:
    from facemodel.crop import canonical_crop_box

    return canonical_crop_box(np.array([[box[0], box[1]], [box[2], box[3]]]))


_DETECTOR: Any = None


def _mediapipe_detect(image: np.ndarray) -> list[Box]:
    """MediaPipe BlazeFace full-range boxes (the add-on's detector of record, until it lands)."""
    global _DETECTOR
    import mediapipe as mp

    if _DETECTOR is None:
        _DETECTOR = mp.solutions.face_detection.FaceDetection(model_selection=1, min_detection_confidence=0.4)
    h, w = image.shape[:2]
    res = _DETECTOR.process(np.ascontiguousarray(image))
    boxes: list[tuple[float, Box]] = []
    for det in res.detections or []:
        rb = det.location_data.relative_bounding_box
        box = (rb.xmin * w, rb.ymin * h, (rb.xmin + rb.width) * w, (rb.ymin + rb.height) * h)
        boxes.append((float(det.score[0]), box))
    boxes.sort(key=lambda sb: -sb[0])
    return [b for _, b in boxes]


def box_iou(a: Box, b: Box) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def points_box(points: np.ndarray) -> Box:
    p = np.asarray(points, np.float64)
    lo, hi = p.min(0), p.max(0)
    return (float(lo[0]), float(lo[1]), float(hi[0]), float(hi[1]))
