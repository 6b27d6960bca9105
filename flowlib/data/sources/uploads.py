"""Uploads: files visitors send to the server, kept under one quota with the pixels decoded from them.

An upload is stored in ``uploads_dir()`` under its content hash; the pixels decoded from it
(``pixel_cache``) are kept beside it as ``<upload name>.decoded-<key>.npz``. Both count in one
quota, ``upload_quota_bytes()`` ($FLOWLAB_UPLOAD_QUOTA_MB), and they go together: removing an
upload removes its decoded pixels, and pixels that could not fit in the quota beside their
upload are refused before anything is decoded (:func:`check_decoded_room`).

Who removes what:

* :func:`store_upload` makes room for a new upload by removing the least recently stored
  uploads, each with its decoded pixels, but never one named in ``in_use``: the uploads that
  waiting or running runs will still read (the caller knows the run store; this floor does not).
  When the uploads in use leave no room, the new upload is refused in words.
* :func:`keep_decoded` may remove decoded pixels of any upload to make room (they are decoded
  again on demand), never an upload; when there is still no room, the pixels are used without
  being kept.

A lock file (``.lock``) orders the server's threads and the trainers' processes that do this.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import warnings
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import IO, Any

from flowlib import env
from flowlib.fileio import atomic_write

from .common import DatasetError, ensure_cache_dir, shown_path, uploads_dir
from .images import IMAGE_SUFFIXES

try:
    import fcntl
except ImportError:  # not POSIX: no lock between processes
    fcntl = None

DECODED = ".decoded-"  # <upload name>.decoded-<key>.npz: pixels decoded from that upload
LOCK_NAME = ".lock"


def upload_quota_bytes() -> int:
    """Bytes all stored uploads and their decoded pixels may take together
    ($FLOWLAB_UPLOAD_QUOTA_MB, default 300 MB)."""
    try:
        megabytes = env.read("FLOWLAB_UPLOAD_QUOTA_MB")
    except ValueError as exc:
        raise DatasetError(str(exc)) from None
    return int(megabytes * 1024**2)


def megabytes(n_bytes: float) -> str:
    return f"{n_bytes / 1024**2:,.1f} MB" if n_bytes >= 102_400 else f"{n_bytes / 1024:,.0f} KB"


def upload_of(path: Path) -> Path | None:
    """``path`` itself when it is a stored upload (a file directly in ``uploads_dir()``), else None."""
    try:
        if path.resolve().parent == uploads_dir().resolve() and not path.name.startswith("."):
            return path.resolve()
    except OSError:
        return None
    return None


def decoded_path(upload: Path, key: str) -> Path:
    """Where the pixels decoded from ``upload`` (with the settings ``key`` stands for) are kept."""
    return upload.parent / f"{upload.name}{DECODED}{key}.npz"


@dataclass
class _Group:
    """One upload and the decoded pixels kept beside it."""

    upload: Path | None = None
    upload_bytes: int = 0
    used_ns: int = 0                       # when the upload was last stored (its mtime)
    decoded: list[tuple[int, int, Path]] = field(default_factory=list)  # (mtime_ns, bytes, path)

    @property
    def bytes(self) -> int:
        return self.upload_bytes + sum(size for _, size, _ in self.decoded)


def _inventory(directory: Path) -> dict[str, _Group]:
    """Every upload and decoded file in the folder, grouped by upload name. Files being written
    (dot names) are left out; decoded pixels whose upload is gone form a group without one."""
    groups: dict[str, _Group] = {}
    for path in directory.iterdir():
        if path.name.startswith("."):
            continue
        try:
            st = path.stat()
        except OSError:
            continue
        owner, decoded, _ = path.name.partition(DECODED)
        group = groups.setdefault(owner, _Group())
        if decoded:
            group.decoded.append((st.st_mtime_ns, st.st_size, path))
        else:
            group.upload, group.upload_bytes, group.used_ns = path, st.st_size, st.st_mtime_ns
    return groups


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    if fcntl is None:
        yield
        return
    with open(directory / LOCK_NAME, "a+b") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _remove(group: _Group) -> None:
    for _, _, path in group.decoded:
        path.unlink(missing_ok=True)
    if group.upload is not None:
        group.upload.unlink(missing_ok=True)


def store_upload(filename: str, data: bytes, in_use: Collection[str | os.PathLike] = ()) -> Path:
    """Save an uploaded file (e.g. a zip from the app) under the cache and return its path.

    The name is the content hash, so the user's file name cannot point anywhere else. All
    uploads and their decoded pixels stay within ``upload_quota_bytes()``: storing one removes
    the least recently stored uploads, with their pixels, until everything fits (uploading the
    same file again counts as recent). ``in_use``: paths of uploads that runs waiting or
    training will still read; they are never removed, and when they leave no room for this
    upload it is refused (DatasetError) and nothing is written.
    """
    suffix = PurePosixPath(filename).suffix.lower()
    if suffix not in IMAGE_SUFFIXES | {".zip"}:
        raise DatasetError(
            f"{filename!r} is not a zip or an image. Upload a .zip of .png/.jpg pictures."
        )
    quota = upload_quota_bytes()
    if len(data) > quota:
        raise DatasetError(
            f"{filename!r} is {len(data) / 1024**2:,.1f} MB, more than the {round(quota / 1024**2, 2):g} MB "
            f"this server keeps for all uploads together (FLOWLAB_UPLOAD_QUOTA_MB). Upload a smaller zip."
        )
    ensure_cache_dir()
    directory = uploads_dir()
    directory.mkdir(exist_ok=True)
    target = directory / (hashlib.sha256(data).hexdigest()[:24] + suffix)
    kept = {upload.name for upload in map(upload_of, map(Path, in_use)) if upload is not None}
    with _locked(directory):
        groups = _inventory(directory)
        mine = groups.pop(target.name, _Group())
        stored = mine.upload is not None
        pinned = sum(g.bytes for name, g in groups.items() if name in kept)
        if not stored and pinned + len(data) > quota:
            raise DatasetError(
                f"{filename!r} ({megabytes(len(data))}) does not fit: uploads that waiting or running "
                f"runs still read take {megabytes(pinned)} of the {round(quota / 1024**2, 2):g} MB this "
                "server keeps for uploads and their decoded pictures (FLOWLAB_UPLOAD_QUOTA_MB). Upload "
                "it again when those runs have finished, or upload a smaller zip."
            )
        total = (mine.bytes if stored else len(data)) + sum(g.bytes for g in groups.values())
        for name, group in sorted(groups.items(), key=lambda item: (item[1].used_ns, item[0])):
            if total <= quota:
                break
            if name not in kept:
                _remove(group)
                total -= group.bytes
        if stored:
            os.utime(target)  # recently used: the last to be evicted
        else:
            atomic_write(target, lambda f: f.write(data))
    return target


def check_decoded_room(upload: Path, decoded_bytes: int, what: str) -> None:
    """Refuse, before decoding, pixels that could not be kept within the quota beside their upload.

    ``what``: the pictures and settings in words, e.g. "its 14,400 pictures at 64×64 RGB".
    """
    quota = upload_quota_bytes()
    try:
        upload_bytes = upload.stat().st_size
    except OSError:
        upload_bytes = 0
    if upload_bytes + decoded_bytes > quota:
        raise DatasetError(
            f"{shown_path(upload)} is too much to decode here: {what} take {megabytes(decoded_bytes)} "
            f"decoded, and this server keeps {round(quota / 1024**2, 2):g} MB for uploads and their decoded "
            "pictures together (FLOWLAB_UPLOAD_QUOTA_MB). Choose a smaller size or grayscale, or "
            "upload fewer pictures."
        )


def keep_decoded(cache_file: Path, decoded_bytes: int, write: Callable[[IO[bytes]], Any]) -> bool:
    """Write an upload's decoded pixels (``write(file)``, about ``decoded_bytes``) within the quota.

    Makes room by removing other decoded pixels, least recently used first (never an upload);
    returns False, writing nothing, when the uploads alone leave no room.
    """
    quota = upload_quota_bytes()
    directory = cache_file.parent
    with _locked(directory):
        groups = _inventory(directory).values()
        others = sorted(entry for g in groups for entry in g.decoded if entry[2] != cache_file)
        if sum(g.upload_bytes for g in groups) + decoded_bytes > quota:
            warnings.warn(f"Not keeping the decoded pictures of {shown_path(cache_file)}: the uploads "
                          "fill the quota", stacklevel=2)
            return False
        replaced = sum(size for g in groups for _, size, path in g.decoded if path == cache_file)
        total = sum(g.bytes for g in groups) - replaced + decoded_bytes
        for _, size, path in others:
            if total <= quota:
                break
            path.unlink(missing_ok=True)
            total -= size
        atomic_write(cache_file, write)
    return True


def touch(path: Path) -> None:
    """Mark kept pixels as just used (the last decoded pixels to be removed)."""
    with contextlib.suppress(OSError):
        os.utime(path)
