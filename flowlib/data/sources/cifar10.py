"""``cifar10``: 3x32x32 from ``cifar-10-batches-py``, its ``.tar.gz``, or ``download=True``.

Batches are read straight out of the tar (nothing extracted) with the restricted unpickler.
"""

from __future__ import annotations

import functools
import hashlib
import io
import os
import tarfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np

from flowlib.fileio import atomic_write, open_regular

from .common import DatasetError, DatasetInfo, ImageSet, Progress, as_image_set, cache_dir, ensure_cache_dir, user_path
from .unpickle import restricted_load

CIFAR_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR_MD5 = "c58f30108f718f92721af3b95e74349a"
CIFAR_ARCHIVE = "cifar-10-python.tar.gz"
CIFAR_FOLDER = "cifar-10-batches-py"
CIFAR_BATCHES = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}
CIFAR_LICENCE = "CIFAR-10: Alex Krizhevsky, Vinod Nair and Geoffrey Hinton, 2009 (University of Toronto)."
# batches.meta's label_names, labels 0..9
CIFAR_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
# A real batch is 31 MB (10,000 x 3,072 bytes and labels); a file far bigger is not one.
MAX_BATCH_BYTES = 256 * 1024**2


def _too_big(what: str) -> str:
    return (f"{what} is over {MAX_BATCH_BYTES // 1024**2} MB, far more than a CIFAR-10 batch "
            f"(31 MB). Download {CIFAR_URL} again.")


def parse_cifar_batch(stream: io.BufferedIOBase, what: str) -> tuple[np.ndarray, np.ndarray]:
    """One CIFAR-10 python batch -> uint8 [N,3,32,32] and int64 labels.

    The file is a pickled dict: data = uint8 [N, 3072] with the red 32x32 plane first, then
    green, then blue, each row-major; labels = list of N ints 0..9. Both are checked for type
    and length before anything is converted: N comes from the pixel bytes actually read, and a
    label that is not a whole number 0..9 (a nested list, shared or not) is refused, never
    expanded.
    """
    batch = restricted_load(stream, what)
    if not isinstance(batch, dict):
        raise DatasetError(f"{what} is not a CIFAR-10 batch (no dict inside). Get a fresh copy.")
    # Python 2 pickles read with latin1 give str keys; Python 3 ones give bytes keys.
    batch = {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in batch.items()}
    data, labels = batch.get("data"), batch.get("labels")
    if (not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2
            or data.shape[1] != 3072 or labels is None):
        raise DatasetError(
            f"{what} does not look like a CIFAR-10 batch (want 'data' uint8 N×3072 and 'labels'). "
            "Point 'path' at the cifar-10-batches-py folder from cifar-10-python.tar.gz."
        )
    return data.reshape(-1, 3, 32, 32), _cifar_labels(labels, len(data), what)


def _cifar_labels(labels: object, n: int, what: str) -> np.ndarray:
    """``labels`` as int64 [n] when it is n whole numbers 0..9 (a list, a tuple or a 1-D integer
    array); DatasetError otherwise. Costs O(n) whatever ``labels`` holds: nothing is converted
    before every element is known to be a plain int."""
    counted = isinstance(labels, (list, tuple)) or (isinstance(labels, np.ndarray) and labels.ndim == 1)
    if counted and len(labels) != n:
        raise DatasetError(f"{what} has {n} images but {len(labels)} labels. Get a fresh copy.")
    if isinstance(labels, np.ndarray) and labels.ndim == 1 and labels.dtype.kind in "iu":
        odd = None if (len(labels) == 0 or 0 <= labels.min() <= labels.max() <= 9) else "a number outside 0..9"
    elif isinstance(labels, (list, tuple)):
        # type(v) is int: no bool, no subclass; never str() a bad one (a shared nested list
        # would be written out in full)
        at = next((i for i, v in enumerate(labels) if type(v) is not int or not 0 <= v <= 9), None)
        kind = None if at is None else type(labels[at])
        odd = None if kind is None else "a number outside 0..9" if kind is int else f"a {kind.__name__}"
    else:
        shape = f"{labels.ndim}-dimensional {labels.dtype} array" if isinstance(labels, np.ndarray) else ""
        odd = f"a {shape or type(labels).__name__}"
    if odd is not None:
        raise DatasetError(
            f"{what} has labels that are not {n:,} whole numbers from 0 to 9 (found {odd}). Get a "
            "fresh copy of cifar-10-python.tar.gz."
        )
    return np.asarray(labels, dtype=np.int64)


def _cifar_from_folder(folder: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    parts = []
    for batch in CIFAR_BATCHES[split]:
        batch_path = folder / batch
        if not batch_path.is_file():
            raise DatasetError(
                f"{folder} lacks {batch}. It should hold data_batch_1..5 and test_batch from "
                "cifar-10-python.tar.gz; extract the archive again."
            )
        try:
            handle = open_regular(batch_path)
        except OSError as exc:
            raise DatasetError(f"Cannot read {batch_path}: {exc}.") from None
        with handle:
            if os.fstat(handle.fileno()).st_size > MAX_BATCH_BYTES:
                raise DatasetError(_too_big(str(batch_path)))
            parts.append(parse_cifar_batch(handle, str(batch_path)))
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def _cifar_from_archive(archive_path: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    # Read the batches straight out of the tar: nothing is extracted, so no path tricks apply.
    parts = []
    try:
        with open_regular(archive_path) as handle, tarfile.open(fileobj=handle, mode="r:*") as archive:
            for batch in CIFAR_BATCHES[split]:
                member = f"{CIFAR_FOLDER}/{batch}"
                try:
                    info = archive.getmember(member)
                except KeyError:
                    info = None
                if info is not None and info.size > MAX_BATCH_BYTES:
                    raise DatasetError(_too_big(f"{archive_path}:{member}"))
                # extractfile reads at most the member's recorded size: the unpickler cannot
                # be fed more than that.
                stream = archive.extractfile(info) if info is not None and info.isfile() else None
                if stream is None:
                    raise DatasetError(
                        f"{archive_path} has no {member}: not the CIFAR-10 python archive. "
                        f"Download {CIFAR_URL} again."
                    )
                parts.append(parse_cifar_batch(stream, f"{archive_path}:{member}"))
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise DatasetError(f"{archive_path} is not a readable tar.gz ({exc}). Download it again.") from None
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def cifar_download_path() -> Path:
    return cache_dir() / "downloads" / CIFAR_ARCHIVE


def _download(url: str, target: Path, md5: str, what: str, folder_name: str, progress: Progress | None) -> None:
    """Fetch url into target (atomically), checking the md5; offline -> DatasetError."""
    target.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.md5()

    def write(handle: Any) -> None:
        with urllib.request.urlopen(url, timeout=15) as response:
            total = int(response.headers.get("Content-Length") or 0)
            done = 0
            while chunk := response.read(1 << 20):
                handle.write(chunk)
                digest.update(chunk)
                done += len(chunk)
                if progress is not None:
                    progress(done, total or done)
        if digest.hexdigest() != md5:
            raise DatasetError(
                f"The {what} download from {url} is corrupt (md5 {digest.hexdigest()}, expected "
                f"{md5}). Try again, or download it elsewhere."
            )

    try:
        atomic_write(target, write)
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise DatasetError(
            f"Could not download {what} from {url}: {reason}. This machine seems to be offline; "
            f"download {target.name} elsewhere and point the 'path' option at it or at the "
            f"extracted {folder_name} folder."
        ) from None


@functools.lru_cache(maxsize=4)
def _cifar_arrays(source: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    path = Path(source)
    return _cifar_from_folder(path, split) if path.is_dir() else _cifar_from_archive(path, split)


def _cifar_source(path: Any, download: bool, progress: Progress | None) -> Path:
    if path is not None:
        given = user_path(path, "CIFAR-10")
        for candidate in (given, given / CIFAR_FOLDER):
            if candidate.is_dir() and (candidate / "test_batch").is_file():
                return candidate
        if given.is_file():
            return given  # the .tar.gz itself
        if (given / CIFAR_ARCHIVE).is_file():
            return given / CIFAR_ARCHIVE
        raise DatasetError(
            f"No CIFAR-10 batches in {given}. Point 'path' at the {CIFAR_FOLDER} folder (with "
            f"data_batch_1..5 and test_batch) or at {CIFAR_ARCHIVE}."
        )
    downloaded = cifar_download_path()
    if downloaded.is_file():
        return downloaded
    if not download:
        raise DatasetError(
            f"CIFAR-10 needs a 'path' to the {CIFAR_FOLDER} folder, or download=True to fetch "
            f"{CIFAR_URL} (163 MB) into {downloaded.parent}."
        )
    ensure_cache_dir()
    _download(CIFAR_URL, downloaded, CIFAR_MD5, "CIFAR-10", CIFAR_FOLDER, progress)
    return downloaded


def load_cifar10(
    split: str, path: Any = None, download: bool = False, progress: Progress | None = None
) -> ImageSet:
    source = _cifar_source(path, download, progress)
    images, labels = _cifar_arrays(str(source), split)
    info = DatasetInfo(
        name="cifar10",
        display_name="CIFAR-10",
        source=str(source),
        count=len(images),
        shape=(3, 32, 32),
        licence=CIFAR_LICENCE,
        notes="Official split: 50,000 train / 10,000 test colour 32×32 pictures in 10 classes.",
        split=split,
        classes=CIFAR_CLASSES,
    )
    return as_image_set(images, labels, info)
