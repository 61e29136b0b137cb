"""Model loading order, bad files, the OBJ converter and the download path."""

import functools
import http.server
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest

from facemodel import FaceModel, FaceModelError, resolve_model_path
from facemodel.convert import ConversionError, convert_folder, convert_source, fetch, safe_extract
from facemodel.model import REQUIRED_ARRAYS

from .conftest import OBJ_SAMPLES


def test_shapes_and_dtypes(face_model):
    assert face_model.n_vertices == 26719 and face_model.n_identity == 100 and face_model.n_expressions == 53
    assert face_model.neutral.dtype == np.float32 and face_model.triangles.dtype == np.int64
    assert face_model.expression_names[26] == "jawOpen"
    masks = face_model.region_masks
    assert masks["face"].sum() == 9409 and masks["teeth"].sum() == 4412 and masks["lashes"].sum() == 1368
    assert masks["eyes"].sum() == 3140 and not masks["render_visible"][25047]
    vis = face_model.landmark_indices("visible")
    assert vis[0] == 1278 and vis[16] == 3496 and (vis[17:] == face_model.landmarks68[17:]).all()
    with pytest.raises(ValueError):
        face_model.landmark_indices("contour")


def test_resolution_order(tmp_path, monkeypatch, model_path):
    monkeypatch.setenv("FACERIG_FACE_MODEL", str(model_path))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert resolve_model_path() == model_path.resolve()
    with pytest.raises(FaceModelError, match="argument"):
        resolve_model_path(tmp_path / "missing.npz")
    monkeypatch.delenv("FACERIG_FACE_MODEL")
    with pytest.raises(FaceModelError, match="facerig model fetch"):
        resolve_model_path()
    cached = tmp_path / "cache" / "facerig" / "ict_facekit_light.npz"
    cached.parent.mkdir(parents=True)
    cached.symlink_to(model_path)
    assert resolve_model_path() == model_path.resolve()
    monkeypatch.setenv("FACERIG_FACE_MODEL", str(tmp_path / "nope.npz"))
    with pytest.raises(FaceModelError, match="FACERIG_FACE_MODEL"):
        resolve_model_path()


def test_bad_model_files_give_clear_errors(tmp_path, model_path):
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(model_path.read_bytes()[:100_000])
    with pytest.raises(FaceModelError, match="not a readable face model"):
        FaceModel.load(truncated)
    text = tmp_path / "text.npz"
    text.write_text("hello")
    with pytest.raises(FaceModelError, match="not a readable"):
        FaceModel.load(text)
    wrong = tmp_path / "wrong.npz"
    np.savez(wrong, neutral=np.zeros((10, 3)))
    with pytest.raises(FaceModelError, match="lacks arrays"):
        FaceModel.load(wrong)
    with np.load(model_path) as npz:
        data = {k: npz[k] for k in REQUIRED_ARRAYS}
    data["identity_basis"] = data["identity_basis"][:, :100]
    bad_shape = tmp_path / "shape.npz"
    np.savez(bad_shape, **data)
    with pytest.raises(FaceModelError, match="identity_basis"):
        FaceModel.load(bad_shape)


def test_converter_matches_the_shipped_npz(model_path):
    arrays = convert_folder(OBJ_SAMPLES, strict=False)
    with np.load(model_path) as ref:
        assert np.abs(arrays["neutral"] - ref["neutral"]).max() < 1e-4
        assert np.abs(arrays["identity_basis"][0] - ref["identity_basis"][0]).max() < 1e-4
        jaw = list(ref["expression_names"]).index("jawOpen")
        assert list(arrays["expression_names"]) == ["jawOpen"]
        assert np.abs(arrays["expression_basis"][0] - ref["expression_basis"][jaw]).max() < 1e-4
        for key in ("faces", "face_uvs", "face_material", "landmarks_multipie68", "fitting_vertices",
                    "rigid_vertices", "lap_rigid_vertices", "rigid_landmark_idx"):
            np.testing.assert_array_equal(arrays[key], ref[key], err_msg=key)
        np.testing.assert_allclose(arrays["uvs"], ref["uvs"], atol=1e-6)
        assert list(arrays["material_names"]) == list(ref["material_names"])
    with pytest.raises(ConversionError, match="incomplete"):
        convert_folder(OBJ_SAMPLES, strict=True)


def test_fetch_from_file_url(mini_archive, tmp_path):
    archive, truth = mini_archive
    out = fetch(archive.as_uri(), tmp_path / "cache" / "model.npz")
    model = FaceModel.load(out)
    np.testing.assert_allclose(model.neutral, truth["neutral"], atol=1e-4)
    np.testing.assert_allclose(model.identity_basis, truth["identity"], atol=1e-4)
    np.testing.assert_allclose(model.expression_basis, truth["expression"], atol=1e-4)
    assert (tmp_path / "cache" / "ICT-FaceKit-LICENSE.txt").read_text().startswith("MIT")
    assert not (tmp_path / "cache" / "ICT-FaceKit.zip").exists()


def test_fetch_over_local_http_with_checksum(mini_archive, tmp_path):
    import hashlib

    archive, truth = mini_archive
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(archive.parent))
    handler.log_message = lambda *a, **k: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/{archive.name}"
        with pytest.raises(ConversionError, match="sha256"):
            fetch(url, tmp_path / "a.npz", sha256="0" * 64)
        assert not (tmp_path / "a.npz").exists()
        good = hashlib.sha256(archive.read_bytes()).hexdigest()
        out = fetch(url, tmp_path / "b.npz", sha256=good)
        np.testing.assert_allclose(FaceModel.load(out).neutral, truth["neutral"], atol=1e-4)
        with pytest.raises(ConversionError, match="download"):
            fetch(url + ".missing", tmp_path / "c.npz")
    finally:
        server.shutdown()


@pytest.mark.parametrize("name", ["../evil.obj", "/abs/evil.obj", "a/../../evil.obj", "C:\\evil.obj"])
def test_archive_extraction_refuses_path_traversal(tmp_path, name):
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr(name, "v 0 0 0\n")
    with pytest.raises(ConversionError, match="unsafe"):
        safe_extract(archive, tmp_path / "out")
    assert not (tmp_path / "evil.obj").exists()


def test_archive_extraction_refuses_symlinks(tmp_path):
    archive = tmp_path / "link.zip"
    info = zipfile.ZipInfo("FaceXModel/link.obj")
    info.external_attr = (0o120777 << 16)
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr(info, "/etc/passwd")
    with pytest.raises(ConversionError, match="symbolic link"):
        safe_extract(archive, tmp_path / "out")


def test_convert_source_rejects_non_archives(tmp_path):
    junk = tmp_path / "junk.zip"
    junk.write_text("not a zip")
    with pytest.raises(ConversionError, match="not a zip"):
        convert_source(junk, tmp_path / "m.npz")
    with pytest.raises(ConversionError, match="does not exist"):
        convert_source(tmp_path / "missing", tmp_path / "m.npz")
    with pytest.raises(ConversionError, match="generic_neutral_mesh"):
        convert_source(tmp_path, tmp_path / "m.npz")
