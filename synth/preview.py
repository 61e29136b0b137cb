"""Contact sheet of a corpus: images with their landmarks, and histograms of what was sampled.

For eyeballing a corpus before training on it: are the faces where the landmarks say, do the
pose and expression distributions look like the settings, how often did augmentation fire.
Reads only through :func:`synth.corpus.open_corpus` (no Blender).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from facemodel.outputs import atomic_output
from facemodel.params import ALBEDO_NAMES

from .augment import FLAG_BITS
from .corpus import Corpus, open_corpus

log = logging.getLogger(__name__)


def _first_images(corpus: Corpus, n: int) -> dict[str, np.ndarray]:
    keys = ["images", "landmarks", "landmarks_visible_jaw", "visibility"]
    parts: list[dict[str, np.ndarray]] = []
    have = 0
    for i in range(len(corpus.shards)):
        if have >= n:
            break
        part = corpus.load_shard(i, keys)
        parts.append(part)
        have += len(part["images"])
    return {k: np.concatenate([p[k] for p in parts])[:n] for k in keys}


def write_preview(path: Path | str, out: Path | str | None = None, count: int = 24) -> Path:
    """Write the contact sheet PNG (default ``<corpus>/preview.png``) and return its path."""
    corpus = open_corpus(path)
    if len(corpus) == 0:
        raise ValueError(f"corpus {path} holds no images yet")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out) if out is not None else Path(path) / "preview.png"
    n = min(count, len(corpus))
    shown = _first_images(corpus, n)
    stats_keys = ["params", "pose_deg"] + (["aug_flags"] if "aug_flags" in corpus.keys else [])
    stats = corpus.load_all(stats_keys)
    layout = corpus.layout
    sl = layout.slices

    cols = 6  # also one column per histogram below the images
    rows = int(np.ceil(n / cols))
    fig = plt.figure(figsize=(cols * 1.9, rows * 1.9 + 3.6), dpi=110)
    grid = fig.add_gridspec(rows + 2, cols, height_ratios=[1] * rows + [1.1, 1.0], hspace=0.4,
                            left=0.04, right=0.98, top=1 - 0.35 / (rows * 1.9 + 3.6), bottom=0.06)
    for i in range(n):
        ax = fig.add_subplot(grid[i // cols, i % cols])
        ax.imshow(shown["images"][i], interpolation="nearest")
        lm, vis = shown["landmarks"][i], shown["visibility"][i]
        ax.scatter(lm[vis, 0] - 0.5, lm[vis, 1] - 0.5, s=2, c="lime", linewidths=0)
        ax.scatter(lm[~vis, 0] - 0.5, lm[~vis, 1] - 0.5, s=2, c="red", linewidths=0)
        jaw = shown["landmarks_visible_jaw"][i][:17]
        ax.plot(jaw[:, 0] - 0.5, jaw[:, 1] - 0.5, c="cyan", lw=0.5)
        ax.set_axis_off()
    params = stats["params"]
    expr = params[:, sl["expression"]]
    hists = [
        ("yaw / pitch / roll (°)", [stats["pose_deg"][:, 0], stats["pose_deg"][:, 1], stats["pose_deg"][:, 2]]),
        ("identity weights", [params[:, sl["identity"]].ravel()]),
        ("active expressions", [(expr > 0.05).sum(1)]),
        ("SH band 0 (mean)", [params[:, sl["sh"]][:, 0:3].mean(1)]),
        ("albedo tone", [params[:, sl["albedo"]][:, ALBEDO_NAMES.index("tone")]]),
        ("depth (cm)", [-params[:, sl["translation"]][:, 2]]),
    ]
    for j, (title, data) in enumerate(hists):
        ax = fig.add_subplot(grid[rows, j])
        ax.hist(data, bins=30, histtype="stepfilled" if len(data) == 1 else "step", label=None)
        ax.set_title(title, fontsize=7)
        ax.tick_params(labelsize=6)
    ax = fig.add_subplot(grid[rows + 1, :])
    if "aug_flags" in stats:
        flags = stats["aug_flags"].astype(np.int64)
        share = [(flags >> b & 1).mean() for b in range(len(FLAG_BITS))]
        ax.bar(range(len(FLAG_BITS)), share)
        ax.set_xticks(range(len(FLAG_BITS)), FLAG_BITS, fontsize=6, rotation=20)
        ax.set_ylim(0, 1)
        ax.set_title("share of images per augmentation step", fontsize=7)
    ax.tick_params(labelsize=6)
    gen = corpus.generator
    fig.suptitle(f"{Path(path).name}: {len(corpus)} images {corpus.image_size}², engine {gen.get('engine')}, "
                 f"seed {gen.get('seed')} — green visible, red self-occluded, cyan visible jawline", fontsize=8)
    try:
        with atomic_output(out) as tmp:
            fig.savefig(tmp)
    finally:
        plt.close(fig)
    log.info("preview of %d images written to %s", n, out)
    return out
