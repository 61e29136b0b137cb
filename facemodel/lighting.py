"""Spherical-harmonics Lambertian shading (InverseFaceNet eq. 4) and colour encoding.

Shading at a vertex is ``sum_b gamma_b · Y_b(n)`` per colour channel, with ``Y_b`` the nine
orthonormal real SH basis functions of the camera-space unit normal ``n`` and
``gamma`` the 27 lighting coefficients (9 × RGB). Lighting is attached to the camera, so a
head turning under a fixed lamp changes its shading, as in a photo. Radiance is
``albedo · shading`` (linear RGB); images store ``srgb_encode`` of it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .xp import namespace

SH_C0 = 0.5 * np.sqrt(1.0 / np.pi)          # 0.282095
SH_C1 = np.sqrt(3.0 / (4.0 * np.pi))        # 0.488603
SH_C2 = 0.5 * np.sqrt(15.0 / np.pi)         # 1.092548
SH_C3 = 0.25 * np.sqrt(5.0 / np.pi)         # 0.315392
SH_C4 = 0.25 * np.sqrt(15.0 / np.pi)        # 0.546274
SH_BAND_NAMES = ("1", "y", "z", "x", "xy", "yz", "3z²-1", "xz", "x²-y²")


def sh_basis(normals: Any) -> Any:
    """(…, 3) unit normals → (…, 9) orthonormal real SH basis values."""
    xp = namespace(normals)
    x, y, z = normals[..., 0], normals[..., 1], normals[..., 2]
    one = x * 0 + 1
    return xp.stack([
        SH_C0 * one, SH_C1 * y, SH_C1 * z, SH_C1 * x,
        SH_C2 * x * y, SH_C2 * y * z, SH_C3 * (3 * z * z - 1), SH_C2 * x * z, SH_C4 * (x * x - y * y),
    ], -1)


def shading(normals: Any, sh: Any) -> Any:
    """(…, V, 3) camera-space normals and (…, 9, 3) coefficients → (…, V, 3) irradiance."""
    return sh_basis(normals) @ sh


def radiance(albedo: Any, normals: Any, sh: Any) -> Any:
    """Linear RGB radiance ``albedo · shading``, clamped at 0 (no negative light)."""
    xp = namespace(albedo, normals, sh)
    return xp.clip(albedo * shading(normals, sh), 0.0, None)


def srgb_encode(linear: Any) -> Any:
    """Linear RGB in [0, 1] → sRGB in [0, 1] (IEC 61966-2-1), as Blender's 'Standard' view."""
    xp = namespace(linear)
    c = xp.clip(linear, 0.0, 1.0)
    return xp.where(c <= 0.0031308, 12.92 * c, 1.055 * xp.clip(c, 0.0031308, None) ** (1 / 2.4) - 0.055)


def srgb_decode(encoded: Any) -> Any:
    """sRGB in [0, 1] → linear RGB."""
    xp = namespace(encoded)
    c = xp.clip(encoded, 0.0, 1.0)
    return xp.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)


def directional_sh(direction: np.ndarray, ambient: float, strength: float,
                   color: np.ndarray = np.ones(3)) -> np.ndarray:
    """SH coefficients (9, 3) of ambient light plus a clamped-cosine lamp from ``direction``.

    Uses the Ramamoorthi–Hanrahan irradiance factors (π, 2π/3, π/4) so the result is the
    Lambertian response to a distant lamp; handy for tests, previews and relighting.
    """
    d = np.asarray(direction, np.float64)
    d = d / np.linalg.norm(d)
    factors = np.array([np.pi] + [2 * np.pi / 3] * 3 + [np.pi / 4] * 5)
    lamp = factors * sh_basis(d) * strength
    coeffs = lamp[:, None] * np.asarray(color, np.float64)[None, :]
    coeffs[0] += ambient / SH_C0
    return coeffs.astype(np.float32)
