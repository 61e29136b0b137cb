"""ONNX export per the DEVELOPERS.md contract: input ``image`` (N, 3, S, S) RGB in [0, 1],
output ``params`` (N, P) flat ``FaceParams`` vector, dynamic batch, ``facerig.*`` metadata."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from facemodel import LICENSE, ParamLayout, file_digest
from facemodel.crop import CROP_CENTER_UP, CROP_SCALE
from facemodel.outputs import atomic_output
from runtime.regressor import run_onnx

from .checkpoint import load_network
from .config import Config

log = logging.getLogger(__name__)
OPSET = 17


def _identity_share(n_identity: int) -> str:
    """'98.8 %' of face-region vertex variance carried by the first modes (needs the face model)."""
    from facemodel import FaceModel, FaceModelError
    from facemodel.metrics import identity_mode_report

    try:
        row = identity_mode_report(FaceModel.load(), (n_identity,))[0]
    except FaceModelError:
        return "?"
    return f"{100 * row['cum_var']:.1f} %"


def model_card(state: dict[str, Any]) -> str:
    """Plain-text model card: what it predicts, how it was trained, what it scored, on what data."""
    cfg = Config.from_dict(state["config"])
    m = state.get("metrics") or {}
    data = state.get("data") or {}

    def metric(name: str) -> str:
        keys = [f"val/{name}", f"val/{name}@0-30", f"val/{name}@30-60", f"val/{name}@60-90",
                f"val/{name}@balanced"]
        vals = [m.get(k) for k in keys]
        if any(v is None for v in vals):
            return f"{name}: n/a"
        return f"{name}: all {vals[0]:.3g} | |yaw| 0-30 {vals[1]:.3g}, 30-60 {vals[2]:.3g}, 60-90 {vals[3]:.3g} | " \
               f"balanced {vals[4]:.3g}"

    sources = "\n".join(f"  - {s.get('path')} ({s.get('count')} images)" for s in data.get("sources", []))
    from_photos = [s for s in data.get("sources", []) if s.get("kind") == "photo_landmarks"
                   or (s.get("manifest") or {}).get("generator", {}).get("views")]
    lines = [
        f"facerig face regressor (MobileNetV3-small-like, width {cfg.network.width}, plain torch)",
        f"Input: image float32 (N, 3, {cfg.network.input_size}, {cfg.network.input_size}), sRGB in [0, 1], "
        f"the canonical crop (scale {CROP_SCALE}, centre up {CROP_CENTER_UP}).",
        f"Output: params float32 (N, {ParamLayout.from_dict(state['layout']).size}), FaceParams layout "
        f"v{state['layout']['layout_version']} with {cfg.network.n_identity} identity modes (first of 100; "
        f"they carry {_identity_share(cfg.network.n_identity)} of the face-region vertex variance)"
        + (f" and the corrective field in {cfg.network.n_corrective} manifold harmonics per axis"
           if cfg.network.n_corrective else "") + "; camera = DEFAULT_CAMERA.",
        f"Training: {state['step']} steps, batch {cfg.train.batch_size}, AdamW lr {cfg.train.lr}, "
        f"losses {json.dumps({k: v for k, v in vars(cfg.loss).items() if isinstance(v, float) and v})}.",
        f"Training data: {data.get('n_train', '?')} train / {data.get('n_val', '?')} held-out images from",
        sources or "  - (unknown)",
        ("Data provenance: synthetic renders of the ICT-FaceKit model AND photographs: "
         + ", ".join(str(s.get("path")) for s in from_photos)
         + " (photo crops with detector landmarks, or renders textured with photos). Check the licences of those "
           "photo sets (UTKFace and CelebA: non-commercial research only) before any commercial use."
         if from_photos else
         "Data provenance: synthetic renders of the ICT-FaceKit model only; no photographs."),
        f"Held-out validation split of the training data (step {state['step']}):",
        "  " + metric("vertex_mm_camera") + " mm (camera space)",
        "  " + metric("vertex_mm_aligned") + " mm (after rigid Procrustes)",
        "  " + metric("nme_bbox_68") + " % (NME bbox, 68 points)",
        "  " + metric("rotation_deg") + " deg",
        "  " + metric("expression_mae"),
        ("Limitations: one face per crop; validation includes the photo-derived views."
         if from_photos else "Limitations: trained on synthetic faces only; expect a domain gap on photographs. "
                             "One face per crop."),
        f"Face model: {LICENSE}.",
    ]
    return "\n".join(lines)


def metadata(state: dict[str, Any]) -> dict[str, str]:
    cfg = Config.from_dict(state["config"])
    return {**ParamLayout.from_dict(state["layout"]).metadata(),
            "facerig.input_size": str(cfg.network.input_size),
            "facerig.keypoints": str(cfg.network.keypoints),
            "facerig.crop_scale": repr(CROP_SCALE),
            "facerig.crop_center_up": repr(CROP_CENTER_UP),
            "facerig.model_card": model_card(state)}


def write_onnx(module: torch.nn.Module, dummy: torch.Tensor, out: Path, output_name: str,
               meta: dict[str, str]) -> None:
    """Export ``module`` (input ``image``, one output, dynamic batch) with ``facerig.*`` metadata,
    checked, sealed with its own sha256 (``facemodel.file_digest``), written atomically."""
    import onnx

    with atomic_output(out) as tmp:
        with torch.no_grad():
            torch.onnx.export(module.eval(), (dummy,), str(tmp), input_names=["image"], output_names=[output_name],
                              dynamic_axes={"image": {0: "batch"}, output_name: {0: "batch"}},
                              opset_version=OPSET, do_constant_folding=True, dynamo=False)
        proto = onnx.load(str(tmp))
        for key, value in {**meta, file_digest.DIGEST_KEY: file_digest.PLACEHOLDER}.items():
            entry = proto.metadata_props.add()
            entry.key, entry.value = key, value
        proto.producer_name = "facerig"
        onnx.checker.check_model(proto)
        onnx.save(proto, str(tmp))
        file_digest.seal(tmp)


def export_onnx(checkpoint: Path | str, out: Path | str, verify: bool = True) -> dict[str, Any]:
    """Write the ONNX model; with ``verify`` compare onnxruntime with torch on a test batch."""
    net, state = load_network(checkpoint)
    net = net.to(memory_format=torch.contiguous_format)
    size = net.config.input_size
    out = Path(out)
    dummy = torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(0))
    write_onnx(net, dummy, out, "params", metadata(state))
    info: dict[str, Any] = {"path": str(out), "step": state["step"], "input_size": size,
                            "outputs": net.layout.size}
    if verify:
        with torch.no_grad():
            ref = net(dummy).numpy()
        info["max_abs_diff"] = float(np.abs(run_onnx(out, dummy.numpy()) - ref).max())
        if info["max_abs_diff"] > 1e-3:
            raise RuntimeError(f"ONNX output differs from torch by {info['max_abs_diff']:.3g}")
    log.info("exported %s (step %d)", out, state["step"])
    return info


