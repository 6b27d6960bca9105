"""The pieces of a training step that hold state of their own: the batch order, the gradient
clip, the loss as a module for DistributedDataParallel, and the exact evaluation.

``flowlib.train`` runs the loop; these are kept apart so the loop reads as a loop. Everything
here is saved in (and restored from) a checkpoint where it has state, so a resumed run walks
the same batches and clips the same way as an uninterrupted one.
"""

from __future__ import annotations

import math

import torch

from flowlib.core.checkpoint import CheckpointError
from flowlib.core.model import FlowModel

__all__ = ["EVAL_SEED", "EVAL_BATCH", "evaluate_bpd", "augment_batch"]

EVAL_SEED = 0               # fixed eval subset and dequantisation noise: test points comparable
EVAL_BATCH = 500


class _LossModule(torch.nn.Module):
    """The model's bits/dim terms as a module's forward, so DistributedDataParallel can wrap it
    (DDP averages gradients only through its wrapped module's forward)."""

    def __init__(self, model: FlowModel):
        super().__init__()
        self.model = model

    def forward(self, x_uint8: torch.Tensor, uniform: torch.Tensor):
        return self.model.bits_per_dim_terms(x_uint8, uniform=uniform)


class _Sampler:
    """Random batches without replacement: walk a seeded permutation, reshuffle when spent."""

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


AUGMENT_SHIFT = 2           # pixels, each direction, for "flip-shift"


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


class _GradClip:
    """Gradient-norm clipping: at ``absolute``, and at ``factor`` × the running mean of recent norms.

    A fixed threshold only guards against spikes while it sits above the ordinary norms, and
    those differ by a factor of 50 between models (mnist-fast: 2–40; uniform noise without
    the logit: 100–300, so a clip at 50 scaled 95 % of all steps). The relative threshold
    follows the run's own norms: ordinary steps pass untouched, a batch whose gradient is
    ``factor`` times the usual size is cut down to it. The running mean is over the norms as
    applied (after clipping), so a spike barely raises the bar for the next one; it starts
    after ``MIN_STEPS`` finite steps (before that only ``absolute`` applies, if set). Its state
    (with the count of clipped steps) is in every checkpoint: a resumed run clips exactly as an
    uninterrupted one.

    What it does not cure (benchmarks/RESULTS.md, "Training stability"): the test bits/dim
    swings of uniform-noise models at a constant learning rate come without outlier
    gradients; they are Adam's steps of size lr in directions where the loss is very sharp.
    """

    BETA = 0.95         # the running mean's memory: about 20 steps (the bar can rise 10 % a step)
    MIN_STEPS = 10      # Adam's first steps have unit size whatever the gradient's norm

    def __init__(self, absolute: float | None, factor: float | None):
        self.absolute, self.factor = absolute, factor
        self.mean, self.count, self.clipped = 0.0, 0, 0   # count: finite steps seen

    def threshold(self) -> float:
        limit = self.absolute if self.absolute is not None else math.inf
        if self.factor is not None and self.count >= self.MIN_STEPS:
            limit = min(limit, self.factor * self.mean / (1.0 - self.BETA ** self.count))
        return limit

    def record(self, norm: float, limit: float) -> None:
        """After a finite step: count it and fold the norm as applied (at most ``limit``) in."""
        self.clipped += norm > limit
        self.mean = self.BETA * self.mean + (1.0 - self.BETA) * min(norm, limit)
        self.count += 1

    def state(self) -> dict:
        return {"mean": self.mean, "count": self.count, "clipped": self.clipped}

    def load(self, state: dict | None) -> None:
        state = state or {}   # a checkpoint from before relative clipping: start afresh
        self.mean, self.count = float(state.get("mean", 0.0)), int(state.get("count", 0))
        self.clipped = int(state.get("clipped", 0))


@torch.no_grad()
def evaluate_bpd(model: FlowModel, images: torch.Tensor, batch: int = EVAL_BATCH,
                 seed: int = EVAL_SEED) -> float:
    """Mean bits/dim of uint8 images with fixed dequantisation noise (comparable across evals)."""
    was_training = model.training
    model.eval()
    gen = torch.Generator().manual_seed(seed)
    total, count = 0.0, 0
    try:
        for start in range(0, images.shape[0], batch):
            chunk = images[start:start + batch]
            bpd = model.bits_per_dim(chunk, generator=gen)
            total += float(bpd.double().sum())
            count += chunk.shape[0]
    finally:
        model.train(was_training)
    return total / max(count, 1)
