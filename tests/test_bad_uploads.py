"""Issue 8's list of hostile uploads, each fed to the code the app runs on an upload:
``viz.prepare_upload`` for a single picture (Masks / Latents pages) and
``data.store_upload`` + ``load_images("folder", path=zip)`` for a dataset zip (Train page)."""

from __future__ import annotations

import io
import os
import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from flowlib import viz
from flowlib.data import DatasetError, load_images, store_upload

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
    with pytest.raises(viz.UploadError, match="empty"):
        viz.prepare_upload(b"", MNIST_SHAPE, name="blank.png")


def test_text_renamed_png_is_refused_in_words():
    with pytest.raises(viz.UploadError, match="not a picture"):
        viz.prepare_upload(b"just some notes\n" * 20, MNIST_SHAPE, name="notes.png")


def test_truncated_png_is_refused():
    data = _encode(Image.new("L", (64, 64), 77))
    with pytest.raises(viz.UploadError, match="damaged|not a picture|truncated"):
        viz.prepare_upload(data[: len(data) // 2], MNIST_SHAPE, name="cut.png")


def test_decompression_bomb_is_caught_not_raised():
    bomb = _bomb_png(20_000)  # the header claims 20,000 × 20,000 pixels; the file is ~100 bytes
    assert len(bomb) < 200
    with pytest.raises(Image.DecompressionBombError):
        Image.open(io.BytesIO(bomb))  # what would reach the page without the guard
    with pytest.raises(viz.UploadError, match="decompression bomb"):
        viz.prepare_upload(bomb, MNIST_SHAPE, name="bomb.png")
    # Below Pillow's own limit, the page's pixel cap refuses it before decoding.
    with pytest.raises(viz.UploadError, match="megapixels"):
        viz.prepare_upload(_bomb_png(9_000), MNIST_SHAPE, name="big.png")


def test_sixteen_bit_is_scaled():
    arr = np.full((32, 32), 65535, np.uint16)
    px, notes = viz.prepare_upload(_encode(Image.fromarray(arr)), MNIST_SHAPE)
    assert px.dtype == np.uint8 and (px == 255).all()


def test_cmyk_is_converted():
    img = Image.new("CMYK", (40, 40), (0, 0, 0, 0))  # no ink: white
    px, _ = viz.prepare_upload(_encode(img, "JPEG", quality=95), MNIST_SHAPE)
    assert px.shape == MNIST_SHAPE and px.min() >= 250


def test_palette_image_is_converted():
    img = Image.new("P", (30, 30), 0)
    img.putpalette([200, 200, 200] + [0, 0, 0] * 255)
    px, _ = viz.prepare_upload(_encode(img), MNIST_SHAPE)
    assert px.shape == MNIST_SHAPE and abs(int(px.mean()) - 200) <= 1


def test_rgba_is_composited_on_white():
    img = Image.new("RGBA", (30, 30), (0, 0, 0, 0))
    px, notes = viz.prepare_upload(_encode(img), MNIST_SHAPE)
    assert (px == 255).all() and any("transparency" in n for n in notes)


def test_animated_gif_uses_the_first_frame():
    frames = [Image.new("L", (28, 28), v) for v in (40, 220)]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:], duration=100)
    px, notes = viz.prepare_upload(buf.getvalue(), MNIST_SHAPE)
    assert abs(int(px.mean()) - 40) <= 2 and any("first frame" in n for n in notes)


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
