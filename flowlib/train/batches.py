"""The training batches: which images, their dequantisation noise, and their augmentation.

    batches = Batches(train_x, TrainConfig(batch_size=64, seed=0, augment="flip"), dist, labels=train_y)
    x_uint8, uniform, labels = batches.next(step)   # this rank's rows of global batch ``step``

The batch order and the noise generator have state, saved in every checkpoint (``order.state()``
and ``noise.get_state()``), so a resumed run walks the same batches with the same noise as an
uninterrupted one; the augmentation has none (it is seeded by the seed and the step).
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from flowlib.config import TrainConfig
from flowlib.core.checkpoint import CheckpointError

from .distributed import Dist, shard_slice

__all__ = ["Batch", "Batches", "BatchOrder", "augment_batch", "AUGMENT_SHIFT"]

AUGMENT_SHIFT = 2           # pixels, each direction, for "flip-shift"


class BatchOrder:
    """Random batches without replacement: walk a seeded permutation, reshuffle when spent
    (a batch at least as large as the data set draws with replacement instead)."""

    def __init__(self, n: int, batch: int, seed: int):
        self.n, self.batch = n, batch
        self.gen = torch.Generator().manual_seed(seed)
        self.perm = torch.randperm(n, generator=self.gen)
        self.pos = 0

    def next(self) -> torch.Tensor:
        if self.batch >= self.n:
            return torch.randint(self.n, (self.batch,), generator=self.gen)
        if self.pos + self.batch > self.n:
            self.perm = torch.randperm(self.n, generator=self.gen)
            self.pos = 0
        idx = self.perm[self.pos:self.pos + self.batch]
        self.pos += self.batch
        return idx

    def state(self) -> dict:
        return {"gen": self.gen.get_state(), "perm": self.perm.clone(), "pos": self.pos}

    def load(self, state: dict) -> None:
        if int(state["perm"].numel()) != self.n:
            raise CheckpointError(f"the checkpoint's batch order covers {state['perm'].numel()} images "
                                  f"but the dataset now has {self.n}; the data changed since")
        self.gen.set_state(state["gen"])
        self.perm, self.pos = state["perm"].clone(), int(state["pos"])


class Batch(NamedTuple):
    x: torch.Tensor                 # uint8 [B, C, H, W]
    uniform: torch.Tensor           # the U[0, 1) draws behind their dequantisation noise
    labels: torch.Tensor | None     # int64 [B] for a conditional model, else None


class Batches:
    """A session's training batches: ``next(step)`` gives this process's rows of the next global
    batch of ``tc.batch_size`` images (all of them, unless under torchrun), augmented as
    ``tc.augment`` says, the same rows of the U[0, 1) draws behind their dequantisation
    noise (drawn for the whole global batch, so N ranks see exactly what one process would),
    and their ``labels`` when the session has them (a conditional model)."""

    def __init__(self, images: torch.Tensor, tc: TrainConfig, dist: Dist, labels: torch.Tensor | None = None):
        self.images, self.dist, self.labels = images, dist, labels
        self.augment, self.seed = tc.augment, tc.seed
        self.order = BatchOrder(images.shape[0], tc.batch_size, tc.seed)
        self.noise = torch.Generator().manual_seed(tc.seed + 1)

    def next(self, step: int) -> Batch:
        """``(x_uint8, uniform, labels)`` for training step number ``step`` (counted from 0)."""
        idx = self.order.next()
        rows = shard_slice(idx.shape[0], self.dist)
        uniform = torch.rand((idx.shape[0], *self.images.shape[1:]), generator=self.noise)[rows]
        x = augment_batch(self.images[idx[rows].to(self.images.device)], self.augment, self.seed, step,
                          rows=rows, global_batch=idx.shape[0])
        labels = None if self.labels is None else self.labels[idx[rows].to(self.labels.device)]
        return Batch(x, uniform, labels)


def augment_batch(x: torch.Tensor, mode: str, seed: int, step: int, rows: slice | None = None,
                  global_batch: int | None = None) -> torch.Tensor:
    """Random mirrored / shifted copies of a uint8 batch (N, C, H, W), for ``augment`` modes
    ``flip`` and ``flip-shift`` (``none`` returns ``x``).

    The random choices come from a generator seeded by (seed, step) alone, so a resumed run
    and an uninterrupted one change the same images the same way, with no state to save.
    ``rows``/``global_batch``: under torchrun ``x`` is the rows ``rows`` of a global batch of
    ``global_batch`` images; every rank draws the global batch's choices and keeps its own, so
    the ranks together change the batch exactly as one process would.
    """
    if mode == "none":
        return x
    total = x.shape[0] if global_batch is None else global_batch
    start = 0 if rows is None else (rows.start or 0)
    gen = torch.Generator().manual_seed(int(seed) * 1_000_003 + int(step))
    flip = torch.rand(total, generator=gen)[start:start + x.shape[0]] < 0.5
    out = torch.where(flip.to(x.device)[:, None, None, None], x.flip(-1), x)
    if mode == "flip-shift":
        r = AUGMENT_SHIFT
        shifts = torch.randint(-r, r + 1, (total, 2), generator=gen)[start:start + x.shape[0]].to(x.device)
        n, _, h, w = out.shape
        padded = torch.nn.functional.pad(out.float(), (r, r, r, r), mode="replicate").to(x.dtype)
        rows_i = torch.arange(h, device=x.device)[None, :] + r - shifts[:, :1]       # (N, H)
        cols_i = torch.arange(w, device=x.device)[None, :] + r - shifts[:, 1:]       # (N, W)
        batch_i = torch.arange(n, device=x.device)[:, None, None]
        # advanced indices first: (N, H, W, C), then back to (N, C, H, W)
        out = padded.permute(0, 2, 3, 1)[batch_i, rows_i[:, :, None], cols_i[:, None, :]]
        out = out.permute(0, 3, 1, 2).contiguous()
    return out
