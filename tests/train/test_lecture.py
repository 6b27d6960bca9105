"""A run that teaches in lecture time: a schedule that fits the budget, live sample grids
between evaluations, evaluations spread over a time budget, and the pace rows the
estimates learn from."""

import math

import pytest

from flowlib.config import TrainConfig
from flowlib.train.budget import WARMUP_SHARE, Budget
from flowlib.train.collaborators import Collaborators
from flowlib.train.heartbeat import Monitor
from flowlib.train.loop import TrainingSession
from flowlib.train.samples import GridClock
from tests.runs_kit import queued_run


def _budget(clock, **changes) -> Budget:
    tc = TrainConfig(**{"lr": 0.01, "warmup_steps": 200, "lr_schedule": "cosine", **changes})
    return Budget(tc, server_minutes=None, clock=clock)


def test_the_warm_up_of_a_three_minute_run_ends_within_its_budget_however_few_steps_it_gets():
    # The lecture's run: 3 minutes, ~1.15 steps/s on a busy machine (207 steps in all). A
    # 200-step warm-up never finished: the rate peaked at 0.0029, not the preset's 0.01.
    now = [0.0]
    budget = _budget(lambda: now[0], max_steps=None, max_minutes=3.0)
    budget.start()
    rates = []
    for step in range(207):
        now[0] = step / 1.15
        rates.append(budget.lr_at(step))
    assert max(rates) > 0.0095
    # warm-up over the first 10 % of the 180 s: at 18 s the rate is the peak times the cosine
    now[0] = 18.0
    assert budget.lr_at(20) == pytest.approx(0.01 * 0.5 * (1 + math.cos(math.pi * WARMUP_SHARE)))
    now[0] = 9.0   # half-way through the warm-up
    assert budget.lr_at(10) == pytest.approx(0.01 * 0.5 * 0.5 * (1 + math.cos(math.pi * 0.05)))


def test_a_step_budget_shorter_than_the_warm_up_still_reaches_the_peak():
    budget = _budget(lambda: 0.0, max_steps=100)
    assert budget.lr_at(10) == pytest.approx(0.01 * 0.5 * (1 + math.cos(math.pi * 0.1)))
    assert budget.lr_at(4) == pytest.approx(0.01 * 0.4 * 0.5 * (1 + math.cos(math.pi * 0.04)))
    # a long budget keeps the configured warm-up: 200 steps of 20,000
    long = _budget(lambda: 0.0, max_steps=20_000)
    assert long.lr_at(99) == pytest.approx(0.01 * 0.5 * 0.5 * (1 + math.cos(math.pi * 99 / 20_000)))


def test_a_raised_budget_starts_a_new_schedule_where_the_run_resumes_and_says_so():
    # "Train 5 more minutes" after a 3-minute run: the old schedule's cosine had reached 0 at
    # minute 3; read against 8 minutes it jumped back to 0.0069 at once, with no word why.
    now = [100.0]
    budget = _budget(lambda: now[0], max_steps=None, max_minutes=8.0)
    budget.load({"elapsed_s": 180.0, "step": 207, "lr_scale": 1.0, "rollbacks": 0,
                 "train": {"max_steps": None, "max_minutes": 3.0}})
    budget.start()
    assert budget.schedule_start == (207, 180.0)
    assert "from 3 minutes to 8 minutes" in budget.schedule_note and "warms up again" in budget.schedule_note
    assert budget.lr_at(207) < 1e-4                                   # no jump: a new warm-up from 0
    now[0] += 30.0                                                    # 10 % of the 5 added minutes
    assert budget.lr_at(240) == pytest.approx(0.01 * 0.5 * (1 + math.cos(math.pi * 0.1)))
    now[0] += 270.0
    assert budget.lr_at(400) == 0.0 and budget.spent(400)
    state = budget.state()
    assert state["schedule_start"] == [207, 180.0]
    # the next resume with the same budget continues that schedule: no new warm-up, no words
    again = _budget(lambda: 0.0, max_steps=None, max_minutes=8.0)
    again.load({**state, "step": 300, "train": {"max_steps": None, "max_minutes": 8.0}})
    assert again.schedule_start == (207, 180.0) and again.schedule_note == ""


def test_a_resume_with_the_same_budget_keeps_the_schedule():
    budget = _budget(lambda: 0.0, max_steps=1000)
    budget.load({"elapsed_s": 50.0, "step": 400, "train": {"max_steps": 1000, "max_minutes": None}})
    assert budget.schedule_start == (0, 0.0) and budget.schedule_note == ""
    assert budget.lr_at(400) == pytest.approx(0.01 * 0.5 * (1 + math.cos(math.pi * 0.4)))


def test_the_grid_clock_draws_every_ten_seconds_then_spaces_out_and_caps_its_cost():
    clock = GridClock(10.0)
    assert clock.due(0.0)
    clock.drawn(0.0, cost_s=0.02)
    assert not clock.due(9.9) and clock.due(10.0)
    clock.drawn(1000.0, cost_s=0.02)
    assert not clock.due(1050.0) and clock.due(1060.0)      # 5 % of the time so far: ~53 s apart
    clock.drawn(10.0, cost_s=1.0)                            # a grid that took a second
    assert not clock.due(55.0) and clock.due(60.0)           # at most 2 % of the time
    assert not GridClock(0.0).due(1e9)


def _session_on_a_fake_clock(store, seconds_per_step: float, **changes) -> TrainingSession:
    """A tiny run whose clock reads ``seconds_per_step`` × the step: 'time' passes with training."""
    run_id = queued_run(store, **changes)
    holder = []
    clock = lambda: holder[0].step * seconds_per_step if holder else 0.0   # noqa: E731
    session = TrainingSession(store, store.get_run(run_id), Monitor(store, run_id),
                              collaborators=Collaborators(clock=clock))
    holder.append(session)
    return session


def test_live_grids_come_every_ten_seconds_of_training_between_the_evaluations(store):
    session = _session_on_a_fake_clock(store, 2.0, grid_every_s=10.0)   # 5 steps = 10 s
    session.setup()
    result = session.run()
    assert result.status == "finished"
    steps = [s["step"] for s in store.samples(session.run_id)]
    # step 0 before training, evaluations at 10 and 20; live ones 10 s after each (30: the last)
    assert steps == [0, 5, 10, 15, 20, 25, 30]
    grid_s = store.metrics(session.run_id, keys=["grid_s"])["grid_s"]
    assert grid_s["step"] == [5, 15, 25, 30] and all(0 < v < 5 for v in grid_s["value"])


@pytest.mark.slow
def test_a_time_budget_spreads_evaluations_over_it_whatever_eval_every_says(store):
    # 1 s per step, a 1-minute budget: about 60 steps, and eval_every far beyond them
    session = _session_on_a_fake_clock(store, 1.0, max_steps=None, max_minutes=1.0, eval_every=10**6,
                                       first_eval=0)
    session.setup()
    assert session.run().status == "finished"
    test = store.metrics(session.run_id, keys=["test_bpd"])["test_bpd"]["step"]
    assert len(test) >= 6 and test[0] <= 9 and max(b - a for a, b in zip(test, test[1:])) <= 8, test


def test_a_run_records_its_pace_for_the_estimates(store):
    session = _session_on_a_fake_clock(store, 0.01)
    session.setup()
    session.run()
    m = store.metrics(session.run_id, keys=["startup_s", "first_point_s", "busy_beside", "train_bpd"])
    assert m["startup_s"]["step"] == [0] and m["first_point_s"]["step"] == [5]
    assert 0 < m["startup_s"]["value"][0] <= m["first_point_s"]["value"][0]
    assert m["busy_beside"]["step"] == m["train_bpd"]["step"]
