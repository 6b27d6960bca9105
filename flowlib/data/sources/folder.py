"""``folder``: any folder or zip of pictures, centre-cropped and resized to a square.

Pictures sorted into sub-folders (``cats/…``, ``dogs/…``) are labelled by them: label k is the
k-th sub-folder name in sorted order, the same for both splits. A folder (or zip) whose pictures
all sit in one wrapping folder is looked into, and pictures loose beside sub-folders mean
no labels at all.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from .common import (
    DatasetError,
    DatasetInfo,
    ImageSet,
    Progress,
    as_image_set,
    check_channels,
    check_size,
    seeded_split_indices,
    shown_path,
    user_path,
)
from .listing import skip_sentence
from .pixel_cache import preprocess_pictures


def no_pictures_error(root: Path, skipped: dict[str, int]) -> DatasetError:
    what = "zip" if root.is_file() else "Folder"
    if not sum(skipped.values()):
        return DatasetError(
            f"{what} {shown_path(root)} is empty. Put .png/.jpg pictures in it or pick another "
            f"{what.lower()}."
        )
    return DatasetError(
        f"{what} {shown_path(root)} has no readable images ({skip_sentence(skipped)}). Put "
        f".png/.jpg pictures in it or pick another {what.lower()}."
    )


def subfolder_labels(names: list[str]) -> tuple[np.ndarray | None, tuple[str, ...]]:
    """(labels [N], class names) from pictures' relative names: the first folder below what
    they all share. (None, ()) unless every picture has one and there are at least two."""
    parts = [PurePosixPath(name.replace("\\", "/")).parts[:-1] for name in names]
    if not parts:
        return None, ()
    shared = 0
    while all(len(p) > shared for p in parts) and len({p[shared] for p in parts}) == 1:
        shared += 1
    if not all(len(p) > shared for p in parts):
        return None, ()
    firsts = [p[shared] for p in parts]
    classes = tuple(sorted(set(firsts)))
    if len(classes) < 2:
        return None, ()
    index = {name: k for k, name in enumerate(classes)}
    return np.array([index[f] for f in firsts], dtype=np.int64), classes


def load_folder(
    split: str,
    path: Any = None,
    channels: int = 3,
    size: int = 32,
    progress: Progress | None = None,
) -> ImageSet:
    root = user_path(path, "'folder'")
    size, channels = check_size(size), check_channels(channels)
    images, names, skipped = preprocess_pictures(root, size, channels, None, progress)
    if len(images) == 0:
        raise no_pictures_error(root, skipped)
    keep = seeded_split_indices(len(images), split)
    labels, classes = subfolder_labels(names)
    shown = shown_path(root)
    info = DatasetInfo(
        name="folder",
        display_name=f"Your pictures ({root.name})",
        source=shown,
        count=len(keep),
        shape=(channels, size, size),
        licence=f"Your own pictures from {shown}; their licence is yours to check.",
        notes=(
            f"{len(images):,} usable pictures, {skip_sentence(skipped)}. Converted to "
            f"{'grayscale' if channels == 1 else 'RGB'} (transparency on white, 16-bit scaled "
            f"to 8-bit), centre-cropped to a square, resized to {size}×{size} with Lanczos. "
            "Fixed split: a seeded 10 % (seed 0) is held out for test."
            + (f" Labelled by sub-folder: {len(classes)} classes ({', '.join(classes[:6])}"
               f"{', …' if len(classes) > 6 else ''})." if classes else "")
        ),
        skipped=sum(skipped.values()),
        split=split,
        classes=classes,
    )
    return as_image_set(images[keep], None if labels is None else labels[keep], info, copy=False)
