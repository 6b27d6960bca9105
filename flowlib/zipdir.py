"""A zip's central directory, sized from the file's tail before ``zipfile`` parses it.

    from flowlib.zipdir import ZipTooLarge, check_zip_directory
    check_zip_directory(handle, max_entries=200_000, max_bytes=32 * 1024**2)   # ZipTooLarge, or the counts

``zipfile.ZipFile`` reads the whole central directory into memory and makes one ``ZipInfo``
per record before anyone can ask how many there are, so a small hostile zip (a central
directory of millions of 46-byte records, or an end record claiming gigabytes) costs memory
and time in proportion to what it declares. Here the end-of-central-directory record (and the
zip64 one, when the end record says so) is read from a bounded tail of the file, and the
directory refused when it claims too many entries, more bytes than the file holds, or more
than a cap; then its records are counted by walking their fixed headers (at most
``max_entries`` + 1 of them, in at most ``max_bytes``), since ``zipfile`` parses every record
the directory holds whatever count the end record states.

Ground floor: no flowlib import. Callers turn :class:`ZipTooLarge` into their own error.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from typing import IO

__all__ = ["ZipDirectory", "ZipTooLarge", "NotAZip", "read_zip_directory", "check_zip_directory"]

_EOCD = struct.Struct("<4s4H2LH")                # signature, disks, entries here/total, size, offset, comment
_EOCD_SIG = b"PK\x05\x06"
_LOCATOR = struct.Struct("<4sLQL")                # zip64 end locator: signature, disk, offset, disks
_LOCATOR_SIG = b"PK\x06\x07"
_EOCD64 = struct.Struct("<4sQ2H2L4Q")             # zip64 end record: ..., entries here/total, size, offset
_EOCD64_SIG = b"PK\x06\x06"
_RECORD = struct.Struct("<4s6H3L5H2L")            # one central directory record's fixed 46 bytes
_RECORD_SIG = b"PK\x01\x02"
_MAX_COMMENT = 0xFFFF


class NotAZip(ValueError):
    """No end-of-central-directory record in the file's last 64 KiB: not a zip (or truncated)."""


class ZipTooLarge(ValueError):
    """The central directory is refused before parsing; the message says why, in words."""


@dataclass(frozen=True)
class ZipDirectory:
    entries: int        # what the end record declares
    size: int           # the central directory's bytes, as declared
    start: int          # where it begins in the file (as zipfile finds it)
    file_size: int


def read_zip_directory(handle: IO[bytes]) -> ZipDirectory:
    """The declared central directory of the zip open in ``handle`` (binary, seekable), from at
    most 64 KiB + 98 bytes of its tail. NotAZip when there is no end record."""
    file_size = handle.seek(0, os.SEEK_END)
    tail_len = min(file_size, _EOCD.size + _MAX_COMMENT)
    handle.seek(file_size - tail_len)
    tail = handle.read(tail_len)
    at = tail.rfind(_EOCD_SIG)           # the last one, as zipfile takes it
    if at < 0 or at + _EOCD.size > len(tail):
        raise NotAZip("no end-of-central-directory record")
    _, _, _, _, entries, size, _, _ = _EOCD.unpack_from(tail, at)
    end = file_size - tail_len + at
    zip64 = _zip64(handle, end)
    if zip64 is not None:
        entries, size, end = zip64
    return ZipDirectory(entries=entries, size=size, start=end - size, file_size=file_size)


def _zip64(handle: IO[bytes], eocd_pos: int) -> tuple[int, int, int] | None:
    """(entries, size, where the zip64 end record begins) when a zip64 locator and record
    precede the end record (zipfile then reads those instead), else None."""
    if eocd_pos < _LOCATOR.size + _EOCD64.size:
        return None
    handle.seek(eocd_pos - _LOCATOR.size)
    locator = handle.read(_LOCATOR.size)
    if len(locator) != _LOCATOR.size or locator[:4] != _LOCATOR_SIG:
        return None
    record_pos = eocd_pos - _LOCATOR.size - _EOCD64.size   # where zipfile reads it
    handle.seek(record_pos)
    record = handle.read(_EOCD64.size)
    if len(record) != _EOCD64.size or record[:4] != _EOCD64_SIG:
        return None
    fields = _EOCD64.unpack(record)
    return max(fields[6], fields[7]), fields[8], record_pos


def check_zip_directory(handle: IO[bytes], max_entries: int, max_bytes: int) -> ZipDirectory:
    """Refuse (ZipTooLarge, a sentence fragment such as "it declares 5,000,000 entries, more
    than the 200,000 allowed") a central directory that is too large to parse, before
    ``zipfile`` does; NotAZip when the file is not a zip. Returns the directory when it may be
    parsed. Reads the tail, then at most ``max_bytes`` of the directory."""
    d = read_zip_directory(handle)
    if d.entries > max_entries:
        raise ZipTooLarge(f"it declares {d.entries:,} entries, more than the {max_entries:,} allowed")
    if d.size > d.file_size or d.start < 0:
        raise ZipTooLarge(f"its central directory claims {d.size:,} bytes, more than the file holds "
                          f"({d.file_size:,} bytes): it is damaged or forged")
    if d.size > max_bytes:
        raise ZipTooLarge(f"its list of entries takes {d.size / 1024**2:,.1f} MB, more than the "
                          f"{max_bytes / 1024**2:,.0f} MB allowed")
    records = _count_records(handle, d, max_entries + 1)
    if records > max_entries:
        raise ZipTooLarge(f"it holds more than {max_entries:,} entries (its end record declares "
                          f"{d.entries:,})")
    return d


def _count_records(handle: IO[bytes], d: ZipDirectory, stop_after: int) -> int:
    """How many central directory records the declared directory holds, walking their fixed
    headers the way zipfile does (it stops at the end of the declared bytes), up to stop_after."""
    handle.seek(d.start)
    data = handle.read(d.size)
    at = count = 0
    while at + _RECORD.size <= len(data) and count < stop_after:
        fields = _RECORD.unpack_from(data, at)
        if fields[0] != _RECORD_SIG:
            break                       # zipfile calls this a bad directory: it will say so
        at += _RECORD.size + fields[10] + fields[11] + fields[12]
        count += 1
    return count
