"""No server path in a sentence a page may show (issue #27, round three).

Messages of the run store, the trainer and the checkpoint loader reach the browser (a run's
message, its events, the error box of a page), in classroom mode too. They name a file by
its place in the runs folder (``run-00001/checkpoint.pt``, ``runs.sqlite``) or by its name,
never by the server's absolute path. Each test provokes one and looks for ``tmp_path``.
"""

import errno
import json
import os
import random

import pytest
import torch

from flowlib import env
from flowlib.config import TrainConfig
from flowlib.core.checkpoint import CheckpointError, load_checkpoint, load_model
from flowlib.store.dbfile import StoreUnavailableError
from flowlib.store.folders import MARK_NAME
from flowlib.store.limits import Limits
from flowlib.store.request import RunRequest
from flowlib.store.runs import RunStore
from flowlib.store.schema import SCHEMA_VERSION
from flowlib.train.checkpoints import Checkpoints
from flowlib.train.distributed import Dist
from flowlib.train.failures import describe_failure
from tests.runs_kit import TINY


def _clean(text: str, tmp_path) -> None:
    assert str(tmp_path) not in text and str(tmp_path.resolve()) not in text, text
    assert "/tmp" not in text, text


def _request(name="r"):
    return RunRequest(name, TINY, TrainConfig(dataset="faces", max_steps=10, batch_size=8))


def test_shown_path_is_relative_to_a_root_or_only_a_name(tmp_path):
    root = tmp_path / "runs"
    assert env.shown_path(root / "run-00001" / "checkpoint.pt", root) == "run-00001/checkpoint.pt"
    assert env.shown_path(tmp_path / "elsewhere" / "model.pt", root) == "model.pt"
    assert env.shown_path("relative/as/typed.pt") == "relative/as/typed.pt"
    assert env.shown_path(env.REPO_ROOT / "checkpoints" / "x.pt") == "checkpoints/x.pt"
    exc = PermissionError(errno.EACCES, "Permission denied", str(root / "run-00002" / "worker.log"))
    assert env.shown_error(exc, root) == "Permission denied: run-00002/worker.log"


def test_a_run_folder_left_by_another_store_is_named_by_its_folder_name(tmp_path):
    root = tmp_path / "runs"
    folder = root / "run-00001"
    folder.mkdir(parents=True)
    (folder / MARK_NAME).write_text(json.dumps({"store": "someone-else", "run": 1}))
    (folder / "checkpoint.pt").write_bytes(b"a stranger's checkpoint")
    store = RunStore(root, Limits())
    run_id = store.create_run(_request())
    [warning] = store.events(run_id, kinds=["warning"])
    assert "run-00001.set-aside-1" in warning["message"]
    _clean(warning["message"], tmp_path)


@pytest.mark.parametrize("damage", ["random", "truncated", "foreign", "newer"])
def test_a_bad_run_database_is_named_without_its_server_path(tmp_path, damage):
    root = tmp_path / "runs"
    if damage == "random":
        root.mkdir()
        (root / "runs.sqlite").write_bytes(random.Random(3).randbytes(4096))
    else:
        store = RunStore(root, Limits())
        for i in range(60):
            store.create_run(_request(f"r{i}"))
        del store
        db = root / "runs.sqlite"
        if damage == "truncated":
            for side in root.glob("runs.sqlite-*"):
                side.unlink()
            db.write_bytes(db.read_bytes()[:8192])
        else:
            data = bytearray(db.read_bytes())
            if damage == "foreign":
                data[68:72] = (0x1234).to_bytes(4, "big")
            else:
                data[60:64] = (SCHEMA_VERSION + 1).to_bytes(4, "big")
            db.write_bytes(bytes(data))
    with pytest.raises(StoreUnavailableError) as info:
        RunStore(root, Limits())
    assert "runs.sqlite" in str(info.value)
    _clean(str(info.value), tmp_path)
    assert info.value.path is not None and str(tmp_path) in info.value.path   # the server log keeps it


def test_a_read_only_or_full_runs_folder_is_named_without_its_path(tmp_path):
    store = RunStore(tmp_path / "runs", Limits())
    for exc in (OSError(errno.ENOSPC, "No space left on device", str(store.db_path)),
                OSError(errno.EROFS, "Read-only file system", str(store.db_path)),
                OSError(errno.EIO, "Input/output error", str(store.db_path))):
        error = store._file.os_unavailable(exc, "the run database runs.sqlite could not be read")
        _clean(str(error), tmp_path)


def test_a_missing_or_broken_checkpoint_is_named_by_its_run_folder(tmp_path):
    store = RunStore(tmp_path / "runs", Limits())
    run_id = store.create_run(_request())
    path = store.checkpoint_path(run_id)
    checkpoints = Checkpoints(path, run_id, TrainConfig(dataset="faces"), TINY, Dist())
    store.append_metrics(run_id, [(5, 1.0, "train_bpd", 3.0)])
    with pytest.raises(CheckpointError) as missing:
        checkpoints.refuse_lost(store)
    assert str(missing.value).startswith("run-00001/checkpoint.pt: this run trained")
    path.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError) as broken:
        checkpoints.read(torch.device("cpu"))
    assert str(broken.value).startswith("run-00001/checkpoint.pt: ")
    for exc in (missing.value, broken.value):
        _clean(str(exc), tmp_path)
        _clean(describe_failure(exc, "while loading the checkpoint"), tmp_path)


def test_checkpoint_loader_messages_name_the_file_not_its_server_path(tmp_path):
    for make in (lambda p: None, lambda p: p.write_bytes(b""), lambda p: p.write_bytes(b"PK junk")):
        path = tmp_path / "models" / "model.pt"
        path.parent.mkdir(exist_ok=True)
        path.unlink(missing_ok=True)
        make(path)
        for load in (load_checkpoint, load_model):
            with pytest.raises(CheckpointError) as info:
                load(path)
            assert str(info.value).startswith("model.pt: ")
            _clean(str(info.value), tmp_path)


def test_a_failed_file_write_is_described_without_the_server_path(tmp_path):
    where = str(tmp_path / "runs" / "run-00003" / "samples_step0000010.png")
    for exc in (PermissionError(errno.EACCES, "Permission denied", where),
                FileNotFoundError(errno.ENOENT, "No such file or directory", where),
                IsADirectoryError(errno.EISDIR, "Is a directory", where, None, where + ".tmp")):
        text = describe_failure(exc, "while saving samples")
        assert "samples_step0000010.png" in text
        _clean(text, tmp_path)


def test_an_unreadable_upload_or_cache_folder_is_named_without_the_server_path(tmp_path, monkeypatch):
    from flowlib.data.sources import listing
    from flowlib.data.sources.common import DatasetError, ensure_cache_dir, uploads_dir

    monkeypatch.setenv("FLOWLAB_CACHE_DIR", str(tmp_path / "cache"))
    upload = uploads_dir() / "0123abcd.zip"
    upload.parent.mkdir(parents=True)
    os.mkfifo(upload)                  # not a regular file: it is refused, not read
    with pytest.raises(DatasetError) as info:
        listing._list_zip(upload, "", listing.Listing())
    assert "your upload 0123abcd.zip" in str(info.value)
    _clean(str(info.value), tmp_path)
    (tmp_path / "blocker").write_text("a file where the cache folder should go")
    monkeypatch.setenv("FLOWLAB_CACHE_DIR", str(tmp_path / "blocker" / "cache"))
    with pytest.raises(DatasetError) as info:
        ensure_cache_dir()
    _clean(str(info.value), tmp_path)
