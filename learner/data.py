"""Corpora in memory and fast batching by indexing (no DataLoader: 2 cores, no workers to spare).

Images stay uint8 (100k × 128² × 3 = 4.9 GB); a batch is gathered with one index operation,
converted to float and laid out channels_last. The order of samples is a pure function of
(seed, epoch), so resuming at a step needs nothing but the step number.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from facemodel import FaceParams, ParamLayout

from .losses import N_UNIFIED, Batch, to_unified

log = logging.getLogger(__name__)
KEYS = ("images", "params", "landmarks", "landmarks_visible_jaw", "pose_deg")


@dataclass
class FaceData:
    """All samples of the given corpora, params in ``layout`` (the widest identity of the inputs)."""

    images: torch.Tensor          # (N, S, S, 3) uint8
    params: torch.Tensor          # (N, P) float32
    landmarks: torch.Tensor       # (N, 84, 2) float32, pixels of the stored image size
    landmark_mask: torch.Tensor   # (N, 84) bool
    has_params: torch.Tensor      # (N,) bool
    pose_deg: torch.Tensor        # (N, 3) float32
    layout: ParamLayout
    sources: list[dict[str, Any]] = field(default_factory=list)
    appearance_ok: torch.Tensor | None = None  # (N,) bool; None = all (SH/albedo labels exact)

    def __post_init__(self) -> None:
        if self.appearance_ok is None:
            self.appearance_ok = torch.ones(len(self.images), dtype=torch.bool)

    @classmethod
    def from_arrays(cls, images: np.ndarray, params: np.ndarray, layout: ParamLayout, landmarks: np.ndarray,
                    pose_deg: np.ndarray | None = None, landmarks_visible_jaw: np.ndarray | None = None,
                    sources: list[dict[str, Any]] | None = None,
                    appearance_ok: np.ndarray | None = None) -> "FaceData":
        """Samples with parameter labels: uint8 images (N, S, S, 3), params (N, P), 68 landmarks (N, 68, 2)."""
        params = np.asarray(params, np.float32)
        if params.shape[1] != layout.size:
            raise ValueError(f"params have {params.shape[1]} values, layout needs {layout.size}")
        target, mask = to_unified(landmarks, "fixed68")
        if landmarks_visible_jaw is not None:
            t2, m2 = to_unified(landmarks_visible_jaw, "visible_jaw68")
            target, mask = np.where(m2[..., None], t2, target), mask | m2
        if pose_deg is None:
            pose_deg = np.degrees(params[:, layout.slices["rotation"]])
        return cls(images=torch.from_numpy(np.ascontiguousarray(images, np.uint8)), params=torch.from_numpy(params),
                   landmarks=torch.from_numpy(target), landmark_mask=torch.from_numpy(mask),
                   has_params=torch.ones(len(params), dtype=torch.bool),
                   pose_deg=torch.from_numpy(np.asarray(pose_deg, np.float32)), layout=layout,
                   sources=sources or [],
                   appearance_ok=None if appearance_ok is None else torch.from_numpy(np.asarray(appearance_ok, bool)))

    @classmethod
    def from_photo_landmarks(cls, images: np.ndarray, landmarks: np.ndarray, scheme: str,
                             sources: list[dict[str, Any]] | None = None) -> "FaceData":
        """Samples without parameter labels (photos with 2-D landmarks only).

        Their params are a neutral placeholder (mean face 1 m in front of the camera): never a
        target (``has_params`` is false) but finite, so masked loss terms stay finite and the
        roll augmentation has a valid camera to rotate about.
        """
        n = len(images)
        layout = ParamLayout(n_identity=0)
        params = np.broadcast_to(FaceParams.neutral(n_identity=0).to_vector(), (n, layout.size)).copy()
        target, mask = to_unified(landmarks, scheme)
        return cls(images=torch.from_numpy(np.ascontiguousarray(images, np.uint8)),
                   params=torch.from_numpy(params.astype(np.float32)), landmarks=torch.from_numpy(target),
                   landmark_mask=torch.from_numpy(mask), has_params=torch.zeros(n, dtype=torch.bool),
                   pose_deg=torch.full((n, 3), float("nan")), layout=layout, sources=sources or [],
                   appearance_ok=torch.zeros(n, dtype=torch.bool))

    @classmethod
    def concatenate(cls, parts: list["FaceData"]) -> "FaceData":
        if len(parts) == 1:
            return parts[0]
        n_id = max(p.layout.n_identity for p in parts)
        layout = ParamLayout(n_identity=n_id)
        params = [torch.from_numpy(_widen_identity(p.params.numpy(), p.layout, n_id)) for p in parts]
        return cls(images=torch.cat([p.images for p in parts]), params=torch.cat(params),
                   landmarks=torch.cat([p.landmarks for p in parts]),
                   landmark_mask=torch.cat([p.landmark_mask for p in parts]),
                   has_params=torch.cat([p.has_params for p in parts]),
                   pose_deg=torch.cat([p.pose_deg for p in parts]), layout=layout,
                   sources=[s for p in parts for s in p.sources],
                   appearance_ok=torch.cat([p.appearance_ok for p in parts]))

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def image_size(self) -> int:
        return int(self.images.shape[1])

    def subset(self, idx: np.ndarray) -> "FaceData":
        t = torch.as_tensor(idx, dtype=torch.long)
        return FaceData(self.images[t], self.params[t], self.landmarks[t], self.landmark_mask[t],
                        self.has_params[t], self.pose_deg[t], self.layout, self.sources, self.appearance_ok[t])

    def batch(self, idx: torch.Tensor, size: int) -> Batch:
        """Gather samples ``idx`` as float images of ``size``² (resized if the corpus differs)."""
        img = self.images[idx].permute(0, 3, 1, 2).float().div_(255.0)
        lm = self.landmarks[idx]
        if img.shape[-1] != size:
            img = F.interpolate(img, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
            lm = lm * (size / self.image_size)
        return Batch(images=img.contiguous(memory_format=torch.channels_last), params=self.params[idx],
                     has_params=self.has_params[idx], landmarks=lm, landmark_mask=self.landmark_mask[idx],
                     appearance_ok=self.appearance_ok[idx])


def _widen_identity(params: np.ndarray, layout: ParamLayout, n_identity: int) -> np.ndarray:
    """Zero-pad the identity group to ``n_identity`` modes (the model's own modes beyond are 0)."""
    if layout.n_identity == n_identity:
        return params
    s = layout.slices["identity"]
    pad = np.zeros((params.shape[0], n_identity - layout.n_identity), params.dtype)
    return np.concatenate([params[:, : s.stop], pad, params[:, s.stop:]], 1)


def load_corpora(paths: Sequence[Path | str], visible_jaw: bool = False) -> FaceData:
    """Read whole corpora and stack them in memory: rendered corpora (``synth.corpus``) with
    full labels, and photo corpora (:mod:`learner.photo_corpus`) with landmarks only."""
    from synth.corpus import open_corpus

    from .photo_corpus import SCHEME, is_photo_corpus, load_photo_corpus

    if not paths:
        raise ValueError("no corpus given (--corpus DIR)")
    rendered, photos = [], []
    for p in paths:
        if not Path(p).exists():
            raise FileNotFoundError(f"corpus not found: {p}")
        (photos if is_photo_corpus(p) else rendered).append(p)
    corpora = [open_corpus(p) for p in rendered]
    photo_data = [load_photo_corpus(p) for p in photos]
    sizes = {int(c.image_size) for c in corpora} | {int(d.images.shape[1]) for d in photo_data}
    if len(sizes) != 1:
        raise ValueError(f"corpora have different image sizes {sorted(sizes)}; render them at one size")
    parts = []
    for path, d in zip(photos, photo_data):
        log.info("photo corpus %s: %d faces with %s landmarks (no parameter labels)", path, len(d.images),
                 d.manifest.get("scheme"))
        source = {"path": str(Path(path).resolve()), "count": int(len(d.images)), "kind": "photo_landmarks",
                  "manifest": _jsonable({k: v for k, v in d.manifest.items() if k != "shards"})}
        parts.append(FaceData.from_photo_landmarks(d.images, d.landmarks, d.manifest.get("scheme", SCHEME),
                                                   [source]))
    for path, c in zip(rendered, corpora):
        keys = list(KEYS) + (["aug_flags"] if "aug_flags" in getattr(c, "keys", {}) else [])
        data = c.load_all(keys)
        appearance_ok = None
        if "aug_flags" in data:  # synth marks colour-jittered renders: their SH/albedo labels are off
            from synth.augment import FLAG

            appearance_ok = (data["aug_flags"].astype(np.int64) & FLAG["color_jitter"]) == 0
        if not c.generator.get("appearance_labels", True):   # views of photos (synth.views)
            appearance_ok = np.zeros(len(data["images"]), bool)
        log.info("corpus %s: %d images, %d identity modes", path, len(data["images"]), c.layout.n_identity)
        source = {"path": str(Path(path).resolve()), "count": int(len(data["images"])),
                  "manifest": _jsonable(getattr(c, "manifest", {}))}
        parts.append(FaceData.from_arrays(data["images"], data["params"], c.layout, data["landmarks"],
                                          data["pose_deg"], data["landmarks_visible_jaw"] if visible_jaw else None,
                                          [source], appearance_ok))
        del data
    return FaceData.concatenate(parts)


def _jsonable(x: Any) -> Any:
    """Keep only JSON types (checkpoints are loaded with weights_only=True)."""
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, (str, int, float, bool)) or x is None:
        return x
    if isinstance(x, np.generic):
        return x.item()
    return str(x)


def split_indices(n: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic held-out split (train sorted, val in random order so any prefix of it is an
    unbiased sample across corpora), independent of the training order."""
    if n < 4:
        raise ValueError(f"need at least 4 images to train, got {n}")
    perm = np.random.default_rng([seed, 7919]).permutation(n)
    n_val = min(max(1, int(round(n * val_fraction))), n - 2)
    return np.sort(perm[n_val:]), perm[:n_val]


class BatchOrder:
    """Epoch-wise shuffled batches; batch ``step`` is a pure function of (seed, step)."""

    def __init__(self, n: int, batch_size: int, seed: int) -> None:
        if n < batch_size:
            raise ValueError(f"training split has {n} images, fewer than batch_size {batch_size}")
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.per_epoch = n // batch_size          # drop the ragged tail (batch norm)
        self._epoch, self._perm = -1, None

    def indices(self, step: int) -> torch.Tensor:
        epoch, k = divmod(step, self.per_epoch)
        if epoch != self._epoch:
            gen = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._perm, self._epoch = torch.randperm(self.n, generator=gen), epoch
        return self._perm[k * self.batch_size:(k + 1) * self.batch_size]


__all__ = ["FaceData", "BatchOrder", "load_corpora", "split_indices", "N_UNIFIED"]
