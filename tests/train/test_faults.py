"""Faults on the training side: kills, full disks, locked databases, OOM, double clicks,
a start/stop soak, hostile config values and names, classroom caps."""

import errno
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from flowlib.config import TrainConfig
from flowlib.core.checkpoint import load_checkpoint, load_model, save_checkpoint
from flowlib.jobs import worker
from flowlib.store.limits import Limits
from flowlib.store.request import RunRequest
from flowlib.store.runs import RunLimitError, RunStateError, RunStore, StoreBusyError
from flowlib.train.collaborators import Collaborators
from flowlib.train.loop import train_run
from flowlib.train.step import batch_terms
from tests.runs_kit import TINY, wait_until
from tests.runs_kit import fault_train as _tc
from tests.runs_kit import queued_fault_run as _queued

pytestmark = pytest.mark.store_limits(stale_after_s=3.0, start_timeout_s=60, db_timeout_s=2.0)

def _tmp_files(folder: Path):
    return sorted(p.name for p in folder.glob(".*.tmp"))


def _wait(predicate, timeout=60.0, what="condition"):
    return wait_until(predicate, timeout, what, poll=0.02)


# -- kill -9 at random moments, including mid-checkpoint-write ---------------------------------
@pytest.mark.slow
def test_kill_9_at_random_moments_including_mid_checkpoint_write(store):
    rng = random.Random(8)
    run_id = store.create_run(RunRequest.from_dicts(
        "k", TINY.to_dict(), _tc(max_steps=100000, checkpoint_every_minutes=0.0005, log_every=1)))
    folder = store.run_dir(run_id)
    mid_write_hits = 0
    for round_ in range(3):
        pid = worker.start_run(store, run_id) if round_ == 0 else worker.resume_run(store, run_id)
        start_step = store.get_run(run_id)["step"]
        _wait(lambda: store.get_run(run_id)["status"] == "running" and store.get_run(run_id)["step"] >= start_step + 3,
              what="training to get going")
        time.sleep(rng.uniform(0, 0.3))
        deadline = time.monotonic() + (1.5 if round_ < 2 else 0)
        while time.monotonic() < deadline and not _tmp_files(folder):
            pass  # spin until a checkpoint write is in flight (a temp file exists), then kill
        before = store.metrics(run_id)
        mid_write = bool(_tmp_files(folder))
        os.kill(pid, signal.SIGKILL)
        run = worker.wait_for_run(store, run_id, statuses=("lost",), timeout=store.limits.stale_after_s + 5)
        mid_write_hits += mid_write and bool(_tmp_files(folder))
        # the last complete checkpoint loads; every metric row already written is still there
        model, ckpt = load_model(store.checkpoint_path(run_id))
        assert ckpt["step"] >= start_step                    # progress since the last resume was saved
        after = store.metrics(run_id)
        for key, curve in before.items():
            assert after[key]["step"][:len(curve["step"])] == curve["step"]
            assert after[key]["value"][:len(curve["value"])] == curve["value"]
        assert store.integrity_check() == "ok"
    ckpt_step = load_checkpoint(store.checkpoint_path(run_id))["step"]
    worker.resume_run(store, run_id, max_steps=ckpt_step + 5)
    run = worker.wait_for_run(store, run_id, timeout=90)
    assert run["status"] == "finished" and run["step"] == ckpt_step + 5, run["message"]
    steps = store.metrics(run_id, keys=["train_bpd"])["train_bpd"]["step"]
    assert steps == list(range(1, ckpt_step + 6))          # one clean curve after three kills
    assert _tmp_files(folder) == []                         # half-written temp files cleaned up
    print(f"kill -9 landed mid-checkpoint-write in {mid_write_hits} of 3 rounds")


# -- a SIGTERM while the failure is recorded ------------------------------------------------------
_SIGTERM_DURING_THE_RECORD = """
import os, signal, sys, threading
from flowlib.store.runs import RunStore
from flowlib.train.collaborators import Collaborators
from flowlib.train.loop import train_run
from flowlib.train.step import batch_terms

calls = 0


def sigterm_once_the_handler_is_gone():
    ours = signal.getsignal(signal.SIGTERM)       # the session's stop handler, installed now
    while signal.getsignal(signal.SIGTERM) is ours:
        pass
    os.kill(os.getpid(), signal.SIGTERM)          # as torchrun does when another rank dies


def terms(model, x, uniform):
    global calls
    calls += 1
    if calls < 3:
        return batch_terms(model, x, uniform)
    threading.Thread(target=sigterm_once_the_handler_is_gone, daemon=True).start()
    raise RuntimeError("a collective step failed (injected)")


result = train_run(RunStore(sys.argv[1]), int(sys.argv[2]), handle_signals=True,
                   collaborators=Collaborators(terms=terms))
print("returned", result.status, flush=True)
"""


def test_a_sigterm_as_the_session_fails_waits_until_the_failure_is_recorded(store):
    # CI saw it under torchrun: rank 1 was killed, torchrun sent rank 0 a SIGTERM at once, and
    # rank 0 died between its error event and its "failed", because the stop handler was put back
    # before the end was recorded; the store called the run lost 10 s later. Here the SIGTERM
    # comes the moment the handler is gone.
    from flowlib.env import REPO_ROOT
    run_id = _queued(store)
    proc = subprocess.run([sys.executable, "-c", _SIGTERM_DURING_THE_RECORD, str(store.root), str(run_id)],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
    run = store.get_run(run_id)
    assert run["status"] == "failed", (run["status"], run["message"], proc.stdout[-2000:], proc.stderr[-2000:])
    assert "injected" in run["message"] and run["step"] == 2
    assert proc.returncode == -signal.SIGTERM     # and the SIGTERM still ended the process


# -- disk full -----------------------------------------------------------------------------------
def _enospc(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_disk_full_while_saving_a_checkpoint_fails_the_run_and_keeps_the_previous_one(store, monkeypatch):
    saves = {"n": 0, "good": None}

    def save(path, payload):   # the real writer, on a disk that fills up after three checkpoints
        saves["n"] += 1
        if saves["n"] <= 3:
            save_checkpoint(path, payload)
            saves["good"] = (payload["step"], Path(path).read_bytes())
            return
        with monkeypatch.context() as m:
            m.setattr(torch, "save", _enospc)
            save_checkpoint(path, payload)

    run_id = _queued(store, checkpoint_every_minutes=0.0001)
    result = train_run(store, run_id, collaborators=Collaborators(write_checkpoint=save))
    good_step, good_bytes = saves["good"]
    assert result.status == "failed"
    assert "disk is full" in result.message and "while saving the checkpoint at step" in result.message
    assert f"previous checkpoint (step {good_step}) is intact" in result.message
    assert store.get_run(run_id)["message"] == result.message
    assert store.checkpoint_path(run_id).read_bytes() == good_bytes
    assert load_checkpoint(store.checkpoint_path(run_id))["step"] == good_step
    assert _tmp_files(store.run_dir(run_id)) == []
    assert store.events(run_id, kinds=["error"])[0]["message"] == result.message


def test_disk_full_while_saving_a_sample_grid_fails_the_run_and_keeps_the_checkpoint(store, monkeypatch):
    from PIL import Image
    run_id = _queued(store)
    monkeypatch.setattr(Image.Image, "save", _enospc)
    result = train_run(store, run_id)
    assert result.status == "failed"
    assert "disk is full" in result.message and "while saving the first sample grid" in result.message
    assert load_checkpoint(store.checkpoint_path(run_id))["step"] == 0     # the one after ActNorm init
    assert sorted(p.name for p in store.run_dir(run_id).iterdir()) == [".flowlab-run.json", "checkpoint.pt",
                                                                       "worker.log"]


# -- a locked database ----------------------------------------------------------------------------
def test_store_writes_retry_while_locked_then_give_up_with_a_bound(tmp_path):
    store = RunStore(tmp_path, Limits(db_timeout_s=0.3))
    run_id = store.create_run(RunRequest.from_dicts("x", {}, {"max_steps": 1}))
    blocker = sqlite3.connect(store.db_path, isolation_level=None, check_same_thread=False)
    blocker.execute("BEGIN EXCLUSIVE")
    timer = threading.Timer(0.15, lambda: blocker.execute("COMMIT"))
    timer.start()
    store.add_event(run_id, "warning", "written after the lock went away")   # retried, succeeds
    timer.join()
    blocker.execute("BEGIN EXCLUSIVE")
    t0 = time.monotonic()
    with pytest.raises(StoreBusyError, match="run store is busy: another process held the write lock of runs.sqlite"):
        store.add_event(run_id, "warning", "never")
    assert time.monotonic() - t0 < 3.0
    assert store.get_run(run_id)["name"] == "x"              # readers are not blocked (WAL)
    blocker.execute("COMMIT")
    blocker.close()
    assert [e["message"] for e in store.events(run_id)] == ["written after the lock went away"]


@pytest.mark.slow
def test_trainer_survives_a_database_locked_by_another_program(tmp_path):
    store = RunStore(tmp_path / "runs", Limits(db_timeout_s=0.2))
    run_id = _queued(store, max_steps=60, first_eval=0)
    lock_started, during = threading.Event(), []

    def hold_lock():
        conn = sqlite3.connect(store.db_path, isolation_level=None)
        conn.execute("BEGIN EXCLUSIVE")
        lock_started.set()
        time.sleep(1.5)
        conn.execute("COMMIT")
        conn.close()

    locker = threading.Thread(target=hold_lock)

    def on_log(m):
        if m["step"] == 4:
            locker.start()
            lock_started.wait()
        elif locker.is_alive():
            during.append(m["step"])
            time.sleep(0.05)

    result = train_run(store, run_id, on_log=on_log)
    locker.join()
    assert result.status == "finished", result.message
    assert during, "training kept going while the database was locked"
    steps = store.metrics(run_id, keys=["train_bpd"])["train_bpd"]["step"]
    assert steps == list(range(2, 61, 2))                    # rows buffered during the lock, none lost


# -- out of memory --------------------------------------------------------------------------------
CUDA_OOM = lambda: torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
# What torch's CPU allocator raises when malloc fails (its words, verbatim)
CPU_OOM = lambda: RuntimeError(
    "[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: can't allocate memory: you tried to "
    "allocate 2147483648 bytes. Error code 12 (Cannot allocate memory)")


def _oom_when(fails, error=CUDA_OOM) -> Collaborators:
    """A session whose forward pass raises an out-of-memory error (CUDA's unless ``error`` makes
    another) when fails(call, batch)."""
    calls = {"n": 0}

    def maybe_oom(model, x, uniform):
        calls["n"] += 1
        if fails(calls["n"], x.shape[0]):
            raise error()
        return batch_terms(model, x, uniform)

    return Collaborators(terms=maybe_oom)


@pytest.mark.parametrize("error", [CUDA_OOM, CPU_OOM, lambda: MemoryError(), lambda: RuntimeError("std::bad_alloc")])
def test_every_allocation_failure_reads_as_out_of_memory_and_nothing_else_does(error):
    from flowlib.train.oom import is_out_of_memory
    assert is_out_of_memory(error())
    assert not is_out_of_memory(RuntimeError("mat1 and mat2 shapes cannot be multiplied"))
    assert not is_out_of_memory(ValueError("can't allocate memory"))    # only the allocator's errors


def test_a_cpu_allocation_failure_searches_a_batch_and_offers_to_resume_with_it(store):
    run_id = _queued(store, lr_schedule="constant")
    result = train_run(store, run_id, collaborators=_oom_when(lambda call, batch: call >= 3 and batch > 4, CPU_OOM))
    assert result.status == "failed" and result.step == 2
    assert result.message.startswith("Out of memory at step 3 with batch size 8. A step with batch size 4 fits "
                                     "on this cpu"), result.message
    assert "can't allocate memory" not in result.message                 # words, not the raw message
    assert store.metrics(run_id, keys=["oom_fitting_batch"])["oom_fitting_batch"]["value"] == [4.0]


@pytest.mark.slow
def test_out_of_memory_names_the_batch_that_fits_and_keeps_every_step(store):
    # Steps 1-4 train at batch 8; from step 5 on, more than 2 images do not fit.
    oom = _oom_when(lambda call, batch: call >= 5 and batch > 2)
    # no warm-up: it fits each budget (10 % of it), so a 4-step run would warm up faster
    run_id = _queued(store, lr_schedule="constant", warmup_steps=0)
    result = train_run(store, run_id, collaborators=oom)
    assert result.status == "failed" and result.step == 4
    assert result.message.startswith("Out of memory at step 5 with batch size 8. A step with batch "
                                     "size 2 fits"), result.message
    assert "checkpoint (step 4) is intact" in result.message
    assert "Traceback" not in result.message and "OutOfMemoryError" in store.log_path(run_id).read_text()
    ckpt = load_checkpoint(store.checkpoint_path(run_id))
    assert ckpt["step"] == 4                                  # nothing trained is lost
    assert store.metrics(run_id, keys=["oom_fitting_batch"])["oom_fitting_batch"]["value"] == [2.0]
    # the probe changed nothing: the saved weights are those of an uninterrupted 4-step run
    ref = _queued(store, max_steps=4, lr_schedule="constant", warmup_steps=0)
    assert train_run(store, ref).status == "finished"
    ref_model = load_checkpoint(store.checkpoint_path(ref))["model"]
    for key, value in ref_model.items():
        assert torch.equal(value, ckpt["model"][key]), key
    # and the run resumes from step 4 with the batch that fits, in a worker process of its own
    worker.resume_run(store, run_id, batch_size=2)
    assert store.get_run(run_id)["train"]["batch_size"] == 2
    run = worker.wait_for_run(store, run_id, timeout=120)
    assert run["status"] == "finished" and run["step"] == 30, run["message"]
    assert "resumed from the checkpoint at step 4" in store.events(run_id, kinds=["resume"])[-1]["message"]


def _cpu_allocation_failure() -> str:
    """What torch's CPU allocator raises when it gets no memory, from a real failure in a child
    process whose address space is capped 512 MB above what it already uses."""
    code = ("import resource, torch\n"
            "vm = int(open('/proc/self/statm').read().split()[0]) * resource.getpagesize()\n"
            "resource.setrlimit(resource.RLIMIT_AS, (vm + 512 * 1024**2, resource.RLIM_INFINITY))\n"
            "try:\n    torch.empty(4 * 1024**3, dtype=torch.uint8)\n"
            "except RuntimeError as exc:\n    print(type(exc).__name__, '|', exc)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    kind, _, message = out.stdout.strip().partition(" | ")
    assert kind == "RuntimeError" and message, out.stdout + out.stderr
    return message


def test_a_cpu_allocation_failure_is_out_of_memory_too(store):
    # A probe: on the CPU, "DefaultCPUAllocator: can't allocate memory" ended the run with a raw
    # message, no batch search and no "Resume with batch N".
    message = _cpu_allocation_failure()
    oom = _oom_when(lambda call, batch: call >= 5 and batch > 2, lambda: RuntimeError(message))
    result = train_run(store, _queued(store, lr_schedule="constant"), collaborators=oom)
    assert result.status == "failed" and result.step == 4
    assert result.message.startswith("Out of memory at step 5 with batch size 8. A step with batch "
                                     "size 2 fits"), result.message


def test_out_of_memory_when_not_even_one_image_fits_says_so(store):
    result = train_run(store, _queued(store), collaborators=_oom_when(lambda call, batch: call >= 3))
    assert result.status == "failed" and result.step == 2
    assert "Not even a batch of 1 fits" in result.message and "too large" in result.message


# -- double clicks --------------------------------------------------------------------------------
@pytest.mark.slow
def test_two_starts_in_the_same_second_start_one_run_and_stop_twice_is_harmless(store):
    a = store.create_run(RunRequest.from_dicts("a", TINY.to_dict(), _tc(max_steps=100000)))
    b = store.create_run(RunRequest.from_dicts("b", TINY.to_dict(), _tc(max_steps=100000)))
    barrier, outcomes = threading.Barrier(4), []

    def click(run_id):
        barrier.wait()
        try:
            outcomes.append(("started", run_id, worker.start_run(store, run_id)))
        except (RunLimitError, RunStateError) as exc:
            outcomes.append(("refused", run_id, str(exc)))

    threads = [threading.Thread(target=click, args=(r,)) for r in (a, b, a, b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    started = [o for o in outcomes if o[0] == "started"]
    assert len(started) == 1, outcomes
    (_, run_id, pid), = started
    assert all(("Another run is training" in o[2]) or ("already" in o[2]) for o in outcomes if o[0] == "refused")
    assert [r["id"] for r in store.list_runs() if r["status"] in ("queued", "running")] == [run_id]
    _wait(lambda: store.get_run(run_id)["status"] == "running", what="worker up")
    assert worker.stop_run(store, run_id) is True
    assert worker.stop_run(store, run_id) is False
    run = worker.wait_for_run(store, run_id, timeout=60)
    assert run["status"] == "stopped", run["message"]
    assert worker.stop_run(store, run_id) is False               # a third press after it stopped
    assert store.get_run(run_id)["status"] == "stopped"


# -- soak -----------------------------------------------------------------------------------------
def _zombie_children():
    me, out = str(os.getpid()), []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            except (FileNotFoundError, ProcessLookupError):
                continue
            if fields[1] == me and fields[0] == "Z":
                out.append(int(entry))
    return out


@pytest.mark.slow
def test_soak_many_runs_started_and_stopped_leave_no_zombies_fds_or_damage(tmp_path):
    n = int(os.environ.get("FLOWLAB_SOAK_RUNS", "50"))
    store = RunStore(tmp_path / "runs", Limits(max_concurrent=2, start_timeout_s=120))
    ids = [store.create_run(RunRequest.from_dicts(f"soak {i}", TINY.to_dict(), _tc(max_steps=100000)))
           for i in range(n)]
    fds_before = len(os.listdir("/proc/self/fd"))
    for run_id in ids:
        while True:
            try:
                worker.start_run(store, run_id)
                break
            except RunLimitError:          # two already in flight: wait for a slot, like a user would
                time.sleep(0.05)
        assert worker.stop_run(store, run_id) is True
    for run_id in ids:
        run = worker.wait_for_run(store, run_id, timeout=120)
        assert run["status"] == "stopped", run["message"]
    _wait(lambda: not worker.running_processes(), timeout=30, what="workers to exit")
    time.sleep(0.2)
    assert _zombie_children() == []
    assert len(os.listdir("/proc/self/fd")) <= fds_before
    assert store.integrity_check() == "ok"
    assert len(store.list_runs()) == n


# -- config values and names ----------------------------------------------------------------------
@pytest.mark.parametrize("field, value", [
    ("batch_size", -1), ("batch_size", 0), ("batch_size", 10**9), ("batch_size", "64"), ("batch_size", 8.0),
    ("batch_size", True), ("lr", float("nan")), ("lr", float("inf")), ("lr", 0), ("lr", -1e-3), ("lr", 5.0),
    ("lr", "0.001"), ("max_steps", 0), ("max_steps", -5), ("max_steps", 10**12), ("max_minutes", float("nan")),
    ("max_minutes", -1.0), ("warmup_steps", -1), ("grad_clip", 0), ("grad_clip", float("nan")),
    ("eval_every", 0), ("log_every", 0), ("eval_subset", 0), ("epoch_size", 0), ("nan_patience", 0),
    ("lr_drop", 1.0), ("lr_drop", 0), ("checkpoint_every_minutes", 0), ("sample_temperatures", (float("nan"),)),
    ("sample_temperatures", ()), ("sample_temperatures", (5.0,)), ("samples_per_temperature", 10**6),
    ("device", "tpu"), ("device", "cuda:x"), ("bf16", "yes"), ("threads", 0), ("seed", -1), ("seed", 2**40),
    ("dataset", "../etc"), ("dataset_options", {"path": float("nan")}), ("dataset_options", []),
])
def test_bad_config_values_are_refused_naming_field_range_and_value(field, value):
    with pytest.raises(ValueError) as info:
        TrainConfig(**_tc(**{}) | {field: value})
    text = str(info.value)
    assert field in text and "got" in text


def test_bad_configs_are_refused_by_start_before_any_process_exists(store):
    bad_train = {**_tc(), "batch_size": -4}
    bad_model = {**TINY.to_dict(), "hidden": float("nan")}
    for config, train, match in ((TINY.to_dict(), bad_train, "batch_size must be an integer in 1..4096, got -4"),
                                 (bad_model, _tc(), "hidden must be an integer")):
        run_id = store.create_run(RunRequest.from_dicts("bad", TINY.to_dict(), _tc()))
        store.transaction(lambda c: c.execute(            # values no form or request could hold
            "UPDATE runs SET config=?, train=? WHERE id=?", (json.dumps(config), json.dumps(train), run_id)))
        with pytest.raises(ValueError, match=match):
            worker.start_run(store, run_id)
        assert store.get_run(run_id)["status"] == "created" and not worker.running_processes()


def test_hostile_run_names_stay_labels_and_never_become_paths(tmp_path):
    root = tmp_path / "runs"
    store = RunStore(root, Limits())
    hostile = ["../../evil", "/etc/passwd", "a/b/../c", "x\x00y", "n" * 10000, "..\\..\\win", "\n\r\t", "...."]
    ids = [store.create_run(RunRequest.from_dicts(name, {}, {"max_steps": 1})) for name in hostile]
    for run_id in ids:
        name = store.get_run(run_id)["name"]
        assert len(name) <= 80 and "/" not in name and "\\" not in name and "\x00" not in name and ".." not in name
        assert store.run_dir(run_id).parent == root
    assert sorted(os.listdir(tmp_path)) == ["runs"]
    assert sorted(p.name for p in root.iterdir() if p.is_dir()) == [f"run-{i:05d}" for i in ids]
    store.delete_run(ids[0])
    assert sorted(os.listdir(tmp_path)) == ["runs"] and len(list(root.glob("run-*"))) == len(ids) - 1
    with pytest.raises((ValueError, KeyError)):
        store.run_dir("../x")
    long_owner = store.create_run(RunRequest.from_dicts("o", {}, {"max_steps": 1}, owner="v" * 5000))
    assert len(store.get_run(long_owner)["owner"]) == 200


def test_classroom_caps_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("FLOWLAB_CLASSROOM", "1")
    monkeypatch.setenv("FLOWLAB_MAX_STEPS", "100")
    monkeypatch.setenv("FLOWLAB_MAX_BATCH", "32")
    monkeypatch.setenv("FLOWLAB_MAX_CONCURRENT", "2")
    store = RunStore(tmp_path / "runs")
    assert (store.limits.classroom, store.limits.max_steps, store.limits.max_batch,
            store.limits.max_concurrent) == (True, 100, 32, 2)
    with pytest.raises(ValueError, match="max_steps 1000 is above this server's limit of 100 .*FLOWLAB_MAX_STEPS"):
        store.create_run(RunRequest.from_dicts("big", {}, _tc(max_steps=1000)))
    with pytest.raises(ValueError, match="batch_size 64 is above .* 32 .*FLOWLAB_MAX_BATCH"):
        store.create_run(RunRequest.from_dicts("big", {}, _tc(batch_size=64)))
    with pytest.raises(ValueError, match="step budget"):
        store.create_run(RunRequest.from_dicts("forever", {}, _tc(max_steps=None, max_minutes=5.0)))
    ids = [store.create_run(RunRequest.from_dicts(f"s{i}", {}, _tc(max_steps=100), owner=f"visitor-{i}"))
           for i in range(3)]
    store.request_start(ids[0], "visitor-0")
    store.request_start(ids[1], "visitor-1")
    with pytest.raises(RunLimitError, match="the limit is 2"):
        store.request_start(ids[2], "visitor-2")
    for call in (store.rename_run, store.delete_run):
        with pytest.raises(PermissionError):
            call(ids[2], *(["x"] if call == store.rename_run else []), owner="visitor-0")
    store.delete_run(ids[2], owner="visitor-2")
    monkeypatch.setenv("FLOWLAB_MAX_STEPS", "50")        # caps tightened after the run was made
    stricter = RunStore(tmp_path / "runs")
    stricter.finish_run(ids[0], "stopped", "x")
    with pytest.raises(ValueError, match="limit of 50"):
        stricter.request_start(ids[0])
    monkeypatch.setenv("FLOWLAB_MAX_CONCURRENT", "zero")
    with pytest.raises(ValueError, match="FLOWLAB_MAX_CONCURRENT must be an integer"):
        RunStore(tmp_path / "runs")
