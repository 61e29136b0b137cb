"""Unlabelled photos as the add-on's refinement sees them: detector box, the network's crop params,
FaceMesh re-read on the canonical crop. Shared by the measurements that need no labels
(``facerig eval refine-gate``, ``python -m evaluation.facemesh_map``), so both see what the add-on sees.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm


@dataclass(frozen=True)
class RefinementInput:
    """One single-face photo: the network's crop params and FaceMesh's 468 points in that crop."""

    path: Path
    crop_params: Any        # FaceParams, crop camera
    points: np.ndarray      # (468, 2) crop pixels
    size: int               # crop side, pixels


def refinement_inputs(photos: Sequence[Path], regressor: Any, skipped: dict[str, str], progress: bool = True,
                      desc: str = "photos") -> Iterator[RefinementInput]:
    """The usable photos in order; the others go to ``skipped`` (path → why: unreadable, no face or
    several faces, FaceMesh lost the face in the canonical crop)."""
    from runtime.detect import detect_faces, facemesh_on_crop
    from runtime.photo import PhotoError, load_image
    from runtime.pipeline import reconstruct_photo
    from facemodel.crop import points_to_crop

    for path in tqdm(photos, desc=desc, unit="photo", disable=not progress):
        try:
            image = load_image(path)
            faces = detect_faces(image)
        except PhotoError as exc:
            skipped[str(path)] = str(exc)
            continue
        if len(faces) != 1:
            skipped[str(path)] = f"{len(faces)} faces"
            continue
        recon = reconstruct_photo(image, model=regressor, faces=faces, refine=False)
        mesh = facemesh_on_crop(recon.image, recon.crop_box, recon.face)
        if mesh is None:
            skipped[str(path)] = "FaceMesh found no face in the canonical crop"
            continue
        size = int(recon.crop.shape[0])
        yield RefinementInput(Path(path), recon.crop_params, points_to_crop(mesh, recon.crop_box, size), size)
