"""The training curve: means of the step statistics over windows of ``log_every`` steps.

    window = MetricWindow(cfg, tc, journal, images_per_epoch, on_log=None, dist=dist)
    window.add(result, images=64, seconds=0.07)      # after every step
    window.write(step, lr, elapsed_s, last_test)      # every log_every steps: one store write
"""

from __future__ import annotations

import math
from typing import Callable

from flowlib.config import FlowConfig, TrainConfig

from .distributed import Dist
from .journal import Journal
from .step import StepResult

__all__ = ["MetricWindow"]


class MetricWindow:
    """The steps since the last metrics row: sums of the statistics of the applied (finite)
    steps, images and training seconds of all of them.

    ``write`` turns them into one row per key (``flowlib.train.loop`` lists the keys): means
    over the applied steps, images/s over the window's training time (evaluations and
    checkpoints are outside it), and hands the same values to ``on_log`` as one dict (with the
    step, the latest test score and ``max_steps``).
    """

    def __init__(self, cfg: FlowConfig, tc: TrainConfig, journal: Journal, images_per_epoch: int,
                 on_log: Callable[[dict], None] | None, dist: Dist):
        self.cfg, self.tc, self.journal, self.dist = cfg, tc, journal, dist
        self.images_per_epoch, self.on_log = images_per_epoch, on_log
        self.reset()

    def reset(self) -> None:
        self.sums = [0.0] * (self.cfg.levels + 4)   # sums of: bpd, grad norm, priors..., logdet, dequant
        self.good, self.images, self.seconds = 0, 0, 0.0

    def add(self, result: StepResult, images: int, seconds: float) -> None:
        """Count one step of ``images`` images (over every rank) that took ``seconds``."""
        if result.applied:
            self.good += 1
            for i, v in enumerate(result.stats):
                self.sums[i] += v
        self.images += images
        self.seconds += seconds

    def write(self, step: int, lr: float, elapsed: float, last_test: float | None) -> None:
        """One metrics row per key at ``step``, one store write (rank 0), then a fresh window.

        ``lr``: the rate of the window's last step; ``elapsed``: the run's training seconds so
        far; ``last_test``: the latest held-out score, for ``on_log`` only."""
        if not self.images or not self.dist.is_main:
            self.reset()
            return
        rows = []
        if self.good:
            means = [v / self.good for v in self.sums]
            keys = ["train_bpd", "grad_norm"] + [f"bpd_prior_L{i}" for i in range(self.cfg.levels)] + ["bpd_logdet"]
            if self.cfg.dequantization != "uniform":
                keys.append("bpd_dequant")   # always 0 with uniform noise: not worth a chart
            rows.append(("loss_nats", means[0] * self.cfg.dims * math.log(2)))
            rows += list(zip(keys, means))
        rows += [("lr", lr), ("images_per_s", self.images / max(self.seconds, 1e-9)), ("elapsed_s", elapsed),
                 ("epoch", step * self.tc.batch_size / self.images_per_epoch)]
        self.journal.metrics(step, rows)
        self.journal.flush()
        self.reset()
        if self.on_log is not None:
            self.on_log({"step": step, **dict(rows), "test_bpd": last_test, "max_steps": self.tc.max_steps})
