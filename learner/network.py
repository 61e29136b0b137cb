"""MobileNetV3-small-like regressor from a face crop to the flat ``FaceParams`` vector.

Plain torch (no torchvision). The network owns everything the ONNX contract needs: it takes
RGB in [0, 1], normalises internally, and its output is already the plain layout vector
(``ParamLayout(n_identity)``), so the add-on needs no knowledge of how it was parametrised.

Output parametrisation (inside the network, before the plain layout):

* every regressed group is predicted *standardised*: ``value = mean + std · z`` with the
  per-dimension mean/std of the training corpus stored as buffers, so the last layer starts
  at the data mean and all outputs have unit scale (SH and translation span very different
  ranges);
* expression = ``sigmoid(z)``: the blendshape weights live in [0, 1];
* rotation = yaw, pitch, roll directly. The pose prior stays far from the Euler singularity
  (pitch ±90°) and from the ±180° wrap, so Euler angles are continuous and unique on the data
  and need no conversion; a 6D representation would buy nothing here and would need
  atan2 (not an ONNX op) to return to the layout;
* translation is predicted as (u, v, log d): the image-plane offset of the model origin from
  the principal point (crop-width units) and the log of its depth. That is what the crop
  shows directly; raw (x, y, z) in cm couples lateral and depth errors (x = u·d/f), and log
  depth makes the depth error relative, like the image scale it is read from;
* camera = ``DEFAULT_CAMERA``, a constant;
* corrective (``NetworkConfig.n_corrective`` > 0): the corrective field's coefficients (cm) from a
  linear head of their own on the hidden layer, zero-initialised, so a network made from one without
  it (``learner.onnx_import``) starts with exactly its old outputs and a zero field.

Optional keypoint branch (``NetworkConfig.keypoints``): heat maps of face vertices read out by
soft-argmax, whose coordinates the head sees beside the pooled features (learner README).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from facemodel import DEFAULT_CAMERA, N_EXPRESSIONS, ParamLayout

from .config import NetworkConfig

# Input normalisation constants (inside the network; the contract input is RGB in [0, 1]).
INPUT_MEAN = 0.5
INPUT_STD = 0.25
# MobileNetV3-small stages: kernel, expansion, out channels, squeeze-excite, hard-swish, stride.
MBV3_SMALL = (
    (3, 16, 16, True, False, 2),
    (3, 72, 24, False, False, 2),
    (3, 88, 24, False, False, 1),
    (5, 96, 40, True, True, 2),
    (5, 240, 40, True, True, 1),
    (5, 240, 40, True, True, 1),
    (5, 120, 48, True, True, 1),
    (5, 144, 48, True, True, 1),
    (5, 288, 96, True, True, 2),
    (5, 576, 96, True, True, 1),
    (5, 576, 96, True, True, 1),
)
# Output scale of the corrective coefficients (cm): their prior sd at the first harmonic is of this order.
CORRECTIVE_OUTPUT_STD = 0.05
# Stages whose outputs the keypoint branch taps: the last at stride 8 and the last at stride 16.
TAP_STAGES = (2, 7)


def _div8(v: float) -> int:
    """Round channels to a multiple of 8 (never down by more than 10 %), as MobileNet does."""
    out = max(8, int(v + 4) // 8 * 8)
    return out + 8 if out < 0.9 * v else out


class ConvBN(nn.Sequential):
    def __init__(self, cin: int, cout: int, k: int, stride: int = 1, groups: int = 1,
                 act: type[nn.Module] | None = nn.ReLU) -> None:
        layers: list[nn.Module] = [nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False),
                                   nn.BatchNorm2d(cout)]
        if act is not None:
            layers.append(act(inplace=True) if act in (nn.ReLU, nn.Hardswish) else act())
        super().__init__(*layers)


class SqueezeExcite(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        hidden = _div8(channels / 4)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, hidden, 1)
        self.fc2 = nn.Conv2d(hidden, channels, 1)
        self.act = nn.ReLU(inplace=True)
        self.gate = nn.Hardsigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(self.fc2(self.act(self.fc1(self.pool(x)))))


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, k: int, exp: int, cout: int, se: bool, hs: bool, stride: int) -> None:
        super().__init__()
        act = nn.Hardswish if hs else nn.ReLU
        layers: list[nn.Module] = []
        if exp != cin:
            layers.append(ConvBN(cin, exp, 1, act=act))
        layers.append(ConvBN(exp, exp, k, stride, groups=exp, act=act))
        if se:
            layers.append(SqueezeExcite(exp))
        layers.append(ConvBN(exp, cout, 1, act=None))
        self.block = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.block(x)
        return x + y if self.residual else y


class KeypointDecoder(nn.Module):
    """Stride-32/16/8 features → K heat maps at stride 8 → soft-argmax pixel positions (N, K, 2).

    FPN-style top-down path (nearest upsampling plus 1×1 lateral projections). Soft-argmax (the
    expectation of each softmax-normalised map) is differentiable, sub-pixel and exports to ONNX
    as Softmax and MatMul.
    """

    def __init__(self, c8: int, c16: int, c32: int, keypoints: int, input_size: int, width: int = 64) -> None:
        super().__init__()
        self.lat32 = ConvBN(c32, width, 1, act=None)
        self.lat16 = ConvBN(c16, width, 1, act=None)
        self.lat8 = ConvBN(c8, width, 1, act=None)
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.smooth = nn.Sequential(ConvBN(width, width, 3, groups=width, act=nn.Hardswish),
                                    ConvBN(width, width, 1, act=nn.Hardswish))
        self.heat = nn.Conv2d(width, keypoints, 1)
        cells = input_size // 8
        self.register_buffer("centres", (torch.arange(cells, dtype=torch.float32) + 0.5) * 8.0)

    def forward(self, f8: torch.Tensor, f16: torch.Tensor, f32: torch.Tensor) -> torch.Tensor:
        x = self.up(self.up(self.lat32(f32)) + self.lat16(f16)) + self.lat8(f8)
        heat = self.heat(self.smooth(x))
        n, k, h, w = heat.shape
        prob = torch.softmax(heat.reshape(n, k, h * w), -1).reshape(n, k, h, w)
        u = prob.sum(2) @ self.centres   # marginal over columns · column centres
        v = prob.sum(3) @ self.centres
        return torch.stack([u, v], -1)


def translation_to_uvlogd(t: Any, focal: float = DEFAULT_CAMERA[0]) -> Any:
    """(…, 3) camera-space translation (cm) → (u, v, log depth); u, v in crop widths."""
    d = (-t[..., 2]).clamp_min(1e-3)
    return torch.stack([focal * t[..., 0] / d, -focal * t[..., 1] / d, torch.log(d)], -1)


def uvlogd_to_translation(uvd: Any, focal: float = DEFAULT_CAMERA[0]) -> Any:
    """Inverse of :func:`translation_to_uvlogd`."""
    d = torch.exp(uvd[..., 2])
    return torch.stack([uvd[..., 0] * d / focal, -uvd[..., 1] * d / focal, -d], -1)


@dataclass
class OutputStats:
    """Mean and std of the standardised head outputs (raw order = layout order without camera,
    translation as (u, v, log d)), computed once from the training targets."""

    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def from_params(cls, params: np.ndarray, layout: ParamLayout) -> "OutputStats":
        raw = params_to_raw(torch.as_tensor(params, dtype=torch.float64), layout).numpy()
        mean, std = raw.mean(0), raw.std(0)
        s = layout.slices
        mean[s["identity"]], std[s["identity"]] = 0.0, 1.0       # the model's own N(0, 1) prior
        mean[s["expression"]], std[s["expression"]] = 0.0, 1.0  # logits; sigmoid follows
        corr = slice(s["corrective"].start - 3, s["corrective"].stop - 3)   # raw has no camera
        mean[corr], std[corr] = 0.0, CORRECTIVE_OUTPUT_STD        # renders' targets are all zero
        std = np.maximum(std, 1e-3)
        return cls(mean.astype(np.float32), std.astype(np.float32))

    @classmethod
    def identity(cls, layout: ParamLayout) -> "OutputStats":
        n = layout.size - 3
        return cls(np.zeros(n, np.float32), np.ones(n, np.float32))


def params_to_raw(params: torch.Tensor, layout: ParamLayout) -> torch.Tensor:
    """Plain layout vector → the network's raw space (camera dropped, translation → u, v, log d)."""
    s = layout.slices
    t = translation_to_uvlogd(params[..., s["translation"]])
    return torch.cat([params[..., : s["translation"].start], t,
                      params[..., s["translation"].stop: s["camera"].start], params[..., s["corrective"]]], -1)


class FaceRegressor(nn.Module):
    """image (N, 3, S, S) RGB in [0, 1] → params (N, P) in ``ParamLayout(n_identity)``."""

    def __init__(self, config: NetworkConfig, stats: OutputStats | None = None) -> None:
        super().__init__()
        self.config = config
        self.layout = ParamLayout(n_identity=config.n_identity, n_corrective=config.n_corrective)
        w = config.width
        stem = _div8(16 * w)
        self.stem = ConvBN(3, stem, 3, 2, act=nn.Hardswish)
        blocks, cin = [], stem
        for k, exp, cout, se, hs, stride in MBV3_SMALL:
            blocks.append(InvertedResidual(cin, k, _div8(exp * w), _div8(cout * w), se, hs, stride))
            cin = _div8(cout * w)
        self.blocks = nn.Sequential(*blocks)
        last = _div8(576 * w)
        self.last = ConvBN(cin, last, 1, act=nn.Hardswish)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.keypoints: KeypointDecoder | None = None
        if config.keypoints:
            c8, c16 = (_div8(MBV3_SMALL[i][2] * w) for i in TAP_STAGES)
            self.keypoints = KeypointDecoder(c8, c16, last, config.keypoints, config.input_size)
        head_in = last + 2 * config.keypoints
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(head_in, config.head_width), nn.Hardswish(inplace=True),
                                  nn.Dropout(config.dropout),
                                  nn.Linear(config.head_width, self.layout.size - 3 - 3 * config.n_corrective))
        self.corrective_head = nn.Linear(config.head_width, 3 * config.n_corrective) if config.n_corrective else None
        stats = stats or OutputStats.identity(self.layout)
        self.register_buffer("out_mean", torch.as_tensor(stats.mean, dtype=torch.float32))
        self.register_buffer("out_std", torch.as_tensor(stats.std, dtype=torch.float32))
        self.register_buffer("camera", torch.tensor(DEFAULT_CAMERA, dtype=torch.float32))
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)
        # Start at the data mean: small last-layer weights keep the first steps well-behaved.
        nn.init.normal_(self.head[-1].weight, 0, 1e-3)
        if self.corrective_head is not None:   # exactly no field until trained
            nn.init.zeros_(self.corrective_head.weight)

    def set_stats(self, stats: OutputStats) -> None:
        self.out_mean.copy_(torch.as_tensor(stats.mean))
        self.out_std.copy_(torch.as_tensor(stats.std))

    def features(self, image: torch.Tensor) -> torch.Tensor:
        """(N, C) pooled features (the head's input without the keypoint coordinates)."""
        return self.pool(self._trunk(image)[-1]).flatten(1)

    def _trunk(self, image: torch.Tensor) -> list[torch.Tensor]:
        """Feature maps at strides 8, 16 and 32 (the last after the final 1×1 convolution)."""
        x = self.stem((image - INPUT_MEAN) * (1.0 / INPUT_STD))
        maps = []
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i in TAP_STAGES:
                maps.append(x)
        maps.append(self.last(x))
        return maps

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.forward_train(image)[0]

    def forward_train(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Params and, with the keypoint branch, its (N, K, 2) pixel positions (for its loss)."""
        f8, f16, f32 = self._trunk(image)
        feats = self.pool(f32).flatten(1)
        points = None
        if self.keypoints is not None:
            points = self.keypoints(f8, f16, f32)
            coords = points * (2.0 / self.config.input_size) - 1.0
            feats = torch.cat([feats, coords.flatten(1)], 1)
        hidden = self.head[:-1](feats)
        out = self.head[-1](hidden)
        if self.corrective_head is not None:
            out = torch.cat([out, self.corrective_head(hidden)], 1)
        return self._decode(out), points

    def _decode(self, head_out: torch.Tensor) -> torch.Tensor:
        """Standardised head outputs → the plain layout vector."""
        z = head_out * self.out_std + self.out_mean
        s = self.layout.slices
        n_id = s["identity"].stop
        ident = z[:, :n_id]
        expr = torch.sigmoid(z[:, n_id: n_id + N_EXPRESSIONS])
        rot = z[:, s["rotation"]]
        t = uvlogd_to_translation(z[:, s["translation"]])
        rest = z[:, s["sh"].start: s["albedo"].stop]
        cam = self.camera.expand(z.shape[0], 3)
        corr = z[:, s["albedo"].stop:]   # raw order: the corrective follows albedo (no camera in between)
        return torch.cat([ident, expr, rot, t, rest, cam, corr], 1)


def build_network(config: NetworkConfig, stats: OutputStats | None = None) -> FaceRegressor:
    """The regressor in channels_last memory format (≈ 4× faster convolutions on CPU)."""
    return FaceRegressor(config, stats).to(memory_format=torch.channels_last)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
