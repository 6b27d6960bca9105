"""``celeba``: colour 3x32x32 faces from a local ``img_align_celeba`` folder or zip.

CelebA cannot be downloaded automatically (Google Drive quotas); the user brings the files.
"""

from __future__ import annotations

import io
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from flowlib.fileio import open_regular

from .common import (
    DatasetError,
    DatasetInfo,
    ImageSet,
    Progress,
    as_image_set,
    check_size,
    seeded_split_indices,
    shown_path,
    user_path,
)
from .folder import no_pictures_error
from .listing import skip_sentence
from .pixel_cache import preprocess_pictures

CELEBA_URL = "https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html"
CELEBA_CROP = 148  # the usual centre crop of the 178x218 aligned images before resizing
CELEBA_LICENCE = (
    "CelebA: Liu, Luo, Wang & Tang, ICCV 2015 (MMLAB, CUHK); non-commercial research use only."
)


def _celeba_root(path: Any) -> tuple[Path, Path | None]:
    """(img_align_celeba folder or zip, list_eval_partition.txt if present)."""
    given = user_path(path, "CelebA")
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
    try:
        handle = open_regular(partition_file)
    except OSError as exc:
        raise DatasetError(f"Cannot read {partition_file}: {exc}.") from None
    with io.TextIOWrapper(handle, encoding="ascii", errors="replace") as f:
        for line in f:
            fields = line.split()
            if len(fields) == 2 and fields[1] in "012":
                parts[fields[0]] = int(fields[1])
    return parts


def load_celeba(
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
    size = check_size(size)
    root, partition_file = _celeba_root(path)
    images, names, skipped = preprocess_pictures(root, size, 3, CELEBA_CROP, progress)
    if len(images) == 0:
        raise no_pictures_error(root, skipped)
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
            f"The {split} split of CelebA in {shown_path(root)} is empty per {partition_file.name}. "
            "Check that the partition file belongs to these images, or remove it."
        )
    info = DatasetInfo(
        name="celeba",
        display_name="CelebA faces (colour)",
        source=shown_path(root),
        count=len(keep),
        shape=(3, size, size),
        licence=CELEBA_LICENCE,
        notes=(
            f"Centre crop {CELEBA_CROP}×{CELEBA_CROP}, resized to {size}×{size} with Lanczos. "
            f"{split_note} {skip_sentence(skipped).capitalize()}."
        ),
        skipped=sum(skipped.values()),
        split=split,
    )
    return as_image_set(images[keep], None, info, copy=False)
