"""Load an exported regressor (ONNX) back into a torch :class:`FaceRegressor` for fine-tuning.

Why: the shipped model is an ONNX file; its training checkpoint is not committed (it would
double the repository size). Fine-tuning it on new data (real-photo landmarks, bootstrapped
views) needs torch weights, and the export is exactly invertible up to batch-norm folding.

The exporter folds every Conv+BatchNorm pair into one Conv with a bias (eval-mode constant
folding), so batch-norm statistics are gone. We load the folded weights into the conv and make
the batch norm an exact identity plus the folded bias (γ = 1, β = bias, μ = 0, σ² = 1 − ε).
Such a network must be fine-tuned with its batch norms frozen (``train.freeze_batchnorm``):
batch statistics would not match the folded weights.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .config import NetworkConfig
from .network import FaceRegressor, build_network

log = logging.getLogger(__name__)


class OnnxImportError(ValueError):
    """The ONNX file is not a facerig regressor this network configuration can hold."""


def onnx_metadata(path: Path | str) -> dict[str, str]:
    """The model's metadata props (``facerig.*``)."""
    return {p.key: p.value for p in _load(Path(path)).metadata_props}


def network_config_from_onnx(path: Path | str, base: NetworkConfig | None = None) -> NetworkConfig:
    """The network configuration recorded in the model's ``facerig.*`` metadata."""
    meta = onnx_metadata(path)
    cfg = NetworkConfig(**vars(base)) if base else NetworkConfig()
    try:
        cfg.input_size = int(meta["facerig.input_size"])
        cfg.n_identity = int(meta["facerig.n_identity"])
        cfg.keypoints = int(meta.get("facerig.keypoints", "0"))   # models before the branch have none
        cfg.n_corrective = int(meta.get("facerig.n_corrective", "0"))   # … or before the corrective field
    except (KeyError, ValueError):
        raise OnnxImportError(f"{path} has no facerig metadata (facerig.input_size, facerig.n_identity)") from None
    return cfg


def _load(path: Path) -> "onnx.ModelProto":  # noqa: F821
    import onnx

    if not path.is_file():
        raise FileNotFoundError(f"ONNX model not found: {path}")
    try:
        return onnx.load(str(path))
    except Exception as exc:  # noqa: BLE001 — protobuf raises several types for a corrupt file
        raise OnnxImportError(f"{path} is not a readable ONNX model: {exc}") from None


def _tensors(proto: "onnx.ModelProto") -> dict[str, np.ndarray]:  # noqa: F821
    from onnx import numpy_helper

    out = {t.name: np.array(numpy_helper.to_array(t)) for t in proto.graph.initializer}
    for node in proto.graph.node:  # constant folding may leave some weights as Constant nodes
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    out[node.output[0]] = np.array(numpy_helper.to_array(attr.t))
    return out


def load_onnx_weights(net: FaceRegressor, path: Path | str) -> FaceRegressor:
    """Copy the ONNX model's weights into ``net`` (same configuration); returns ``net``.

    A model without the corrective field (``facerig.n_corrective`` absent or 0) also loads into a network
    with one: its corrective head keeps its zero initialisation and output statistics, so the network
    starts with exactly the model's outputs and no field (a fine-tune that adds the field)."""
    path = Path(path)
    proto = _load(path)
    tensors = _tensors(proto)
    convs = [n for n in proto.graph.node if n.op_type == "Conv"]
    gemms = [n for n in proto.graph.node if n.op_type == "Gemm"]
    modules = list(net.modules())
    torch_convs = [m for m in modules if isinstance(m, nn.Conv2d)]
    linears = [m for m in modules if isinstance(m, nn.Linear)]
    meta = {p.key: p.value for p in proto.metadata_props}
    adds_field = net.corrective_head is not None and not int(meta.get("facerig.n_corrective", "0"))
    if adds_field:
        linears = [m for m in linears if m is not net.corrective_head]
    if len(convs) != len(torch_convs) or len(gemms) != len(linears):
        raise OnnxImportError(f"{path}: {len(convs)} convolutions / {len(gemms)} dense layers, the network has "
                              f"{len(torch_convs)} / {len(linears)}; wrong width or not a facerig regressor")
    # Module registration order is execution order in this network, as is ONNX node order.
    bn_after = {id(seq[0]): seq[1] for seq in modules
                if isinstance(seq, nn.Sequential) and len(seq) >= 2
                and isinstance(seq[0], nn.Conv2d) and isinstance(seq[1], nn.BatchNorm2d)}
    with torch.no_grad():
        for node, conv in zip(convs, torch_convs):
            w = tensors[node.input[1]]
            b = tensors[node.input[2]] if len(node.input) > 2 else np.zeros(w.shape[0], np.float32)
            if tuple(w.shape) != tuple(conv.weight.shape):
                raise OnnxImportError(f"{path}: conv {node.name} has shape {w.shape}, network expects "
                                      f"{tuple(conv.weight.shape)}")
            conv.weight.copy_(torch.from_numpy(w))
            bn = bn_after.get(id(conv))
            if bn is not None:      # folded Conv+BN: the BN becomes identity + bias
                bn.weight.fill_(1.0)
                bn.bias.copy_(torch.from_numpy(b))
                bn.running_mean.zero_()
                bn.running_var.fill_(1.0 - bn.eps)
            elif conv.bias is not None:
                conv.bias.copy_(torch.from_numpy(b))
        for node, lin in zip(gemms, linears):
            w, b = tensors[node.input[1]], tensors[node.input[2]]
            trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
            w = w if trans_b else w.T
            if tuple(w.shape) != tuple(lin.weight.shape):
                raise OnnxImportError(f"{path}: dense layer {node.name} has shape {w.shape}, network expects "
                                      f"{tuple(lin.weight.shape)}")
            lin.weight.copy_(torch.from_numpy(np.ascontiguousarray(w)))
            lin.bias.copy_(torch.from_numpy(b))
        n_field = 3 * net.config.n_corrective if adds_field else 0
        for name in ("out_mean", "out_std", "camera"):
            target = getattr(net, name)
            if name != "camera" and n_field:   # the field's statistics are the network's own
                target = target[: target.shape[0] - n_field]
            if name not in tensors or tensors[name].shape != tuple(target.shape):
                raise OnnxImportError(f"{path}: buffer {name} missing or of the wrong size")
            target.copy_(torch.from_numpy(tensors[name]))
    log.info("loaded %s into the network (%d convolutions, batch norms folded)", path, len(convs))
    return net


def network_from_onnx(path: Path | str, base: NetworkConfig | None = None) -> FaceRegressor:
    """A fresh network of the model's configuration holding its weights (eval mode)."""
    cfg = network_config_from_onnx(path, base)
    return load_onnx_weights(build_network(cfg), path).eval()


def freeze_batchnorm(net: nn.Module) -> None:
    """Put every batch norm in eval mode (running statistics used, not updated)."""
    for m in net.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()


__all__ = ["OnnxImportError", "load_onnx_weights", "network_from_onnx", "network_config_from_onnx",
           "freeze_batchnorm", "onnx_metadata"]
