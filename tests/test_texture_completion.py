"""What the baked head texture looks like: photo only where it shows skin, skin-toned fill elsewhere,
lash texture with alpha, iris colour (numpy; no Blender)."""

from __future__ import annotations

import numpy as np
import pytest

from runtime import completion, eyes, lashes, texture
from runtime.pipeline import reconstruct_photo
from runtime.uv import TILES, interpolate, sample, uv_raster

from .conftest import FACES

GRACE = FACES / "demo" / "grace_hopper.jpg"   # US Navy, public domain: a dark hat with gold braid, glasses
SIZE = 256


def _lab_distance(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(completion.to_lab(np.asarray(a, np.float32)[None])[0]
                                - completion.to_lab(np.asarray(b, np.float32)[None])[0]))


@pytest.fixture(scope="module")
def grace(face_model):
    recon = reconstruct_photo(GRACE)
    projection = texture.project_photo(face_model, recon.params, recon.image, SIZE)
    return recon, projection, texture.bake_projection(face_model, projection)


def test_skin_colour_model_rejects_hair_by_colour_and_by_strands() -> None:
    rng = np.random.default_rng(0)
    skin = np.array([205.0, 150.0, 125.0]) + rng.normal(0, 6, (400, 3))
    model = completion.fit_skin_colour(skin, np.zeros(3), roughness=rng.uniform(3, 6, 400))
    assert model.likelihood(skin).mean() > 0.9
    dark_hair = np.array([[60.0, 45.0, 35.0]] * 10)
    hat = np.array([[20.0, 22.0, 30.0]] * 10)
    assert model.likelihood(dark_hair).max() == 0 and model.likelihood(hat).max() == 0
    blond = np.array([[190.0, 150.0, 110.0]] * 10)           # a skin-like colour …
    smooth, stranded = np.full(10, 4.0), np.full(10, 14.0)
    assert model.likelihood(blond, stranded).max() < model.likelihood(blond, smooth).min()   # … but rough
    few = completion.fit_skin_colour(skin[:5], np.array([200.0, 150.0, 130.0]))   # too few samples: broad prior
    assert few.likelihood(np.array([[200.0, 150.0, 130.0]]))[0] == 1.0


def test_core_face_and_reach(face_model) -> None:
    core, reach = completion.core_face(face_model), completion.skin_reach(face_model)
    lm = face_model.landmarks68
    assert (core[lm[[30, 33, 51, 57, 19, 24]]] == 1).all()   # nose, lips, brows: the photo is kept as it is
    lids = [face_model.expression_names.index(n) for n in ("eyeBlink_L", "eyeBlink_R")]
    moving = np.linalg.norm(face_model.expression_basis[lids], axis=-1).max(0) > completion.LID_MOTION_CM[1]
    assert moving.sum() > 50 and core[moving].max() == 0       # the lid a blink uncovers is checked for skin
    head = face_model.vertex_range("head_neck")                 # skull, ears, neck: never the core face
    crown = head[face_model.neutral[head, 1] > face_model.neutral[head, 1].max() - 2.0]
    assert core[head].max() == 0 and reach[crown].max() == 0   # the crown never takes the photo
    sockets = np.concatenate([face_model.vertex_range("mouth_socket"), face_model.vertex_range("eye_sockets")])
    assert core[sockets].max() == 0 and reach[sockets].max() == 0


def test_hat_and_collar_are_not_projected(face_model, grace) -> None:
    """Grace Hopper's dark hat and the collar used to cover the skull and neck; now those are the
    photo's skin tone, the face is still the photo, and the fill meets the face without a step."""
    recon, projection, baked = grace
    skin = projection.skin_rgb
    back = baked.images["M_BackHead"].reshape(-1, 3).astype(np.float32)
    assert _lab_distance(back.mean(0), skin) < 10.0
    assert baked.coverage["M_BackHead"] < 0.01                       # no photo on the back of the head
    assert 0.15 < baked.coverage["M_Face"] < 0.6
    # the inner face keeps the photo's detail (wrinkles, glasses): high local contrast there
    r = uv_raster(face_model, "M_Face", SIZE)
    face_tex = baked.images["M_Face"].reshape(-1, 3)[r.texels].astype(np.float32)
    inner = interpolate(completion.core_face(face_model), r) > 0.99
    assert face_tex[inner].std(0).mean() > 15.0
    # the vertices on the cut between the face and back-of-head tiles get one colour from both sides
    used = [np.unique(face_model.faces[face_model.face_material == face_model.material_names.index(m)])
            for m in ("M_Face", "M_BackHead")]
    cut = np.intersect1d(used[0][used[0] >= 0], used[1][used[1] >= 0])
    assert len(cut) > 100
    sides = []
    for material in ("M_Face", "M_BackHead"):
        img = baked.images[material]
        sel = face_model.face_material == face_model.material_names.index(material)
        fv, fu = face_model.faces[sel].reshape(-1), face_model.face_uvs[sel].reshape(-1)
        keep = np.isin(fv, cut)
        first = {v: u for v, u in zip(fv[keep][::-1], fu[keep][::-1])}
        uv = face_model.uvs[[first[v] for v in cut]] - [TILES[material], 0]
        sides.append(sample(img, np.ascontiguousarray(uv * img.shape[0], np.float32)))
    delta = completion.to_lab(sides[0]) - completion.to_lab(sides[1])
    assert np.median(np.linalg.norm(delta, axis=1)) < 6.0


def test_unseen_head_is_filled_from_the_albedo(face_model, grace) -> None:
    """A view that sees nothing (the head turned away) still gets a skin-coloured head from the albedo."""
    recon, _, _ = grace
    p = recon.params.numpy()
    away = type(p)(p.identity, p.expression, p.rotation + np.array([np.pi, 0, 0], np.float32), p.translation,
                   p.sh, p.albedo, p.camera)
    projection = texture.project_photo(face_model, away, recon.image, 128)
    assert projection.skin_rgb is None                                   # no face skin seen
    baked = texture.bake_projection(face_model, projection)
    albedo_skin = texture._albedo_srgb(face_model, away)
    assert _lab_distance(baked.images["M_Face"].reshape(-1, 3).mean(0), albedo_skin) < 8.0
    np.testing.assert_allclose(baked.iris_color, eyes.albedo_iris_srgb(p.albedo))


def test_iris_colour_comes_from_the_photo(face_model, grace) -> None:
    _, projection, baked = grace
    assert not np.allclose(baked.iris_color, eyes.albedo_iris_srgb(projection.albedo))
    assert _lab_distance(baked.iris_color * 255, projection.skin_rgb) > eyes.IRIS_MIN_SKIN_DELTA_E
    brown, blue = (eyes.albedo_iris_srgb(np.eye(7, dtype=np.float32)[6] * t) for t in (-2.0, 2.0))
    assert brown[0] > brown[2] and blue[2] > blue[0]                  # the albedo's iris axis, as documented


def test_lash_texture(face_model) -> None:
    cards = lashes.lash_cards(face_model)
    assert len(cards) == 12 and sum(c.upper for c in cards) == 6
    skin = face_model.neutral[face_model.material_vertices("M_Face")]
    sel = face_model.face_material == face_model.material_names.index(lashes.LASH_MATERIAL)
    fv, fu = face_model.faces[sel].reshape(-1), face_model.face_uvs[sel].reshape(-1)
    uv = face_model.uvs[fu] - [6, 0]
    for card in cards:     # the root edge is the one on the eyelid
        root_v = card.v1 if card.root_at_top else card.v0
        on_card = (uv[:, 0] >= card.u0 - 1e-4) & (uv[:, 0] <= card.u1 + 1e-4)
        root = np.unique(fv[on_card & (np.abs(uv[:, 1] - root_v) < 1e-4)])
        gap = np.linalg.norm(face_model.neutral[root][:, None] - skin[None], axis=-1).min(1)
        assert np.median(gap) < 0.05
    tex = lashes.lash_texture(face_model, 256)
    alpha = tex[..., 3].astype(np.float32) / 255
    assert tex.shape == (256, 256, 4) and 0.03 < alpha.mean() < 0.4     # strands, not an opaque card
    card = cards[-1]
    rows = lambda lo, hi: alpha[int(lo * 256):int(hi * 256), int(card.u0 * 256):int(card.u1 * 256)].mean()
    height = card.v1 - card.v0
    assert rows(card.v1 - 0.2 * height, card.v1) > 2 * rows(card.v0, card.v0 + 0.2 * height)   # dense at the root
    np.testing.assert_array_equal(tex, lashes.lash_texture(face_model, 256))                   # deterministic
