"""A process stopped (SIGSTOP) while it holds runs.sqlite's write lock (issue #27, round three).

Nothing can release another process's lock, but nobody may hang on it either: reads go on
(WAL), reaping the stopped worker's run is only tried in passing, a write gives up after the
store's bounded busy timeout with one sentence saying the store is busy, and a page shows that
sentence as a warning instead of a traceback.
"""

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
from streamlit.testing.v1 import AppTest

from flowlib.store.limits import Limits
from flowlib.store.runs import RunStore, StoreBusyError
from tests.runs_kit import FakeClock, queued_run, wait_until

HOLDER = textwrap.dedent("""
    import os, signal, sqlite3, sys
    conn = sqlite3.connect(sys.argv[1], isolation_level=None)
    conn.execute("BEGIN IMMEDIATE")
    conn.execute("INSERT INTO events (run_id, step, wall, kind, message) VALUES (1, 0, 0, 'warning', 'held')")
    print("holding", flush=True)
    os.kill(os.getpid(), signal.SIGSTOP)     # stopped mid-write, the lock held
    conn.execute("COMMIT")
""")


def _stopped(pid: int) -> bool:
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0] == "T"


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/<pid>/stat")
def test_a_worker_stopped_holding_the_write_lock_blocks_no_reader_and_no_writer_for_long(tmp_path):
    clock = FakeClock()
    store = RunStore(tmp_path / "runs", Limits(db_timeout_s=1.0, stale_after_s=3.0, start_timeout_s=6.0),
                     clock=clock.clock())
    assert store.read(lambda c: c.execute("PRAGMA journal_mode").fetchone()[0]) == "wal"
    run_id = queued_run(store)
    store.begin_run(run_id, 99999)
    store.heartbeat(run_id, 7)
    store.append_metrics(run_id, [(7, 1.0, "train_bpd", 3.0)])
    assert store.get_run(run_id)["status"] == "running"   # its heartbeat seen here, then never again
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(store.db_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "holding"
        wait_until(lambda: _stopped(holder.pid), timeout=10, what="the lock holder stopped")
        clock.advance(10.0)          # the run's heartbeat is stale: a read would like to reap it
        t0 = time.monotonic()
        assert store.get_run(run_id)["status"] == "running"     # not reaped now: it is tried in passing
        assert [r["id"] for r in store.list_runs()] == [run_id]
        assert store.metrics(run_id)["train_bpd"]["value"] == [3.0]
        assert [e["kind"] for e in store.events(run_id)] == []   # the held insert is not committed
        RunStore(store.root, store.limits)                      # a page's store still opens
        reads = time.monotonic() - t0
        assert reads < 0.9, f"reads waited {reads:.2f} s on the stopped writer"

        t0 = time.monotonic()
        with pytest.raises(StoreBusyError) as info:
            store.rename_run(run_id, "renamed")
        waited = time.monotonic() - t0
        assert 0.9 <= waited < 4.0, waited                        # the bounded busy timeout, not a hang
        assert str(info.value).startswith("the run store is busy") and "try again" in str(info.value)
        assert str(tmp_path) not in str(info.value)
    finally:
        os.kill(holder.pid, signal.SIGCONT)
        holder.wait(timeout=10)
    assert holder.returncode == 0
    assert store.rename_run(run_id, "renamed") == "renamed"      # the lock went with the holder
    assert store.get_run(run_id)["status"] == "lost"               # and the stale run is reaped now
    assert [e["message"] for e in store.events(run_id, kinds=["warning"])] == ["held"]


def _busy_page():
    from flowlib.store.runs import StoreBusyError
    from pages.common import ui
    with ui.guard("stopping the run"):
        raise StoreBusyError("the run store is busy: another process held the write lock of runs.sqlite "
                             "for 5 s; try again")


def test_a_busy_store_is_a_warning_on_the_page_not_a_traceback():
    at = AppTest.from_function(_busy_page).run()
    assert not at.exception and not at.error
    [warning] = at.warning
    assert warning.value.startswith("The run store is busy (another process holds its write lock")
    assert "try again" in warning.value
