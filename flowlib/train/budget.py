"""A run's budget and its learning rate: how much of the steps and minutes is spent, when the
server's minutes cap ends the run, the warm-up and cosine schedule, and the rollbacks' drops.

    budget = Budget(tc, server_minutes=limits.max_minutes)   # clock=time.monotonic by default
    budget.start()                    # this session's training begins: its clock starts
    budget.lr_at(step)                # warm-up × cosine (if asked) × the rollbacks' lr_drop
    budget.spent(step)                # the run's own budget, or the server's cap, is used up

Time is training wall time across resumes: the ``elapsed_s`` a checkpoint holds plus this
session's time since ``start``. Rolling back to a checkpoint keeps it running.

The schedule fits the budget. The warm-up ends after ``warmup_steps`` steps or
``WARMUP_SHARE`` of the budget (steps or minutes, whichever ends first), whichever comes
first, so a 3-minute run on a busy machine that manages 200 steps still reaches its peak
rate (a fixed 200-step warm-up never did). The cosine then falls to 0 as the budget runs out.

A cosine schedule belongs to one budget. When a resume raises or lowers the budget (the Train
page's "Train 5 more minutes"), a new one starts at that step: a fresh warm-up, then a cosine to 0 at
the new end, over the part of the budget that is left. :meth:`Budget.load` says so in words
(``schedule_note``) for the resume's event, so the chart's rise is explained where it happens.
"""

from __future__ import annotations

import math
import time
from typing import Callable

from flowlib.config import TrainConfig

__all__ = ["Budget", "WARMUP_SHARE"]

WARMUP_SHARE = 0.1          # the warm-up takes at most this share of the budget


class Budget:
    """The budget, the clock it is measured on and the learning-rate schedule of one session
    (see the module's docstring). ``server_minutes``: the server's cap on any run's minutes
    (FLOWLAB_MAX_MINUTES), None for none."""

    def __init__(self, tc: TrainConfig, server_minutes: float | None,
                 clock: Callable[[], float] = time.monotonic):
        self.tc, self.server_minutes, self.clock = tc, server_minutes, clock
        self.lr_scale, self.rollbacks = 1.0, 0   # the rollbacks' product of lr_drop, and their count
        self.elapsed_before = 0.0                # training seconds of earlier sessions
        self.session_start = clock()
        self.server_cap_hit = False              # spent() answered True because of the server's cap
        # where this budget's schedule starts: (step, training seconds); a resume with another
        # budget moves it there (see load)
        self.schedule_start = (0, 0.0)
        self.schedule_note = ""                  # in words, when load() started a new schedule

    def start(self) -> None:
        """This session's training begins now (setup time does not count)."""
        self.session_start = self.clock()

    def elapsed(self) -> float:
        """Training seconds of the run so far, earlier sessions included."""
        return self.elapsed_before + (self.clock() - self.session_start)

    def peak_lr(self) -> float:
        """The learning rate after warm-up, before any decay (lowered by rollbacks)."""
        return self.tc.lr * self.lr_scale

    def fraction(self, step: int, server_cap: bool = True) -> float:
        """How much of the budget is spent, 0..1: the largest of the step and the time fractions,
        the server's minutes cap included unless ``server_cap`` is False (so the cosine of a
        run that the cap will end still anneals by then)."""
        tc, used = self.tc, 0.0
        if tc.max_steps is not None:
            used = step / tc.max_steps
        minutes = [tc.max_minutes] if tc.max_minutes is not None else []
        if server_cap and self.server_minutes is not None:
            minutes.append(self.server_minutes)
        if minutes:
            used = max(used, self.elapsed() / (min(minutes) * 60))
        return min(1.0, max(0.0, used))

    def time_budget_s(self) -> float | None:
        """The run's own time budget in seconds (None without one)."""
        return self.tc.max_minutes * 60 if self.tc.max_minutes is not None else None

    def schedule_fraction(self, step: int) -> float:
        """How much of the current schedule's stretch of the budget is spent at ``step``, 0..1:
        like :meth:`fraction` (the server's cap included), counted from ``schedule_start``."""
        tc, (step0, elapsed0) = self.tc, self.schedule_start
        used = 0.0
        if tc.max_steps is not None:
            used = (step - step0) / max(tc.max_steps - step0, 1)
        minutes = [tc.max_minutes] if tc.max_minutes is not None else []
        if self.server_minutes is not None:
            minutes.append(self.server_minutes)
        if minutes:
            left = min(minutes) * 60 - elapsed0
            used = max(used, (self.elapsed() - elapsed0) / left if left > 0 else 1.0)
        return min(1.0, max(0.0, used))

    def warmup_factor(self, step: int) -> float:
        """The warm-up's factor at ``step``, 0..1: linear over ``warmup_steps`` steps or
        ``WARMUP_SHARE`` of the schedule's budget, whichever ends first."""
        if not self.tc.warmup_steps:
            return 1.0
        by_steps = (step - self.schedule_start[0] + 1) / self.tc.warmup_steps
        by_budget = self.schedule_fraction(step) / WARMUP_SHARE
        return min(1.0, max(by_steps, by_budget))

    def lr_at(self, step: int) -> float:
        """The learning rate of step ``step`` (counted from 0)."""
        decay = 1.0
        if self.tc.lr_schedule == "cosine":
            # Annealing to zero as the budget (steps or minutes, whichever ends first) runs
            # out: a fixed-budget run ends at a lower loss than one stopped at full speed.
            decay = 0.5 * (1.0 + math.cos(math.pi * self.schedule_fraction(step)))
        return self.peak_lr() * self.warmup_factor(step) * decay

    def spent(self, step: int) -> bool:
        """The run's own budget is spent at ``step``, or the server's minutes cap is reached: the
        cap holds whatever budget the run asked for (a run created before the cap was set, or
        with a step budget only); ``server_cap_hit`` then says so."""
        if self.fraction(step, server_cap=False) >= 1.0:
            return True
        if self.server_minutes is not None and self.elapsed() >= self.server_minutes * 60:
            self.server_cap_hit = True
            return True
        return False

    def describe(self, step: int, early_stopped: bool) -> str:
        """What ended the run at ``step``, in words: "Finished {this}: ..."."""
        tc = self.tc
        if self.server_cap_hit:
            of = f" of {tc.max_steps:,}" if tc.max_steps is not None else ""
            return (f"at this server's time cap of {self.server_minutes:g} minutes per run (FLOWLAB_MAX_MINUTES), "
                    f"at step {step:,}{of}")
        if early_stopped:
            return f"at step {step:,} (early stopping)"
        if tc.max_steps is not None and step >= tc.max_steps:
            return f"{step:,} steps"
        return f"{tc.max_minutes:g} minutes ({step:,} steps)"

    def lower_lr(self) -> None:
        """After a rollback: one more rollback, the peak rate ×``lr_drop``; the time keeps running."""
        self.rollbacks += 1
        self.lr_scale *= self.tc.lr_drop

    def state(self) -> dict:
        """The checkpoint's part: ``elapsed_s``, ``lr_scale``, ``rollbacks``, ``schedule_start``."""
        return {"elapsed_s": self.elapsed(), "lr_scale": self.lr_scale, "rollbacks": self.rollbacks,
                "schedule_start": list(self.schedule_start)}

    def load(self, ckpt: dict) -> None:
        """Continue from a checkpoint's ``state()`` (absent keys: a fresh budget). When the
        checkpoint's budget (its ``train``) differs from this run's, a new schedule starts at
        the checkpoint's step and ``schedule_note`` says so in words."""
        self.elapsed_before = float(ckpt.get("elapsed_s", 0.0))
        self.lr_scale = float(ckpt.get("lr_scale", 1.0))
        self.rollbacks = int(ckpt.get("rollbacks", 0))
        start = ckpt.get("schedule_start") or (0, 0.0)
        self.schedule_start = (int(start[0]), float(start[1]))
        self.schedule_note = ""
        before = ckpt.get("train") or {}
        old = (before.get("max_steps", self.tc.max_steps), before.get("max_minutes", self.tc.max_minutes))
        new = (self.tc.max_steps, self.tc.max_minutes)
        if old != new and self.tc.lr_schedule == "cosine":   # a constant rate has nothing to restart
            step = int(ckpt.get("step", 0))
            self.schedule_start = (step, self.elapsed_before)
            self.schedule_note = self._new_schedule_words(old, new)

    def _new_schedule_words(self, old: tuple, new: tuple) -> str:
        def budget(steps, minutes) -> str:
            parts = ([f"{steps:,} steps"] if steps is not None else []) + \
                    ([f"{minutes:g} minutes"] if minutes is not None else [])
            return " and ".join(parts) or "none"
        tc = self.tc
        words = f"the budget changed from {budget(*old)} to {budget(*new)}, so the learning rate "
        words += f"warms up again to {self.peak_lr():.2g}" if tc.warmup_steps else f"goes back to {self.peak_lr():.2g}"
        return words + " and falls along a new cosine to 0 by the new end"
