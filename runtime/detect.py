"""Face detection and 68-point landmarks with MediaPipe 0.10.21 (legacy solutions, offline).

Two stages, chosen by measurement (4 demo photos, 2 shared cores; docs/results.md, "Speed"):

1. ``face_detection`` full-range model (BlazeFace, ≈ 4 ms on 2 threads): finds faces anywhere in the photo
   down to ≈ 5 % of its side (smaller ones on tiles), including faces in group photos that
   FaceMesh's built-in short-range detector misses.
2. ``face_mesh`` (468 points, ≈ 4.5 ms per face) on a square crop around each detection, resized
   to :data:`MESH_CROP_SIZE`: gives dense landmarks, from which :data:`FACEMESH_TO_68` takes
   the iBUG 68 points the canonical crop box (``facemodel.crop``) is defined on.

If the full-range detector finds nothing, the short-range one (large close-ups) runs, then the
full-range one on overlapping tiles (small faces in large photos), then FaceMesh on the whole image;
with ``unconfirmed``, last, the boxes FaceMesh could not confirm (profiles, occlusions). FaceMesh may
see a neighbouring face inside a crop, so the mesh whose box overlaps the detection most is kept.

The 468→68 mapping is ``facemodel.landmark_maps.MEDIAPIPE_TO_68``, the same table the evaluation's
MediaPipe baseline uses: derived from MediaPipe's semantic connection sets and ICT-FaceKit's 68
vertices on non-test photos, never fitted to a benchmark's annotations (Helen is the test set).
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field

import cv2
import numpy as np

from .fm import facemodel
from .mediapipe_graphs import FaceDetector, FaceLandmarksOnRegion, FaceMeshStatic, Region, landmarks_array
from .photo import PhotoError, as_rgb8, crop_square

log = logging.getLogger(__name__)

# FaceMesh vertex for each iBUG 68 point (facemodel.landmark_maps: derived without any benchmark labels).
FACEMESH_TO_68 = np.asarray(facemodel.landmark_maps.MEDIAPIPE_TO_68, np.int64)

MESH_CROP_SIZE = 256        # FaceMesh input crop side (px); its own detector wants a large face
FIT_CROP_SIZE = 256         # side of the canonical crop FaceMesh re-reads for the refinement
MESH_CROP_SCALE = 2.2       # crop side / detection box side
DETECT_MAX_SIDE = 1280      # photos are downscaled to this for the detector only
MIN_SCORE = 0.5
# XNNPACK threads of the detection pass's networks (bench photo, 2 idle cores: full-range detector 6.4 ms at
# MediaPipe's default, 5.3 on one thread, 3.7 on two; FaceMesh 5.2 → 4.4 on two; the landmark model alone gains
# nothing from a second thread). Batch workers set 1 (:func:`set_inference_threads`): a photo per core pays more.
INFERENCE_THREADS = facemodel.side_thread.PHOTO_THREADS
# The full-range detector misses faces under ≈ 5 % of the image side (a 60-px face in a 1280-px photo;
# docs/results.md, "Detection"). When the whole image gives nothing, tiles of TILE_SIDE · f px (f = 1, 2, 4, …) are
# searched; neighbours overlap by TILE_OVERLAP, so every face up to that share of a tile lies whole in one.
TILE_SIDE = 640
TILE_OVERLAP = 0.25
# Faces FaceMesh cannot confirm (profiles, hands or microphones over the face): on test renders the
# full-range box is found at |yaw| 75–90° for 93 % of faces, FaceMesh confirms 21 % (blender_addon/README.md,
# "Detector choice"; detection rates by |yaw|: docs/results.md, "Detection").
# As a last resort (``unconfirmed=True``) such boxes become faces when scored at least this high …
UNCONFIRMED_MIN_SCORE = 0.6
UNCONFIRMED_MIN_SIDE = 32   # px; smaller unconfirmed boxes are mostly not faces (and too small to rebuild)
# … with the 68-point box expected inside the detector's square box (box-relative x0, y0, x1, y1): medians
# over 405 test renders at |yaw| < 30° (×3 on a canvas, as `facerig eval detection` places them), the box of
# ICT's own 68 vertices, which the network's crops are placed on — derived from renders only, so the
# commercially clean path carries no constant from research-only photos. (Photos' FaceMesh 68 points sit
# lower in the box, brows mapped lower: 0.059, 0.163, 0.945, 1.004 over 1,971 UTKFace / CelebA faces; the
# two re-crops on the network's points make the end result nearly independent of this first guess.)
LANDMARK_BOX_IN_DETECTION = (0.041, 0.081, 0.973, 1.018)


class NoFaceError(PhotoError):
    """No face was found in the photo."""


@dataclass
class Face:
    """One detected face, all coordinates in photo pixels (corner origin, centres at +0.5)."""

    box: tuple[float, float, float, float]     # detector box x0, y0, x1, y1
    landmarks: np.ndarray                       # (68, 2) iBUG order, mapped from FaceMesh (unconfirmed: below)
    score: float                                # detector confidence (0 for the mesh fallback)
    mesh: np.ndarray = field(repr=False, default_factory=lambda: np.zeros((0, 3), np.float32))  # (468, 3)

    @property
    def confirmed(self) -> bool:
        """FaceMesh found this face, so ``landmarks`` are detected points. An unconfirmed face comes from
        the detector's box alone (:func:`detect_faces` with ``unconfirmed``): its ``landmarks`` are the
        corners of the 68-point box expected in that box, (2, 2), until the photo pipeline replaces them
        by the network's own 68 points."""
        return len(self.mesh) > 0

    @property
    def crop_box(self) -> tuple[float, float, float, float]:
        """The canonical network crop of this face (``facemodel.crop.canonical_crop_box``)."""
        return facemodel.crop.canonical_crop_box(self.landmarks)

    @property
    def area(self) -> float:
        lo, hi = self.landmarks.min(0), self.landmarks.max(0)
        return float(np.prod(hi - lo))

    def describe(self) -> str:
        x0, y0, x1, y1 = self.box
        unconfirmed = "" if self.confirmed else ", detector box only (no face mesh: profile or occluded?)"
        return (f"box ({x0:.0f}, {y0:.0f})–({x1:.0f}, {y1:.0f}), {x1 - x0:.0f} px wide, score {self.score:.2f}"
                f"{unconfirmed}")


class _MediaPipe:
    """Lazily created, cached MediaPipe graphs (creation costs ~15 ms; graphs are not re-entrant)."""

    def __init__(self, threads: int = INFERENCE_THREADS) -> None:
        self.lock = threading.Lock()
        self.threads = threads
        self._graphs: dict[str, object] = {}

    def _graph(self, name: str, make):  # noqa: ANN001, ANN202 - the graph classes of .mediapipe_graphs
        if name not in self._graphs:
            try:
                self._graphs[name] = make()
            except ImportError as exc:  # pragma: no cover - depends on the install
                raise RuntimeError(f"the face detector (mediapipe) is not installed: {exc}") from None
        return self._graphs[name]

    @property
    def detector(self) -> FaceDetector:
        return self._graph("detector", lambda: FaceDetector(True, MIN_SCORE, self.threads))

    @property
    def detector_short(self) -> FaceDetector:
        """Short-range model: catches large close-ups the full-range model sometimes misses."""
        return self._graph("detector_short", lambda: FaceDetector(False, MIN_SCORE, self.threads))

    @property
    def mesh(self) -> FaceMeshStatic:
        # several faces: a neighbour inside the crop must not be taken for the detected one
        return self._graph("mesh", lambda: FaceMeshStatic(4, 0.3, self.threads))

    @property
    def mesh_multi(self) -> FaceMeshStatic:
        return self._graph("mesh_multi", lambda: FaceMeshStatic(10, MIN_SCORE, self.threads))

    @property
    def landmarks(self) -> FaceLandmarksOnRegion:
        """FaceMesh's landmark model on a region we give (no detector of its own; one thread is as fast)."""
        return self._graph("landmarks", lambda: FaceLandmarksOnRegion(1))


_MP = _MediaPipe()


def set_inference_threads(threads: int) -> None:
    """The detection pass's XNNPACK threads from now on (the graphs are made again on first use); batch
    workers set 1."""
    global _MP
    with _MP.lock:
        if max(1, int(threads)) != _MP.threads:
            _MP = _MediaPipe(max(1, int(threads)))


def _detect_boxes(image: np.ndarray, short_range: bool = False
                  ) -> list[tuple[tuple[float, float, float, float], float]]:
    h, w = image.shape[:2]
    k = -(-max(h, w) // DETECT_MAX_SIDE)          # integer factor: OpenCV's fast area-averaging path
    cw, ch = w // k * k, h // k * k               # the ≤ k−1 cut-off pixels at the far edges are ignored
    small = image if k == 1 else cv2.resize(image[:ch, :cw], (cw // k, ch // k), interpolation=cv2.INTER_AREA)
    result = (_MP.detector_short if short_range else _MP.detector).process(small)
    out = []
    for det in result.detections or []:
        rb = det.location_data.relative_bounding_box   # relative to the (cut) image: scale-free
        x0, y0 = rb.xmin * cw, rb.ymin * ch
        out.append(((x0, y0, x0 + rb.width * cw, y0 + rb.height * ch), float(det.score[0])))
    return out


def _tile_starts(length: int, tile: int, stride: int) -> list[int]:
    """Tile offsets covering ``length`` (the last tile flush with the far edge)."""
    if length <= tile:
        return [0]
    return list(range(0, length - tile, stride)) + [length - tile]


def _non_max_suppressed(boxes: list[tuple[tuple[float, float, float, float], float]], iou: float = 0.5
                        ) -> list[tuple[tuple[float, float, float, float], float]]:
    """Highest score first; a box overlapping a kept one by more than ``iou`` is dropped."""
    kept: list[tuple[tuple[float, float, float, float], float]] = []
    for box, score in sorted(boxes, key=lambda d: -d[1]):
        if all(_iou(box, k) <= iou for k, _ in kept):
            kept.append((box, score))
    return kept


def _detect_boxes_tiled(image: np.ndarray) -> list[tuple[tuple[float, float, float, float], float]]:
    """The full-range detector on overlapping tiles (sides TILE_SIDE · 1, 2, 4, … px, below the image's
    own size): small faces in large photos (group shots, wide frames). Boxes in photo pixels, duplicates
    from overlapping tiles suppressed."""
    h, w = image.shape[:2]
    out = []
    side = TILE_SIDE
    while side < max(h, w):
        stride = int(side * (1.0 - TILE_OVERLAP))
        for y0 in _tile_starts(h, side, stride):
            for x0 in _tile_starts(w, side, stride):
                tile = np.ascontiguousarray(image[y0:y0 + side, x0:x0 + side])
                out += [((bx0 + x0, by0 + y0, bx1 + x0, by1 + y0), score)
                        for (bx0, by0, bx1, by1), score in _detect_boxes(tile)]
        side *= 2
    return _non_max_suppressed(out)


def _mesh_points(landmarks, width: float, height: float) -> np.ndarray:  # noqa: ANN001
    """MediaPipe normalised landmarks → (468, 3) pixels (z in pixel-width units)."""
    return landmarks_array(landmarks, width, height)[:468]


def _mesh_in_box(image: np.ndarray, box: tuple[float, float, float, float]) -> np.ndarray | None:
    """FaceMesh on a square crop around a detector box; (468, 3) photo pixels or None."""
    x0, y0, x1, y1 = facemodel.crop.box_from_detection(box, MESH_CROP_SCALE)
    crop = crop_square(image, (x0, y0, x1, y1), MESH_CROP_SIZE)
    result = _MP.mesh.process(crop)
    if not result.multi_face_landmarks:
        return None
    s = (x1 - x0) / MESH_CROP_SIZE
    best, best_iou = None, 0.2
    for lms in result.multi_face_landmarks:
        pts = _mesh_points(lms, MESH_CROP_SIZE, MESH_CROP_SIZE)
        pts[:, 0] = x0 + pts[:, 0] * s
        pts[:, 1] = y0 + pts[:, 1] * s
        pts[:, 2] *= s
        lo, hi = pts[:, :2].min(0), pts[:, :2].max(0)
        iou = _iou((float(lo[0]), float(lo[1]), float(hi[0]), float(hi[1])), box)
        if iou > best_iou:
            best, best_iou = pts, iou
    return best


def _iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def face_from_mesh(mesh: np.ndarray, box: tuple[float, float, float, float] | None = None,
                   score: float = 0.0) -> Face:
    lm = mesh[FACEMESH_TO_68, :2].astype(np.float64)
    if box is None:
        lo, hi = mesh[:, :2].min(0), mesh[:, :2].max(0)
        box = (float(lo[0]), float(lo[1]), float(hi[0]), float(hi[1]))
    return Face(box=tuple(float(v) for v in box), landmarks=lm, score=score, mesh=mesh)


def facemesh_on_crop(image: np.ndarray, crop_box: tuple[float, float, float, float], face: Face
                     ) -> np.ndarray | None:
    """(468, 2) photo-pixel FaceMesh points of ``face`` from a second pass on its canonical crop.

    The refinement fits these rather than the detection pass's: FaceMesh framed like the network
    (the canonical crop, resampled to 256²) is more accurate — Helen from the detector box, the
    inner-51 refinement reached 2.92 / 2.20 % (68 / 51 points, round 8) on these, 2.99 / 2.28 % on the
    detection pass's. The landmark model is placed on the detection pass's points, as FaceMesh's video
    mode places it on the previous frame's (:meth:`.mediapipe_graphs.Region.from_mesh`), instead of
    FaceMesh's detector looking for the face again: 2.8 instead of 5.3 ms, Helen's figures the same to
    the third decimal (docs/performance.md). A face without a detection-pass mesh (unconfirmed) is looked
    for by FaceMesh's detector in the crop. The mesh whose 68 points overlap ``face``'s landmarks most
    (IoU ≥ 0.3) is taken; None when there is none. ``points[FACEMESH_TO_68]`` are its 68 points.
    """
    image = np.asarray(image)
    crop = crop_square(image, crop_box, FIT_CROP_SIZE)
    with _MP.lock:
        if face.confirmed:
            region = Region.from_mesh(face.mesh).moved(crop_box[:2], FIT_CROP_SIZE / (crop_box[2] - crop_box[0]))
            found = _MP.landmarks.process(crop, region)
            meshes = [] if found is None else [found]
        else:
            meshes = [_mesh_points(lms, FIT_CROP_SIZE, FIT_CROP_SIZE)
                      for lms in _MP.mesh.process(crop).multi_face_landmarks or []]
    lo, hi = face.landmarks.min(0), face.landmarks.max(0)
    ref = (float(lo[0]), float(lo[1]), float(hi[0]), float(hi[1]))
    best, best_iou = None, 0.3
    for mesh in meshes:
        pts = facemodel.crop.points_from_crop(mesh[:, :2], crop_box, FIT_CROP_SIZE)
        plo, phi = pts[FACEMESH_TO_68].min(0), pts[FACEMESH_TO_68].max(0)
        iou = _iou((float(plo[0]), float(plo[1]), float(phi[0]), float(phi[1])), ref)
        if iou > best_iou:
            best, best_iou = pts, iou
    return best


def face_from_box(box: tuple[float, float, float, float], score: float) -> Face:
    """An unconfirmed face: the detector's box and the 68-point box expected in it."""
    x0, y0, x1, y1 = box
    w, h = x1 - x0, y1 - y0
    a, b, c, d = LANDMARK_BOX_IN_DETECTION
    corners = np.array([[x0 + a * w, y0 + b * h], [x0 + c * w, y0 + d * h]], np.float64)
    return Face(box=tuple(float(v) for v in box), landmarks=corners, score=float(score))


def detect_faces(image: np.ndarray, max_faces: int = 10, unconfirmed: bool = False) -> list[Face]:
    """All faces in an RGB uint8 image, largest first (an empty list when there is none).

    ``unconfirmed``: when no face is confirmed by FaceMesh, detector boxes scored at least
    ``UNCONFIRMED_MIN_SCORE`` are returned as unconfirmed faces (:attr:`Face.confirmed`) instead of
    nothing — for reconstruction, which can place the crop without landmarks; not for anything that
    uses the landmarks as measurements.
    """
    img = np.asarray(image)
    if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
        img = as_rgb8(img)
    img = np.ascontiguousarray(img)
    faces: list[Face] = []
    whole_image: list[tuple[tuple[float, float, float, float], float]] = []   # unconfirmed candidates
    passes = ((lambda: _detect_boxes(img), True), (lambda: _detect_boxes(img, short_range=True), True),
              (lambda: _detect_boxes_tiled(img), False))
    with _MP.lock:
        # the short-range model (large close-ups) only when the full-range one found nothing, the tiles
        # (small faces) only when neither did; a box from a tile needs FaceMesh (tiles multiply the
        # detector's false alarms: one in 20 scikit-image pictures without a face, none on the whole image)
        for detect, candidate in passes:
            boxes = detect()
            if candidate:
                whole_image += boxes
            for box, score in sorted(boxes, key=lambda d: -d[1])[: 2 * max_faces]:
                mesh = _mesh_in_box(img, box)
                if mesh is None:
                    log.debug("detector box %s (score %.2f) has no face mesh; skipped", box, score)
                    continue
                face = face_from_mesh(mesh, box, score)
                if all(_iou(face.box, f.box) < 0.5 for f in faces):
                    faces.append(face)
            if faces:
                break
        if not faces:  # both detectors missed (e.g. a tight face crop): FaceMesh's own detector
            h, w = img.shape[:2]
            result = _MP.mesh_multi.process(img)
            faces = [face_from_mesh(_mesh_points(lm, w, h)) for lm in result.multi_face_landmarks or []]
    if not faces and unconfirmed:
        faces = [face_from_box(box, score) for box, score in _non_max_suppressed(whole_image)
                 if score >= UNCONFIRMED_MIN_SCORE and box[2] - box[0] >= UNCONFIRMED_MIN_SIDE]
        if faces:
            log.info("no face confirmed by FaceMesh; %d detector box(es) kept unconfirmed", len(faces))
    faces.sort(key=lambda f: -f.area)
    return faces[:max_faces]
