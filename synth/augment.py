"""Realism for synthetic renders, in numpy/cv2 after Blender: backgrounds, occluders, degradations.

Why here and not in Blender: the render stays a pure function of the face parameters (the
part the labels describe exactly), post-processing costs ~1 ms per image at 128², and every
step is switchable and recorded per image (``aug_flags`` bits, ``occluded`` landmarks) so the
learner can tell label-exact pixels from augmented ones.

Order (a camera-like pipeline):

1. **background** behind the face, composited with the render's alpha in *linear* light
   (premultiplied ``rgb + (1 − α)·bg``), then sRGB-encoded with
   :func:`facemodel.lighting.srgb_encode` — so face pixels equal facemodel's image formation.
   Kinds: ``gradient`` (linear/radial, 2–3 colours), ``noise`` (multi-octave value noise),
   ``texture`` (stripes, checks, plaid), ``solid``, ``photo`` (random crops of real photos from
   ``--backgrounds DIR``; never faces, the caller's responsibility).
2. **occluders** painted over everything: ``cutout`` rectangles as in MobileFace (random colour
   or noise fill) and ``shape`` occluders (ellipses, polygons, bars) — landmarks under them are
   reported in ``occluded``; the face ``masks`` exclude occluded pixels. Landmark
   ``visibility`` itself is self-occlusion only (see :func:`synth.labels.landmark_visibility`).
3. **blur** (Gaussian or linear motion), 4. **colour jitter** (brightness, contrast,
   saturation, per-channel gain — this departs from the SH/albedo labels, hence recorded),
   5. **noise** (Gaussian sensor noise), 6. **JPEG** re-encoding at random quality.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from facemodel.lighting import srgb_decode, srgb_encode

log = logging.getLogger(__name__)

# Per-image record: which steps were applied (bit index → name); stored in the manifest too.
FLAG_BITS = ("bg_gradient", "bg_noise", "bg_texture", "bg_solid", "bg_photo", "occluder_cutout",
             "occluder_shape", "blur", "color_jitter", "noise", "jpeg")
FLAG = {name: 1 << i for i, name in enumerate(FLAG_BITS)}
BACKGROUND_KINDS = ("gradient", "noise", "texture", "solid", "photo")
PHOTO_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}
_SRGB_DECODE_LUT = srgb_decode(np.arange(256, dtype=np.float32) / 255).astype(np.float32)


@dataclass(frozen=True)
class AugmentConfig:
    """Probabilities and strengths of each step; ``enabled=False`` gives clean renders."""

    enabled: bool = True
    background_weights: dict[str, float] = field(default_factory=lambda: {
        "gradient": 1.0, "noise": 1.0, "texture": 1.0, "solid": 0.3, "photo": 2.0})
    occluder_p: float = 0.3        # probability of at least one occluder
    occluder_max: int = 2          # up to this many occluders when there is one
    cutout_share: float = 0.5      # of occluders, the share that are MobileFace cutouts
    blur_p: float = 0.25
    blur_sigma_px128: tuple[float, float] = (0.4, 1.4)   # at 128², scaled with the size
    color_jitter_p: float = 0.4
    noise_p: float = 0.3
    noise_sigma: tuple[float, float] = (0.005, 0.035)    # in [0, 1] units
    jpeg_p: float = 0.3
    jpeg_quality: tuple[int, int] = (30, 90)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["flag_bits"] = list(FLAG_BITS)
        return d

    @classmethod
    def off(cls) -> "AugmentConfig":
        return cls(enabled=False)


@dataclass
class Augmented:
    """Final uint8 image plus what was done to it."""

    image: np.ndarray      # (S, S, 3) uint8 sRGB
    occluder: np.ndarray   # (S, S) bool
    flags: int


def list_photos(directory: Path | str | None) -> list[Path]:
    """Background photos in a folder (recursively); raises if the folder has none."""
    if directory is None:
        return []
    d = Path(directory)
    if not d.is_dir():
        raise FileNotFoundError(f"backgrounds folder not found: {d}")
    photos = sorted(p for p in d.rglob("*") if p.suffix.lower() in PHOTO_SUFFIXES and p.is_file())
    if not photos:
        raise ValueError(f"no images (.jpg/.png/...) in backgrounds folder {d}")
    return photos


class Augmenter:
    """Applies :class:`AugmentConfig` to linear premultiplied renders; one per worker."""

    def __init__(self, config: AugmentConfig, size: int, photos: list[Path] | None = None,
                 photo_cache: int = 64) -> None:
        self.config, self.size = config, int(size)
        self.photos = list(photos or [])
        self._cache: dict[Path, np.ndarray] = {}
        self._cache_max = photo_cache
        # Procedural patterns are drawn on a grid of at most 128² and resized: backgrounds are
        # smooth or out of focus anyway, and this keeps 224² augmentation cheap.
        self.grid = min(self.size, 128)
        yy, xx = np.mgrid[0:self.grid, 0:self.grid].astype(np.float32)
        self._xx, self._yy = (xx + 0.5) / self.grid, (yy + 0.5) / self.grid
        kinds = [k for k in BACKGROUND_KINDS if config.background_weights.get(k, 0) > 0
                 and (k != "photo" or self.photos)]
        w = np.array([config.background_weights[k] for k in kinds], np.float64)
        self._bg_kinds, self._bg_p = kinds, w / w.sum() if len(w) else w

    # -- backgrounds (sRGB float in [0, 1]) ----------------------------------------------------
    def _colour(self, rng: np.random.Generator) -> np.ndarray:
        return rng.random(3).astype(np.float32) ** rng.uniform(0.6, 1.6)

    def background(self, rng: np.random.Generator) -> tuple[np.ndarray, int]:
        if not self._bg_kinds:
            return np.full((self.size, self.size, 3), 0.5, np.float32), 0
        kind = self._bg_kinds[int(rng.choice(len(self._bg_kinds), p=self._bg_p))]
        img = getattr(self, f"_bg_{kind}")(rng)
        if img.shape[0] != self.size:
            img = cv2.resize(np.ascontiguousarray(img, np.float32), (self.size, self.size),
                             interpolation=cv2.INTER_LINEAR)
        return np.clip(img, 0, 1).astype(np.float32), FLAG[f"bg_{kind}"]

    def _bg_gradient(self, rng: np.random.Generator) -> np.ndarray:
        if rng.random() < 0.5:
            a = rng.uniform(0, 2 * np.pi)
            t = self._xx * np.cos(a) + self._yy * np.sin(a)
        else:
            c = rng.uniform(-0.2, 1.2, 2)
            t = np.hypot(self._xx - c[0], self._yy - c[1])
        t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
        c0, c1 = self._colour(rng), self._colour(rng)
        if rng.random() < 0.4:  # three stops
            cm = self._colour(rng)
            lo = np.clip(t * 2, 0, 1)[..., None]
            hi = np.clip(t * 2 - 1, 0, 1)[..., None]
            return c0 * (1 - lo) + cm * lo * (1 - hi) + c1 * hi
        return c0 * (1 - t[..., None]) + c1 * t[..., None]

    def _value_noise(self, rng: np.random.Generator, channels: int) -> np.ndarray:
        g = self.grid
        out = np.zeros((g, g, channels), np.float32)
        amp, total = 1.0, 0.0
        cells = int(rng.integers(2, 6))
        while cells <= g // 2:
            grid = rng.random((cells, cells, channels)).astype(np.float32)
            layer = cv2.resize(grid, (g, g), interpolation=cv2.INTER_CUBIC)
            out += amp * layer.reshape(out.shape)
            total += amp
            amp *= rng.uniform(0.35, 0.65)
            cells *= 2
        return out / total

    def _bg_noise(self, rng: np.random.Generator) -> np.ndarray:
        n = self._value_noise(rng, 1)
        c0, c1 = self._colour(rng), self._colour(rng)
        t = np.clip((n - 0.5) * rng.uniform(1.5, 3.5) + 0.5, 0, 1)
        img = c0 * (1 - t) + c1 * t
        if rng.random() < 0.5:
            img = img * 0.7 + 0.3 * self._value_noise(rng, 3)
        return img

    def _bg_texture(self, rng: np.random.Generator) -> np.ndarray:
        freq = rng.uniform(2, 24)
        a = rng.uniform(0, np.pi)
        u = self._xx * np.cos(a) + self._yy * np.sin(a)
        v = -self._xx * np.sin(a) + self._yy * np.cos(a)
        pattern = rng.integers(3)
        s1 = np.sin(2 * np.pi * freq * u + rng.uniform(0, 2 * np.pi))
        if pattern == 0:        # stripes
            t = s1
        elif pattern == 1:      # checks
            t = np.sign(s1) * np.sign(np.sin(2 * np.pi * freq * v))
        else:                   # plaid
            t = 0.5 * (s1 + np.sin(2 * np.pi * freq * rng.uniform(0.5, 2) * v))
        if rng.random() < 0.5:
            t = np.sign(t)
        t = (0.5 + 0.5 * t)[..., None]
        img = self._colour(rng) * (1 - t) + self._colour(rng) * t
        return img + (self._value_noise(rng, 1) - 0.5) * rng.uniform(0, 0.3)

    def _bg_solid(self, rng: np.random.Generator) -> np.ndarray:
        img = np.broadcast_to(self._colour(rng), (self.grid, self.grid, 3)).astype(np.float32)
        return img + rng.normal(0, 0.01, img.shape).astype(np.float32)

    def _load_photo(self, path: Path) -> np.ndarray:
        img = self._cache.get(path)
        if img is None:
            raw = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if raw is None:
                raise ValueError(f"cannot read background image {path}")
            img = raw[..., ::-1].copy()
            if len(self._cache) >= self._cache_max:
                self._cache.pop(next(iter(self._cache)))
            self._cache[path] = img
        return img

    def _bg_photo(self, rng: np.random.Generator) -> np.ndarray:
        img = self._load_photo(self.photos[int(rng.integers(len(self.photos)))])
        h, w = img.shape[:2]
        side = int(max(8, min(h, w) * rng.uniform(0.3, 1.0)))
        y0, x0 = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
        crop = img[y0:y0 + side, x0:x0 + side]
        if rng.random() < 0.5:
            crop = crop[:, ::-1]
        interp = cv2.INTER_AREA if side > self.size else cv2.INTER_LINEAR
        return cv2.resize(np.ascontiguousarray(crop), (self.size, self.size), interpolation=interp) / 255.0

    # -- occluders -------------------------------------------------------------------------------
    def _fill(self, rng: np.random.Generator) -> np.ndarray:
        if rng.random() < 0.5:
            return np.broadcast_to(self._colour(rng), (self.size, self.size, 3))
        c0, c1 = self._colour(rng), self._colour(rng)
        t = self._value_noise(rng, 1)
        if self.grid != self.size:
            t = cv2.resize(t, (self.size, self.size), interpolation=cv2.INTER_LINEAR)[..., None]
        return c0 * (1 - t) + c1 * t

    def occluders(self, rng: np.random.Generator, img: np.ndarray, face_box: np.ndarray
                  ) -> tuple[np.ndarray, np.ndarray, int]:
        """Paint 1…``occluder_max`` occluders near the face; returns image, mask, flags."""
        s = self.size
        mask = np.zeros((s, s), bool)
        flags = 0
        x0, y0, x1, y1 = face_box
        fw, fh = max(x1 - x0, 4.0), max(y1 - y0, 4.0)
        for _ in range(int(rng.integers(1, self.config.occluder_max + 1))):
            layer = np.zeros((s, s), np.uint8)
            cx, cy = rng.uniform(x0, x1), rng.uniform(y0, y1)
            if rng.random() < self.config.cutout_share:   # MobileFace-style cutout rectangle
                w, h = rng.uniform(0.15, 0.5) * fw, rng.uniform(0.15, 0.5) * fh
                p0 = (int(round(cx - w / 2)), int(round(cy - h / 2)))
                p1 = (int(round(cx + w / 2)), int(round(cy + h / 2)))
                cv2.rectangle(layer, p0, p1, 1, -1)
                flags |= FLAG["occluder_cutout"]
            else:
                kind = rng.integers(3)
                if kind == 0:
                    axes = (int(rng.uniform(0.1, 0.35) * fw), int(rng.uniform(0.1, 0.35) * fh))
                    cv2.ellipse(layer, (int(cx), int(cy)), axes, rng.uniform(0, 180), 0, 360, 1, -1)
                elif kind == 1:
                    n = int(rng.integers(3, 7))
                    ang = np.sort(rng.uniform(0, 2 * np.pi, n))
                    r = rng.uniform(0.1, 0.35, n) * max(fw, fh)
                    pts = np.stack([cx + r * np.cos(ang), cy + r * np.sin(ang)], 1)
                    cv2.fillPoly(layer, [np.round(pts).astype(np.int32)], 1)
                else:  # a bar (hand, microphone, strand of hair)
                    a = rng.uniform(0, np.pi)
                    length = rng.uniform(0.5, 1.5) * max(fw, fh)
                    d = np.array([np.cos(a), np.sin(a)]) * length / 2
                    p0 = tuple(int(v) for v in (cx - d[0], cy - d[1]))
                    p1 = tuple(int(v) for v in (cx + d[0], cy + d[1]))
                    cv2.line(layer, p0, p1, 1, max(2, int(rng.uniform(0.05, 0.2) * fw)))
                flags |= FLAG["occluder_shape"]
            m = layer.astype(bool)
            img = np.where(m[..., None], self._fill(rng), img)
            mask |= m
        return img, mask, flags

    # -- degradations ------------------------------------------------------------------------------
    def _blur(self, rng: np.random.Generator, img: np.ndarray) -> np.ndarray:
        scale = self.size / 128.0
        if rng.random() < 0.7:
            sigma = rng.uniform(*self.config.blur_sigma_px128) * scale
            return cv2.GaussianBlur(img, (0, 0), sigma)
        length = max(2, int(round(rng.uniform(2, 6) * scale)))
        k = np.zeros((2 * length + 1, 2 * length + 1), np.float32)
        a = rng.uniform(0, np.pi)
        c = length
        cv2.line(k, (int(round(c - np.cos(a) * length)), int(round(c - np.sin(a) * length))),
                 (int(round(c + np.cos(a) * length)), int(round(c + np.sin(a) * length))), 1.0, 1)
        return cv2.filter2D(img, -1, k / k.sum())

    @staticmethod
    def _color_jitter(rng: np.random.Generator, img: np.ndarray) -> np.ndarray:
        grey = img.mean(-1, keepdims=True)
        img = grey + (img - grey) * rng.uniform(0.6, 1.3)               # saturation
        img = img * rng.normal(1.0, 0.05, 3).astype(np.float32)          # white balance
        mean = float(img.mean())
        img = mean + (img - mean) * rng.uniform(0.75, 1.25)              # contrast
        return img * rng.uniform(0.75, 1.25)                             # brightness

    def __call__(self, rng: np.random.Generator, rgba_linear: np.ndarray, face_box: np.ndarray,
                 background: np.ndarray | None = None) -> Augmented:
        """``rgba_linear`` (S, S, 4) premultiplied linear render; ``face_box`` landmark bbox (px);
        ``background`` (S, S, 3) sRGB in [0, 1] replaces the sampled one (a photo backplane)."""
        cfg = self.config
        rgb, alpha = rgba_linear[..., :3], rgba_linear[..., 3:4]
        if background is not None:
            bg_lin, flags = _SRGB_DECODE_LUT[(np.clip(background, 0, 1) * 255 + 0.5).astype(np.uint8)], 0
        elif not cfg.enabled:
            bg_lin, flags = np.zeros_like(rgb), 0
        else:
            bg, flags = self.background(rng)
            # backgrounds are 8-bit sRGB images: decode through a 256-entry table (exact, 3× faster)
            bg_lin = _SRGB_DECODE_LUT[(bg * 255 + 0.5).astype(np.uint8)]
        img = srgb_encode(rgb + (1.0 - alpha) * bg_lin).astype(np.float32)
        occ = np.zeros((self.size, self.size), bool)
        if cfg.enabled:
            if rng.random() < cfg.occluder_p:
                img, occ, f = self.occluders(rng, img, face_box)
                flags |= f
            img = np.ascontiguousarray(img, np.float32)
            if rng.random() < cfg.blur_p:
                img, flags = self._blur(rng, img), flags | FLAG["blur"]
            if rng.random() < cfg.color_jitter_p:
                img, flags = self._color_jitter(rng, img), flags | FLAG["color_jitter"]
            if rng.random() < cfg.noise_p:
                sigma = rng.uniform(*cfg.noise_sigma)
                img = img + sigma * rng.standard_normal(img.shape, dtype=np.float32)
                flags |= FLAG["noise"]
        out = (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)
        if cfg.enabled and rng.random() < cfg.jpeg_p:
            q = int(rng.integers(cfg.jpeg_quality[0], cfg.jpeg_quality[1] + 1))
            ok, enc = cv2.imencode(".jpg", out[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, q])
            if ok:
                out = cv2.imdecode(enc, cv2.IMREAD_COLOR)[..., ::-1]
                flags |= FLAG["jpeg"]
        return Augmented(image=np.ascontiguousarray(out), occluder=occ, flags=flags)
