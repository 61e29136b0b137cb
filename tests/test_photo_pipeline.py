"""Photo pipeline without Blender: image reading, crop geometry, detector, regressor contract, uncrop."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from runtime import photo
from runtime.detect import FACEMESH_TO_68, NoFaceError, detect_faces
from runtime.pipeline import (overlay_error, photo_camera, photo_warnings, reconstruct_photo,
                                    refine_reconstruction, refinement_warnings)
from runtime.regressor import Regressor, RegressorError
from runtime.testing import build_constant_regressor, plausible_params
from facemodel import FaceParams, canonical_crop_box, crop_camera, project
from facemodel.formation import mesh_camera_space

from .conftest import FACES

ASTRONAUT = FACES / "demo" / "astronaut_eileen_collins_nasa.png"
GRACE = FACES / "demo" / "grace_hopper.jpg"


@pytest.fixture(scope="module")
def regressor_path(face_model, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real ONNX file following the contract that predicts one plausible face (plumbing only)."""
    return build_constant_regressor(tmp_path_factory.mktemp("onnx") / "constant.onnx", plausible_params(face_model))


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    return photo.load_image(ASTRONAUT)


# -- reading images -------------------------------------------------------------------------------------
def test_png_decoded_by_libspng_or_opencv_gives_the_same_pixels(tmp_path: Path, astronaut: np.ndarray,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """Plain 8-bit RGB / RGBA PNGs go to libspng when pyspng is installed (setup installs it), everything else
    (16 bit, grey, palette, tRNS) to OpenCV; either way the same upright sRGB pixels."""
    pytest.importorskip("pyspng")
    from PIL import Image

    rgba = np.dstack([astronaut, np.linspace(0, 255, astronaut.shape[1], dtype=np.uint8)[None, :].repeat(
        astronaut.shape[0], 0)])
    cases = {"rgb.png": (Image.fromarray(astronaut), True), "rgba.png": (Image.fromarray(rgba), True),
             "grey.png": (Image.fromarray(astronaut[:, :, 0]), False),
             "palette.png": (Image.fromarray(astronaut).quantize(64), False),
             "rgb16.png": (None, False)}
    cv2.imwrite(str(tmp_path / "rgb16.png"), cv2.cvtColor(astronaut, cv2.COLOR_RGB2BGR).astype(np.uint16) * 257)
    for name, (im, plain) in cases.items():
        if im is not None:
            im.save(tmp_path / name)
        assert photo._plain_png(np.fromfile(str(tmp_path / name), np.uint8)) == plain, name
    fast = {name: photo.decode_photo(tmp_path / name).image for name in cases}
    monkeypatch.setattr(photo, "_pyspng", lambda: None)
    for name in cases:
        np.testing.assert_array_equal(fast[name], photo.decode_photo(tmp_path / name).image, err_msg=name)
    np.testing.assert_array_equal(fast["rgb.png"], astronaut)
    monkeypatch.undo()
    broken = bytearray((tmp_path / "rgb.png").read_bytes())
    broken[33 + 8 + 100] ^= 0xFF                     # a byte of the first IDAT's compressed pixels
    (tmp_path / "broken.png").write_bytes(bytes(broken))
    assert photo._plain_png(np.frombuffer(bytes(broken), np.uint8))
    with pytest.raises(photo.ImageReadError, match="not a readable image"):   # libspng refuses, then OpenCV
        photo.decode_photo(tmp_path / "broken.png")


def test_load_image_formats(tmp_path: Path, astronaut: np.ndarray) -> None:
    bgr = cv2.cvtColor(astronaut, cv2.COLOR_RGB2BGR)
    for ext in (".jpg", ".png", ".webp", ".tif", ".bmp"):
        cv2.imwrite(str(tmp_path / f"a{ext}"), bgr)
        img = photo.load_image(tmp_path / f"a{ext}")
        assert img.dtype == np.uint8 and img.shape == astronaut.shape
        assert np.abs(img.astype(int) - astronaut).mean() < 6, ext     # lossy formats stay close

    gray = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
    cv2.imwrite(str(tmp_path / "g.png"), gray)
    g = photo.load_image(tmp_path / "g.png")
    assert g.shape == astronaut.shape and np.array_equal(g[..., 0], gray) and np.array_equal(g[..., 0], g[..., 2])

    cv2.imwrite(str(tmp_path / "d.png"), (bgr.astype(np.uint16) * 257))          # 16 bit
    assert np.array_equal(photo.load_image(tmp_path / "d.png"), astronaut)

    rgba = np.dstack([bgr, np.full(gray.shape, 255, np.uint8)])
    rgba[:100, :, 3] = 0                                                           # transparent top
    cv2.imwrite(str(tmp_path / "t.png"), rgba)
    t = photo.load_image(tmp_path / "t.png")
    assert (t[:100] == photo.ALPHA_BACKGROUND).all() and np.array_equal(t[100:], astronaut[100:])


def test_exif_orientation(tmp_path: Path, astronaut: np.ndarray) -> None:
    from PIL import Image

    raw = np.ascontiguousarray(np.rot90(astronaut[:, :400], 1))      # stored sideways (camera rotated)
    im = Image.fromarray(raw)
    exif = im.getexif()
    exif[0x0112] = 6                                                  # "rotate 90° CW to display"
    im.save(tmp_path / "exif.jpg", exif=exif, quality=95)
    img = photo.load_image(tmp_path / "exif.jpg")
    assert img.shape == (512, 400, 3)
    assert np.abs(img.astype(int) - astronaut[:, :400]).mean() < 6
    assert len(detect_faces(img)) == 1


def test_png_orientation_read_without_decoding_twice(tmp_path: Path, astronaut: np.ndarray, monkeypatch) -> None:
    """A PNG's EXIF orientation, in an eXIf chunk before or after the pixel data: the header read decodes no
    pixels when nothing follows them (Pillow's PNG getexif would decode the whole image to look)."""
    import struct

    from PIL import Image, PngImagePlugin

    raw = np.ascontiguousarray(np.rot90(astronaut[:, :400], 1))
    im = Image.fromarray(raw)
    exif = im.getexif()
    exif[0x0112] = 6
    im.save(tmp_path / "before.png", exif=exif)
    data = (tmp_path / "before.png").read_bytes()
    start = data.index(b"eXIf") - 4
    length = struct.unpack(">I", data[start: start + 4])[0]
    chunk = data[start: start + 12 + length]
    moved = data[:start] + data[start + 12 + length:]
    end = moved.index(b"IEND") - 4
    (tmp_path / "after.png").write_bytes(moved[:end] + chunk + moved[end:])
    plain = tmp_path / "plain.png"
    Image.fromarray(raw).save(plain)
    loads = []
    real_load = PngImagePlugin.PngImageFile.load
    monkeypatch.setattr(PngImagePlugin.PngImageFile, "load", lambda self: loads.append(1) or real_load(self))
    for name in ("before.png", "after.png"):
        img = photo.load_image(tmp_path / name)
        assert img.shape == (512, 400, 3) and np.array_equal(img, astronaut[:, :400])
    assert loads == [1]                              # only the PNG with EXIF after its pixels was decoded by Pillow
    assert photo.load_image(plain).shape == (400, 512, 3) and loads == [1]
    assert not photo._png_metadata_after_pixels(plain.read_bytes())
    assert photo._png_metadata_after_pixels((tmp_path / "after.png").read_bytes())
    assert photo._png_metadata_after_pixels(plain.read_bytes()[:60])     # unexpected: Pillow decides
    assert photo._png_metadata_after_pixels(b"GIF89a")


def test_phone_heic_and_avif(tmp_path: Path, astronaut: np.ndarray) -> None:
    """Phones save HEIC with the rotation in the file; AVIF is the web's newer format."""
    from PIL import Image

    assert photo.heif_supported(), "pillow-heif is one of the project's dependencies"
    raw = np.ascontiguousarray(np.rot90(astronaut[:, :400], 1))      # sensor orientation
    im = Image.fromarray(raw)
    exif = im.getexif()
    exif[0x0112] = 6                                                  # pillow-heif stores it as HEIF's rotation
    im.save(tmp_path / "IMG_0001.HEIC", exif=exif.tobytes(), quality=90)
    img = photo.load_image(tmp_path / "IMG_0001.HEIC")
    assert img.shape == (512, 400, 3)                                 # turned once, not twice
    assert np.abs(img.astype(int) - astronaut[:, :400]).mean() < 6
    assert len(detect_faces(img)) == 1

    rgba = np.dstack([astronaut, np.full(astronaut.shape[:2], 255, np.uint8)])
    rgba[:64, :, 3] = 0
    Image.fromarray(rgba).save(tmp_path / "a.avif", quality=90)
    img = photo.load_image(tmp_path / "a.avif")
    assert (np.abs(img[:60].astype(int) - photo.ALPHA_BACKGROUND) <= 8).all()   # composited like PNG
    assert np.abs(img[70:].astype(int) - astronaut[70:]).mean() < 6


def _bpy_icc(name: str) -> bytes:
    """A display profile Blender ships (bpy is a dependency): real ICC files to tag test photos with."""
    import importlib.util

    spec = importlib.util.find_spec("bpy")
    assert spec is not None and spec.origin
    files = list(Path(spec.origin).parent.glob(f"*/datafiles/colormanagement/icc/{name}"))
    assert files, name
    return files[0].read_bytes()


def test_colour_profiles_are_converted_to_srgb(tmp_path: Path, astronaut: np.ndarray,
                                                caplog: pytest.LogCaptureFixture) -> None:
    """A phone's Display P3 photo (JPEG or HEIC) reads as the sRGB colours it shows; sRGB-tagged is untouched."""
    import io

    from PIL import Image, ImageCms

    from runtime import colour_profile

    p3 = _bpy_icc("srgb_p3d65_display.icc")
    to_p3 = ImageCms.buildTransform(ImageCms.createProfile("sRGB"), ImageCms.ImageCmsProfile(io.BytesIO(p3)),
                                    "RGB", "RGB", renderingIntent=ImageCms.Intent.RELATIVE_COLORIMETRIC)
    p3_pixels = ImageCms.applyTransform(Image.fromarray(astronaut), to_p3)
    assert np.abs(np.asarray(p3_pixels).astype(int) - astronaut).mean() > 3     # really other numbers
    for ext in (".png", ".jpg", ".heic"):
        codec = {} if ext == ".png" else {"quality": 95}
        p3_pixels.save(tmp_path / f"p3{ext}", icc_profile=p3, **codec)
        Image.fromarray(astronaut).save(tmp_path / f"plain{ext}", **codec)            # the same codec's loss
        diff = np.abs(photo.load_image(tmp_path / f"p3{ext}").astype(int) - photo.load_image(tmp_path / f"plain{ext}"))
        assert diff.mean() < (0.3 if ext == ".png" else 1.5), (ext, diff.mean())    # unconverted: > 3

    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    Image.fromarray(astronaut).save(tmp_path / "srgb.png", icc_profile=srgb)
    assert np.array_equal(photo.load_image(tmp_path / "srgb.png"), astronaut)
    Image.fromarray(astronaut).save(tmp_path / "broken.png", icc_profile=b"not a profile" * 20)
    with caplog.at_level("WARNING"):
        assert np.array_equal(photo.load_image(tmp_path / "broken.png"), astronaut)
    assert "unreadable colour profile" in caplog.text

    big = np.ascontiguousarray(np.tile(np.asarray(p3_pixels), (3, 3, 1)))     # 1536² : converted in bands
    banded = colour_profile.to_srgb(big, p3)
    one = colour_profile.to_srgb(big[:700], p3)
    assert np.array_equal(banded[:700], one)
    assert np.abs(banded[:512, :512].astype(int) - astronaut).mean() < 0.3


def test_heic_without_pillow_heif_says_what_is_missing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from PIL import Image

    Image.fromarray(np.full((64, 64, 3), 90, np.uint8)).save(tmp_path / "x.heic", quality=80)
    monkeypatch.setattr(photo, "heif_supported", lambda: False)
    monkeypatch.setattr(photo, "_decode_with_pillow", lambda path: None)
    with pytest.raises(photo.ImageReadError, match="needs pillow-heif"):
        photo.load_image(tmp_path / "x.heic")


def test_folder_scans_and_the_file_browser_offer_the_same_types() -> None:
    from runtime.formats import PHOTO_SUFFIXES, file_browser_glob
    from evaluation.pts import IMAGE_SUFFIXES

    assert IMAGE_SUFFIXES == PHOTO_SUFFIXES and {".heic", ".avif", ".jpg"} <= set(PHOTO_SUFFIXES)
    assert file_browser_glob().split(";") == ["*" + s for s in PHOTO_SUFFIXES]


def test_bad_inputs(tmp_path: Path) -> None:
    (tmp_path / "notes.jpg").write_text("not an image")
    with pytest.raises(photo.ImageReadError, match="not a readable image .*HEIC"):
        photo.load_image(tmp_path / "notes.jpg")
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(photo.ImageReadError):
        photo.load_image(tmp_path / "empty.png")
    with pytest.raises(FileNotFoundError):
        photo.load_image(tmp_path / "missing.png")
    cv2.imwrite(str(tmp_path / "tiny.png"), np.zeros((20, 30, 3), np.uint8))
    with pytest.raises(photo.ImageTooSmallError, match="30×20"):
        photo.load_image(tmp_path / "tiny.png")


# -- crop geometry -------------------------------------------------------------------------------------
def test_crop_square_pixel_convention() -> None:
    # A single bright pixel at (i, j) has its centre at continuous (i + 0.5, j + 0.5).
    img = np.zeros((400, 400, 3), np.uint8)
    img[150, 210] = 255
    ident = photo.crop_square(img, (0, 0, 400, 400), 400)
    assert np.array_equal(ident, img)                                 # identity box = no resampling
    shifted = photo.crop_square(img, (200.0, 140.0, 264.0, 204.0), 64)
    assert shifted[10, 10, 0] == 255 and shifted.sum() == 255 * 3     # integer shift = exact
    for side, size in ((128.0, 128), (300.0, 100), (400.0, 64)):      # incl. the area-average path
        x0, y0 = 210.5 - side * 0.3, 150.5 - side * 0.6
        crop = photo.crop_square(_blob(), (x0, y0, x0 + side, y0 + side), size)
        ys, xs = np.nonzero(crop[..., 0] > 0)
        w = crop[ys, xs, 0].astype(float)
        cx, cy = (xs + 0.5) @ w / w.sum(), (ys + 0.5) @ w / w.sum()
        assert abs(cx - 0.3 * size) < 0.1 and abs(cy - 0.6 * size) < 0.1, (side, size, cx, cy)


def _blob() -> np.ndarray:
    """A smooth blob centred at continuous (210.5, 150.5) in a 400² image."""
    yy, xx = np.mgrid[0:400, 0:400] + 0.5
    g = np.exp(-((xx - 210.5) ** 2 + (yy - 150.5) ** 2) / (2 * 6.0 ** 2))
    return np.repeat((g * 255).astype(np.uint8)[..., None], 3, 2)


def test_photo_camera_inverts_crop_camera() -> None:
    rng = np.random.default_rng(0)
    for _ in range(5):
        cam = np.array([rng.uniform(0.8, 3), rng.uniform(0.3, 0.7), rng.uniform(0.3, 0.7)], np.float32)
        w, h = 640, 480
        x0, y0 = rng.uniform(-50, 300), rng.uniform(-50, 200)
        box = (x0, y0, x0 + 180.0, y0 + 180.0)
        crop_cam = crop_camera(cam, w, h, box, 128, 128)
        np.testing.assert_allclose(photo_camera(crop_cam, box, w, h), cam, rtol=1e-5, atol=1e-6)


# -- detector -------------------------------------------------------------------------------------------
def test_detect_demo_faces(astronaut: np.ndarray) -> None:
    faces = detect_faces(astronaut)
    assert len(faces) == 1
    f = faces[0]
    assert f.landmarks.shape == (68, 2) and 0.5 < f.score <= 1
    x0, y0, x1, y1 = f.box
    inner = f.landmarks[17:]
    assert (inner[:, 0] > x0 - 5).all() and (inner[:, 0] < x1 + 5).all()
    assert f.landmarks[8, 1] > f.landmarks[30, 1] > f.landmarks[19, 1]           # chin below nose below brow
    assert f.landmarks[36, 0] < f.landmarks[45, 0]                               # subject's right eye on image left
    assert sorted(set(FACEMESH_TO_68.tolist())) == sorted(FACEMESH_TO_68.tolist())
    assert detect_faces(np.full((300, 300, 3), 128, np.uint8)) == []


def test_detector_landmarks_match_ibug_annotation() -> None:
    """The FaceMesh → 68 mapping against 300W-Helen annotations (5 images; full set: 2.9 % NME)."""
    errors = []
    for pts in sorted((FACES / "helen_test_68").glob("*.pts"))[:5]:
        txt = pts.read_text().split("{")[1].split("}")[0]
        gt = np.array(txt.split(), float).reshape(68, 2) - 0.5            # 1-based pixel centres → corner origin
        faces = detect_faces(photo.load_image(pts.with_suffix(".jpg")))
        best = min(faces, key=lambda f: np.linalg.norm(f.landmarks.mean(0) - gt.mean(0)))
        size = np.sqrt(np.prod(gt.max(0) - gt.min(0)))
        errors.append(np.linalg.norm(best.landmarks - gt, axis=1).mean() / size)
    assert np.mean(errors) < 0.06, errors


def test_several_faces_give_a_choice(astronaut: np.ndarray, regressor_path: Path) -> None:
    grace = cv2.resize(photo.load_image(GRACE), (436, 512))
    both = np.concatenate([astronaut, grace], axis=1)
    faces = detect_faces(both)
    assert len(faces) == 2
    assert faces[0].area >= faces[1].area
    centres = sorted(f.landmarks[:, 0].mean() for f in faces)
    assert centres[0] < 512 < centres[1]
    second = reconstruct_photo(both, face_index=1, model=regressor_path)
    assert second.face_index == 1 and len(second.faces) == 2
    with pytest.raises(ValueError, match="2 found: 0: box"):
        reconstruct_photo(both, face_index=4, model=regressor_path)


# -- regressor contract --------------------------------------------------------------------------------
def test_regressor_contract(regressor_path: Path, face_model, tmp_path: Path) -> None:
    reg = Regressor(regressor_path)
    assert reg.input_size == 128 and reg.layout.n_identity == 40
    assert reg.metadata["facerig.crop_scale"] == "1.6" and reg.model_version.startswith("0.0-constant+")
    crops = np.random.default_rng(0).integers(0, 255, (3, 128, 128, 3), dtype=np.uint8)
    p = reg.predict(crops)
    assert p.batch_shape == (3,) and p.identity.shape == (3, 40)
    np.testing.assert_allclose(p.to_vector()[0], plausible_params(face_model).to_vector(), atol=1e-6)
    assert reg.predict(crops[0]).batch_shape == ()
    with pytest.raises(ValueError, match="crops must be"):
        reg.predict(np.zeros((1, 64, 64, 3), np.uint8))
    with pytest.raises(FileNotFoundError, match="--model"):
        Regressor(tmp_path / "nothing.onnx")
    (tmp_path / "junk.onnx").write_bytes(b"junk")
    with pytest.raises(RegressorError):
        Regressor(tmp_path / "junk.onnx")


def test_regressor_refuses_other_crop(face_model, tmp_path: Path) -> None:
    import onnx

    path = build_constant_regressor(tmp_path / "m.onnx", plausible_params(face_model))
    m = onnx.load(str(path))
    for prop in m.metadata_props:
        if prop.key == "facerig.crop_scale":
            prop.value = "1.4"
    onnx.save(m, str(path))
    with pytest.raises(RegressorError, match="crop_scale"):
        Regressor(path)


def test_regressor_refinement_limit_from_metadata(face_model, tmp_path: Path) -> None:
    """A prediction ~15 % of the face size off the detector is left alone under the default 8 % limit
    and refined when the model declares a wider one (as the synthetic-only model does)."""
    from dataclasses import replace

    from runtime.pipeline import get_refiner
    from evaluation.refine_gate import write_gate
    from facemodel.crop import points_to_crop

    p = plausible_params(face_model)
    off = replace(p, translation=(p.translation + np.array([2.0, 0.0, 0.0])).astype(np.float32))
    path = build_constant_regressor(tmp_path / "off.onnx", off)
    strict = reconstruct_photo(ASTRONAUT, model=path, face_model=face_model)
    assert strict.refine_max_disagreement == 0.08
    assert "not trusted" in strict.refinement["skipped"]
    (warning,) = refinement_warnings(strict)   # what the add-on shows the artist
    assert warning.startswith("astronaut_eileen_collins_nasa.png: landmark refinement skipped") and "kept" in warning
    np.testing.assert_array_equal(strict.crop_params.to_vector(), strict.regressed_params.to_vector())
    size = int(strict.crop.shape[0])
    _, fraction = get_refiner(face_model).disagreement(
        strict.crop_params, points_to_crop(strict.fit_landmarks, strict.crop_box, size), size)
    assert 0.1 < fraction < 0.4
    wide = tmp_path / "wide.onnx"
    wide.write_bytes(path.read_bytes())
    write_gate(wide, 2 * fraction, "test")
    rec = reconstruct_photo(ASTRONAUT, model=wide, face_model=face_model)
    assert rec.refine_max_disagreement == pytest.approx(2 * fraction, rel=1e-3) and not rec.refinement["skipped"]
    assert refinement_warnings(rec) == []
    assert overlay_error(face_model, rec) < 0.3 * overlay_error(face_model, strict)
    # a model rewritten in place is read again, not served from the pipeline's cache
    write_gate(path, 2 * fraction, "test")
    assert reconstruct_photo(ASTRONAUT, model=path, face_model=face_model).refine_max_disagreement == \
        pytest.approx(2 * fraction, rel=1e-3)
    write_gate(wide, 0.0, "test")   # a malformed limit is refused when the model is opened
    with pytest.raises(RegressorError, match="refine_max_disagreement"):
        Regressor(wide)


@pytest.mark.slow
def test_untrained_learner_network_through_onnx(face_model, tmp_path: Path) -> None:
    """If learner's network exists: export it untrained and run it through the add-on's Regressor."""
    network = pytest.importorskip("learner.network")
    import onnx
    import torch

    from runtime.testing import regressor_metadata
    from learner.config import NetworkConfig

    target = plausible_params(face_model, n_identity=20)
    config = NetworkConfig(n_identity=20)
    layout = target.layout
    raw = network.params_to_raw(torch.as_tensor(target.to_vector()[None], dtype=torch.float64), layout)
    stats = network.OutputStats(raw[0].numpy().astype(np.float32), np.full(raw.shape[1], 1e-3, np.float32))
    net = network.FaceRegressor(config, stats).eval()
    path = tmp_path / "untrained.onnx"
    torch.onnx.export(net, (torch.rand(1, 3, 128, 128),), str(path), input_names=["image"], output_names=["params"],
                      dynamic_axes={"image": {0: "N"}, "params": {0: "N"}}, opset_version=17, dynamo=False)
    m = onnx.load(str(path))
    for k, v in regressor_metadata(20, 128).items():
        m.metadata_props.add(key=k, value=v)
    onnx.save(m, str(path))
    rec = reconstruct_photo(ASTRONAUT, model=path, refine=False)   # the network output itself
    assert np.isfinite(rec.params.to_vector()).all()
    np.testing.assert_allclose(rec.crop_params.translation, target.translation, rtol=0.05, atol=0.5)


# -- end to end -----------------------------------------------------------------------------------------
def test_reconstruct_photo_camera_maps_back(regressor_path: Path, face_model) -> None:
    rec = reconstruct_photo(ASTRONAUT, model=regressor_path)
    assert set(rec.timings) >= {"decode", "detect", "crop", "regress"}
    assert rec.crop.shape == (128, 128, 3)
    np.testing.assert_allclose(rec.crop_box, canonical_crop_box(rec.landmarks))
    arrays = face_model.arrays.subset(face_model.landmark_indices())
    verts = mesh_camera_space(arrays, rec.params)
    in_photo = project(verts, rec.params.camera, rec.width, rec.height)
    in_crop = project(verts, rec.crop_params.camera, 128, 128)
    x0, y0, x1, _ = rec.crop_box
    np.testing.assert_allclose(in_photo, np.array([x0, y0]) + in_crop * (x1 - x0) / 128, atol=1e-3)
    np.testing.assert_array_equal(rec.params.rotation, rec.crop_params.rotation)
    np.testing.assert_array_equal(rec.params.translation, rec.crop_params.translation)
    json.dumps(rec.summary())
    FaceParams.from_json(rec.params.to_json())


def test_refinement_brings_the_mesh_onto_the_detected_landmarks(regressor_path: Path, face_model) -> None:
    """A constant prediction (the plumbing regressor) refined on the astronaut's FaceMesh points."""
    raw = reconstruct_photo(ASTRONAUT, model=regressor_path, refine=False)
    assert raw.regressed_params is None and raw.refinement is None and "refine" not in raw.timings
    rec = reconstruct_photo(ASTRONAUT, model=regressor_path, face_model=face_model)
    assert rec.timings["refine"] < 1000
    np.testing.assert_array_equal(rec.regressed_params.to_vector(), raw.crop_params.to_vector())
    info = rec.refinement
    assert info["landmark_error_after_px"] < 0.5 * info["landmark_error_before_px"]
    # fitted to FaceMesh's second pass on the canonical crop: the same face, a few pixels from the first pass
    # (all 468 FaceMesh points: the dense fit)
    assert rec.fit_landmarks.shape == (468, 2) and "refine_landmarks" in rec.timings
    size = np.sqrt(np.prod(np.ptp(rec.landmarks, axis=0)))
    assert 0 < np.linalg.norm(rec.fit_landmarks[FACEMESH_TO_68] - rec.landmarks, axis=1).mean() < 0.05 * size
    assert overlay_error(face_model, rec) < 0.7 * overlay_error(face_model, raw)
    # light, albedo and camera stay the network's; the photo camera still maps the crop's
    np.testing.assert_array_equal(rec.crop_params.sh, raw.crop_params.sh)
    np.testing.assert_array_equal(rec.params.camera, raw.params.camera)
    assert 0.0 <= rec.params.expression.min() and rec.params.expression.max() <= 1.0
    json.dumps(rec.summary())
    # refining again starts from the network's prediction, not from the refined one
    again = refine_reconstruction(rec, face_model)
    np.testing.assert_allclose(again.crop_params.to_vector(), rec.crop_params.to_vector(), atol=1e-6)
    # with a given identity (several photos of one person) only expression and pose move
    ident = np.full_like(raw.crop_params.identity, 0.3)
    fixed = refine_reconstruction(raw, face_model, identity=ident)
    np.testing.assert_array_equal(fixed.params.identity, ident)
    assert fixed.refinement["landmark_error_after_px"] < info["landmark_error_before_px"]


def test_reconstruct_photo_errors(tmp_path: Path, regressor_path: Path) -> None:
    cv2.imwrite(str(tmp_path / "grey.png"), np.full((256, 256, 3), 128, np.uint8))
    with pytest.raises(NoFaceError, match="no face found"):
        reconstruct_photo(tmp_path / "grey.png", model=regressor_path)
    with pytest.raises(photo.ImageTooSmallError):
        reconstruct_photo(np.zeros((16, 16, 3), np.uint8), model=regressor_path)


def test_tile_offsets_and_box_suppression() -> None:
    from runtime.detect import _non_max_suppressed, _tile_starts

    assert _tile_starts(500, 640, 480) == [0]
    assert _tile_starts(2400, 640, 480) == [0, 480, 960, 1440, 1760]       # the last flush with the edge
    assert _tile_starts(1120, 640, 480) == [0, 480]
    boxes = [((0, 0, 10, 10), 0.6), ((1, 1, 11, 11), 0.9), ((50, 50, 60, 60), 0.7)]
    assert _non_max_suppressed(boxes) == [((1, 1, 11, 11), 0.9), ((50, 50, 60, 60), 0.7)]


def test_small_face_in_a_large_photo(regressor_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A 43-px face in a 2400 × 1600 photo, across the boundary of two tiles: the whole-image detector
    misses it (under ≈ 5 % of the side), the tiled search finds it, and the user is told it is small."""
    from runtime.detect import _detect_boxes
    from runtime.pipeline import resolution_warning

    grace = cv2.cvtColor(cv2.imread(str(GRACE)), cv2.COLOR_BGR2RGB)
    small = cv2.resize(grace, (120, 141), interpolation=cv2.INTER_AREA)
    canvas = np.full((1600, 2400, 3), 170, np.uint8)
    canvas[700:841, 600:720] = small                 # face centre near x = 660: past the first tile's edge (640)
    assert _detect_boxes(canvas) == []
    (face,) = detect_faces(canvas)
    lo, hi = face.landmarks.min(0), face.landmarks.max(0)
    assert 600 < lo[0] < hi[0] < 720 and 700 < lo[1] < hi[1] < 841 and lo[0] < 640 < hi[0]
    with caplog.at_level("WARNING", logger="runtime.pipeline"):
        rec = reconstruct_photo(canvas, model=regressor_path)
    assert "px across" in caplog.text
    (warning, *_) = photo_warnings(rec)     # FaceMesh confirms this face: the size is the first thing said
    assert warning == resolution_warning(rec) and warning.startswith("the photo: the face is only")
    # a face of ordinary size gets no such warning
    assert resolution_warning(reconstruct_photo(grace, model=regressor_path, refine=False)) == ""


CELEBA = FACES / "unlabeled" / "celeba_89x109"


def test_unconfirmed_face_crop_is_placed_on_the_network_points(face_model) -> None:
    """Grace Hopper's face as if FaceMesh had not confirmed it (detector box only): the crop from the
    box, re-placed twice on the shipped network's own 68 points, lands where FaceMesh's landmarks put it."""
    from runtime.detect import _iou, face_from_box

    grace = cv2.cvtColor(cv2.imread(str(GRACE)), cv2.COLOR_BGR2RGB)
    (confirmed,) = detect_faces(grace)
    assert confirmed.confirmed
    unconfirmed = face_from_box(confirmed.box, confirmed.score)
    assert not unconfirmed.confirmed and unconfirmed.landmarks.shape == (2, 2)
    assert "detector box only" in unconfirmed.describe()
    rec = reconstruct_photo(grace, faces=[unconfirmed], refine=False, face_model=face_model)
    ref = confirmed.crop_box
    side = ref[2] - ref[0]
    first = unconfirmed.crop_box      # before the network placed it
    assert rec.landmarks.shape == (68, 2) and not rec.face.confirmed and "recrop" in rec.timings
    centre_off = np.abs(np.add(rec.crop_box[:2], rec.crop_box[2:]) / 2 - np.add(ref[:2], ref[2:]) / 2).max() / side
    first_off = np.abs(np.add(first[:2], first[2:]) / 2 - np.add(ref[:2], ref[2:]) / 2).max() / side
    assert centre_off < 0.06 and abs((rec.crop_box[2] - rec.crop_box[0]) / side - 1) < 0.12, (rec.crop_box, ref)
    assert _iou(rec.crop_box, ref) > _iou(first, ref) or centre_off < first_off
    assert rec.summary()["faces"][0]["confirmed"] is False


def test_face_facemesh_cannot_confirm_is_still_reconstructed(face_model, monkeypatch: pytest.MonkeyPatch) -> None:
    """Real photos where the detector sees a face and FaceMesh does not (a singer behind a microphone;
    a turned head): measurement code gets no face, the photo pipeline an unconfirmed one, its crop on the
    network's points, refined only where FaceMesh finds the face in that crop."""
    import runtime.pipeline as pipeline

    for name in ("008061.jpg", "003131.jpg"):
        image = photo.load_image(CELEBA / name)
        assert detect_faces(image) == [], name
        (face,) = detect_faces(image, unconfirmed=True)
        assert not face.confirmed and face.score >= 0.6
        rec = reconstruct_photo(CELEBA / name, face_model=face_model)
        assert not rec.face.confirmed and rec.landmarks.shape == (68, 2)
        x0, y0, x1, y1 = face.box
        cx, cy = (rec.crop_box[0] + rec.crop_box[2]) / 2, (rec.crop_box[1] + rec.crop_box[3]) / 2
        assert x0 < cx < x1 and y0 < cy < y1, (rec.crop_box, face.box)
        assert 1.0 < (rec.crop_box[2] - rec.crop_box[0]) / (x1 - x0) < 2.5
        info = rec.refinement      # FaceMesh may find the face in the network-placed crop: then it is refined
        assert info["skipped"] == "" or "not trusted" in info["skipped"], (name, info)
        json.dumps(rec.summary())
        # where FaceMesh does not find it there either, the network's prediction stands, and the user is told
        monkeypatch.setattr(pipeline, "facemesh_on_crop", lambda *a, **k: None)
        raw = reconstruct_photo(CELEBA / name, face_model=face_model)
        monkeypatch.undo()
        assert "no detected landmarks" in raw.refinement["skipped"] and raw.refinement["points"] == ""
        warnings = photo_warnings(raw)
        assert "found by the detector alone" in warnings[0] and any("refinement skipped" in w for w in warnings)
        np.testing.assert_array_equal(raw.crop_params.to_vector(), raw.regressed_params.to_vector())
        json.dumps(raw.summary())


@pytest.mark.parametrize("name", ["hubble_deep_field", "coffee", "rocket", "chelsea", "text"])
def test_pictures_without_a_face_stay_faceless(name: str, regressor_path: Path) -> None:
    """scikit-image's pictures without a person: no face, also with unconfirmed faces allowed. (On tiles
    the detector boxes a galaxy of the Hubble deep field at 0.75: boxes from tiles need FaceMesh.)"""
    import skimage.data

    image = photo.as_rgb8(np.asarray(getattr(skimage.data, name)()))
    assert detect_faces(image, unconfirmed=True) == []
    with pytest.raises(NoFaceError, match="no face found"):
        reconstruct_photo(image, model=regressor_path)


def test_reconstruct_variants_of_one_photo(tmp_path: Path, astronaut: np.ndarray, regressor_path: Path) -> None:
    """Grayscale, RGBA, 16-bit, GIF and HEIC versions find the same face."""
    ref = reconstruct_photo(astronaut, model=regressor_path).crop_box
    bgr = cv2.cvtColor(astronaut, cv2.COLOR_RGB2BGR)
    cv2.imwrite(str(tmp_path / "gray.png"), cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY))
    cv2.imwrite(str(tmp_path / "rgba.png"), np.dstack([bgr, np.full(bgr.shape[:2], 255, np.uint8)]))
    cv2.imwrite(str(tmp_path / "deep.png"), bgr.astype(np.uint16) * 257)
    from PIL import Image            # OpenCV reads no GIF: Pillow's first frame

    Image.fromarray(astronaut).save(tmp_path / "anim.gif", save_all=True,
                                    append_images=[Image.fromarray(astronaut[:, ::-1])])
    Image.fromarray(astronaut).save(tmp_path / "phone.heic", quality=90)
    for name in ("gray.png", "rgba.png", "deep.png", "anim.gif", "phone.heic"):
        box = reconstruct_photo(tmp_path / name, model=regressor_path).crop_box
        assert np.abs(np.subtract(box, ref)).max() < 6, name


def test_photo_modules_import_without_bpy_or_torch() -> None:
    """The photo pipeline runs outside Blender, and the add-on never pulls in torch."""
    import subprocess
    import sys

    code = ("import sys; import blender_addon, runtime.photo, runtime.detect, runtime.regressor, "
            "runtime.pipeline, runtime.texture, blender_addon.rig, runtime.testing; "
            "bad = [m for m in ('bpy', 'torch') if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr


def test_detect_accepts_grayscale_array(astronaut: np.ndarray) -> None:
    gray = cv2.cvtColor(astronaut, cv2.COLOR_RGB2GRAY)
    assert len(detect_faces(gray)) == 1
