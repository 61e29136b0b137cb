"""Training configuration: plain dataclasses, loadable from JSON or TOML, stored in checkpoints.

Everything a run depends on lives here so a checkpoint (which stores ``to_dict()``) fully
describes how it was made, and ``--resume`` can check that nothing changed underneath it.
"""

from __future__ import annotations

import json
import tomllib
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any

# Identity modes the network predicts. Measured on the ICT face region (vertices 0–9408, see
# ``facemodel.metrics.identity_mode_report``): the first 60 of 100 unit-variance modes carry
# 98.8 % of the face-region vertex variance; the best least-squares fit with 60 modes leaves
# 0.60 mm RMS of a random identity unexplained (40 modes: 0.93 mm, 80: 0.36 mm). One pixel of a
# 128² canonical crop is ≈ 2.3 mm on the face, so modes past 60 (each < 0.1 mm RMS per σ) are
# below what the input can resolve.
DEFAULT_N_IDENTITY = 60


@dataclass
class NetworkConfig:
    """MobileNetV3-small-like regressor."""

    input_size: int = 128
    n_identity: int = DEFAULT_N_IDENTITY
    # Channel multiplier of the MobileNetV3-small stages. 0.75 measured 441 vs 308 images/s
    # (forward+backward, batch 64, 128², 2 threads) and 0.54 vs ~0.75 ms ONNX latency against
    # 1.0, for ~2 % ImageNet top-1 in the original paper; on 2 CPU cores more epochs win.
    width: float = 0.75
    head_width: int = 1024      # hidden units of the regression head
    dropout: float = 0.1
    # Dense keypoint branch (0 = off): a small FPN decoder predicts this many face-vertex positions
    # as stride-8 heat maps read out by soft-argmax, and the head sees their coordinates next to the
    # pooled features. Measured with 128, 3 seeds (docs/research-log.md): better at equal steps, but 18 %
    # slower to train; at equal CPU time only 1.5–3 % lower NME and no shape gain; 0.70 vs 0.49 ms in
    # onnxruntime — so off in the shipped configuration.
    keypoints: int = 0
    # Corrective field (facemodel.harmonics): coefficients of this many manifold harmonics per axis, from a
    # head of their own on the hidden layer, zero-initialised (0 = none: the layout of models before it).
    n_corrective: int = 0


@dataclass
class LossConfig:
    """Weights of each loss term; a weight of 0 switches the term off (it is not computed)."""

    param: float = 1.0          # InverseFaceNet model-space parameter loss (eq. 6–8)
    vertex3d: float = 1.0       # MobileFace 3D vertex loss (eq. 3), cm, on the face subset
    vertex2d: float = 1.0       # MobileFace 2D projection loss (eq. 4), per image width ×100
    landmark: float = 1.0       # masked 2D landmark loss over the unified point set, ×100
    keypoint: float = 0.0       # the keypoint branch's soft-argmax points vs. the true projections, ×100
    prior_identity: float = 0.0
    prior_expression: float = 0.0
    prior_albedo: float = 0.0
    # Eigenvalue-weighted prior Σ_k λ_k/λ_1 |c_k|² (cm²) on the corrective coefficients of samples without
    # parameter labels (photos); renders have exact zero targets in the parameter and vertex terms.
    prior_corrective: float = 0.0
    # Per-group ω of the parameter loss. Identity/expression errors are in cm² (≈ 0.35 for a
    # mean-face guess), the other groups in standardised units summed over their dimensions
    # (27 for SH): these defaults give every group a cost of ~1–3 at the data mean, so the many
    # weakly observable SH/albedo coefficients do not drown the geometry (measured: with ω = 0.5
    # SH alone was 75 % of the parameter loss after 600 steps).
    omega: dict[str, float] = field(default_factory=lambda: {
        "identity": 5.0, "expression": 5.0, "rotation": 1.0, "translation": 1.0,
        "sh": 0.1, "albedo": 0.3, "corrective": 5.0})
    vertex3d_space: str = "rotated"   # "rotated" (R·v, no translation), "camera" or "model"
    n_face_vertices: int = 1000       # fixed subset of the 9409 face-region vertices
    landmark_visible_jaw: bool = False  # also supervise the corpus' visible-contour jaw points
    # Let the landmark term move the identity of samples without parameter labels (photos)? Off, a
    # photo's 2-D landmarks are fitted through pose, expression and camera only — bootstrapping
    # measured identities of different people drifting together when landmarks could bend them.
    landmark_identity_unlabelled: bool = True


@dataclass
class AugmentConfig:
    """On-the-fly batched augmentation; probabilities are per image."""

    enabled: bool = True
    roll_deg: float = 10.0      # in-plane rotation about the principal point (labels follow exactly)
    p_roll: float = 0.5
    p_blur: float = 0.3
    blur_sigma: tuple[float, float] = (0.3, 1.5)
    p_noise: float = 0.3
    noise_std: tuple[float, float] = (0.005, 0.04)
    # Exact colour change: per-channel gain in linear light; the SH labels are scaled with it
    # (radiance = albedo · shading is linear in the SH coefficients of each channel).
    p_gain: float = 0.8
    brightness: float = 0.35    # overall linear gain ∈ exp(±brightness)
    tint: float = 0.08          # extra per-channel gain ∈ exp(±tint)
    # Label-breaking colour jitter (camera response): hue, saturation, contrast, gamma. Samples
    # that get it lose their SH/albedo supervision (the pixels no longer match those labels).
    p_color: float = 0.3
    hue_deg: float = 8.0
    saturation: float = 0.25    # multiplicative, ±
    contrast: float = 0.25
    gamma: float = 0.2          # exponent jitter, ±
    p_cutout: float = 0.3
    cutout_size: tuple[float, float] = (0.1, 0.4)   # side as a fraction of the image
    # Crop jitter for samples labelled by 2-D landmarks only (photos): a zoom about the crop centre
    # and a shift, as a different detector box would frame the face. Exact for those labels (the
    # landmarks follow the same 2-D map); 3-D labels would need new intrinsics, so renders get their
    # crop jitter in the renderer instead. Off by default (0 keeps earlier runs bit-identical).
    p_photo_crop: float = 0.0
    photo_crop_scale: float = 0.1   # crop side ∈ (1 ± this) × the detector's canonical side
    photo_crop_shift: float = 0.05  # centre moved by up to ± this fraction of the side, per axis


@dataclass
class TrainConfig:
    """Optimisation, schedule, logging and data split."""

    steps: int = 30000
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 1e-4
    warmup_steps: int = 500
    final_lr_fraction: float = 0.02
    grad_clip: float = 5.0
    seed: int = 0
    val_fraction: float = 0.05
    val_max: int = 1024          # validation images evaluated at each validation
    val_every: int = 1000
    checkpoint_every: int = 500
    log_every: int = 50
    threads: int = 2
    max_bad_steps: int = 20      # consecutive non-finite losses before training aborts
    # Start from trained weights instead of random ones: a run's checkpoint (.pt) or an exported
    # model (.onnx, e.g. the shipped default). ONNX exports have batch norm folded into the
    # convolutions, so they need freeze_batchnorm (learner.onnx_import).
    init: str = ""
    freeze_batchnorm: bool = False  # batch norms use their running statistics and do not update them
    # What the optimiser moves: "all", or "corrective" — only the corrective head (everything else frozen and
    # in eval mode, so a fine-tune from a shipped model keeps its other outputs exactly).
    trainable: str = "all"


@dataclass
class Config:
    network: NetworkConfig = field(default_factory=NetworkConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        """JSON-compatible dict (tuples become lists), safe for ``torch.load(weights_only=True)``."""
        return json.loads(json.dumps(asdict(self)))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Config":
        return _build(cls, d, "config")

    @classmethod
    def load(cls, path: Path | str) -> "Config":
        """Read a ``.toml`` or ``.json`` file; missing keys keep their defaults."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"config file not found: {path}")
        text = path.read_text()
        try:
            data = tomllib.loads(text) if path.suffix.lower() == ".toml" else json.loads(text)
        except (tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
            raise ValueError(f"config file {path} is not valid {path.suffix[1:].upper()}: {exc}") from None
        return cls.from_dict(data)

    def save(self, path: Path | str) -> None:
        from facemodel.outputs import write_json

        write_json(path, self.to_dict())

    def validate(self) -> None:
        n, t, lo = self.network, self.train, self.loss
        if n.keypoints < 0:
            raise ValueError(f"network.keypoints must be ≥ 0, got {n.keypoints}")
        if lo.keypoint and not n.keypoints:
            raise ValueError("loss.keypoint needs the keypoint branch (network.keypoints > 0)")
        if n.input_size < 32 or n.input_size % 32:
            raise ValueError(f"network.input_size must be a multiple of 32 (≥ 32), got {n.input_size}")
        if not 0 <= n.n_identity <= 100:
            raise ValueError(f"network.n_identity must be in [0, 100], got {n.n_identity}")
        if t.batch_size < 2:
            raise ValueError("train.batch_size must be at least 2 (batch norm)")
        if not 0 < t.val_fraction < 1:
            raise ValueError("train.val_fraction must be in (0, 1)")
        if lo.vertex3d_space not in ("rotated", "camera", "model"):
            raise ValueError(f"loss.vertex3d_space must be rotated, camera or model, not {lo.vertex3d_space!r}")
        if t.init and not t.init.endswith((".onnx", ".pt")):
            raise ValueError(f"train.init must be a .pt checkpoint or an .onnx model, got {t.init!r}")
        if t.init.endswith(".onnx") and not t.freeze_batchnorm:
            raise ValueError("train.init is an ONNX model (batch norm folded): set train.freeze_batchnorm = true")
        if not 0 <= n.n_corrective <= 64:
            raise ValueError(f"network.n_corrective must be in [0, 64], got {n.n_corrective}")
        if t.trainable not in ("all", "corrective"):
            raise ValueError(f"train.trainable must be all or corrective, not {t.trainable!r}")
        if t.trainable == "corrective" and not n.n_corrective:
            raise ValueError("train.trainable = corrective needs network.n_corrective > 0")
        bad = set(lo.omega) - {"identity", "expression", "rotation", "translation", "sh", "albedo", "corrective"}
        if bad:
            raise ValueError(f"loss.omega has unknown groups {sorted(bad)}")


def _build(cls: type, d: Any, where: str) -> Any:
    """Dataclass from a nested dict, rejecting unknown keys (typos must not pass silently)."""
    if not isinstance(d, dict):
        raise ValueError(f"{where} must be a table/object, got {type(d).__name__}")
    known = {f.name: f for f in fields(cls)}
    unknown = set(d) - set(known)
    if unknown:
        raise ValueError(f"unknown {where} keys {sorted(unknown)}; known: {sorted(known)}")
    kwargs = {}
    default = cls()
    for name, value in d.items():
        current = getattr(default, name)
        if is_dataclass(current):
            kwargs[name] = _build(type(current), value, f"{where}.{name}")
        elif isinstance(current, tuple):
            kwargs[name] = tuple(value)
        elif isinstance(current, dict):
            kwargs[name] = {**current, **dict(value)}
        elif isinstance(current, bool):
            if not isinstance(value, bool):
                raise ValueError(f"{where}.{name} must be true/false, got {value!r}")
            kwargs[name] = value
        elif isinstance(current, (int, float)):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"{where}.{name} must be a number, got {value!r}")
            if isinstance(current, int) and not float(value).is_integer():
                raise ValueError(f"{where}.{name} must be an integer, got {value!r}")
            kwargs[name] = type(current)(value)
        else:
            kwargs[name] = value
    return cls(**kwargs)
