"""The run store: one SQLite file (WAL) and one folder per run, on one server.

The worker processes write it (a run's status, heartbeat, curves, events, sample grids); the
pages, the CLI and studies read it and ask for changes (start, stop, rename, delete), each
with connections of their own. Nothing else holds a run's state.

    from flowlib.store.runs import RunRequest, RunStore
    store = RunStore()                       # root: arg, else $FLOWLAB_RUNS_DIR, else <repo>/checkpoints/runs
    run_id = store.create_run(RunRequest("mnist-a", flow_config, train_config, owner=visitor_id))
    store.list_runs()                        # newest first; runs whose heartbeat stopped are marked lost here
    store.stored_request(run_id)             # the RunRequest as stored, checked again (the worker trains this)
    store.metrics(run_id, keys=["train_bpd", "test_bpd"])   # {key: {"step": [...], "wall": [...], "value": [...]}}
    store.events(run_id)                     # nan_skip / rollback / lr_drop / eval / checkpoint / error / stop ...
    store.latest_samples(run_id)             # {"step", "path", "wall"} of the newest sample grid, or None
    store.check_queue_room(visitor_id, 5)    # RunLimitError if 5 more waiting runs exceed a queue cap
    store.transaction(fn); store.read(fn)    # fn(conn): SQL of a neighbour module (records, studies)

This module holds the store itself (its file, its transactions, making, reading and changing
runs); its parts are mixins in this folder, one job each: :mod:`~flowlib.store.slots` (the
concurrency slots, the queue and the server's caps), :mod:`~flowlib.store.liveness`
(heartbeats, reaping lost runs, the stop flag, a worker's fenced writes),
:mod:`~flowlib.store.records` (metrics, events, sample grids) and
:mod:`~flowlib.store.folders` (run folders and the store's identity). What a row is (statuses,
owners, refusals) is :mod:`~flowlib.store.rows`; the tables, their layout version and the
migrations :mod:`~flowlib.store.schema`; the database file's own faults (foreign, damaged,
read-only, disk full) :mod:`~flowlib.store.dbfile`; studies :mod:`~flowlib.store.studies`; the
typed request a run is made from :mod:`~flowlib.store.request`; a worker's fenced view of the
store :mod:`~flowlib.store.lease`.

Layout under the root::

    runs.sqlite            runs, metrics, events, samples, studies, study_runs, meta tables (WAL
                           journal); its layout version in the header (PRAGMA user_version)
    runs.reserve           1 MiB kept free for a run's last words on a full disk (flowlib.store.dbfile)
    run-00001/             .flowlab-run.json (this store's mark), checkpoint.pt,
                           samples_step0000050.png, worker.log
    run-00002/ ...

Versions: ``RunStore()`` reads the layout version first. A store written by a newer Flow Lab
is refused untouched (StoreUnavailableError, ``reason == "newer"``); an older one is migrated
in place in one transaction (:func:`flowlib.store.schema.migrate`), and the folders of its runs
are then marked as its own.

Damaged rows: a run whose stored config or train JSON cannot be read is never trained with
default settings. It reads with ``run["damaged"]`` (the sentence saying so, naming the run;
None for every sound run), ``config`` / ``train`` as ``{}`` for display and that sentence as
its ``message``; starting, resuming or changing it raises :class:`DamagedRunError`, and the
queue marks such a waiting run ``failed`` with the sentence.

Folder names come from the integer id, never from the user's run name, so a name such as
``../../etc`` can only ever be a label. Names are still sanitised for display (see
:func:`sanitize_name`). A folder this store did not make for that run is never trained in
(:mod:`flowlib.store.folders`).

Run status moves through::

    created --start--> queued --worker up--> running --stop--> stopping --> stopped
    waiting --a slot frees--^                         \\--> finished | failed
    queued / running / stopping with a stale heartbeat --> lost (--its worker answers--> running)

``queued``, ``running`` and ``stopping`` are *active*: they hold one of the concurrency slots
(:mod:`flowlib.store.slots`). ``created`` runs are never started by the queue, so a run left
behind by a refused start cannot train by surprise later.

Concurrency: every call opens its own short-lived connection (safe from any thread, nothing
to leak), sets ``busy_timeout``, and keeps transactions to a few statements. WAL means readers
never block the trainer's writes. A write that still finds the database locked is retried
with back-off for a bounded time, then raises :class:`StoreBusyError`; the trainer treats that
as "try again at the next flush", never as a reason to die, and a page shows it as "the run
store is busy; try again" (``pages.common.ui.guard``). A process stopped (SIGSTOP) inside a
write transaction keeps the lock until it runs again: nothing here can take it back, so every
transaction's fn is SQL only (nothing slow inside ``BEGIN IMMEDIATE``), reads go on under WAL,
and the reaping a read does on the side only glances at the lock (``wait_s``) instead of waiting.

Environment: ``FLOWLAB_RUNS_DIR`` is where the store lives (default
``<repo>/checkpoints/runs``); the caps and timing windows (``FLOWLAB_MAX_CONCURRENT``,
``FLOWLAB_CLASSROOM``, ``FLOWLAB_HEARTBEAT_STALE_S`` ...) are read by
:meth:`flowlib.store.limits.Limits.from_env` when a ``RunStore`` is made without limits.

Storage faults: the database file and its disk are :mod:`flowlib.store.dbfile`'s job
(:class:`~flowlib.store.dbfile.DatabaseFile`, one per store). Before anything is written,
``RunStore()`` has it refuse, untouched, a ``runs.sqlite`` that is not Flow Lab's (another
program's, truncated, not SQLite at all); those refusals, a read-only runs folder and a full
disk raise :class:`StoreUnavailableError` (importable from here), a RuntimeError whose message
is one sentence in words and whose ``reason`` is ``"foreign"``, ``"damaged"``, ``"newer"``,
``"read_only"``, ``"disk_full"`` or ``"io"``. Writes passed ``last_words=True`` (a run's final
status, the error event, a lost mark) may spend ``runs.reserve`` on a full disk, so such a run
ends ``failed`` with the reason instead of ``lost``; reads on a full disk fall back to the file
as is.

Owners: ``owner`` is who started a run (a visitor id the app passes, :data:`TERMINAL_OWNER`
for the command line). A caller passing an owner may start, stop, rename, resume, change or
delete only the runs with that very owner; a caller passing ``owner=None`` is trusted (the
terminal, the teacher) and may act on every run. The app always passes the visitor id unless
the teacher's key was given (:func:`flowlib.store.rows.check_owner`).
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any, Callable

from flowlib import env
from flowlib.config import TrainConfig

from . import schema
from .dbfile import RESERVE_NAME, DatabaseFile, StoreUnavailableError, is_busy, storage_code
from .folders import CHECKPOINT_NAME, LOG_NAME, RunFolders
from .lease import RunLease
from .limits import Limits
from .liveness import Clock, Observations, RunLiveness, new_token
from .records import EVENT_KINDS, RunRecords
from .request import RunRequest
from .rows import (
    ACTIVE_STATUSES,
    MAX_NAME,
    MAX_OWNER,
    STARTABLE_STATUSES,
    STATUSES,
    TERMINAL_OWNER,
    WAITING,
    DamagedRunError,
    FencedOutError,
    RunLimitError,
    RunStateError,
    StoreBusyError,
    check_owner,
    damage_of,
    decode,
    request_of,
    sanitize_name,
    settings_of_row,
)
from .slots import QUEUED_MESSAGE, RunSlots

__all__ = ["RunStore", "RunRequest", "RunLease", "Limits", "Clock", "StoreBusyError", "StoreUnavailableError",
           "RunLimitError", "RunStateError", "DamagedRunError", "FencedOutError", "sanitize_name", "new_token",
           "STATUSES", "ACTIVE_STATUSES", "STARTABLE_STATUSES", "WAITING", "TERMINAL_OWNER", "EVENT_KINDS",
           "RunFolders", "CHECKPOINT_NAME", "LOG_NAME"]

DB_NAME = "runs.sqlite"


class RunStore(RunSlots, RunLiveness, RunRecords, RunFolders):
    """Runs, metrics, events and sample grids of one server, in ``<root>/runs.sqlite``.

    ``clock``: the wall and monotonic clocks the store stamps and measures with (tests pass
    fakes; :class:`flowlib.store.liveness.Clock`)."""

    def __init__(self, root: str | os.PathLike | None = None, limits: Limits | None = None,
                 clock: Clock | None = None):
        self.root = Path(root).expanduser() if root is not None else env.runs_root()
        self.limits = limits if limits is not None else Limits.from_env()
        self.clock = clock if clock is not None else Clock()
        self.db_path = self.root / DB_NAME
        self.reserve_path = self.root / RESERVE_NAME
        self._observed = Observations()
        self._slot_listeners: list[Callable[[], object]] = []
        self._handing_on = threading.local()
        self._file = DatabaseFile(self.root, self.db_path, self.reserve_path, self.limits.db_timeout_s)
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise self._file.os_unavailable(exc, "the runs folder could not be created") from None
        existed = self.db_path.is_file() and self.db_path.stat().st_size > 0
        self._retry(self._file.check_is_ours)   # read-only: nothing is written to a file that is not ours
        version = migrated_from = None
        try:
            version = self.read(schema.stored_version)
            schema.refuse_newer(version, self.db_path)   # before anything is written
            self._retry(lambda: self._with_conn(lambda conn: conn.execute("PRAGMA journal_mode=WAL")))
            if not self.read(schema.is_current):
                migrated_from = self.transaction(lambda conn: schema.migrate(conn, self.db_path))
        except StoreUnavailableError as exc:
            if not (existed and exc.reason == "disk_full" and version in (None, schema.SCHEMA_VERSION)):
                raise
            # A current store on a full disk: reads still work (see read), and the run in hand
            # must be able to record how it ended, so the full disk does not refuse the store.
        self.store_id = self._read_store_id()
        if migrated_from is not None and migrated_from < 2:
            self._mark_older_folders()
        self._file.make_reserve()

    def __repr__(self) -> str:
        return f"RunStore({str(self.root)!r})"

    def _read_store_id(self) -> str | None:
        def read(conn):
            try:
                row = conn.execute("SELECT value FROM meta WHERE key='store_id'").fetchone()
            except sqlite3.Error:
                return None
            return row[0] if row is not None else None
        return self.read(read)

    def _mark_older_folders(self) -> None:
        """After migrating a store from before folder marks: its runs' folders are its own."""
        for (run_id,) in self.read(lambda c: c.execute("SELECT id FROM runs").fetchall()):
            if self.run_dir(run_id).is_dir() and self.folder_mark(run_id) is None:
                try:
                    self.write_mark(run_id)
                except OSError:
                    pass   # a read-only folder: the run can still be read, not resumed

    # -- transactions and reads: the store's own methods and its neighbours use these ----
    def transaction(self, fn: Callable[[sqlite3.Connection], Any], last_words: bool = False,
                    wait_s: float | None = None) -> Any:
        """``fn(conn)`` inside one short ``BEGIN IMMEDIATE`` transaction; returns what fn returns.

        The transaction holds the write lock from its first statement, so what fn reads is
        still true when it writes (a slot claim, a unique name). A database locked by another
        writer is waited for, then retried with back-off up to ``limits.db_timeout_s``, then
        :class:`StoreBusyError`; fn may therefore run more than once, and must do nothing
        but SQL (or a file rename it checks first, as :class:`~flowlib.store.lease.RunLease`
        does). An exception from fn rolls everything back and is raised as it is. A fault of
        the file or its disk is a :class:`StoreUnavailableError` in one sentence.
        ``last_words=True`` (a run's final status, its error event): on a full disk, spend
        the reserve (``runs.reserve``) and try once more. Rows come back as ``sqlite3.Row``.
        ``wait_s``: how long to wait for another writer's lock instead (a chore a read does on
        the side, such as reaping lost runs, passes a fraction of a second: a worker stopped
        while it holds the lock must not make every page read wait).
        """
        def attempt():
            conn = self._connect()
            if wait_s is not None:
                conn.execute(f"PRAGMA busy_timeout={max(0, int(wait_s * 1000))}")
            try:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    result = fn(conn)
                except BaseException:
                    try:
                        conn.execute("ROLLBACK")
                    except sqlite3.Error:
                        pass   # SQLite already rolled back (e.g. after a full disk)
                    raise
                conn.execute("COMMIT")
                return result
            finally:
                conn.close()
        return self._retry(attempt, last_words, wait_s)

    def read(self, fn: Callable[[sqlite3.Connection], Any]) -> Any:
        """``fn(conn)`` on a connection of its own, for reads; returns what fn returns.

        Retried while the database is locked, like :meth:`transaction`; WAL means a read
        never waits for the trainer's writes. On a full disk, when no WAL holds commits, fn
        reads the database file as it is (``flowlib.store.dbfile``). Several reads are not
        one snapshot: read what must agree in one call.
        """
        try:
            return self._retry(lambda: self._with_conn(fn))
        except StoreUnavailableError as exc:
            return self._file.read_as_is(fn, exc)

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.db_path, timeout=self.limits.db_timeout_s, isolation_level=None)
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA synchronous=NORMAL")
        return conn

    def _with_conn(self, fn: Callable[[sqlite3.Connection], Any]) -> Any:
        conn = self._connect()
        try:
            return fn(conn)
        finally:
            conn.close()

    def _retry(self, fn: Callable[[], Any], last_words: bool = False, wait_s: float | None = None) -> Any:
        """fn(), retried while the database is locked; storage faults become StoreUnavailableError.

        ``last_words``: on a full disk, give up the reserve once and try again (a run's final
        status must land, or the run would read ``lost`` instead of why it failed).
        """
        patience = self.limits.db_timeout_s if wait_s is None else wait_s
        deadline = time.monotonic() + patience
        delay = 0.02
        while True:
            try:
                return fn()
            except sqlite3.DatabaseError as exc:
                if not is_busy(exc):
                    if storage_code(exc) is None:
                        raise
                    error = self._file.sqlite_unavailable(exc)
                    if last_words and error.reason in ("disk_full", "io") and self._file.release_reserve():
                        last_words = False
                        continue
                    raise error from None
                if time.monotonic() >= deadline:
                    raise StoreBusyError(
                        f"the run store is busy: another process held the write lock of {self._file.db_name} "
                        f"for {patience:g} s; try again") from None
                time.sleep(delay)
                delay = min(delay * 2, 0.5)

    # -- runs ---------------------------------------------------------------------------
    def create_run(self, request: RunRequest, status: str = "created", submit_key: str | None = None) -> int:
        """The id of the run :meth:`submit_run` made (or found, for a ``submit_key`` seen before)."""
        return self.submit_run(request, status, submit_key)[0]

    def submit_run(self, request: RunRequest, status: str = "created",
                   submit_key: str | None = None) -> tuple[int, bool]:
        """Store a run request and make the run's folder; returns (the run id, whether it is new).

        This is where a run is admitted: the request's settings were checked when it was made,
        and here the server's caps (``limits.check_run``: steps, batch, minutes, and in
        classroom mode the model's parameters and activation memory) refuse it, as a
        ConfigError (a ValueError) naming the field, before anything is stored.
        ``status``: ``"created"`` (start it yourself), ``"waiting"`` (in the queue, started by
        :meth:`claim_next_waiting`), or ``"queued"``: created and given a concurrency slot in
        the same transaction, so a refusal (RunLimitError) leaves no row behind. The name is
        sanitised and made unique by a ``-2``, ``-3`` … suffix. RunLimitError when a
        ``waiting`` run would exceed a queue cap (:meth:`check_queue_room`).

        ``submit_key``: what the page's Start sent (one per form and settings). While a run
        made with the same key and owner is still waiting or active, ``(its id, False)`` is
        returned and nothing new is made: Start pressed twice makes one run.

        The run's folder is claimed for it (:meth:`claim_folder`): a folder of that name that
        this store did not make for this run is set aside, and a ``warning`` event says so.
        """
        if status not in ("created", WAITING, "queued"):
            raise ValueError(f"a new run's status must be created, waiting or queued; got {status!r}")
        if not isinstance(request, RunRequest):
            raise TypeError(f"create_run takes a RunRequest, got {type(request).__name__}")
        config, train = request.config.to_dict(), request.train.to_dict()
        self.limits.check_run(config, train)
        base = sanitize_name(request.name)
        owner = None if request.owner is None else str(request.owner)[:MAX_OWNER]
        dataset, preset = request.dataset, request.preset
        config_json, train_json = json.dumps(config), json.dumps(train)
        message = {"created": "not started yet", WAITING: "waiting for a free training slot",
                   "queued": QUEUED_MESSAGE}[status]
        freed: list[int] = []

        def insert(conn):
            now = self.clock.wall()
            if submit_key is not None:
                same = conn.execute(
                    "SELECT id FROM runs WHERE submit_key=? AND owner IS ? AND status IN "
                    "('created', 'waiting', 'queued', 'running', 'stopping')", (str(submit_key), owner)).fetchone()
                if same is not None:
                    return same["id"], False
            if status == "queued":
                freed[:] = self._mark_lost(conn)
                self._check_free_slot(conn)
            elif status == WAITING:
                self._check_queue_room(conn, owner, 1)
            taken = {r[0] for r in conn.execute("SELECT name FROM runs")}
            unique, n = base, 2
            while unique in taken:
                suffix = f"-{n}"
                unique, n = base[:MAX_NAME - len(suffix)] + suffix, n + 1
            cur = conn.execute(
                "INSERT INTO runs (name, created, dataset, preset, config, train, status, owner, message,"
                " heartbeat, submit_key) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (unique, now, dataset, preset, config_json, train_json, status, owner, message,
                 now if status == "queued" else None, None if submit_key is None else str(submit_key)))
            return cur.lastrowid, True

        run_id, made = self.transaction(insert)
        self._slots_freed(freed)
        if not made:
            return run_id, False
        try:
            note = self.claim_folder(run_id)
        except OSError:
            # A run without its folder cannot train: take the row back out (it may hold a slot).
            self.transaction(lambda c: c.execute("DELETE FROM runs WHERE id=?", (run_id,)))
            raise
        if note:
            self.add_event(run_id, "warning", note, 0)
        return run_id, True

    def get_run(self, run_id: int) -> dict | None:
        """One run as a dict (config and train decoded), or None. Reaps any run whose heartbeat stopped."""
        query = "SELECT * FROM runs WHERE id=?"
        row = self.read(lambda c: c.execute(query, (int(run_id),)).fetchone())
        if row is None:
            return None
        if self._maybe_reap():
            row = self.read(lambda c: c.execute(query, (int(run_id),)).fetchone())
        return decode(row)

    def list_runs(self, owner: str | None = None) -> list[dict]:
        """Every run (or one owner's), newest first. Cheap: one SELECT; reaps runs whose heartbeat stopped."""
        def read(c):
            if owner is None:
                return c.execute("SELECT * FROM runs ORDER BY id DESC").fetchall()
            return c.execute("SELECT * FROM runs WHERE owner=? ORDER BY id DESC", (owner,)).fetchall()
        rows = self.read(read)
        if self._maybe_reap(rows if owner is None else None):
            rows = self.read(read)
        return [decode(r) for r in rows]

    def dataset_paths_in_use(self) -> set[str]:
        """The ``path`` dataset option of every run that has not ended (created, waiting,
        queued, running, stopping): files those runs will still read, which a quota that
        evicts old uploads must keep (``flowlib.data.store_upload``'s ``in_use``)."""
        paths = set()
        for run in self.list_runs():
            options = run["train"].get("dataset_options")
            if run["status"] in ("created", WAITING, *ACTIVE_STATUSES) and isinstance(options, dict) \
                    and options.get("path"):
                paths.add(str(options["path"]))
        return paths

    def find_run(self, ref: Any) -> dict | None:
        """A run by id (int or digits) or by exact name (the newest with that name)."""
        text = str(ref).strip()
        if text.isdigit():
            run = self.get_run(int(text))
            if run is not None:
                return run
        row = self.read(lambda c: c.execute("SELECT id FROM runs WHERE name=? ORDER BY id DESC",
                                             (text,)).fetchone())
        return None if row is None else self.get_run(row[0])

    def stored_request(self, run_id: int) -> RunRequest:
        """The run's request as stored, checked again; what the worker process trains.

        KeyError for an unknown id; DamagedRunError (a RunStateError) naming the run when its
        stored settings are not readable; ConfigError naming the run and the field when a
        stored value is not allowed (a row changed behind the app's back). The server's caps
        are not checked here: ``limits.check_run`` does that where a slot is claimed.
        """
        row = self.read(lambda c: c.execute("SELECT * FROM runs WHERE id=?", (int(run_id),)).fetchone())
        if row is None:
            raise KeyError(f"no run with id {run_id}")
        return request_of(row)

    def active_runs(self) -> list[dict]:
        return [r for r in self.list_runs() if r["status"] in ACTIVE_STATUSES]

    def _get_row(self, conn, run_id) -> sqlite3.Row:
        row = conn.execute("SELECT * FROM runs WHERE id=?", (int(run_id),)).fetchone()
        if row is None:
            raise KeyError(f"no run with id {run_id}")
        return row

    def set_best_test_bpd(self, run_id: int, value: float, token: str | None = None) -> None:
        def best(conn):
            self.fence(conn, run_id, token)
            conn.execute("UPDATE runs SET best_test_bpd = CASE WHEN best_test_bpd IS NULL OR ? < best_test_bpd "
                         "THEN ? ELSE best_test_bpd END WHERE id=?", (value, value, int(run_id)))
        self.transaction(best)

    def update_train(self, run_id: int, train: TrainConfig, owner: str | None = None) -> None:
        """Replace a non-active run's training config (e.g. a larger budget before resuming).

        Refuses (DamagedRunError) a run whose stored settings are unreadable: a new training
        config would not make its model known again.
        """
        if not isinstance(train, TrainConfig):
            raise TypeError(f"update_train takes a TrainConfig, got {type(train).__name__}")
        train = train.to_dict()
        self.limits.check_train(train)

        def update(conn):
            row = self._get_row(conn, run_id)
            check_owner(row, owner, "change")
            config, stored_train = settings_of_row(row)
            damage = damage_of(row, config, stored_train)
            if damage:
                raise DamagedRunError(damage)
            self.limits.check_model(config, train.get("batch_size"))
            if row["status"] in ACTIVE_STATUSES:
                raise RunStateError(f"run {row['id']} '{row['name']}' is {row['status']}; stop it first")
            conn.execute("UPDATE runs SET train=?, status=CASE WHEN status='finished' THEN 'stopped' "
                         "ELSE status END WHERE id=?", (json.dumps(train), int(run_id)))
        self.transaction(update)

    def rename_run(self, run_id: int, name: Any, owner: str | None = None) -> str:
        """Give a run a new (sanitised) name; returns it. Refuses a name another run has."""
        new = sanitize_name(name)

        def rename(conn):
            row = self._get_row(conn, run_id)
            check_owner(row, owner, "rename")
            clash = conn.execute("SELECT id FROM runs WHERE name=? AND id<>?", (new, int(run_id))).fetchone()
            if clash is not None:
                raise ValueError(f"another run (run {clash[0]}) is already called '{new}'")
            conn.execute("UPDATE runs SET name=? WHERE id=?", (new, int(run_id)))
            return new
        return self.transaction(rename)

    def delete_run(self, run_id: int, owner: str | None = None) -> None:
        """Delete a run's rows and its folder (not a folder another store made). Refuses an
        active run (stop it first)."""
        def delete(conn):
            row = self._get_row(conn, run_id)
            check_owner(row, owner, "delete")
            if row["status"] in ACTIVE_STATUSES:
                raise RunStateError(f"run {row['id']} '{row['name']}' is {row['status']}; stop it before deleting")
            for table in ("metrics", "events", "samples"):
                conn.execute(f"DELETE FROM {table} WHERE run_id=?", (int(run_id),))
            conn.execute("DELETE FROM runs WHERE id=?", (int(run_id),))
        self.transaction(delete)
        folder = self.run_dir(run_id)
        mark = self.folder_mark(run_id)
        if folder.parent == self.root and folder.is_dir() and (mark is None or mark.get("store") == self.store_id):
            shutil.rmtree(folder, ignore_errors=True)

    def integrity_check(self) -> str:
        return self.read(lambda c: c.execute("PRAGMA integrity_check").fetchone()[0])
