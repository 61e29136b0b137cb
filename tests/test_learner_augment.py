"""Augmentation: the in-plane roll and the photo crop jitter keep labels exact; photometric ops are
deterministic and bounded."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from facemodel import FaceParams, ParamLayout, landmarks_2d
from facemodel.formation import form
from learner.augment import _gain, augment, crop_jitter, roll_images, roll_labels
from learner.config import AugmentConfig
from learner.losses import unified_vertex_indices

SIZE = 64
LAYOUT = ParamLayout(100)


@pytest.fixture(scope="module")
def params(face_model) -> FaceParams:
    from facemodel.priors import sample_params

    lm = face_model.arrays.subset(face_model.landmark_indices())
    return sample_params(np.random.default_rng(5), 4, face_model.expression_names, lm, n_identity=100)


def test_roll_labels_match_rerendered_landmarks_and_shading(face_model, params):
    arrays = face_model.arrays.subset(unified_vertex_indices(face_model))
    vec = torch.as_tensor(np.asarray(params.to_vector()), dtype=torch.float64)
    lm = torch.as_tensor(np.asarray(landmarks_2d(arrays, params, SIZE, SIZE)), dtype=torch.float64)
    theta = torch.tensor([0.3, -0.2, 0.0, 1.0], dtype=torch.float64)
    new_vec, new_lm = roll_labels(vec, lm, theta, LAYOUT, SIZE)
    new_params = FaceParams.from_vector(new_vec.numpy(), LAYOUT)
    # the landmarks of the relabelled face are the rotated landmarks
    np.testing.assert_allclose(landmarks_2d(arrays, new_params, SIZE, SIZE), new_lm.numpy(), atol=1e-3)
    # and it looks the same: rotating the SH with the head keeps every vertex colour
    before = form(face_model.arrays, params, SIZE, SIZE).colors
    after = form(face_model.arrays, new_params, SIZE, SIZE).colors
    np.testing.assert_allclose(after, before, atol=2e-4)


def test_roll_images_moves_a_dot_like_the_landmarks():
    img = torch.zeros(1, 3, SIZE, SIZE)
    u, v = 44.5, 20.5                           # pixel centre (44, 20)
    img[0, :, 20, 44] = 1.0
    theta = torch.tensor([np.pi / 2])
    out = roll_images(img, theta, torch.zeros(1, 2))
    _, lm = roll_labels(torch.zeros(1, LAYOUT.size) + torch.tensor([0.0] * (LAYOUT.size - 3) + [4.0, 0.5, 0.5]),
                        torch.tensor([[[u, v]]]), theta, LAYOUT, SIZE)
    iy, ix = np.unravel_index(int(out[0, 0].argmax()), (SIZE, SIZE))
    np.testing.assert_allclose([ix + 0.5, iy + 0.5], lm[0, 0].numpy(), atol=1.0)


@pytest.mark.parametrize("scale,shift", [(1.1, (0.03, -0.02)), (0.9, (-0.05, 0.04)), (1.0, (0.0, 0.0))])
def test_crop_jitter_moves_a_blob_like_the_landmarks(scale, shift):
    """The jittered landmark sits on the blob's centroid in the re-cropped image."""
    yy, xx = np.mgrid[0:SIZE, 0:SIZE] + 0.5                 # pixel centres, corner at 0
    u, v = 41.3, 22.8
    blob = np.exp(-((xx - u) ** 2 + (yy - v) ** 2) / (2 * 2.0 ** 2))
    img = torch.as_tensor(np.repeat(blob[None, None], 3, 1), dtype=torch.float32)
    out, lm = crop_jitter(img, torch.tensor([[[u, v]]]), torch.tensor([scale]), torch.tensor([shift]))
    w = out[0, 0].numpy().astype(np.float64)
    centroid = [(w * xx).sum() / w.sum(), (w * yy).sum() / w.sum()]
    np.testing.assert_allclose(centroid, lm[0, 0].numpy(), atol=0.05)
    # closed form: a larger crop (scale > 1) pulls points towards the centre
    expect = SIZE / 2 + (np.array([u, v]) - SIZE / 2 - np.array(shift) * SIZE) / scale
    np.testing.assert_allclose(lm[0, 0].numpy(), expect, atol=1e-4)


def test_photo_crop_jitter_only_on_landmark_only_samples(face_model, params):
    rng = np.random.default_rng(1)
    images = torch.as_tensor(rng.uniform(0, 1, (6, 3, SIZE, SIZE)), dtype=torch.float32)
    vec = torch.as_tensor(np.repeat(np.asarray(params.to_vector())[:1], 6, 0))
    lm = torch.as_tensor(rng.uniform(0, SIZE, (6, 84, 2)), dtype=torch.float32)
    photos = torch.tensor([True, False, True, False, True, False])
    only = dict(p_roll=0.0, p_blur=0.0, p_noise=0.0, p_cutout=0.0, p_color=0.0, p_gain=0.0)
    out = augment(images, vec, lm, LAYOUT, AugmentConfig(p_photo_crop=1.0, **only),
                  torch.Generator().manual_seed(3), landmarks_only=photos)
    moved = (out[2] - lm).abs().amax((1, 2)) > 1e-3
    assert moved.tolist() == photos.tolist()
    assert torch.equal(out[0][~photos], images[~photos]) and not torch.equal(out[0][photos], images[photos])
    assert torch.equal(out[1], vec)                                    # 3-D labels untouched
    # off (the default): the same random stream as before the option existed
    cfg = AugmentConfig(p_roll=1.0, p_blur=1.0, p_noise=1.0)
    a = augment(images, vec, lm, LAYOUT, cfg, torch.Generator().manual_seed(7), landmarks_only=photos)
    b = augment(images, vec, lm, LAYOUT, cfg, torch.Generator().manual_seed(7))
    for x, y in zip(a, b):
        assert torch.equal(x, y)


def test_augment_deterministic_bounded_channels_last(face_model, params):
    rng = np.random.default_rng(0)
    images = torch.as_tensor(rng.uniform(0, 1, (8, 3, SIZE, SIZE)), dtype=torch.float32)
    vec = torch.as_tensor(np.repeat(np.asarray(params.to_vector())[:1], 8, 0))
    lm = torch.as_tensor(rng.uniform(0, SIZE, (8, 84, 2)), dtype=torch.float32)
    cfg = AugmentConfig(p_roll=1.0, p_blur=1.0, p_noise=1.0, p_cutout=1.0, p_color=1.0, p_gain=1.0)
    a = augment(images, vec, lm, LAYOUT, cfg, torch.Generator().manual_seed(7))
    b = augment(images, vec, lm, LAYOUT, cfg, torch.Generator().manual_seed(7))
    c = augment(images, vec, lm, LAYOUT, cfg, torch.Generator().manual_seed(8))
    for x, y in zip(a, b):
        assert torch.equal(x, y)
    assert not torch.equal(a[0], c[0])
    assert a[0].shape == images.shape and a[0].is_contiguous(memory_format=torch.channels_last)
    assert float(a[0].min()) >= 0 and float(a[0].max()) <= 1
    assert not torch.equal(a[1], vec) and not torch.equal(a[2], lm)   # roll changed the labels
    assert not bool(a[3].any())                                        # camera-response jitter on all
    clean = augment(images, vec, lm, LAYOUT, AugmentConfig(p_color=0.0), torch.Generator().manual_seed(7))
    assert bool(clean[3].all())
    off = augment(images, vec, lm, LAYOUT, AugmentConfig(enabled=False), torch.Generator().manual_seed(7))
    assert off[0] is images and off[1] is vec and bool(off[3].all())


def test_linear_gain_keeps_sh_labels_exact(face_model, params):
    """Scaling a channel in linear light = scaling that channel's SH coefficients."""
    colors = form(face_model.arrays, params, SIZE, SIZE).colors            # (4, V, 3) sRGB
    vec = torch.as_tensor(np.asarray(params.to_vector()))
    img = torch.as_tensor(colors, dtype=torch.float32).permute(0, 2, 1)[..., None]   # (4, 3, V, 1)
    cfg = AugmentConfig(p_gain=1.0, brightness=0.3, tint=0.1)
    out, new_vec = _gain(img, vec, LAYOUT, cfg, torch.Generator().manual_seed(3))
    expect = form(face_model.arrays, FaceParams.from_vector(new_vec.numpy(), LAYOUT), SIZE, SIZE).colors
    got = out[..., 0].permute(0, 2, 1).numpy()
    unclipped = (expect < 0.999) & (colors < 0.999)
    assert unclipped.mean() > 0.9 and not np.allclose(got, colors, atol=1e-2)
    np.testing.assert_allclose(got[unclipped], expect[unclipped], atol=2e-3)
