"""Checkpoints: atomic writes, ``weights_only`` loads, a checksum that catches silent damage, and the
trained network read back from one (:func:`load_network`, for export and evaluation).

A checkpoint is a plain dict of tensors and JSON types (``torch.load(weights_only=True)`` can read
it without executing code). torch's zip container detects truncation but not a flipped byte in
tensor data, so the dict carries a SHA-256 over every tensor and the metadata; a mismatch is
reported as corruption instead of resuming from silently wrong weights.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import torch

from facemodel import ParamLayout
from facemodel.outputs import atomic_output, is_temp_name

from .config import Config
from .network import FaceRegressor, build_network

FORMAT = "facerig-learner-checkpoint"
VERSION = 1
REQUIRED = ("format", "version", "step", "config", "layout", "gt_layout", "model", "optimizer", "checksum")


class CheckpointError(ValueError):
    """The checkpoint is unreadable, damaged, or not a facerig learner checkpoint."""


def _digest(obj: Any, h: "hashlib._Hash") -> None:
    if isinstance(obj, torch.Tensor):
        t = obj.detach().cpu().contiguous()
        h.update(f"T{t.dtype}{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    elif isinstance(obj, dict):
        h.update(b"D")
        for k in sorted(obj, key=str):
            h.update(repr(k).encode())
            _digest(obj[k], h)
    elif isinstance(obj, (list, tuple)):
        h.update(b"L")
        for v in obj:
            _digest(v, h)
    else:
        h.update(json.dumps(obj, sort_keys=True, default=str).encode())


def checksum(state: dict[str, Any]) -> str:
    h = hashlib.sha256()
    _digest({k: v for k, v in state.items() if k != "checksum"}, h)
    return h.hexdigest()


def to_cpu(obj: Any) -> Any:
    """Every tensor in a nested state moved to the CPU: checkpoints are device-independent (a run saved
    on a GPU resumes on a CPU and back; loading maps nothing and needs no CUDA)."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_cpu(v) for v in obj)
    return obj


def save_checkpoint(path: Path | str, state: dict[str, Any], keep_previous: Path | str | None = None) -> Path:
    """Write ``state`` atomically (:func:`facemodel.outputs.atomic_output`): a crash leaves either the old
    or the new file, never half of one.

    ``keep_previous``: where the file being replaced is kept (``prev.pt``), so a checkpoint damaged
    later still leaves an older one to resume from. It is hard-linked there before the new file is
    renamed into place: at every instant ``path`` is a complete checkpoint.
    """
    path = Path(path)
    state = {**to_cpu(state), "format": FORMAT, "version": VERSION}
    state["checksum"] = checksum(state)
    with atomic_output(path) as tmp:
        with open(tmp, "wb") as f:
            torch.save(state, f)
        if keep_previous is not None and path.is_file():
            _keep_copy(path, Path(keep_previous))
    return path


def _keep_copy(src: Path, dst: Path) -> None:
    """``dst`` becomes (atomically) the same file as ``src``: a hard link, or a copy where links fail."""
    import shutil

    with atomic_output(dst) as tmp:
        try:
            os.link(src, tmp)
        except OSError:
            shutil.copyfile(src, tmp)


def remove_stale_temps(folder: Path | str) -> list[Path]:
    """Delete the temp files of checkpoint saves that a kill interrupted (:func:`facemodel.outputs.temp_name`
    of a ``.pt``, or ``.NAME.pt.tmpPID`` of runs saved before checkpoints went through facemodel.outputs).

    Call it only while holding the folder's lock (no live writer then): what is left is garbage.
    """
    removed = []
    for p in Path(folder).glob(".*.pt*"):
        if is_temp_name(p.name) or ".pt.tmp" in p.name:
            p.unlink(missing_ok=True)
            removed.append(p)
    return removed


def load_checkpoint(path: Path | str) -> dict[str, Any]:
    """Read and verify a checkpoint; raise :class:`CheckpointError` with the reason if it is bad."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 — any unpickling/zip failure means a damaged file
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
        msg = next((ln for ln in lines if "error" in ln.lower()), lines[0] if lines else type(exc).__name__)
        raise CheckpointError(f"checkpoint {path} is corrupted or not a torch checkpoint ({msg[:160]}); "
                              "delete it or resume from an older copy") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a facerig learner checkpoint")
    if int(state.get("version", 0)) > VERSION:
        raise CheckpointError(f"checkpoint {path} has version {state['version']}, newer than this facerig ({VERSION})")
    missing = [k for k in REQUIRED if k not in state]
    if missing:
        raise CheckpointError(f"checkpoint {path} lacks {missing}; it is incomplete")
    if checksum(state) != state["checksum"]:
        raise CheckpointError(f"checkpoint {path} is corrupted (checksum mismatch); "
                              "delete it or resume from an older copy")
    return state


def resolve_checkpoint(run_or_file: Path | str, which: str = "best") -> Path:
    """A checkpoint file, or ``best.pt`` (falling back to ``last.pt``) of a run directory."""
    p = Path(run_or_file)
    if p.is_file():
        return p
    if not p.is_dir():
        raise FileNotFoundError(f"run or checkpoint not found: {p}")
    for name in ((f"{which}.pt", "last.pt") if which == "best" else (f"{which}.pt",)):
        if (p / name).is_file():
            return p / name
    raise FileNotFoundError(f"{p} has no {which}.pt or last.pt checkpoint; train first")


def load_network(checkpoint: Path | str) -> tuple[FaceRegressor, dict[str, Any]]:
    """The trained network in eval mode, and the checkpoint dict."""
    state = load_checkpoint(checkpoint)
    cfg = Config.from_dict(state["config"])
    net = build_network(cfg.network)
    net.load_state_dict(state["model"])
    if net.layout != ParamLayout.from_dict(state["layout"]):
        raise ValueError(f"checkpoint {checkpoint}: layout does not match its network configuration")
    return net.eval(), state
