"""The photo file types facerig reads, in one place without heavy imports.

The add-on's file browser filters on them when Blender starts (so this module must not pull in
OpenCV), and the command line and evaluation scan folders for them. ``photo.load_image`` still
tries any file: the suffix only decides what a folder scan or the browser offers.
"""

from __future__ import annotations

from pathlib import Path

HEIF_SUFFIXES = (".heic", ".heif")   # phone photos; read through pillow-heif
PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".tif", ".tiff", ".bmp", ".gif", ".avif") + HEIF_SUFFIXES


def file_browser_glob() -> str:
    """Blender's ``filter_glob`` for them (its own image filter hides HEIC/AVIF)."""
    return ";".join("*" + s for s in PHOTO_SUFFIXES)


def photos_in(folder: Path) -> list[Path]:
    """The photo files directly in ``folder``, sorted by name (stable order for corpora and batches)."""
    return sorted(p for p in Path(folder).iterdir() if p.is_file() and p.suffix.lower() in PHOTO_SUFFIXES)
