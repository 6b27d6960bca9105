"""torchrun on CPU (gloo, 2 processes) when a rank dies or stops answering: the store follows
the ranks. Rank 0 records a peer's death as the run's failure, and a rank that hangs (SIGSTOP)
turns into a failure in words within the heartbeat window, a pending Stop included; nothing
reads ``running`` or ``stopping`` for minutes while no step is made."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from flowlib.env import REPO_ROOT
from flowlib.store.limits import Limits
from flowlib.store.runs import RunStore
from tests.train.test_distributed import MODEL, TRAIN

STALE_S = 6.0          # seconds: the liveness window these jobs run under
KILL_STALE_S = 10.0    # for a killed rank: 6 s lost the race against gloo's error report on a loaded machine


def _start(runs_dir: Path, stale_s: float = STALE_S) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "flowlib.train", *MODEL, *TRAIN, "--steps", "1000000", "--runs-dir", str(runs_dir)]
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "FLOWLAB_HEARTBEAT_STALE_S": str(stale_s)}
    return subprocess.Popen(cmd, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)


def _children(pid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            except (FileNotFoundError, ProcessLookupError):
                continue
            if int(stat[1]) == pid:
                out.append(int(entry))
    return out


def _training(store: RunStore, proc: subprocess.Popen, steps: int = 4, timeout: float = 180) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        runs = store.list_runs()
        if runs and runs[0]["status"] == "running" and runs[0]["step"] >= steps:
            return runs[0]
        assert proc.poll() is None, proc.stdout.read()[-3000:]
        time.sleep(0.2)
    raise TimeoutError("the torchrun job did not start training")


def _rank1(proc: subprocess.Popen, rank0: int) -> int:
    ranks = [p for p in _children(proc.pid) if p != rank0]
    assert len(ranks) == 1, ranks
    return ranks[0]


def _settle(store: RunStore, run_id: int, timeout: float) -> dict:
    """The run once it has left running / stopping (TimeoutError naming where it is stuck)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = store.get_run(run_id)
        if run["status"] not in ("running", "stopping", "queued"):
            return run
        time.sleep(0.2)
    raise TimeoutError(f"run {run_id} is still {run['status']} after {timeout:.0f} s: {run['message']}")


def _end(proc: subprocess.Popen, *pids: int) -> str:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGCONT)
        except ProcessLookupError:
            pass
    try:
        out, _ = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
    return out or ""


@pytest.fixture
def store(tmp_path):
    return RunStore(tmp_path / "runs", Limits(stale_after_s=STALE_S))


def test_a_collective_broken_by_a_lost_rank_reads_as_that_and_nothing_else_does():
    from flowlib.train.distributed import is_peer_lost
    from flowlib.train.failures import PeerLost, describe_failure
    gloo = RuntimeError("[/pytorch/third_party/gloo/gloo/transport/tcp/pair.cc:537] Read error "
                        "[127.0.0.1]:57064: Connection reset by peer. This is typically caused by a remote worker")
    assert is_peer_lost(gloo) and is_peer_lost(torch.distributed.DistBackendError("NCCL error"))
    assert not is_peer_lost(RuntimeError("mat1 and mat2 shapes cannot be multiplied"))
    message = describe_failure(PeerLost(2, 14, gloo), "while training", 8, 10)
    assert message.startswith("Another process of this torchrun job (2 processes) ended or lost its connection "
                              "after step 14"), message
    assert "Connection reset by peer" in message and "pair.cc" not in message and "(step 10) is intact" in message


def test_kill_9_of_rank_1_is_recorded_by_rank_0_as_the_failure(tmp_path):
    store = RunStore(tmp_path / "runs", Limits(stale_after_s=KILL_STALE_S))
    proc = _start(store.root, KILL_STALE_S)
    rank1 = None
    try:
        run = _training(store, proc)
        rank1 = _rank1(proc, run["pid"])
        os.kill(rank1, signal.SIGKILL)
        killed = time.monotonic()
        ended = _settle(store, run["id"], timeout=KILL_STALE_S + 60)
        assert ended["status"] == "failed", ended["message"]
        assert "process" in ended["message"] and "torchrun" in ended["message"], ended["message"]
        assert "stopped responding" not in ended["message"]            # not "lost": rank 0 said why
        assert time.monotonic() - killed < KILL_STALE_S + 60
    finally:
        out = _end(proc, *(p for p in (rank1,) if p))
    assert proc.returncode != 0, out[-3000:]


def test_a_stopped_rank_turns_into_a_failure_and_a_stop_pressed_meanwhile_is_answered(store):
    proc = _start(store.root)
    rank1 = None
    try:
        run = _training(store, proc)
        rank1 = _rank1(proc, run["pid"])
        os.kill(rank1, signal.SIGSTOP)
        paused = time.monotonic()
        time.sleep(1.0)
        assert store.request_stop(run["id"])                           # Stop, while rank 1 hangs
        ended = _settle(store, run["id"], timeout=STALE_S + 60)
        assert ended["status"] == "failed", ended["message"]
        assert "Stop was asked" in ended["message"] and "stopped answering" in ended["message"], ended["message"]
        assert time.monotonic() - paused < STALE_S + 60
    finally:
        out = _end(proc, *(p for p in (rank1,) if p))
    assert proc.returncode != 0, out[-3000:]
