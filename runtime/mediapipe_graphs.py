"""MediaPipe's face graphs built here: the inference on a thread count we choose, FaceMesh on a region we give.

Why (issue 34, ``docs/performance.md``): the legacy ``face_detection`` / ``face_mesh`` solutions leave
XNNPACK's thread count at its default, which on 2 cores is slower than one thread (full-range detector on the
bench photo: 6.4 ms; 5.3 on one thread, 3.7 on two), and FaceMesh's static-image graph runs its own short-range
detector before the landmark model on every call (5.2 ms, of which the landmark model on a given region is 2.5).
For the second pass, on the canonical crop, the photo path already knows where the face is: the first pass's
468 points. :class:`FaceLandmarksOnRegion` places FaceMesh's landmark model there with MediaPipe's own
calculators — a ``Detection`` through ``FaceDetectionFrontDetectionToRoi`` (its box scaled 1.5×, square, turned
so the two keypoints lie level) — which is FaceMesh's own video-mode placement: the box of the previous frame's
points with points 33 and 263 as the eyes (``FaceLandmarkLandmarksToRoi``, the same 1.5× square turned level;
checked against the installed graph in ``tests/test_mediapipe_graphs.py``). The first pass keeps FaceMesh's own
detector (:class:`FaceMeshStatic`): placed on the full-range detector's box and eyes instead, Helen's NME rose
from 2.807 / 2.194 to 2.936 / 2.328 % (docs/performance.md).

Only MediaPipe's compiled bindings and protobuf messages are imported (as :mod:`.mediapipe_solutions`), and
only when a graph is first made.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import numpy as np

# FaceMesh's points standing for the eyes' outer corners, the rotation keypoints of MediaPipe's own
# landmarks-to-region step (face_landmark_landmarks_to_roi: rotation_vector_start/end_keypoint_index).
MESH_EYE_CORNERS = (33, 263)
# Landmark model's face-presence threshold (FaceMesh's min_tracking_confidence default, its ThresholdingCalculator).
MIN_PRESENCE = 0.5

_LANDMARKS_ON_REGION = """
input_stream: "IMAGE:image"
input_stream: "DETECTION:detection"
output_stream: "LANDMARKS:landmarks"
node { calculator: "ImagePropertiesCalculator" input_stream: "IMAGE:image" output_stream: "SIZE:image_size" }
node { calculator: "FaceDetectionFrontDetectionToRoi" input_stream: "DETECTION:detection"
       input_stream: "IMAGE_SIZE:image_size" output_stream: "ROI:roi" }
node { calculator: "FaceLandmarkCpu" input_stream: "IMAGE:image" input_stream: "ROI:roi"
       input_side_packet: "WITH_ATTENTION:with_attention" output_stream: "LANDMARKS:landmarks" }
"""


@lru_cache(maxsize=1)
def _modules() -> dict[str, Any]:
    """MediaPipe's pieces, imported on first use (ImportError without MediaPipe)."""
    from .mediapipe_solutions import legacy_face_solutions

    face_detection, face_mesh = legacy_face_solutions()   # the packages set up without their __init__ files
    from google.protobuf import text_format
    from mediapipe.calculators.tensor import inference_calculator_pb2
    from mediapipe.calculators.util import thresholding_calculator_pb2
    from mediapipe.framework import calculator_pb2
    from mediapipe.framework.formats import detection_pb2
    from mediapipe.modules.face_detection import face_detection_pb2
    from mediapipe.python import solution_base
    from mediapipe.python._framework_bindings import validated_graph_config

    return {"face_detection": face_detection, "face_mesh": face_mesh, "text_format": text_format, "inference": inference_calculator_pb2,
            "thresholding": thresholding_calculator_pb2, "calculator": calculator_pb2, "detection": detection_pb2,
            "face_detection_options": face_detection_pb2, "solution_base": solution_base,
            "validated": validated_graph_config}


def _package_root(mp: dict[str, Any]) -> str:
    """The folder holding the ``mediapipe`` package (graph and model paths are relative to it)."""
    return os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(mp["solution_base"].__file__))))


def expanded_graph(config: Any) -> Any:
    """``config`` (a CalculatorGraphConfig) with its subgraphs expanded and graph options applied, as
    MediaPipe would run it: every node, the inference calculators included, is then at the top level."""
    mp = _modules()
    mp["solution_base"].resource_util.set_resource_dir(_package_root(mp))
    validated = mp["validated"].ValidatedGraphConfig()
    validated.initialize(graph_config=config)
    out = mp["calculator"].CalculatorGraphConfig()
    out.ParseFromString(validated.binary_config)
    return out


def _node_options(node: Any, options_type: Any) -> Any:
    """A copy of the node's ``options_type`` options, from its proto3 ``node_options`` or proto2 ``options``."""
    out = options_type()
    for packed in node.node_options:
        if packed.type_url.split("/")[-1] == options_type.DESCRIPTOR.full_name:
            packed.Unpack(out)
            return out
    if node.HasField("options") and node.options.HasExtension(options_type.ext):
        out.CopyFrom(node.options.Extensions[options_type.ext])
    return out


def _edit_options(config: Any, calculator: str, options_type: Any, edit: Callable[[Any], None]) -> int:
    """Apply ``edit`` to the ``options_type`` options of every node of an expanded ``config`` whose calculator
    name starts with ``calculator``, written back as the node's only ``options_type`` entry (proto3
    ``node_options``). Returns how many nodes were edited."""
    name = options_type.DESCRIPTOR.full_name
    count = 0
    for node in config.node:
        if node.calculator.startswith(calculator):
            options = _node_options(node, options_type)
            edit(options)
            kept = [p for p in node.node_options if p.type_url.split("/")[-1] != name]
            del node.node_options[:]
            node.node_options.extend(kept)
            node.node_options.add().Pack(options)
            if node.HasField("options") and node.options.HasExtension(options_type.ext):
                node.options.ClearExtension(options_type.ext)
            count += 1
    return count


def _set_fields(**fields: Any) -> Callable[[Any], None]:
    def edit(options: Any) -> None:
        for key, value in fields.items():
            setattr(options, key, value)
    return edit


def set_inference_threads(config: Any, threads: int) -> int:
    """Every TFLite inference of an expanded ``config`` on XNNPACK with ``threads`` threads; returns how many
    inference nodes there were."""
    def edit(options: Any) -> None:
        options.delegate.xnnpack.num_threads = int(threads)

    return _edit_options(config, "InferenceCalculator", _modules()["inference"].InferenceCalculatorOptions, edit)


@lru_cache(maxsize=1)
def _lean_graph_class() -> type:
    """``SolutionBase`` whose :meth:`run` returns the outputs by name: its ``process`` builds a new namedtuple
    type on every call (≈ 0.2 ms, three times a photo)."""
    solution_base = _modules()["solution_base"]
    image_types = (solution_base.PacketDataType.IMAGE, solution_base.PacketDataType.IMAGE_FRAME)

    class LeanGraph(solution_base.SolutionBase):
        def run(self, inputs: dict[str, Any]) -> SimpleNamespace:
            self._graph_outputs.clear()
            self._simulated_timestamp += 33333       # as process(): a 30 fps clock
            for name, data in inputs.items():
                kind = self._input_stream_type_info[name]
                if kind in image_types and (np.ndim(data) != 3 or np.shape(data)[2] != 3):
                    raise ValueError(f"MediaPipe wants (H, W, 3) RGB images, got {np.shape(data)}")
                packet = self._make_packet(kind, data).at(self._simulated_timestamp)
                self._graph.add_packet_to_input_stream(stream=name, packet=packet)
            self._graph.wait_until_idle()
            return SimpleNamespace(**{
                name: self._get_packet_content(kind, self._graph_outputs[name]) if name in self._graph_outputs
                else None for name, kind in self._output_stream_type_info.items()})

    return LeanGraph


def _start(config: Any, outputs: list[str], side_inputs: dict[str, Any] | None = None,
           stream_type_hints: dict[str, Any] | None = None) -> Any:
    return _lean_graph_class()(graph_config=config, side_inputs=side_inputs or {}, outputs=outputs,
                               stream_type_hints=stream_type_hints)


def landmarks_array(landmarks: Any, width: float, height: float) -> np.ndarray:
    """A ``NormalizedLandmarkList`` → (N, 3) float32 pixels (z in pixel-width units, as FaceMesh's).

    Read from the protobuf wire bytes when every landmark has the same record (x, y, z present, fields in number
    order: what MediaPipe writes) — 20 µs instead of 0.2 ms of attribute look-ups; otherwise field by field."""
    count = len(landmarks.landmark)
    raw = landmarks.SerializeToString()
    if count and len(raw) % count == 0 and 17 <= len(raw) // count < 130:
        rec = np.frombuffer(raw, np.uint8).reshape(count, -1)
        if ((rec[:, 0] == 0x0A) & (rec[:, 1] == rec.shape[1] - 2) & (rec[:, 2] == 0x0D) & (rec[:, 7] == 0x15)
                & (rec[:, 12] == 0x1D)).all():
            xyz = np.ascontiguousarray(rec[:, [3, 4, 5, 6, 8, 9, 10, 11, 13, 14, 15, 16]]).view("<f4")
            return (xyz.astype(np.float64) * [width, height, width]).astype(np.float32)   # as the loop rounds
    return np.array([(p.x * width, p.y * height, p.z * width) for p in landmarks.landmark], np.float32)


def _installed_graph(path: str) -> Any:
    """A graph that ships with MediaPipe (``path`` relative to its package folder), not yet expanded."""
    mp = _modules()
    config = mp["calculator"].CalculatorGraphConfig()
    with open(os.path.join(_package_root(mp), path), "rb") as f:
        config.ParseFromString(f.read())
    return config


class FaceDetector:
    """MediaPipe's face detector (``face_detection`` solution's graph: full-range or short-range model) with
    its inference on ``threads`` XNNPACK threads. ``process(image).detections`` as the solution's."""

    def __init__(self, full_range: bool, min_score: float, threads: int) -> None:
        mp = _modules()
        fd = mp["face_detection"]
        config = _installed_graph(fd._FULL_RANGE_GRAPH_FILE_PATH if full_range else fd._SHORT_RANGE_GRAPH_FILE_PATH)
        options = mp["face_detection_options"].FaceDetectionOptions(min_score_thresh=float(min_score))
        config.graph_options.add().Pack(options)
        config = expanded_graph(config)
        if not set_inference_threads(config, threads):
            raise RuntimeError("MediaPipe's face detection graph has no inference node")  # pragma: no cover
        self._graph = _start(config, ["detections"])

    def process(self, image: np.ndarray) -> Any:
        return self._graph.run({"image": image})

    def close(self) -> None:
        self._graph.close()


class FaceMeshStatic:
    """The ``face_mesh`` solution's graph in static-image mode (its short-range detector, then the landmark model
    on each face found; no attention) with the inference on ``threads`` XNNPACK threads.
    ``process(image).multi_face_landmarks`` as the solution's."""

    def __init__(self, max_faces: int, min_detection: float, threads: int,
                 min_presence: float = MIN_PRESENCE) -> None:
        mp = _modules()
        from mediapipe.calculators.tensor import tensors_to_detections_calculator_pb2 as detections_pb2

        config = expanded_graph(_installed_graph(mp["face_mesh"]._BINARYPB_FILE_PATH))
        set_inference_threads(config, threads)
        if not _edit_options(config, "TensorsToDetectionsCalculator",
                             detections_pb2.TensorsToDetectionsCalculatorOptions,
                             _set_fields(min_score_thresh=float(min_detection))):
            raise RuntimeError("MediaPipe's face mesh graph has no detector")  # pragma: no cover
        _edit_options(config, "ThresholdingCalculator", mp["thresholding"].ThresholdingCalculatorOptions,
                      _set_fields(threshold=float(min_presence)))
        self._graph = _start(config, ["multi_face_landmarks"], {"num_faces": int(max_faces),
                                                                "with_attention": False,
                                                                "use_prev_landmarks": False})

    def process(self, image: np.ndarray) -> Any:
        return self._graph.run({"image": image})

    def close(self) -> None:
        self._graph.close()


@dataclass(frozen=True)
class Region:
    """Where FaceMesh's landmark model looks, given as MediaPipe's detections are: a box and two eye points,
    in pixels of the image it runs on. MediaPipe makes the model's region from them: the box scaled 1.5×,
    square on its long side, turned so ``eyes[0]`` → ``eyes[1]`` is level."""

    box: tuple[float, float, float, float]                    # x0, y0, x1, y1
    eyes: tuple[tuple[float, float], tuple[float, float]]

    @classmethod
    def from_mesh(cls, points: np.ndarray) -> "Region":
        """FaceMesh's video-mode region for the next frame: the box of its (468, ≥2) points and its eye
        corners (:data:`MESH_EYE_CORNERS`)."""
        xy = np.asarray(points, np.float64)[:, :2]
        lo, hi = xy.min(0), xy.max(0)
        a, b = MESH_EYE_CORNERS
        return cls((float(lo[0]), float(lo[1]), float(hi[0]), float(hi[1])),
                   ((float(xy[a, 0]), float(xy[a, 1])), (float(xy[b, 0]), float(xy[b, 1]))))

    def moved(self, offset: tuple[float, float], scale: float) -> "Region":
        """This region in another image's pixels: ``(p − offset) · scale``."""
        ox, oy = offset

        def f(x: float, y: float) -> tuple[float, float]:
            return ((x - ox) * scale, (y - oy) * scale)

        (x0, y0), (x1, y1) = f(*self.box[:2]), f(*self.box[2:])
        return Region((x0, y0, x1, y1), (f(*self.eyes[0]), f(*self.eyes[1])))


class FaceLandmarksOnRegion:
    """FaceMesh's landmark model (468 points, no attention) on a given :class:`Region`, its detector skipped."""

    def __init__(self, threads: int, min_presence: float = MIN_PRESENCE) -> None:
        mp = _modules()
        config = mp["text_format"].Parse(_LANDMARKS_ON_REGION, mp["calculator"].CalculatorGraphConfig())
        config = expanded_graph(config)
        set_inference_threads(config, threads)
        _edit_options(config, "ThresholdingCalculator", mp["thresholding"].ThresholdingCalculatorOptions,
                      _set_fields(threshold=float(min_presence)))
        proto = mp["solution_base"].PacketDataType.PROTO
        self._detection_type = mp["detection"].Detection
        self._graph = _start(config, ["landmarks"], {"with_attention": False}, {"detection": proto})

    def _detection(self, region: Region, width: int, height: int) -> Any:
        x0, y0, x1, y1 = region.box
        det = self._detection_type()
        loc = det.location_data
        loc.format = loc.RELATIVE_BOUNDING_BOX
        rb = loc.relative_bounding_box
        rb.xmin, rb.ymin, rb.width, rb.height = x0 / width, y0 / height, (x1 - x0) / width, (y1 - y0) / height
        for x, y in region.eyes:
            kp = loc.relative_keypoints.add()
            kp.x, kp.y = x / width, y / height
        return det

    def process(self, image: np.ndarray, region: Region) -> np.ndarray | None:
        """(468, 3) points in ``image`` pixels (z in pixel-width units, as FaceMesh's), or None when the model
        says there is no face in the region."""
        h, w = image.shape[:2]
        out = self._graph.run({"image": image, "detection": self._detection(region, w, h)}).landmarks
        return None if out is None else landmarks_array(out, w, h)[:468]

    def close(self) -> None:
        self._graph.close()


__all__ = ["FaceDetector", "FaceLandmarksOnRegion", "FaceMeshStatic", "MESH_EYE_CORNERS", "MIN_PRESENCE", "Region",
           "expanded_graph", "landmarks_array", "set_inference_threads"]
