"""Hostile uploads, each fed to the code the app runs on an upload: ``prepare_upload`` for a
single picture (Masks / Latents pages) and ``data.store_upload`` + ``load_images("folder",
path=zip)`` for a dataset zip (Train page). Both decode pictures with ``decode_plain``."""

from __future__ import annotations

import io
import os
import struct
import warnings
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from flowlib.data import load_images, store_upload
from flowlib.data.sources.common import DatasetError
from flowlib.data.sources.images import MAX_IMAGE_PIXELS, Skip, decode_picture, decode_plain, to_plain_mode
from flowlib.viz.uploads import UploadError, prepare_upload

MNIST_SHAPE = (1, 28, 28)


def _encode(img: Image.Image, fmt: str = "PNG", **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _bomb_png(side: int = 100_000) -> bytes:
    """A tiny file whose header claims side×side pixels: Pillow's DecompressionBombError case."""
    ihdr = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)  # 8-bit greyscale
    idat = zlib.compress(b"\x00" * 64)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat)
            + _png_chunk(b"IEND", b""))


@pytest.fixture(autouse=True)
def cache_in_tmp(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv("FLOWLAB_CACHE_DIR", str(cache))
    return cache


def test_zero_bytes_is_refused():
    with pytest.raises(UploadError, match="empty"):
        prepare_upload(b"", MNIST_SHAPE, name="blank.png")


def test_text_renamed_png_is_refused_in_words():
    with pytest.raises(UploadError, match="not a picture"):
        prepare_upload(b"just some notes\n" * 20, MNIST_SHAPE, name="notes.png")


def test_truncated_png_is_refused():
    data = _encode(Image.new("L", (64, 64), 77))
    with pytest.raises(UploadError, match="damaged|not a picture|truncated"):
        prepare_upload(data[: len(data) // 2], MNIST_SHAPE, name="cut.png")


def test_decompression_bomb_is_caught_not_raised():
    bomb = _bomb_png(20_000)  # the header claims 20,000 × 20,000 pixels; the file is ~100 bytes
    assert len(bomb) < 200
    with pytest.raises(Image.DecompressionBombError):
        Image.open(io.BytesIO(bomb))  # what would reach the page without the guard
    with pytest.raises(UploadError, match="decompression bomb"):
        prepare_upload(bomb, MNIST_SHAPE, name="bomb.png")
    # Below Pillow's own limit, the page's pixel cap refuses it before decoding.
    with pytest.raises(UploadError, match="megapixels"):
        prepare_upload(_bomb_png(9_000), MNIST_SHAPE, name="big.png")


def test_an_upload_and_a_dataset_picture_meet_one_decoder_and_one_cap():
    side = 7100                                   # 50.4 megapixels: over the cap, under Pillow's own limit
    assert side * side > MAX_IMAGE_PIXELS > 7000 * 7000
    with pytest.raises(Skip) as dataset:
        decode_picture(io.BytesIO(_bomb_png(side)), 28, 1, None)
    assert dataset.value.reason == "too_large"
    with pytest.raises(UploadError) as upload:
        prepare_upload(_bomb_png(side), MNIST_SHAPE, name="big.png")
    assert str(upload.value) == f"big.png {dataset.value.words}"
    assert str(upload.value) == "big.png is 7100×7100 pixels; pictures up to 50 megapixels are accepted."
    # the other refusals: the tally key a folder counts, the words an upload shows
    png = _encode(Image.new("L", (64, 64), 77))
    for data, reason, words in ((_bomb_png(20_000), "too_large", "decompression bomb"),
                                (b"just some notes\n" * 20, "corrupt", "not a picture"),
                                (png[: len(png) // 2], "corrupt", "damaged")):
        with pytest.raises(Skip) as refused:
            decode_plain(io.BytesIO(data))
        assert refused.value.reason == reason and words in refused.value.words
        with pytest.raises(UploadError, match=words):
            prepare_upload(data, MNIST_SHAPE)


def test_decode_plain_says_what_it_converted():
    frames = [Image.new("RGBA", (20, 10), (0, 0, 0, v)) for v in (0, 255)]
    buf = io.BytesIO()
    frames[0].save(buf, format="PNG", save_all=True, append_images=frames[1:])
    picture = decode_plain(io.BytesIO(buf.getvalue()))
    assert picture.animated and picture.note == "composited transparency on white"
    assert picture.image.mode == "RGB" and picture.header_width == 20
    assert np.asarray(picture.image).min() == 255          # the first, transparent frame, on white
    plain = decode_plain(io.BytesIO(_encode(Image.new("L", (9, 9), 3))))
    assert not plain.animated and plain.note is None and plain.image.mode == "L"


def test_sixteen_bit_is_scaled():
    arr = np.full((32, 32), 65535, np.uint16)
    px, notes = prepare_upload(_encode(Image.fromarray(arr)), MNIST_SHAPE)
    assert px.dtype == np.uint8 and (px == 255).all()


def test_cmyk_is_converted():
    img = Image.new("CMYK", (40, 40), (0, 0, 0, 0))  # no ink: white
    px, _ = prepare_upload(_encode(img, "JPEG", quality=95), MNIST_SHAPE)
    assert px.shape == MNIST_SHAPE and px.min() >= 250


def test_palette_image_is_converted():
    img = Image.new("P", (30, 30), 0)
    img.putpalette([200, 200, 200] + [0, 0, 0] * 255)
    px, _ = prepare_upload(_encode(img), MNIST_SHAPE)
    assert px.shape == MNIST_SHAPE and abs(int(px.mean()) - 200) <= 1


def test_rgba_is_composited_on_white():
    img = Image.new("RGBA", (30, 30), (0, 0, 0, 0))
    px, notes = prepare_upload(_encode(img), MNIST_SHAPE)
    assert (px == 255).all() and any("transparency" in n for n in notes)


def test_animated_gif_uses_the_first_frame():
    frames = [Image.new("L", (28, 28), v) for v in (40, 220)]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:], duration=100)
    px, notes = prepare_upload(buf.getvalue(), MNIST_SHAPE)
    assert abs(int(px.mean()) - 40) <= 2 and any("first frame" in n for n in notes)


def _every_mode(rng) -> dict[str, Image.Image]:
    """A 37×23 picture of random values in each mode a file can decode to."""
    shape = (23, 37)
    pictures = {
        "I;16": Image.fromarray(rng.integers(0, 65536, shape).astype(np.uint16)),
        "I": Image.fromarray(rng.integers(0, 65536, shape).astype(np.int32)),
        "F small": Image.fromarray(rng.random(shape).astype(np.float32)),
        "F large": Image.fromarray((rng.random(shape) * 300).astype(np.float32)),
        "RGBA": Image.fromarray(rng.integers(0, 256, (*shape, 4)).astype(np.uint8), "RGBA"),
        "LA": Image.fromarray(rng.integers(0, 256, (*shape, 4)).astype(np.uint8), "RGBA").convert("LA"),
        "CMYK": Image.fromarray(rng.integers(0, 256, (*shape, 4)).astype(np.uint8), "RGBA").convert("CMYK"),
        "1": Image.fromarray(rng.integers(0, 2, shape).astype(bool)),
    }
    palette = Image.fromarray(rng.integers(0, 256, (*shape, 3)).astype(np.uint8), "RGB").quantize(16)
    palette.info["transparency"] = 3
    pictures["P"] = palette
    pictures["F large"].putpixel((5, 20), 299.5)  # the largest value, in a late band
    return pictures


def test_a_large_picture_converted_in_bands_gets_exactly_the_pixels_of_one_conversion(monkeypatch):
    from flowlib.data.sources import images

    for name, img in _every_mode(np.random.default_rng(0)).items():
        whole = np.asarray(images.to_plain_mode(img))
        monkeypatch.setattr(images, "BAND_PIXELS", 80)  # two rows of 37 per band
        banded = np.asarray(images.to_plain_mode(img))
        monkeypatch.undo()
        assert banded.dtype == np.uint8 and np.array_equal(banded, whole), name


def test_converting_a_large_16_bit_picture_costs_a_band_not_copies_of_all_of_it():
    import tracemalloc

    # A probe: one 7000×7000 16-bit PNG in a 4.5 MB zip took the server from 223 to 1,117 MB
    # (float64 copies of all 49 megapixels). numpy's allocations show in tracemalloc.
    img = Image.fromarray(np.full((3000, 3000), 40_000, np.uint16))
    tracemalloc.start()
    try:
        plain = to_plain_mode(img)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert plain.mode == "L" and plain.getextrema() == (156, 156)
    assert peak < 48 * 1024**2, f"{peak / 1024**2:.0f} MB of numpy arrays to convert 9 megapixels"


@pytest.mark.parametrize("mode,channels", [("RGB", 3), ("L", 1), ("RGB", 1), ("L", 3)])
def test_a_square_picture_in_the_wanted_mode_is_resized_without_a_full_size_copy(monkeypatch, mode, channels):
    # A probe: one 7000×7000 picture in a 4.5 MB zip cost the server 1.27 GB; a crop and a
    # convert that changed nothing were two more full-size copies of it.
    from flowlib.data.sources import images

    side = 300
    picture = Image.fromarray(np.random.default_rng(0).integers(0, 256, (side, side, 3)).astype(np.uint8)).convert(mode)
    expected = np.asarray(picture.convert("L" if channels == 1 else "RGB").resize((32, 32), Image.Resampling.LANCZOS,
                                                                                 reducing_gap=3.0))
    full_size = []
    for name in ("crop", "convert", "copy"):
        original = getattr(Image.Image, name)

        def spy(self, *args, _original=original, _name=name, **kwargs):
            out = _original(self, *args, **kwargs)
            if out.size == (side, side) and not (_name == "convert" and out.mode != self.mode):
                full_size.append(_name)
            return out

        monkeypatch.setattr(Image.Image, name, spy)
    pixels = images._square_thumbnail(picture, side, 32, channels, None)
    monkeypatch.undo()
    assert full_size == [] and np.array_equal(pixels, expected[None] if channels == 1 else expected.transpose(2, 0, 1))


def _files_under(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file()}


def test_zip_with_climbing_and_absolute_paths_writes_nothing_outside_the_cache(tmp_path, cache_in_tmp):
    good = _encode(Image.new("L", (32, 32), 128))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for i in range(12):
            zf.writestr(f"faces/ok{i}.png", good)
        zf.writestr("../../escaped.png", good)
        zf.writestr("/tmp/absolute_flowlab_upload.png", good)
    before = _files_under(tmp_path)
    path = store_upload("../../evil name.zip", buf.getvalue())
    assert cache_in_tmp in path.parents and ".." not in path.name
    train = load_images("folder", path=str(path), channels=1)
    test = load_images("folder", path=str(path), channels=1, split="test")
    assert len(train.images) + len(test.images) == 12
    assert train.info.skipped >= 2
    created = _files_under(tmp_path) - before
    assert all(cache_in_tmp in p.parents for p in created), created
    assert not (tmp_path.parent / "escaped.png").exists()
    assert not Path("/tmp/absolute_flowlab_upload.png").exists()


def test_zip_of_ten_thousand_tiny_files_loads(tmp_path, cache_in_tmp):
    tiny = _encode(Image.new("L", (8, 8), 100))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as zf:
        for i in range(10_000):
            zf.writestr(f"d/{i:05d}.png", tiny)
    path = store_upload("many.zip", buf.getvalue())
    train = load_images("folder", path=str(path), channels=1)
    test = load_images("folder", path=str(path), channels=1, split="test")
    assert len(train.images) + len(test.images) == 10_000
    assert tuple(train.images.shape[1:]) == (1, 32, 32)
    assert int(train.images.min()) == int(train.images.max()) == 100


def test_upload_that_is_neither_zip_nor_image_is_refused():
    with pytest.raises(DatasetError, match="not a zip or an image"):
        store_upload("payload.exe", os.urandom(64))


# ----------------------------------------------------------------------------- inputs that cost more than they look


def _forge_declared_size(raw: bytes, declared: int) -> bytes:
    """Rewrite every local and central header's uncompressed size, as a hostile zip would."""
    buf = bytearray(raw)
    for signature, offset in ((b"PK\x03\x04", 22), (b"PK\x01\x02", 24)):
        at = buf.find(signature)
        while at != -1:
            struct.pack_into("<I", buf, at + offset, declared)
            at = buf.find(signature, at + 4)
    return bytes(buf)


def _zip_of_zeros(name: str, megabytes: int) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        with zf.open(name, "w") as member:
            block = bytes(1 << 20)
            for _ in range(megabytes):
                member.write(block)
    return buf.getvalue()


def _peak_python_bytes(fn) -> int:
    import tracemalloc

    tracemalloc.start()
    try:
        fn()
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak


def test_zip_member_that_inflates_past_its_recorded_size_is_refused_in_small_memory(tmp_path):
    # A 1 MB zip whose header says 1,000 bytes for a 1 GiB member would take 2.24 GB if inflated whole.
    # Same shape, 48 MiB so the test stays quick; inflating it whole would show in the peak.
    path = tmp_path / "forged.zip"
    path.write_bytes(_forge_declared_size(_zip_of_zeros("big.png", 48), 1000))
    assert path.stat().st_size < 1024**2
    errors = []

    def load():
        try:
            load_images("folder", path=path)
        except DatasetError as exc:
            errors.append(str(exc))

    peak = _peak_python_bytes(load)
    assert errors and "entry 'big.png' unpacks to more than the 1,000 bytes its header records" in errors[0]
    assert peak < 4 * 1024**2, f"{peak / 1024**2:.1f} MB traced while refusing the forged zip"


def test_zip_member_recorded_as_huge_is_skipped_without_inflating(tmp_path):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        for i in range(3):
            zf.writestr(f"ok{i}.png", _encode(Image.new("L", (16, 16), 90)))
        with zf.open("huge.png", "w") as member:  # honestly recorded, over the 64 MB per member
            for _ in range(65):
                member.write(bytes(1 << 20))
    path = tmp_path / "mixed.zip"
    path.write_bytes(buf.getvalue())
    loaded = {}
    peak = _peak_python_bytes(lambda: loaded.setdefault("ds", load_images("folder", path=path, channels=1)))
    assert "1 zip entries over 64 MB unpacked" in loaded["ds"].info.notes
    assert peak < 16 * 1024**2, f"{peak / 1024**2:.1f} MB traced"


def _black_png_zip(count: int, side: int) -> bytes:
    one = _encode(Image.new("L", (side, side), 0), optimize=True)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as zf:
        for i in range(count):
            zf.writestr(f"black{i:02d}.png", one)
    return buf.getvalue()


def test_small_zip_of_huge_black_pictures_stops_at_its_decode_budget(tmp_path):
    # 1.9 MB of 40 black 7000x7000 PNGs cost 50 s of CPU without a budget. Here 12 of 3000x3000
    # (108 megapixels in a ~110 KB zip) against the 64-megapixel floor of the budget.
    import time

    path = tmp_path / "black.zip"
    path.write_bytes(_black_png_zip(12, 3000))
    started = time.process_time()
    with pytest.raises(DatasetError) as info:
        load_images("folder", path=path)
    assert time.process_time() - started < 5
    message = str(info.value)
    assert f"Stopped reading {path}" in message and "decode budget of 64 megapixels" in message
    assert "FLOWLAB_DECODE_BUDGET_MPX" in message


def test_decode_budget_can_be_raised_and_has_a_time_limit(tmp_path, monkeypatch):
    path = tmp_path / "black.zip"
    path.write_bytes(_black_png_zip(8, 3000))
    monkeypatch.setenv("FLOWLAB_DECODE_BUDGET_MPX", "100")
    ds = load_images("folder", path=path, channels=1, size=8)
    assert len(ds) == 7 and int(ds.images.max()) == 0
    monkeypatch.setenv("FLOWLAB_DECODE_BUDGET_SECONDS", "1e-9")
    monkeypatch.setenv("FLOWLAB_CACHE_DIR", str(tmp_path / "fresh-cache"))  # decode again
    with pytest.raises(DatasetError, match=r"took more than its budget of 0 seconds \(set by "
                                           r"FLOWLAB_DECODE_BUDGET_SECONDS\)"):
        load_images("folder", path=path, channels=1, size=8)


def test_upload_quota_evicts_the_oldest_uploads(tmp_path, monkeypatch, cache_in_tmp):
    monkeypatch.setenv("FLOWLAB_UPLOAD_QUOTA_MB", str(10_000 / 1024**2))  # 10,000 bytes
    blobs = [bytes([i]) * 4000 for i in range(4)]
    paths = []
    for age, blob in enumerate(blobs[:2]):
        paths.append(store_upload(f"u{age}.png", blob))
        os.utime(paths[-1], (1_000_000 + age, 1_000_000 + age))  # u0 oldest
    store_upload("u0.png", blobs[0])  # stored again: now the most recent
    paths.append(store_upload("u2.png", blobs[2]))  # 12,000 bytes > quota: u1 must go
    assert [p.exists() for p in paths] == [True, False, True]
    with pytest.raises(DatasetError, match="more than the 0.01 MB this server keeps"):
        store_upload("big.zip", bytes(20_000))
    # the evicted upload's path explains itself, without the server path
    with pytest.raises(DatasetError) as info:
        load_images("folder", path=paths[1])
    assert "no longer on this server" in str(info.value) and str(cache_in_tmp) not in str(info.value)


def test_upload_info_and_errors_show_no_server_path(cache_in_tmp):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for i in range(3):
            zf.writestr(f"{i}.png", _encode(Image.new("L", (9, 9), i * 50)))
    stored = store_upload("class photos.zip", buf.getvalue())
    ds = load_images("folder", path=stored, channels=1)
    shown = " ".join([ds.info.source, ds.info.licence, ds.info.notes, ds.info.display_name])
    assert str(cache_in_tmp) not in shown and f"your upload {stored.name}" in ds.info.source
    empty = io.BytesIO()
    with zipfile.ZipFile(empty, "w") as zf:
        zf.writestr("notes.txt", b"no pictures")
    with pytest.raises(DatasetError) as info:
        load_images("folder", path=store_upload("empty.zip", empty.getvalue()))
    assert "your upload" in str(info.value) and str(cache_in_tmp) not in str(info.value)


# ----------------------------------------------------------------------------- decoded pixels bounded, counted, evicted


def _tiny_png_zip(count: int, seed: int = 0) -> bytes:
    """``count`` 1×1 PNGs of random colours: about 150 bytes of zip each."""
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for i in range(count):
            zf.writestr(f"p{i:05d}.png", _encode(Image.new("RGB", (1, 1), tuple(int(v) for v in rng.integers(0, 256, 3)))))
    return buf.getvalue()


def _decoding_must_not_start(monkeypatch):
    from flowlib.data.sources import pixel_cache

    def refuse(*args, **kwargs):
        raise AssertionError("a picture was decoded although the listing already showed the cost")

    monkeypatch.setattr(pixel_cache, "decode_picture", refuse)


def test_many_tiny_pictures_are_refused_before_decoding_when_their_squares_exceed_the_budget(tmp_path, cache_in_tmp, monkeypatch):
    # A probe: a 17 MB zip of 110,000 1×1 PNGs read at 64×64 RGB peaked at 5.2 GB and left
    # 1.3 GB of pixels on disk. Every picture costs at least the square it becomes, and the
    # listing shows the count before any picture is decoded.
    path = tmp_path / "dots.zip"
    path.write_bytes(_tiny_png_zip(4_000))
    assert path.stat().st_size < 1024**2
    with monkeypatch.context() as patched:
        _decoding_must_not_start(patched)
        with pytest.raises(DatasetError, match=r"dots\.zip holds 4,000 pictures: at 128×128 they make 66 megapixels, "
                                               r"more than its decode budget of 64 megapixels .*Choose a smaller size"):
            load_images("folder", path=path, size=128)
    assert len(load_images("folder", "test", path=path, size=8)) == 400  # 4,000 × 64 pixels: fine


def test_pictures_go_straight_into_one_array(tmp_path, cache_in_tmp, monkeypatch):
    import tracemalloc

    from flowlib.data.sources import pixel_cache

    # the decoding alone: writing the cache copies at most numpy's 16 MB write buffer
    monkeypatch.setattr(pixel_cache, "_write_cache", lambda *args: None)

    folder = tmp_path / "pics"
    folder.mkdir()
    for i in range(300):
        Image.new("RGB", (40, 40), (i % 256, 0, 0)).save(folder / f"{i:03d}.png")
    tracemalloc.start()
    try:
        images, names, _ = pixel_cache.preprocess_pictures(folder, 64, 3, None, None)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert images.shape == (300, 3, 64, 64) and len(names) == 300
    # one array of the result (3.7 MB) and one picture at a time; a list of pictures then
    # stacked held the pixels twice
    assert peak < 1.5 * images.nbytes, f"{peak / images.nbytes:.2f} times the pixels"


def test_a_long_member_name_does_not_widen_the_cache(tmp_path, cache_in_tmp):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for i in range(200):
            name = ("n" * 50_000 if i == 0 else f"{i}") + ".png"
            zf.writestr(name, _encode(Image.new("L", (4, 4), i)))
    path = tmp_path / "names.zip"
    path.write_bytes(buf.getvalue())
    assert len(load_images("folder", path=path, size=8, channels=1)) == 180
    (cache,) = cache_in_tmp.glob("pictures-*.npz")
    # a fixed-width array of names made every one as wide as the longest: 200 × 200 KB
    assert cache.stat().st_size < 200 * 64 + 150_000


def _in_uploads(cache: Path) -> dict[str, int]:
    return {p.name: p.stat().st_size for p in (cache / "uploads").iterdir() if not p.name.startswith(".")}


def test_an_uploads_decoded_pixels_count_in_the_quota_and_go_with_it(monkeypatch, cache_in_tmp):
    # A probe: four 2.3 MB uploads within a 5 MB quota left 710 MB of decoded pixels on disk.
    quota = 400_000
    monkeypatch.setenv("FLOWLAB_UPLOAD_QUOTA_MB", str(quota / 1024**2))
    first = store_upload("first.zip", _tiny_png_zip(300, seed=1))
    with monkeypatch.context() as patched:
        _decoding_must_not_start(patched)
        with pytest.raises(DatasetError, match=r"your upload .*\.zip is too much to decode here: its 300 pictures at "
                                               r"32×32 RGB take 1\.0 MB decoded, and this server keeps 0\.38 MB"):
            load_images("folder", path=first, size=32, channels=3)
    assert len(load_images("folder", path=first, size=16, channels=1)) == 270
    kept = _in_uploads(cache_in_tmp)
    decoded = [name for name in kept if name.startswith(first.name + ".decoded-")]
    assert len(decoded) == 1 and kept[decoded[0]] >= 300 * 256  # beside its upload, counted
    assert not list(cache_in_tmp.glob("pictures-*.npz"))
    for seed in range(2, 12):  # more uploads, none read: the oldest go, each with its pixels
        store_upload(f"u{seed}.zip", _tiny_png_zip(300, seed=seed))
        mine = sorted(name for name in _in_uploads(cache_in_tmp) if name.startswith(first.name))
        assert mine in ([], sorted([first.name, decoded[0]])), mine
        if not mine:
            break
    assert not mine and seed > 2
    for seed in range(12, 17):  # more uploads, each read: everything stays within the quota
        later = store_upload(f"u{seed}.zip", _tiny_png_zip(300, seed=seed))
        with warnings.catch_warnings():  # "Not keeping the decoded pictures": no room beside the uploads
            warnings.simplefilter("ignore", UserWarning)
            assert len(load_images("folder", path=later, size=16, channels=1)) == 270
        assert sum(_in_uploads(cache_in_tmp).values()) <= quota


def test_uploads_that_runs_still_read_are_kept_and_a_new_one_that_does_not_fit_is_refused(monkeypatch, cache_in_tmp):
    # A probe: uploads evicted by later uploads while the runs that read them waited in the
    # queue: 3 of 3 runs failed. The caller passes the uploads that runs still read.
    monkeypatch.setenv("FLOWLAB_UPLOAD_QUOTA_MB", str(10_000 / 1024**2))
    queued = [store_upload(f"q{i}.png", bytes([i]) * 3000) for i in range(3)]
    for age, path in enumerate(queued):
        os.utime(path, (1_000_000 + age, 1_000_000 + age))  # q0 oldest
    later = store_upload("later.png", bytes([9]) * 1000, in_use=queued)
    assert all(p.exists() for p in queued) and later.exists()
    with pytest.raises(DatasetError, match=r"'big\.png' \(2 KB\) does not fit: uploads that waiting or running "
                                           r"runs still read take 9 KB of the 0\.01 MB"):
        store_upload("big.png", bytes([7]) * 2000, in_use=queued)
    assert all(p.exists() for p in queued) and not any(p.name.startswith(".") for p in (cache_in_tmp / "uploads").iterdir()
                                                       if p.name != ".lock")
    # without the runs, the oldest go first as before
    store_upload("big.png", bytes([7]) * 2000)
    assert [p.exists() for p in queued] == [False, True, True]


def test_keeping_decoded_pixels_removes_other_pixels_never_an_upload(monkeypatch, cache_in_tmp):
    from flowlib.data.sources.uploads import decoded_path, keep_decoded

    monkeypatch.setenv("FLOWLAB_UPLOAD_QUOTA_MB", str(10_000 / 1024**2))
    a, b = store_upload("a.png", bytes(3000)), store_upload("b.png", bytes([1]) * 3000)
    assert keep_decoded(decoded_path(a, "k"), 2000, lambda f: f.write(bytes(2000)))
    assert keep_decoded(decoded_path(b, "k"), 3000, lambda f: f.write(bytes(3000)))  # a's pixels go
    assert sorted(_in_uploads(cache_in_tmp)) == sorted([a.name, b.name, decoded_path(b, "k").name])
    with pytest.warns(UserWarning, match="the uploads fill the quota"):
        assert not keep_decoded(decoded_path(a, "j"), 5000, lambda f: f.write(bytes(5000)))
    assert a.exists() and b.exists() and not decoded_path(a, "j").exists()
