"""Photo → FaceParams in the photo's own camera (no bpy): load, detect, crop, regress, uncrop.

The regressor sees the canonical crop, so its camera is the crop camera
(``DEFAULT_CAMERA`` relative to the crop). Cropping and resizing keep a pinhole camera a
pinhole camera, so the photo camera follows exactly by inverting
``facemodel.camera.crop_camera``; rotation and translation (camera space) are unchanged.
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import Future
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from .detect import Face, NoFaceError, detect_faces, facemesh_on_crop
from .fm import facemodel
from .photo import PhotoError, as_rgb8, check_size, crop_square, decode_photo
from .regressor import Regressor, resolve_regressor_path

log = logging.getLogger(__name__)

_REGRESSORS: dict[Path, tuple[tuple[int, int], Regressor]] = {}
_REFINERS: dict[str, "facemodel.landmark_fit.LandmarkRefiner"] = {}
_LANDMARK_ARRAYS: dict[str, "facemodel.ModelArrays"] = {}
_FACE_MODELS: dict[str, "facemodel.FaceModel"] = {}
RECROP_PASSES = 2   # an unconfirmed face: crops re-placed on the network's own 68 points (docs/results.md, Detection)
# onnxruntime threads of the pipeline's regressor. One photo is a batch of one (≈ 1 ms): a second thread gains
# nothing, and onnxruntime's idle threads spin, taking the other core from MediaPipe and the landmark fit that
# follow. The bench photo, separate processes at load ≈ 4: 29–30 ms with one thread, 32–51 ms with two (fit
# 7.3–7.5 against 7.7–13.8 ms, FaceMesh on the crop 5.0–5.2 against 5.3–9.3 ms); outputs identical
# (docs/performance.md).
ONNX_THREADS = 1
# FaceMesh's second pass (the fit's points, 2.8 ms) needs only the crop box, so with 2 cores it runs on a
# side thread while the network predicts (1.3 ms; both let go of the GIL) and the fit is prepared (≈ 1 ms: what
# needs no points). Batch workers set False.
DEFAULT_PHOTO_THREADS = facemodel.side_thread.PHOTO_THREADS     # 2 where there are 2 cores
OVERLAP_SECOND_PASS = DEFAULT_PHOTO_THREADS >= 2


def set_photo_threads(threads: int) -> None:
    """How many cores one photo may use: the detection pass's XNNPACK threads, the fit's Gram threads and the
    second FaceMesh pass beside the network (:data:`OVERLAP_SECOND_PASS`). Batch workers, a photo per core, set 1;
    :data:`DEFAULT_PHOTO_THREADS` otherwise."""
    global OVERLAP_SECOND_PASS
    from . import detect

    threads = max(1, int(threads))
    detect.set_inference_threads(threads)
    facemodel.landmark_solver.set_gram_threads(threads)
    OVERLAP_SECOND_PASS = threads >= 2


def _timed(fn: Any, *args: Any) -> tuple[Any, float]:
    t = time.perf_counter()
    out = fn(*args)
    return out, (time.perf_counter() - t) * 1e3


def get_regressor(model: Regressor | str | Path | None = None) -> Regressor:
    """A cached :class:`Regressor` on :data:`ONNX_THREADS` threads (sessions take ~50 ms to create; Blender
    calls repeatedly).

    The cache is keyed by the file's modification time and size too, so a model rewritten in place
    (``facerig eval refine-gate --write`` adds its refinement limit) is read again, not served stale.
    """
    if isinstance(model, Regressor):
        return model
    path = resolve_regressor_path(model)
    try:
        st = path.stat()
        stamp = (st.st_mtime_ns, st.st_size)
    except OSError:
        stamp = (0, 0)        # Regressor(path) raises the user-facing error for a missing file
    cached = _REGRESSORS.get(path)
    if cached is None or cached[0] != stamp:
        _REGRESSORS[path] = (stamp, Regressor(path, ONNX_THREADS))
    return _REGRESSORS[path][1]


def photo_camera(crop_cam: np.ndarray, box: tuple[float, float, float, float], width: int,
                 height: int) -> np.ndarray:
    """Inverse of ``crop_camera``: crop-relative intrinsics → intrinsics relative to the photo."""
    x0, y0, x1, y1 = box
    c = np.asarray(crop_cam, np.float64)
    side_x, side_y = x1 - x0, y1 - y0
    f_px = c[..., 0] * side_x
    cx = c[..., 1] * side_x + x0
    cy = c[..., 2] * side_y + y0
    return np.stack([f_px / width, cx / width, cy / height], -1).astype(np.float32)


def load_face_model(path: str | Path | None = None) -> "facemodel.FaceModel":
    """The ICT face model at ``path`` (None = the installed one), cached per file (loading takes ~0.25 s)."""
    resolved = str(facemodel.resolve_model_path(str(path) if path else None))
    if resolved not in _FACE_MODELS:
        _FACE_MODELS[resolved] = facemodel.FaceModel.load(resolved)
    return _FACE_MODELS[resolved]


def _per_face_model(cache: dict[str, Any], face_model: "facemodel.FaceModel | str | Path | None",
                    build: Any) -> Any:
    """``build(model)`` for ``face_model`` (a model, its file, or None = the installed ICT model),
    cached per model file."""
    if face_model is None or isinstance(face_model, (str, Path)):
        key = str(facemodel.resolve_model_path(str(face_model) if face_model else None))
        if key not in cache:
            cache[key] = build(load_face_model(key))
        return cache[key]
    key = str(face_model.path) if face_model.path else f"in-memory {id(face_model)}"
    if key not in cache:
        cache[key] = build(face_model)
    return cache[key]


def get_refiner(face_model: "facemodel.FaceModel | str | Path | None" = None
                ) -> "facemodel.landmark_fit.LandmarkRefiner":
    """The landmark refiner for ``face_model``, cached per model file."""
    return _per_face_model(_REFINERS, face_model, facemodel.landmark_fit.LandmarkRefiner.from_model)


def landmark_arrays(face_model: "facemodel.FaceModel | str | Path | None" = None) -> "facemodel.ModelArrays":
    """The model's 68 landmark vertices (the fixed ones the renders' crops are placed on), cached."""
    return _per_face_model(_LANDMARK_ARRAYS, face_model,
                           lambda m: m.arrays.subset(m.landmark_indices("fixed")))


def refine_on_face(crop_params: Any, landmarks: np.ndarray, box: tuple[float, float, float, float], size: int,
                   face_model: "facemodel.FaceModel | str | Path | None" = None, fit_identity: bool = True,
                   max_disagreement: float | None = None,
                   prepared: "facemodel.landmark_fit.PreparedRefinement | None" = None) -> tuple[Any, dict[str, Any]]:
    """The crop's params refined on the face's detected photo-pixel ``landmarks``: FaceMesh's
    (468, 2) points (the dense fit) or (68, 2) iBUG points (their inner 51).

    The regressor underfits the detector it was taught from; a 10-step MAP fit of identity,
    expression and pose to the detected points, in the crop, gains that back and more
    (docs/research-log.md, "Refinement on detected landmarks"). ``fit_identity=False`` keeps the identity
    of ``crop_params``. Returns the params and a summary (mean point distance before/after, crop px;
    ``skipped`` says why the params were left alone when detector and network disagree more than
    ``max_disagreement``, the regressor's own limit, default 8 % of the face size). ``prepared``: this very
    refinement already prepared (:func:`prepare_refinement`) for as many points as ``landmarks`` has.
    """
    pts = facemodel.crop.points_to_crop(landmarks, box, size)
    if prepared is not None and prepared.n_points == len(pts):
        fit = prepared.refine(pts)
    else:
        fit = get_refiner(face_model).refine(crop_params, pts, size, fit_identity, max_disagreement)
    return fit.params, refinement_summary(size, fit.skipped, fit.rms_before_px, fit.rms_after_px,
                                          fit.steps_accepted, fit.points)


def prepare_refinement(crop_params: Any, size: int, n_points: int,
                       face_model: "facemodel.FaceModel | str | Path | None" = None, fit_identity: bool = True,
                       max_disagreement: float | None = None) -> "facemodel.landmark_fit.PreparedRefinement":
    """:func:`refine_on_face`'s fit made ready before its ``n_points`` landmarks are known
    (``LandmarkRefiner.prepare``): the photo path runs it while FaceMesh's second pass finds them."""
    return get_refiner(face_model).prepare(crop_params, size, n_points, fit_identity, max_disagreement)


def refinement_summary(crop_size_px: int, skipped: str = "", before_px: float | None = None,
                       after_px: float | None = None, steps_accepted: int = 0, points: str = "") -> dict[str, Any]:
    """The ``refinement`` record (JSON output, Blender property) of a fit or of one that did not run
    (``skipped`` says why; logged here, once for every path that skips)."""
    if skipped:
        log.warning("refinement skipped: %s", skipped)
    return {"landmark_error_before_px": before_px, "landmark_error_after_px": after_px,
            "steps_accepted": steps_accepted, "crop_size_px": crop_size_px, "skipped": skipped, "points": points}


@dataclass
class PhotoReconstruction:
    """Everything the Blender side and the CLI need from one photo."""

    params: Any                      # FaceParams (unbatched), camera relative to the photo
    crop_params: Any                 # the same face in the crop camera (network output)
    image: np.ndarray = field(repr=False)  # uint8 RGB (H, W, 3), upright
    faces: list[Face]                # every detected face, largest first
    face_index: int
    crop_box: tuple[float, float, float, float]
    crop: np.ndarray = field(repr=False)
    timings: dict[str, float]        # milliseconds per stage
    model_version: str
    source: str = ""
    regressed_params: Any = None     # the network's own crop params when refined (else None)
    refinement: dict[str, Any] | None = None
    fit_landmarks: np.ndarray | None = field(repr=False, default=None)  # (468 or 68, 2) the points fitted
    refine_max_disagreement: float | None = None  # the regressor's limit for trusting detected landmarks
    decode_scale: int = 1            # a photo over the decode budget was read reduced by this (limits.py)

    @property
    def face(self) -> Face:
        return self.faces[self.face_index]

    @property
    def landmarks(self) -> np.ndarray:
        """(68, 2) detected landmarks of the chosen face, photo pixels (an unconfirmed face: the
        network's own, :attr:`Face.confirmed`)."""
        return self.face.landmarks

    @property
    def width(self) -> int:
        return int(self.image.shape[1])

    @property
    def height(self) -> int:
        return int(self.image.shape[0])

    def summary(self) -> dict[str, Any]:
        # pixel coordinates (boxes, landmarks) are in the decoded image of ``image_size``; × decode_scale
        # gives the file's pixels (1 unless the photo was over the decode budget, docs/robustness.md)
        return {"source": self.source, "image_size": [self.width, self.height], "decode_scale": self.decode_scale,
                "face_index": self.face_index,
                "faces": [{"box": list(f.box), "score": f.score, "confirmed": f.confirmed} for f in self.faces],
                "crop_box": list(self.crop_box), "model_version": self.model_version,
                "refinement": self.refinement, "timings_ms": self.timings}


class FaceIndexError(PhotoError):
    """The requested face index is not among the faces found in this photo."""


def choose_face(faces: list[Face], face_index: int | None) -> int:
    if not faces:
        raise NoFaceError("no face found in the photo (try a larger, frontal, well-lit face)")
    if face_index is None:
        return 0
    if not 0 <= face_index < len(faces):
        listing = "; ".join(f"{i}: {f.describe()}" for i, f in enumerate(faces))
        raise FaceIndexError(f"face {face_index} does not exist; {len(faces)} found: {listing}")
    return face_index


def reconstruct_photo(path_or_image: str | Path | np.ndarray, face_index: int | None = None,
                      model: Regressor | str | Path | None = None,
                      faces: list[Face] | None = None, refine: bool = True,
                      face_model: "facemodel.FaceModel | str | Path | None" = None) -> PhotoReconstruction:
    """Reconstruct one face of a photo; ``face_index`` counts from the largest face (0).

    ``faces`` skips detection when the caller already has them (the add-on detects once to
    let the user choose, then reconstructs). ``refine`` fits the prediction to the detected
    inner landmarks (:func:`refine_on_face`; needs the face model, ``face_model`` or the
    installed one).
    """
    timings: dict[str, float] = {}
    t = time.perf_counter()
    regressor = get_regressor(model)
    timings["model_load"] = (time.perf_counter() - t) * 1e3

    t = time.perf_counter()
    scale = 1
    if isinstance(path_or_image, np.ndarray):
        image, source = as_rgb8(path_or_image), ""
        check_size(image)
    else:
        decoded = decode_photo(path_or_image)
        image, source, scale = decoded.image, str(path_or_image), decoded.scale
    timings["decode"] = (time.perf_counter() - t) * 1e3

    t = time.perf_counter()
    if faces is None:
        faces = detect_faces(image, unconfirmed=True)
    index = choose_face(faces, face_index)
    timings["detect"] = (time.perf_counter() - t) * 1e3
    if len(faces) > 1:
        log.info("%d faces found; using %d (%s)", len(faces), index, faces[index].describe())

    t = time.perf_counter()
    box = faces[index].crop_box
    second_pass = None
    if refine and OVERLAP_SECOND_PASS and faces[index].confirmed:   # side by side with the network
        second_pass = facemodel.side_thread.side_thread("facemesh").submit(_timed, facemesh_on_crop, image, box,
                                                                            faces[index])
    crop = crop_square(image, box, regressor.input_size)
    timings["crop"] = (time.perf_counter() - t) * 1e3

    t = time.perf_counter()
    crop_params = regressor.predict(crop[None])[0].numpy()
    timings["regress"] = (time.perf_counter() - t) * 1e3
    if not faces[index].confirmed:
        t = time.perf_counter()
        faces, box, crop, crop_params = _recrop_unconfirmed(image, faces, index, box, crop, crop_params,
                                                            regressor, face_model)
        timings["recrop"] = (time.perf_counter() - t) * 1e3

    h, w = image.shape[:2]
    recon = PhotoReconstruction(params=_in_photo(crop_params, box, w, h), crop_params=crop_params, image=image,
                                faces=faces, face_index=index, crop_box=box, crop=crop, timings=timings,
                                model_version=regressor.model_version, source=source,
                                refine_max_disagreement=regressor.refine_max_disagreement, decode_scale=scale)
    if low_res := resolution_warning(recon):
        log.warning(low_res)
    return refine_reconstruction(recon, face_model, second_pass=second_pass) if refine else recon


def _recrop_unconfirmed(image: np.ndarray, faces: list[Face], index: int, box: tuple[float, float, float, float],
                        crop: np.ndarray, crop_params: Any, regressor: Regressor,
                        face_model: "facemodel.FaceModel | str | Path | None") -> tuple[list[Face], Any, Any, Any]:
    """A face without detected landmarks: its first crop comes from the detector box, so the crop is
    placed again on the network's own 68 points (as the renders' crops are) and the network run again,
    ``RECROP_PASSES`` times. On 600 test renders this brings the crop from 7.0 to 3.6 % of its side off
    centre and the aligned vertex error from 4.64 to 4.43 mm (4.19 from the exact crop; docs/results.md).
    The face's ``landmarks`` become those of the last pass."""
    size = regressor.input_size
    arrays = landmark_arrays(face_model)
    points = None
    for k in range(RECROP_PASSES + 1):
        points = facemodel.crop.points_from_crop(
            np.asarray(facemodel.formation.landmarks_2d(arrays, crop_params, size, size), np.float64), box, size)
        if k == RECROP_PASSES:
            break
        box = facemodel.crop.canonical_crop_box(points)
        crop = crop_square(image, box, size)
        crop_params = regressor.predict(crop[None])[0].numpy()
    faces = list(faces)
    faces[index] = replace(faces[index], landmarks=points)
    log.warning("FaceMesh did not confirm the face (%s): its crop is placed on the network's own landmarks",
                faces[index].describe())
    return faces, box, crop, crop_params


def _in_photo(crop_params: Any, box: tuple[float, float, float, float], width: int, height: int) -> Any:
    """Crop-camera params → the same face in the photo camera."""
    p = crop_params
    return replace(p, camera=photo_camera(p.camera, box, width, height))


def refine_reconstruction(recon: PhotoReconstruction, face_model: "facemodel.FaceModel | str | Path | None" = None,
                          identity: np.ndarray | None = None,
                          second_pass: "Future[tuple[np.ndarray | None, float]] | None" = None) -> PhotoReconstruction:
    """``recon`` refined on its face's detected inner landmarks (:func:`refine_on_face`).

    The points are FaceMesh's 468 on the canonical crop (:func:`detect.facemesh_on_crop`, one
    more FaceMesh pass, ≈ 3 ms), kept in ``fit_landmarks``. Starts from the network's own
    prediction (also when ``recon`` was refined before). With an
    ``identity`` (several photos of one person: the aggregate) that identity is kept fixed and
    only expression and pose are fitted. ``second_pass``: that FaceMesh pass already started on
    :func:`_timed` (:func:`reconstruct_photo` runs it beside the network); its own time is reported, and
    the fit is prepared (:func:`prepare_refinement`: its problem and first Gauss-Newton matrix, ≈ 1 ms)
    while it runs — the same numbers as preparing it afterwards.
    """
    t = time.perf_counter()
    mesh_ms = prepared = None
    prepare_ms = 0.0   # the fit's preparation, while FaceMesh's second pass runs: counted in the fit's time
    points = recon.fit_landmarks
    regressed = recon.regressed_params if recon.regressed_params is not None else recon.crop_params
    start = regressed
    if identity is not None:
        start = replace(regressed, identity=np.asarray(identity, np.asarray(regressed.identity).dtype).copy())
    size = int(recon.crop.shape[0])
    if points is None:
        if second_pass is not None:   # the fit made ready while FaceMesh runs (both cores busy)
            prepared = prepare_refinement(start, size, len(facemodel.landmark_maps.MEDIAPIPE_TO_ICT), face_model,
                                          identity is None, recon.refine_max_disagreement)
            prepare_ms = (time.perf_counter() - t) * 1e3
            points, mesh_ms = second_pass.result()
        else:
            points = facemesh_on_crop(recon.image, recon.crop_box, recon.face)
        if points is None and not recon.face.confirmed:   # nothing detected to fit: the network's prediction
            return _unrefined(recon, regressed, start, "no detected landmarks (FaceMesh did not find this "
                                                       "face in its crop either)", (time.perf_counter() - t) * 1e3)
        if points is None:   # FaceMesh lost the face in the canonical crop: the detection pass's points
            log.info("no FaceMesh face in the canonical crop; refining on the detection pass's landmarks")
            mesh = recon.face.mesh
            points = mesh[:, :2] if len(mesh) else recon.face.landmarks
    t_mesh = time.perf_counter()
    crop_params, info = refine_on_face(start, points, recon.crop_box, size, face_model,
                                       fit_identity=identity is None,
                                       max_disagreement=recon.refine_max_disagreement, prepared=prepared)
    t_end = time.perf_counter()
    timings = {**recon.timings, "refine_landmarks": (t_mesh - t) * 1e3 if mesh_ms is None else mesh_ms,
               "refine": (t_end - t_mesh) * 1e3 + prepare_ms}
    return replace(recon, params=_in_photo(crop_params, recon.crop_box, recon.width, recon.height),
                   crop_params=crop_params, regressed_params=regressed, refinement=info, timings=timings,
                   fit_landmarks=np.asarray(points, np.float64))


LOW_RESOLUTION_CROP_PX = 96   # canonical crop side below which the network's 128² input is clearly upscaled


def resolution_warning(recon: "PhotoReconstruction") -> str:
    """A line for the user when the face is small in the photo (empty otherwise): the network sees an
    upscaled crop and the texture is projected from few pixels."""
    side = float(recon.crop_box[2] - recon.crop_box[0])
    if side >= LOW_RESOLUTION_CROP_PX:
        return ""
    name = Path(recon.source).name if recon.source else "the photo"
    face = side / facemodel.crop.CROP_SCALE
    return (f"{name}: the face is only {face:.0f} px across; the network sees it upscaled "
            f"{int(recon.crop.shape[0]) / side:.1f}× and the texture is coarse "
            "(a larger or closer photo gives more detail)")


def photo_warnings(recon: Any) -> list[str]:
    """What the user should know about a result (a single-photo or a same-person one): faces FaceMesh
    did not confirm, faces too small for detail, then refinements skipped (:func:`refinement_warnings`)."""
    photos = getattr(recon, "photos", None) or [recon]
    unconfirmed = [f"{Path(r.source).name if r.source else 'the photo'}: the face was found by the detector "
                   "alone (a profile or a covered face?); its crop follows the network's own landmarks"
                   for r in photos if not r.face.confirmed]
    return unconfirmed + [w for w in map(resolution_warning, photos) if w] + refinement_warnings(recon)


def _unrefined(recon: PhotoReconstruction, regressed: Any, params: Any, reason: str, ms: float
               ) -> PhotoReconstruction:
    """``recon`` with ``params`` (the network's prediction, with several photos' shape if given) unfitted,
    recorded like a refinement the trust limit skipped."""
    info = refinement_summary(int(recon.crop.shape[0]), reason)
    return replace(recon, params=_in_photo(params, recon.crop_box, recon.width, recon.height), crop_params=params,
                   regressed_params=regressed, refinement=info, timings={**recon.timings, "refine_landmarks": ms})


def refinement_warnings(recon: Any) -> list[str]:
    """One line per photo whose landmark refinement was skipped (a single-photo or a same-person result),
    for the user to see: the mesh then is the network's raw prediction."""
    photos = getattr(recon, "photos", None) or [recon]
    out = []
    for r in photos:
        skipped = (r.refinement or {}).get("skipped")
        if skipped:
            name = Path(r.source).name if r.source else "the photo"
            out.append(f"{name}: landmark refinement skipped, {skipped}; the network's prediction is kept")
    return out


def overlay_error(model: "facemodel.FaceModel", recon: PhotoReconstruction, jawline: str = "visible") -> float:
    """Mean distance between the reconstruction's projected landmarks and the detected ones,
    as a fraction of sqrt(w·h) of the detected landmark box (docs/conventions.md, "Metrics": NME (bbox)).

    Says how well the mesh overlays the photo; ``jawline='visible'`` uses ICT's contour
    vertices, closer to what the detector marks on a turned face.
    """
    arrays = model.arrays.subset(model.landmark_indices(jawline))
    pix = np.asarray(facemodel.formation.landmarks_2d(arrays, recon.params.numpy(), recon.width, recon.height))
    lm = recon.landmarks
    size = float(np.sqrt(np.prod(lm.max(0) - lm.min(0))))
    return float(np.linalg.norm(pix - lm, axis=1).mean() / max(size, 1e-6))
