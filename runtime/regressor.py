"""The ONNX face regressor: canonical crops → :class:`facemodel.FaceParams` (crop camera).

Contract (DEVELOPERS.md "ONNX regressor"): input ``image`` float32 (N, 3, S, S), RGB in [0, 1]
as stored in the file (sRGB); output ``params`` float32 (N, P), the flat ``FaceParams``
vector with the camera group = ``DEFAULT_CAMERA``. Metadata props ``facerig.*`` describe the
layout and crop; this class checks them against what the add-on was built for, so a model
trained with another crop or layout fails loudly instead of producing a wrong face.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from .fm import MODELS_DIR, facemodel

log = logging.getLogger(__name__)

MODEL_FILENAME = "facerig_regressor.onnx"
DEFAULT_MODEL_PATH = MODELS_DIR / MODEL_FILENAME
ENV_VAR = "FACERIG_REGRESSOR"
INPUT_NAME = "image"
OUTPUT_NAME = "params"


class RegressorError(ValueError):
    """The ONNX file is missing, unreadable or does not follow the facerig contract."""


def resolve_model_file(path: str | Path | None, env_var: str, default: Path, what: str, hint: str = "") -> Path:
    """Explicit path, then ``$<env_var>``, then ``default`` (shipped in the add-on); a missing file
    names where the path came from, so a stale environment variable is easy to spot."""
    if path:
        candidate, source = Path(path).expanduser(), "argument"
    elif os.environ.get(env_var):
        candidate, source = Path(os.environ[env_var]).expanduser(), f"${env_var}"
    else:
        candidate, source = default, "the add-on's models/ folder"
    if not candidate.is_file():
        raise FileNotFoundError(f"{what} not found at {candidate} (from {source}){hint}")
    return candidate.resolve()


def resolve_regressor_path(path: str | Path | None = None) -> Path:
    """Explicit path, then ``$FACERIG_REGRESSOR``, then the model shipped in the add-on."""
    return resolve_model_file(path, ENV_VAR, DEFAULT_MODEL_PATH, "regressor model",
                              "; pass --model PATH or set the add-on's model preference")


class Regressor:
    """onnxruntime session around a facerig regressor; thread-safe ``predict``."""

    def __init__(self, onnx_path: str | Path | None = None, threads: int | None = None) -> None:
        self.path = resolve_regressor_path(onnx_path)
        self.session, self.metadata, image, params = open_contract(self.path, threads, RegressorError, OUTPUT_NAME)
        self.input_size = self._input_size(image.shape)
        self.layout = self._layout(params.shape)
        self._check_crop()
        self.model_version = self._version()
        self.refine_max_disagreement = self._refine_gate()
        log.info("regressor %s: input %d², %d identity modes, %d corrective harmonics, version %s", self.path.name,
                 self.input_size, self.layout.n_identity, self.layout.n_corrective, self.model_version)

    # -- contract checks ----------------------------------------------------------------------
    def _input_size(self, shape: list[Any]) -> int:
        return declared_input_size(self.metadata, shape, RegressorError)

    def _layout(self, shape: list[Any]) -> "facemodel.ParamLayout":
        """The declared layout (``facerig.layout_version``/``n_identity``/``n_corrective``; a model from
        before the corrective field predicts none), checked against a static output size."""
        try:
            return facemodel.ParamLayout.from_metadata(self.metadata,
                                                       int(shape[-1]) if isinstance(shape[-1], int) else None)
        except facemodel.LayoutError as exc:
            raise RegressorError(f"{self.path.name}: {exc}") from None

    def _check_crop(self) -> None:
        for key, expected in (("facerig.crop_scale", facemodel.crop.CROP_SCALE),
                              ("facerig.crop_center_up", facemodel.crop.CROP_CENTER_UP)):
            if key in self.metadata and abs(float(self.metadata[key]) - expected) > 1e-6:
                raise RegressorError(f"{self.path.name} was trained with {key}={self.metadata[key]}, "
                                     f"this facerig crops with {expected}")

    def _refine_gate(self) -> float:
        """How far (fraction of the face size) detected landmarks may lie from this model's and
        still be fitted (``facerig.refine_max_disagreement``; default 8 %)."""
        try:
            return facemodel.landmark_fit.refine_gate(self.metadata)
        except ValueError as exc:
            raise RegressorError(f"{self.path.name}: {exc}") from None

    def _version(self) -> str:
        return model_version(self.path, self.metadata)

    # -- inference -------------------------------------------------------------------------------
    def predict_vectors(self, crops: np.ndarray) -> np.ndarray:
        """uint8 (N, S, S, 3) RGB crops (or one (S, S, 3)) → float32 (N, P) flat parameter vectors
        (:attr:`layout`), checked: the right shape, finite."""
        x = network_input(crops, self.input_size)
        (out,) = self.session.run([OUTPUT_NAME], {INPUT_NAME: x})
        out = np.asarray(out, np.float32)
        if out.shape != (len(x), self.layout.size):
            raise RegressorError(f"model returned {out.shape}, expected {(len(x), self.layout.size)}")
        if not np.isfinite(out).all():   # a damaged file runs and returns NaN/Inf: never pass them on
            raise RegressorError(f"{self.path.name} returned non-finite values (NaN or infinity): the model file "
                                 "is damaged or not a working facerig regressor")
        return out

    def predict(self, crops: np.ndarray) -> "facemodel.FaceParams":
        """uint8 (N, S, S, 3) RGB crops (or one (S, S, 3)) → batched FaceParams in the crop camera."""
        params = facemodel.FaceParams.from_vector(self.predict_vectors(crops), self.layout)
        return params[0] if np.ndim(crops) == 3 else params

    def describe(self) -> dict[str, Any]:
        return {"path": str(self.path), "version": self.model_version, "input_size": self.input_size,
                "n_identity": self.layout.n_identity, "n_corrective": self.layout.n_corrective,
                "metadata": self.metadata}


# -- shared by every facerig ONNX model (regressor, C-Net) and every caller (add-on, CLI, evaluation, learner) --
def open_session(path: Path, threads: int | None, error: type[Exception]) -> Any:
    """A CPU onnxruntime session; an unloadable file raises ``error`` with a one-line reason."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or min(4, os.cpu_count() or 1)
    options.log_severity_level = 3
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own exception types
        raise error(f"{path.name} is not a loadable ONNX model: {exc}") from None


def open_contract(path: Path, threads: int | None, error: type[Exception], output_name: str
                  ) -> tuple[Any, dict[str, str], Any, Any]:
    """(session, metadata, ``image`` input, ``output_name`` output) of a facerig ONNX file; a file
    without those names raises ``error`` naming what it has instead."""
    session = open_session(path, threads, error)
    metadata = dict(session.get_modelmeta().custom_metadata_map)
    check_digest(path, metadata, error)
    inputs = {i.name: i for i in session.get_inputs()}
    outputs = {o.name: o for o in session.get_outputs()}
    if INPUT_NAME not in inputs or output_name not in outputs:
        raise error(f"{path.name} must have input {INPUT_NAME!r} and output {output_name!r}; "
                    f"has {list(inputs)} → {list(outputs)}")
    return session, metadata, inputs[INPUT_NAME], outputs[output_name]


def check_digest(path: Path, metadata: dict[str, str], error: type[Exception]) -> None:
    """A model that records its own sha256 (``facerig.sha256``, written at export) must still match it:
    a flipped byte in the weights would otherwise give a silently wrong face."""
    digest = facemodel.file_digest
    recorded = metadata.get(digest.DIGEST_KEY)
    if recorded and not digest.matches(path, recorded):
        raise error(f"{path.name} is damaged: its content no longer matches the sha256 recorded when it was "
                    "exported; download or export it again")


def declared_input_size(metadata: dict[str, str], shape: list[Any], error: type[Exception]) -> int:
    """S of an (N, 3, S, S) ``image`` input: metadata ``facerig.input_size``, else the static shape."""
    meta = metadata.get("facerig.input_size")
    static = [d for d in shape[2:] if isinstance(d, int)]
    if meta is not None:
        size = int(meta)
    elif static:
        size = int(static[0])
    else:
        raise error("the model declares no input size (metadata facerig.input_size)")
    if static and any(d != size for d in static):
        raise error(f"input shape {shape} disagrees with facerig.input_size={size}")
    if len(shape) != 4 or (isinstance(shape[1], int) and shape[1] != 3):
        raise error(f"input {INPUT_NAME!r} must be (N, 3, S, S), is {shape}")
    return size


def model_version(path: Path, metadata: dict[str, str]) -> str:
    """``<card version>+<sha256[:12]>`` (JSON model card with a version), else the file digest."""
    card = metadata.get("facerig.model_card", "")
    try:
        card_version = json.loads(card).get("version") if card.strip().startswith("{") else None
    except json.JSONDecodeError:
        card_version = None
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:12]
    return f"{card_version}+{digest}" if card_version else digest


def run_onnx(path: Path | str, inputs: np.ndarray, output: str = OUTPUT_NAME, threads: int = 1) -> np.ndarray:
    """One output of a facerig ONNX file for float32 network inputs (N, 3, S, S) as they are (already
    :func:`network_input`): the learner's export check (torch against onnxruntime) and its tests. Crops go
    through :class:`Regressor` instead, which checks the file's contract."""
    session = open_session(Path(path), threads, RegressorError)
    return session.run([output], {INPUT_NAME: np.ascontiguousarray(inputs, np.float32)})[0]


def network_input(crops: np.ndarray, size: int) -> np.ndarray:
    """uint8 (N, S, S, 3) RGB crops (or one (S, S, 3); floats taken as [0, 1]) → float32 (N, 3, S, S):
    the one preprocessing every facerig network sees."""
    arr = np.asarray(crops)
    if arr.ndim == 3:
        arr = arr[None]
    if arr.ndim != 4 or arr.shape[1:] != (size, size, 3):
        raise ValueError(f"crops must be (N, {size}, {size}, 3) RGB, got {arr.shape}")
    if arr.dtype == np.uint8:
        x = arr.astype(np.float32) * (1.0 / 255.0)
    else:
        x = np.clip(arr.astype(np.float32), 0.0, 1.0)
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))
