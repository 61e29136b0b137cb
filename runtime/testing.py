"""Stand-in regressors for plumbing tests and development before the trained model exists.

:func:`build_constant_regressor` writes a real ONNX file that follows the contract exactly
(input ``image`` (N, 3, S, S), output ``params`` (N, P), the ``facerig.*`` metadata) and
predicts one plausible face for every crop: mean identity, a mild expression, frontal, placed
in the crop the way the training corpus places faces (``facemodel.priors.place_in_crop``).
It exercises every stage of the pipeline without saying anything about accuracy. Needs the
``onnx`` package (a development dependency; never imported by the add-on at run time).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .fm import facemodel

MILD_EXPRESSION = {"jawOpen": 0.25, "mouthSmile_L": 0.4, "mouthSmile_R": 0.35, "eyeBlink_L": 0.1,
                   "eyeBlink_R": 0.1, "browInnerUp_L": 0.2, "browInnerUp_R": 0.2}


def plausible_params(model: "facemodel.FaceModel", n_identity: int = 40,
                     rotation: tuple[float, float, float] = (0.0, 0.0, 0.0)) -> "facemodel.FaceParams":
    """One face in the crop camera (``DEFAULT_CAMERA``) as the regressor would output it."""
    from importlib import import_module

    priors = import_module(facemodel.__name__ + ".priors")
    p = facemodel.FaceParams.neutral(n_identity=n_identity)
    for name, value in MILD_EXPRESSION.items():
        if name in model.expression_names:
            p.expression[model.expression_names.index(name)] = value
    p.rotation = np.asarray(rotation, np.float32)
    lm_arrays = model.arrays.subset(model.landmark_indices())
    p.translation = priors.place_in_crop(lm_arrays, p)
    return p


def regressor_metadata(n_identity: int, input_size: int, card: dict | None = None,
                       n_corrective: int = 0) -> dict[str, str]:
    return {**facemodel.ParamLayout(n_identity, n_corrective=n_corrective).metadata(),
            "facerig.input_size": str(input_size), "facerig.crop_scale": str(facemodel.crop.CROP_SCALE),
            "facerig.crop_center_up": str(facemodel.crop.CROP_CENTER_UP),
            "facerig.model_card": json.dumps(card or {"name": "constant stand-in", "version": "0.0-constant",
                                                      "trained_on": "nothing: plumbing tests only"})}


def build_constant_regressor(path: str | Path, params: "facemodel.FaceParams", input_size: int = 128) -> Path:
    """Write an ONNX model that outputs ``params.to_vector()`` for every input crop."""
    import onnx
    from onnx import TensorProto, helper

    vec = np.asarray(params.to_vector(), np.float32).reshape(1, -1)
    p = vec.shape[1]
    nodes = [
        helper.make_node("ReduceMean", ["image"], ["mean"], axes=[1, 2, 3], keepdims=0),   # (N,)
        helper.make_node("Unsqueeze", ["mean", "axis1"], ["mean_n1"]),                    # (N, 1)
        helper.make_node("Mul", ["mean_n1", "zeros"], ["zero_np"]),                       # (N, P)
        helper.make_node("Add", ["zero_np", "vector"], ["params"]),
    ]
    inits = [helper.make_tensor("axis1", TensorProto.INT64, [1], [1]),
             helper.make_tensor("zeros", TensorProto.FLOAT, [1, p], np.zeros(p, np.float32).tolist()),
             helper.make_tensor("vector", TensorProto.FLOAT, [1, p], vec.reshape(-1).tolist())]
    graph = helper.make_graph(
        nodes, "facerig_constant_regressor",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, input_size, input_size])],
        [helper.make_tensor_value_info("params", TensorProto.FLOAT, ["N", p])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], producer_name="facerig.testing")
    model.ir_version = 8
    for k, v in regressor_metadata(params.n_identity, input_size, n_corrective=params.n_corrective).items():
        model.metadata_props.add(key=k, value=v)
    onnx.checker.check_model(model)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path
