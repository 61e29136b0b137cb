"""Figures of the evaluation reports (matplotlib, Agg; PNG files beside the JSON)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from facemodel import metrics
from facemodel.outputs import atomic_output

from .landmark_results import ImageResult
from .pts import LabelledImage

CED_MAX = 10.0   # % bbox NME shown on the cumulative error curve
N_WORST = 16
THUMB = 160


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(plt: Any, fig: Any, path: Path | str, dpi: int) -> Path:
    """Lay out, write and close a figure; returns its path."""
    fig.tight_layout()
    try:
        with atomic_output(path) as tmp:
            fig.savefig(tmp, dpi=dpi)
    finally:
        plt.close(fig)
    return Path(path)


def landmark_figure(results: Sequence[ImageResult], items: Sequence[LabelledImage], path: Path,
                    title: str = "") -> Path:
    """Cumulative error curve (bbox NME-68 and -51) beside the 16 worst faces with both point sets.

    Ground truth is green, the prediction red; a failed image is shown with its ground truth
    only and ranks worst. The worst cases are cropped around the GT box so faces are comparable.
    """
    from .imaging import crop_square, load_image

    plt = _pyplot()
    e68 = np.array([r.nmes()["nme_bbox_68"] if r.ok else np.inf for r in results])
    e51 = np.array([r.nmes()["nme_bbox_51"] if r.ok else np.inf for r in results])
    fig = plt.figure(figsize=(16, 8))
    grid = fig.add_gridspec(4, 8)
    ax = fig.add_subplot(grid[:, :4])
    finite68 = e68[np.isfinite(e68)]
    # 0–10 % is the usual view; a poor model gets a wider axis so its curve is not cut off.
    x_max = max(CED_MAX, float(np.ceil(np.percentile(finite68, 95)))) if finite68.size else CED_MAX
    for errs, label in ((e68, "68 points"), (e51, "51 inner points")):
        thr, frac = metrics.cumulative_error_curve(errs, x_max)
        finite = errs[np.isfinite(errs)]
        mean = f"{finite.mean():.2f}%" if finite.size else "n/a"
        ax.plot(thr, frac * 100, label=f"{label} (mean {mean}, AUC@7 {metrics.auc_at(errs, 7.0):.3f})")
    ax.set_xlabel("NME (bbox, %)")
    ax.set_ylabel("images (%)")
    ax.set_xlim(0, x_max)
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    n_fail = int((~np.isfinite(e68)).sum())
    ax.set_title(f"{title}\n{len(results)} images, {n_fail} failed")
    by_name = {it.name: it for it in items}
    order = np.argsort(-np.where(np.isfinite(e68), e68, 1e9), kind="stable")[:N_WORST]
    for slot, idx in enumerate(order):
        r = results[int(idx)]
        a = fig.add_subplot(grid[slot // 4, 4 + slot % 4])
        a.set_axis_off()
        item = by_name.get(r.name)
        if item is None:
            continue
        lo, hi = r.gt.min(0), r.gt.max(0)
        side = 1.3 * float(max(hi - lo))
        c = 0.5 * (lo + hi)
        box = (c[0] - side / 2, c[1] - side / 2, c[0] + side / 2, c[1] + side / 2)
        thumb = crop_square(load_image(item.image_path), box, THUMB)
        a.imshow(thumb)
        to = lambda p: (np.asarray(p) - np.array(box[:2])) * THUMB / side  # noqa: E731
        g = to(r.gt)
        a.scatter(g[:, 0], g[:, 1], s=3, c="lime")
        if r.prediction is not None:
            p = to(r.prediction.points68)
            a.scatter(p[:, 0], p[:, 1], s=3, c="red")
            label = f"{e68[idx]:.1f}% yaw {r.yaw_deg:+.0f}"
        else:
            label = "failed"
        a.set_title(f"{r.name[:18]}\n{label}", fontsize=7)
    return _save(plt, fig, path, dpi=80)


def error_vs_yaw_figure(yaw_deg: np.ndarray, errors: dict[str, np.ndarray], path: Path, title: str = "",
                        units: dict[str, str] | None = None) -> Path:
    """One scatter + binned-mean panel per metric against |yaw| (the VRN bootstrap paper's Fig. 10 view)."""
    plt = _pyplot()
    n = max(len(errors), 1)
    fig, axes = plt.subplots(1, n, figsize=(4 * n, 3.6), squeeze=False)
    a_yaw = np.abs(np.asarray(yaw_deg, np.float64))
    edges = np.arange(0, 95, 5.0)
    for ax, (name, vals) in zip(axes[0], errors.items()):
        v = np.asarray(vals, np.float64)
        ax.scatter(a_yaw, v, s=3, alpha=0.3)
        centres, means = [], []
        for lo, hi in zip(edges[:-1], edges[1:]):
            m = (a_yaw >= lo) & (a_yaw < hi) & np.isfinite(v)
            if m.any():
                centres.append(0.5 * (lo + hi))
                means.append(v[m].mean())
        ax.plot(centres, means, "r-", lw=2, label="mean per 5°")
        ax.set_xlabel("|yaw| (degrees)")
        unit = (units or {}).get(name)
        ax.set_title(f"{name} ({unit})" if unit else name)
        for edge in (30, 60):  # the report's yaw bins
            ax.axvline(edge, color="grey", lw=0.8, ls="--")
        ax.set_xlim(0, 90)
        ax.grid(alpha=0.3)
    axes[0][0].legend(loc="upper left")
    if title:
        fig.suptitle(title)
    return _save(plt, fig, path, dpi=90)


def distance_histogram_figure(groups: dict[str, np.ndarray], path: Path, title: str = "", xlabel: str = ""
                              ) -> Path:
    """Overlaid, normalised histograms of distance groups (e.g. same face vs other people)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.6))
    values = [np.asarray(v, np.float64) for v in groups.values()]
    top = max(float(np.percentile(v, 99)) for v in values if v.size) if any(v.size for v in values) else 1.0
    bins = np.linspace(0.0, max(top, 1e-6), 40)
    for (name, _), v in zip(groups.items(), values):
        ax.hist(np.clip(v, 0, bins[-1]), bins=bins, density=True, alpha=0.5,
                label=f"{name} (median {np.median(v):.2f})" if v.size else name)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("density")
    ax.legend()
    ax.grid(alpha=0.3)
    if title:
        ax.set_title(title)
    return _save(plt, fig, path, dpi=90)
