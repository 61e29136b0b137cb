"""evaluation.facemesh_map: the FaceMesh-468 → ICT vertex table the dense refinement fits."""

import numpy as np
import pytest

from evaluation.facemesh_map import N_FACEMESH, collect_votes, main, python_source, table_from_votes
from evaluation.pts import list_images
from facemodel.landmark_fit import dense_point_indices
from facemodel.landmark_maps import MEDIAPIPE_SPREAD_MM, MEDIAPIPE_TO_ICT

from .conftest import FACES


def test_table_from_votes_known_values(face_model):
    """Unanimous votes give their vertex and no spread; a split vote gives the vertex nearest the
    votes' mean, with the spread of the two positions; points without votes are marked."""
    mean = np.asarray(face_model.neutral, np.float64)
    votes = np.full((4, N_FACEMESH), 100, np.int64)
    a, b = 2000, 2001
    votes[:, 1] = [a, b, a, b]
    votes[:2, 2] = -1                     # two photos without a vote for point 2
    votes[:, 3] = -1                      # nobody voted for point 3
    table = table_from_votes(votes, face_model)
    assert table.vertex[0] == 100 and table.spread_mm[0] == 0.0 and table.share[0] == 1.0
    centre = 0.5 * (mean[a] + mean[b])
    assert table.vertex[1] == np.argmin(np.linalg.norm(mean[:9409] - centre, axis=1))
    np.testing.assert_allclose(table.spread_mm[1], 10 * 0.5 * np.linalg.norm(mean[a] - mean[b]), rtol=1e-6)
    assert table.share[2] == 0.5 and table.vertex[2] == 100
    assert table.vertex[3] == -1 and table.spread_mm[3] == np.inf and table.share[3] == 0.0
    source = python_source(table)
    assert source.startswith("MEDIAPIPE_TO_ICT: tuple[int, ...] = (\n    100, ") and "99.9" in source
    for bad in (np.zeros((0, N_FACEMESH)), np.zeros((3, 68)), np.zeros(N_FACEMESH)):
        with pytest.raises(ValueError, match="votes must be"):
            table_from_votes(bad, face_model)


def test_a_few_photos_reproduce_the_shipped_table(face_model):
    """Re-deriving on 24 other photos than most of the table's (UTKFace, offset from every 10th) puts
    nearly every fitted point on the shipped vertex or a neighbour within 5 mm."""
    photos = list_images(FACES / "unlabeled" / "utkface_200")[5::400][:24]
    votes, skipped = collect_votes(photos, face_model, progress=False)
    assert len(votes) >= 20, skipped
    table = table_from_votes(votes, face_model)
    used = dense_point_indices()
    mean = np.asarray(face_model.neutral, np.float64)
    apart_mm = 10 * np.linalg.norm(mean[table.vertex[used]] - mean[np.asarray(MEDIAPIPE_TO_ICT)[used]], axis=1)
    assert np.mean(apart_mm < 5.0) > 0.9, np.percentile(apart_mm, [50, 90])
    # the oval's sides stay ill-defined on a few photos too, the fitted points well defined
    assert np.median(table.spread_mm[used]) < np.median(np.asarray(MEDIAPIPE_SPREAD_MM)[used]) + 3.0


def test_derivation_command_refuses_bad_folders_in_one_line(tmp_path):
    """A missing folder or one without usable photos ends with a one-line message and writes nothing."""
    out = tmp_path / "table.json"
    with pytest.raises(SystemExit, match="does not exist"):
        main(["--images", str(tmp_path / "missing"), "--json", str(out)])
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "a.jpg").write_text("not an image")
    with pytest.raises(SystemExit, match="only 0 usable photos"):
        main(["--images", str(tmp_path / "photos"), "--json", str(out)])
    assert not out.exists()
