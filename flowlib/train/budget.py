"""A run's budget and its learning rate: how much of the steps and minutes is spent, when the
server's minutes cap ends the run, the warm-up and cosine schedule, and the rollbacks' drops.

    budget = Budget(tc, server_minutes=limits.max_minutes)   # clock=time.monotonic by default
    budget.start()                    # this session's training begins: its clock starts
    budget.lr_at(step)                # warm-up × cosine (if asked) × the rollbacks' lr_drop
    budget.spent(step)                # the run's own budget, or the server's cap, is used up

Time is training wall time across resumes: the ``elapsed_s`` a checkpoint holds plus this
session's time since ``start``. Rolling back to a checkpoint keeps it running.
"""

from __future__ import annotations

import math
import time
from typing import Callable

from flowlib.config import TrainConfig

__all__ = ["Budget"]


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

    def lr_at(self, step: int) -> float:
        """The learning rate of step ``step`` (counted from 0)."""
        warm = min(1.0, (step + 1) / self.tc.warmup_steps) if self.tc.warmup_steps else 1.0
        decay = 1.0
        if self.tc.lr_schedule == "cosine":
            # Annealing to zero as the budget (steps or minutes, whichever ends first) runs
            # out: a fixed-budget run ends at a lower loss than one stopped at full speed.
            decay = 0.5 * (1.0 + math.cos(math.pi * self.fraction(step)))
        return self.peak_lr() * warm * decay

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
        """The checkpoint's part: ``elapsed_s``, ``lr_scale``, ``rollbacks``."""
        return {"elapsed_s": self.elapsed(), "lr_scale": self.lr_scale, "rollbacks": self.rollbacks}

    def load(self, ckpt: dict) -> None:
        """Continue from a checkpoint's ``state()`` (absent keys: a fresh budget)."""
        self.elapsed_before = float(ckpt.get("elapsed_s", 0.0))
        self.lr_scale = float(ckpt.get("lr_scale", 1.0))
        self.rollbacks = int(ckpt.get("rollbacks", 0))
