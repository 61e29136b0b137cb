"""Apple's 52 ARKit blendshape names, their relation to ICT-FaceKit's 53, and Live Link Face captures.

No bpy: the names and the CSV reader are shared by the mesh builder, the animation import, the
command line and the tests.

ICT-FaceKit's expressions are ARKit's with two differences:

* ``_L``/``_R`` instead of ``Left``/``Right`` (``eyeBlink_L`` ↔ ``eyeBlinkLeft``; the character's
  own left = +x in model space, as in ARKit);
* ``browInnerUp`` and ``cheekPuff`` are split into ``_L``/``_R`` halves, whose displacements add up
  to the whole shape (they overlap only near the midline, where their sum stays within 4 % of either
  half's largest motion), and there is no ``tongueOut``.

With ARKit names (the default) a head gets ARKit's keys in Live Link Face's column order: each split
pair becomes one key whose displacement is the sum of its halves and whose value is the halves' mean;
``tongueOut`` has no ICT shape and is left out (:data:`MISSING_IN_ICT`). :func:`key_set` gives the
keys of either naming as a matrix from the 53 ICT weights, so the network's output maps onto them.
"""

from __future__ import annotations

import csv
import functools
import io
import logging
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

# Live Link Face's CSV column order (PascalCase there, camelCase in ARKit; matched without case).
ARKIT_NAMES: tuple[str, ...] = (
    "eyeBlinkLeft", "eyeLookDownLeft", "eyeLookInLeft", "eyeLookOutLeft", "eyeLookUpLeft", "eyeSquintLeft",
    "eyeWideLeft", "eyeBlinkRight", "eyeLookDownRight", "eyeLookInRight", "eyeLookOutRight", "eyeLookUpRight",
    "eyeSquintRight", "eyeWideRight", "jawForward", "jawRight", "jawLeft", "jawOpen", "mouthClose",
    "mouthFunnel", "mouthPucker", "mouthRight", "mouthLeft", "mouthSmileLeft", "mouthSmileRight",
    "mouthFrownLeft", "mouthFrownRight", "mouthDimpleLeft", "mouthDimpleRight", "mouthStretchLeft",
    "mouthStretchRight", "mouthRollLower", "mouthRollUpper", "mouthShrugLower", "mouthShrugUpper",
    "mouthPressLeft", "mouthPressRight", "mouthLowerDownLeft", "mouthLowerDownRight", "mouthUpperUpLeft",
    "mouthUpperUpRight", "browDownLeft", "browDownRight", "browInnerUp", "browOuterUpLeft", "browOuterUpRight",
    "cheekPuff", "cheekSquintLeft", "cheekSquintRight", "noseSneerLeft", "noseSneerRight", "tongueOut",
)
MISSING_IN_ICT = ("tongueOut",)
# The 9 rotation columns Live Link Face writes after the 52 shapes.
ROTATION_COLUMNS = ("HeadYaw", "HeadPitch", "HeadRoll", "LeftEyeYaw", "LeftEyePitch", "LeftEyeRoll",
                    "RightEyeYaw", "RightEyePitch", "RightEyeRoll")
NAMINGS = ("arkit", "ict")
DEFAULT_CAPTURE_FPS = 60.0          # Live Link Face records at 60 fps unless set to 30
STANDARD_RATES = (24.0, 25.0, 30.0, 48.0, 50.0, 60.0, 120.0)


@functools.lru_cache(maxsize=None)
def ict_to_arkit(name: str) -> str:
    """``eyeBlink_L`` → ``eyeBlinkLeft``; ``browInnerUp_L`` → ``browInnerUp`` (split pairs share one name)."""
    base = re.sub(r"_([LR])$", lambda m: "Left" if m.group(1) == "L" else "Right", name)
    return base if base in ARKIT_NAMES else name[:-2] if name[-2:] in ("_L", "_R") else name


@dataclass
class KeySet:
    """Shape keys of one naming: ``names[k]``'s displacement is ``Σ_j mix[k, j] · expression_basis[j]``
    (``sources``), and its value for ICT weights ``w`` is ``(weights @ w)[k]``."""

    naming: str
    names: list[str]
    mix: np.ndarray          # (K, 53) displacement = mix @ ICT basis
    weights: np.ndarray      # (K, 53) key value = weights @ ICT weights

    def displacements(self, basis: np.ndarray) -> np.ndarray:
        """(K, …) key displacements from ICT's (53, …) ``basis`` (each key sums its one or two sources)."""
        basis = np.asarray(basis)
        out = np.zeros((len(self.names),) + basis.shape[1:], basis.dtype)
        for k, j in zip(*np.nonzero(self.mix)):
            out[k] += self.mix[k, j] * basis[j]
        return out

    def values(self, ict_weights: np.ndarray) -> np.ndarray:
        return np.clip(self.weights @ np.asarray(ict_weights, np.float64), 0.0, 1.0)

    def targets(self, arkit_name: str) -> list[str]:
        """The keys an ARKit channel drives: itself, or with ICT names ``_L`` and ``_R`` halves."""
        if self.naming == "arkit":
            return [arkit_name] if arkit_name in self.names else []
        return [n for n in self.names if ict_to_arkit(n) == arkit_name]


def key_set(ict_names: list[str] | tuple[str, ...], naming: str = "arkit") -> KeySet:
    """The shape keys a head gets: ``arkit`` (ARKit's names, split pairs joined, no ``tongueOut``) or
    ``ict`` (the model's own 53, unchanged)."""
    if naming not in NAMINGS:
        raise ValueError(f"shape-key naming must be one of {', '.join(NAMINGS)}, not {naming!r}")
    ict_names = list(ict_names)
    n = len(ict_names)
    if naming == "ict":
        return KeySet(naming, ict_names, np.eye(n), np.eye(n))
    names = [a for a in ARKIT_NAMES if any(ict_to_arkit(i) == a for i in ict_names)]
    mix = np.zeros((len(names), n))
    for j, ict in enumerate(ict_names):
        mix[names.index(ict_to_arkit(ict)), j] = 1.0
    weights = mix / mix.sum(1, keepdims=True)   # a joined pair's value = the mean of its halves
    return KeySet(naming, names, mix, weights)


def expression_record(ict_names: list[str] | tuple[str, ...], ict_weights: np.ndarray) -> dict[str, object]:
    """The expression under both namings, for JSON output: ICT's 53 and ARKit's 52 (``tongueOut`` null)."""
    arkit = key_set(ict_names, "arkit")
    values = dict(zip(arkit.names, (float(v) for v in arkit.values(ict_weights))))
    return {"expression_ict": {n: float(w) for n, w in zip(ict_names, np.asarray(ict_weights, float))},
            "expression_arkit": {n: values.get(n) for n in ARKIT_NAMES},
            "expression_arkit_missing": list(MISSING_IN_ICT)}


# -- Live Link Face captures ----------------------------------------------------------------------
class CaptureError(ValueError):
    """A capture file that is not in the Live Link Face format (one line for the user)."""


@dataclass
class Capture:
    """A facial performance: per sample its time (s, from the first sample), ARKit weights and angles."""

    times: np.ndarray                                          # (N,) seconds, increasing
    weights: dict[str, np.ndarray]                             # ARKit name → (N,) values in [0, 1]
    rotations: dict[str, np.ndarray] = field(default_factory=dict)   # ROTATION_COLUMNS name → (N,) radians
    capture_fps: float = DEFAULT_CAPTURE_FPS
    source: str = ""

    @property
    def duration(self) -> float:
        return float(self.times[-1]) if len(self.times) else 0.0

    def resample(self, fps: float) -> tuple[np.ndarray, "Capture"]:
        """Values at every frame of a ``fps`` timeline from 0 to the end (linear between samples):
        ``(frame offsets, capture at those times)``."""
        n = int(math.floor(self.duration * fps + 1e-6)) + 1
        t = np.arange(n) / fps
        interp = {k: np.interp(t, self.times, v) for k, v in self.weights.items()}
        rots = {k: np.interp(t, self.times, v) for k, v in self.rotations.items()}
        return np.arange(n), Capture(t, interp, rots, fps, self.source)


def parse_timecode(text: str, fps: float) -> float:
    """``HH:MM:SS:FF[.sub]`` (frames at ``fps``, Live Link Face) or ``HH:MM:SS.mmm`` → seconds."""
    parts = text.strip().split(":")
    try:
        if len(parts) == 4:
            h, m, s, f = int(parts[0]), int(parts[1]), int(parts[2]), float(parts[3])
            return h * 3600 + m * 60 + s + f / fps
        if len(parts) == 3:
            return int(parts[0]) * 3600 + int(parts[1]) * 60 + float(parts[2])
    except ValueError:
        pass
    raise CaptureError(f"cannot read the timecode {text!r} (expected HH:MM:SS:FF.fff)")


def infer_capture_fps(timecodes: list[str]) -> float:
    """The recording rate from the frame field: the smallest standard rate above the largest frame
    number seen; Live Link Face's 60 fps when the take never crosses a second."""
    frames, seconds = [], set()
    for tc in timecodes:
        parts = tc.strip().split(":")
        if len(parts) != 4:
            return DEFAULT_CAPTURE_FPS
        seconds.add(tuple(parts[:3]))
        frames.append(float(parts[3]))
    if len(seconds) < 2 or not frames:
        return DEFAULT_CAPTURE_FPS
    top = math.floor(max(frames)) + 1
    return next((r for r in STANDARD_RATES if r >= top), float(top))


def read_live_link_csv(path: str | Path, capture_fps: float | None = None, angles: str = "radians") -> Capture:
    """A Live Link Face CSV: ``Timecode, BlendShapeCount``, the 52 ARKit names (PascalCase), then the 9
    head and eye angles. Columns are matched by name without case, so a file with fewer shapes or without
    the angles still reads; unknown columns are ignored with a warning. ``angles``: the unit the file's
    rotation columns use (``radians``, as ARKit reports them, or ``degrees``)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"capture file not found: {path}")
    if angles not in ("radians", "degrees"):
        raise CaptureError(f"angles must be radians or degrees, not {angles!r}")
    text = path.read_text(encoding="utf-8-sig", errors="replace")
    rows = [r for r in csv.reader(io.StringIO(text)) if r and any(c.strip() for c in r)]
    if len(rows) < 2:
        raise CaptureError(f"{path.name}: no frames (a Live Link Face CSV has a header line and one line a frame)")
    header = [h.strip() for h in rows[0]]
    lower = {h.lower(): i for i, h in enumerate(header)}
    if "timecode" not in lower:
        raise CaptureError(f"{path.name}: no Timecode column; not a Live Link Face CSV")
    shape_cols = {a: lower[a.lower()] for a in ARKIT_NAMES if a.lower() in lower}
    rot_cols = {r: lower[r.lower()] for r in ROTATION_COLUMNS if r.lower() in lower}
    if not shape_cols:
        raise CaptureError(f"{path.name}: none of the 52 ARKit blendshape columns (EyeBlinkLeft, JawOpen, …)")
    known = {"timecode", "blendshapecount"} | {a.lower() for a in shape_cols} | {r.lower() for r in rot_cols}
    unknown = [h for h in header if h.lower() not in known]
    if unknown:
        log.warning("%s: ignoring columns %s", path.name, ", ".join(unknown[:8]))
    body = rows[1:]
    width = max(max(shape_cols.values()), max(rot_cols.values(), default=0)) + 1
    if any(len(r) < width for r in body):
        bad = next(i for i, r in enumerate(body) if len(r) < width)
        raise CaptureError(f"{path.name}: line {bad + 2} has {len(body[bad])} values, the header {len(header)}")
    timecodes = [r[lower["timecode"]] for r in body]
    fps = float(capture_fps) if capture_fps else infer_capture_fps(timecodes)
    times = np.array([parse_timecode(tc, fps) for tc in timecodes])
    try:
        numbers = {name: np.array([float(r[i]) for r in body]) for name, i in {**shape_cols, **rot_cols}.items()}
    except ValueError as exc:
        raise CaptureError(f"{path.name}: a value is not a number ({exc})") from None
    order = np.argsort(times, kind="stable")
    times = times[order] - times[order[0]]
    keep = np.concatenate([[True], np.diff(times) > 0])        # repeated timecodes: first sample wins
    scale = math.pi / 180.0 if angles == "degrees" else 1.0
    weights = {k: np.clip(v[order][keep], 0.0, 1.0) for k, v in numbers.items() if k in shape_cols}
    rotations = {k: v[order][keep] * scale for k, v in numbers.items() if k in rot_cols}
    big = max((float(np.abs(v).max()) for v in rotations.values()), default=0.0)
    if angles == "radians" and big > math.pi:
        log.warning("%s: angles up to %.0f: they look like degrees (use angles='degrees')", path.name, big)
    return Capture(times[keep], weights, rotations, fps, str(path))
