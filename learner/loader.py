"""The training data path: step k → this rank's augmented batch, in the main process or in loader workers.

A batch is a pure function of (seed, step, rank): the sample order comes from
:class:`learner.data.BatchOrder`, the augmentation from a generator seeded with (seed, step) —
rank 0 draws exactly the stream a single-process run draws, so without workers and on one rank
the batches are those of every earlier facerig version. That is also what makes worker processes
safe: any worker can make any step, the loader hands them back in step order, and a resumed run
needs nothing but the step number.

Several ranks (torchrun): the global batch of ``train.batch_size`` samples is cut into ``world``
contiguous slices (DistributedSampler-style sharding, but of each step's batch, so the samples one
optimiser step sees are those of the single-process run); rank r augments its slice with its own
generator stream, so the ranks' augmentations are independent draws.

Workers (``--loader-workers N``, default on CUDA): a ``DataLoader`` over step numbers with pinned
memory. The corpus stays in the parent's memory and is shared with the forked workers (copy-on-write:
nothing is copied). What a worker does — gather uint8 images, convert to float, augment — is measured
in ``docs/scaling.md`` (about 830 images/s of 128² per core, 90 % of it augmentation).
"""

from __future__ import annotations

import sys
from typing import Any, Iterable, Iterator

import torch
from torch.utils.data import DataLoader, Dataset

from facemodel import ParamLayout

from .augment import augment
from .config import AugmentConfig
from .data import BatchOrder, FaceData
from .losses import Batch

# Salt of the augmentation stream (rank 0 keeps salt 1, the single-process stream; the dropout
# stream uses 2 — see learner.train._step_seed — so rank r's 1 + 10 r never meets it).
AUG_SALT, RANK_SALT = 1, 10


def step_seed(seed: int, step: int, salt: int) -> int:
    """Seed of one random stream of one step (int63)."""
    return (seed * 1_000_003 + step * 7_919 + salt) % (2**63 - 1)


class StepBatches(Dataset):
    """``dataset[step]``: the augmented batch of that step for one rank, as a dict of tensors."""

    def __init__(self, data: FaceData, train_idx: torch.Tensor, order: BatchOrder, size: int, layout: ParamLayout,
                 augment_config: AugmentConfig, seed: int, rank: int = 0, world: int = 1) -> None:
        if order.batch_size % world:
            raise ValueError(f"train.batch_size {order.batch_size} must be divisible by the number of "
                             f"processes ({world}): each rank trains on an equal slice of every batch")
        self.data, self.train_idx, self.order, self.size = data, train_idx, order, size
        self.layout, self.augment_config, self.seed = layout, augment_config, seed
        self.rank, self.world = rank, world

    def __len__(self) -> int:
        return sys.maxsize   # any step; the sampler says which

    def indices(self, step: int) -> torch.Tensor:
        """Corpus rows of this rank's slice of the step's global batch."""
        idx = self.train_idx[self.order.indices(step)]
        if self.world > 1:
            idx = idx.view(self.world, -1)[self.rank]
        return idx

    def __getitem__(self, step: int) -> dict[str, torch.Tensor]:
        batch = self.data.batch(self.indices(step), self.size)
        gen = torch.Generator().manual_seed(step_seed(self.seed, step, AUG_SALT + RANK_SALT * self.rank))
        images, params, lms, colour_ok = augment(batch.images, batch.params, batch.landmarks, self.layout,
                                                 self.augment_config, gen, landmarks_only=~batch.has_params)
        return {"images": images, "params": params, "has_params": batch.has_params, "landmarks": lms,
                "landmark_mask": batch.landmark_mask, "appearance_ok": batch.appearance_ok & colour_ok}


def to_batch(item: dict[str, torch.Tensor], device: torch.device) -> Batch:
    """A loader item as a :class:`Batch` on ``device`` (asynchronous copies from pinned memory)."""
    if device.type == "cpu":
        return Batch(**item)
    return Batch(**{k: v.to(device, non_blocking=True) for k, v in item.items()})


def _worker_init(_: int) -> None:
    import signal

    from .cpu_tuning import tune_malloc

    tune_malloc()   # inherited through fork anyway; explicit for other start methods
    torch.set_num_threads(1)
    # Ctrl-C reaches the whole process group: the trainer finishes its step and checkpoints, and that
    # step's batch must still arrive — the main process ends the workers when it stops.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def iterate_steps(dataset: StepBatches, start: int, end: int, workers: int = 0, pin_memory: bool = False,
                  prefetch: int = 4) -> Iterator[dict[str, torch.Tensor]]:
    """Batches of steps ``start … end-1`` in order: made here (``workers`` 0) or by worker processes."""
    if workers <= 0:
        return (dataset[s] for s in range(start, end))
    loader: Iterable[Any] = DataLoader(dataset, batch_size=None, sampler=range(start, end), num_workers=workers,
                                       pin_memory=pin_memory, prefetch_factor=prefetch, worker_init_fn=_worker_init,
                                       multiprocessing_context="fork")
    return iter(loader)


__all__ = ["StepBatches", "iterate_steps", "step_seed", "to_batch"]
