"""The run store: one SQLite file (WAL) and one folder per run, on one server.

The worker processes write it (a run's status, heartbeat, curves, events, sample grids); the
pages, the CLI and studies read it and ask for changes (start, stop, rename, delete), each
with connections of their own. Nothing else holds a run's state.

    from flowlib.store.runs import RunRequest, RunStore
    store = RunStore()                       # root: arg, else $FLOWLAB_RUNS_DIR, else <repo>/checkpoints/runs
    run_id = store.create_run(RunRequest("mnist-a", flow_config, train_config, owner=visitor_id))
    store.list_runs()                        # newest first; stale heartbeats are marked lost here
    store.stored_request(run_id)             # the RunRequest as stored, checked again (the worker trains this)
    store.metrics(run_id, keys=["train_bpd", "test_bpd"])   # {key: {"step": [...], "wall": [...], "value": [...]}}
    store.events(run_id)                     # nan_skip / rollback / lr_drop / eval / checkpoint / error / stop ...
    store.latest_samples(run_id)             # {"step", "path", "wall"} of the newest sample grid, or None
    store.check_queue_room(visitor_id, 5)    # RunLimitError if 5 more waiting runs exceed the visitor's cap
    store.transaction(fn); store.read(fn)    # fn(conn): SQL of a neighbour module (records, studies)

Metrics, events and sample grids are in :mod:`flowlib.store.records` (a mixin of RunStore);
the tables, their layout version and the migrations in :mod:`flowlib.store.schema`; the
database file's own faults (foreign, damaged, read-only, disk full) in
:mod:`flowlib.store.dbfile`; studies (groups of runs) in :mod:`flowlib.store.studies`; the
typed request a run is made from in :mod:`flowlib.store.request`.

Layout under the root::

    runs.sqlite            runs, metrics, events, samples, studies, study_runs tables (WAL journal);
                           its layout version in the header (PRAGMA user_version)
    runs.reserve           1 MiB kept free for a run's last words on a full disk (flowlib.store.dbfile)
    run-00001/             checkpoint.pt, samples_step0000050.png, worker.log
    run-00002/ ...

Transactions: the store's own methods and its neighbours in this folder (records, studies)
write through :meth:`RunStore.transaction` and read through :meth:`RunStore.read`.

Versions: ``RunStore()`` reads the layout version first. A store written by a newer Flow Lab
is refused untouched (StoreUnavailableError, ``reason == "newer"``); an older one is migrated
in place in one transaction (:func:`flowlib.store.schema.migrate`).

Damaged rows: a run whose stored config or train JSON cannot be read is never trained with
default settings. It reads with ``run["damaged"]`` (the sentence saying so, naming the run;
None for every sound run), ``config`` / ``train`` as ``{}`` for display and that sentence as
its ``message``; starting, resuming or changing it raises :class:`DamagedRunError`, and the
queue marks such a waiting run ``failed`` with the sentence.

Folder names come from the integer id, never from the user's run name, so a name such as
``../../etc`` can only ever be a label. Names are still sanitised for display (see
:func:`sanitize_name`).

Run status moves through::

    created --start--> queued --worker up--> running --stop--> stopping --> stopped
    waiting --a slot frees--^                         \\--> finished | failed
    queued / running / stopping with a stale heartbeat --> lost

``queued``, ``running`` and ``stopping`` are *active*: they hold one of the concurrency slots.
A start claims a slot inside one ``BEGIN IMMEDIATE`` transaction, so two tabs pressing Start
at the same moment cannot both get one. ``waiting`` runs are the queue: :meth:`claim_next_waiting`
moves the oldest one to ``queued`` in the same kind of transaction (``flowlib.jobs.worker`` calls
it whenever a run ends). ``created`` runs are never started by the queue, so a run left
behind by a refused start cannot train by surprise later. Stores written before ``waiting``
existed still read: their ``created`` runs simply stay where they are until started.

Concurrency: every call opens its own short-lived connection (safe from any thread, nothing
to leak), sets ``busy_timeout``, and keeps transactions to a few statements. WAL means readers
never block the trainer's writes. A write that still finds the database locked is retried
with back-off for a bounded time, then raises :class:`StoreBusyError`; the trainer treats that
as "try again at the next flush", never as a reason to die.

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

Owners: ``owner`` is an opaque visitor id the app passes. A run created with an owner can be
started, stopped, renamed or deleted only by a caller passing the same owner, or by a caller
passing ``owner=None`` (trusted: the CLI, the teacher). The app must always pass the visitor id.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sqlite3
import time
from pathlib import Path
from typing import Any, Callable, Iterable

from flowlib import env
from flowlib.config import TrainConfig
from flowlib.settings import ConfigError

from . import schema
from .dbfile import RESERVE_NAME, DatabaseFile, StoreUnavailableError, is_busy, storage_code
from .limits import Limits
from .records import EVENT_KINDS, RunRecords
from .request import RunRequest

__all__ = ["RunStore", "RunRequest", "Limits", "StoreBusyError", "StoreUnavailableError", "RunLimitError",
           "RunStateError", "DamagedRunError", "sanitize_name", "STATUSES", "ACTIVE_STATUSES",
           "STARTABLE_STATUSES", "WAITING", "EVENT_KINDS"]

STATUSES = ("created", "waiting", "queued", "running", "stopping", "stopped", "finished", "failed", "lost")
ACTIVE_STATUSES = ("queued", "running", "stopping")
WAITING = "waiting"   # in the queue for a free slot; started by the worker, oldest first
STARTABLE_STATUSES = ("created", "waiting", "stopped", "failed", "lost")
_QUEUED_MESSAGE = "waiting for the training process to start"

MAX_NAME = 80
MAX_OWNER = 200
DB_NAME = "runs.sqlite"
CHECKPOINT_NAME = "checkpoint.pt"
LOG_NAME = "worker.log"


class StoreBusyError(RuntimeError):
    """The database stayed locked by another program for longer than the retry bound."""


class RunLimitError(ValueError):
    """Starting would exceed the concurrent-run limit; the message names the run in the way."""


class RunStateError(ValueError):
    """The run is in a state that does not allow the request (e.g. deleting a running run)."""


class DamagedRunError(RunStateError):
    """The run's stored settings cannot be read: it cannot be started, resumed or changed."""


def sanitize_name(name: Any, fallback: str = "run") -> str:
    """A display name made safe: [A-Za-z0-9 _.-] only, runs collapsed, trimmed, ≤ 80 chars.

    ``"../../etc/passwd"`` -> ``"etc-passwd"``; ``"a\\x00b"`` -> ``"a-b"``; ``""`` -> ``"run"``.
    """
    text = "" if name is None else str(name)
    text = re.sub(r"[^A-Za-z0-9 _.\-]+", "-", text)
    text = re.sub(r"\.{2,}", "-", text)          # no "..": never looks like a parent folder
    text = re.sub(r" {2,}", " ", text)
    text = re.sub(r"-{2,}", "-", text)
    text = re.sub(r"^[\s.\-_]+|[\s.\-_]+$", "", text)[:MAX_NAME]
    text = re.sub(r"[\s.\-_]+$", "", text)
    return text or fallback


def _settings(row: sqlite3.Row | dict) -> tuple[dict | None, dict | None]:
    """A row's config and train decoded; None for one that is not a readable JSON object."""
    out = []
    for key in ("config", "train"):
        try:
            value = json.loads(row[key])
        except (TypeError, ValueError):
            value = None
        out.append(value if isinstance(value, dict) else None)
    return out[0], out[1]


def _damage(row: sqlite3.Row | dict, config: dict | None, train: dict | None) -> str | None:
    """The sentence naming the run and which of its stored settings cannot be read, or None."""
    bad = [words for value, words in ((config, "model settings (config)"), (train, "training settings (train)"))
           if value is None]
    if not bad:
        return None
    return (f"run {row['id']} '{row['name']}' is damaged: its stored {' and '.join(bad)} "
            f"{'are' if len(bad) > 1 else 'is'} not readable, so it cannot be started, resumed or "
            "changed; delete it and start a new run")


def _decode(row: sqlite3.Row) -> dict:
    """A run as a dict: config and train decoded; ``damaged`` None, or the sentence saying why
    the run's settings are unreadable (then config / train read ``{}``, for display only, and
    ``message`` is that sentence)."""
    run = dict(row)
    config, train = _settings(row)
    run["damaged"] = _damage(row, config, train)
    run["config"], run["train"] = config or {}, train or {}
    if run["damaged"]:
        run["message"] = run["damaged"][0].upper() + run["damaged"][1:]
    run.pop("stop_requested", None)
    return run


def _request_of(row: sqlite3.Row | dict) -> RunRequest:
    """The stored request of a run row, checked again: DamagedRunError when its JSON cannot be
    read, ConfigError (naming the run and the field) when a value is not allowed."""
    config, train = _settings(row)
    damage = _damage(row, config, train)
    if damage:
        raise DamagedRunError(damage)
    try:
        return RunRequest.from_dicts(row["name"], config, train, row["owner"], row["preset"])
    except ConfigError as exc:
        raise ConfigError(f"run {row['id']} '{row['name']}' has a stored setting that is not allowed: {exc}",
                          exc.field) from None


class RunFolders:
    """Where a run's files are under a store's ``root``: folders named from the integer id only."""

    root: Path

    def run_dir(self, run_id: int) -> Path:
        """The run's folder (named from its integer id only)."""
        return self.root / f"run-{int(run_id):05d}"

    def checkpoint_path(self, run_id: int) -> Path:
        return self.run_dir(run_id) / CHECKPOINT_NAME

    def log_path(self, run_id: int) -> Path:
        return self.run_dir(run_id) / LOG_NAME


class RunStore(RunRecords, RunFolders):
    """Runs, metrics, events and sample grids of one server, in ``<root>/runs.sqlite``."""

    def __init__(self, root: str | os.PathLike | None = None, limits: Limits | None = None):
        self.root = Path(root).expanduser() if root is not None else env.runs_root()
        self.limits = limits if limits is not None else Limits.from_env()
        self.db_path = self.root / DB_NAME
        self.reserve_path = self.root / RESERVE_NAME
        self._file = DatabaseFile(self.root, self.db_path, self.reserve_path, self.limits.db_timeout_s)
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise self._file.os_unavailable(exc, f"the runs folder {self.root} could not be created") from None
        existed = self.db_path.is_file() and self.db_path.stat().st_size > 0
        self._retry(self._file.check_is_ours)   # read-only: nothing is written to a file that is not ours
        version = None
        try:
            version = self.read(schema.stored_version)
            schema.refuse_newer(version, self.db_path)   # before anything is written
            self._retry(lambda: self._with_conn(lambda conn: conn.execute("PRAGMA journal_mode=WAL")))
            if not self.read(schema.is_current):
                self.transaction(lambda conn: schema.migrate(conn, self.db_path))
        except StoreUnavailableError as exc:
            if not (existed and exc.reason == "disk_full" and version in (None, schema.SCHEMA_VERSION)):
                raise
            # A current store on a full disk: reads still work (see read), and the run in hand
            # must be able to record how it ended, so the full disk does not refuse the store.
        self._file.make_reserve()

    def __repr__(self) -> str:
        return f"RunStore({str(self.root)!r})"

    # -- transactions and reads: the store's own methods and its neighbours use these ----
    def transaction(self, fn: Callable[[sqlite3.Connection], Any], last_words: bool = False) -> Any:
        """``fn(conn)`` inside one short ``BEGIN IMMEDIATE`` transaction; returns what fn returns.

        The transaction holds the write lock from its first statement, so what fn reads is
        still true when it writes (a slot claim, a unique name). A database locked by another
        writer is waited for, then retried with back-off up to ``limits.db_timeout_s``, then
        :class:`StoreBusyError`; fn may therefore run more than once, and must do nothing
        but SQL. An exception from fn rolls everything back and is raised as it is. A fault of
        the file or its disk is a :class:`StoreUnavailableError` in one sentence.
        ``last_words=True`` (a run's final status, its error event): on a full disk, spend
        the reserve (``runs.reserve``) and try once more. Rows come back as ``sqlite3.Row``.
        """
        def attempt():
            conn = self._connect()
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
        return self._retry(attempt, last_words)

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

    def _retry(self, fn: Callable[[], Any], last_words: bool = False) -> Any:
        """fn(), retried while the database is locked; storage faults become StoreUnavailableError.

        ``last_words``: on a full disk, give up the reserve once and try again (a run's final
        status must land, or the run would read ``lost`` instead of why it failed).
        """
        deadline = time.monotonic() + self.limits.db_timeout_s
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
                        f"the run database {self.db_path} stayed locked by another program for "
                        f"{self.limits.db_timeout_s:g} s; try again") from None
                time.sleep(delay)
                delay = min(delay * 2, 0.5)

    # -- runs ---------------------------------------------------------------------------
    def create_run(self, request: RunRequest, status: str = "created") -> int:
        """Store a run request and make the run's folder; returns the run id.

        This is where a run is admitted: the request's settings were checked when it was made,
        and here the server's caps (``limits.check_run``: steps, batch, minutes, and in
        classroom mode the model's parameters and activation memory) refuse it, as a
        ConfigError (a ValueError) naming the field, before anything is stored.
        ``status``: ``"created"`` (start it yourself), ``"waiting"`` (in the queue, started by
        :meth:`claim_next_waiting`), or ``"queued"``: created and given a concurrency slot in
        the same transaction, so a refusal (RunLimitError) leaves no row behind. The name is
        sanitised and made unique by a ``-2``, ``-3`` … suffix. RunLimitError when a
        ``waiting`` run would exceed the owner's queue cap (:meth:`check_queue_room`).
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
                   "queued": _QUEUED_MESSAGE}[status]

        def insert(conn):
            now = time.time()
            if status == "queued":
                self._mark_lost(conn, now)
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
                " heartbeat) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (unique, now, dataset, preset, config_json, train_json, status, owner, message,
                 now if status == "queued" else None))
            return cur.lastrowid

        run_id = self.transaction(insert)
        try:
            self.run_dir(run_id).mkdir(parents=True, exist_ok=True)
        except OSError:
            # A run without its folder cannot train: take the row back out (it may hold a slot).
            self.transaction(lambda c: c.execute("DELETE FROM runs WHERE id=?", (run_id,)))
            raise
        return run_id

    def _stale_ids(self, rows: Iterable[sqlite3.Row], now: float) -> list[int]:
        out = []
        for r in rows:
            if r["status"] not in ACTIVE_STATUSES:
                continue
            window = self.limits.start_timeout_s if r["status"] == "queued" else self.limits.stale_after_s
            if r["heartbeat"] is None or now - r["heartbeat"] > window:
                out.append(r["id"])
        return out

    def _mark_lost(self, conn: sqlite3.Connection, now: float) -> list[int]:
        rows = conn.execute("SELECT id, status, heartbeat, step FROM runs WHERE status IN "
                            "('queued', 'running', 'stopping')").fetchall()
        lost = self._stale_ids(rows, now)
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
            conn.execute("UPDATE runs SET status='lost', message=?, ended=?, stop_requested=0 "
                         "WHERE id=?", (msg, now, r["id"]))
            conn.execute("INSERT INTO events (run_id, step, wall, kind, message) VALUES (?, ?, ?, 'lost', ?)",
                         (r["id"], r["step"], now, msg))
        return lost

    def reap_lost(self) -> list[int]:
        """Mark active runs with a stale heartbeat as ``lost``; returns their ids."""
        return self.transaction(lambda conn: self._mark_lost(conn, time.time()))

    def _maybe_reap(self, rows: list[sqlite3.Row]) -> bool:
        if self._stale_ids(rows, time.time()):
            try:
                self.reap_lost()
            except (StoreBusyError, StoreUnavailableError):
                return False   # reading still works; the next read reaps
            return True
        return False

    def get_run(self, run_id: int) -> dict | None:
        """One run as a dict (config and train decoded), or None. Reaps it if stale."""
        query = "SELECT * FROM runs WHERE id=?"
        row = self.read(lambda c: c.execute(query, (int(run_id),)).fetchone())
        if row is None:
            return None
        if self._maybe_reap([row]):
            row = self.read(lambda c: c.execute(query, (int(run_id),)).fetchone())
        return _decode(row)

    def list_runs(self, owner: str | None = None) -> list[dict]:
        """Every run (or one owner's), newest first. Cheap: one SELECT; reaps stale runs."""
        def read(c):
            if owner is None:
                return c.execute("SELECT * FROM runs ORDER BY id DESC").fetchall()
            return c.execute("SELECT * FROM runs WHERE owner=? ORDER BY id DESC", (owner,)).fetchall()
        rows = self.read(read)
        if self._maybe_reap(rows):
            rows = self.read(read)
        return [_decode(r) for r in rows]

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
        return _request_of(row)

    def active_runs(self) -> list[dict]:
        return [r for r in self.list_runs() if r["status"] in ACTIVE_STATUSES]

    @staticmethod
    def _check_owner(run: sqlite3.Row | dict, owner: str | None, action: str) -> None:
        if owner is not None and run["owner"] is not None and str(owner) != run["owner"]:
            raise PermissionError(f"run {run['id']} '{run['name']}' belongs to someone else; "
                                  f"only its owner can {action} it")

    def _get_row(self, conn, run_id) -> sqlite3.Row:
        row = conn.execute("SELECT * FROM runs WHERE id=?", (int(run_id),)).fetchone()
        if row is None:
            raise KeyError(f"no run with id {run_id}")
        return row

    def request_start(self, run_id: int, owner: str | None = None) -> dict:
        """Claim a concurrency slot and mark the run ``queued``, atomically.

        Raises RunLimitError when the server's limit of active runs is reached (naming the
        run in the way), RunStateError when the run is already active or finished, or has
        trained but its checkpoint is gone (its folder was deleted),
        PermissionError for a non-owner, KeyError for an unknown id.
        """
        def claim(conn):
            now = time.time()
            self._mark_lost(conn, now)
            row = self._get_row(conn, run_id)
            self._check_owner(row, owner, "start")
            if row["status"] in ACTIVE_STATUSES:
                raise RunStateError(f"run {row['id']} '{row['name']}' is already {row['status']}")
            if row["status"] not in STARTABLE_STATUSES:
                raise RunStateError(f"run {row['id']} '{row['name']}' is {row['status']}; "
                                    "raise its step or time budget to train it further")
            request = _request_of(row)
            self.limits.check_run(request.config.to_dict(), request.train.to_dict())
            self._check_resumable(row)
            self._check_free_slot(conn)
            self._mark_queued(conn, row["id"], now)
        self.transaction(claim)
        return self.get_run(run_id)

    def _check_resumable(self, row) -> None:
        """A run that trained (step > 0) resumes from its checkpoint; without one it would
        start again at step 0 and draw a second curve over the first, so it is refused."""
        if row["step"] and not self.checkpoint_path(row["id"]).is_file():
            raise RunStateError(
                f"run {row['id']} '{row['name']}' cannot resume: its checkpoint "
                f"{self.checkpoint_path(row['id'])} is missing (was its folder deleted?), so "
                f"its {row['step']:,} steps cannot be continued; start a new run instead")

    def claim_next_waiting(self) -> int | None:
        """Give a free slot to the oldest ``waiting`` run (it becomes ``queued``); its id, or None.

        One ``BEGIN IMMEDIATE`` transaction, like :meth:`request_start`, so two processes
        draining the queue at once never hand out more slots than the limit. A waiting run
        that the server's limits no longer allow (they changed since it was queued) is
        marked ``failed`` with the reason, and the next one is tried.
        """
        def claim(conn):
            now = time.time()
            self._mark_lost(conn, now)
            if len(self._active_rows(conn)) >= self.limits.max_concurrent:
                return None
            for row in conn.execute("SELECT * FROM runs WHERE status=? ORDER BY id", (WAITING,)).fetchall():
                try:
                    request = _request_of(row)
                    self.limits.check_run(request.config.to_dict(), request.train.to_dict())
                except ValueError as exc:
                    conn.execute("UPDATE runs SET status='failed', ended=?, message=? WHERE id=?",
                                 (now, f"Not started: {exc}.", row["id"]))
                    continue
                self._mark_queued(conn, row["id"], now)
                return row["id"]
            return None
        return self.transaction(claim)

    def check_queue_room(self, owner: str | None, n_new: int) -> None:
        """RunLimitError when ``owner`` may not add ``n_new`` more waiting runs.

        The cap is ``limits.max_waiting_per_owner`` (FLOWLAB_MAX_WAITING_PER_VISITOR; 12 in
        classroom mode, none otherwise) on the owner's waiting plus active runs. ``owner=None``
        (the CLI, the teacher) is never capped. :meth:`create_run` checks it again for each
        ``waiting`` run, inside its transaction.
        """
        self.read(lambda conn: self._check_queue_room(conn, owner, n_new))

    def _check_queue_room(self, conn, owner: str | None, n_new: int) -> None:
        cap = self.limits.max_waiting_per_owner
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

    @staticmethod
    def _active_rows(conn) -> list[sqlite3.Row]:
        return conn.execute("SELECT id, name, status FROM runs WHERE status IN "
                            "('queued', 'running', 'stopping') ORDER BY id").fetchall()

    def _check_free_slot(self, conn) -> None:
        """RunLimitError naming the run in the way when every concurrency slot is taken."""
        active = self._active_rows(conn)
        limit = self.limits.max_concurrent
        if len(active) >= limit:
            other = active[0]
            if limit == 1:
                raise RunLimitError(
                    f"Another run is training (run {other['id']} '{other['name']}'); stop it "
                    "first or raise FLOWLAB_MAX_CONCURRENT")
            raise RunLimitError(
                f"{len(active)} runs are already training (the limit is {limit}), e.g. run "
                f"{other['id']} '{other['name']}'; stop one first or raise FLOWLAB_MAX_CONCURRENT")

    @staticmethod
    def _mark_queued(conn, run_id: int, now: float) -> None:
        conn.execute("UPDATE runs SET status='queued', heartbeat=?, pid=NULL, stop_requested=0, "
                     "ended=NULL, message=? WHERE id=?", (now, _QUEUED_MESSAGE, int(run_id)))

    def set_pid(self, run_id: int, pid: int) -> None:
        self.transaction(lambda c: c.execute("UPDATE runs SET pid=? WHERE id=? AND status IN "
                                     "('queued', 'running', 'stopping')", (int(pid), int(run_id))))

    def begin_run(self, run_id: int, pid: int) -> str:
        """The worker's first call: ``queued`` -> ``running``. Returns the status it found.

        Anything but ``"queued"`` means: do not train (``"stopping"``: a stop came before the
        process was up; mark it stopped).
        """
        def begin(conn):
            row = self._get_row(conn, run_id)
            if row["status"] == "queued":
                now = time.time()
                conn.execute("UPDATE runs SET status='running', pid=?, heartbeat=?, started=?, "
                             "message='training' WHERE id=?", (int(pid), now, now, int(run_id)))
            return row["status"]
        return self.transaction(begin)

    def heartbeat(self, run_id: int, step: int | None = None) -> tuple[str | None, bool]:
        """The worker is alive at ``step``. Returns (status, stop_requested) in the same call."""
        def beat(conn):
            conn.execute("UPDATE runs SET heartbeat=?, step=COALESCE(?, step) WHERE id=? AND "
                         "status IN ('running', 'stopping')", (time.time(), step, int(run_id)))
            row = conn.execute("SELECT status, stop_requested FROM runs WHERE id=?", (int(run_id),)).fetchone()
            return (None, True) if row is None else (row["status"], bool(row["stop_requested"]))
        return self.transaction(beat)

    def request_stop(self, run_id: int, owner: str | None = None) -> bool:
        """Ask an active run to stop. Idempotent: True only if this call requested it."""
        def stop(conn):
            row = self._get_row(conn, run_id)
            self._check_owner(row, owner, "stop")
            if row["status"] not in ("queued", "running") or row["stop_requested"]:
                return False
            conn.execute("UPDATE runs SET status='stopping', stop_requested=1, "
                         "message='stopping: finishing the step and saving a checkpoint' WHERE id=?",
                         (int(run_id),))
            return True
        return self.transaction(stop)

    def poll_stop(self, run_id: int) -> tuple[str | None, bool]:
        """(status, stop_requested) of a run, one indexed read; (None, True) if it is gone."""
        row = self.read(lambda c: c.execute("SELECT status, stop_requested FROM runs WHERE id=?",
                                             (int(run_id),)).fetchone())
        return (None, True) if row is None else (row["status"], bool(row["stop_requested"]))

    def finish_run(self, run_id: int, status: str, message: str, step: int | None = None) -> bool:
        """The worker's last call: stopped / finished / failed with a message in words.

        Also overwrites ``lost`` (a slow worker wrongly presumed dead knows better). Returns
        False if the run is gone or already ended.
        """
        if status not in ("stopped", "finished", "failed", "lost"):
            raise ValueError(f"finish_run status must be stopped, finished, failed or lost; got {status!r}")

        def finish(conn):
            cur = conn.execute(
                "UPDATE runs SET status=?, message=?, step=COALESCE(?, step), ended=?, "
                "stop_requested=0 WHERE id=? AND status IN ('queued', 'running', 'stopping', 'lost')",
                (status, str(message), step, time.time(), int(run_id)))
            return cur.rowcount > 0
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
            now = time.time()
            conn.execute("UPDATE runs SET status='lost', message=?, ended=?, stop_requested=0 WHERE id=?",
                         (msg, now, int(run_id)))
            conn.execute("INSERT INTO events (run_id, step, wall, kind, message) VALUES (?, ?, ?, 'lost', ?)",
                         (int(run_id), row["step"], now, msg))
            return True
        return self.transaction(check, last_words=True)

    def set_best_test_bpd(self, run_id: int, value: float) -> None:
        self.transaction(lambda c: c.execute(
            "UPDATE runs SET best_test_bpd = CASE WHEN best_test_bpd IS NULL OR ? < best_test_bpd "
            "THEN ? ELSE best_test_bpd END WHERE id=?", (value, value, int(run_id))))

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
            self._check_owner(row, owner, "change")
            config, stored_train = _settings(row)
            damage = _damage(row, config, stored_train)
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
            self._check_owner(row, owner, "rename")
            clash = conn.execute("SELECT id FROM runs WHERE name=? AND id<>?", (new, int(run_id))).fetchone()
            if clash is not None:
                raise ValueError(f"another run (run {clash[0]}) is already called '{new}'")
            conn.execute("UPDATE runs SET name=? WHERE id=?", (new, int(run_id)))
            return new
        return self.transaction(rename)

    def delete_run(self, run_id: int, owner: str | None = None) -> None:
        """Delete a run's rows and its folder. Refuses an active run (stop it first)."""
        def delete(conn):
            row = self._get_row(conn, run_id)
            self._check_owner(row, owner, "delete")
            if row["status"] in ACTIVE_STATUSES:
                raise RunStateError(f"run {row['id']} '{row['name']}' is {row['status']}; stop it before deleting")
            for table in ("metrics", "events", "samples"):
                conn.execute(f"DELETE FROM {table} WHERE run_id=?", (int(run_id),))
            conn.execute("DELETE FROM runs WHERE id=?", (int(run_id),))
        self.transaction(delete)
        folder = self.run_dir(run_id)
        if folder.parent == self.root and folder.is_dir():
            shutil.rmtree(folder, ignore_errors=True)

    def integrity_check(self) -> str:
        return self.read(lambda c: c.execute("PRAGMA integrity_check").fetchone()[0])
