"""Who may train now: the concurrency slots, the queue of waiting runs, and the server's caps
(a mixin of :class:`flowlib.store.runs.RunStore`).

    store.request_start(run_id, owner)       # claim a slot: queued, or RunLimitError naming the run in the way
    store.claim_next_waiting()               # the oldest waiting run gets a free slot (the jobs layer launches it)
    store.check_queue_room(owner, 5)         # RunLimitError if 5 more waiting runs exceed a queue cap
    store.queue_position(run_id)             # 2: one waiting run is ahead of it
    store.publish_limits()                   # the server records its caps; queued runs start under them

Slots: ``queued``, ``running`` and ``stopping`` runs hold one each, ``limits.max_concurrent`` in
all. A claim is one ``BEGIN IMMEDIATE`` transaction that first reaps stale runs (their slots
are free again) and then counts, so two tabs pressing Start at once cannot both get the last.

The queue: ``waiting`` runs, oldest first. :meth:`claim_next_waiting` gives a free slot to the
oldest one in the same kind of transaction; the store cannot launch processes, so the jobs
layer (``flowlib.jobs.worker.start_waiting``) calls it whenever a slot may have freed: when a
run ends, and whenever this store reaps a lost run (:meth:`add_slot_listener`). Two queue caps
are checked inside the transaction that adds a waiting run: one visitor's waiting and active
runs (``max_waiting_per_owner``) and the whole queue (``max_waiting``); the trusted caller
(``owner=None``) is held to the second only.

The server's caps: a store made from the environment checks admissions against its own
limits. The Flow Lab server records its caps in the store when it starts
(:meth:`publish_limits`); a waiting run that is about to start is checked against the recorded
caps, in the claiming transaction, whichever process claims it (a worker started before the
server restarted with new caps carries the old environment), and a worker process trains
under them (:meth:`server_limits`). A run the recorded caps no longer allow is marked
``failed`` with the reason, and the next one is tried.
"""

from __future__ import annotations

import json
import sqlite3

from .limits import Limits
from .rows import (
    ACTIVE_STATUSES,
    MAX_OWNER,
    STARTABLE_STATUSES,
    WAITING,
    RunLimitError,
    RunStateError,
    check_owner,
    request_of,
)

__all__ = ["RunSlots", "QUEUED_MESSAGE"]

QUEUED_MESSAGE = "waiting for the training process to start"
_CAPS_NOTE = " (the limits the Flow Lab server recorded in this runs folder)"


class RunSlots:
    """Slots, the queue and the server's caps, through RunStore's ``transaction`` and ``read``."""

    limits: Limits

    # -- the server's caps ----------------------------------------------------------------
    def publish_limits(self) -> None:
        """Record this store's caps as the server's (the app does it when it opens the store)."""
        caps = json.dumps(self.limits.caps())
        self.transaction(lambda c: c.execute(
            "INSERT INTO meta (key, value) VALUES ('server_limits', ?) "
            "ON CONFLICT(key) DO UPDATE SET value=excluded.value", (caps,)))

    @staticmethod
    def _recorded_caps(conn: sqlite3.Connection) -> dict | None:
        try:
            row = conn.execute("SELECT value FROM meta WHERE key='server_limits'").fetchone()
            caps = json.loads(row[0]) if row is not None else None
        except (sqlite3.Error, ValueError):   # a store opened as it is on a full disk may lack meta
            return None
        return caps if isinstance(caps, dict) else None

    def server_limits(self) -> Limits:
        """This store's limits with the caps the server recorded in place of its own (its own
        when none were recorded): what a queued run is started and trained under."""
        return self.limits.with_caps(self.read(self._recorded_caps))

    def _start_limits(self, conn: sqlite3.Connection) -> Limits:
        return self.limits.with_caps(self._recorded_caps(conn))

    # -- starting a run ---------------------------------------------------------------------
    def request_start(self, run_id: int, owner: str | None = None) -> dict:
        """Claim a concurrency slot and mark the run ``queued``, atomically.

        Raises RunLimitError when the server's limit of active runs is reached (naming the
        run in the way), RunStateError when the run is already active or finished, or has
        trained but its checkpoint is gone (its folder was deleted or is not this store's),
        PermissionError for a caller who may not (see :func:`flowlib.store.rows.check_owner`),
        KeyError for an unknown id. A visitor's start is checked against the caps the server
        recorded; the trusted caller's against this store's own.
        """
        freed: list[int] = []

        def claim(conn):
            freed[:] = self._mark_lost(conn)
            row = self._get_row(conn, run_id)
            check_owner(row, owner, "start")
            if row["status"] in ACTIVE_STATUSES:
                raise RunStateError(f"run {row['id']} '{row['name']}' is already {row['status']}")
            if row["status"] not in STARTABLE_STATUSES:
                raise RunStateError(f"run {row['id']} '{row['name']}' is {row['status']}; "
                                    "raise its step or time budget to train it further")
            request = request_of(row)
            limits = self.limits if owner is None else self._start_limits(conn)
            limits.check_run(request.config.to_dict(), request.train.to_dict())
            self._check_resumable(row)
            self._check_free_slot(conn, limits)
            self._mark_queued(conn, row["id"])
        self.transaction(claim)
        self._slots_freed(freed)
        return self.get_run(run_id)

    def _check_resumable(self, row) -> None:
        """A run that trained (step > 0) resumes from its checkpoint in its own folder; without
        one it would start again at step 0 and draw a second curve over the first, so it is
        refused, and so is a folder some other store made (it holds a stranger's checkpoint)."""
        if not row["step"]:
            return
        name = f"{self.run_dir(row['id']).name}/{self.checkpoint_path(row['id']).name}"
        if not self.checkpoint_path(row["id"]).is_file():
            raise RunStateError(
                f"run {row['id']} '{row['name']}' cannot resume: its checkpoint {name} is missing "
                f"(was its folder deleted?), so its {row['step']:,} steps cannot be continued; start "
                "a new run instead")
        if not self.folder_is_ours(row["id"]):
            raise RunStateError(
                f"run {row['id']} '{row['name']}' cannot resume: its folder {self.run_dir(row['id']).name} "
                "was not made by this run store for this run (was runs.sqlite moved or replaced?), so "
                f"the checkpoint there is not its own; start a new run instead")

    def claim_next_waiting(self) -> int | None:
        """Give a free slot to the oldest ``waiting`` run (it becomes ``queued``); its id, or None.

        One ``BEGIN IMMEDIATE`` transaction, like :meth:`request_start`, so two processes
        draining the queue at once never hand out more slots than the limit. The run is
        checked against the caps the server recorded (:meth:`publish_limits`), not this
        process's: a waiting run they no longer allow is marked ``failed`` with the reason, and
        the next one is tried.
        """
        freed: list[int] = []

        def claim(conn):
            freed[:] = self._mark_lost(conn)
            limits = self._start_limits(conn)
            if len(self._active_rows(conn)) >= limits.max_concurrent:
                return None
            recorded = self._recorded_caps(conn) is not None
            for row in conn.execute("SELECT * FROM runs WHERE status=? ORDER BY id", (WAITING,)).fetchall():
                try:
                    request = request_of(row)
                    limits.check_run(request.config.to_dict(), request.train.to_dict())
                except ValueError as exc:
                    why = f"Not started: {exc}{_CAPS_NOTE if recorded else ''}."
                    conn.execute("UPDATE runs SET status='failed', ended=?, message=? WHERE id=?",
                                 (self.clock.wall(), why, row["id"]))
                    continue
                self._mark_queued(conn, row["id"])
                return row["id"]
            return None
        claimed = self.transaction(claim)
        self._slots_freed(freed)
        return claimed

    def queue_position(self, run_id: int) -> int | None:
        """1 for the next waiting run to start, 2 for the one after it ...; None if not waiting."""
        def position(conn):
            row = conn.execute("SELECT status FROM runs WHERE id=?", (int(run_id),)).fetchone()
            if row is None or row["status"] != WAITING:
                return None
            return 1 + conn.execute("SELECT COUNT(*) FROM runs WHERE status=? AND id<?",
                                    (WAITING, int(run_id))).fetchone()[0]
        return self.read(position)

    # -- queue caps -------------------------------------------------------------------------
    def check_queue_room(self, owner: str | None, n_new: int) -> None:
        """RunLimitError when ``n_new`` more waiting runs of ``owner`` exceed a queue cap.

        ``limits.max_waiting_per_owner`` (FLOWLAB_MAX_WAITING_PER_VISITOR; 12 in classroom mode,
        none otherwise) counts the owner's waiting plus active runs; ``limits.max_waiting``
        (FLOWLAB_MAX_WAITING; 60 in classroom mode) the whole queue. ``owner=None`` (the
        terminal, the teacher) is held to the second only. :meth:`create_run` checks both again
        for each ``waiting`` run, inside its transaction.
        """
        self.read(lambda conn: self._check_queue_room(conn, owner, n_new))

    def _check_queue_room(self, conn, owner: str | None, n_new: int) -> None:
        limits = self.limits if owner is None else self._start_limits(conn)
        total_cap = limits.max_waiting
        if total_cap is not None:
            waiting = conn.execute("SELECT COUNT(*) FROM runs WHERE status=?", (WAITING,)).fetchone()[0]
            if waiting + int(n_new) > total_cap:
                raise RunLimitError(
                    f"the server's queue is full: {waiting} run{'s are' if waiting != 1 else ' is'} waiting "
                    f"for a training slot and the limit is {total_cap} (FLOWLAB_MAX_WAITING). Try again "
                    "when some have started")
        cap = limits.max_waiting_per_owner
        if owner is None or cap is None:
            return
        owner = str(owner)[:MAX_OWNER]
        have = conn.execute("SELECT COUNT(*) FROM runs WHERE owner=? AND status IN "
                            "('waiting', 'queued', 'running', 'stopping')", (owner,)).fetchone()[0]
        if have + int(n_new) > cap:
            adding = f"; {int(n_new)} more would make {have + int(n_new)}" if n_new > 1 else ""
            raise RunLimitError(
                f"you already have {have} run{'s' if have != 1 else ''} waiting or training{adding}; "
                f"the limit is {cap} per visitor (FLOWLAB_MAX_WAITING_PER_VISITOR). Wait for some "
                "to finish, or stop or delete some first")

    # -- slots ------------------------------------------------------------------------------
    @staticmethod
    def _active_rows(conn) -> list[sqlite3.Row]:
        return conn.execute("SELECT id, name, status FROM runs WHERE status IN "
                            "('queued', 'running', 'stopping') ORDER BY id").fetchall()

    def _check_free_slot(self, conn, limits: Limits | None = None) -> None:
        """RunLimitError naming the run in the way when every concurrency slot is taken."""
        active = self._active_rows(conn)
        limit = (limits or self.limits).max_concurrent
        if len(active) >= limit:
            other = active[0]
            if limit == 1:
                raise RunLimitError(
                    f"Another run is training (run {other['id']} '{other['name']}'); stop it "
                    "first or raise FLOWLAB_MAX_CONCURRENT")
            raise RunLimitError(
                f"{len(active)} runs are already training (the limit is {limit}), e.g. run "
                f"{other['id']} '{other['name']}'; stop one first or raise FLOWLAB_MAX_CONCURRENT")

    def _mark_queued(self, conn, run_id: int) -> None:
        """A slot for the run: ``queued``, no worker token yet (the worker that comes up gets
        one; every earlier worker of the run is fenced out from here on)."""
        conn.execute("UPDATE runs SET status='queued', heartbeat=?, pid=NULL, token=NULL, stop_requested=0, "
                     "stopped_by=NULL, ended=NULL, message=? WHERE id=?",
                     (self.clock.wall(), QUEUED_MESSAGE, int(run_id)))
