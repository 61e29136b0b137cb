"""New training views of reconstructed real photos, with exact labels (issue 7).

Two seed papers, one renderer:

* **VRN bootstrap** (rotate): the reconstructed head is turned in yaw (and a little in pitch)
  away from the photo's view and rendered with the photo projected onto it (seen vertices take
  the photo's colour; unseen ones their mirror vertex's, else the median skin colour), in front
  of the original photo as a backplane. The label is the reconstruction with the new pose.
* **InverseFaceNet resampling** (resample): the reconstruction is perturbed with a
  mean-adaptive Gaussian (:class:`Perturbation`) and relit with new SH lighting; the photo
  texture is de-lit first (albedo = colour / shading) with the reconstruction's own lighting, or
  with SH lighting fitted to the photo's face pixels (``ViewSettings.delight_light = "fitted"``).

Either way the pixels come from a real photo, the geometry from the image formation model, so
the labels (identity, expression, pose, translation, landmarks) are exact for the image. SH and
albedo labels are not (the texture is the photo's): the manifest says ``appearance_labels:
false`` and the learner drops those loss groups for these corpora.

Reconstructions (``RECON_DIR``, written by :func:`write_reconstructions`, e.g. by ``facerig
bootstrap``): ``manifest.json`` (kind ``reconstructions``) and ``recon.npz`` with ``images``
(N, S, S, 3) uint8 canonical crops, ``params`` (N, P) in the crops' camera, ``names``, and the
filter's scores. Rendering runs through :func:`synth.render.render_corpus` (workers, atomic
shards, resume), so a killed run continues with the same command.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from facemodel import FaceModel, FaceParams, ParamLayout
from facemodel.formation import mesh_camera_space, project_to_image
from facemodel.lighting import radiance, srgb_decode
from facemodel.lighting_fit import fit_face_lighting
from facemodel.priors import sample_sh

from .labels import image_rngs, image_seed, landmark_visibility, neck_opening_visible
from .shards import ShardRenderer

log = logging.getLogger(__name__)
RECON_KIND = "reconstructions"
RECON_VERSION = 1
MAX_YAW_DEG = 90.0
MAX_PITCH_DEG = 40.0
DELIGHT_LIGHTS = ("fitted", "network")


class ReconstructionError(RuntimeError):
    """A reconstruction directory is missing or corrupt."""


@dataclass(frozen=True)
class Perturbation:
    """InverseFaceNet's mean-adaptive Gaussian in this model's units.

    Theirs: rotation U(−5°, 5°), shape N(0, 0.05), reflectance N(0, 0.2), expression N(0, 0.1),
    illumination N(0, 0.02). Here identity and albedo coefficients are already in prior standard
    deviations (as theirs), expressions are blendshape weights in [0, 1] (clipped after the
    noise), and the SH noise is relative to the band-0 (ambient) coefficient of the photo.
    """

    rotation_deg: float = 5.0
    identity: float = 0.05
    albedo: float = 0.2
    expression: float = 0.1
    sh: float = 0.02

    @classmethod
    def parse(cls, text: str) -> "Perturbation":
        """``"5,0.05,0.2,0.1,0.02"`` (rotation°, identity, albedo, expression, SH)."""
        try:
            values = [float(v) for v in text.split(",")]
        except ValueError:
            values = []
        if len(values) != 5 or any(v < 0 for v in values):
            raise ValueError(f"--perturb needs 5 non-negative numbers ROT,ID,ALBEDO,EXPR,SH, got {text!r}")
        return cls(*values)


@dataclass(frozen=True)
class ViewSettings:
    """Which views each reconstruction yields (part of the corpus' generator settings)."""

    source: Path
    yaw_offsets: tuple[float, ...] = (-60.0, -45.0, -30.0, -15.0, 15.0, 30.0, 45.0, 60.0)
    rotations: int = 2          # rotated (VRN) views per photo, offsets drawn without replacement
    pitch_jitter_deg: float = 10.0
    relight: int = 1            # resampled + relit (InverseFaceNet) renders per photo
    perturb: Perturbation = field(default_factory=Perturbation)
    # the light divided out before relighting: the reconstruction's own ("network") or "fitted" to the
    # photo's face pixels (facemodel.lighting_fit: a truer albedo, but one A/B round did not gain on Helen)
    delight_light: str = "network"

    @property
    def per_photo(self) -> int:
        return self.rotations + self.relight

    def validate(self) -> None:
        if self.rotations < 0 or self.relight < 0 or self.per_photo < 1:
            raise ValueError("at least one view per photo: --rotations and --relight must be ≥ 0, not both 0")
        if self.rotations and not self.yaw_offsets:
            raise ValueError("--yaw-offsets is empty")
        if any(abs(o) > MAX_YAW_DEG for o in self.yaw_offsets):
            raise ValueError(f"--yaw-offsets must be within ±{MAX_YAW_DEG:.0f}°")
        if self.delight_light not in DELIGHT_LIGHTS:
            raise ValueError(f"delight_light must be one of {', '.join(DELIGHT_LIGHTS)}, not {self.delight_light!r}")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["source"] = str(Path(self.source).resolve())
        d["yaw_offsets"] = list(self.yaw_offsets)
        if d["delight_light"] == "network":   # what corpora did before the key: they still resume
            del d["delight_light"]
        return d

    def generator_entry(self) -> dict[str, Any]:
        """These settings in a corpus manifest's generator settings, with the reconstructions' digest."""
        return {**self.to_dict(), "source_sha256": read_reconstructions(self.source)[1]["sha256"]}

    @property
    def renderer(self) -> type["ViewShardRenderer"]:
        """The shard renderer of these views (:func:`synth.shards.make_renderer` asks for it)."""
        return ViewShardRenderer


# -- reconstructions on disk -----------------------------------------------------------------------
def write_reconstructions(out: Path | str, images: np.ndarray, params: np.ndarray, layout: ParamLayout,
                          names: np.ndarray, scores: dict[str, np.ndarray], info: dict[str, Any]) -> Path:
    """Store reconstructions for :class:`ViewShardRenderer` (atomic; never pickled)."""
    from facemodel.outputs import atomic_write_bytes

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    np.savez(buf, images=np.asarray(images, np.uint8), params=np.asarray(params, np.float32),
             names=np.asarray(names, str), **{f"score_{k}": np.asarray(v, np.float32) for k, v in scores.items()})
    data = buf.getvalue()
    atomic_write_bytes(out / "recon.npz", data)
    manifest = {"kind": RECON_KIND, "version": RECON_VERSION, "count": int(len(images)),
                "image_size": int(images.shape[1]) if len(images) else None, "layout": layout.to_dict(),
                "sha256": hashlib.sha256(data).hexdigest(), **info}
    atomic_write_bytes(out / "manifest.json", json.dumps(manifest, indent=1).encode())
    return out


def read_reconstructions(path: Path | str) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """(arrays, manifest) of a reconstruction directory, checksum-verified."""
    from .corpus import read_kind_manifest

    path = Path(path)
    z = path / "recon.npz"
    missing = f"{path} is not a reconstruction directory (manifest.json + recon.npz)"
    manifest = read_kind_manifest(path / "manifest.json", RECON_KIND, RECON_VERSION, ReconstructionError, missing)
    if not z.is_file():
        raise ReconstructionError(missing)
    data = z.read_bytes()
    if hashlib.sha256(data).hexdigest() != manifest.get("sha256"):
        raise ReconstructionError(f"{z}: checksum mismatch (corrupt or truncated); reconstruct again")
    with np.load(io.BytesIO(data), allow_pickle=False) as f:
        arrays = {k: f[k] for k in f.files}
    if arrays["params"].shape != (manifest["count"], ParamLayout.from_dict(manifest["layout"]).size):
        raise ReconstructionError(f"{z}: params do not match the manifest's layout")
    return arrays, manifest


# -- the maths (numpy; tested without Blender) ---------------------------------------------------
def mirror_vertices(model: FaceModel) -> np.ndarray:
    """(V,) index of each vertex's left/right mirror on the neutral mesh (x → −x, nearest)."""
    from scipy.spatial import cKDTree

    v = np.asarray(model.neutral, np.float64)
    return cKDTree(v).query(v * np.array([-1.0, 1.0, 1.0]))[1].astype(np.int64)


def sample_photo(image_linear: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Bilinear samples (K, 3) of a (H, W, 3) image at pixel positions (K, 2) (centres at +0.5)."""
    h, w = image_linear.shape[:2]
    x = np.clip(points[:, 0] - 0.5, 0, w - 1.001)
    y = np.clip(points[:, 1] - 0.5, 0, h - 1.001)
    x0, y0 = np.floor(x).astype(np.int64), np.floor(y).astype(np.int64)
    fx, fy = (x - x0)[:, None], (y - y0)[:, None]
    im = image_linear
    return ((im[y0, x0] * (1 - fx) + im[y0, x0 + 1] * fx) * (1 - fy)
            + (im[y0 + 1, x0] * (1 - fx) + im[y0 + 1, x0 + 1] * fx) * fy)


def photo_texture(image_srgb: np.ndarray, pixels: np.ndarray, seen: np.ndarray, mirror: np.ndarray,
                  face: np.ndarray) -> np.ndarray:
    """(V, 3) linear vertex colours from the photo: seen vertices sample it, unseen ones take
    their mirror vertex's colour when that is seen, else the median colour of the seen vertices
    of their region (``face`` true: the face; false: the rest of the head — often hair)."""
    lin = srgb_decode(np.asarray(image_srgb, np.float32) / 255.0)
    colour = sample_photo(lin, pixels)
    out = np.where(seen[:, None], colour, np.nan)
    from_mirror = ~seen & seen[mirror]
    out[from_mirror] = colour[mirror[from_mirror]]
    skin = np.median(colour[face & seen], 0) if (face & seen).any() else np.full(3, 0.3)
    for region, default in ((face, skin), (~face, None)):
        src = region & seen
        fill = np.median(colour[src], 0) if default is None and src.any() else skin
        hole = region & np.isnan(out[:, 0])
        out[hole] = fill
    return out.astype(np.float32)


def delight(colour: np.ndarray, normals: np.ndarray, sh: np.ndarray, floor: float = 0.08) -> np.ndarray:
    """Albedo estimate colour / shading (the reconstruction's SH), kept in a plausible range."""
    shading = radiance(np.ones_like(colour), normals, sh)
    return np.clip(colour / np.maximum(shading, floor), 0.0, 1.2).astype(np.float32)


def rotated(params: FaceParams, yaw_deg: float, pitch_deg: float) -> FaceParams:
    """The same face turned by (yaw, pitch) degrees, clamped to the renderer's pose range."""
    rot = np.asarray(params.rotation, np.float64).copy()
    rot[..., 0] = np.deg2rad(np.clip(np.degrees(rot[..., 0]) + yaw_deg, -MAX_YAW_DEG, MAX_YAW_DEG))
    rot[..., 1] = np.deg2rad(np.clip(np.degrees(rot[..., 1]) + pitch_deg, -MAX_PITCH_DEG, MAX_PITCH_DEG))
    return replace(params, rotation=rot.astype(np.float32))


def perturbed(params: FaceParams, rng: np.random.Generator, p: Perturbation, new_light: bool) -> FaceParams:
    """InverseFaceNet resampling around one reconstruction; ``new_light`` draws fresh SH."""
    rot = params.rotation + np.deg2rad(rng.uniform(-p.rotation_deg, p.rotation_deg, 3)).astype(np.float32)
    ident = params.identity + rng.normal(0, p.identity, params.identity.shape).astype(np.float32)
    expr = np.clip(params.expression + rng.normal(0, p.expression, params.expression.shape), 0, 1)
    albedo = params.albedo + rng.normal(0, p.albedo, params.albedo.shape).astype(np.float32)
    sh = sample_sh(rng, 1)[0] if new_light else np.asarray(params.sh, np.float32)
    ambient = float(np.abs(sh[0]).mean())
    sh = sh + rng.normal(0, p.sh * ambient, sh.shape).astype(np.float32)
    rot[1] = np.clip(rot[1], -np.deg2rad(MAX_PITCH_DEG), np.deg2rad(MAX_PITCH_DEG))
    return replace(params, identity=ident, expression=expr.astype(np.float32), rotation=rot, sh=sh, albedo=albedo)


# -- the renderer (lives in a render worker) ------------------------------------------------------
class ViewShardRenderer(ShardRenderer):
    """A :class:`synth.shards.ShardRenderer` whose faces are views of reconstructions instead of
    samples from the prior (see the module docstring)."""

    def __init__(self, settings: Any, scratch_parent: Path | None = None) -> None:
        super().__init__(settings, scratch_parent)
        self._init_views()

    def _init_views(self) -> None:
        v: ViewSettings = self.s.views
        arrays, manifest = read_reconstructions(v.source)
        self.recon_images = arrays["images"]
        self.recon_layout = ParamLayout.from_dict(manifest["layout"])
        self.recon_params = arrays["params"]
        if self.recon_images.shape[1] != self.s.size:
            raise ReconstructionError(f"{v.source}: crops are {self.recon_images.shape[1]}², the corpus is "
                                      f"{self.s.size}²; use --size {self.recon_images.shape[1]}")
        self.mirror = mirror_vertices(self.model)
        self.face_vertices = np.zeros(self.model.n_vertices, bool)
        self.face_vertices[self.model.vertex_range("face")] = True
        self.narrow_face = self.model.region_masks["narrow_face"]
        self._texture_cache: tuple[int, np.ndarray, np.ndarray] | None = None

    def _texture(self, j: int, params: FaceParams) -> tuple[np.ndarray, np.ndarray]:
        """(baked photo colours, de-lit albedo) per vertex for reconstruction ``j`` (cached)."""
        if self._texture_cache is not None and self._texture_cache[0] == j:
            return self._texture_cache[1], self._texture_cache[2]
        size = self.s.size
        verts = mesh_camera_space(self.arrays, params)[0]
        pix = project_to_image(verts, params[0], size, size)
        cull = not neck_opening_visible(verts, self.neck_ring, verts[self.head_point])
        frame = self.scene.render(verts, np.full((len(verts), 3), 0.5, np.float32), params.camera[0],
                                  backface_culling=cull)
        normals = self.shading.normals(verts[None])[0]
        facing = (normals * verts).sum(-1) < 0          # the normal points towards the camera (origin)
        seen = facing & landmark_visibility(pix, -verts[:, 2], frame.depth, radius=1)
        colour = photo_texture(self.recon_images[j], pix, seen, self.mirror, self.face_vertices)
        sh = np.asarray(params.sh[0])
        if self.s.views.delight_light == "fitted":
            fit = np.flatnonzero(seen & self.narrow_face)
            sh = fit_face_lighting(self.arrays, params[0], fit, normals[fit], colour[fit])
        albedo = delight(colour, normals, sh)
        self._texture_cache = (j, colour, albedo)
        return colour, albedo

    def view(self, index: int, rng: np.random.Generator) -> tuple[FaceParams, np.ndarray, np.ndarray]:
        """(params (1,), camera-space vertices, linear colours) of view ``index``; ``rng`` draws its
        pitch or perturbation."""
        v: ViewSettings = self.s.views
        j, k = divmod(index, v.per_photo)
        source = FaceParams.from_vector(self.recon_params[j:j + 1], self.recon_layout)
        colour, albedo = self._texture(j, source)
        if k < v.rotations:
            order = np.random.default_rng([self.s.seed, j, 17]).permutation(len(v.yaw_offsets))
            yaw = float(v.yaw_offsets[order[k % len(order)]])
            pitch = float(rng.uniform(-v.pitch_jitter_deg, v.pitch_jitter_deg))
            params = rotated(source, yaw, pitch)
            return params, mesh_camera_space(self.arrays, params)[0], colour
        params = FaceParams.stack([perturbed(source[0], rng, v.perturb, new_light=True)])
        verts = mesh_camera_space(self.arrays, params)
        normals = self.shading.normals(verts)[0]
        return params, verts[0], radiance(albedo, normals, np.asarray(params.sh[0])).astype(np.float32)

    def render_images(self, indices: range) -> Iterator[dict[str, Any]]:
        size = self.s.size
        for i in indices:
            seed = image_seed(self.s.seed, i)
            rng, rng_aug = image_rngs(seed)
            with self.timings("form_mesh"):
                params, verts, colours = self.view(i, rng)
                lm = project_to_image(verts[self.lm_fixed], params[0], size, size)
                lm_vis = project_to_image(verts[self.lm_visible], params[0], size, size)
            photo = self.recon_images[i // self.s.views.per_photo].astype(np.float32) / 255
            yield self.render_labelled(params[0], verts, colours, lm, lm_vis, seed, rng_aug, background=photo)


def render_views(views: ViewSettings, out: Path | str, workers: int = 2, seed: int = 0,
                 augment: Any = None, progress: bool = True, model_path: Path | None = None,
                 ray: str | None = None) -> Any:
    """Render every view of every reconstruction in ``views.source`` into a corpus (resumable);
    ``ray``: on a Ray cluster (``auto`` or its address), same bytes as locally."""
    from .augment import AugmentConfig
    from .render import RenderSettings, render_corpus

    views.validate()
    _, manifest = read_reconstructions(views.source)
    if not manifest["count"]:
        raise ReconstructionError(f"{views.source} holds no reconstructions (the filter kept none)")
    layout = ParamLayout.from_dict(manifest["layout"])
    settings = RenderSettings(count=manifest["count"] * views.per_photo, size=int(manifest["image_size"]),
                              seed=seed, n_identity=layout.n_identity, augment=augment or AugmentConfig(),
                              views=views, model_path=model_path)
    return render_corpus(settings, out, workers=workers, progress=progress, ray=ray)


__all__ = ["render_views", "ViewSettings", "Perturbation", "write_reconstructions", "read_reconstructions", "ReconstructionError",
           "mirror_vertices", "photo_texture", "delight", "rotated", "perturbed", "ViewShardRenderer"]
