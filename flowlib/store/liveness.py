"""Whether a run's worker is alive, and what a worker writes about itself (a mixin of
:class:`flowlib.store.runs.RunStore`).

    token = new_token()
    store.begin_run(run_id, pid, token)      # queued -> running; this worker alone may now write the run
    store.heartbeat(run_id, step, token)     # (status, stop_requested); FencedOutError for an old token
    store.finish_run(run_id, "stopped", "Stopped at step 40 ...", 40, token)
    store.request_stop(run_id, owner)        # the flag the worker honours at its next step
    store.reap_lost()                        # runs whose heartbeat stopped changing -> lost

Liveness is a heartbeat column, never a pid check: a worker beats about once a second
(``heartbeat`` = its wall time, ``beats`` += 1). A reader calls a run ``lost`` when it has
seen no beat for ``limits.stale_after_s`` (``start_timeout_s`` for a run whose process has
not come up), measured on *its own monotonic clock* from the first moment it saw the row as it
is (:class:`Observations`): the wall clock stepping forward or back under a healthy worker
changes nothing, and no window starts from a stored wall time. A reader that opened the store
after the worker died therefore needs one full window of its own before it calls the run
lost. Reads reap (``get_run``, ``list_runs``), as do slot claims.

Fencing: a run has at most one worker allowed to write it. :meth:`begin_run` gives the worker
that moves the run from ``queued`` to ``running`` a token; a new claim (a resume) clears it.
Every write a worker makes passes its token (:class:`flowlib.store.lease.RunLease` does it for
the trainer) and is checked in the same transaction: heartbeats, metrics, events, sample
grids, the best score, the end status, and the checkpoint file's replacement. A write with a
token that is no longer the run's raises :class:`FencedOutError` and writes nothing, so a
worker presumed lost and then woken (SIGSTOP, SIGCONT) stops without touching the run its
successor trains. A worker whose token is still current is not an orphan: its heartbeat
brings a run marked ``lost`` back to ``running`` while a slot is free, and otherwise answers
that its slot was given away (it then stops with a checkpoint and says why).

Freed slots: the store cannot launch processes. Whoever reaps hands the freed slots to the
listeners registered with :meth:`add_slot_listener` (the jobs layer registers
``flowlib.jobs.worker.start_waiting``), so the queue moves however a slot's holder died.
"""

from __future__ import annotations

import secrets
import sqlite3
import sys
import threading
import time
from dataclasses import dataclass
from typing import Callable, Iterable

from .dbfile import StoreUnavailableError
from .rows import ACTIVE_STATUSES, TERMINAL_OWNER, FencedOutError, StoreBusyError, check_owner

__all__ = ["Clock", "Observations", "RunLiveness", "new_token", "OVERTAKEN_MESSAGE"]

# How long a read waits for the write lock to reap lost runs on the side (then the next read tries).
REAP_WAIT_S = 0.05
OVERTAKEN_MESSAGE = ("This run's training process stopped answering for longer than the heartbeat window, so "
                     "its training slot went to another run; when it answered again it stopped at step {step:,} "
                     "with a checkpoint. Resume to continue.")


def new_token() -> str:
    """A fencing token for one worker of one run."""
    return secrets.token_hex(16)


@dataclass(frozen=True)
class Clock:
    """The store's clocks: ``wall`` stamps rows (created, started, ended, heartbeat); ``monotonic``
    measures how long a reader has seen a run unchanged. Tests pass fakes."""

    wall: Callable[[], float] = time.time
    monotonic: Callable[[], float] = time.monotonic


class Observations:
    """What this process has seen of each active run: the row's liveness fields, and since when
    (monotonic) they have not changed. Thread-safe; one per RunStore object."""

    def __init__(self):
        self._seen: dict[int, tuple[tuple, float]] = {}
        self._lock = threading.Lock()

    def stale(self, rows: Iterable[sqlite3.Row], now: float, window: Callable[[sqlite3.Row], float]) -> list[int]:
        """Ids of the active rows unchanged for longer than ``window(row)`` seconds up to ``now``."""
        out = []
        with self._lock:
            for r in rows:
                if r["status"] not in ACTIVE_STATUSES:
                    self._seen.pop(r["id"], None)
                    continue
                key = (r["status"], r["beats"], r["heartbeat"], r["token"])
                seen = self._seen.get(r["id"])
                if seen is None or seen[0] != key:
                    self._seen[r["id"]] = (key, now)
                elif now - seen[1] > window(r):
                    out.append(r["id"])
        return out


class RunLiveness:
    """Reaping, the stop flag and a worker's own writes, through RunStore's ``transaction``,
    ``read``, ``clock`` and ``limits`` (and the slot counting of :class:`~flowlib.store.slots.RunSlots`)."""

    # -- reaping ---------------------------------------------------------------------------
    def add_slot_listener(self, listener: Callable[[], object]) -> None:
        """Call ``listener()`` after this store has reaped runs (their slots are free again).
        Registered once per store object; its errors are printed, never raised to the reader."""
        if listener not in self._slot_listeners:
            self._slot_listeners.append(listener)

    def _slots_freed(self, ids: list[int]) -> None:
        if not ids or getattr(self._handing_on, "busy", False):
            return   # a listener that claims slots reaps too: the outer call carries on
        self._handing_on.busy = True
        try:
            for listener in list(self._slot_listeners):
                try:
                    listener()
                except Exception as exc:  # noqa: BLE001 - a reader must not fail for it
                    print(f"flowlab: could not hand on the slots of lost runs {ids}: {exc}", file=sys.stderr)
        finally:
            self._handing_on.busy = False

    def _window(self, row) -> float:
        return self.limits.start_timeout_s if row["status"] == "queued" else self.limits.stale_after_s

    def _stale_ids(self, rows: Iterable[sqlite3.Row]) -> list[int]:
        return self._observed.stale(rows, self.clock.monotonic(), self._window)

    def _mark_lost(self, conn: sqlite3.Connection) -> list[int]:
        rows = conn.execute("SELECT id, status, heartbeat, beats, token, step FROM runs WHERE status IN "
                            "('queued', 'running', 'stopping')").fetchall()
        lost = self._stale_ids(rows)
        now = self.clock.wall()
        for r in rows:
            if r["id"] not in lost:
                continue
            if r["status"] == "queued":
                msg = (f"The training process never started (nothing heard for "
                       f"{self.limits.start_timeout_s:g} s). Start the run again.")
            else:
                msg = (f"The training process stopped responding (no heartbeat for "
                       f"{self.limits.stale_after_s:g} s) at step {r['step']}. The last checkpoint "
                       "is kept: resume to continue from it.")
            # the token stays: the same worker, should it answer again, is still the run's own
            conn.execute("UPDATE runs SET status='lost', message=?, ended=? WHERE id=?", (msg, now, r["id"]))
            conn.execute("INSERT INTO events (run_id, step, wall, kind, message) VALUES (?, ?, ?, 'lost', ?)",
                         (r["id"], r["step"], now, msg))
        return lost

    def reap_lost(self, wait_s: float | None = None) -> list[int]:
        """Mark active runs whose heartbeat stopped changing as ``lost``, hand their slots on;
        returns their ids. ``wait_s``: how long to wait for the write lock (default: the
        store's busy timeout)."""
        lost = self.transaction(self._mark_lost, wait_s=wait_s)
        self._slots_freed(lost)
        return lost

    def _maybe_reap(self, rows: list[sqlite3.Row] | None = None) -> bool:
        """Reap when a run has been seen unchanged past its window; True if any was. ``rows``:
        every run's row, when the caller has them; otherwise the active ones are read (a page
        polling one run's dashboard still notices another run's worker dying)."""
        if rows is None:
            rows = self.read(lambda c: c.execute("SELECT id, status, heartbeat, beats, token FROM runs WHERE "
                                                 "status IN ('queued', 'running', 'stopping')").fetchall())
        if self._stale_ids(rows):
            try:
                # A glance at the lock, not a wait: the run that stopped beating may be a worker
                # stopped (SIGSTOP) while it holds the write lock, and reads must not wait on it.
                return bool(self.reap_lost(wait_s=REAP_WAIT_S))
            except (StoreBusyError, StoreUnavailableError):
                return False   # reading still works; the next read reaps
        return False

    # -- fencing ---------------------------------------------------------------------------
    @staticmethod
    def fence(conn: sqlite3.Connection, run_id: int, token: str | None) -> None:
        """FencedOutError unless ``token`` is the run's current token (None: a trusted write)."""
        if token is None:
            return
        row = conn.execute("SELECT token FROM runs WHERE id=?", (int(run_id),)).fetchone()
        if row is None or row["token"] != token:
            raise FencedOutError(
                f"run {int(run_id)} is no longer this process's to write: it was started again in "
                "another training process after this one stopped answering; this one stops without "
                "writing anything more")

    # -- the worker's own writes -----------------------------------------------------------
    def set_pid(self, run_id: int, pid: int) -> None:
        self.transaction(lambda c: c.execute("UPDATE runs SET pid=? WHERE id=? AND status IN "
                                             "('queued', 'running', 'stopping')", (int(pid), int(run_id))))

    def begin_run(self, run_id: int, pid: int, token: str | None = None) -> str:
        """The worker's first call: ``queued`` -> ``running``, and the run's writes are this
        worker's alone (``token``; one is made when none is given). Returns the status it
        found: anything but ``"queued"`` means do not train (``"stopping"``: a stop came before
        the process was up; mark it stopped)."""
        token = token or new_token()

        def begin(conn):
            row = self._get_row(conn, run_id)
            if row["status"] == "queued":
                now = self.clock.wall()
                conn.execute("UPDATE runs SET status='running', pid=?, heartbeat=?, beats=beats+1, started=?, "
                             "token=?, message='training' WHERE id=?", (int(pid), now, now, token, int(run_id)))
            return row["status"]
        return self.transaction(begin)

    def heartbeat(self, run_id: int, step: int | None = None, token: str | None = None) -> tuple[str | None, bool]:
        """The worker is alive at ``step``. Returns (status, stop_requested) in the same call.

        With ``token``: FencedOutError when it is no longer the run's; a run marked ``lost``
        whose token this still is comes back to ``running`` (``stopping`` if a stop was asked)
        when a slot is free, else answers ``("lost", True)``: its slot went to another run.
        """
        def beat(conn):
            row = conn.execute("SELECT status, stop_requested, token FROM runs WHERE id=?",
                               (int(run_id),)).fetchone()
            if row is None:
                return None, True
            self.fence(conn, run_id, token)
            status = row["status"]
            if status == "lost" and token is not None:
                if len(self._active_rows(conn)) >= self._start_limits(conn).max_concurrent:
                    return "lost", True
                status = "stopping" if row["stop_requested"] else "running"
                conn.execute("UPDATE runs SET status=?, ended=NULL, message=? WHERE id=?",
                             (status, "training" if status == "running" else "stopping", int(run_id)))
                conn.execute("INSERT INTO events (run_id, step, wall, kind, message) VALUES (?, ?, ?, 'warning', ?)",
                             (int(run_id), step, self.clock.wall(),
                              "the training process answered again after being marked lost; it carries on"))
            if status in ("running", "stopping"):
                conn.execute("UPDATE runs SET heartbeat=?, beats=beats+1, step=COALESCE(?, step) WHERE id=?",
                             (self.clock.wall(), step, int(run_id)))
            return status, bool(row["stop_requested"])
        return self.transaction(beat)

    def poll_stop(self, run_id: int) -> tuple[str | None, bool]:
        """(status, stop_requested) of a run, one indexed read; (None, True) if it is gone."""
        row = self.read(lambda c: c.execute("SELECT status, stop_requested FROM runs WHERE id=?",
                                            (int(run_id),)).fetchone())
        return (None, True) if row is None else (row["status"], bool(row["stop_requested"]))

    def request_stop(self, run_id: int, owner: str | None = None, by: str | None = None) -> bool:
        """Ask an active run to stop. Idempotent: True only if this call requested it. A ``lost``
        run whose worker might still answer keeps the request: should it answer, it stops.

        ``by``: who asks, in words for the run's owner ("the teacher"); a trusted caller stopping
        a visitor's run without saying is "the terminal". It is recorded, and the run's final
        message says who stopped it."""
        def stop(conn):
            row = self._get_row(conn, run_id)
            check_owner(row, owner, "stop")
            if row["status"] == "lost" and row["token"] is not None and not row["stop_requested"]:
                # its worker may yet answer (a long pause): it then stops instead of carrying on
                conn.execute("UPDATE runs SET stop_requested=1, stopped_by=? WHERE id=?", (by, int(run_id)))
                return True
            if row["status"] not in ("queued", "running") or row["stop_requested"]:
                return False
            who = by
            if who is None and owner is None and row["owner"] not in (None, TERMINAL_OWNER):
                who = "the terminal"      # a trusted caller stopping a visitor's run
            asked = f" (asked by {who})" if who else ""
            conn.execute("UPDATE runs SET status='stopping', stop_requested=1, stopped_by=?, "
                         "message=? WHERE id=?",
                         (who, f"stopping{asked}: finishing the step and saving a checkpoint", int(run_id)))
            return True
        return self.transaction(stop)

    def finish_run(self, run_id: int, status: str, message: str, step: int | None = None,
                   token: str | None = None) -> bool:
        """The worker's last call: stopped / finished / failed with a message in words.

        Also overwrites ``lost`` (a slow worker wrongly presumed dead knows better). Returns
        False if the run is gone or already ended; FencedOutError when ``token`` is no longer
        the run's. A run stopped at someone else's request says who.
        """
        if status not in ("stopped", "finished", "failed", "lost"):
            raise ValueError(f"finish_run status must be stopped, finished, failed or lost; got {status!r}")

        def finish(conn):
            self.fence(conn, run_id, token)
            row = conn.execute("SELECT status, stopped_by FROM runs WHERE id=?", (int(run_id),)).fetchone()
            if row is None or row["status"] not in ("queued", "running", "stopping", "lost"):
                return False
            words = str(message)
            if status == "stopped" and row["stopped_by"]:
                words += f" Stop was asked by {row['stopped_by']}."
            conn.execute("UPDATE runs SET status=?, message=?, step=COALESCE(?, step), ended=?, "
                         "stop_requested=0 WHERE id=?", (status, words, step, self.clock.wall(), int(run_id)))
            return True
        return self.transaction(finish, last_words=True)

    def mark_exited(self, run_id: int, pid: int, returncode: int) -> bool:
        """Called when a worker process we launched exits: if its run still looks active *and is
        still that process's run*, it is lost.

        The pid must match the row: a stopped run resumed at once is ``queued`` with no pid
        until its new process is recorded, and the old process's exit arriving in that window
        must not mark the new attempt lost. A run whose pid was never recorded is left to the
        heartbeat window instead.
        """
        if returncode < 0:
            how = f"was killed by signal {-returncode}"
        else:
            how = f"exited with code {returncode}"
        msg = (f"The training process {how} without finishing. The last checkpoint is kept: "
               "resume to continue from it.")

        def check(conn):
            row = conn.execute("SELECT status, pid, step FROM runs WHERE id=?", (int(run_id),)).fetchone()
            if row is None or row["status"] not in ACTIVE_STATUSES or row["pid"] != pid:
                return False
            now = self.clock.wall()
            conn.execute("UPDATE runs SET status='lost', message=?, ended=?, token=NULL, stop_requested=0 "
                         "WHERE id=?", (msg, now, int(run_id)))
            conn.execute("INSERT INTO events (run_id, step, wall, kind, message) VALUES (?, ?, ?, 'lost', ?)",
                         (int(run_id), row["step"], now, msg))
            return True
        exited = self.transaction(check, last_words=True)
        self._slots_freed([int(run_id)] if exited else [])
        return exited
