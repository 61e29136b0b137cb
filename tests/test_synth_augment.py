"""Augmentation, visibility and per-image seeding (numpy only, no Blender)."""

from __future__ import annotations

import numpy as np
import pytest

from facemodel.lighting import srgb_encode
from synth.augment import FLAG, AugmentConfig, Augmenter, list_photos
from synth.labels import image_rngs, image_seed, landmark_visibility

S = 64


def render_like(rng: np.random.Generator) -> np.ndarray:
    """A premultiplied linear RGBA 'render': a disc of face colour on transparent film."""
    yy, xx = np.mgrid[0:S, 0:S]
    alpha = (((xx - 32) ** 2 + (yy - 30) ** 2) < 18 ** 2).astype(np.float32)
    rgba = np.zeros((S, S, 4), np.float32)
    rgba[..., :3] = rng.random(3).astype(np.float32) * alpha[..., None]
    rgba[..., 3] = alpha
    return rgba


def test_clean_composite_is_facemodel_srgb():
    rgba = render_like(np.random.default_rng(0))
    out = Augmenter(AugmentConfig.off(), S)(np.random.default_rng(1), rgba, np.array([14, 12, 50, 48.0]))
    expected = (np.clip(srgb_encode(rgba[..., :3]), 0, 1) * 255 + 0.5).astype(np.uint8)
    np.testing.assert_array_equal(out.image, expected)
    assert out.flags == 0 and not out.occluder.any()


def test_deterministic_and_flags_recorded():
    aug = Augmenter(AugmentConfig(occluder_p=1.0, blur_p=1.0, color_jitter_p=1.0, noise_p=1.0, jpeg_p=1.0), S)
    rgba = render_like(np.random.default_rng(0))
    box = np.array([14, 12, 50, 48.0])
    a = aug(np.random.default_rng(5), rgba, box)
    b = aug(np.random.default_rng(5), rgba, box)
    np.testing.assert_array_equal(a.image, b.image)
    for step in ("blur", "color_jitter", "noise", "jpeg"):
        assert a.flags & FLAG[step]
    assert a.flags & (FLAG["occluder_cutout"] | FLAG["occluder_shape"]) and a.occluder.any()
    assert a.image.dtype == np.uint8 and a.image.shape == (S, S, 3)


def test_every_background_kind(tmp_path):
    import cv2

    photo = tmp_path / "bg.png"
    cv2.imwrite(str(photo), np.random.default_rng(0).integers(0, 255, (50, 80, 3), dtype=np.uint8))
    aug = Augmenter(AugmentConfig(), S, list_photos(tmp_path))
    seen = set()
    for i in range(60):
        img, flag = aug.background(np.random.default_rng(i))
        assert img.shape == (S, S, 3) and img.dtype == np.float32 and 0 <= img.min() and img.max() <= 1
        seen.add(flag)
    assert seen == {FLAG[f"bg_{k}"] for k in ("gradient", "noise", "texture", "solid", "photo")}


def test_backgrounds_folder_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        list_photos(tmp_path / "missing")
    with pytest.raises(ValueError, match="no images"):
        list_photos(tmp_path)


def test_visibility_z_test():
    depth = np.full((20, 20), 1e10, np.float32)
    depth[5:15, 5:15] = 100.0              # a surface at 100 cm
    depth[8:11, 8:11] = 97.0                # a bump (nose) 3 cm in front
    pts = np.array([[6.5, 6.5], [9.5, 9.5], [9.5, 9.5], [4.5, 9.5], [25.0, 5.0]])
    z = np.array([100.2, 100.0, 97.1, 100.0, 100.0])
    vis = landmark_visibility(pts, z, depth, radius=0)
    assert vis.tolist() == [True, False, True, True, False]  # on surface, behind bump, on bump, silhouette, outside


def test_image_seed_stable():
    assert image_seed(0, 5) == image_seed(0, 5) != image_seed(1, 5) != image_seed(0, 6)
    a, b = image_rngs(image_seed(3, 7))
    assert a.random() != b.random()
    assert 0 <= image_seed(2**40, 10**9) < 2**63


def test_vertex_shading_equals_facemodel(face_model):
    """The renderer's batched shading is facemodel's vertex_colors (linear), just faster."""
    from facemodel.formation import mesh_camera_space, vertex_colors
    from facemodel.priors import sample_params
    from synth.labels import VertexShading

    p = sample_params(np.random.default_rng(0), 3, face_model.expression_names,
                      face_model.arrays.subset(face_model.landmark_indices()))
    v = mesh_camera_space(face_model.arrays, p)
    np.testing.assert_allclose(VertexShading(face_model.arrays)(p, v),
                               vertex_colors(face_model.arrays, p, v, encode=False), atol=2e-5)


def test_draw_polygons_cover_the_render_surface(face_model):
    """Blender gets ICT's quads (split 0-2 like facemodel) plus back sides for the lashes only."""
    from facemodel.geometry import triangulate
    from synth.labels import draw_polygons

    polys = draw_polygons(face_model)
    tris = {tuple(t) for t in np.sort(triangulate(polys), 1)}
    assert tris == {tuple(t) for t in np.sort(face_model.render_triangles, 1)}
    from facemodel.model import OVERLAY_MATERIALS

    overlay = np.isin(face_model.face_material, [face_model.material_names.index(m) for m in OVERLAY_MATERIALS])
    extra = polys[int((~overlay).sum()):]
    assert len(extra) and face_model.region_masks["lashes"][extra[extra >= 0]].all()
