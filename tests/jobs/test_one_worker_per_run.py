"""Real worker processes paused, killed and woken: a run has one live worker at a time, a live
worker is never taken for an orphan, and the queue moves however a slot's holder died.

Each test is bounded: every wait has a timeout of a few heartbeat windows."""

import os
import signal
import sqlite3
import time

import pytest

from flowlib.jobs import worker
from flowlib.store.lease import RunLease
from flowlib.store.request import RunRequest
from flowlib.store.runs import new_token
from flowlib.train.heartbeat import Monitor
from tests.jobs.test_worker import TINY, _gone, _train, _wait_step
from tests.runs_kit import wait_until

pytestmark = pytest.mark.store_limits(stale_after_s=3.0, start_timeout_s=60)


def _wait(predicate, timeout=60.0, what="condition"):
    return wait_until(predicate, timeout, what, poll=0.1)


def _pause(pid, store):
    """SIGSTOP a worker at a moment it holds no write lock on the store.

    A process stopped inside one of its (millisecond) SQLite transactions keeps the database's
    write lock until it is continued, and no other process can write the store meanwhile, not
    even to mark the run lost: SQLite's locking, which these tests are not about. With a step
    logged every few milliseconds that happens to about one pause in three, so such a pause
    is undone and tried again."""
    for _ in range(50):
        os.kill(pid, signal.SIGSTOP)
        time.sleep(0.05)
        probe = sqlite3.connect(store.db_path, timeout=0.2, isolation_level=None)
        try:
            probe.execute("BEGIN IMMEDIATE")
            probe.execute("ROLLBACK")
            return
        except sqlite3.OperationalError:
            os.kill(pid, signal.SIGCONT)
            time.sleep(0.05)
        finally:
            probe.close()
    raise AssertionError(f"worker {pid} held the store's write lock at every one of 50 pauses")


def _resume(pid):
    try:
        os.kill(pid, signal.SIGCONT)
    except ProcessLookupError:
        pass


def _worker_started_run(store):
    """A short run started from this process, whose worker, when it ends, starts the long run
    waiting behind it: that one is watched by no reaper thread of this process (as after a
    server restart, or in a queue that moved with no page open). Returns the long run's id."""
    first = worker.submit(store, RunRequest("first", TINY, _train(max_steps=3)), queue=True)
    second = worker.submit(store, RunRequest("second", TINY, _train(max_steps=100000)), queue=True)
    worker.wait_for_run(store, first, timeout=120)
    _wait_step(store, second, 3, timeout=120)
    assert store.get_run(second)["pid"] not in worker.running_processes()
    return second


def test_a_worker_woken_after_its_run_was_resumed_stops_without_writing(store):
    run_id = store.create_run(RunRequest("w", TINY, _train(max_steps=100000, log_every=1,
                                                           checkpoint_every_minutes=0.002)))
    old = worker.start_run(store, run_id)
    new = None
    try:
        _wait_step(store, run_id, 5)
        _pause(old, store)
        lost = worker.wait_for_run(store, run_id, statuses=("lost",), timeout=store.limits.stale_after_s + 10)
        new = worker.resume_run(store, run_id)
        _wait_step(store, run_id, lost["step"] + 5, timeout=90)
        _resume(old)                                        # the old worker wakes up
        assert _gone(old, timeout=30), "the old worker should end by itself"
        assert store.get_run(run_id)["status"] == "running" and store.get_run(run_id)["pid"] == new
        worker.stop_run(store, run_id)
        run = worker.wait_for_run(store, run_id, timeout=60)
    finally:
        _resume(old)
        for pid in (old, new):
            if pid is not None and not _gone(pid, timeout=0.1):
                os.kill(pid, signal.SIGKILL)
    assert run["status"] == "stopped", run["message"]
    steps = store.metrics(run_id, keys=["train_bpd"])["train_bpd"]["step"]
    assert steps == sorted(set(steps)), "a step logged twice, or the curve going backwards"
    assert "no longer this process's to write" in store.log_path(run_id).read_text()


def test_a_live_worker_whose_run_was_marked_lost_is_not_an_orphan(store):
    """What a page's read does when the wall clock jumps (or the worker was slow for a while):
    the run reads ``lost``. The worker, still holding its token, carries on."""
    run_id = store.create_run(RunRequest("w", TINY, _train()), status="queued")
    token = new_token()
    assert store.begin_run(run_id, os.getpid(), token) == "queued"
    monitor = Monitor(RunLease(store, run_id, token), run_id)
    monitor.start()
    try:
        store.transaction(lambda c: c.execute("UPDATE runs SET status='lost' WHERE id=?", (run_id,)))
        _wait(lambda: store.get_run(run_id)["status"] == "running", 10, "the heartbeat to bring it back")
        time.sleep(1.5)
        assert not monitor.stop_event.is_set() and not monitor.orphaned and not monitor.fenced
    finally:
        monitor.close()


def test_the_queue_moves_when_a_run_a_worker_started_is_killed(store):
    worker.keep_queue_moving(store)                        # what the server does with its store
    killed = _worker_started_run(store)
    after = worker.submit(store, RunRequest("after", TINY, _train(max_steps=4)), queue=True)
    pid = store.get_run(killed)["pid"]
    os.kill(pid, signal.SIGKILL)
    # this process only reads the store (as a page polls it): the reap starts the next run
    run = _wait(lambda: store.get_run(after)["status"] != "waiting" and store.get_run(after),
                store.limits.stale_after_s + 20, "the waiting run to get the freed slot")
    assert store.get_run(killed)["status"] == "lost"
    assert worker.wait_for_run(store, after, timeout=120)["status"] == "finished", run["message"]


def test_the_queue_moves_past_a_paused_worker_which_stops_itself_when_woken(store):
    worker.keep_queue_moving(store)
    paused = _worker_started_run(store)
    after = worker.submit(store, RunRequest("after", TINY, _train(max_steps=100000)), queue=True)
    pid = store.get_run(paused)["pid"]
    _pause(pid, store)
    try:
        _wait(lambda: store.get_run(after)["status"] in ("queued", "running"), store.limits.stale_after_s + 20,
              "the waiting run to get the paused run's slot")
        assert store.get_run(paused)["status"] == "lost"
        _wait_step(store, after, 2, timeout=90)
        _resume(pid)
        run = worker.wait_for_run(store, paused, statuses=("stopped", "failed"), timeout=60)
        assert run["status"] == "stopped" and "its training slot went to another run" in run["message"]
        assert store.get_run(after)["status"] == "running"  # one run at a time, still
    finally:
        _resume(pid)
        _stop(store, after)


def _stop(store, run_id):
    """Stop a run the test started, without hiding the test's own failure behind this one."""
    worker.stop_run(store, run_id)
    try:
        worker.wait_for_run(store, run_id, timeout=60)
    except TimeoutError:
        pid = store.get_run(run_id)["pid"]
        if pid:
            os.kill(pid, signal.SIGKILL)
