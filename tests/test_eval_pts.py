"""The .pts reader/writer: both header forms, 1-based coordinates, clear errors."""

import numpy as np
import pytest

from evaluation.pts import PtsError, list_labelled_images, read_pts, write_pts

from .conftest import FACES

HEADER = "version: 1\nn_points: 3\n{\n1.0 2.0\n10.5 20.25\n3 4\n}\n"
BARE = "1.0 2.0\n10.5 20.25\n3 4\n"
EXPECTED_CORNER = np.array([[0.5, 1.5], [10.0, 19.75], [2.5, 3.5]])  # 1-based centre c → c − 0.5


@pytest.mark.parametrize("text", [HEADER, BARE, HEADER.replace("\n", "\r\n"), "\n" + BARE + "\n\n"])
def test_reads_both_header_forms(tmp_path, text):
    p = tmp_path / "a.pts"
    p.write_text(text)
    np.testing.assert_allclose(read_pts(p), EXPECTED_CORNER)
    np.testing.assert_allclose(read_pts(p, one_based=False), EXPECTED_CORNER + 0.5)


def test_write_read_round_trip(tmp_path):
    pts = np.random.default_rng(0).uniform(0, 500, (68, 2))
    for header in (True, False):
        path = write_pts(tmp_path / f"r{header}.pts", pts, header=header)
        np.testing.assert_allclose(read_pts(path), pts, atol=1e-3)
        assert path.read_text().startswith("version: 1") == header


@pytest.mark.parametrize("text,match", [
    ("version: 1\nn_points: 4\n{\n1 2\n3 4\n}\n", "header says 4"),
    ("1 2 3\n", "expected 'x y'"),
    ("a b\n", "not numbers"),
    ("version: 1\nn_points: 1\n{\n1 2\n", "without closing"),
    ("", "no landmark"),
])
def test_malformed_files_name_the_problem(tmp_path, text, match):
    p = tmp_path / "bad.pts"
    p.write_text(text)
    with pytest.raises(PtsError, match=match):
        read_pts(p)


def test_lists_only_labelled_images(tmp_path):
    for name in ("b.jpg", "a.png", "c.jpg"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "a.pts").write_text(BARE)
    (tmp_path / "b.pts").write_text(HEADER)
    items = list_labelled_images(tmp_path)
    assert [i.name for i in items] == ["a.png", "b.jpg"]
    assert len(list_labelled_images(tmp_path, limit=1)) == 1
    with pytest.raises(FileNotFoundError):
        list_labelled_images(tmp_path / "missing")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="no images with .pts"):
        list_labelled_images(empty)


def test_reads_the_helen_files():
    folder = FACES / "helen_test_68"
    if not folder.is_dir():
        pytest.skip(f"{folder} not present")
    items = list_labelled_images(folder)
    assert len(items) == 330
    pts = items[0].landmarks()
    assert pts.shape == (68, 2) and np.isfinite(pts).all()
    # Outer eye corners: 36 is the subject's right eye, left in the image.
    assert pts[36, 0] < pts[45, 0]
