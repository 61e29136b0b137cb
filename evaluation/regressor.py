"""The ONNX regressor as the harness runs it: the runtime's :class:`runtime.regressor.Regressor`, the one
users run, so the harness's numbers are the shipped pipeline's.

The contract (DEVELOPERS.md "ONNX regressor"): input ``image`` float32 (N, 3, S, S) RGB in [0, 1];
output ``params`` float32 (N, P), the flat ``FaceParams`` vector; metadata ``facerig.*``.
"""

from __future__ import annotations

from pathlib import Path

from runtime.regressor import DEFAULT_MODEL_PATH, Regressor


def default_onnx_path() -> Path:
    """The shipped regressor (``blender_addon/models``), whatever ``$FACERIG_REGRESSOR`` says: reports name it."""
    return DEFAULT_MODEL_PATH


def load_regressor(onnx_path: Path | str, threads: int = 1) -> Regressor:
    """The runtime's regressor on ``threads`` onnxruntime threads; a missing file is a one-line error."""
    if not Path(onnx_path).is_file():
        raise FileNotFoundError(f"regressor model {onnx_path} does not exist; train and export one or pass --model")
    return Regressor(onnx_path, threads=threads)
