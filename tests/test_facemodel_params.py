import json

import numpy as np
import pytest

from facemodel import ALBEDO_NAMES, DEFAULT_CAMERA, LAYOUT_VERSION, FaceParams, LayoutError, ParamLayout


def random_params(rng, batch=(), n_id=100):
    return FaceParams(identity=rng.normal(size=batch + (n_id,)).astype(np.float32),
                      expression=rng.random(batch + (53,)).astype(np.float32),
                      rotation=rng.normal(size=batch + (3,)).astype(np.float32),
                      translation=rng.normal(size=batch + (3,)).astype(np.float32),
                      sh=rng.normal(size=batch + (9, 3)).astype(np.float32),
                      albedo=rng.normal(size=batch + (7,)).astype(np.float32))


def test_layout_sizes_and_slices():
    layout = ParamLayout()
    assert layout.size == 100 + 53 + 3 + 3 + 27 + 7 + 3
    assert layout.slices["expression"] == slice(100, 153)
    assert layout.slices["camera"].stop == layout.size
    small = ParamLayout(n_identity=40)
    assert small.size == layout.size - 60
    assert ParamLayout.from_dict(small.to_dict()) == small


@pytest.mark.parametrize("batch", [(), (4,), (2, 3)])
def test_vector_round_trip(batch):
    p = random_params(np.random.default_rng(1), batch)
    v = p.to_vector()
    assert v.shape == batch + (ParamLayout().size,) and v.dtype == np.float32
    q = FaceParams.from_vector(v)
    for name in ("identity", "expression", "rotation", "translation", "sh", "albedo", "camera"):
        np.testing.assert_array_equal(getattr(q, name), getattr(p, name))
    np.testing.assert_array_equal(q.camera[..., :], np.broadcast_to(DEFAULT_CAMERA, batch + (3,)))


def test_json_round_trip_and_units(tmp_path):
    p = random_params(np.random.default_rng(2))
    path = tmp_path / "face.json"
    p.save(path)
    d = json.loads(path.read_text())
    assert d["layout_version"] == LAYOUT_VERSION and d["albedo_names"] == list(ALBEDO_NAMES)
    q = FaceParams.load(path)
    np.testing.assert_allclose(q.to_vector(), p.to_vector(), atol=1e-6)


def test_torch_tensors_pass_through():
    torch = pytest.importorskip("torch")
    p = random_params(np.random.default_rng(3), (2,))
    t = FaceParams.from_vector(torch.as_tensor(p.to_vector()))
    assert isinstance(t.to_vector(), torch.Tensor)
    np.testing.assert_allclose(t.numpy().to_vector(), p.to_vector())


def test_bad_layouts_are_rejected_clearly():
    with pytest.raises(LayoutError, match="newer"):
        ParamLayout(version=LAYOUT_VERSION + 1)
    with pytest.raises(LayoutError, match="n_identity"):
        ParamLayout(n_identity=101)
    with pytest.raises(LayoutError, match="needs"):
        FaceParams.from_vector(np.zeros(10, np.float32))
    with pytest.raises(LayoutError, match="layout_version"):
        FaceParams.from_json("{}")
    with pytest.raises(LayoutError, match="invalid JSON"):
        FaceParams.from_json("not json")
    d = random_params(np.random.default_rng(0)).to_dict()
    d["expression"] = d["expression"][:5]
    with pytest.raises(LayoutError, match="expression"):
        FaceParams.from_dict(d)
    del d["sh"]
    with pytest.raises(LayoutError, match="sh"):
        FaceParams.from_dict(d)


def test_identity_mode_padding_and_batch_ops():
    p = random_params(np.random.default_rng(4), (3,), n_id=20)
    q = p.with_identity_modes(100)
    assert q.identity.shape == (3, 100)
    np.testing.assert_array_equal(q.identity[:, :20], p.identity)
    assert not q.identity[:, 20:].any()
    assert p[1].batch_shape == () and FaceParams.stack([p[0], p[2]]).batch_shape == (2,)
    assert FaceParams.neutral((2,)).translation[0, 2] == -100
