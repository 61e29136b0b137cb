"""Training curves (PNG) and CSV views of the JSONL metrics log."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

from facemodel.outputs import atomic_open, atomic_output


def read_log(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if line:
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a line cut by a kill; the checkpoint decides what is real
    return rows


def write_csvs(rows: list[dict[str, Any]], out_dir: Path) -> None:
    """``train.csv`` and ``val.csv``: one column per key seen (the union, in first-seen order)."""
    for kind in ("train", "val"):
        sel = [r for r in rows if r.get("kind") == kind]
        keys: list[str] = []
        for r in sel:
            keys += [k for k in r if k not in keys and k != "kind"]
        with atomic_open(out_dir / f"{kind}.csv", "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=keys, extrasaction="ignore")
            w.writeheader()
            w.writerows(sel)


def plot_curves(rows: list[dict[str, Any]], out: Path) -> Path | None:
    """Loss terms, learning rate and the main validation metrics against the step."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = [r for r in rows if r.get("kind") == "train"]
    val = [r for r in rows if r.get("kind") == "val"]
    if not train and not val:
        return None
    panels = [
        ("training loss", train, [k for k in (train[0] if train else {}) if k.startswith("loss")], True),
        ("learning rate", train, ["lr"], True),
        ("val vertex error [mm]", val, ["val/vertex_mm_camera", "val/vertex_mm_aligned"], False),
        ("val NME bbox [%]", val, ["val/nme_bbox_68", "val/nme_bbox_51"], False),
        ("val rotation [deg] / expression MAE ×100", val, ["val/rotation_deg", "val/expression_mae"], False),
        ("val loss", val, ["val/loss"], True),
    ]
    fig, axes = plt.subplots(2, 3, figsize=(15, 8))
    for ax, (title, sel, keys, logy) in zip(axes.ravel(), panels):
        for k in keys:
            pts = [(r["step"], r[k] * (100 if k.endswith("expression_mae") else 1)) for r in sel
                   if isinstance(r.get(k), (int, float)) and math.isfinite(r[k])]
            if pts:
                ax.plot(*zip(*pts), label=k, marker="." if len(pts) < 30 else None)
        ax.set_title(title)
        ax.set_xlabel("step")
        if logy and any(ln.get_ydata().size and min(ln.get_ydata()) > 0 for ln in ax.get_lines()):
            ax.set_yscale("log")
        if ax.get_lines():
            ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    try:
        with atomic_output(out) as tmp:
            fig.savefig(tmp, dpi=80)
    finally:
        plt.close(fig)
    return out
