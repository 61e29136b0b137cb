"""Loading and validating the ICT-FaceKit Light mesh, plus the vertex sets built on it.

The model is looked for, in this order, at an explicit path, at ``$FACERIG_FACE_MODEL``, and
in the user cache (``$XDG_CACHE_HOME/facerig`` or ``~/.cache/facerig``). ``facerig model
fetch`` fills the cache from the ICT-FaceKit repository (MIT licence).
"""

from __future__ import annotations

import logging
import os
import zipfile
from dataclasses import dataclass, fields, replace
from functools import cached_property
from pathlib import Path
from typing import Any, Callable, Self

import numpy as np

from . import geometry

log = logging.getLogger(__name__)

MODEL_FILENAME = "ict_facekit_light.npz"
ENV_VAR = "FACERIG_FACE_MODEL"
LICENSE = "ICT-FaceKit (c) 2020 USC Institute for Creative Technologies, MIT License"

# Vertex ranges of the ICT topology (inclusive), from the ICT-FaceKit README.
VERTEX_RANGES: dict[str, tuple[int, int]] = {
    "face": (0, 9408),
    "narrow_face": (0, 6705),
    "head_neck": (9409, 11247),
    "mouth_socket": (11248, 13293),
    "eye_sockets": (13294, 14061),
    "gums_tongue": (14062, 17038),
    "teeth": (17039, 21450),
    "eyeball_left": (21451, 23020),
    "eyeball_right": (23021, 24590),
    "lacrimal_fluid": (24591, 24998),
    "eye_blend": (24999, 25046),
    "eye_occlusion": (25047, 25350),
    "eyelashes": (25351, 26718),
}
# Transparent overlay materials of ICT: not part of the rendered surface.
OVERLAY_MATERIALS = ("M_LacrimalFluid", "M_EyeBlend", "M_EyeOcclusion")

REQUIRED_ARRAYS: dict[str, int] = {  # name → number of dimensions
    "neutral": 2, "identity_basis": 3, "expression_basis": 3, "expression_names": 1,
    "faces": 2, "face_uvs": 2, "uvs": 2, "face_material": 1, "material_names": 1,
    "landmarks_multipie68": 1,
}
OPTIONAL_ARRAYS = ("extra_shape_basis", "extra_shape_names", "fitting_vertices", "rigid_vertices",
                   "lap_rigid_vertices", "rigid_landmark_idx")

JAWLINE_VISIBLE_RIGHT = (1278, 1272, 12, 1834, 243, 781, 2199, 1447)  # replace 68-pt 0–7
JAWLINE_VISIBLE_LEFT = (3661, 4390, 3022, 2484, 4036, 2253, 3490, 3496)  # replace 68-pt 9–16
INNER_51 = tuple(range(17, 68))
EYE_CORNERS = (36, 45)


class FaceModelError(RuntimeError):
    """The face model is missing, unreadable or not the ICT-FaceKit Light layout."""


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "facerig"


def default_model_path() -> Path:
    return cache_dir() / MODEL_FILENAME


def resolve_model_path(path: Path | str | None = None) -> Path:
    """Explicit path, then ``$FACERIG_FACE_MODEL``, then the user cache."""
    if path is not None:
        candidates = [("argument", Path(path))]
    else:
        candidates = []
        if os.environ.get(ENV_VAR):
            candidates.append((f"${ENV_VAR}", Path(os.environ[ENV_VAR])))
        candidates.append(("user cache", default_model_path()))
    for source, candidate in candidates:
        if candidate.is_file():
            return candidate.expanduser().resolve()
        if source != "user cache":
            raise FaceModelError(f"face model not found at {candidate} (from {source})")
    raise FaceModelError(
        f"no face model found (looked at ${ENV_VAR} and {default_model_path()}); "
        "run `facerig model fetch` to download ICT-FaceKit (MIT) or pass a path")


@dataclass(frozen=True)
class ModelArrays:
    """The arrays image formation needs, in one container so they can be moved to torch.

    ``map(torch.as_tensor)`` gives the learner the same data for the same functions.
    """

    neutral: Any                # (V, 3) cm
    identity_basis: Any         # (100, V·3)
    expression_basis: Any       # (53, V·3)
    triangles: Any              # (T, 3) int64; empty for vertex subsets
    vertex_faces: Any           # (V, D) int64 gather table for normals; empty for subsets
    albedo_base: Any            # (V, 3) log-albedo at neutral skin parameters
    albedo_axes: Any            # (7, V, 3) log-albedo change per albedo parameter
    corrective_basis: Any       # (V, K) manifold harmonics of the face region (facemodel.harmonics)
    corrective_eigenvalues: Any  # (K,) their eigenvalues (the prior's weights), ascending

    def map(self, fn: Callable[[Any], Any]) -> "ModelArrays":
        return ModelArrays(*[fn(getattr(self, f.name)) for f in fields(self)])

    def subset(self, vertices: np.ndarray) -> "ModelArrays":
        """Only the given vertices (landmarks, face region): fast, but no normals."""
        idx = np.asarray(vertices)
        cols = (idx[:, None] * 3 + np.arange(3)).reshape(-1)
        empty = np.zeros((0, 3), np.int64)
        return replace(self, neutral=self.neutral[idx], identity_basis=self.identity_basis[:, cols],
                       expression_basis=self.expression_basis[:, cols], triangles=empty,
                       vertex_faces=np.zeros((len(idx), 0), np.int64),
                       albedo_base=self.albedo_base[idx], albedo_axes=self.albedo_axes[:, idx],
                       corrective_basis=self.corrective_basis[idx])


class FaceMesh:
    """ICT-FaceKit Light as loaded: 26,719 vertices, 100 identity modes, 53 ARKit-named expressions, their
    topology and vertex sets. :class:`facemodel.model.FaceModel` adds what image formation derives from it."""

    def __init__(self, data: dict[str, np.ndarray], path: Path | None = None) -> None:
        self.path = path
        _validate(data, path)
        self.neutral = np.ascontiguousarray(data["neutral"], np.float32)
        self.identity_basis = np.ascontiguousarray(data["identity_basis"], np.float32)
        self.expression_basis = np.ascontiguousarray(data["expression_basis"], np.float32)
        self.expression_names: tuple[str, ...] = tuple(str(s) for s in data["expression_names"])
        self.faces = np.asarray(data["faces"], np.int32)
        self.face_uvs = np.asarray(data["face_uvs"], np.int32)
        self.uvs = np.asarray(data["uvs"], np.float32)
        self.face_material = np.asarray(data["face_material"], np.int16)
        self.material_names: tuple[str, ...] = tuple(str(s) for s in data["material_names"])
        self.landmarks68 = np.asarray(data["landmarks_multipie68"], np.int64)
        self.extra = {k: np.asarray(data[k]) for k in OPTIONAL_ARRAYS if k in data}

    @classmethod
    def load(cls, path: Path | str | None = None) -> Self:
        resolved = resolve_model_path(path)
        try:
            with np.load(resolved, allow_pickle=False) as npz:
                data = {k: npz[k] for k in npz.files}
        except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
            raise FaceModelError(f"{resolved} is not a readable face model npz: {exc}") from None
        log.info("loaded face model %s", resolved)
        return cls(data, resolved)

    def check_layout(self, layout: Any, what: str = "the regressor") -> None:
        """Refuse, with one line, parameters this model cannot form: fewer identity modes than ``layout``
        has, or another expression count (a numpy shape error deep in the fit otherwise)."""
        from .params import N_EXPRESSIONS

        name = self.path.name if self.path else "the face model"
        if self.n_identity < layout.n_identity:
            raise FaceModelError(f"{name} has {self.n_identity} identity modes and {what} predicts "
                                 f"{layout.n_identity}: use the ICT-FaceKit Light model (`facerig model fetch`)")
        if self.n_expressions != N_EXPRESSIONS:
            raise FaceModelError(f"{name} has {self.n_expressions} expressions, facerig's parameters have "
                                 f"{N_EXPRESSIONS}: use the ICT-FaceKit Light model (`facerig model fetch`)")

    # -- sizes and names --------------------------------------------------------------------
    @property
    def n_vertices(self) -> int:
        return int(self.neutral.shape[0])

    @property
    def n_identity(self) -> int:
        return int(self.identity_basis.shape[0])

    @property
    def n_expressions(self) -> int:
        return int(self.expression_basis.shape[0])

    def info(self) -> dict[str, Any]:
        return {"path": str(self.path) if self.path else None, "vertices": self.n_vertices,
                "polygons": int(len(self.faces)), "triangles": int(len(self.triangles)),
                "identity_modes": self.n_identity, "expressions": self.n_expressions,
                "materials": list(self.material_names), "licence": LICENSE}

    # -- topology ---------------------------------------------------------------------------
    @cached_property
    def triangles(self) -> np.ndarray:
        return geometry.triangulate(self.faces)

    @cached_property
    def render_triangles(self) -> np.ndarray:
        """Triangles of the visible surface (without ICT's transparent overlay materials)."""
        keep = ~np.isin(self.face_material, [self.material_names.index(m) for m in OVERLAY_MATERIALS])
        return geometry.triangulate(self.faces[keep])

    @cached_property
    def vertex_faces(self) -> np.ndarray:
        return geometry.vertex_face_table(self.triangles, self.n_vertices)

    @cached_property
    def vertex_material(self) -> np.ndarray:
        """(V,) index of a material each vertex belongs to (−1 if unused)."""
        out = np.full(self.n_vertices, -1, np.int16)
        for corner in range(4):
            idx = self.faces[:, corner]
            ok = idx >= 0
            out[idx[ok]] = self.face_material[ok]
        return out

    # -- vertex sets --------------------------------------------------------------------------
    def vertex_range(self, name: str) -> np.ndarray:
        lo, hi = VERTEX_RANGES[name]
        return np.arange(lo, hi + 1)

    def material_vertices(self, *materials: str) -> np.ndarray:
        ids = [self.material_names.index(m) for m in materials]
        return np.flatnonzero(np.isin(self.vertex_material, ids))

    @cached_property
    def region_masks(self) -> dict[str, np.ndarray]:
        """Boolean (V,) masks: face, eyes, mouth interior, teeth, lashes, render-visible."""
        v = np.zeros(self.n_vertices, bool)

        def mask(idx: np.ndarray) -> np.ndarray:
            m = v.copy()
            m[idx] = True
            return m

        eyes = np.concatenate([self.vertex_range("eyeball_left"), self.vertex_range("eyeball_right")])
        mouth = np.concatenate([self.vertex_range("mouth_socket"), self.vertex_range("gums_tongue")])
        overlay = self.material_vertices(*OVERLAY_MATERIALS)
        return {"face": mask(self.vertex_range("face")), "narrow_face": mask(self.vertex_range("narrow_face")),
                "eyes": mask(eyes), "mouth_interior": mask(mouth), "teeth": mask(self.vertex_range("teeth")),
                "lashes": mask(self.vertex_range("eyelashes")), "render_visible": ~mask(overlay)}

    def landmark_indices(self, jawline: str = "fixed") -> np.ndarray:
        """Vertex index of each of the 68 points; ``jawline='visible'`` uses the contour set."""
        idx = self.landmarks68.copy()
        if jawline == "visible":
            idx[0:8] = JAWLINE_VISIBLE_RIGHT
            idx[9:17] = JAWLINE_VISIBLE_LEFT
        elif jawline != "fixed":
            raise ValueError(f"jawline must be 'fixed' or 'visible', not {jawline!r}")
        return idx


def _validate(data: dict[str, np.ndarray], path: Path | None) -> None:
    where = f" in {path}" if path else ""
    missing = [k for k in REQUIRED_ARRAYS if k not in data]
    if missing:
        raise FaceModelError(f"face model{where} lacks arrays {missing}; is it an ICT-FaceKit Light npz?")
    for key, ndim in REQUIRED_ARRAYS.items():
        if data[key].ndim != ndim:
            raise FaceModelError(f"array {key!r}{where} has {data[key].ndim} dimensions, expected {ndim}")
    n_v = data["neutral"].shape[0]
    checks = [
        (data["neutral"].shape[1] == 3, "neutral must be (V, 3)"),
        (data["identity_basis"].shape[1:] == (n_v, 3), "identity_basis must be (K, V, 3)"),
        (data["expression_basis"].shape[1:] == (n_v, 3), "expression_basis must be (53, V, 3)"),
        (len(data["expression_names"]) == data["expression_basis"].shape[0],
         "expression_names must name every expression"),
        (data["faces"].shape[1] == 4 and data["faces"].max() < n_v, "faces must be (F, 4) vertex indices"),
        (data["face_material"].shape[0] == data["faces"].shape[0], "face_material must have one per face"),
        (data["landmarks_multipie68"].shape == (68,) and data["landmarks_multipie68"].max() < n_v,
         "landmarks_multipie68 must be 68 vertex indices"),
        (np.isfinite(data["neutral"]).all(), "neutral has non-finite values"),
    ]
    for ok, message in checks:
        if not ok:
            raise FaceModelError(f"invalid face model{where}: {message}")
