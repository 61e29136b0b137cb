"""The corrective field's basis: manifold harmonics of the face region (facemodel.harmonics)."""

import json

import numpy as np
import pytest

from facemodel import FaceParams, LayoutError, ParamLayout, form, harmonics
from facemodel.harmonics import (DEFAULT_K, HarmonicsUnavailable, compute_harmonics, corrective_displacement,
                                 corrective_prior_weights, cotangent_laplacian, load_harmonics)


@pytest.fixture(scope="module")
def harm(face_model):
    return face_model.harmonics


def _region_operators(face_model, h):
    local = np.full(face_model.n_vertices, -1)
    local[h.region] = np.arange(len(h.region))
    tri = local[harmonics._triangles(face_model, h.region)]
    return cotangent_laplacian(face_model.neutral[h.region], tri)


def test_basis_is_orthonormal_in_the_mass_inner_product(harm):
    phi = harm.region_basis()
    assert harm.k == DEFAULT_K and phi.shape == (9409, DEFAULT_K)
    assert harm.mass.sum() == pytest.approx(1.0)
    gram = phi.T @ (harm.mass[:, None] * phi)
    np.testing.assert_allclose(gram, np.eye(DEFAULT_K), atol=2e-5)   # float32 storage


def test_smooth_modes_come_first(face_model, harm):
    lam = harm.eigenvalues
    assert np.all(lam > 0) and np.all(np.diff(lam) > 0)            # Dirichlet outline: no constant mode
    stiff, _ = _region_operators(face_model, harm)
    phi = harm.region_basis()
    energy = np.einsum("vk,vk->k", phi, stiff @ phi)                 # Dirichlet energy = Rayleigh quotient
    np.testing.assert_allclose(energy, lam, rtol=1e-3)
    free = np.abs(phi).max(1) > 0                                    # not on the Dirichlet outline
    residual = (stiff @ phi - (harm.mass[:, None] * phi) * lam)[free]
    assert np.abs(residual).max() < 1e-3 * lam.max() * harm.mass.max()
    # the ground state of the Dirichlet problem has one sign; later modes oscillate more
    first = phi[:, 0][np.abs(phi[:, 0]) > 1e-4]
    assert np.all(first > 0)
    assert np.mean(phi[:, -1] > 0) < 0.9


def test_basis_is_deterministic_with_a_sign_convention(face_model, harm):
    again = compute_harmonics(face_model, DEFAULT_K)
    np.testing.assert_allclose(again.basis, harm.basis, atol=1e-5)
    coords = face_model.neutral[harm.region].astype(np.float64)
    probes = np.concatenate([np.ones((len(coords), 1)), coords - (harm.mass[:, None] * coords).sum(0)], 1)
    dots = probes.T @ (harm.mass[:, None] * harm.region_basis())     # (4, K)
    for k in range(harm.k):
        first = np.flatnonzero(np.abs(dots[:, k]) > 1e-6)[0]
        assert dots[first, k] > 0


def test_field_fades_into_the_head_and_follows_lashes(face_model, harm):
    # far from the face region (back of the head) the field is zero; lashes follow their eyelid
    back = face_model.neutral[:, 2] < -5
    assert np.abs(harm.basis[back]).max() < 1e-6
    lashes = face_model.vertex_range("eyelashes")
    assert np.abs(harm.basis[lashes]).max() > 0.1
    for eye in ("eyeball_left", "eyeball_right"):                  # eyeballs move rigidly
        rows = harm.basis[face_model.vertex_range(eye)]
        np.testing.assert_allclose(rows, np.broadcast_to(rows[0], rows.shape))


def test_prior_weights_are_the_eigenvalues_relative_to_the_first(harm):
    w = corrective_prior_weights(harm.eigenvalues)
    assert w[0] == 1.0 and np.all(np.diff(w) > 0)


def test_cache_is_keyed_by_the_mesh_and_falls_back_to_the_user_cache(face_model, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    k = 4
    first = load_harmonics(face_model, k)
    files = list(tmp_path.rglob("harmonics-*.npz"))
    assert files == [harmonics.cache_path(face_model, k)] and harmonics.mesh_key(face_model, k) in files[0].name

    def fail(*a, **kw):
        raise AssertionError("recomputed although cached")
    monkeypatch.setattr(harmonics, "compute_harmonics", fail)
    np.testing.assert_array_equal(load_harmonics(face_model, k).basis, first.basis)
    assert harmonics.mesh_key(face_model, 5) != harmonics.mesh_key(face_model, 4)


def test_corrective_moves_the_formed_mesh_by_the_field(face_model):
    rng = np.random.default_rng(0)
    p = FaceParams.neutral(n_identity=10)
    c = rng.normal(0, 0.2, (DEFAULT_K, 3)).astype(np.float32)
    q = FaceParams.neutral(n_identity=10, n_corrective=DEFAULT_K)
    q.corrective = c
    a, b = form(face_model.arrays, p, 64, 64, with_colors=False), form(face_model.arrays, q, 64, 64, with_colors=False)
    expected = face_model.harmonics.basis @ c          # rotation is identity for the neutral pose
    np.testing.assert_allclose(b.vertices - a.vertices, expected, atol=1e-4)
    with pytest.raises(HarmonicsUnavailable, match="harmonics"):
        corrective_displacement(np.zeros((5, 2), np.float32), np.zeros((3, 3), np.float32))


def test_layout_version_2_carries_the_corrective_and_version_1_still_reads():
    v2 = ParamLayout(n_identity=60, n_corrective=20)
    assert v2.size == ParamLayout(60).size + 60 and v2.slices["corrective"].stop == v2.size
    assert ParamLayout.from_dict(v2.to_dict()) == v2
    old = {"layout_version": 1, "n_identity": 60,
           "groups": {k: list(v) for k, v in ParamLayout(60).to_dict()["groups"].items() if k != "corrective"}}
    v1 = ParamLayout.from_dict(old)
    assert v1.version == 1 and v1.n_corrective == 0 and v1 == ParamLayout(60)
    with pytest.raises(LayoutError, match="no corrective"):
        ParamLayout(60, version=1, n_corrective=20)
    assert ParamLayout.from_metadata(v2.metadata()) == v2
    assert ParamLayout.from_metadata({"facerig.layout_version": "1", "facerig.n_identity": "60"}) == ParamLayout(60)
    assert ParamLayout.from_metadata({"facerig.layout_version": "1"}, ParamLayout(40).size) == ParamLayout(40)
    with pytest.raises(LayoutError, match="needs"):
        ParamLayout.from_metadata(v2.metadata(), v2.size - 3)


def test_vector_and_json_round_trip_with_corrective_and_old_json_loads(tmp_path):
    rng = np.random.default_rng(1)
    p = FaceParams.neutral((3,), n_identity=8, n_corrective=5)
    p.corrective = rng.normal(size=(3, 5, 3)).astype(np.float32)
    q = FaceParams.from_vector(p.to_vector(), p.layout)
    np.testing.assert_array_equal(q.corrective, p.corrective)
    one = p[1]
    one.save(tmp_path / "new.json")
    np.testing.assert_allclose(FaceParams.load(tmp_path / "new.json").corrective, one.corrective, atol=1e-6)
    d = json.loads((tmp_path / "new.json").read_text())
    for key in ("corrective", "n_corrective"):
        del d[key]
    d["layout_version"] = 1                                   # a file from before the corrective field
    old = FaceParams.from_dict(d)
    assert old.corrective.shape == (0, 3) and old.layout == ParamLayout(8)
    assert old.with_corrective_modes(20).corrective.shape == (20, 3)
    assert not old.with_corrective_modes(20).corrective.any()
