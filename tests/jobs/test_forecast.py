"""Estimates that learn: a run's pace from this device's earlier runs and its load now."""

import pytest

from flowlib.config import TrainConfig
from flowlib.jobs.estimate import SpeedRequest
from flowlib.jobs.forecast import DEFAULT_MEASURED_SHARE, DEFAULT_STARTUP_S, forecast, pace_so_far
from flowlib.store.request import RunRequest
from tests.runs_kit import TINY

TC = TrainConfig(dataset="faces", batch_size=64, max_steps=None, max_minutes=3.0, threads=1)


def _past(store, *, steps=1000, seconds=100.0, busy=0.0, startup=3.0, first=4.0, config=TINY, batch=64):
    """A finished run that trained ``steps`` steps in ``seconds`` with ``busy`` threads beside it."""
    run_id = store.create_run(RunRequest("past", config, TC.replace(batch_size=batch)))
    rows = [(0, 0.0, "startup_s", startup), (10, 0.0, "first_point_s", first)]
    for i in range(1, 11):
        step = steps * i // 10
        rows += [(step, 0.0, "elapsed_s", seconds * i / 10), (step, 0.0, "busy_beside", busy)]
    store.append_metrics(run_id, rows)
    return run_id


def _request(config=TINY, batch=64):
    return SpeedRequest.for_run(config, TC.replace(batch_size=batch))


def test_without_history_the_measurement_is_scaled_by_a_default_share(store):
    fc = forecast(store, _request(), TC, {"images_per_s": 1000.0, "source": "measured"}, busy_now=0.0, n_cores=2)
    assert fc.images_per_s == pytest.approx(1000.0 * DEFAULT_MEASURED_SHARE)
    assert fc.startup_s == DEFAULT_STARTUP_S
    assert fc.first_point_s == pytest.approx(DEFAULT_STARTUP_S + 10 * 64 / fc.images_per_s)
    assert forecast(store, _request(), TC, None, busy_now=0.0) is None


def test_the_second_identical_run_is_estimated_from_the_first_ones_outcome(store):
    # the first run was estimated from a measurement; it made 1,000 steps of 64 in 100 s
    first = forecast(store, _request(), TC, {"images_per_s": 5000.0}, busy_now=0.0, n_cores=2)
    _past(store)
    second = forecast(store, _request(), TC, {"images_per_s": 5000.0}, busy_now=0.0, n_cores=2)
    assert first.steps_in(3.0) != second.steps_in(3.0)
    assert second.images_per_s == pytest.approx(640.0) and second.steps_in(3.0) == 1800
    assert second.startup_s == pytest.approx(3.0) and second.first_point_s == pytest.approx(4.0)
    assert "1 earlier run of these settings" in second.source
    assert second.seconds_for(1000) == pytest.approx(3.0 + 100.0)


def test_a_busy_machine_scales_the_pace_by_what_busy_runs_here_got(store):
    _past(store, seconds=100.0, busy=0.0)                  # 640 images/s alone
    _past(store, seconds=300.0, busy=2.0)                  # 213 beside 2 busy threads: a = 2
    quiet = forecast(store, _request(), TC, None, busy_now=0.0, n_cores=2)
    busy = forecast(store, _request(), TC, None, busy_now=2.0, n_cores=2)
    assert quiet.images_per_s == pytest.approx(640.0)
    assert busy.images_per_s == pytest.approx(640.0 / 3) and busy.share == pytest.approx(1 / 3)
    assert busy.startup_s == pytest.approx(3 * quiet.startup_s)
    assert "threads of other programs are ready to run now" in busy.source
    # without a busy run to learn from, a fair share: half of 2 cores beside 2 busy threads
    store2_runs = [r["id"] for r in store.list_runs()]
    store.delete_run(store2_runs[0])
    assert forecast(store, _request(), TC, None, busy_now=2.0, n_cores=2).share == pytest.approx(0.5)


def test_other_settings_teach_how_far_a_measurement_overshoots(store):
    other = TINY.replace(hidden=8)
    _past(store, config=other)                              # 640 images/s where 800 were measured
    measured = {str(other.to_dict()): 800.0}
    fc = forecast(store, _request(), TC, {"images_per_s": 500.0}, busy_now=0.0, n_cores=2,
                  measured_of=lambda run: measured.get(str(run["config"])))
    assert fc.images_per_s == pytest.approx(500.0 * 0.8)
    assert "what 1 earlier run here made of theirs" in fc.source


def test_a_short_run_says_nothing_about_the_pace(store):
    _past(store, steps=30, seconds=2.0)
    fc = forecast(store, _request(), TC, {"images_per_s": 1000.0}, busy_now=0.0, n_cores=2)
    assert fc.images_per_s == pytest.approx(1000.0 * DEFAULT_MEASURED_SHARE)
    assert fc.startup_s == pytest.approx(3.0)               # its start-up still counts


def test_pace_so_far_reads_the_last_half_minute_of_training_time():
    m = {"elapsed_s": {"step": [10, 20, 30, 40, 50], "value": [1.0, 11.0, 21.0, 41.0, 61.0]}}
    assert pace_so_far(m, 64) == pytest.approx(20 * 64 / 40.0)   # from 21 s to 61 s: 20 steps in 40 s
    assert pace_so_far({"elapsed_s": {"step": [10], "value": [1.0]}}, 64) is None
    assert pace_so_far({}, 64) is None


def test_the_load_now_is_the_steady_part_not_a_burst(monkeypatch):
    # a page asking for its estimate is itself a burst of work for the browser and server
    from flowlib.machine import load

    monkeypatch.setattr(load, "_watcher", object())            # no thread: the samples are ours
    monkeypatch.setattr(load, "_samples", __import__("collections").deque([0.0] * 30 + [4.0] * 10))
    assert load.busy_lately() == 0.0
    monkeypatch.setattr(load, "_samples", __import__("collections").deque([2.0] * 30 + [4.0] * 10))
    assert load.busy_lately() == 2.0                               # a run training beside stays
