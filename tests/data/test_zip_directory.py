"""A zip's list of entries is sized from the file's tail before zipfile parses it (issue #27,
round three): too many entries, a list larger than the file or than a cap are refused with a
sentence, and zipfile.ZipFile is never called on them."""

import io
import struct
import zipfile

import pytest

from flowlib.core.checkpoint import CheckpointError, load_checkpoint
from flowlib.data.sources import listing
from flowlib.data.sources.common import DatasetError
from flowlib.zipdir import NotAZip, ZipTooLarge, check_zip_directory, read_zip_directory

RECORD = b"PK\x01\x02" + bytes(42)          # a central directory record with an empty name


def _eocd(entries: int, size: int, offset: int, comment: bytes = b"") -> bytes:
    return struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, min(entries, 0xFFFF), min(entries, 0xFFFF),
                       size, offset, len(comment)) + comment


def _zip64_tail(entries: int, size: int, offset: int) -> bytes:
    record = struct.pack("<4sQ2H2L4Q", b"PK\x06\x06", 44, 45, 45, 0, 0, entries, entries, size, offset)
    locator = struct.pack("<4sLQL", b"PK\x06\x07", 0, offset + size, 1)
    return record + locator + _eocd(0xFFFF, 0xFFFFFFFF, 0xFFFFFFFF)


@pytest.fixture
def no_zipfile(monkeypatch):
    """zipfile.ZipFile fails the test if anything constructs one."""
    def refuse(*args, **kwargs):
        raise AssertionError("zipfile.ZipFile parsed a central directory that should have been refused")
    monkeypatch.setattr(zipfile, "ZipFile", refuse)


def _write(tmp_path, data: bytes, name="pictures.zip"):
    path = tmp_path / name
    path.write_bytes(data)
    return path


def test_a_real_zip_reads_as_zipfile_sees_it():
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for i in range(30):
            z.writestr(f"p{i}.png", b"x" * i)
        z.comment = b"a comment that moves the end record"
    d = check_zip_directory(buf, max_entries=30, max_bytes=1 << 20)
    with zipfile.ZipFile(buf) as z:
        assert d.entries == len(z.infolist()) == 30 and d.start == z.start_dir
    with pytest.raises(ZipTooLarge, match="declares 30 entries, more than the 29 allowed"):
        check_zip_directory(buf, max_entries=29, max_bytes=1 << 20)
    with pytest.raises(NotAZip):
        read_zip_directory(io.BytesIO(b"not a zip at all" * 100))


def test_an_end_record_claiming_millions_of_entries_is_refused_unparsed(tmp_path, no_zipfile):
    path = _write(tmp_path, _zip64_tail(5_000_000, 46 * 5_000_000, 0))
    with pytest.raises(DatasetError) as info:
        listing.list_pictures(path)
    assert "declares 5,000,000 entries, more than the 200,000 allowed" in str(info.value)


def test_a_central_directory_larger_than_the_file_is_refused_unparsed(tmp_path, no_zipfile):
    path = _write(tmp_path, RECORD * 3 + _eocd(3, 900_000_000, 0))
    with pytest.raises(DatasetError, match="claims 900,000,000 bytes, more than the file holds"):
        listing.list_pictures(path)


def test_a_central_directory_over_the_cap_is_refused_unparsed(tmp_path, no_zipfile, monkeypatch):
    monkeypatch.setattr(listing, "MAX_ZIP_DIRECTORY_BYTES", 1 << 20)
    cd = RECORD * 30_000                           # 1.3 MB of records, declaring only 10
    path = _write(tmp_path, cd + _eocd(10, len(cd), 0))
    with pytest.raises(DatasetError, match=r"list of entries takes 1\.3 MB, more than the 1 MB allowed"):
        listing.list_pictures(path)


def test_more_records_than_the_end_record_declares_are_counted_unparsed(tmp_path, no_zipfile):
    cd = RECORD * 200_001                          # zipfile would parse every one of them
    path = _write(tmp_path, cd + _eocd(1, len(cd), 0))
    with pytest.raises(DatasetError, match="holds more than 200,000 entries \\(its end record declares 1\\)"):
        listing.list_pictures(path)


@pytest.mark.filterwarnings("ignore:Duplicate name")
def test_50_000_empty_name_entries_are_refused_before_zipfile_parses_them(tmp_path, monkeypatch):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for _ in range(50_000):
            z.writestr(zipfile.ZipInfo(""), b"")
    path = _write(tmp_path, buf.getvalue())
    monkeypatch.setattr(listing, "MAX_ZIP_MEMBERS", 10_000)
    monkeypatch.setattr(zipfile, "ZipFile", lambda *a, **k: pytest.fail("zipfile.ZipFile was called"))
    with pytest.raises(DatasetError, match="declares 50,000 entries, more than the 10,000 allowed"):
        listing.list_pictures(path)


def test_a_checkpoint_with_a_huge_entry_list_is_refused_unparsed(tmp_path, no_zipfile):
    cd = RECORD * 120_000
    path = _write(tmp_path, cd + _eocd(1, len(cd), 0), "model.pt")
    with pytest.raises(CheckpointError, match="^model.pt: .*refused before its entries were read"):
        load_checkpoint(path)
