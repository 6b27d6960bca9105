"""``folder``: any folder or zip of pictures, centre-cropped and resized to a square."""

from __future__ import annotations

from pathlib import Path
from typing import Any

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
        ),
        skipped=sum(skipped.values()),
        split=split,
    )
    return as_image_set(images[keep], None, info, copy=False)
