"""MediaPipe's face graphs as built by runtime.mediapipe_graphs: the same results as the legacy solutions at any
thread count, FaceMesh's own region policy, and the landmark model on a given region (issue 34)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from runtime import detect, mediapipe_graphs, pipeline
from runtime.mediapipe_graphs import (MESH_EYE_CORNERS, FaceDetector, FaceLandmarksOnRegion, FaceMeshStatic, Region,
                                      expanded_graph)
from runtime.mediapipe_solutions import legacy_face_solutions
from runtime.photo import crop_square

from .conftest import FACES

GRACE = FACES / "demo" / "grace_hopper.jpg"


@pytest.fixture(scope="module")
def grace() -> np.ndarray:
    return cv2.cvtColor(cv2.imread(str(GRACE)), cv2.COLOR_BGR2RGB)


def _boxes(detections) -> list[tuple[float, ...]]:  # noqa: ANN001 - MediaPipe protos
    out = []
    for d in detections or []:
        rb = d.location_data.relative_bounding_box
        out.append((rb.xmin, rb.ymin, rb.width, rb.height, d.score[0],
                    *(v for k in d.location_data.relative_keypoints for v in (k.x, k.y))))
    return out


@pytest.mark.parametrize("full_range", [True, False])
def test_detector_gives_the_legacy_solutions_detections_at_any_thread_count(grace, full_range):
    fd, _ = legacy_face_solutions()
    with fd.FaceDetection(model_selection=int(full_range), min_detection_confidence=0.5) as legacy:
        want = _boxes(legacy.process(grace).detections)
    assert len(want) == 1
    for threads in (1, 2):
        got = _boxes(FaceDetector(full_range, 0.5, threads).process(grace).detections)
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)


def test_static_face_mesh_gives_the_legacy_solutions_points(grace):
    _, fm = legacy_face_solutions()
    crop = cv2.resize(grace, (256, 256), interpolation=cv2.INTER_AREA)
    with fm.FaceMesh(static_image_mode=True, max_num_faces=4, refine_landmarks=False,
                     min_detection_confidence=0.3) as legacy:
        (want,) = legacy.process(crop).multi_face_landmarks
    for threads in (1, 2):
        (got,) = FaceMeshStatic(4, 0.3, threads).process(crop).multi_face_landmarks
        np.testing.assert_allclose(detect._mesh_points(got, 256, 256), detect._mesh_points(want, 256, 256),
                                   rtol=0, atol=1e-3)


def test_region_policy_is_face_meshs_own():
    """Our graph places the model with FaceDetectionFrontDetectionToRoi (box and two keypoints, 1.5×, square,
    turned level); FaceMesh's video mode places it on the previous points with the same transformation and
    points 33 / 263 as the keypoints — read from the installed graph, not assumed."""
    mp = mediapipe_graphs._modules()
    config = expanded_graph(mediapipe_graphs._installed_graph(mp["face_mesh"]._BINARYPB_FILE_PATH))
    from mediapipe.calculators.util import detections_to_rects_calculator_pb2 as rects_pb2
    from mediapipe.calculators.util import rect_transformation_calculator_pb2 as transform_pb2

    def options(part: str, calculator: str, options_type):  # noqa: ANN001, ANN202
        (node,) = [n for n in config.node if n.calculator == calculator and part in n.name]
        return mediapipe_graphs._node_options(node, options_type)

    from_points = options("landmarkstoroi", "DetectionsToRectsCalculator", rects_pb2.DetectionsToRectsCalculatorOptions)
    from_detection = options("detectiontoroi", "DetectionsToRectsCalculator",
                             rects_pb2.DetectionsToRectsCalculatorOptions)
    assert (from_points.rotation_vector_start_keypoint_index,
            from_points.rotation_vector_end_keypoint_index) == MESH_EYE_CORNERS
    assert (from_detection.rotation_vector_start_keypoint_index,
            from_detection.rotation_vector_end_keypoint_index) == (0, 1)
    assert from_points.rotation_vector_target_angle_degrees == from_detection.rotation_vector_target_angle_degrees
    t_points = options("landmarkstoroi", "RectTransformationCalculator",
                       transform_pb2.RectTransformationCalculatorOptions)
    t_detection = options("detectiontoroi", "RectTransformationCalculator",
                          transform_pb2.RectTransformationCalculatorOptions)
    assert t_points == t_detection and t_points.scale_x == 1.5 and t_points.square_long


def test_region_moves_between_images():
    region = Region((10.0, 20.0, 50.0, 80.0), ((15.0, 30.0), (45.0, 31.0)))
    moved = region.moved((10.0, 20.0), 2.0)
    assert moved.box == (0.0, 0.0, 80.0, 120.0) and moved.eyes == ((10.0, 20.0), (70.0, 22.0))
    points = np.zeros((468, 3))
    points[:, :2] = np.random.default_rng(0).uniform(0, 100, (468, 2))
    from_mesh = Region.from_mesh(points)
    assert from_mesh.box == (*points[:, :2].min(0), *points[:, :2].max(0))
    assert from_mesh.eyes == (tuple(points[MESH_EYE_CORNERS[0], :2]), tuple(points[MESH_EYE_CORNERS[1], :2]))


def test_landmarks_on_a_region_agree_with_face_mesh_and_see_no_face_in_a_blank(grace):
    """The second pass (the model on the first pass's region of the canonical crop) against FaceMesh's static graph
    on the same crop (two placements of the same model: Grace 1.2 px apart on average, the bench photo 0.3; the face
    is ≈ 150 px wide there); a region of plain grey has no face."""
    (face,) = detect.detect_faces(grace)
    box = face.crop_box
    crop = crop_square(grace, box, detect.FIT_CROP_SIZE)
    scale = detect.FIT_CROP_SIZE / (box[2] - box[0])
    graph = FaceLandmarksOnRegion(1)
    got = graph.process(crop, Region.from_mesh(face.mesh).moved(box[:2], scale))
    (want,) = FaceMeshStatic(1, 0.3, 1).process(crop).multi_face_landmarks
    want = detect._mesh_points(want, detect.FIT_CROP_SIZE, detect.FIT_CROP_SIZE)
    assert got.shape == (468, 3) and got.dtype == np.float32
    err = np.linalg.norm(got[:, :2] - want[:, :2], axis=1)
    assert err.mean() < 2.0, err.mean()
    blank = np.full_like(crop, 128)
    assert graph.process(blank, Region((64.0, 64.0, 192.0, 192.0), ((100.0, 110.0), (156.0, 110.0)))) is None
    # facemesh_on_crop is this pass, in photo pixels
    points = detect.facemesh_on_crop(grace, box, face)
    np.testing.assert_allclose(points, got[:, :2] / scale + np.asarray(box[:2]), atol=1e-3)


def test_one_thread_per_photo_gives_the_same_reconstruction(grace, monkeypatch):
    """Batch workers run a photo on one core (set_photo_threads(1)); the default 2 threads (detector, Gram, FaceMesh
    beside the network and the fit prepared beside FaceMesh) give the very same numbers. The shipped regressor,
    refined."""
    prepared = []
    real = pipeline.prepare_refinement
    monkeypatch.setattr(pipeline, "prepare_refinement", lambda *a, **k: prepared.append(real(*a, **k)) or prepared[-1])
    try:
        pipeline.set_photo_threads(2)
        two = pipeline.reconstruct_photo(grace)
        assert len(prepared) == 1 and prepared[0].which == two.refinement["points"]
        pipeline.set_photo_threads(1)
        one = pipeline.reconstruct_photo(grace)
        assert len(prepared) == 1          # one core: FaceMesh first, then the whole fit
    finally:
        pipeline.set_photo_threads(pipeline.DEFAULT_PHOTO_THREADS)
    assert not two.refinement["skipped"] and two.refinement["points"] == one.refinement["points"]
    np.testing.assert_array_equal(one.fit_landmarks, two.fit_landmarks)
    for name in ("identity", "expression", "corrective", "rotation", "translation", "camera"):
        np.testing.assert_array_equal(getattr(one.params, name), getattr(two.params, name))


def test_landmarks_read_from_wire_bytes_equal_the_field_by_field_reading(grace):
    from mediapipe.framework.formats import landmark_pb2

    (face,) = detect.detect_faces(grace)
    crop = cv2.resize(grace, (256, 256), interpolation=cv2.INTER_AREA)
    (lms,) = FaceMeshStatic(1, 0.3, 1).process(crop).multi_face_landmarks
    slow = np.array([(p.x * 256, p.y * 300, p.z * 256) for p in lms.landmark], np.float32)
    np.testing.assert_array_equal(mediapipe_graphs.landmarks_array(lms, 256, 300), slow)
    odd = landmark_pb2.NormalizedLandmarkList()          # records of different lengths: the field-by-field path
    odd.landmark.add(x=0.5, y=0.25, z=0.0, visibility=0.9)
    odd.landmark.add(x=0.1, y=0.2, z=0.3)
    np.testing.assert_allclose(mediapipe_graphs.landmarks_array(odd, 100, 200), [[50, 50, 0], [10, 40, 30]], rtol=1e-6)
    assert face.mesh.dtype == np.float32 and face.mesh.shape == (468, 3)


def test_a_forked_child_fits_with_a_gram_thread_of_its_own(grace):
    """The fit's Gram thread does not survive fork(); a forked child (a torch DataLoader worker, say) must make
    its own instead of waiting on the parent's, which would never answer. (MediaPipe's graphs do not survive a
    fork either: batch workers are spawned; the fit alone is forked here.)"""
    import os
    import select

    from facemodel import landmark_solver, side_thread

    landmark_solver.set_gram_threads(2)
    recon = pipeline.reconstruct_photo(grace)            # its fitted points are kept: refining again needs no MediaPipe
    parent = pipeline.refine_reconstruction(recon)      # the parent's Gram thread exists now
    assert not parent.refinement["skipped"] and "gram" in side_thread._POOLS
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:                                           # child: the same fit, then report and leave at once
        code = 1
        try:
            child = pipeline.refine_reconstruction(recon)
            code = 0 if np.array_equal(child.params.identity, parent.params.identity) else 2
        finally:
            os.write(write, bytes([code]))
            os._exit(0)
    os.close(write)
    ready, _, _ = select.select([read], [], [], 60)
    try:
        assert ready, "the forked child hung"
        assert os.read(read, 1) == b"\x00"
    finally:
        os.close(read)
        if not ready:
            os.kill(pid, 9)
        os.waitpid(pid, 0)
