"""Landmark harness pieces: MediaPipe map, PnP yaw convention, contour variants, known answers."""

import numpy as np
import pytest

from facemodel import FaceParams
from facemodel.formation import landmarks_2d

from .conftest import SHARED


def test_mediapipe_map_is_a_valid_injective_table():
    from evaluation.mediapipe_baseline import ANCHORS_68, ANCHORS_MP, MEDIAPIPE_TO_68

    m = np.array(MEDIAPIPE_TO_68)
    assert m.shape == (68,) and m.min() >= 0 and m.max() < 468
    assert len(set(m.tolist())) == 68
    assert [MEDIAPIPE_TO_68[i] for i in ANCHORS_68] == list(ANCHORS_MP)


def test_mediapipe_map_respects_the_published_semantic_groups():
    from mediapipe.python.solutions import face_mesh_connections as fmc

    from evaluation.mediapipe_baseline import MEDIAPIPE_TO_68

    def verts(edges):
        return {v for e in edges for v in e}

    groups = {range(0, 17): fmc.FACEMESH_FACE_OVAL, range(17, 22): fmc.FACEMESH_RIGHT_EYEBROW,
              range(22, 27): fmc.FACEMESH_LEFT_EYEBROW, range(27, 36): fmc.FACEMESH_NOSE,
              range(36, 42): fmc.FACEMESH_RIGHT_EYE, range(42, 48): fmc.FACEMESH_LEFT_EYE,
              range(48, 68): fmc.FACEMESH_LIPS}
    for points, edges in groups.items():
        assert {MEDIAPIPE_TO_68[i] for i in points} <= verts(edges), points


@pytest.mark.slow
def test_mediapipe_map_is_reproduced_by_its_derivation(model_path):
    """The table equals what derive_mapping computes from non-benchmark images (no labels)."""
    from evaluation.mediapipe_baseline import MEDIAPIPE_TO_68, derive_mapping, reference_images

    images = reference_images(SHARED)
    if len(images) < 10:
        pytest.skip("reference images (faces/demo, faces/unlabeled/utkface_200) not present")
    assert not any("helen" in str(p).lower() for p in images)
    assert derive_mapping(images, str(model_path)) == MEDIAPIPE_TO_68


@pytest.mark.parametrize("yaw_deg,pitch_deg", [(0.0, 0.0), (25.0, 5.0), (-40.0, -10.0), (55.0, 0.0)])
def test_pnp_pose_recovers_yaw_in_facerig_convention(face_model, yaw_deg, pitch_deg):
    """Project the mean face with a known pose through facerig's camera; PnP must give it back, also
    from the labelled points alone (the annotation yaw that bins a benchmark: its own crop box)."""
    from evaluation.pose import annotation_yaw_deg, ict_mean_landmarks, pnp_pose
    from facemodel.priors import place_in_crop

    p = FaceParams.neutral(n_identity=0)
    p.rotation = np.radians([yaw_deg, pitch_deg, 3.0]).astype(np.float32)
    arrays = face_model.arrays.subset(face_model.landmark_indices())
    p.translation = place_in_crop(arrays, p)
    size = 256
    pts = np.asarray(landmarks_2d(arrays, p, size, size), np.float64)
    ref = ict_mean_landmarks(str(face_model.path))
    rot = np.degrees(pnp_pose(pts, ref, (0.0, 0.0, float(size), float(size))))
    assert rot[0] == pytest.approx(yaw_deg, abs=0.5)
    assert rot[1] == pytest.approx(pitch_deg, abs=0.5)
    assert annotation_yaw_deg(pts, str(face_model.path)) == pytest.approx(yaw_deg, abs=1.0)


def test_bins_use_the_annotation_yaw_not_the_prediction():
    """Two models that disagree about a face's yaw are still binned on the same images."""
    from evaluation.landmarks import ImageResult, Prediction, summarize

    gt = np.array([[x, y] for x in range(10, 90, 10) for y in range(10, 100, 11)], np.float64)[:68]
    near = Prediction(gt + 1.0, np.radians([55.0, 0.0, 0.0]), (0.0, 0.0, 100.0, 100.0))
    far = Prediction(gt + 3.0, np.radians([5.0, 0.0, 0.0]), (0.0, 0.0, 100.0, 100.0))
    results = [ImageResult("a", gt, near, annotation_yaw_deg=10.0),
               ImageResult("b", gt, far, annotation_yaw_deg=-40.0),
               ImageResult("c", gt, None, "no face", annotation_yaw_deg=70.0)]
    s = summarize(results)
    assert (s["n"], s["failed"]) == (2, 1)
    assert [s["yaw_bins"][b]["n"] for b in ("0-30", "30-60", "60-90")] == [1, 1, 0]   # failures count nowhere
    a_nme, b_nme = (r.nmes()["nme_bbox_68"] for r in results[:2])
    assert s["yaw_bins"]["0-30"]["nme_bbox_68"] == pytest.approx(a_nme) and b_nme > a_nme
    assert s["yaw_bins"]["30-60"]["nme_bbox_68"] == pytest.approx(b_nme)


def test_contour_variants(face_model):
    from evaluation.contour import JAW_LEFT, JAW_RIGHT, ContourLandmarks
    from facemodel.priors import place_in_crop

    proj = ContourLandmarks(face_model)
    assert min(proj.line_sizes) >= 2  # every jaw line has candidates besides the fixed vertex
    arrays = face_model.arrays.subset(face_model.landmark_indices())
    p = FaceParams.neutral(n_identity=0)
    p.rotation = np.radians([50.0, 0.0, 0.0]).astype(np.float32)
    p.translation = place_in_crop(arrays, p)
    v = proj.all_variants(p, 128, 128)
    assert set(v) == {"fixed", "visible", "march"}
    np.testing.assert_allclose(v["fixed"], np.asarray(landmarks_2d(arrays, p, 128, 128)), atol=1e-4)
    for k in range(17, 68):  # inner points are the same in every variant
        np.testing.assert_allclose(v["march"][k], v["fixed"][k], atol=1e-4)
    nose = v["fixed"][30, 0]
    side = {k: -1.0 for k in JAW_RIGHT} | {k: 1.0 for k in JAW_LEFT}
    out_march = np.array([side[k] * (v["march"][k, 0] - nose) for k in side])
    out_fixed = np.array([side[k] * (v["fixed"][k, 0] - nose) for k in side])
    assert (out_march >= out_fixed - 1e-6).all()  # marching only ever moves outwards
    # Turned 50° (nose towards image right) the far side's silhouette is the cheek, not the jaw.
    far = [j for j, k in enumerate(side) if k in JAW_LEFT]
    assert (out_march[far] - out_fixed[far]).max() > 1.0
    with pytest.raises(ValueError):
        proj.landmarks(p, 128, 128, "bogus")


def _synthetic_labelled_photo(tmp_path, face_model, onnx_params):
    """A grey photo whose .pts is exactly the constant regressor's face at a known place."""
    import cv2

    from evaluation.pts import write_pts

    size = 128
    arrays = face_model.arrays.subset(face_model.landmark_indices())
    crop_pts = np.asarray(landmarks_2d(arrays, onnx_params, size, size), np.float64)
    box = (150.0, 90.0, 350.0, 290.0)  # canonical crop of these points in the photo
    photo_pts = np.stack([box[0] + crop_pts[:, 0] * 200 / size, box[1] + crop_pts[:, 1] * 200 / size], -1)
    folder = tmp_path / "photos"
    folder.mkdir()
    cv2.imwrite(str(folder / "face.png"), np.full((400, 500, 3), 128, np.uint8))
    write_pts(folder / "face.pts", photo_pts)
    return folder, photo_pts


def test_facerig_path_known_answer(tmp_path, face_model):
    """Crop → regress → project → map back is exact: a model predicting the truth scores ~0."""
    pytest.importorskip("onnx")
    from runtime.testing import build_constant_regressor, plausible_params
    from evaluation import pose
    from evaluation.landmarks import FacerigLandmarker, evaluate_images, summarize
    from evaluation.pts import list_labelled_images

    params = plausible_params(face_model, n_identity=20)
    onnx_path = build_constant_regressor(tmp_path / "const.onnx", params)
    folder, _ = _synthetic_labelled_photo(tmp_path, face_model, params)
    lm = FacerigLandmarker(onnx_path, contour="fixed", model_path=str(face_model.path))
    results = evaluate_images(list_labelled_images(folder), lm, "gt", progress=False,
                              model_path=str(face_model.path))
    # the landmarker and the annotation yaw's PnP reference share one loaded face model
    assert lm.projector.model is pose.face_model(str(face_model.path))
    s = summarize(results)
    assert s["n"] == 1 and s["failed"] == 0
    assert s["nme_bbox_68"] < 0.05 and s["nme_io_68"] < 0.1
    assert s["yaw_bins"]["0-30"]["n"] == 1


def test_mediapipe_landmarks_on_a_demo_photo(model_path):
    """FaceMesh through the harness on a public-domain photo: a face, sensible geometry and yaw."""
    from evaluation.imaging import load_image
    from evaluation.landmarks import MediaPipeLandmarker
    from evaluation.mediapipe_baseline import FaceMeshRunner

    photo = SHARED / "faces" / "demo" / "grace_hopper.jpg"
    if not photo.is_file():
        pytest.skip("demo photo not present")
    img = load_image(photo)
    face = FaceMeshRunner(max_faces=1)(img)[0]
    pts = face.points68
    lo, hi = pts.min(0), pts.max(0)
    box = (float(lo[0]), float(lo[1]), float(hi[0]), float(hi[1]))
    from facemodel.crop import canonical_crop_box

    pred = MediaPipeLandmarker(str(model_path)).predict(img, canonical_crop_box(pts), box)
    assert pred is not None
    # Re-running on the canonical crop agrees with the full-image run to a few pixels.
    assert np.abs(pred.points68 - pts).mean() < 0.02 * (hi - lo).max()
    assert pred.points68[36, 0] < pred.points68[45, 0]  # subject's right eye on the image left
    assert abs(np.degrees(pred.rotation[0])) < 30        # a near-frontal portrait
