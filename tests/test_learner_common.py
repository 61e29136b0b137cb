"""Shared helpers for the learner tests: a tiny rendered data set (no tests in this module).

Images are real renderings of the face model (``facemodel.form`` + the preview rasteriser
``facerig_cli.sheets.draw_mesh``); small and few so the learner tests stay fast.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from facemodel import FaceModel, form, landmarks_2d
from facemodel.priors import sample_params

TINY_SIZE = 64


@lru_cache(maxsize=4)
def tiny_arrays(n: int = 48, size: int = TINY_SIZE, seed: int = 0) -> dict[str, np.ndarray]:
    """Corpus-contract arrays for ``n`` random faces rendered at ``size``²."""
    from facerig_cli.sheets import draw_mesh

    model = load_model()
    rng = np.random.default_rng(seed)
    lm_arrays = model.arrays.subset(model.landmark_indices())
    p = sample_params(rng, n, model.expression_names, lm_arrays, n_identity=100)
    images = np.stack([_render(model, p[i], size, draw_mesh) for i in range(n)])
    lm = np.asarray(landmarks_2d(lm_arrays, p, size, size), np.float32)
    lm_vis = np.asarray(landmarks_2d(model.arrays.subset(model.landmark_indices("visible")), p, size, size),
                        np.float32)
    return {"images": images, "params": np.asarray(p.to_vector(), np.float32), "landmarks": lm,
            "landmarks_visible_jaw": lm_vis, "visibility": np.ones((n, 68), bool),
            "masks": (images.max(-1) > 60).astype(np.uint8), "pose_deg": np.degrees(p.rotation).astype(np.float32),
            "seeds": np.arange(n, dtype=np.int64) + seed * 100000}


def _render(model: FaceModel, params, size: int, draw_mesh) -> np.ndarray:
    f = form(model.arrays, params, size, size)
    return draw_mesh(f.pixels, -f.vertices[:, 2], f.colors, model.render_triangles, size, size, supersample=1)


@lru_cache(maxsize=1)
def load_model() -> FaceModel:
    return FaceModel.load()


def tiny_data(n: int = 48, size: int = TINY_SIZE, seed: int = 0):
    from facemodel import ParamLayout
    from learner.data import FaceData

    a = tiny_arrays(n, size, seed)
    return FaceData.from_arrays(a["images"], a["params"], ParamLayout(100), a["landmarks"], a["pose_deg"])


def tiny_config(steps: int = 12, batch_size: int = 8):
    """A config for seconds-long runs on 64² images."""
    from learner.config import Config

    cfg = Config()
    cfg.network.input_size = TINY_SIZE
    cfg.network.width = 0.5
    cfg.network.head_width = 128
    cfg.train.steps = steps
    cfg.train.batch_size = batch_size
    cfg.train.warmup_steps = 2
    cfg.train.val_fraction = 0.2
    cfg.train.val_every = 1000
    cfg.train.checkpoint_every = 1000
    cfg.train.log_every = 2
    cfg.train.lr = 1e-3
    cfg.loss.n_face_vertices = 300
    return cfg
