"""Reading and writing iBUG ``.pts`` landmark files and listing labelled image folders.

The 300W files are 1-based pixel coordinates (Matlab heritage) inside a
``version: 1`` / ``n_points: 68`` / ``{ … }`` header; some re-distributions drop the header and
keep only the coordinate lines. Both forms are read. Coordinates are returned in facerig's
pixel convention (origin at the top-left image corner, pixel centres at +0.5): a 1-based
coordinate ``c`` names the centre of pixel ``c − 1``, which sits at ``c − 0.5``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from runtime.formats import PHOTO_SUFFIXES as IMAGE_SUFFIXES, photos_in
from facemodel.outputs import atomic_write_text

log = logging.getLogger(__name__)

ONE_BASED_TO_CORNER = -0.5  # 1-based pixel-centre coordinate → corner-origin continuous coordinate


class PtsError(ValueError):
    """A .pts file is malformed (user-facing: one line, names the file)."""


def read_pts(path: Path | str, one_based: bool = True) -> np.ndarray:
    """(N, 2) float64 landmarks from a ``.pts`` file, with or without the header.

    ``one_based=True`` (the 300W convention) shifts to facerig's corner-origin convention.
    """
    path = Path(path)
    text = path.read_text(encoding="utf-8", errors="replace")
    declared: int | None = None
    rows: list[tuple[float, float]] = []
    in_braces = False
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.lower().startswith("version"):
            continue
        if line.lower().startswith("n_points"):
            try:
                declared = int(line.split(":", 1)[1])
            except (IndexError, ValueError):
                raise PtsError(f"{path}:{lineno}: bad n_points line {line!r}") from None
            continue
        if line == "{":
            in_braces = True
            continue
        if line == "}":
            in_braces = False
            continue
        parts = line.replace(",", " ").split()
        if len(parts) != 2:
            raise PtsError(f"{path}:{lineno}: expected 'x y', got {line!r}")
        try:
            rows.append((float(parts[0]), float(parts[1])))
        except ValueError:
            raise PtsError(f"{path}:{lineno}: not numbers: {line!r}") from None
    if in_braces:
        raise PtsError(f"{path}: '{{' without closing '}}'")
    if not rows:
        raise PtsError(f"{path}: no landmark coordinates")
    if declared is not None and declared != len(rows):
        raise PtsError(f"{path}: header says {declared} points, file has {len(rows)}")
    pts = np.asarray(rows, np.float64)
    if not np.isfinite(pts).all():
        raise PtsError(f"{path}: non-finite coordinates")
    return pts + ONE_BASED_TO_CORNER if one_based else pts


def write_pts(path: Path | str, points: np.ndarray, header: bool = True, one_based: bool = True) -> Path:
    """Write (N, 2) corner-origin landmarks as a ``.pts`` file (the inverse of :func:`read_pts`)."""
    path = Path(path)
    pts = np.asarray(points, np.float64) - (ONE_BASED_TO_CORNER if one_based else 0.0)
    lines = [f"{x:.3f} {y:.3f}" for x, y in pts]
    if header:
        lines = ["version: 1", f"n_points: {len(pts)}", "{", *lines, "}"]
    atomic_write_text(path, "\n".join(lines) + "\n")
    return path


@dataclass(frozen=True)
class LabelledImage:
    """One image with its ground-truth landmarks (corner-origin pixels)."""

    image_path: Path
    pts_path: Path

    @property
    def name(self) -> str:
        return self.image_path.name

    def landmarks(self) -> np.ndarray:
        return read_pts(self.pts_path)


def list_images(folder: Path | str) -> list[Path]:
    """Image files (``IMAGE_SUFFIXES``) in ``folder``, sorted by name; a missing folder is a user error."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"image folder {folder} does not exist")
    return photos_in(folder)


def list_labelled_images(folder: Path | str, n_points: int = 68, limit: int | None = None
                         ) -> list[LabelledImage]:
    """Images in ``folder`` that have a same-stem ``.pts`` file, sorted by name.

    Images without a ``.pts`` are skipped (logged); a folder with none is a user error.
    """
    folder = Path(folder)
    items: list[LabelledImage] = []
    unlabelled = 0
    for image in list_images(folder):
        pts = image.with_suffix(".pts")
        if pts.is_file():
            items.append(LabelledImage(image, pts))
        else:
            unlabelled += 1
    if unlabelled:
        log.info("%d images in %s have no .pts file and are skipped", unlabelled, folder)
    if not items:
        raise FileNotFoundError(f"no images with .pts landmark files in {folder}")
    if limit is not None:
        items = items[:limit]
    return items
