"""Worker processes: real `python -m flowlib.jobs.worker` subprocesses, stop / resume / kill -9, CLI Ctrl-C."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from flowlib import preset
from flowlib.config import TrainConfig
from flowlib.core.checkpoint import load_checkpoint, load_model
from flowlib.env import REPO_ROOT
from flowlib.jobs import worker
from flowlib.store.limits import Limits
from flowlib.store.request import RunRequest
from flowlib.store.runs import RunStore

pytestmark = pytest.mark.store_limits(stale_after_s=3.0, start_timeout_s=60)

REPO = REPO_ROOT
TINY = preset("faces-fast", levels=2, steps=1, hidden=4, permutation="reverse")


def _train(**kw):
    base = dict(dataset="faces", batch_size=8, max_steps=10, warmup_steps=5, log_every=2, eval_every=10**6,
                first_eval=0, eval_subset=40, samples_per_temperature=2, threads=1)
    return TrainConfig(**{**base, **kw})


def _wait_step(store, run_id, step, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = store.get_run(run_id)
        if run["status"] == "running" and run["step"] >= step:
            return run
        assert run["status"] in ("queued", "running"), run["message"]
        time.sleep(0.05)
    raise TimeoutError(f"run {run_id} did not reach step {step}")


def _gone(pid, timeout=10):
    """True once pid is no process of ours, not even a zombie."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            return True
        if state == "Z" and pid not in worker.running_processes():
            return False  # a zombie nobody will reap
        time.sleep(0.05)
    return False


@pytest.mark.slow
def test_worker_process_trains_to_the_end_and_is_reaped(store):
    run_id = store.create_run(RunRequest("w", TINY, _train()))
    pid = worker.start_run(store, run_id)
    run = worker.wait_for_run(store, run_id, timeout=90)
    assert run["status"] == "finished" and run["step"] == 10, run["message"]
    assert run["pid"] == pid
    assert "finished" in store.log_path(run_id).read_text()
    assert _gone(pid)


@pytest.mark.slow
def test_stop_then_resume_through_worker_processes(store):
    run_id = store.create_run(RunRequest("w", TINY, _train(max_steps=100000)))
    worker.start_run(store, run_id)
    _wait_step(store, run_id, 4)
    assert worker.stop_run(store, run_id) is True
    run = worker.wait_for_run(store, run_id, timeout=60)
    assert run["status"] == "stopped", run["message"]
    stopped_at = run["step"]
    ckpt = load_checkpoint(store.checkpoint_path(run_id))
    assert ckpt["step"] == stopped_at and ckpt["optimizer"]["state"]
    before = store.metrics(run_id, keys=["lr"])["lr"]
    worker.resume_run(store, run_id, max_steps=stopped_at + 6)
    run = worker.wait_for_run(store, run_id, timeout=90)
    assert run["status"] == "finished" and run["step"] == stopped_at + 6, run["message"]
    steps = store.metrics(run_id, keys=["train_bpd"])["train_bpd"]["step"]
    assert steps == sorted(set(steps)) and steps[-1] == stopped_at + 6   # one curve, no repeats
    after = store.metrics(run_id, keys=["lr"])["lr"]
    assert after["value"][:len(before["value"])] == before["value"]       # history intact
    assert [e["kind"] for e in store.events(run_id)].count("resume") == 1


@pytest.mark.slow
def test_kill_9_marks_the_run_lost_and_it_resumes_from_the_checkpoint(store):
    run_id = store.create_run(RunRequest("w", TINY, _train(max_steps=100000, checkpoint_every_minutes=0.005)))
    pid = worker.start_run(store, run_id)
    _wait_step(store, run_id, 6)
    os.kill(pid, signal.SIGKILL)
    run = worker.wait_for_run(store, run_id, statuses=("lost",), timeout=store.limits.stale_after_s + 5)
    assert "signal 9" in run["message"] or "no heartbeat" in run["message"]
    assert _gone(pid)
    model, ckpt = load_model(store.checkpoint_path(run_id))
    assert 0 <= ckpt["step"] <= run["step"]
    worker.resume_run(store, run_id, max_steps=ckpt["step"] + 4)
    run = worker.wait_for_run(store, run_id, timeout=90)
    assert run["status"] == "finished" and run["step"] == ckpt["step"] + 4, run["message"]


@pytest.mark.slow
def test_a_restarted_server_finds_a_killed_worker_lost_by_heartbeat(store):
    """No Popen handle in this process (as after a server restart): only the heartbeat can tell."""
    run_id = store.create_run(RunRequest("w", TINY, _train(max_steps=100000)))
    store.request_start(run_id)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-m", "flowlib.jobs.worker", str(run_id), "--runs-dir", str(store.root)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        _wait_step(store, run_id, 2)
        proc.kill()
        proc.wait()
        killed = time.monotonic()
        run = worker.wait_for_run(store, run_id, statuses=("lost",), timeout=store.limits.stale_after_s + 3)
        assert time.monotonic() - killed <= store.limits.stale_after_s + 3
        assert "no heartbeat" in run["message"] and "resume" in run["message"]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.slow
def test_cli_ctrl_c_stops_cleanly_with_a_checkpoint(tmp_path):
    runs = tmp_path / "runs"
    cmd = [sys.executable, "-m", "flowlib.train", "--preset", "faces-fast", "--dataset", "faces",
           "--levels", "2", "--flow-steps", "1", "--hidden", "4", "--permutation", "reverse",
           "--batch-size", "8", "--steps", "100000", "--threads", "1", "--eval-every", "1000000",
           "--first-eval", "0", "--runs-dir", str(runs), "--name", "headless"]
    proc = subprocess.Popen(cmd, cwd=str(REPO), env={**os.environ, "PYTHONPATH": str(REPO)},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    store = RunStore(runs, Limits())
    try:
        deadline = time.monotonic() + 60
        while not (store.list_runs() and store.list_runs()[0]["step"] >= 3):
            assert time.monotonic() < deadline and proc.poll() is None, proc.stderr.read() if proc.poll() is not None else ""
            time.sleep(0.05)
        run = store.list_runs()[0]
        assert run["name"] == "headless" and run["status"] == "running" and run["pid"] == proc.pid
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    run = store.get_run(run["id"])
    assert run["status"] == "stopped" and "checkpoint saved" in run["message"]
    assert load_checkpoint(store.checkpoint_path(run["id"]))["step"] == run["step"]
    assert "stopped" in err


@pytest.mark.slow
def test_three_queued_runs_with_one_slot_all_finish_with_no_app(store):
    """A study's queue moves on its own: each worker hands its slot to the next waiting run."""
    ids = [worker.submit(store, RunRequest(f"q{i}", TINY, _train(max_steps=6)), queue=True)
           for i in range(3)]
    assert [store.get_run(i)["status"] for i in ids[1:]] == ["waiting", "waiting"]
    assert store.get_run(ids[0])["status"] in ("queued", "running")
    runs = [worker.wait_for_run(store, i, timeout=120) for i in ids]
    assert [(r["status"], r["step"]) for r in runs] == [("finished", 6)] * 3, [r["message"] for r in runs]
    starts = [r["started"] for r in runs]
    ends = [r["ended"] for r in runs]
    assert starts == sorted(starts) and all(e <= s for e, s in zip(ends, starts[1:]))  # one at a time


def test_a_refused_submit_leaves_no_run_behind(store):
    first = worker.submit(store, RunRequest("first", TINY, _train(max_steps=100000)))
    with pytest.raises(worker.RunLimitError, match=rf"run {first} 'first'"):
        worker.submit(store, RunRequest("second", TINY, _train()))
    with pytest.raises(ValueError, match="batch_size"):
        worker.submit(store, RunRequest("bad", TINY, _train(batch_size=-1)), queue=True)
    assert [r["name"] for r in store.list_runs()] == ["first"]
    assert sorted(p.name for p in store.root.glob("run-*")) == [store.run_dir(first).name]
    worker.stop_run(store, first)
    assert worker.wait_for_run(store, first, timeout=60)["status"] == "stopped"


def test_a_run_that_cannot_be_launched_is_taken_back(store, monkeypatch):
    def no_process(store, run_id):
        raise OSError("no more processes")
    monkeypatch.setattr(worker, "_launch", no_process)
    with pytest.raises(OSError, match="no more processes"):
        worker.submit(store, RunRequest("x", TINY, _train()))
    assert store.list_runs() == []


def test_start_pressed_twice_with_one_submit_key_makes_and_launches_one_run(store, monkeypatch):
    launched = []
    monkeypatch.setattr(worker, "_launch_claimed", lambda store, run_id, watch=True: launched.append(run_id) or 1)
    first = worker.submit(store, RunRequest("a", TINY, _train(), owner="v"), submit_key="form-1")
    again = worker.submit(store, RunRequest("a", TINY, _train(), owner="v"), submit_key="form-1")
    assert again == first and launched == [first]
    assert [r["id"] for r in store.list_runs()] == [first]


def test_the_worker_process_trains_under_the_caps_the_server_recorded(tmp_path, capsys):
    root = tmp_path / "runs"
    store = RunStore(root, Limits())
    run_id = store.create_run(RunRequest("r", TINY, _train(max_steps=10)), status="queued")
    RunStore(root, Limits(max_steps=5)).publish_limits()     # the server restarted with a cap
    assert worker.main([str(run_id), "--runs-dir", str(root)]) == 1   # its own environment has none
    run = store.get_run(run_id)
    assert run["status"] == "failed" and "FLOWLAB_MAX_STEPS" in run["message"], run["message"]


@pytest.mark.slow
def test_cli_refused_by_a_busy_slot_leaves_no_run(tmp_path):
    runs = tmp_path / "runs"
    store = RunStore(runs, Limits())
    busy = store.create_run(RunRequest("busy", TINY, _train()), status="queued")
    cmd = [sys.executable, "-m", "flowlib.train", "--preset", "faces-fast", "--dataset", "faces",
           "--image-shape", "1,32,32", "--levels", "2", "--flow-steps", "1", "--hidden", "4",
           "--steps", "5", "--runs-dir", str(runs), "--name", "refused"]
    proc = subprocess.run(cmd, cwd=str(REPO), env={**os.environ, "PYTHONPATH": str(REPO)},
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and f"run {busy} 'busy'" in proc.stderr, proc.stderr
    assert [r["name"] for r in store.list_runs()] == ["busy"]


@pytest.mark.parametrize("column, stored, words", [
    ("train", '{"max_steps": 10, "batch_size": -4}', "has a stored setting that is not allowed: batch_size"),
    ("config", "{damaged", "is damaged: its stored model settings (config) is not readable"),
])
def test_the_worker_process_checks_the_stored_request_again_and_refuses_a_changed_row(store, capsys, column,
                                                                                     stored, words):
    """A row changed after its slot was claimed: the worker says so in words and trains nothing."""
    run_id = store.create_run(RunRequest("changed", TINY, _train()))
    store.request_start(run_id)
    store.transaction(lambda c: c.execute(f"UPDATE runs SET {column}=? WHERE id=?", (stored, run_id)))
    assert worker.main([str(run_id), "--runs-dir", str(store.root)]) == 1
    message = store.read(lambda c: c.execute("SELECT message FROM runs WHERE id=?", (run_id,)).fetchone()[0])
    assert message.startswith(f"Not started: run {run_id} 'changed' ") and words in message
    assert message in capsys.readouterr().out
    run = store.get_run(run_id)
    assert run["status"] == "failed" and run["step"] == 0 and run["started"] is None
    assert store.events(run_id, kinds=["error"])[-1]["message"] == message
    assert not store.checkpoint_path(run_id).exists() and store.metrics(run_id) == {}
