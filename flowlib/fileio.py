"""File helpers the whole library shares: the atomic write, and opening a file that is safe to read.

``atomic_write`` is the one copy of "write beside, fsync, rename": readers see the old file or
the new one, never half of either, and a crash or ``kill -9`` mid-write loses only the new one.

``open_regular`` opens a path only if it is an ordinary file.  A FIFO, a character device or a
socket named ``photo.png`` (or a symlink to one) would otherwise block ``open()`` or ``read()``
forever, or stream without end (``/dev/zero``).
"""

from __future__ import annotations

import errno
import os
import stat
import tempfile
from pathlib import Path
from typing import IO, Any, Callable

__all__ = ["NotRegularFile", "atomic_write", "open_regular"]


def atomic_write(path: str | os.PathLike, write_fn: Callable[[IO[bytes]], Any]) -> None:
    """Write a file at ``path`` via ``write_fn(binary_file)``, atomically and durably.

    The bytes go to a temp file in the same folder (a rename is only atomic within one file
    system), which is fsynced before ``os.replace`` so the rename can never expose a file whose
    data is still in the page cache; the folder is then fsynced (best effort) so the rename
    itself survives a power cut.  On any error, including KeyboardInterrupt, the temp file is
    removed and the previous file at ``path`` is left untouched; the error propagates.
    """
    target = Path(path)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            write_fn(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, target)
    except BaseException:
        try:
            os.unlink(tmp_name)
        except FileNotFoundError:
            pass
        raise
    _fsync_directory(target.parent)


def _fsync_directory(directory: Path) -> None:
    # Some file systems (and every non-POSIX one) cannot open or fsync a folder; the file itself
    # is already durable, so losing only the rename on a power cut is the accepted worst case.
    try:
        dir_fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    except OSError:
        pass
    finally:
        os.close(dir_fd)


class NotRegularFile(OSError):
    """The path exists but is a FIFO, device, socket or folder, so it is not read."""


def open_regular(path: str | os.PathLike) -> IO[bytes]:
    """Open ``path`` for binary reading if, and only if, it is a regular file.

    ``O_NONBLOCK`` makes opening a FIFO return at once instead of waiting for a writer; the
    type is then checked with ``fstat`` on the opened descriptor, so a file swapped for a FIFO
    between a caller's ``stat`` and this ``open`` is caught too.  Raises ``NotRegularFile``
    (an ``OSError``) for anything else, ``OSError`` when it cannot be opened at all.
    """
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(path, flags)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise NotRegularFile(errno.EINVAL, "not a regular file", os.fspath(path))
        # Regular files ignore O_NONBLOCK, but clear it so the flag cannot surprise a reader
        # that hands the descriptor on.
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise
