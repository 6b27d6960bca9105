"""How many CPU threads a training run uses, chosen by measurement while it trains.

On a machine of its own, a run is fastest with one torch thread per core. On a shared
machine (a class: the Streamlit server, browsers and other runs on the same cores) that is
no longer true: OpenMP's threads wait for each other at every parallel region, and when one
of them is descheduled the others spin or sleep until it comes back. Measured here on 2
cores (mnist-fast, batch 64, benchmarks/RESULTS.md): quiet, 2 threads 485 img/s and 1 thread
378; beside two busy processes, 2 threads fell to 9 img/s while 1 thread kept 189.

No fixed count is right for both, so :class:`ThreadGovernor` measures: it times a short
window of training steps at each candidate count (ending a window early once it is 3× slower
than a count already measured; starting from ``start_threads`` when the caller saw the
machine busy), keeps the fastest, re-checks every
``recheck_s`` seconds (or at once when throughput falls well below what was measured), and
so follows the load as other programs come and go. A probe costs a few steps at a worse
count; a wrong fixed count can cost most of the throughput (9 instead of 189 img/s above)
for the whole run.

OpenMP's wait policy stays at its default (threads spin briefly before sleeping): the
passive policy rescued some throughput under contention here but cost 19 % on a quiet
machine (2 threads, 508 -> 411 img/s), and once the governor has dropped to one thread
there is no partner thread left to wait for.
"""

from __future__ import annotations

import os
import time

__all__ = ["ThreadGovernor", "candidate_thread_counts"]


def candidate_thread_counts(cores: int) -> list[int]:
    """Counts worth trying on ``cores`` cores, most first: all, then halves down to 1."""
    cores = max(1, int(cores))
    counts, n = [], cores
    while n >= 1:
        counts.append(n)
        n //= 2
    return counts


class ThreadGovernor:
    """Pick torch's intra-op thread count by measured images/s, and keep re-checking.

    The training loop calls :meth:`step_done` after every step with that step's wall time
    and batch size; the governor switches ``torch.set_num_threads`` between windows.

    >>> governor = ThreadGovernor(cores=2)
    >>> for batch in batches:
    ...     t0 = time.perf_counter(); train_step(batch)
    ...     governor.step_done(time.perf_counter() - t0, len(batch))
    """

    def __init__(self, cores: int | None = None, probe_steps: int = 6, recheck_s: float = 30.0,
                 drop_ratio: float = 0.7, set_threads=None, clock=time.monotonic,
                 start_threads: int | None = None, give_up_ratio: float = 3.0):
        if set_threads is None:
            import torch
            set_threads = torch.set_num_threads
        self.candidates = candidate_thread_counts(cores or os.cpu_count() or 1)
        self.probe_steps, self.recheck_s, self.drop_ratio = probe_steps, recheck_s, drop_ratio
        self._set_threads, self._clock = set_threads, clock
        self.threads = self.candidates[0] if len(self.candidates) == 1 else None
        self.give_up_ratio = give_up_ratio
        if start_threads in self.candidates and len(self.candidates) > 1:
            # a busy machine at the start: probe from this count (the fewest), the others after
            self._set_threads(start_threads)
            self.threads = start_threads
        self.history: list[tuple[int, float]] = []   # (threads, images/s) of every finished probe
        self._rates: dict[int, float] = {}
        self._queue: list[int] = []
        self._window_s = self._window_images = 0.0
        self._window_steps = 0
        self._skip = 0
        self._chosen_rate = None
        self._chosen_at = 0.0
        if self.active:
            self._start_probe()
            if start_threads is not None:
                # a busy start measures only this count; the others wait for the first re-check
                self._queue = self._queue[:1]

    @property
    def active(self) -> bool:
        """False when there is nothing to choose (one core)."""
        return len(self.candidates) > 1

    def _use(self, threads: int) -> None:
        if threads != self.threads:
            self._set_threads(threads)
            self.threads = threads
        # The first step after a switch pays for waking or parking threads: not counted.
        self._skip = 1
        self._window_s = self._window_images = 0.0
        self._window_steps = 0

    def _start_probe(self) -> None:
        self._rates = {}
        # Measure the current count first (no switch), then the others; the first probe
        # starts from the most threads, which is what a quiet machine wants.
        current = self.threads or self.candidates[0]
        self._queue = [current] + [c for c in self.candidates if c != current]
        self._use(current)

    def step_done(self, seconds: float, images: int) -> None:
        if not self.active:
            return
        if self._skip:
            self._skip -= 1
            return
        self._window_s += max(seconds, 1e-9)
        self._window_images += images
        self._window_steps += 1
        if self._queue:                                   # probing
            rate = self._window_images / self._window_s
            # A count already far slower than one measured before ends its probe at once: on a
            # busy machine one step with every thread can take seconds (OpenMP's threads wait
            # for a descheduled partner), and six of them held a run's first point for 30 s.
            hopeless = bool(self._rates) and rate * self.give_up_ratio < max(self._rates.values())
            if self._window_steps < self.probe_steps and not hopeless:
                return
            self._rates[self._queue.pop(0)] = rate
            self.history.append((self.threads, rate))
            if self._queue:
                self._use(self._queue[0])
                return
            best = max(self._rates, key=self._rates.get)
            self._chosen_rate = self._rates[best]
            self._chosen_at = self._clock()
            self._use(best)
            return
        # Running at the chosen count: re-probe on schedule, or at once if throughput fell.
        if self._window_steps < self.probe_steps:
            return
        rate = self._window_images / self._window_s
        self._window_s = self._window_images = 0.0
        self._window_steps = 0
        fell = self._chosen_rate is not None and rate < self.drop_ratio * self._chosen_rate
        if fell or self._clock() - self._chosen_at >= self.recheck_s:
            self._start_probe()
