"""The run store's database file and its disk: refuse what is not ours, name what failed.

    from flowlib.store.dbfile import DatabaseFile, StoreUnavailableError
    file = DatabaseFile(root, root / "runs.sqlite", root / "runs.reserve", timeout_s=30)
    file.check_is_ours()                     # StoreUnavailableError before anything is written
    raise file.sqlite_unavailable(exc)       # an SQLite error that blames the file or the disk, in words
    file.make_reserve(); file.release_reserve()

:class:`flowlib.store.runs.RunStore` owns one of these; everything here is about the file and
the disk under it, never about runs (the SQL and the transactions stay in ``flowlib.store.runs``,
the tables and their versions in ``flowlib.store.schema``).

What it guards against, and why:

* **A file that is not ours.** Before anything is written, ``RunStore()`` checks that an
  existing ``runs.sqlite`` is Flow Lab's (:meth:`DatabaseFile.check_is_ours`): its header must
  be SQLite's, its size must match the page count the header records, and its
  ``application_id`` must be Flow Lab's (:data:`APPLICATION_ID`) or 0 with a ``runs`` table of
  ours (or no tables at all). A file replaced by other bytes, truncated, or holding another
  program's tables is refused untouched: writing our schema into it would damage someone
  else's data, or hide that ours was lost.
* **A read-only runs folder, a full disk, a failing disk.** SQLite reports these as result
  codes (or, before Python 3.11, only in words); :func:`storage_code` picks out the ones that
  blame the file or the disk rather than the SQL, and :meth:`DatabaseFile.sqlite_unavailable`
  / :meth:`DatabaseFile.os_unavailable` turn them into one sentence a person can act on.

All of these raise :class:`StoreUnavailableError`, a RuntimeError whose message is one
sentence in words and whose ``reason`` is ``"foreign"``, ``"damaged"``, ``"newer"`` (raised by
:mod:`flowlib.store.schema`), ``"read_only"``, ``"disk_full"`` or ``"io"``.

The reserve: a run's last words on a full disk (its final status, the error event, a lost
mark) may use ``runs.reserve``, :data:`RESERVE_BYTES` kept allocated while the disk has room.
It is deleted (:meth:`DatabaseFile.release_reserve`) and the write tried once more, so a run
whose disk filled up ends ``failed`` with the reason instead of ``lost``. The reserve is made
again by the next ``RunStore()`` that finds enough free space (:meth:`DatabaseFile.make_reserve`).

Reading on a full disk: SQLite cannot even make the WAL index (``-shm``) a reader needs, so
:meth:`DatabaseFile.read_as_is` reads the database file as is (``immutable=1``) when there is
no WAL, i.e. when every commit is already in the file.
"""

from __future__ import annotations

import errno
import os
import shutil
import sqlite3
import stat
import urllib.parse
from pathlib import Path
from typing import Any, Callable

from flowlib import env

__all__ = ["DatabaseFile", "StoreUnavailableError", "APPLICATION_ID", "RESERVE_NAME", "RESERVE_BYTES",
           "RESERVE_MIN_FREE", "is_busy", "storage_code"]

RESERVE_NAME = "runs.reserve"
RESERVE_BYTES = 1 << 20          # a final status and an error event need a few WAL pages
RESERVE_MIN_FREE = 8 << 20       # the reserve is (re)made only when this much is free
APPLICATION_ID = 0x466C4C62      # "FlLb" in the header of runs.sqlite: this file is ours
_SQLITE_MAGIC = b"SQLite format 3\x00"
_OUR_COLUMNS = {"id", "name", "dataset", "config", "train", "status", "step", "message"}
# SQLite result codes (primary) that mean the file or the disk, not the SQL, is the problem
_SQLITE_PERM, _SQLITE_READONLY, _SQLITE_IOERR, _SQLITE_CORRUPT, _SQLITE_FULL, _SQLITE_CANTOPEN, \
    _SQLITE_NOTADB = 3, 8, 10, 11, 13, 14, 26
_STORAGE_CODES = {_SQLITE_PERM, _SQLITE_READONLY, _SQLITE_IOERR, _SQLITE_CORRUPT, _SQLITE_FULL,
                  _SQLITE_CANTOPEN, _SQLITE_NOTADB}


class StoreUnavailableError(RuntimeError):
    """The run store cannot be read or written: the message says why in one sentence.

    ``reason``: ``"foreign"`` (another program's database), ``"damaged"`` (not an SQLite
    file, truncated, corrupt), ``"newer"`` (written by a newer Flow Lab, whose layout this
    code does not know), ``"read_only"`` (the runs folder cannot be written),
    ``"disk_full"``, or ``"io"`` (any other disk error).
    """

    def __init__(self, message: str, reason: str = "io", path: str | os.PathLike | None = None):
        super().__init__(message)
        self.reason = reason
        self.path = None if path is None else str(path)   # the whole path, for server logs only


def is_busy(exc: sqlite3.Error) -> bool:
    """True when the database is locked by another connection (retry), not broken."""
    text = str(exc).lower()
    return "locked" in text or "busy" in text


def storage_code(exc: sqlite3.Error) -> int | None:
    """The SQLite primary result code when it blames the file or the disk, else None."""
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF if code & 0xFF in _STORAGE_CODES else None
    text = str(exc).lower()   # Python < 3.11 has no error codes: read the words
    for words, code in (("disk is full", _SQLITE_FULL), ("disk i/o", _SQLITE_IOERR),
                        ("readonly", _SQLITE_READONLY), ("unable to open", _SQLITE_CANTOPEN),
                        ("not a database", _SQLITE_NOTADB), ("malformed", _SQLITE_CORRUPT)):
        if words in text:
            return code
    return None


class DatabaseFile:
    """``runs.sqlite`` and ``runs.reserve`` in the runs folder ``root``, as files on a disk.

    ``timeout_s`` is SQLite's busy timeout for the read-only look inside the file.
    """

    def __init__(self, root: Path, db_path: Path, reserve_path: Path, timeout_s: float):
        self.root = Path(root)
        self.db_path = Path(db_path)
        self.reserve_path = Path(reserve_path)
        self.timeout_s = timeout_s
        # What messages call the database: its name in the runs folder, never the server's
        # path to it (a page shows these sentences, in classroom mode too).
        self.db_name = env.shown_path(self.db_path, self.root)

    def __repr__(self) -> str:
        return f"DatabaseFile({str(self.db_path)!r})"

    def check_is_ours(self) -> None:
        """Refuse, without writing anything, a runs.sqlite that is not a Flow Lab run database."""
        path = self.db_path
        try:
            info = path.stat()
        except FileNotFoundError:
            return                                    # a new store
        except OSError as exc:
            raise self.os_unavailable(exc, f"the run database {self.db_name} could not be read") from None
        where = f"The run database {self.db_name}"
        advice = (" It was left untouched: move it away (or restore it from a backup) or point "
                  "FLOWLAB_RUNS_DIR / --runs-dir at another folder.")
        if not stat.S_ISREG(info.st_mode):
            raise StoreUnavailableError(f"{where} is not a regular file.{advice}", "damaged", path)
        if info.st_size == 0:
            return                                    # SQLite's own empty database
        try:
            with open(path, "rb") as f:
                head = f.read(100)
        except OSError as exc:
            raise self.os_unavailable(exc, f"the run database {self.db_name} could not be read") from None
        if len(head) < 100 or not head.startswith(_SQLITE_MAGIC):
            raise StoreUnavailableError(
                f"{where} is not an SQLite database (its first bytes are wrong: it was replaced, "
                f"truncated or damaged).{advice}", "damaged", path)
        page_size = int.from_bytes(head[16:18], "big")
        page_size = 65536 if page_size == 1 else page_size
        pages = int.from_bytes(head[28:32], "big")
        if head[24:28] == head[92:96] and pages and info.st_size < page_size * pages:
            raise StoreUnavailableError(
                f"{where} is truncated ({info.st_size:,} of its {page_size * pages:,} bytes are "
                f"left).{advice}", "damaged", path)
        app_id = int.from_bytes(head[68:72], "big")
        if app_id == APPLICATION_ID:
            return
        if app_id != 0:
            raise StoreUnavailableError(f"{where} belongs to another program (its application id "
                                        f"is {app_id:#x}), not Flow Lab.{advice}", "foreign", path)
        uri = f"file:{urllib.parse.quote(str(path.resolve()))}?mode=ro"
        try:
            conn = sqlite3.connect(uri, uri=True, timeout=self.timeout_s)
        except sqlite3.Error as exc:
            raise self.sqlite_unavailable(exc) from None
        try:
            tables = sorted(r[0] for r in conn.execute(
                "SELECT name FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite_%'"))
            columns = {r[1] for r in conn.execute("PRAGMA table_info(runs)")}
        except sqlite3.Error as exc:
            if is_busy(exc):
                raise
            code = storage_code(exc)
            if code in (None, _SQLITE_CORRUPT, _SQLITE_NOTADB):
                raise StoreUnavailableError(f"{where} is damaged ({exc}).{advice}", "damaged", path) from None
            raise self.sqlite_unavailable(exc) from None
        finally:
            conn.close()
        if tables and not _OUR_COLUMNS <= columns:
            shown = ", ".join(tables[:6]) + (" ..." if len(tables) > 6 else "")
            raise StoreUnavailableError(f"{where} holds another program's tables ({shown}), not "
                                        f"Flow Lab's runs.{advice}", "foreign", path)

    def free_bytes(self) -> int | None:
        try:
            return shutil.disk_usage(self.root).free
        except OSError:
            return None

    def folder_read_only(self) -> bool:
        """True when no file can be made in the runs folder (permissions or a read-only mount)."""
        probe = self.root / f".write-probe-{os.getpid()}"
        try:
            fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return False
        except OSError as exc:
            return exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS)
        os.close(fd)
        probe.unlink(missing_ok=True)
        return False

    def read_only_error(self) -> StoreUnavailableError:
        return StoreUnavailableError(
            "The runs folder is read-only for this program, so runs cannot be recorded there; "
            "make it writable or point FLOWLAB_RUNS_DIR / --runs-dir at another folder.", "read_only",
            self.root)

    def disk_full_error(self) -> StoreUnavailableError:
        return StoreUnavailableError(
            "The disk holding the run store is full (no space left on device); free some space, "
            "then try again.", "disk_full", self.root)

    def os_unavailable(self, exc: OSError, what: str) -> StoreUnavailableError:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return self.disk_full_error()
        if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            return self.read_only_error()
        return StoreUnavailableError(f"{what[:1].upper()}{what[1:]} ({exc.strerror or exc.__class__.__name__}).",
                                     "io", exc.filename or self.root)

    def sqlite_unavailable(self, exc: sqlite3.Error) -> StoreUnavailableError:
        """The one-sentence error for an SQLite failure that blames the file or the disk."""
        code = storage_code(exc)
        free = self.free_bytes()
        if code == _SQLITE_FULL or (code == _SQLITE_IOERR and free is not None and free < RESERVE_BYTES):
            return self.disk_full_error()
        if code in (_SQLITE_READONLY, _SQLITE_CANTOPEN, _SQLITE_PERM) and self.folder_read_only():
            return self.read_only_error()
        if code in (_SQLITE_CORRUPT, _SQLITE_NOTADB):
            return StoreUnavailableError(
                f"The run database {self.db_name} is damaged ({exc}); move it away or restore it "
                "from a backup.", "damaged", self.db_path)
        if code == _SQLITE_IOERR:
            return StoreUnavailableError(
                f"The run database {self.db_name} could not be written (disk I/O error): the disk "
                "may be full or failing; free some space, then try again.", "io", self.db_path)
        return StoreUnavailableError(f"The run database {self.db_name} could not be used ({exc}).", "io",
                                     self.db_path)

    def make_reserve(self) -> None:
        """Keep RESERVE_BYTES allocated in runs.reserve while the disk has room (best effort)."""
        if self.reserve_path.exists():
            return
        free = self.free_bytes()
        if free is None or free < RESERVE_MIN_FREE:
            return
        tmp = self.root / f".{RESERVE_NAME}.{os.getpid()}.tmp"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                try:
                    os.posix_fallocate(fd, 0, RESERVE_BYTES)   # really allocated, not sparse
                except (AttributeError, OSError):
                    os.write(fd, b"\0" * RESERVE_BYTES)
            finally:
                os.close(fd)
            os.replace(tmp, self.reserve_path)
        except OSError:
            tmp.unlink(missing_ok=True)

    def release_reserve(self) -> bool:
        try:
            self.reserve_path.unlink()
            return True
        except OSError:
            return False
    def read_as_is(self, fn: Callable[[sqlite3.Connection], Any], error: StoreUnavailableError) -> Any:
        """fn on the database file read as is, when ``error`` (from a normal read) allows it.

        On a full disk SQLite cannot even make the WAL index (-shm) a reader needs. When there
        is no WAL, every commit is in the database file: read that file as is. Otherwise, or
        when that read fails too, ``error`` is raised.
        """
        wal = self.db_path.with_name(self.db_path.name + "-wal")
        if error.reason not in ("disk_full", "io") or (wal.exists() and wal.stat().st_size > 0):
            raise error
        try:
            conn = sqlite3.connect(f"file:{urllib.parse.quote(str(self.db_path.resolve()))}"
                                   "?immutable=1", uri=True)
        except sqlite3.Error:
            raise error from None
        try:
            conn.row_factory = sqlite3.Row
            return fn(conn)
        except sqlite3.Error:
            raise error from None
        finally:
            conn.close()
