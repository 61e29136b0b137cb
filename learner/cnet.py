"""Several photos of one person: Deep3DFaceRecon's confidence network (C-Net, sec. 5).

The regressor stays frozen. The C-Net reads its shallow and deep features (global-average-pooled
outputs of two early inverted-residual blocks and of the last convolution) and predicts a
positive confidence per identity coefficient; the person's identity is the element-wise
confidence-weighted mean of the per-photo identities (``facemodel.aggregation``, their eq. 7).
Expression, pose and lighting stay per photo. The last layer starts at zero, so an untrained
C-Net is plain averaging.

Training uses synthetic multi-view sets (``facerig synth render --views-per-identity K``): K renders
of one person in different poses, expressions, lighting and occlusions; the loss is the mean
face-region vertex distance between the aggregated identity's shape and the true one, over random
subsets of 2…K photos. Because the regressor is frozen its features and identities are computed
once, and the C-Net trains in seconds.

``facerig cnet train`` writes ``cnet.onnx`` (input ``image``, output ``confidence``; the frozen
regressor inside) and the Table-5-style comparison: single photo, naive averaging, global-score
aggregation (one confidence per photo) and element-wise aggregation, in vertex mm on held-out sets.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from facemodel import FaceModel, FaceParams
from facemodel.outputs import atomic_write_text, write_json

from .network import INPUT_MEAN, INPUT_STD, FaceRegressor
from .onnx_import import network_from_onnx

log = logging.getLogger(__name__)
SHALLOW_BLOCKS = (2, 6)          # inverted-residual blocks whose outputs feed the C-Net (plus the last conv)
N_EVAL_VERTICES = 3000           # face-region vertices the loss and the metric average over


class FeatureExtractor(nn.Module):
    """Pooled shallow + deep features of a frozen regressor, and its identity prediction."""

    def __init__(self, regressor: FaceRegressor) -> None:
        super().__init__()
        self.regressor = regressor.eval()
        for p in self.regressor.parameters():
            p.requires_grad_(False)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        r = self.regressor
        x = r.stem((image - INPUT_MEAN) * (1.0 / INPUT_STD))
        pooled = []
        for i, block in enumerate(r.blocks):
            x = block(x)
            if i in SHALLOW_BLOCKS:
                pooled.append(x.mean((2, 3)))
        pooled.append(r.last(x).mean((2, 3)))
        return torch.cat(pooled, 1)


class ConfidenceHead(nn.Module):
    """features (N, F) → confidences (N, n_out) > 0; starts at 1 everywhere (plain averaging)."""

    def __init__(self, n_features: int, n_out: int, hidden: int = 256) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(n_features)
        self.mlp = nn.Sequential(nn.Linear(n_features, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, n_out))
        nn.init.zeros_(self.mlp[-1].weight)
        nn.init.zeros_(self.mlp[-1].bias)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return torch.exp(self.mlp(self.norm(features)).clamp(-8.0, 8.0))


class CNet(nn.Module):
    """image → confidence: the exported graph (frozen regressor features + head)."""

    def __init__(self, extractor: FeatureExtractor, head: ConfidenceHead) -> None:
        super().__init__()
        self.extractor, self.head = extractor, head

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.head(self.extractor(image))


@dataclass
class CNetConfig:
    hidden: int = 256
    steps: int = 3000
    batch_sets: int = 64
    lr: float = 1e-3
    weight_decay: float = 1e-4
    min_views: int = 2
    seed: int = 0


# -- data ------------------------------------------------------------------------------------------
@dataclass
class MultiViewSets:
    features: np.ndarray        # (S, K, F)
    identity_pred: np.ndarray   # (S, K, n)
    identity_true: np.ndarray   # (S, n_true)
    yaw_deg: np.ndarray         # (S, K)


def load_multiview(corpus_dir: Path | str, extractor: FeatureExtractor, regressor: FaceRegressor,
                   batch: int = 256, device: torch.device | str = "cpu") -> MultiViewSets:
    """Predict and featurise every image of a multi-view corpus, grouped into sets."""
    from tqdm import tqdm

    from synth.corpus import open_corpus

    corpus = open_corpus(corpus_dir)
    k = int(corpus.manifest.get("generator", {}).get("views_per_identity", 1))
    if k < 2:
        raise ValueError(f"{corpus_dir} is not a multi-view corpus (render it with --views-per-identity K ≥ 2)")
    data = corpus.load_all(["images", "params", "pose_deg"])
    n = len(data["images"]) // k * k
    feats, ids = [], []
    with torch.no_grad():
        for i in tqdm(range(0, n, batch), desc="features", unit="batch", disable=n < 4 * batch):
            x = torch.from_numpy(data["images"][i:min(i + batch, n)]).to(device).permute(0, 3, 1, 2).float().div_(255)
            feats.append(extractor(x).cpu().numpy())
            ids.append(regressor(x)[:, regressor.layout.slices["identity"]].cpu().numpy())
    true = FaceParams.from_vector(data["params"][:n], corpus.layout).identity
    s = n // k
    return MultiViewSets(np.concatenate(feats).reshape(s, k, -1), np.concatenate(ids).reshape(s, k, -1),
                         np.asarray(true).reshape(s, k, -1)[:, 0], data["pose_deg"][:n, 0].reshape(s, k))


class ShapeError:
    """Mean face-region vertex distance (mm) between identity shapes, in torch (differentiable)."""

    def __init__(self, model: FaceModel, n_true: int) -> None:
        face = model.vertex_range("face")
        idx = face[np.round(np.linspace(0, len(face) - 1, min(N_EVAL_VERTICES, len(face)))).astype(np.int64)]
        basis = np.asarray(model.identity_basis[:n_true], np.float32)[:, idx]     # (n, V, 3) cm
        self.basis = torch.from_numpy(basis.reshape(n_true, -1))
        self.n_true = n_true

    def __call__(self, pred: torch.Tensor, true: torch.Tensor) -> torch.Tensor:
        """(…,) mm; ``pred`` (…, n ≤ n_true) is zero-padded."""
        pad = torch.zeros(pred.shape[:-1] + (self.n_true - pred.shape[-1],), dtype=pred.dtype)
        d = (torch.cat([pred, pad], -1) - true) @ self.basis
        d = d.reshape(d.shape[:-1] + (-1, 3))
        return torch.sqrt((d * d).sum(-1) + 1e-12).mean(-1) * 10.0


def weighted_identity(ids: torch.Tensor, conf: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(S, n) Σ_k m c ⊙ α / Σ_k m c over the views (axis 1); ``conf`` (S, K, n) or (S, K, 1)."""
    w = conf * mask[..., None]
    return (w * ids).sum(1) / w.sum(1).clamp_min(1e-8)


def _view_masks(gen: torch.Generator, s: int, k: int, min_views: int) -> torch.Tensor:
    """(S, K) random subsets of min_views…K views per set."""
    m = torch.randint(min_views, k + 1, (s,), generator=gen)
    order = torch.rand(s, k, generator=gen).argsort(1)
    return (order < m[:, None]).float()


def train_head(train: MultiViewSets, shape_error: ShapeError, n_out: int, cfg: CNetConfig) -> ConfidenceHead:
    """Fit a confidence head (n_out = n_identity: element-wise, 1: global score)."""
    from tqdm import tqdm

    torch.manual_seed(cfg.seed)
    head = ConfidenceHead(train.features.shape[-1], n_out, cfg.hidden)
    opt = torch.optim.AdamW(head.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    feats = torch.from_numpy(train.features)
    ids = torch.from_numpy(train.identity_pred)
    true = torch.from_numpy(np.asarray(train.identity_true, np.float32))
    gen = torch.Generator().manual_seed(cfg.seed)
    s, k = ids.shape[:2]
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, cfg.steps)
    for step in tqdm(range(cfg.steps), desc=f"c-net ({n_out} outputs)", unit="step", mininterval=2):
        idx = torch.randint(0, s, (cfg.batch_sets,), generator=gen)
        mask = _view_masks(gen, cfg.batch_sets, k, cfg.min_views)
        conf = head(feats[idx].reshape(-1, feats.shape[-1])).reshape(cfg.batch_sets, k, -1)
        loss = shape_error(weighted_identity(ids[idx], conf, mask), true[idx]).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if step % 500 == 0:
            log.info("c-net step %d: %.3f mm", step, float(loss.detach()))
    return head.eval()


@torch.no_grad()
def compare(test: MultiViewSets, shape_error: ShapeError, heads: dict[str, ConfidenceHead],
            views: tuple[int, ...] = (2, 3, 5)) -> dict[str, dict[str, float]]:
    """Table 5: vertex mm of single photo / naive mean / global score / element-wise, per set size."""
    ids = torch.from_numpy(test.identity_pred)
    true = torch.from_numpy(np.asarray(test.identity_true, np.float32))
    feats = torch.from_numpy(test.features)
    s, k = ids.shape[:2]
    conf = {name: h(feats.reshape(-1, feats.shape[-1])).reshape(s, k, -1) for name, h in heads.items()}
    out: dict[str, dict[str, float]] = {}
    for m in views:
        if m > k:
            continue
        mask = torch.zeros(s, k)
        mask[:, :m] = 1.0
        row = {"single_photo": float(shape_error(ids[:, :m], true[:, None]).mean()),
               "naive_average": float(shape_error(weighted_identity(ids, torch.ones(s, k, 1), mask), true).mean())}
        for name, c in conf.items():
            row[name] = float(shape_error(weighted_identity(ids, c, mask), true).mean())
        out[f"{m}_views"] = row
    return out


@torch.no_grad()
def same_person_threshold(model: FaceModel, test: MultiViewSets, head: ConfidenceHead,
                          percentile: float = 99.0) -> dict[str, float]:
    """Leave-one-out RMS distance (mm) of a photo's identity from the aggregate of the other photos
    of its set (``facemodel.aggregation.leave_one_out_distances``): the within-person
    ``percentile`` is the flag threshold. Reports how often a photo of *another* set's person,
    put in place of one photo, exceeds it (the detection rate)."""
    from facemodel.aggregation import aggregate_identity, identity_rms_mm, leave_one_out_distances

    s, k = test.identity_pred.shape[:2]
    conf = head(torch.from_numpy(test.features.reshape(s * k, -1))).reshape(s, k, -1).numpy()
    within = np.concatenate([leave_one_out_distances(model, test.identity_pred[i], conf[i]) for i in range(s)])
    rest = np.stack([aggregate_identity(test.identity_pred[i, 1:], conf[i, 1:]) for i in range(s)])
    intruder = test.identity_pred[np.roll(np.arange(s), 1), 0]          # photo 0 of the previous set's person
    other = identity_rms_mm(model, intruder, rest)
    threshold = float(np.percentile(within, percentile))
    return {"threshold_mm": threshold, "percentile": percentile, "within_median_mm": float(np.median(within)),
            "other_median_mm": float(np.median(other)),
            "same_person_flag_rate": float((within > threshold).mean()),
            "other_person_flag_rate": float((other > threshold).mean()),
            "method": f"leave-one-out, sets of {k}"}


def export_cnet(cnet: CNet, out: Path, metadata: dict[str, str], size: int) -> float:
    """Write the C-Net ONNX (input ``image``, output ``confidence``); returns the max difference
    between torch and onnxruntime in log-confidence (the head's own scale: confidences are exp())."""
    from runtime.regressor import run_onnx

    from .export import write_onnx

    dummy = torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(0))
    write_onnx(cnet, dummy, out, "confidence", metadata)
    with torch.no_grad():
        ref = cnet(dummy).numpy()
    got = run_onnx(out, dummy.numpy(), "confidence")
    return float(np.abs(np.log(got) - np.log(ref)).max())


def train_cnet(train_corpus: Path, test_corpus: Path, regressor_onnx: Path, out: Path,
               cfg: CNetConfig | None = None, device: str = "cpu") -> dict[str, Any]:
    """Train element-wise and global-score heads, compare (Table 5), export the element-wise C-Net.

    ``device`` (``auto``, ``cpu``, ``cuda[:N]``): where the frozen regressor featurises the corpora — the
    only heavy part; the heads train on the CPU in seconds, so results do not depend on it beyond
    float rounding of the features. ``out`` is locked while it runs."""
    from facemodel.outputs import acquire_lock

    from .devices import env_context, resolve_device

    cfg = cfg or CNetConfig()
    out = Path(out)
    where = resolve_device(device, env_context())
    out.mkdir(parents=True, exist_ok=True)
    lock = acquire_lock(out, ".lock", f"{out} (a C-Net training)", ValueError)
    try:
        return _train_cnet(train_corpus, test_corpus, regressor_onnx, out, cfg, where)
    finally:
        lock.close()


def _train_cnet(train_corpus: Path, test_corpus: Path, regressor_onnx: Path, out: Path, cfg: CNetConfig,
                device: torch.device) -> dict[str, Any]:
    model = FaceModel.load()
    regressor = network_from_onnx(regressor_onnx)
    extractor = FeatureExtractor(regressor)
    regressor.to(device)
    train = load_multiview(train_corpus, extractor, regressor, device=device)
    test = load_multiview(test_corpus, extractor, regressor, device=device)
    regressor.cpu()   # the export traces on the CPU
    n_true = train.identity_true.shape[-1]
    shape_error = ShapeError(model, n_true)
    n_id = regressor.layout.n_identity
    heads = {"global_score": train_head(train, shape_error, 1, cfg),
             "elementwise": train_head(train, shape_error, n_id, cfg)}
    table = compare(test, shape_error, heads)
    flags = same_person_threshold(model, test, heads["elementwise"])
    report = {"train_sets": int(train.features.shape[0]), "test_sets": int(test.features.shape[0]),
              "views_per_set": int(test.features.shape[1]), "regressor": str(regressor_onnx),
              "train_corpus": str(train_corpus), "test_corpus": str(test_corpus), "config": asdict(cfg),
              "table5_vertex_mm": table, "same_person": flags,
              "metric": f"mean distance over {N_EVAL_VERTICES} face-region vertices of the identity shape "
                        "(neutral expression, model space), mm"}
    card = (f"facerig C-Net: per-identity-coefficient confidences for aggregating several photos of one person "
            f"(Deep3DFaceRecon sec. 5, element-wise). Frozen regressor {Path(regressor_onnx).name} inside. "
            f"Trained on {report['train_sets']} synthetic sets of {report['views_per_set']} renders of the MIT "
            f"ICT-FaceKit model ({train_corpus}); no photographs. Held-out vertex error (mm): "
            + json.dumps(table))
    import hashlib

    meta = {"facerig.regressor_sha256_12": hashlib.sha256(Path(regressor_onnx).read_bytes()).hexdigest()[:12],
            "facerig.n_identity": str(n_id), "facerig.input_size": str(regressor.config.input_size),
            "facerig.cnet_mode": "elementwise", "facerig.same_person_rms_mm": f"{flags['threshold_mm']:.3f}",
            "facerig.model_card": card}
    report["onnx_max_log_diff"] = export_cnet(CNet(extractor, heads["elementwise"]), out / "cnet.onnx", meta,
                                              regressor.config.input_size)
    write_json(out / "report.json", report)
    lines = ["| set size | single photo | naive average | global score | element-wise |", "|---|---|---|---|---|"]
    for key, row in table.items():
        lines.append(f"| {key.split('_')[0]} | {row['single_photo']:.3f} | {row['naive_average']:.3f} | "
                     f"{row['global_score']:.3f} | {row['elementwise']:.3f} |")
    atomic_write_text(out / "table5.md", "\n".join(lines) + "\n")
    log.info("C-Net written to %s (Table 5 in %s)", out / "cnet.onnx", out / "table5.md")
    return report


__all__ = ["CNet", "CNetConfig", "ConfidenceHead", "FeatureExtractor", "train_cnet", "compare",
           "weighted_identity", "ShapeError", "load_multiview", "same_person_threshold"]
