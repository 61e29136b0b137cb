"""The one parameter layout shared by facemodel, synth, learner and the add-on.

A face is described by :class:`FaceParams`; a flat vector view of it is described by
:class:`ParamLayout`. Both carry ``layout_version`` so corpora, checkpoints and ONNX models
written today stay readable when the layout grows.

Groups, units and ranges (the authoritative list; README "Parameters" repeats it):

============  =====  ==========================================================================
group         size   meaning
============  =====  ==========================================================================
identity      ≤100   ICT identity weights, ~N(0, 1) (leading modes; the rest are zero)
expression    53     ICT/ARKit blendshape weights in [0, 1], order = ``EXPRESSION_NAMES``
rotation      3      yaw, pitch, roll in radians, ``R = Rz(roll) Rx(pitch) Ry(yaw)``
translation   3      camera-space position of the model origin in cm (z < 0: in front)
sh            27     9 spherical-harmonics bands × RGB (row-major (9, 3)), irradiance units
albedo        7      skin model coordinates, see :mod:`facemodel.albedo`
camera        3      focal length / image width, principal point x / width, y / height
corrective    3·Kc   (Kc, 3) coefficients of the corrective displacement field in the first Kc
                     manifold harmonics of the face region (:mod:`facemodel.harmonics`), cm;
                     layout version 2 on (Kc ≤ 64, 20 by default; version 1 has none = zero field)
============  =====  ==========================================================================

Version 1 (everything written before the corrective field) is version 2 with ``n_corrective = 0``: the
groups sit at the same offsets and the corrective group, last, is empty. So old corpora, checkpoints,
ONNX files and JSON read as faces without correction, and :class:`ParamLayout` compares layouts by their
group sizes, not their version number.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from .xp import namespace

LAYOUT_VERSION = 2
FIRST_CORRECTIVE_VERSION = 2    # layouts before it have no corrective group
N_IDENTITY_MAX = 100
N_EXPRESSIONS = 53
N_SH_BANDS = 9
N_CORRECTIVE_MAX = 64           # facemodel.harmonics.K_MAX
DEFAULT_N_CORRECTIVE = 20       # facemodel.harmonics.DEFAULT_K
ALBEDO_NAMES = ("tone", "undertone", "redness", "lips", "brows", "eye_region", "iris")
DEFAULT_FOCAL = 4.0  # focal length in units of the crop width (≈ 1 m portrait distance)
DEFAULT_CAMERA = (DEFAULT_FOCAL, 0.5, 0.5)
GROUPS = ("identity", "expression", "rotation", "translation", "sh", "albedo", "camera", "corrective")


class LayoutError(ValueError):
    """A parameter vector or file does not match the layout this facerig understands."""


@dataclass(frozen=True)
class ParamLayout:
    """Where each group lives in the flat vector. ``n_identity`` and ``n_corrective`` (harmonics, each
    with 3 coefficients) are the free sizes. Equality ignores ``version``: a version-1 layout and a
    version-2 one without corrective coefficients describe the same vector."""

    n_identity: int = N_IDENTITY_MAX
    version: int = field(default=LAYOUT_VERSION, compare=False)
    n_corrective: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.n_identity <= N_IDENTITY_MAX:
            raise LayoutError(f"n_identity must be in [0, {N_IDENTITY_MAX}], got {self.n_identity}")
        if self.version > LAYOUT_VERSION:
            raise LayoutError(
                f"layout_version {self.version} is newer than this facerig ({LAYOUT_VERSION}); upgrade facerig")
        if not 0 <= self.n_corrective <= N_CORRECTIVE_MAX:
            raise LayoutError(f"n_corrective must be in [0, {N_CORRECTIVE_MAX}], got {self.n_corrective}")
        if self.n_corrective and self.version < FIRST_CORRECTIVE_VERSION:
            raise LayoutError(f"layout_version {self.version} has no corrective coefficients "
                              f"(n_corrective {self.n_corrective})")

    @property
    def sizes(self) -> dict[str, int]:
        return {"identity": self.n_identity, "expression": N_EXPRESSIONS, "rotation": 3,
                "translation": 3, "sh": N_SH_BANDS * 3, "albedo": len(ALBEDO_NAMES), "camera": 3,
                "corrective": 3 * self.n_corrective}

    @property
    def slices(self) -> dict[str, slice]:
        out, start = {}, 0
        for name in GROUPS:
            out[name] = slice(start, start + self.sizes[name])
            start += self.sizes[name]
        return out

    @property
    def size(self) -> int:
        return sum(self.sizes.values())

    def to_dict(self) -> dict[str, Any]:
        groups = {k: [s.start, s.stop] for k, s in self.slices.items()}
        d: dict[str, Any] = {"layout_version": self.version, "n_identity": self.n_identity}
        if self.version >= FIRST_CORRECTIVE_VERSION:
            d["n_corrective"] = self.n_corrective
        else:
            del groups["corrective"]
        d["groups"] = groups
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ParamLayout":
        try:
            layout = cls(n_identity=int(d["n_identity"]), version=int(d["layout_version"]),
                         n_corrective=int(d.get("n_corrective", 0)))
        except KeyError as exc:
            raise LayoutError(f"layout description lacks {exc}") from None
        groups = d.get("groups")
        if groups is not None and {k: list(v) for k, v in groups.items()} != layout.to_dict()["groups"]:
            raise LayoutError(f"layout groups {groups} do not match version {layout.version}")
        return layout

    # -- ONNX metadata (DEVELOPERS.md "ONNX regressor") ------------------------------------------
    def metadata(self) -> dict[str, str]:
        """The ``facerig.*`` metadata props that declare this layout in an ONNX regressor."""
        return {"facerig.layout_version": str(self.version), "facerig.n_identity": str(self.n_identity),
                "facerig.n_corrective": str(self.n_corrective)}

    @classmethod
    def from_metadata(cls, meta: Mapping[str, str], output_size: int | None = None) -> "ParamLayout":
        """The layout an ONNX regressor declares; a model from before the corrective field (no
        ``facerig.n_corrective``) has none. Without ``facerig.n_identity`` the static ``output_size``
        decides it. Raises :class:`LayoutError` when neither is given or they disagree."""
        try:
            version = int(meta.get("facerig.layout_version", 1))
            n_corr = int(meta.get("facerig.n_corrective", 0))
            if "facerig.n_identity" in meta:
                n_id = int(meta["facerig.n_identity"])
            elif output_size is not None:
                n_id = output_size - cls(n_identity=0, version=version, n_corrective=n_corr).size
            else:
                raise LayoutError("the model declares neither facerig.n_identity nor a static output size")
        except ValueError as exc:
            raise LayoutError(f"malformed layout metadata: {exc}") from None
        layout = cls(n_identity=n_id, version=version, n_corrective=n_corr)
        if output_size is not None and output_size != layout.size:
            raise LayoutError(f"output has {output_size} values; layout v{version} with {n_id} identity modes "
                              f"and {n_corr} corrective harmonics needs {layout.size}")
        return layout


@dataclass
class FaceParams:
    """All parameters of one face (or a batch: every field may carry leading batch axes).

    Fields are numpy arrays or torch tensors; the shapes below omit batch axes.
    """

    identity: Any                 # (Ni,)
    expression: Any               # (53,)
    rotation: Any                 # (3,) yaw, pitch, roll [rad]
    translation: Any              # (3,) cm, camera space
    sh: Any                       # (9, 3)
    albedo: Any                   # (7,)
    camera: Any = field(default=None)  # (3,) focal/width, cx/width, cy/height
    corrective: Any = field(default=None)  # (Kc, 3) harmonics coefficients, cm; None → (0, 3): no field

    def __post_init__(self) -> None:
        if self.camera is None:
            cam = np.asarray(DEFAULT_CAMERA, dtype=np.float32)
            self.camera = np.broadcast_to(cam, tuple(self.batch_shape) + (3,)).copy()
        if self.corrective is None:
            self.corrective = np.zeros(tuple(self.batch_shape) + (0, 3), np.float32)

    # -- construction ---------------------------------------------------------------------
    @classmethod
    def neutral(cls, batch: tuple[int, ...] = (), n_identity: int = N_IDENTITY_MAX,
                distance_cm: float = 100.0, n_corrective: int = 0) -> "FaceParams":
        """Mean face, frontal, ``distance_cm`` in front of the camera, soft white light, no correction."""
        z = lambda n: np.zeros(batch + (n,), np.float32)  # noqa: E731
        sh = np.zeros(batch + (N_SH_BANDS, 3), np.float32)
        sh[..., 0, :] = 0.9 / 0.282095
        t = z(3)
        t[..., 2] = -distance_cm
        return cls(z(n_identity), z(N_EXPRESSIONS), z(3), t, sh, z(len(ALBEDO_NAMES)),
                   np.broadcast_to(np.asarray(DEFAULT_CAMERA, np.float32), batch + (3,)).copy(),
                   np.zeros(batch + (n_corrective, 3), np.float32))

    @property
    def batch_shape(self) -> tuple[int, ...]:
        return tuple(self.expression.shape[:-1])

    @property
    def n_identity(self) -> int:
        return int(self.identity.shape[-1])

    @property
    def n_corrective(self) -> int:
        return int(self.corrective.shape[-2])

    @property
    def layout(self) -> ParamLayout:
        return ParamLayout(n_identity=self.n_identity, n_corrective=self.n_corrective)

    # -- flat vectors ---------------------------------------------------------------------
    def to_vector(self) -> Any:
        xp = namespace(self.expression)
        b = self.batch_shape
        parts = [self.identity, self.expression, self.rotation, self.translation,
                 self.sh.reshape(b + (N_SH_BANDS * 3,)), self.albedo, self.camera,
                 self.corrective.reshape(b + (3 * self.n_corrective,))]
        return xp.concatenate(parts, -1)

    @classmethod
    def from_vector(cls, vector: Any, layout: ParamLayout | None = None) -> "FaceParams":
        layout = layout or ParamLayout()
        if vector.shape[-1] != layout.size:
            raise LayoutError(f"vector has {vector.shape[-1]} values, layout v{layout.version} with "
                              f"{layout.n_identity} identity modes and {layout.n_corrective} corrective "
                              f"harmonics needs {layout.size}")
        s = layout.slices
        b = tuple(vector.shape[:-1])
        return cls(identity=vector[..., s["identity"]], expression=vector[..., s["expression"]],
                   rotation=vector[..., s["rotation"]], translation=vector[..., s["translation"]],
                   sh=vector[..., s["sh"]].reshape(b + (N_SH_BANDS, 3)), albedo=vector[..., s["albedo"]],
                   camera=vector[..., s["camera"]],
                   corrective=vector[..., s["corrective"]].reshape(b + (layout.n_corrective, 3)))

    def with_identity_modes(self, n_identity: int) -> "FaceParams":
        """Truncate or zero-pad the identity weights to ``n_identity`` modes (numpy)."""
        ident = np.asarray(self.identity)
        out = np.zeros(self.batch_shape + (n_identity,), np.float32)
        k = min(n_identity, ident.shape[-1])
        out[..., :k] = ident[..., :k]
        return FaceParams(out, *[np.asarray(getattr(self, f.name)) for f in fields(self)[1:]])

    def with_corrective_modes(self, n_corrective: int) -> "FaceParams":
        """Truncate or zero-pad the corrective coefficients to ``n_corrective`` harmonics (numpy)."""
        corr = np.asarray(self.corrective)
        out = np.zeros(self.batch_shape + (n_corrective, 3), np.float32)
        k = min(n_corrective, corr.shape[-2])
        out[..., :k, :] = corr[..., :k, :]
        return replace(self.numpy(), corrective=out)

    def __getitem__(self, index: Any) -> "FaceParams":
        """Select from the batch axes: ``params[3]`` or ``params[mask]``."""
        return FaceParams(*[getattr(self, f.name)[index] for f in fields(self)])

    @classmethod
    def stack(cls, items: list["FaceParams"]) -> "FaceParams":
        return cls(*[np.stack([np.asarray(getattr(p, f.name)) for p in items]) for f in fields(cls)])

    def numpy(self) -> "FaceParams":
        def conv(a: Any) -> np.ndarray:
            return a.detach().cpu().numpy() if hasattr(a, "detach") else np.asarray(a)
        return FaceParams(*[conv(getattr(self, f.name)) for f in fields(self)])

    # -- JSON -----------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        p = self.numpy()
        d: dict[str, Any] = {"layout_version": LAYOUT_VERSION, "n_identity": self.n_identity,
                             "n_corrective": self.n_corrective,
                             "units": {"rotation": "rad (yaw, pitch, roll)", "translation": "cm",
                                       "camera": "focal/width, cx/width, cy/height",
                                       "corrective": "cm, (harmonic, xyz) in model space"},
                             "albedo_names": list(ALBEDO_NAMES)}
        for f in fields(p):
            d[f.name] = np.asarray(getattr(p, f.name), dtype=np.float64).tolist()
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "FaceParams":
        version = d.get("layout_version")
        if not isinstance(version, int):
            raise LayoutError("parameter file has no integer 'layout_version'")
        corrective = d.get("corrective", [])
        ParamLayout(n_identity=int(d.get("n_identity", len(d.get("identity", [])))), version=version,
                    n_corrective=int(d.get("n_corrective", len(corrective))))
        try:
            arrays = {f.name: np.asarray(d[f.name], dtype=np.float32) for f in fields(cls) if f.name != "corrective"}
            arrays["corrective"] = np.asarray(corrective, dtype=np.float32).reshape(
                arrays["expression"].shape[:-1] + (-1, 3))
        except KeyError as exc:
            raise LayoutError(f"parameter file lacks the group {exc}") from None
        except (TypeError, ValueError) as exc:
            raise LayoutError(f"parameter file has a malformed group: {exc}") from None
        expected = {"expression": N_EXPRESSIONS, "rotation": 3, "translation": 3,
                    "albedo": len(ALBEDO_NAMES), "camera": 3}
        for name, n in expected.items():
            if arrays[name].shape[-1:] != (n,):
                raise LayoutError(f"group {name!r} has shape {arrays[name].shape}, expected (..., {n})")
        if arrays["sh"].shape[-2:] != (N_SH_BANDS, 3):
            raise LayoutError(f"group 'sh' has shape {arrays['sh'].shape}, expected (..., 9, 3)")
        return cls(**arrays)

    def to_json(self, indent: int | None = 1) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_json(cls, text: str) -> "FaceParams":
        try:
            return cls.from_dict(json.loads(text))
        except json.JSONDecodeError as exc:
            raise LayoutError(f"not a facerig parameter file (invalid JSON: {exc})") from None

    def save(self, path: Path | str) -> None:
        from .outputs import atomic_write_text

        atomic_write_text(path, self.to_json())

    @classmethod
    def load(cls, path: Path | str) -> "FaceParams":
        return cls.from_json(Path(path).read_text())
