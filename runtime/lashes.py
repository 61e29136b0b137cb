"""A procedural eyelash texture with alpha for ICT's lash cards (numpy + OpenCV, no bpy).

ICT-FaceKit models the lashes as 12 curved cards (M_EyeLashes: per eye 3 layered upper and 3 lower
cards), each a UV strip in the tile u ∈ [6, 7], rooted in the eyelid's edge at one end of the strip's
short (v) side. Painted opaque, the cards are dark bands — make-up smeared round the eyes, and a blink
closes to a dark smear. This draws individual tapered strands on each strip, from its root edge
towards its tip, with the alpha the material uses (blended/dithered), so the lid's skin shows between
them. Deterministic (fixed seed): the same head always gets the same lashes.

Arrays are in Blender pixel order (row 0 = v 0).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from .fm import facemodel

LASH_MATERIAL = "M_EyeLashes"
LASH_RGB = (24, 19, 16)          # sRGB: dark brown-black
SUPERSAMPLE = 4                  # strands are drawn this much larger and area-averaged: soft alpha edges
STRANDS_UPPER, STRANDS_LOWER = 46, 20   # per card (three cards per lid)
ROOT_WIDTH_PX = 1.1              # strand width at the root, in texels of the final texture


@dataclass(frozen=True)
class LashCard:
    """One lash card's UV rectangle (u within its tile, in [0, 1]) and which v edge is its root."""

    u0: float
    u1: float
    v0: float
    v1: float
    root_at_top: bool            # root at v1 (else v0)
    upper: bool                  # an upper-lid card (longer, denser lashes)


def _islands(face_uvs: np.ndarray) -> np.ndarray:
    """Connected UV islands of polygons (rows of UV indices, −1 = none): one label per polygon."""
    n = int(face_uvs.max()) + 1
    label = np.arange(n)
    valid = face_uvs >= 0
    while True:
        corner = np.where(valid, label[np.where(valid, face_uvs, 0)], n)
        low = corner.min(1)
        new = label.copy()
        np.minimum.at(new, face_uvs[valid], np.repeat(low, valid.sum(1)))
        new = new[new]                                  # pointer jumping: converges in a few rounds
        if np.array_equal(new, label):
            return label[face_uvs[:, 0]]
        label = new


def lash_cards(model: "facemodel.FaceModel") -> list[LashCard]:
    """The lash cards of ``model``: UV rectangles, root side (the edge nearer the eyelid skin) and lid."""
    sel = model.face_material == model.material_names.index(LASH_MATERIAL)
    faces, fuv = model.faces[sel], model.face_uvs[sel]
    labels = _islands(fuv)
    skin = model.neutral[model.material_vertices("M_Face")]
    lash_v = model.neutral[np.unique(faces[faces >= 0])]
    lo, hi = lash_v.min(0) - 1.0, lash_v.max(0) + 1.0
    skin = skin[((skin >= lo) & (skin <= hi)).all(1)]   # only skin near the lashes: small distance table
    mid_y = float(lash_v[:, 1].mean())
    cards = []
    for label in np.unique(labels):
        f, u = faces[labels == label], fuv[labels == label]
        ok = u >= 0
        uv = model.uvs[u[ok]].astype(np.float64)
        verts = f[ok]
        uv[:, 0] -= np.floor(uv[:, 0].min())
        v0, v1 = uv[:, 1].min(), uv[:, 1].max()

        def gap(edge: float) -> float:
            ids = np.unique(verts[np.abs(uv[:, 1] - edge) < 1e-4])
            d = np.linalg.norm(model.neutral[ids][:, None] - skin[None], axis=-1)
            return float(d.min(1).mean())

        cards.append(LashCard(float(uv[:, 0].min()), float(uv[:, 0].max()), float(v0), float(v1),
                              root_at_top=gap(v1) < gap(v0),
                              upper=bool(model.neutral[np.unique(verts), 1].mean() > mid_y)))
    return sorted(cards, key=lambda c: (c.v0, c.u0))


def lash_texture(model: "facemodel.FaceModel", size: int = 512, seed: int = 7) -> np.ndarray:
    """uint8 (size, size, 4) RGBA in Blender pixel order: strands on every lash card, alpha elsewhere 0."""
    big = size * SUPERSAMPLE
    alpha = np.zeros((big, big), np.float32)
    rng = np.random.default_rng(seed)
    for card in lash_cards(model):
        n = STRANDS_UPPER if card.upper else STRANDS_LOWER
        width_u = card.u1 - card.u0
        t = (np.arange(n) + rng.uniform(0.15, 0.85, n)) / n               # positions along the lid
        u_root = card.u0 + width_u * (0.03 + 0.94 * t)
        profile = 0.45 + 0.55 * np.sin(np.pi * np.clip(t, 0, 1)) ** 0.7   # shorter at the eye's corners
        length = (card.v1 - card.v0) * profile * rng.uniform(0.7, 0.97, n) * (1.0 if card.upper else 0.8)
        lean = rng.normal(0.0, 0.025, n) * width_u                         # sideways at the tip
        bend = rng.normal(0.0, 0.015, n) * width_u
        root_v = card.v1 if card.root_at_top else card.v0
        sign = -1.0 if card.root_at_top else 1.0
        for k in range(n):
            s = np.linspace(0.0, 1.0, 9)
            us = u_root[k] + lean[k] * s + bend[k] * np.sin(np.pi * s)
            vs = root_v + sign * length[k] * s
            pts = np.stack([us * big, vs * big], 1)
            for a, b, si in zip(pts[:-1], pts[1:], s[:-1]):
                w = max(1, int(round(ROOT_WIDTH_PX * SUPERSAMPLE * (1.0 - 0.8 * si))))
                cv2.line(alpha, tuple(np.round(a).astype(int)), tuple(np.round(b).astype(int)), 1.0, w, cv2.LINE_AA)
    alpha = cv2.resize(np.minimum(alpha, 1.0), (size, size), interpolation=cv2.INTER_AREA)
    out = np.empty((size, size, 4), np.uint8)
    out[..., :3] = LASH_RGB
    out[..., 3] = np.clip(alpha * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return out
