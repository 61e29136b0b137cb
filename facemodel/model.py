"""The face model: the ICT mesh (:mod:`facemodel.mesh`) with what image formation derives from it.

:class:`FaceModel` adds the albedo tables (:mod:`facemodel.albedo`) and the corrective field's manifold
harmonics (:mod:`facemodel.harmonics`) to the loaded mesh, as cached properties. Those two modules build
on :class:`~facemodel.mesh.FaceMesh`, so the imports run one way: mesh ← albedo, harmonics ← model.
"""

from __future__ import annotations

import logging
from functools import cached_property

import numpy as np

from .albedo import albedo_tables
from .harmonics import Harmonics, HarmonicsUnavailable, load_harmonics
from .mesh import (ENV_VAR, EYE_CORNERS, INNER_51, JAWLINE_VISIBLE_LEFT, JAWLINE_VISIBLE_RIGHT, LICENSE,
                   MODEL_FILENAME, OPTIONAL_ARRAYS, OVERLAY_MATERIALS, REQUIRED_ARRAYS, VERTEX_RANGES, FaceMesh,
                   FaceModelError, ModelArrays, cache_dir, default_model_path, resolve_model_path)

log = logging.getLogger(__name__)


class FaceModel(FaceMesh):
    """ICT-FaceKit Light with its image-formation arrays: what every renderer, fit and loss reads."""

    @cached_property
    def harmonics(self) -> Harmonics:
        """The face region's first ``harmonics.DEFAULT_K`` manifold harmonics (cached on disk)."""
        return load_harmonics(self)

    @cached_property
    def arrays(self) -> ModelArrays:
        base, axes = albedo_tables(self)   # albedo regions need the landmarks and materials
        try:
            corrective, eigenvalues = self.harmonics.basis, self.harmonics.eigenvalues
        except HarmonicsUnavailable as exc:   # faces without a corrective field still form
            log.warning("%s; faces with a corrective field cannot be formed", exc)
            corrective, eigenvalues = np.zeros((self.n_vertices, 0), np.float32), np.zeros(0)
        return ModelArrays(
            neutral=self.neutral,
            identity_basis=self.identity_basis.reshape(self.n_identity, -1),
            expression_basis=self.expression_basis.reshape(self.n_expressions, -1),
            triangles=self.triangles, vertex_faces=self.vertex_faces,
            albedo_base=base, albedo_axes=axes, corrective_basis=corrective,
            corrective_eigenvalues=eigenvalues)


__all__ = ["ENV_VAR", "EYE_CORNERS", "INNER_51", "JAWLINE_VISIBLE_LEFT", "JAWLINE_VISIBLE_RIGHT", "LICENSE",
           "MODEL_FILENAME", "OPTIONAL_ARRAYS", "OVERLAY_MATERIALS", "REQUIRED_ARRAYS", "VERTEX_RANGES", "FaceMesh",
           "FaceModel", "FaceModelError", "ModelArrays", "cache_dir", "default_model_path", "resolve_model_path"]
