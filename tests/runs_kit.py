"""What the tests that train share: the tiny run (a 2-level, width-4 flow on the faces, a few
seconds of training on one thread), and stopping every run a test left training.

    from tests.runs_kit import TINY, tiny_train, queued_run, stop_training
    run_id = queued_run(store, "name", max_steps=12)      # created and holding a slot
    stop_training(runs_dir)                               # workers outlive a test by design
    clock = FakeClock(); store = RunStore(root, limits, clock=clock.clock())   # time the test moves
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from flowlib.config import TrainConfig, preset
from flowlib.store.request import RunRequest

TINY = preset("faces-fast", levels=2, steps=1, hidden=4, permutation="reverse")  # fast on 2 busy cores

TINY_TRAIN = dict(dataset="faces", batch_size=8, max_steps=30, warmup_steps=5, log_every=5,
                  eval_every=20, first_eval=10, eval_subset=40, samples_per_temperature=4,
                  lr_schedule="constant",   # the learning-rate checks read the warm-up alone
                  grid_every_s=0.0,         # grids at evaluations only: their steps do not depend on the clock
                  threads=1)   # a fixed count: bit-exact runs (None lets the thread governor follow the load)


class FakeClock:
    """A store's wall and monotonic clocks, moved by the test: ``advance(s)`` moves both,
    ``step_wall(s)`` the wall clock alone (an NTP step, a suspended laptop's catch-up)."""

    def __init__(self, wall: float = 1_700_000_000.0, monotonic: float = 1000.0):
        self.wall, self.monotonic = wall, monotonic

    def clock(self):
        from flowlib.store.liveness import Clock
        return Clock(wall=lambda: self.wall, monotonic=lambda: self.monotonic)

    def advance(self, seconds: float) -> None:
        self.wall += seconds
        self.monotonic += seconds

    def step_wall(self, seconds: float) -> None:
        self.wall += seconds


def tiny_train(**changes) -> TrainConfig:
    """The tiny run's TrainConfig with some fields changed."""
    return TrainConfig(**{**TINY_TRAIN, **changes})


def queued_run(store, name: str = "t", **changes) -> int:
    """A tiny run created in ``store`` and given a slot (``queued``), ready for ``train_run``."""
    run_id = store.create_run(RunRequest(name, TINY, tiny_train(**changes)))
    store.request_start(run_id)
    return run_id


# The fault and storage tests' variant: a metrics row every 2 steps, no periodic evaluation,
# the default cosine schedule.
FAULT_TRAIN = dict(log_every=2, eval_every=10**6, samples_per_temperature=2, lr_schedule="cosine")


def fault_train(**changes) -> dict:
    """The fault tests' tiny TrainConfig as a dict."""
    return tiny_train(**{**FAULT_TRAIN, **changes}).to_dict()


def queued_fault_run(store, **changes) -> int:
    """A fault-test tiny run named "f", created in ``store`` and holding a slot."""
    run_id = store.create_run(RunRequest.from_dicts("f", TINY.to_dict(), fault_train(**changes)))
    store.request_start(run_id)
    return run_id


def wait_until(predicate, timeout: float = 60.0, what: str = "condition", poll: float = 0.05):
    """``predicate()``'s first truthy value, polled every ``poll`` s; TimeoutError naming ``what``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll)
    raise TimeoutError(what)


def stop_training(runs_dir: Path, timeout: float = 30.0) -> None:
    """Stop every run still training in this store (workers outlive the server by design)."""
    from flowlib.store.runs import ACTIVE_STATUSES, RunStore

    store = RunStore(runs_dir)
    active = [r for r in store.list_runs() if r["status"] in ACTIVE_STATUSES]
    for r in active:
        if r.get("pid") is None:    # a slot a test claimed with no worker behind it: nobody to ask
            store.finish_run(r["id"], "stopped", "Stopped by the test's teardown.")
        else:
            store.request_stop(r["id"])
    active = [r for r in store.list_runs() if r["status"] in ACTIVE_STATUSES]
    deadline = time.monotonic() + timeout
    while active and time.monotonic() < deadline:
        time.sleep(0.5)
        active = [r for r in store.list_runs() if r["status"] in ACTIVE_STATUSES]
    for r in active:  # did not stop in time: end the worker we started, by its pid
        if r.get("pid"):
            try:
                os.kill(int(r["pid"]), signal.SIGTERM)
            except (ProcessLookupError, PermissionError):
                pass
