"""Server-wide limits (classroom caps, concurrency, timing windows) and the environment parsing.

    from flowlib.limits import Limits, env_flag
    limits = Limits.from_env()          # what RunStore() uses when no Limits is given
    limits.check_train(train_dict)      # ValueError naming the cap and its variable
    env_flag("FLOWLAB_CLASSROOM")       # "1" / "true" / "yes" / "on" -> True

The run store enforces these limits; the policy lives here so the store stays a store and
the app, the worker and the CLI read the same variables the same way.

Environment:

``FLOWLAB_MAX_CONCURRENT``    active runs allowed on this server (default 1)
``FLOWLAB_CLASSROOM=1``       classroom mode: caps below default to 5000 steps, batch 256,
                              60 minutes, 1 concurrent run, unless set explicitly
``FLOWLAB_MAX_STEPS``         most training steps a run may ask for
``FLOWLAB_MAX_BATCH``         largest batch size a run may ask for
``FLOWLAB_MAX_MINUTES``       longest time budget a run may ask for
``FLOWLAB_HEARTBEAT_STALE_S`` seconds without a heartbeat before a running run is ``lost`` (30)
``FLOWLAB_START_TIMEOUT_S``   seconds a queued run may wait for its process to come up (120)
``FLOWLAB_DB_TIMEOUT_S``      SQLite busy timeout and the write-retry bound, seconds (5)
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

__all__ = ["Limits", "env_flag", "env_int", "env_float"]

_TRUE_WORDS = ("1", "true", "yes", "on")


def env_flag(name: str) -> bool:
    """True when the variable is set to 1 / true / yes / on (any case); anything else is False."""
    return os.environ.get(name, "").strip().lower() in _TRUE_WORDS


def env_int(name: str, default: int | None, lo: int = 1) -> int | None:
    """An integer ≥ lo from the environment, ``default`` when unset; ValueError naming it if bad."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"environment variable {name} must be an integer ≥ {lo}, got {raw!r}") from None
    if value < lo:
        raise ValueError(f"environment variable {name} must be an integer ≥ {lo}, got {value}")
    return value


def env_float(name: str, default: float) -> float:
    """A positive finite number from the environment, ``default`` when unset; ValueError if bad."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"environment variable {name} must be a positive number, got {raw!r}")
    return value


@dataclass(frozen=True)
class Limits:
    """Server-wide caps and timing windows (see the module docstring for the variables)."""

    max_concurrent: int = 1           # active runs at once; 1 keeps a CPU server responsive
    max_steps: int | None = None      # classroom cap on a run's step budget
    max_batch: int | None = None      # classroom cap on batch size (memory, fairness)
    max_minutes: float | None = None  # classroom cap on a run's time budget
    classroom: bool = False           # classroom mode: runs must have a capped budget
    stale_after_s: float = 30.0       # heartbeat age that marks a running run lost
    start_timeout_s: float = 120.0    # a queued run whose process never came up is lost after this
    db_timeout_s: float = 5.0         # SQLite busy timeout, and the bound on write retries

    @classmethod
    def from_env(cls) -> "Limits":
        classroom = env_flag("FLOWLAB_CLASSROOM")
        minutes_given = bool(os.environ.get("FLOWLAB_MAX_MINUTES", "").strip())
        max_minutes = env_float("FLOWLAB_MAX_MINUTES", 60.0) if (classroom or minutes_given) else None
        return cls(
            max_concurrent=env_int("FLOWLAB_MAX_CONCURRENT", 1),
            max_steps=env_int("FLOWLAB_MAX_STEPS", 5000 if classroom else None),
            max_batch=env_int("FLOWLAB_MAX_BATCH", 256 if classroom else None),
            max_minutes=max_minutes,
            classroom=classroom,
            stale_after_s=env_float("FLOWLAB_HEARTBEAT_STALE_S", 30.0),
            start_timeout_s=env_float("FLOWLAB_START_TIMEOUT_S", 120.0),
            db_timeout_s=env_float("FLOWLAB_DB_TIMEOUT_S", 5.0),
        )

    def check_train(self, train: dict) -> None:
        """Refuse a training config over this server's caps (ValueError naming cap and variable)."""
        steps, batch, minutes = train.get("max_steps"), train.get("batch_size"), train.get("max_minutes")
        if self.max_batch is not None and isinstance(batch, int) and batch > self.max_batch:
            raise ValueError(f"batch_size {batch} is above this server's limit of {self.max_batch} "
                             "(FLOWLAB_MAX_BATCH)")
        if self.max_steps is not None:
            if steps is None and (self.classroom or minutes is None):
                raise ValueError(f"a step budget (max_steps) of at most {self.max_steps} is required on "
                                 "this server (FLOWLAB_MAX_STEPS)")
            if isinstance(steps, int) and steps > self.max_steps:
                raise ValueError(f"max_steps {steps} is above this server's limit of {self.max_steps} "
                                 "steps per run (FLOWLAB_MAX_STEPS)")
        if self.max_minutes is not None and isinstance(minutes, (int, float)) and minutes > self.max_minutes:
            raise ValueError(f"max_minutes {minutes} is above this server's limit of {self.max_minutes:g} "
                             "minutes per run (FLOWLAB_MAX_MINUTES)")
