"""Where the training step clips the gradient norm: a fixed ceiling and a bar that follows the run.

    clip = GradientClip(absolute=50.0, factor=3.0)     # TrainConfig.grad_clip, grad_clip_relative
    limit = clip.threshold()
    result = train_step(..., clip=limit)
    if result.applied:
        clip.record(result.grad_norm, limit)
"""

from __future__ import annotations

import math

__all__ = ["GradientClip"]


class GradientClip:
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
        """The norm to clip at now (``math.inf``: no clipping)."""
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
        """Continue from ``state()``; None (a checkpoint without one) starts afresh."""
        state = state or {}
        self.mean, self.count = float(state.get("mean", 0.0)), int(state.get("count", 0))
        self.clipped = int(state.get("clipped", 0))
