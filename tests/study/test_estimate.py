"""A study's time estimate: each run's parts from this device's speed, shared among the workers and
slowed by the load, then corrected by the trials that ended (an arm's own finished runs, else the
first estimate scaled by how far the finished runs were off)."""

from __future__ import annotations

import pytest

from flowlib.study.estimate import EVAL_SPEEDUP, RUN_OVERHEAD_S, remaining_seconds, run_seconds, study_seconds
from flowlib.study.spec import StudySpec, plan

MNIST = (1, 28, 28)
P = plan(StudySpec.from_preset("coupling", seeds=3, steps=100), MNIST)


def test_a_run_is_its_training_evaluations_test_pass_and_start_up():
    tc = P.arms[0].train
    expected = (100 * tc.batch_size / 500.0 + (100 // tc.eval_every * tc.validation_images + 10_000)
                / (EVAL_SPEEDUP * 500.0) + RUN_OVERHEAD_S)
    assert run_seconds(tc, 500.0) == pytest.approx(expected)


def test_the_study_is_shared_among_workers_slowed_by_load_and_unknown_without_every_speed():
    per_run = {a.name: run_seconds(a.train, 400.0) for a in P.arms}
    whole = 3 * sum(per_run.values())
    speeds = {a.name: 400.0 for a in P.arms}
    assert study_seconds(P, speeds, workers=1, share=1.0) == pytest.approx(whole)
    assert study_seconds(P, speeds, workers=2, share=1.0) == pytest.approx(whole / 2)
    assert study_seconds(P, speeds, workers=2, share=0.5) == pytest.approx(whole)       # a busy machine
    # the Studies page passes the store's training slots: beyond the study's runs they stay idle
    assert study_seconds(P, speeds, workers=64, share=1.0) == pytest.approx(whole / P.n_runs)
    assert study_seconds(P, {"additive": 400.0}, share=1.0) is None


def record(arm, seed, state, took=None):
    return {"arm": arm, "seed": seed, "role": "run", "state": state,
            "started": 100.0 if state != "waiting" else None, "ended": 100.0 + took if took else None}


def test_the_rest_is_corrected_by_the_runs_that_ended():
    first = {"additive": 10.0, "affine": 10.0}
    records = [record("additive", 0, "finished", 20.0), record("additive", 1, "finished", 22.0),
               record("additive", 2, "waiting"),
               record("affine", 0, "running"), record("affine", 1, "waiting"), record("affine", 2, "waiting")]
    # additive: its own median, 21 s; affine: 10 s scaled by the finished runs' median ratio 2.1;
    # the running affine run counts as half a run left
    assert remaining_seconds(P, records, first, workers=1) == pytest.approx(1 * 21.0 + 2.5 * 21.0)
    assert remaining_seconds(P, records, first, workers=2) == pytest.approx((21.0 + 2.5 * 21.0) / 2)
    assert remaining_seconds(P, [record("additive", 0, "waiting")], {}, workers=1) is None


def test_the_load_share_is_what_other_programs_leave_of_the_cores_now(monkeypatch):
    from flowlib.study import estimate

    monkeypatch.setattr(estimate.os, "cpu_count", lambda: 2)
    assert estimate.load_share(2, busy=0.0) == 1.0
    assert estimate.load_share(1, busy=1.0) == 1.0          # a one-thread run still gets a whole core
    assert estimate.load_share(2, busy=1.0) == pytest.approx(2 / 3)   # three threads ready, two cores
    assert estimate.load_share(1, busy=2.0) == pytest.approx(2 / 3)   # beside a two-thread run
    assert estimate.load_share(2, busy=12.0) == 0.2         # never below a fifth
    # by default it reads the machine's runnable threads of the last seconds, not the 1-minute
    # load average (which still counts a run that ended a minute ago)
    monkeypatch.setattr("flowlib.machine.load.busy_lately", lambda: 1.0)
    monkeypatch.setattr(estimate.os, "getloadavg", lambda: (9.0, 9.0, 9.0))
    assert estimate.load_share(2) == pytest.approx(2 / 3)
