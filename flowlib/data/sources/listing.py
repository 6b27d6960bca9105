"""Finding the pictures under a folder or in a zip, and opening each one safely.

Zips are read member by member and never extracted.  Nothing here trusts what a file claims
about itself: a zip member is inflated in chunks and stopped one byte past its recorded size
(a member that inflates beyond it is a forged header, and the zip is refused), and only
regular files are opened (a FIFO named ``pipe.png`` would block ``open`` forever).
"""

from __future__ import annotations

import copy
import hashlib
import io
import os
import stat
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import IO, Any, Callable

from flowlib.fileio import NotRegularFile, open_regular
from flowlib.zipdir import NotAZip, ZipTooLarge, check_zip_directory

from .common import DatasetError, shown_path
from .images import MAX_IMAGE_PIXELS, Skip, is_picture_name

MAX_FILE_BYTES = 256 * 1024**2  # a single picture file bigger than this is not a photo we want
MAX_ZIP_MEMBER_BYTES = 64 * 1024**2  # inflated size of one zip member; it is held in memory
MAX_ZIP_MEMBERS = 200_000
MAX_ZIP_DIRECTORY_BYTES = 64 * 1024**2  # the zip's list of entries, read whole by zipfile (~320 B an entry)
MAX_ZIP_BYTES = 2 * 1024**3  # total inflated size of the image members we would read
READ_CHUNK = 1 << 16

SKIP_WORDS = {
    "not_image": "not images",
    "corrupt": "corrupt or unreadable",
    "too_large": f"larger than {MAX_IMAGE_PIXELS // 1_000_000} megapixels",
    "too_big_file": f"files over {MAX_FILE_BYTES // 1024**2} MB",
    "too_big_member": f"zip entries over {MAX_ZIP_MEMBER_BYTES // 1024**2} MB unpacked",
    "not_regular": "not regular files (pipes, devices or sockets)",
    "unsafe_path": "zip entries with unsafe paths (absolute or '..')",
}


def skip_sentence(skipped: dict[str, int]) -> str:
    parts = [f"{n:,} {SKIP_WORDS[key]}" for key, n in skipped.items() if n]
    total = sum(skipped.values())
    return f"{total:,} files skipped: {', '.join(parts)}" if total else "no files skipped"


@dataclass
class Entry:
    name: str  # relative name, used for ordering and for CelebA's partition file
    stored_bytes: int  # bytes it takes on disk or in the zip: what the input "looks" like
    open: Callable[[], IO[bytes]]  # a readable binary stream of the picture; raises Skip


@dataclass
class Listing:
    entries: list[Entry] = field(default_factory=list)
    skipped: dict[str, int] = field(default_factory=lambda: {key: 0 for key in SKIP_WORDS})
    # Cache key material: every file's size, mtime, ctime and inode, every zip member's CRC.
    fingerprint: Any = field(default_factory=hashlib.sha256)
    closers: list[Callable[[], None]] = field(default_factory=list)

    def remember(self, *parts: Any) -> None:
        self.fingerprint.update(repr(parts).encode("utf-8", "surrogatepass") + b"\n")

    def close(self) -> None:
        for close in reversed(self.closers):
            close()
        self.closers.clear()

    @property
    def stored_bytes(self) -> int:
        return sum(entry.stored_bytes for entry in self.entries)


def _file_identity(st: os.stat_result) -> tuple[int, int, int, int]:
    # ctime cannot be set by a user, so a replaced file shows even with an old mtime and size.
    return (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)


def _is_hidden(name: str) -> bool:
    # Dot files (.DS_Store) and macOS resource forks are noise, not pictures to count.
    return any(
        (part.startswith(".") and part not in (".", "..")) or part == "__MACOSX"
        for part in PurePosixPath(name).parts
    )


def _unsafe_member(name: str) -> bool:
    pure = PurePosixPath(name.replace("\\", "/"))
    return pure.is_absolute() or ".." in pure.parts or (len(name) > 1 and name[1] == ":")


# ----------------------------------------------------------------------------- files on disk


def _open_picture_file(path: Path) -> IO[bytes]:
    try:
        handle = open_regular(path)
    except NotRegularFile:
        raise Skip("not_regular") from None
    if os.fstat(handle.fileno()).st_size > MAX_FILE_BYTES:  # it grew since it was listed
        handle.close()
        raise Skip("too_big_file")
    return handle


# ----------------------------------------------------------------------------- zips


class _InflateCounter:
    """Bytes actually inflated from one zip, whatever its headers say."""

    def __init__(self, zip_path: Path):
        self.zip_path, self.total = zip_path, 0

    def add(self, n: int) -> None:
        self.total += n
        if self.total > MAX_ZIP_BYTES:
            raise DatasetError(
                f"{shown_path(self.zip_path)} unpacks to more than {MAX_ZIP_BYTES // 1024**3} GB "
                "of pictures. Use a smaller zip, or unzip it yourself and point 'path' at the folder."
            )


def _read_member(archive: zipfile.ZipFile, member: zipfile.ZipInfo, zip_path: Path,
                 counter: _InflateCounter) -> IO[bytes]:
    """Inflate one member into memory, in chunks, stopping one byte past its recorded size."""
    # zipfile stops inflating at the recorded size and then checks the CRC, so a forged small
    # size looks like mere corruption.  Reading one byte past the record shows whether the
    # member really ends there, so zipfile gets a copy with no size limit of its own: the
    # member ends when its deflate stream does, and the loop below decides how much to inflate.
    probe = copy.copy(member)
    probe.file_size = 1 << 62
    buffer = io.BytesIO()
    try:
        with archive.open(probe) as stream:
            remaining = member.file_size + 1
            while remaining > 0:
                chunk = stream.read(min(READ_CHUNK, remaining))
                if not chunk:
                    break
                counter.add(len(chunk))
                buffer.write(chunk)
                remaining -= len(chunk)
    except (zipfile.BadZipFile, OSError, EOFError, RuntimeError, ValueError, NotImplementedError):
        raise Skip("corrupt") from None  # bad CRC, encrypted member, unknown compression...
    if buffer.tell() > member.file_size:
        raise DatasetError(
            f"{shown_path(zip_path)} is damaged or forged: its entry {member.filename!r} unpacks to "
            f"more than the {member.file_size:,} bytes its header records. Re-create the zip."
        )
    if buffer.tell() != member.file_size:
        raise Skip("corrupt")
    buffer.seek(0)
    return buffer


def _list_zip(zip_path: Path, prefix: str, listing: Listing) -> None:
    """Add a zip's picture members to the listing; nothing is extracted to disk."""
    try:
        handle = open_regular(zip_path)
    except OSError as exc:
        raise DatasetError(f"{shown_path(zip_path)} cannot be read ({_said(exc)}).") from None
    listing.closers.append(handle.close)
    try:   # from the file's tail, before zipfile parses (and holds) every entry it lists
        check_zip_directory(handle, MAX_ZIP_MEMBERS, MAX_ZIP_DIRECTORY_BYTES)
    except ZipTooLarge as exc:
        raise DatasetError(f"{shown_path(zip_path)} was refused before reading its entries: {exc}. Split "
                           "it into smaller zips or unzip it and point 'path' at the folder.") from None
    except (NotAZip, OSError) as exc:
        raise DatasetError(f"{shown_path(zip_path)} is not a readable zip ({_said(exc)}). Re-create the zip.") from None
    try:
        handle.seek(0)
        archive = zipfile.ZipFile(handle)
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise DatasetError(f"{shown_path(zip_path)} is not a readable zip ({_said(exc)}). Re-create the zip.") from None
    listing.closers.append(archive.close)
    members = archive.infolist()
    if len(members) > MAX_ZIP_MEMBERS:
        raise DatasetError(
            f"{shown_path(zip_path)} has {len(members):,} entries, more than the {MAX_ZIP_MEMBERS:,} "
            "allowed. Split it into smaller zips or unzip it and point 'path' at the folder."
        )
    listing.remember(str(zip_path), len(members), *_file_identity(os.fstat(handle.fileno())))
    counter = _InflateCounter(zip_path)
    declared_total = 0
    for member in members:
        if member.is_dir():
            continue
        if _unsafe_member(member.filename):
            # Reading is harmless (we never extract), but such a zip is hostile or broken:
            # leave those entries out and say so.
            listing.skipped["unsafe_path"] += 1
            continue
        if _is_hidden(member.filename):
            continue
        if not is_picture_name(member.filename):
            listing.skipped["not_image"] += 1
            continue
        if member.file_size > MAX_ZIP_MEMBER_BYTES:
            listing.skipped["too_big_member"] += 1
            continue
        declared_total += member.file_size
        if declared_total > MAX_ZIP_BYTES:
            raise DatasetError(
                f"{shown_path(zip_path)} would unpack to more than {MAX_ZIP_BYTES // 1024**3} GB of "
                "pictures. Use a smaller zip, or unzip it yourself and point 'path' at the folder."
            )
        listing.remember(member.filename, member.CRC, member.file_size)

        def read(member: zipfile.ZipInfo = member) -> IO[bytes]:
            return _read_member(archive, member, zip_path, counter)

        listing.entries.append(Entry(prefix + member.filename, member.compress_size, read))


def _said(exc: BaseException) -> str:
    """An error's words without the server's path to the file (an upload is named as one)."""
    if isinstance(exc, OSError) and exc.filename:
        return f"{exc.strerror or type(exc).__name__}: {shown_path(Path(os.fsdecode(exc.filename)))}"
    return str(exc)


# ----------------------------------------------------------------------------- folders


def list_pictures(root: Path) -> Listing:
    """All candidate pictures under ``root`` (a folder, recursively, or a zip file)."""
    listing = Listing()
    listing.remember(str(root))
    try:
        if root.is_file():
            _list_single_file(root, listing)
        else:
            _list_folder(root, listing)
    except BaseException:
        listing.close()
        raise
    return listing


def _list_single_file(root: Path, listing: Listing) -> None:
    try:
        with open_regular(root) as handle:
            is_zip = zipfile.is_zipfile(handle)
            identity = _file_identity(os.fstat(handle.fileno()))
    except OSError as exc:
        raise DatasetError(f"{shown_path(root)} cannot be read ({_said(exc)}).") from None
    if is_zip:
        _list_zip(root, "", listing)
    elif is_picture_name(root.name):
        listing.remember(*identity)
        if identity[0] > MAX_FILE_BYTES:
            listing.skipped["too_big_file"] += 1
        else:
            listing.entries.append(Entry(root.name, identity[0], lambda: _open_picture_file(root)))
    else:
        raise DatasetError(f"{shown_path(root)} is a file but neither a zip nor a picture. Pick a folder or a .zip.")


def _list_folder(root: Path, listing: Listing) -> None:
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not _is_hidden(d))
        for filename in sorted(filenames):
            if _is_hidden(filename):
                continue
            path = Path(dirpath) / filename
            relative = path.relative_to(root).as_posix()
            try:
                st = path.stat()  # follows symlinks: a link to a FIFO is a FIFO
            except OSError:
                listing.skipped["corrupt"] += 1
                continue
            if not stat.S_ISREG(st.st_mode):
                listing.skipped["not_regular"] += 1
                continue
            listing.remember(relative, *_file_identity(st))
            if path.suffix.lower() == ".zip":
                _list_zip(path, relative + "/", listing)
            elif not is_picture_name(filename):
                listing.skipped["not_image"] += 1
            elif st.st_size > MAX_FILE_BYTES:
                listing.skipped["too_big_file"] += 1
            else:
                listing.entries.append(
                    Entry(relative, st.st_size, lambda path=path: _open_picture_file(path))
                )
