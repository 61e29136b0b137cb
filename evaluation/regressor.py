"""The ONNX regressor as the harness runs it: the add-on's ``Regressor`` if present, else a twin.

The contract (DEVELOPERS.md "ONNX regressor"): input ``image`` float32 (N, 3, S, S) RGB in [0, 1];
output ``params`` float32 (N, P), the flat ``FaceParams`` vector; metadata ``facerig.input_size``
and ``facerig.n_identity``. ``runtime.regressor.Regressor(onnx_path).predict(crops)`` is
the shipped runner; until it exists, :class:`OnnxRegressor` implements the same call so the
harness's numbers keep their meaning when the add-on lands.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from facemodel import FaceParams, ParamLayout
from facemodel.landmark_fit import refine_gate

log = logging.getLogger(__name__)

DEFAULT_ONNX = Path(__file__).resolve().parents[1] / "blender_addon" / "models" / "facerig_regressor.onnx"


def default_onnx_path() -> Path:
    return DEFAULT_ONNX


def _to_nchw(crops: np.ndarray) -> np.ndarray:
    """uint8 (N, S, S, 3) or float (N, 3, S, S) → float32 (N, 3, S, S) in [0, 1]."""
    x = np.asarray(crops)
    if x.ndim == 3:
        x = x[None]
    if x.shape[-1] == 3 and x.shape[1] != 3:
        x = np.transpose(x, (0, 3, 1, 2))
    if x.dtype == np.uint8:
        return np.ascontiguousarray(x, np.float32) / 255.0
    return np.ascontiguousarray(x, np.float32)


@dataclass
class OnnxRegressor:
    """onnxruntime session around a facerig regressor export."""

    onnx_path: Path
    threads: int = 1

    def __post_init__(self) -> None:
        import onnxruntime as ort

        self.onnx_path = Path(self.onnx_path)
        if not self.onnx_path.is_file():
            raise FileNotFoundError(f"regressor model {self.onnx_path} does not exist; train and export one "
                                    "(`facerig train`) or pass --model")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = self.threads
        opts.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(self.onnx_path), opts, providers=["CPUExecutionProvider"])
        meta = self.session.get_modelmeta().custom_metadata_map
        self.metadata: dict[str, str] = dict(meta)
        from runtime.regressor import RegressorError, check_digest

        check_digest(self.onnx_path, self.metadata, RegressorError)   # a damaged export measured as a bad model
        self.input_size = int(meta.get("facerig.input_size", 128))
        self.layout = ParamLayout.from_metadata({"facerig.n_identity": "100", **self.metadata})
        self.input_name = self.session.get_inputs()[0].name
        self.refine_max_disagreement = refine_gate(self.metadata)   # as the add-on's Regressor

    def predict_vectors(self, crops: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: _to_nchw(crops)})[0]

    def predict(self, crops: np.ndarray) -> FaceParams:
        return FaceParams.from_vector(self.predict_vectors(crops), self.layout)


def load_regressor(onnx_path: Path | str, threads: int = 1) -> Any:
    """The add-on's ``Regressor`` when available (what users run), otherwise :class:`OnnxRegressor`."""
    try:
        from runtime.regressor import Regressor  # type: ignore[import-not-found]
    except ImportError:
        log.debug("runtime.regressor not available; using evaluation.regressor.OnnxRegressor")
        return OnnxRegressor(Path(onnx_path), threads)
    if not Path(onnx_path).is_file():
        raise FileNotFoundError(f"regressor model {onnx_path} does not exist; train and export one or pass --model")
    return Regressor(onnx_path, threads=threads)


def regressor_input_size(regressor: Any) -> int:
    for attr in ("input_size", "size", "image_size"):
        if hasattr(regressor, attr):
            return int(getattr(regressor, attr))
    return 128
