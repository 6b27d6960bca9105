"""The run store's tables, the version of their layout, and the migrations from older layouts.

    from flowlib.store import schema
    schema.SCHEMA_VERSION                    # the layout this code reads and writes
    version = schema.stored_version(conn)    # SQLite's PRAGMA user_version: 0 when none was recorded
    schema.refuse_newer(version, db_path)    # StoreUnavailableError ("newer") for a store from a newer Flow Lab
    schema.migrate(conn, db_path)            # inside one BEGIN IMMEDIATE transaction: old -> SCHEMA_VERSION

:class:`flowlib.store.runs.RunStore` calls these when it opens ``runs.sqlite``: a store from
a newer Flow Lab is refused before anything is written (this code cannot know what that
version's rows mean); an older one is brought up to date in place, in one transaction, so a
failure half-way leaves it as it was; a current one is only read.

Versions (``PRAGMA user_version`` in the database header):

``0``  none recorded: a new, empty file, or a store written before the layout had a version.
       Such a store holds ``runs``, ``metrics``, ``events`` and ``samples`` with the columns
       of :data:`TABLES`; ``studies`` and ``study_runs`` only if a study was ever made there
       (they were made on first use); its ``application_id`` may still be 0, and its sample
       paths may be absolute (the reader takes both, see ``flowlib.store.records``).
``1``  the six tables ``runs``, ``metrics``, ``events``, ``samples``, ``studies`` and
       ``study_runs`` with their indexes, and Flow Lab's ``application_id``.
``2``  :data:`TABLES`: also ``meta`` (the store's identity, a random ``store_id`` that each run
       folder's mark repeats, see ``flowlib.store.folders``; the caps the server recorded) and
       the runs' ``token``, ``beats``, ``submit_key``, ``stopped_by`` and ``curve_rev`` columns.

To change the layout: edit :data:`TABLES` (what a new store gets) and append a
:class:`Migration` that takes a store of the previous version to it (``ALTER TABLE ... ADD
COLUMN``, a new table, rewritten rows), then raise :data:`SCHEMA_VERSION` to its version.
A migration runs inside the opening transaction and must not commit.
"""

from __future__ import annotations

import sqlite3
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from .dbfile import APPLICATION_ID, StoreUnavailableError

__all__ = ["SCHEMA_VERSION", "TABLES", "Migration", "MIGRATIONS", "stored_version", "refuse_newer",
           "is_current", "migrate"]

TABLES = """
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    created REAL NOT NULL,
    dataset TEXT NOT NULL,
    preset TEXT,
    config TEXT NOT NULL,            -- FlowConfig.to_dict() as JSON
    train TEXT NOT NULL,             -- TrainConfig.to_dict() as JSON
    status TEXT NOT NULL,
    pid INTEGER,
    heartbeat REAL,                  -- unix time of the worker's last sign of life
    step INTEGER NOT NULL DEFAULT 0, -- last step the worker reported
    message TEXT NOT NULL DEFAULT '',
    owner TEXT,
    stop_requested INTEGER NOT NULL DEFAULT 0,
    started REAL,
    ended REAL,
    best_test_bpd REAL,
    token TEXT,                      -- the fencing token of the one worker allowed to write the run
    beats INTEGER NOT NULL DEFAULT 0, -- heartbeats so far: a change is a sign of life, whatever the clocks say
    submit_key TEXT,                 -- the submission key a page started it with (Start pressed twice: one run)
    stopped_by TEXT,                 -- who asked a run to stop when it was not its owner, in words
    curve_rev INTEGER NOT NULL DEFAULT 0  -- raised whenever stored metric rows are dropped (resume, rollback)
);
CREATE INDEX IF NOT EXISTS runs_submit_key ON runs (submit_key);
CREATE TABLE IF NOT EXISTS metrics (
    run_id INTEGER NOT NULL,
    step INTEGER NOT NULL,
    wall REAL NOT NULL,
    key TEXT NOT NULL,
    value REAL
);
CREATE INDEX IF NOT EXISTS metrics_run_key_step ON metrics (run_id, key, step);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id INTEGER NOT NULL,
    step INTEGER,
    wall REAL NOT NULL,
    kind TEXT NOT NULL,
    message TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_run ON events (run_id, id);
CREATE TABLE IF NOT EXISTS samples (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id INTEGER NOT NULL,
    step INTEGER NOT NULL,
    wall REAL NOT NULL,
    path TEXT NOT NULL               -- relative to the run's folder (absolute in older rows)
);
CREATE INDEX IF NOT EXISTS samples_run ON samples (run_id, step);
CREATE TABLE IF NOT EXISTS studies (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    created REAL NOT NULL,
    owner TEXT,
    spec TEXT NOT NULL               -- the StudySpec as JSON
);
CREATE TABLE IF NOT EXISTS study_runs (
    study_id INTEGER NOT NULL,
    run_id INTEGER NOT NULL UNIQUE,
    arm TEXT NOT NULL,
    seed INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS study_runs_study ON study_runs (study_id);
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,            -- store_id (this store's identity), server_limits (the server's caps)
    value TEXT NOT NULL
);
"""


@dataclass(frozen=True)
class Migration:
    """One step up: ``apply(conn)`` takes a store of version ``version - 1`` to ``version``."""

    version: int
    what: str
    apply: Callable[[sqlite3.Connection], None]


def _statements(kind: str) -> list[str]:
    """The ``CREATE TABLE`` or ``CREATE INDEX`` statements of TABLES, in order."""
    out = []
    for statement in TABLES.split(";"):
        text = "\n".join(line.split("--")[0].rstrip() for line in statement.strip().splitlines())
        if text.startswith(f"CREATE {kind} "):
            out.append(text)
    return out


def _columns(conn: sqlite3.Connection, table: str) -> list[tuple]:
    """(name, type, notnull, default, pk) of each column of ``table``, in order."""
    return [tuple(r)[1:6] for r in conn.execute(f"PRAGMA table_info({table})")]


def _table_name(create: str) -> str:
    return create.split("EXISTS", 1)[1].split("(", 1)[0].strip()


def _to_first_version(conn: sqlite3.Connection) -> None:
    """Create what is missing (tables, then any column an older table lacks, then indexes)."""
    reference = sqlite3.connect(":memory:")
    try:
        reference.executescript(TABLES)
        wanted = {_table_name(s): _columns(reference, _table_name(s)) for s in _statements("TABLE")}
    finally:
        reference.close()
    for create in _statements("TABLE"):
        conn.execute(create)
    for table, columns in wanted.items():
        have = {c[0] for c in _columns(conn, table)}
        for name, kind, notnull, default, pk in columns:
            if name in have:
                continue
            if pk or (notnull and default is None):
                raise StoreUnavailableError(
                    f"The run database's {table} table has no {name} column, which cannot be added "
                    "to existing rows; it was left untouched: restore it from a backup or point "
                    "FLOWLAB_RUNS_DIR / --runs-dir at another folder.", "damaged")
            conn.execute(f"ALTER TABLE {table} ADD COLUMN {name} {kind}"
                         + (" NOT NULL" if notnull else "") + (f" DEFAULT {default}" if default is not None else ""))
    for create in _statements("INDEX"):
        conn.execute(create)


def _to_second_version(conn: sqlite3.Connection) -> None:
    """The meta table, the new runs columns (both from TABLES, as for the first version), and an
    identity for the store."""
    _to_first_version(conn)
    conn.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('store_id', ?)", (uuid.uuid4().hex,))


MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "record a version: create the tables, columns and indexes an unversioned store lacks",
              _to_first_version),
    Migration(2, "fencing tokens, heartbeat counts, submission keys, who stopped a run, curve revisions; "
                 "the store's identity and the server's caps", _to_second_version),
)
SCHEMA_VERSION = MIGRATIONS[-1].version


def stored_version(conn: sqlite3.Connection) -> int:
    """The layout version recorded in the database (0: none)."""
    return int(conn.execute("PRAGMA user_version").fetchone()[0])


def is_current(conn: sqlite3.Connection) -> bool:
    """True when the store needs nothing written: this version's layout and Flow Lab's id."""
    return (stored_version(conn) == SCHEMA_VERSION
            and conn.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID)


def refuse_newer(version: int, db_path: Path) -> None:
    """StoreUnavailableError (``reason == "newer"``) when ``version`` is newer than this code knows."""
    if version > SCHEMA_VERSION:
        raise StoreUnavailableError(
            f"The run database {Path(db_path).name} was written by a newer version of Flow Lab (store "
            f"layout {version}; this version knows layouts up to {SCHEMA_VERSION}) and was left "
            "untouched; update Flow Lab, or point FLOWLAB_RUNS_DIR / --runs-dir at another folder.",
            "newer", db_path)


def migrate(conn: sqlite3.Connection, db_path: Path) -> int:
    """Bring the store to SCHEMA_VERSION; the version it had. Call it inside one ``BEGIN
    IMMEDIATE`` transaction: the version is read again there, so two processes opening an old
    store at once migrate it once, and a failure rolls every step back."""
    version = stored_version(conn)
    refuse_newer(version, db_path)
    for step in MIGRATIONS:
        if step.version > version:
            step.apply(conn)
            conn.execute(f"PRAGMA user_version={int(step.version)}")
    if conn.execute("PRAGMA application_id").fetchone()[0] != APPLICATION_ID:
        conn.execute(f"PRAGMA application_id={APPLICATION_ID}")
    return version
