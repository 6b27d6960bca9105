"""Storage faults, nothing lost and nobody let in: a runs.sqlite that is not ours, a
read-only runs folder, full disks at every write the trainer makes, deleted run folders, bad
checkpoints on resume, the server's minutes cap, sample paths, classroom model caps, and the
per-visitor queue cap. Each fault must end in one sentence, never a traceback."""

import errno
import io
import os
import random
import shutil
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

from flowlib import preset
from flowlib.cli import train as cli
from flowlib.config import TrainConfig
from flowlib.core.checkpoint import save_checkpoint
from flowlib.jobs import worker
from flowlib.settings import ConfigError
from flowlib.size import activation_mb
from flowlib.store.dbfile import APPLICATION_ID, RESERVE_BYTES, DatabaseFile, StoreUnavailableError
from flowlib.store.limits import Limits
from flowlib.store.request import RunRequest
from flowlib.store.runs import RunLimitError, RunStateError, RunStore
from flowlib.train.failures import describe_failure
from flowlib.train.loop import train_run
from tests.runs_kit import TINY
from tests.runs_kit import fault_train as _tc
from tests.runs_kit import queued_fault_run as _queued
from tests.store.old_stores import FIRST_TABLES

pytestmark = pytest.mark.store_limits(stale_after_s=3.0, start_timeout_s=60, db_timeout_s=1.0)


def _sidecars(root: Path):
    return sorted(p.name for p in root.iterdir() if p.name.startswith("runs.sqlite-"))


# -- a runs.sqlite that is not ours is refused before anything is written ----------------------
def test_random_bytes_in_place_of_runs_sqlite_are_refused_untouched(tmp_path):
    root = tmp_path / "runs"
    root.mkdir()
    junk = random.Random(17).randbytes(8192)
    (root / "runs.sqlite").write_bytes(junk)
    with pytest.raises(StoreUnavailableError, match="is not an SQLite database") as info:
        RunStore(root, Limits())
    assert info.value.reason == "damaged" and "\n" not in str(info.value)
    assert (root / "runs.sqlite").read_bytes() == junk and _sidecars(root) == []


def test_truncated_runs_sqlite_is_refused_untouched(tmp_path):
    root = tmp_path / "runs"
    store = RunStore(root, Limits())
    for i in range(200):
        store.create_run(RunRequest.from_dicts(f"r{i}", {}, {"max_steps": 1}))
    del store
    data = (root / "runs.sqlite").read_bytes()
    assert len(data) > 100_000 and _sidecars(root) == []       # checkpointed, WAL gone
    for keep in (len(data) // 2, 60):
        (root / "runs.sqlite").write_bytes(data[:keep])
        with pytest.raises(StoreUnavailableError, match="truncated|not an SQLite database") as info:
            RunStore(root, Limits())
        assert info.value.reason == "damaged"
        assert (root / "runs.sqlite").read_bytes() == data[:keep]


def test_another_programs_database_is_never_written(tmp_path):
    root = tmp_path / "runs"
    root.mkdir()
    db = root / "runs.sqlite"
    conn = sqlite3.connect(db)
    conn.executescript("CREATE TABLE users (id INTEGER PRIMARY KEY, email TEXT);"
                       "INSERT INTO users (email) VALUES ('a@example.org');")
    conn.close()
    before = db.read_bytes()
    assert before[18:20] == b"\x01\x01"                        # rollback journal, not WAL
    with pytest.raises(StoreUnavailableError, match=r"holds another program's tables \(users\)") as info:
        RunStore(root, Limits())
    assert info.value.reason == "foreign"
    assert db.read_bytes() == before and _sidecars(root) == []  # not switched to WAL, no tables added
    # a foreign application id is refused on the header alone
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA application_id=1234")
    conn.close()
    with pytest.raises(StoreUnavailableError, match="belongs to another program"):
        RunStore(root, Limits())


def test_our_own_store_gets_our_application_id_and_old_stores_still_open(tmp_path):
    store = RunStore(tmp_path / "new", Limits())
    with sqlite3.connect(store.db_path) as conn:
        assert conn.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID
    old = tmp_path / "old"                                     # written before the id existed
    old.mkdir()
    conn = sqlite3.connect(old / "runs.sqlite")
    conn.execute("PRAGMA journal_mode=WAL")
    conn.executescript(FIRST_TABLES)
    conn.close()
    assert RunStore(old, Limits()).list_runs() == []
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "runs.sqlite").write_bytes(b"")                   # SQLite's own empty database
    assert RunStore(empty, Limits()).list_runs() == []


def test_cli_refuses_a_foreign_database_in_one_sentence(tmp_path, capsys):
    root = tmp_path / "runs"
    root.mkdir()
    conn = sqlite3.connect(root / "runs.sqlite")
    conn.execute("CREATE TABLE photos (id INTEGER)")
    conn.close()
    before = (root / "runs.sqlite").read_bytes()
    rc = cli.main(["--runs-dir", str(root), "--dataset", "faces", "--steps", "5", "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith("error: The run database") and "photos" in err
    assert (root / "runs.sqlite").read_bytes() == before


# -- a read-only runs folder --------------------------------------------------------------------
@pytest.fixture
def read_only_dir(tmp_path):
    """A folder this process cannot write: chmod for a user, a read-only tmpfs for root."""
    folder = tmp_path / "ro"
    folder.mkdir()
    if os.geteuid() != 0:
        folder.chmod(0o555)
        yield folder
        folder.chmod(0o755)
        return
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(folder)],
                          capture_output=True)
    if done.returncode != 0:
        pytest.skip("cannot make a read-only folder here (root, and mount is not allowed)")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], capture_output=True)


def test_a_read_only_runs_folder_is_refused_in_one_sentence(read_only_dir, capsys):
    with pytest.raises(StoreUnavailableError, match="is read-only for this program") as info:
        RunStore(read_only_dir, Limits())
    assert info.value.reason == "read_only"
    rc = cli.main(["--runs-dir", str(read_only_dir), "--dataset", "faces", "--steps", "5", "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err and "is read-only for this program" in err


# -- full disks ---------------------------------------------------------------------------------
class _FullAfter(io.RawIOBase):
    """A file that takes ``room`` bytes, then fails every write with ENOSPC."""

    def __init__(self, room: int):
        self.room, self.n = room, 0

    def writable(self):
        return True

    def write(self, data):
        if self.n + len(data) > self.room:
            raise OSError(errno.ENOSPC, "No space left on device")
        self.n += len(data)
        return len(data)


def test_torch_unexpected_pos_on_a_full_disk_becomes_enospc_and_the_old_checkpoint_stays(tmp_path, monkeypatch):
    import torch

    import flowlib.fileio as fileio
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, {"w": torch.ones(10)})
    good = path.read_bytes()
    real_fdopen = os.fdopen

    def fdopen(fd, mode="r", *a, **k):
        real_fdopen(fd, mode, *a, **k).close()
        return io.BufferedWriter(_FullAfter(300))

    monkeypatch.setattr(fileio.os, "fdopen", fdopen)
    with pytest.raises(OSError) as info:
        save_checkpoint(path, {"w": torch.zeros(100_000)})
    assert info.value.errno == errno.ENOSPC                  # not RuntimeError: unexpected pos
    assert path.read_bytes() == good and sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt"]
    # and the trainer's words for torch's own error, with or without the OSError behind it
    try:
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError:
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598")
    except RuntimeError as exc:
        text = describe_failure(exc, "while saving the checkpoint at step 7", 8, 5)
    assert text.startswith("The disk is full (no space left on device) while saving the checkpoint at step 7.")
    assert "previous checkpoint (step 5) is intact" in text
    bare = describe_failure(RuntimeError("[enforce fail] unexpected pos 1 vs 2"), "while saving", 8, None)
    assert "disk may be full" in bare and "Traceback" not in bare


class _Conn:
    """A sqlite3 connection whose writes fail like a full disk while ``disk["full"]``."""

    def __init__(self, conn, disk):
        self._conn, self._disk = conn, disk

    def execute(self, sql, *args):
        if self._disk["full"] and sql.lstrip().upper().startswith(("BEGIN", "INSERT", "UPDATE", "DELETE")):
            if not self._disk["reserve"].exists():
                self._disk["full"] = False                    # the reserve's MiB made room
            else:
                raise sqlite3.OperationalError(self._disk["error"])
        return self._conn.execute(sql, *args)

    def __getattr__(self, name):
        return getattr(self._conn, name)


def _fill_disk(monkeypatch, store, error="database or disk is full"):
    disk = {"full": False, "reserve": store.reserve_path, "error": error}
    real_connect = RunStore._connect
    monkeypatch.setattr(RunStore, "_connect", lambda self: _Conn(real_connect(self), disk))
    monkeypatch.setattr(DatabaseFile, "free_bytes", lambda self: 0 if disk["full"] else 10**9)
    return disk


def test_a_disk_filling_under_training_ends_failed_disk_full_not_lost(store, monkeypatch):
    assert store.reserve_path.stat().st_size == RESERVE_BYTES
    disk = _fill_disk(monkeypatch, store)
    run_id = _queued(store, max_steps=100)

    def on_log(m):
        if m["step"] == 6:
            disk["full"] = True

    result = train_run(store, run_id, on_log=on_log)
    run = store.get_run(run_id)
    assert result.status == "failed" and run["status"] == "failed"
    assert run["message"] == result.message
    assert result.message.startswith("The disk is full (no space left on device) while training.")
    assert "previous checkpoint (step 0) is intact" in result.message and "Traceback" not in result.message
    assert not store.reserve_path.exists()                     # spent on the run's last words
    assert store.events(run_id, kinds=["error"])[-1]["message"] == result.message
    assert RunStore(store.root, store.limits).reserve_path.is_file()   # made again when there is room


def test_disk_full_at_resume_is_one_sentence_in_the_cli(store, monkeypatch, capsys):
    run_id = _queued(store, max_steps=4)
    assert train_run(store, run_id).status == "finished"
    disk = _fill_disk(monkeypatch, store, error="disk I/O error")
    disk["full"] = True                                        # the claim is not a last word: no reserve
    rc = cli.main(["--runs-dir", str(store.root), "--resume", str(run_id), "--steps", "8", "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err and "OperationalError" not in err
    assert err.strip().splitlines()[-1].startswith("error: The disk holding the run store is full")
    disk["full"] = False
    assert store.get_run(run_id)["status"] == "finished" and store.get_run(run_id)["step"] == 4


def test_a_disk_io_error_that_is_not_a_full_disk_says_so(store, monkeypatch):
    run_id = store.create_run(RunRequest.from_dicts("x", TINY.to_dict(), _tc()))
    disk = _fill_disk(monkeypatch, store, error="disk I/O error")
    disk["full"] = True
    monkeypatch.setattr(DatabaseFile, "free_bytes", lambda self: 10**9)
    with pytest.raises(StoreUnavailableError, match=r"could not be written \(disk I/O error\)") as info:
        store.request_start(run_id)
    assert info.value.reason == "io"


def test_the_worker_reports_a_store_it_cannot_open_in_words(tmp_path, capsys):
    root = tmp_path / "runs"
    root.mkdir()
    (root / "runs.sqlite").write_bytes(b"not a database at all" * 10)
    assert worker.main(["1", "--runs-dir", str(root)]) == 1
    out = capsys.readouterr().out
    assert "run 1: The run database" in out and "Traceback" not in out


@pytest.fixture
def tiny_disk(tmp_path):
    """A 16 MiB tmpfs (root only), so the disk really fills."""
    folder = tmp_path / "disk"
    folder.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(folder)], capture_output=True)
    if done.returncode != 0:
        pytest.skip("mounting a small tmpfs is not allowed here")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)


@pytest.mark.slow
def test_a_real_disk_filling_under_a_worker_process_reads_failed_disk_full(tiny_disk):
    store = RunStore(tiny_disk / "runs", Limits(stale_after_s=5.0, start_timeout_s=60))
    assert store.reserve_path.is_file()
    run_id = store.create_run(RunRequest.from_dicts(
        "full", TINY.to_dict(), _tc(max_steps=100000, checkpoint_every_minutes=0.002, log_every=1)))
    worker.start_run(store, run_id)
    deadline = time.monotonic() + 60
    while store.get_run(run_id)["step"] < 5:
        assert time.monotonic() < deadline and store.get_run(run_id)["status"] in ("queued", "running")
        time.sleep(0.1)
    with open(tiny_disk / "filler", "wb", buffering=0) as f:   # fill every byte that is left
        try:
            while True:
                f.write(b"\0" * (1 << 16))
                f.flush()
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
    run = worker.wait_for_run(store, run_id, timeout=60)
    assert run["status"] == "failed", run["message"]
    assert "disk is full" in run["message"].lower() or "disk holding the run store" in run["message"], run["message"]
    (tiny_disk / "filler").unlink()


# -- deleted folders, bad checkpoints -------------------------------------------------------------
def test_resume_of_a_run_whose_folder_was_deleted_is_refused_not_restarted(store, capsys):
    run_id = _queued(store, max_steps=10)
    assert train_run(store, run_id).status == "finished"
    curve = store.metrics(run_id, keys=["train_bpd"])
    shutil.rmtree(store.run_dir(run_id))
    store.update_train(run_id, TrainConfig.from_dict(_tc(max_steps=20)))
    with pytest.raises(RunStateError, match="cannot resume: its checkpoint .* is missing"):
        store.request_start(run_id)
    rc = cli.main(["--runs-dir", str(store.root), "--resume", str(run_id), "--steps", "20", "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err and "start a new run instead" in err
    # a trainer handed such a run anyway (the checkpoint vanished after the claim) refuses too
    store.run_dir(run_id).mkdir()
    store.write_mark(run_id)                                    # the store's own folder again
    (store.run_dir(run_id) / "checkpoint.pt").write_bytes(b"x")
    store.request_start(run_id)
    (store.run_dir(run_id) / "checkpoint.pt").unlink()
    result = train_run(store, run_id)
    assert result.status == "failed" and "mix two trainings in one curve" in result.message
    assert store.get_run(run_id)["step"] == 10
    assert store.metrics(run_id, keys=["train_bpd"]) == curve   # one training, one curve
    (store.run_dir(run_id) / "checkpoint.pt").write_bytes(b"x")
    store.request_start(run_id)
    shutil.rmtree(store.run_dir(run_id))                        # the whole folder, after the claim
    result = train_run(store, run_id)
    assert result.status == "failed" and "was deleted" in result.message and "intact" not in result.message
    assert store.metrics(run_id, keys=["train_bpd"]) == curve


def test_a_run_whose_folder_is_deleted_while_it_trains_says_so(store):
    run_id = _queued(store, max_steps=40)

    def on_log(m):
        if m["step"] == 4:
            shutil.rmtree(store.run_dir(run_id))

    result = train_run(store, run_id, on_log=on_log)
    assert result.status == "failed"
    assert "folder" in result.message and "was deleted" in result.message
    assert "intact" not in result.message


def test_describe_failure_claims_an_intact_checkpoint_only_when_asked():
    exc = OSError(errno.ENOSPC, "No space left on device")
    assert "intact" not in describe_failure(exc, "while training", 8, None)


def test_a_failed_resume_from_a_bad_checkpoint_keeps_the_stored_step(store):
    run_id = _queued(store, max_steps=10)
    assert train_run(store, run_id).status == "finished"
    store.checkpoint_path(run_id).write_bytes(b"garbage" * 100)
    store.update_train(run_id, TrainConfig.from_dict(_tc(max_steps=20)))
    store.request_start(run_id)
    result = train_run(store, run_id)
    assert result.status == "failed" and "checkpoint" in result.message
    run = store.get_run(run_id)
    assert run["status"] == "failed" and run["step"] == 10 and result.step == 10


# -- the server's minutes cap ---------------------------------------------------------------------
@pytest.mark.slow
def test_the_server_minutes_cap_ends_a_run_whatever_its_budget(tmp_path, monkeypatch):
    monkeypatch.setenv("FLOWLAB_MAX_MINUTES", "0.04")           # 2.4 s
    store = RunStore(tmp_path / "runs")
    assert store.limits.max_minutes == 0.04
    run_id = _queued(store, max_steps=10**6, log_every=5)       # a step budget only: no time limit of its own
    t0 = time.monotonic()
    result = train_run(store, run_id)
    took = time.monotonic() - t0
    assert result.status == "finished", result.message
    assert "this server's time cap of 0.04 minutes per run (FLOWLAB_MAX_MINUTES)" in result.message
    assert 0 < result.step < 10**6 and took < 30
    elapsed = store.metrics(run_id, keys=["elapsed_s"])["elapsed_s"]["value"]
    assert elapsed[-1] <= 2.4 + 1.0


# -- sample grids: paths relative to the run folder -----------------------------------------------
def test_sample_paths_are_stored_relative_and_a_copied_runs_folder_shows_its_own_grids(tmp_path):
    store = RunStore(tmp_path / "a", Limits())
    run_id = store.create_run(RunRequest.from_dicts("s", {}, {"max_steps": 1}))
    grid = store.run_dir(run_id) / "samples_step0000010.png"
    grid.write_bytes(b"png-a")
    store.add_samples(run_id, 10, grid)
    with sqlite3.connect(store.db_path) as conn:
        assert conn.execute("SELECT path FROM samples").fetchone()[0] == "samples_step0000010.png"
        # a row written by an older version: absolute
        conn.execute("INSERT INTO samples (run_id, step, wall, path) VALUES (?, 20, 0, ?)",
                     (run_id, str(store.run_dir(run_id) / "samples_step0000020.png")))
    (store.run_dir(run_id) / "samples_step0000020.png").write_bytes(b"png-a20")
    assert store.latest_samples(run_id)["path"] == str(store.run_dir(run_id) / "samples_step0000020.png")
    assert [Path(s["path"]).read_bytes() for s in store.samples(run_id)] == [b"png-a", b"png-a20"]
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    copy = RunStore(tmp_path / "b", Limits())
    for s in copy.samples(run_id):
        assert Path(s["path"]).parent == copy.run_dir(run_id) and Path(s["path"]).is_file()
    (copy.run_dir(run_id) / "samples_step0000020.png").write_bytes(b"png-b20")
    assert Path(copy.latest_samples(run_id)["path"]).read_bytes() == b"png-b20"
    assert copy.truncate_after(run_id, 10) == 0
    assert not (copy.run_dir(run_id) / "samples_step0000020.png").exists()
    assert (store.run_dir(run_id) / "samples_step0000020.png").exists()   # the original is untouched


# -- classroom caps on the model -------------------------------------------------------------------
def test_classroom_caps_the_model_size_and_activation_memory_naming_the_field(tmp_path, monkeypatch):
    monkeypatch.setenv("FLOWLAB_CLASSROOM", "1")
    store = RunStore(tmp_path / "runs")
    assert (store.limits.max_params, store.limits.max_activation_mb) == (3_000_000, 2048)
    glow = preset("glow").to_dict()
    with pytest.raises(ConfigError, match=r"44,153,712 parameters, above this server's limit of 3,000,000 "
                                          r"\(FLOWLAB_MAX_PARAMS\)") as info:
        worker.submit(store, RunRequest.from_dicts("big", glow, _tc(dataset="cifar10"), owner="v"))
    assert info.value.field == "hidden"
    wide = preset("realnvp").to_dict()
    with pytest.raises(ConfigError, match=r"batch_size 256 .* MB of activations.*FLOWLAB_MAX_ACTIVATION_MB") as info:
        store.create_run(RunRequest.from_dicts("wide", wide, _tc(dataset="cifar10", batch_size=256)))
    assert info.value.field == "batch_size"
    assert store.list_runs() == []                              # refused before anything was stored
    with pytest.raises(ConfigError) as info:
        store.limits.check_train(_tc(batch_size=512))
    assert info.value.field == "batch_size" and isinstance(info.value, ValueError)
    monkeypatch.setenv("FLOWLAB_MAX_PARAMS", "100000000")
    monkeypatch.setenv("FLOWLAB_MAX_ACTIVATION_MB", "100000")
    roomy = RunStore(tmp_path / "runs")
    assert roomy.create_run(RunRequest.from_dicts("big", glow, _tc(dataset="cifar10")))
    # the estimate is plain arithmetic, linear in the batch
    cfg = preset("mnist-fast")
    assert activation_mb(cfg, 128) == pytest.approx(2 * activation_mb(cfg, 64))


def test_outside_classroom_there_is_no_model_cap(store):
    assert store.create_run(RunRequest.from_dicts("big", preset("glow").to_dict(),
                                                  _tc(dataset="cifar10", batch_size=256)))


# -- the per-visitor queue cap ----------------------------------------------------------------------
def test_one_visitor_cannot_queue_unlimited_runs(tmp_path, monkeypatch):
    store = RunStore(tmp_path / "runs", Limits(max_waiting_per_owner=3))
    for i in range(3):
        store.create_run(RunRequest.from_dicts(f"w{i}", {}, {"max_steps": 1}, owner="v1"), status="waiting")
    with pytest.raises(RunLimitError, match=r"you already have 3 runs waiting or training; the limit is 3 "
                                            r"per visitor \(FLOWLAB_MAX_WAITING_PER_VISITOR\)"):
        store.create_run(RunRequest.from_dicts("w3", {}, {"max_steps": 1}, owner="v1"), status="waiting")
    with pytest.raises(RunLimitError, match="you already have 3"):
        store.check_queue_room("v1", 1)
    store.check_queue_room("v2", 3)
    with pytest.raises(RunLimitError, match="you already have 0 runs waiting or training; 4 more would make 4"):
        store.check_queue_room("v2", 4)
    store.check_queue_room(None, 100)                          # the CLI and the teacher: uncapped
    store.create_run(RunRequest.from_dicts("t", {}, {"max_steps": 1}), status="waiting")
    store.create_run(RunRequest.from_dicts("c", {}, {"max_steps": 1}, owner="v1"))   # created runs do not queue
    assert len([r for r in store.list_runs(owner="v1") if r["status"] == "waiting"]) == 3
    monkeypatch.setenv("FLOWLAB_CLASSROOM", "1")
    assert Limits.from_env().max_waiting_per_owner == 12
    monkeypatch.setenv("FLOWLAB_MAX_WAITING_PER_VISITOR", "5")
    assert Limits.from_env().max_waiting_per_owner == 5
    monkeypatch.delenv("FLOWLAB_CLASSROOM")
    monkeypatch.delenv("FLOWLAB_MAX_WAITING_PER_VISITOR")
    assert Limits.from_env().max_waiting_per_owner is None


def test_a_real_full_disk_at_checkpoint_save_and_at_resume(tiny_disk, capsys):
    import torch
    store = RunStore(tiny_disk / "runs", Limits())
    run_id = store.create_run(RunRequest.from_dicts("r", TINY.to_dict(), _tc()))
    path = store.checkpoint_path(run_id)
    save_checkpoint(path, {"w": torch.ones(10)})
    good = path.read_bytes()
    with open(tiny_disk / "filler", "wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * (1 << 16))
        except OSError:
            pass
    with pytest.raises(OSError) as info:                       # torch's "unexpected pos" underneath
        save_checkpoint(path, {"w": torch.zeros(1_000_000)})
    assert info.value.errno == errno.ENOSPC and path.read_bytes() == good
    rc = cli.main(["--runs-dir", str(store.root), "--resume", str(run_id), "--steps", "8", "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith("error: The disk holding the run store is full")
    assert store.get_run(run_id)["status"] == "created"           # reads still work on a full disk
    (tiny_disk / "filler").unlink()
