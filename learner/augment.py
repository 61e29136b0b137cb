"""Batched, on-the-fly augmentation in torch (a few ms per batch of 64 at 128²).

Geometric: an in-plane rotation about the principal point. That is exactly a roll of the
camera about its optical axis, so the labels follow without approximation: roll += θ, the
translation and the camera-space SH lighting rotate by Rz(θ), 2-D landmarks rotate about the
principal point. Scale/shift (crop) jitter would change the intrinsics, which the layout fixes,
and has no exact 3-D label update, so renders get theirs in the corpus renderer; samples labelled
by 2-D landmarks only (photos, framed by the detector's canonical crop) get an on-the-fly crop
jitter here, exact for their labels (``photo_crop_*``; measured: the round-6 model loses 0.45 %
Helen NME from the detector's box, 0.8 % from the ground-truth box, when the crop is 6 % larger).

Photometric: a per-channel gain in linear light (brightness and white balance) with the SH
labels scaled accordingly — exact, since radiance = albedo · (SH basis · coefficients) is linear
in each channel's coefficients; optional camera-response jitter (hue rotation in YIQ,
saturation, contrast, gamma) that no label can follow, so those samples are flagged and lose
their SH/albedo supervision; Gaussian blur, Gaussian noise and a cutout occluder (the labels
stay: the network must infer occluded parts).

All randomness comes from the ``torch.Generator`` passed in, so a step's augmentation is a
function of (seed, step) and training resumes bit-exactly.
"""

from __future__ import annotations


import torch
import torch.nn.functional as F

from facemodel import ParamLayout
from facemodel.lighting import srgb_decode, srgb_encode

from .config import AugmentConfig

# RGB ↔ YIQ: hue is a rotation of the (I, Q) chroma plane.
_RGB2YIQ = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
_YIQ2RGB = torch.linalg.inv(_RGB2YIQ)


def _uniform(gen: torch.Generator, n: int, lo: float, hi: float) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=gen)


def _chance(gen: torch.Generator, n: int, p: float) -> torch.Tensor:
    return torch.rand(n, generator=gen) < p


def roll_labels(params: torch.Tensor, landmarks: torch.Tensor, theta: torch.Tensor, layout: ParamLayout,
                size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Labels after rotating the image by ``theta`` (B,) radians counter-clockwise on screen."""
    s = layout.slices
    c, sn = torch.cos(theta), torch.sin(theta)
    out = params.clone()
    out[:, s["rotation"].start + 2] += theta                       # Rz(θ)·Rz(roll)·Rx·Ry
    t = params[:, s["translation"]]
    out[:, s["translation"].start] = c * t[:, 0] - sn * t[:, 1]
    out[:, s["translation"].start + 1] = sn * t[:, 0] + c * t[:, 1]
    sh = params[:, s["sh"]].reshape(-1, 9, 3)
    new = sh.clone()
    c2, s2 = torch.cos(2 * theta)[:, None], torch.sin(2 * theta)[:, None]
    c1, s1 = c[:, None], sn[:, None]
    for bx, by, cc, ss in ((3, 1, c1, s1), (7, 5, c1, s1), (8, 4, c2, s2)):  # (x, y), (xz, yz), (x²−y², xy)
        new[:, bx] = cc * sh[:, bx] - ss * sh[:, by]
        new[:, by] = ss * sh[:, bx] + cc * sh[:, by]
    out[:, s["sh"]] = new.reshape(-1, 27)
    cam = params[:, s["camera"]]
    centre = torch.stack([cam[:, 1], cam[:, 2]], -1)[:, None] * size   # principal point, px
    d = landmarks - centre
    # y-up rotation by θ seen in y-down pixels: (du, dv) → (du c + dv s, −du s + dv c)
    lm = torch.stack([d[..., 0] * c[:, None] + d[..., 1] * sn[:, None],
                      -d[..., 0] * sn[:, None] + d[..., 1] * c[:, None]], -1) + centre
    return out, lm


def roll_images(images: torch.Tensor, theta: torch.Tensor, centre: torch.Tensor) -> torch.Tensor:
    """Rotate images (B, 3, S, S) by ``theta`` about ``centre`` (B, 2) in normalised [-1, 1] coords."""
    c, s = torch.cos(theta), torch.sin(theta)
    # output pixel p' samples source p = c0 + Mᵀ(p' − c0), M = [[c, s], [−s, c]]
    mt = torch.stack([torch.stack([c, -s], -1), torch.stack([s, c], -1)], -2)
    shift = centre - (mt @ centre[..., None])[..., 0]
    grid = F.affine_grid(torch.cat([mt, shift[..., None]], -1), list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)


def crop_jitter(images: torch.Tensor, landmarks: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """Re-crop images (B, 3, S, S): side × ``scale`` (B,) about the centre moved by ``shift`` (B, 2).

    ``shift`` is a fraction of the side (x right, y down); pixels beyond the stored crop repeat its
    border. Landmarks (B, K, 2), pixels with the corner at 0, follow exactly.
    """
    b, _, h, w = images.shape
    zero = torch.zeros_like(scale)
    theta = torch.stack([torch.stack([scale, zero, 2 * shift[:, 0]], -1),
                         torch.stack([zero, scale, 2 * shift[:, 1]], -1)], -2).to(images.dtype)
    grid = F.affine_grid(theta, [b, images.shape[1], h, w], align_corners=False)
    out = F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)
    size = torch.tensor([w, h], dtype=landmarks.dtype)
    centre = size / 2
    lm = centre + (landmarks - centre - shift[:, None].to(landmarks.dtype) * size) / scale[:, None, None].to(
        landmarks.dtype)
    return out, lm


def _photo_crop(images: torch.Tensor, landmarks: torch.Tensor, landmarks_only: torch.Tensor | None,
                cfg: AugmentConfig, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Crop jitter on the landmark-only samples (draws no random numbers when it is off)."""
    if cfg.p_photo_crop <= 0 or landmarks_only is None or not bool(landmarks_only.any()):
        return images, landmarks
    b = images.shape[0]
    on = _chance(gen, b, cfg.p_photo_crop) & landmarks_only
    scale = _uniform(gen, b, 1 - cfg.photo_crop_scale, 1 + cfg.photo_crop_scale)
    shift = (torch.rand(b, 2, generator=gen) * 2 - 1) * cfg.photo_crop_shift
    idx = on.nonzero().squeeze(1)
    if len(idx) == 0:
        return images, landmarks
    out, lm = images.clone(), landmarks.clone()
    out[idx], lm[idx] = crop_jitter(images[idx], landmarks[idx], scale[idx], shift[idx])
    return out, lm


def _apply(images: torch.Tensor, on: torch.Tensor, fn) -> torch.Tensor:
    """Run ``fn(subset, idx)`` only on the selected images (most ops hit a fraction of the batch)."""
    idx = on.nonzero().squeeze(1)
    if len(idx) == 0:
        return images
    out = images.clone()
    out[idx] = fn(images[idx], idx).to(images.dtype)
    return out


def _gain(images: torch.Tensor, params: torch.Tensor, layout: ParamLayout, cfg: AugmentConfig,
          gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel linear gain; SH coefficients of each channel scale by the same gain."""
    b = images.shape[0]
    on = _chance(gen, b, cfg.p_gain)
    g = torch.exp(_uniform(gen, b, -cfg.brightness, cfg.brightness))[:, None] * torch.exp(
        (torch.rand(b, 3, generator=gen) * 2 - 1) * cfg.tint)
    g = torch.where(on[:, None], g, torch.ones_like(g))
    images = _apply(images, on, lambda x, idx: srgb_encode(srgb_decode(x) * g[idx, :, None, None]))
    if bool(on.any()):
        sl = layout.slices["sh"]
        params = params.clone()
        params[:, sl] = (params[:, sl].reshape(-1, 9, 3) * g[:, None, :].to(params.dtype)).reshape(-1, 27)
    return images, params


def _color(images: torch.Tensor, cfg: AugmentConfig, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Camera-response jitter; returns the images and which samples it touched."""
    b = images.shape[0]
    on = _chance(gen, b, cfg.p_color)
    hue = torch.deg2rad(_uniform(gen, b, -cfg.hue_deg, cfg.hue_deg))
    sat = _uniform(gen, b, 1 - cfg.saturation, 1 + cfg.saturation)
    con = _uniform(gen, b, 1 - cfg.contrast, 1 + cfg.contrast)
    gam = torch.exp(_uniform(gen, b, -cfg.gamma, cfg.gamma))
    ch, sh = torch.cos(hue) * sat, torch.sin(hue) * sat
    one, zero = torch.ones(b), torch.zeros(b)
    rot = torch.stack([torch.stack([one, zero, zero], -1), torch.stack([zero, ch, -sh], -1),
                       torch.stack([zero, sh, ch], -1)], -2)                        # (B, 3, 3) in YIQ
    m = _YIQ2RGB @ rot @ _RGB2YIQ

    def fn(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        x = torch.einsum("bij,bjhw->bihw", m[idx], x)
        mean = x.mean((1, 2, 3), keepdim=True)
        return ((x - mean) * con[idx, None, None, None] + mean).clamp(0, 1) ** gam[idx, None, None, None]
    return _apply(images, on, fn), on


def _blur(images: torch.Tensor, cfg: AugmentConfig, gen: torch.Generator) -> torch.Tensor:
    b, ch = images.shape[:2]
    sigma = _uniform(gen, b, *cfg.blur_sigma)
    on = _chance(gen, b, cfg.p_blur)
    r = 3
    xs = torch.arange(-r, r + 1, dtype=images.dtype)

    def fn(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        k = torch.exp(-0.5 * (xs[None] / sigma[idx, None]) ** 2)
        k = (k / k.sum(1, keepdim=True)).repeat_interleave(ch, 0)              # (n·3, 7)
        y = x.reshape(1, n * ch, h, w)
        y = F.conv2d(F.pad(y, (r, r, 0, 0), mode="replicate"), k[:, None, None, :], groups=n * ch)
        y = F.conv2d(F.pad(y, (0, 0, r, r), mode="replicate"), k[:, None, :, None], groups=n * ch)
        return y.reshape(n, ch, h, w)
    return _apply(images, on, fn)


def _noise(images: torch.Tensor, cfg: AugmentConfig, gen: torch.Generator) -> torch.Tensor:
    b = images.shape[0]
    std = _uniform(gen, b, *cfg.noise_std)
    on = _chance(gen, b, cfg.p_noise)

    def fn(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        return (x + std[idx, None, None, None] * torch.randn(x.shape, generator=gen)).clamp(0, 1)
    return _apply(images, on, fn)


def _cutout(images: torch.Tensor, cfg: AugmentConfig, gen: torch.Generator) -> torch.Tensor:
    b, _, h, w = images.shape
    on = _chance(gen, b, cfg.p_cutout)
    sw = _uniform(gen, b, *cfg.cutout_size) * w
    shh = _uniform(gen, b, *cfg.cutout_size) * h
    x0 = torch.rand(b, generator=gen) * (w - sw)
    y0 = torch.rand(b, generator=gen) * (h - shh)
    colour = torch.rand(b, 3, generator=gen).to(images.dtype)
    if not bool(on.any()):
        return images
    out = images.clone()
    for i in on.nonzero().squeeze(1).tolist():   # pixel centres inside the rectangle
        xa, xb = int(torch.ceil(x0[i] - 0.5)), int(torch.ceil(x0[i] + sw[i] - 0.5))
        ya, yb = int(torch.ceil(y0[i] - 0.5)), int(torch.ceil(y0[i] + shh[i] - 0.5))
        out[i, :, ya:yb, xa:xb] = colour[i, :, None, None]
    return out


def augment(images: torch.Tensor, params: torch.Tensor, landmarks: torch.Tensor, layout: ParamLayout,
            cfg: AugmentConfig, gen: torch.Generator, landmarks_only: torch.Tensor | None = None
            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Augment a batch: images (B, 3, S, S) in [0, 1], params (B, P) in ``layout``, landmarks (B, K, 2) px.

    ``landmarks_only`` (B,) bool marks samples whose geometry is labelled by 2-D landmarks only
    (photos): they may also get the crop jitter. Returns the new images, params, landmarks and a
    (B,) bool: True where the appearance labels (SH, albedo) still describe the pixels.
    """
    if not cfg.enabled:
        return images, params, landmarks, torch.ones(images.shape[0], dtype=torch.bool)
    images = images.contiguous()   # the per-pixel ops below are faster on NCHW than channels_last
    images, landmarks = _photo_crop(images, landmarks, landmarks_only, cfg, gen)
    b, size = images.shape[0], images.shape[-1]
    theta = torch.deg2rad(_uniform(gen, b, -cfg.roll_deg, cfg.roll_deg)) * _chance(gen, b, cfg.p_roll)
    rolled = theta != 0
    if bool(rolled.any()):
        params, landmarks = roll_labels(params, landmarks, theta, layout, size)
        cam = params[:, layout.slices["camera"]]
        centre = torch.stack([cam[:, 1], cam[:, 2]], -1) * 2 - 1
        images = _apply(images, rolled, lambda x, idx: roll_images(x, theta[idx], centre[idx]))
    images, params = _gain(images, params, layout, cfg, gen)
    images, jittered = _color(images, cfg, gen)
    images = _cutout(images, cfg, gen)
    images = _blur(images, cfg, gen)
    images = _noise(images, cfg, gen)
    return images.contiguous(memory_format=torch.channels_last), params, landmarks, ~jittered


__all__ = ["augment", "crop_jitter", "roll_images", "roll_labels"]
