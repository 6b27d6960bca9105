"""The labels each source already has, and their names: what a class-conditional flow trains on."""

from __future__ import annotations

import io
import zipfile

import numpy as np
import pytest
from PIL import Image

from flowlib.data import class_names, load_images
from flowlib.data.sources.folder import subfolder_labels


@pytest.fixture(autouse=True)
def cache_in_tmp(tmp_path, monkeypatch):
    monkeypatch.setenv("FLOWLAB_CACHE_DIR", str(tmp_path / "cache"))


def test_mnist_labels_are_the_digits_and_named_so():
    test = load_images("mnist", "test")
    assert test.info.classes == tuple("0123456789") and class_names("mnist") == tuple("0123456789")
    assert int(test.labels[0]) == 7 and int(test.labels.max()) == 9


def test_faces_labels_are_the_40_people_in_both_splits():
    train, test = load_images("faces", "train"), load_images("faces", "test")
    assert train.info.classes == tuple(f"person {i}" for i in range(1, 41)) == test.info.classes
    assert sorted(set(train.labels.tolist()) | set(test.labels.tolist())) == list(range(40))
    counts = np.bincount(np.concatenate([train.labels.numpy(), test.labels.numpy()]))
    assert (counts == 10).all()      # ten photos of each person


def _png(value: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("L", (12, 12), value).save(buffer, format="PNG")
    return buffer.getvalue()


def test_a_folder_with_one_sub_folder_per_class_is_labelled_by_them(tmp_path):
    root = tmp_path / "animals"
    for k, name in enumerate(["dogs", "cats", "owls"]):
        (root / name).mkdir(parents=True)
        for i in range(4):
            (root / name / f"{i}.png").write_bytes(_png(40 * k + i))
    train = load_images("folder", "train", path=root, channels=1, size=8)
    test = load_images("folder", "test", path=root, channels=1, size=8)
    assert train.info.classes == ("cats", "dogs", "owls") == test.info.classes   # sorted: the same in both splits
    assert len(train) + len(test) == 12 and "Labelled by sub-folder: 3 classes" in train.info.notes
    both = np.concatenate([train.labels.numpy(), test.labels.numpy()])
    assert sorted(np.bincount(both).tolist()) == [4, 4, 4]
    # a picture's label is its folder's: the grey levels say which folder it came from
    for images, labels in ((train.images, train.labels), (test.images, test.labels)):
        folder_of = {0: "dogs", 1: "cats", 2: "owls"}
        for img, y in zip(images, labels):
            assert folder_of[int(img.float().mean()) // 40] == train.info.classes[int(y)]


def test_a_zip_wrapping_its_class_folders_in_one_folder_is_labelled_too(tmp_path):
    path = tmp_path / "pets.zip"
    with zipfile.ZipFile(path, "w") as archive:
        for name in ("a", "b"):
            for i in range(3):
                archive.writestr(f"pets/{name}/{i}.png", _png(10 + i))
    train = load_images("folder", "train", path=path, channels=1, size=8)
    assert train.info.classes == ("a", "b") and train.labels is not None


def test_pictures_without_class_folders_have_no_labels():
    assert subfolder_labels(["1.png", "2.png"]) == (None, ())
    assert subfolder_labels(["cats/1.png", "2.png"]) == (None, ())          # one loose picture: no labels
    assert subfolder_labels(["top/cats/1.png", "top/cats/2.png"]) == (None, ())   # a single class
    labels, names = subfolder_labels(["x/b/1.png", "x/a/2.png", "x/b/sub/3.png"])
    assert names == ("a", "b") and labels.tolist() == [1, 0, 1]
