"""Where studies live: an Optuna storage, opened from a URL and checked before anything is written.

    from flowlib.study.storage import open_storage, default_url, dashboard_command
    storage = open_storage(None, runs_root)              # the embedded default: <runs>/studies.sqlite
    storage = open_storage("postgresql://flowlab@db-host/flowlab")   # many machines, one study
    storage = open_storage("/shared/disk/flowlab.journal")           # a journal file on a shared disk
    dashboard_command(url)                               # "optuna-dashboard sqlite:////.../studies.sqlite"

Three kinds of storage, each an ordinary Optuna storage any Optuna tool can open:

``sqlite:///PATH``   the default, ``<runs folder>/studies.sqlite`` beside the run store: works
                     offline, nothing to start; several processes on one machine share it
                     (SQLite's file locks). Optuna's RDBStorage, with its heartbeat.
``postgresql://...`` one database for many machines (``psycopg2`` driver). Optuna's RDBStorage,
                     with its heartbeat.
a file path          (or ``journal:PATH``) Optuna's JournalStorage on a file, for a shared disk
                     (NFS): append-only, locked by a symlink. Optuna's journal has no heartbeat,
                     so Flow Lab's workers beat in a trial attribute instead (``flowlab.study.work``).

A killed worker: its trial's heartbeat stops; after ``grace_s`` (``FLOWLAB_STUDY_GRACE_S``,
default 60 s; beats every ``grace_s / 4``) the next worker that looks marks it failed and
Optuna's ``RetryHeartbeatStaleTrialCallback`` queues a copy, which any worker then trains.

Refused in one sentence, before anything is written (:class:`StorageError`, a ValueError):
a URL that cannot be reached (no server, wrong password, no such database), a database or
file that is not a study database (another program's tables, Flow Lab's run store, a file
that is not an Optuna journal), a URL of an unknown kind. An empty database or a new file
becomes a study database.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import time
import warnings
from pathlib import Path

from flowlib import env

__all__ = ["StorageError", "open_storage", "default_url", "redact", "storage_key", "dashboard_command",
           "is_journal", "heartbeat_interval_s", "grace_s", "DEFAULT_NAME"]

DEFAULT_NAME = "studies.sqlite"
OPTUNA_TABLES = {"studies", "trials", "version_info"}
SQLITE_HEADER = b"SQLite format 3\x00"


class StorageError(ValueError):
    """The study storage cannot be used; the message says why in one sentence naming --storage."""

    field = "storage"


def default_url(runs_root: str | os.PathLike) -> str:
    """The embedded storage of a run store: an SQLite file in its folder."""
    return f"sqlite:///{Path(runs_root).expanduser().resolve() / DEFAULT_NAME}"


def redact(url: str) -> str:
    """The URL with any password replaced by ***, for messages, the JSON and the pages."""
    return re.sub(r"(://[^:/@]+):[^@]*@", r"\1:***@", str(url))


def storage_key(url: str) -> str:
    """A stable name of a storage (its redacted URL; a file's absolute path)."""
    if is_journal(url):
        return "journal:" + str(Path(_journal_path(url)).expanduser().resolve())
    if url.startswith("sqlite:///"):
        return "sqlite:///" + str(Path(url[len("sqlite:///"):]).expanduser().resolve())
    return redact(with_driver(url))


def is_journal(url: str) -> bool:
    return url.startswith("journal:") or "://" not in url


def _journal_path(url: str) -> str:
    return url[len("journal:"):].removeprefix("//") if url.startswith("journal:") else url


def with_driver(url: str) -> str:
    """``postgresql://`` with the driver installed here: SQLAlchemy 2.1 reads a bare
    ``postgresql://`` as psycopg 3, and requirements.txt installs psycopg2."""
    if url.startswith("postgresql://"):
        import importlib.util
        if importlib.util.find_spec("psycopg") is None and importlib.util.find_spec("psycopg2") is not None:
            return "postgresql+psycopg2://" + url[len("postgresql://"):]
    return url


def dashboard_command(url: str) -> str:
    """The command that opens the same study database in optuna-dashboard (password redacted)."""
    if is_journal(url):
        return f"optuna-dashboard {Path(_journal_path(url)).expanduser().resolve()}"
    return f"optuna-dashboard {redact(with_driver(url))}"


def grace_s() -> float:
    return float(env.read("FLOWLAB_STUDY_GRACE_S"))


def heartbeat_interval_s() -> int:
    return max(1, int(grace_s() // 4))


def _sqlite_problem(path: Path) -> str | None:
    """Why an existing SQLite file is not a study database, or None (also for an empty one)."""
    import sqlite3

    if not path.exists() or path.stat().st_size == 0:
        return None
    with open(path, "rb") as f:
        if f.read(len(SQLITE_HEADER)) != SQLITE_HEADER:
            return f"{path} is not an SQLite database"
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
        try:
            tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        finally:
            conn.close()
    except sqlite3.Error as exc:
        return f"{path} cannot be read as SQLite ({exc})"
    if tables and not OPTUNA_TABLES <= tables:
        what = "Flow Lab's run store" if "runs" in tables else "another program's database"
        return f"{path} is {what}, not a study database"
    return None


def _rdb_problem(url: str) -> str | None:
    """Connect once and look at the tables: why this database is unusable, or None."""
    import sqlalchemy

    kwargs = {"connect_args": {"connect_timeout": 10}} if url.startswith("postgresql") else {}
    try:
        engine = sqlalchemy.create_engine(url, **kwargs)
    except Exception as exc:  # noqa: BLE001 - a bad URL, a missing driver: one sentence
        return f"{redact(url)} is not a database URL this machine can use ({type(exc).__name__}: {exc})"
    try:
        with engine.connect():
            tables = set(sqlalchemy.inspect(engine).get_table_names())
    except Exception as exc:  # noqa: BLE001 - unreachable, refused, wrong password, no such database
        reason = str(getattr(exc, "orig", exc)).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return f"cannot reach {redact(url)}: {reason}"
    finally:
        engine.dispose()
    if tables and not OPTUNA_TABLES <= tables:
        return f"{redact(url)} holds other tables ({', '.join(sorted(tables)[:4])}), not a study database"
    return None


def _journal_problem(path: Path) -> str | None:
    if path.is_dir():
        return f"{path} is a folder; give a file for the journal"
    if not path.parent.is_dir():
        return f"the folder {path.parent} does not exist"
    if not path.exists() or path.stat().st_size == 0:
        return None
    with open(path, "rb") as f:
        head = f.read(4096)
    if head.startswith(SQLITE_HEADER):
        return f"{path} is an SQLite file: give it as sqlite:///{path}"
    first = head.split(b"\n", 1)[0]
    try:
        ok = isinstance(json.loads(first), dict) and "op_code" in json.loads(first)
    except ValueError:
        ok = False
    return None if ok else f"{path} is not an Optuna journal file"


def _serialize_sqlite(engine) -> None:
    """Every transaction on the SQLite file begins with ``BEGIN IMMEDIATE`` (SQLAlchemy's recipe).

    Why: Python's sqlite3 starts a transaction only at the first write, so Optuna's claim of a
    queued trial (read WAITING, then write RUNNING; ``FOR UPDATE`` means nothing to SQLite) ran
    its read outside the transaction, and two processes could both claim the same trial
    (measured: 3 threads, 6 trials, one trained twice). With the write lock taken at BEGIN, the
    read and the write are one step. PostgreSQL needs nothing: Optuna's SELECT ... FOR UPDATE
    holds there.
    """
    import sqlalchemy

    @sqlalchemy.event.listens_for(engine, "connect")
    def _no_pysqlite_transactions(dbapi_connection, connection_record):
        dbapi_connection.isolation_level = None

    @sqlalchemy.event.listens_for(engine, "begin")
    def _begin_immediate(conn):
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    engine.dispose()      # connections made before the hooks: gone, the next ones get them


def open_storage(url: str | None, runs_root: str | os.PathLike | None = None):
    """The Optuna storage at ``url`` (None: the embedded default in ``runs_root``), checked.

    RDB storages get Optuna's heartbeat (``heartbeat_interval``, ``grace_period``) and
    ``RetryHeartbeatStaleTrialCallback``: a trial whose worker died is marked failed and queued again.
    StorageError in one sentence when it cannot be used; nothing is written then.
    """
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    warnings.filterwarnings("ignore", message=".*Heartbeat of storage is supposed to be used with Study.optimize.*")
    warnings.filterwarnings("ignore", category=FutureWarning, module="optuna")
    if url is None or not str(url).strip():
        url = default_url(runs_root if runs_root is not None else env.runs_root())
    url = with_driver(str(url).strip())
    if is_journal(url):
        path = Path(_journal_path(url)).expanduser().resolve()
        problem = _journal_problem(path)
        if problem:
            raise StorageError(f"--storage: {problem}.")
        return JournalStorage(JournalFileBackend(str(path)))
    scheme = url.split("://", 1)[0].split("+", 1)[0]
    if scheme not in ("sqlite", "postgresql", "mysql"):
        raise StorageError(f"--storage: {redact(url)} is not a storage Flow Lab knows: use sqlite:///PATH, "
                           "postgresql://USER@HOST/DATABASE or a journal file path.")
    if scheme == "sqlite":
        path = Path(url[len("sqlite:///"):]).expanduser()
        if not path.parent.is_dir():
            raise StorageError(f"--storage: the folder {path.parent} does not exist.")
        # One opener at a time on this machine: a second one checking the file while the first
        # is creating Optuna's tables found some tables but not all and refused the database as
        # "another program's" (two studies started at once from two tabs).
        with _creation_lock(path):
            problem = _sqlite_problem(path)
            if problem:
                raise StorageError(f"--storage: {problem}.")
            return _open_rdb(url, scheme)
    problem = _rdb_problem(url)
    if problem:
        raise StorageError(f"--storage: {problem}.")
    return _open_rdb(url, scheme)


@contextlib.contextmanager
def _creation_lock(path: Path):
    """An exclusive lock (``flock``) on ``PATH.lock`` beside an SQLite study database: threads
    and processes of this machine open (and create) it one at a time."""
    import fcntl

    try:
        lock = open(path.with_name(path.name + ".lock"), "a+b")   # noqa: SIM115 - held across the yield
    except OSError:      # a folder we may read but not write: nothing can be created there anyway
        yield
        return
    with lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock.fileno(), fcntl.LOCK_UN)


def _open_rdb(url: str, scheme: str):
    """Optuna's RDBStorage on a checked database, with its heartbeat and stale-trial retry."""
    from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback

    engine_kwargs = {"connect_args": {"timeout": 60}} if scheme == "sqlite" else {"pool_pre_ping": True}
    for attempt in range(5):
        try:
            storage = RDBStorage(url, engine_kwargs=engine_kwargs, heartbeat_interval=heartbeat_interval_s(),
                                 grace_period=max(2, int(grace_s())),
                                 heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=3))
            if scheme == "sqlite":
                _serialize_sqlite(storage.engine)
            return storage
        except Exception as exc:  # noqa: BLE001 - e.g. a database from a newer Optuna
            # Two processes opening a new database at once both create its tables; the loser
            # finds them made ("already exists"): open it again, now it is a study database.
            if "already exists" in str(exc) and attempt < 4:
                time.sleep(0.2 * (attempt + 1))
                continue
            raise StorageError(f"--storage: {redact(url)} cannot be opened as a study database "
                               f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}).") from None
