"""Liveness and fencing in the store: a run is lost when its heartbeat stops changing (however
the wall clock moves), a run has one writer at a time, and a reaped slot is handed on."""

import threading

import pytest

from flowlib import env
from flowlib.store.lease import RunLease
from flowlib.store.limits import Limits
from flowlib.store.request import RunRequest
from flowlib.store.runs import FencedOutError, RunStore, new_token
from tests.runs_kit import TINY, FakeClock, tiny_train


def _running(store, name="r", pid=4_000_001):
    """A run moved to running by a 'worker' that holds the returned token."""
    run_id = store.create_run(RunRequest(name, TINY, tiny_train()), status="queued")
    token = new_token()
    assert store.begin_run(run_id, pid, token) == "queued"
    return run_id, token


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
def timed(tmp_path, clock):
    """A store whose clocks the test moves; 3 s heartbeat window, 6 s start window."""
    return RunStore(tmp_path / "runs", Limits(max_concurrent=1, stale_after_s=3.0, start_timeout_s=6.0),
                    clock=clock.clock())


# -- clock steps and windows -----------------------------------------------------------------------
def test_a_wall_clock_step_under_a_healthy_worker_does_not_mark_it_lost(timed, clock):
    run_id, token = _running(timed)
    for _ in range(10):                       # a healthy worker: a beat a second ...
        clock.advance(1.0)
        timed.heartbeat(run_id, 5, token)
        assert timed.get_run(run_id)["status"] == "running"
    clock.step_wall(45.0)                     # ... and the wall clock jumps 45 s forward
    assert [r["status"] for r in timed.list_runs()] == ["running"]
    clock.advance(0.5)
    assert timed.heartbeat(run_id, 6, token) == ("running", False)   # the worker is not an orphan
    clock.step_wall(-300.0)                   # and back: nothing changes either
    clock.advance(1.0)
    timed.heartbeat(run_id, 7, token)
    assert timed.get_run(run_id)["status"] == "running"
    clock.advance(3.5)                        # a real silence of more than the window: lost
    assert timed.get_run(run_id)["status"] == "lost"


def test_a_reader_that_opened_after_the_worker_died_waits_a_full_window_of_its_own(tmp_path, clock):
    limits = Limits(stale_after_s=3.0, start_timeout_s=6.0)
    first = RunStore(tmp_path / "runs", limits, clock=clock.clock())
    run_id, _ = _running(first)
    clock.advance(3600)                       # the worker died an hour ago (wall and monotonic)
    later = RunStore(tmp_path / "runs", limits, clock=clock.clock())
    assert later.get_run(run_id)["status"] == "running"    # first sight: not yet seen unchanged for 3 s
    clock.advance(3.1)
    assert later.get_run(run_id)["status"] == "lost"


@pytest.mark.parametrize("variable, value", [("FLOWLAB_HEARTBEAT_STALE_S", "0.5"),
                                             ("FLOWLAB_START_TIMEOUT_S", "2")])
def test_a_liveness_window_shorter_than_three_heartbeats_is_refused_naming_its_variable(monkeypatch, variable,
                                                                                       value):
    monkeypatch.setenv(variable, value)
    with pytest.raises(ValueError, match=f"{variable} must be at least 3"):
        env.read(variable)
    with pytest.raises(ValueError, match=variable):
        Limits.from_env()
    field = "stale_after_s" if "STALE" in variable else "start_timeout_s"
    with pytest.raises(ValueError, match=rf"{variable} \(the {field} window\) is {value}.* shorter than 3 heartbeats"):
        Limits(**{field: float(value)})
    Limits(**{field: 3.0})                    # three heartbeats is enough


# -- fencing ---------------------------------------------------------------------------------------
def test_a_resumed_run_fences_out_its_old_worker_on_every_kind_of_write(timed, clock, tmp_path):
    run_id, old = _running(timed)
    timed.heartbeat(run_id, 3, old)
    target = timed.checkpoint_path(run_id)
    target.write_bytes(b"the old worker's checkpoint at step 3")
    assert timed.get_run(run_id)["status"] == "running"     # a page watches it
    clock.advance(3.5)
    assert timed.get_run(run_id)["status"] == "lost"       # SIGSTOPped past the window
    timed.request_start(run_id)                             # resumed: a new worker comes up
    new = new_token()
    assert timed.begin_run(run_id, 4_000_002, new) == "queued"
    before = (timed.get_run(run_id), timed.metrics(run_id), timed.events(run_id))
    stale = RunLease(timed, run_id, old)
    target.write_bytes(b"the new worker's checkpoint")
    writes = [lambda: stale.heartbeat(run_id, 9), lambda: stale.append_metrics(run_id, [(9, 1.0, "lr", 0.1)]),
              lambda: stale.add_event(run_id, "eval", "step 9"), lambda: stale.add_samples(run_id, 9, "x.png"),
              lambda: stale.set_best_test_bpd(run_id, 0.1), lambda: stale.truncate_after(run_id, 0),
              lambda: stale.finish_run(run_id, "stopped", "Stopped at step 9."), stale.check,
              lambda: stale.write_file(run_id, target, lambda p: p.write_bytes(b"the old worker's"))]
    for write in writes:
        with pytest.raises(FencedOutError, match=f"run {run_id} is no longer this process's to write"):
            write()
    assert (timed.get_run(run_id), timed.metrics(run_id), timed.events(run_id)) == before
    assert target.read_bytes() == b"the new worker's checkpoint"
    assert sorted(p.name for p in target.parent.glob(".*.tmp")) == []
    fresh = RunLease(timed, run_id, new)                    # the current worker writes as ever
    fresh.write_file(run_id, target, lambda p: p.write_bytes(b"newer"))
    assert target.read_bytes() == b"newer" and fresh.heartbeat(run_id, 10) == ("running", False)
    with pytest.raises(AttributeError, match="no 'delete_run'"):
        fresh.delete_run(run_id)                            # a lease writes only what is fenced


def test_a_lost_run_whose_worker_answers_again_comes_back_while_its_slot_is_free(timed, clock):
    run_id, token = _running(timed)
    timed.list_runs()
    clock.advance(3.5)
    assert timed.get_run(run_id)["status"] == "lost"
    clock.advance(1.0)
    assert timed.heartbeat(run_id, 4, token) == ("running", False)   # SIGCONT before anyone resumed it
    run = timed.get_run(run_id)
    assert run["status"] == "running" and run["ended"] is None and run["message"] == "training"
    assert "answered again" in timed.events(run_id, kinds=["warning"])[-1]["message"]


def test_a_stop_asked_while_a_run_reads_lost_reaches_its_worker_should_it_answer(timed, clock):
    run_id, token = _running(timed)
    timed.list_runs()
    clock.advance(3.5)
    assert timed.get_run(run_id)["status"] == "lost"
    assert timed.request_stop(run_id) is True and timed.request_stop(run_id) is False
    assert timed.heartbeat(run_id, 4, token) == ("stopping", True)
    assert timed.get_run(run_id)["status"] == "stopping"


def test_a_lost_run_whose_slot_went_to_another_is_told_so_and_can_still_end_itself(timed, clock):
    run_id, token = _running(timed)
    timed.list_runs()
    clock.advance(3.5)
    timed.reap_lost()
    other = timed.create_run(RunRequest("next", TINY, tiny_train()), status="queued")   # took the slot
    assert timed.heartbeat(run_id, 4, token) == ("lost", True)
    assert timed.finish_run(run_id, "stopped", "Stopped at step 4; checkpoint saved.", 4, token=token)
    assert timed.get_run(run_id)["status"] == "stopped" and timed.get_run(other)["status"] == "queued"


# -- freed slots -----------------------------------------------------------------------------------
def test_every_reap_hands_the_freed_slots_to_the_listeners(timed, clock):
    calls = []
    timed.add_slot_listener(lambda: calls.append(timed.claim_next_waiting()))
    run_id, _ = _running(timed)
    waiting = timed.create_run(RunRequest("w", TINY, tiny_train()), status="waiting")
    timed.list_runs()
    clock.advance(3.5)
    assert timed.get_run(run_id)["status"] == "lost"        # a page's read reaps ...
    assert calls == [waiting]                               # ... and the slot went on at once
    assert timed.get_run(waiting)["status"] == "queued"
    timed.set_pid(waiting, 12345)                           # its launcher recorded the process
    assert timed.mark_exited(waiting, 12345, -9) is True    # a death the launcher saw: handed on too
    assert calls == [waiting, None]


def test_a_listener_that_claims_is_not_called_again_from_inside_itself(timed, clock):
    depth = threading.local()
    calls = []

    def listener():
        depth.n = getattr(depth, "n", 0) + 1
        calls.append(depth.n)
        timed.reap_lost()
        depth.n -= 1

    timed.add_slot_listener(listener)
    _running(timed)
    timed.list_runs()
    clock.advance(3.5)
    timed.reap_lost()
    assert calls == [1]
