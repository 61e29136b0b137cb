import numpy as np
import pytest

from facemodel import geometry
from facemodel.xp import cross


def test_rotation_matrices_are_proper_and_follow_the_convention():
    rng = np.random.default_rng(0)
    angles = rng.uniform(-1.5, 1.5, (50, 3))
    r = geometry.euler_to_matrix(angles)
    np.testing.assert_allclose(r @ r.swapaxes(-1, -2), np.broadcast_to(np.eye(3), r.shape), atol=1e-12)
    np.testing.assert_allclose(np.linalg.det(r), 1.0, atol=1e-12)
    # +90° yaw turns the face direction (+z) towards +x (image right).
    np.testing.assert_allclose(geometry.euler_to_matrix(np.array([np.pi / 2, 0, 0])) @ [0, 0, 1], [1, 0, 0],
                               atol=1e-12)
    # +pitch turns the face downwards (−y); +roll turns +x towards +y (counter-clockwise on screen).
    np.testing.assert_allclose(geometry.euler_to_matrix(np.array([0, 0.3, 0])) @ [0, 0, 1],
                               [0, -np.sin(0.3), np.cos(0.3)], atol=1e-12)
    np.testing.assert_allclose(geometry.euler_to_matrix(np.array([0, 0, 0.3])) @ [1, 0, 0],
                               [np.cos(0.3), np.sin(0.3), 0], atol=1e-12)


def test_euler_round_trip_including_profiles():
    rng = np.random.default_rng(1)
    angles = np.stack([rng.uniform(-np.pi / 2, np.pi / 2, 200), rng.uniform(-1.2, 1.2, 200),
                       rng.uniform(-1.0, 1.0, 200)], -1)
    back = geometry.matrix_to_euler(geometry.euler_to_matrix(angles))
    np.testing.assert_allclose(back, angles, atol=1e-9)


def test_normals_of_a_known_mesh():
    # Unit cube with outward, counter-clockwise triangles: corner normals point along the diagonals.
    v = np.array([[x, y, z] for x in (0, 1) for y in (0, 1) for z in (0, 1)], float)
    quads = np.array([[0, 1, 3, 2], [4, 6, 7, 5], [0, 4, 5, 1], [2, 3, 7, 6], [0, 2, 6, 4], [1, 5, 7, 3]])
    tris = geometry.triangulate(quads)
    fn = geometry.face_normals(v, tris)
    centres = v[tris].mean(1) - 0.5
    assert ((fn * centres).sum(-1) > 0).all(), "faces must be outward"
    n = geometry.vertex_normals(v, tris, geometry.vertex_face_table(tris, len(v)))
    np.testing.assert_allclose(np.linalg.norm(n, axis=1), 1, atol=1e-12)
    cos = (n * (v - 0.5)).sum(-1) / np.linalg.norm(v - 0.5, axis=1)
    assert (cos > 0.9).all()


def test_triangulate_keeps_triangles_and_splits_quads():
    faces = np.array([[0, 1, 2, -1], [0, 2, 3, 4]])
    tris = geometry.triangulate(faces)
    assert tris.tolist() == [[0, 1, 2], [0, 2, 3], [0, 3, 4]]


def test_vertex_face_table_lists_every_incident_triangle():
    rng = np.random.default_rng(2)
    tris = rng.integers(0, 30, (80, 3))
    table = geometry.vertex_face_table(tris, 30)
    for vert in range(30):
        expected = sorted(np.flatnonzero((tris == vert).any(1)).tolist() * 1)
        got = sorted(t for t in table[vert] if t < len(tris))
        assert sorted(set(got)) == sorted(set(expected))


def test_cross_matches_numpy():
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=(2, 10, 3))
    np.testing.assert_allclose(cross(a, b), np.cross(a, b))


def test_procrustes_recovers_a_rigid_motion():
    rng = np.random.default_rng(4)
    src = rng.normal(size=(100, 3))
    r = geometry.euler_to_matrix(np.array([0.4, -0.2, 0.1]))
    tgt = src @ r.T + [1, 2, 3]
    np.testing.assert_allclose(geometry.procrustes_align(src, tgt), tgt, atol=1e-9)
    np.testing.assert_allclose(geometry.procrustes_align(src, 1.3 * tgt, scale=True), 1.3 * tgt, atol=1e-9)
    # without scale a uniformly larger target keeps its size difference
    assert np.abs(geometry.procrustes_align(src, 1.3 * tgt) - 1.3 * tgt).max() > 0.1


def test_model_vertices_are_linear_in_coefficients(face_model):
    a = face_model.arrays
    rng = np.random.default_rng(5)
    i1, i2 = rng.normal(size=(2, 100)).astype(np.float32)
    e = np.zeros(53, np.float32)
    v1 = geometry.model_vertices(a.neutral, a.identity_basis, a.expression_basis, i1, e)
    v2 = geometry.model_vertices(a.neutral, a.identity_basis, a.expression_basis, i2, e)
    v12 = geometry.model_vertices(a.neutral, a.identity_basis, a.expression_basis, i1 + i2, e)
    np.testing.assert_allclose(v12 - a.neutral, (v1 - a.neutral) + (v2 - a.neutral), atol=1e-3)
    jaw = face_model.expression_names.index("jawOpen")
    e[jaw] = 1
    vj = geometry.model_vertices(a.neutral, a.identity_basis[:0], a.expression_basis, i1[:0], e)
    np.testing.assert_allclose(vj, face_model.neutral + face_model.expression_basis[jaw], atol=1e-5)
    chin = face_model.landmarks68[8]
    assert vj[chin, 1] < face_model.neutral[chin, 1] - 0.5, "jawOpen must lower the chin"
