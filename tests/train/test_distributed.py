"""torchrun on CPU (gloo, 2 processes): the same model as one process on the same global batches
(ActNorm started from the same whole first batch on every rank, each rank's rows of the same
dequantisation noise), rank 0 alone writing, stop and resume."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from flowlib.core.checkpoint import load_checkpoint
from flowlib.env import REPO_ROOT
from flowlib.store.runs import RunStore

REPO = REPO_ROOT
MODEL = ["--preset", "faces-fast", "--dataset", "faces", "--levels", "2", "--flow-steps", "1", "--hidden", "4"]
TRAIN = ["--batch-size", "8", "--warmup-steps", "2", "--log-every", "2", "--eval-every", "1000000",
         "--first-eval", "0", "--eval-subset", "16", "--samples-per-temperature", "2", "--threads", "1", "--lr-schedule", "constant", "--quiet"]


def _train(runs_dir: Path, *extra: str, procs: int = 1) -> subprocess.CompletedProcess:
    launcher = ([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={procs}"]
                if procs > 1 else [sys.executable])
    model = [] if "--resume" in extra else MODEL      # a resumed run keeps its model and data
    cmd = launcher + ["-m", "flowlib.train", *model, *TRAIN, "--runs-dir", str(runs_dir), *extra]
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)


def _weights(runs_dir: Path, run_id: int = 1) -> dict:
    return load_checkpoint(RunStore(runs_dir).checkpoint_path(run_id))["model"]


def _max_difference(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max((a[k].double() - b[k].double()).abs().max().item() for k in a if a[k].is_floating_point())


@pytest.mark.slow
def test_two_processes_train_the_same_model_as_one_on_the_same_global_batches(tmp_path):
    one = _train(tmp_path / "one", "--steps", "6")
    two = _train(tmp_path / "two", "--steps", "6", procs=2)
    assert one.returncode == 0, one.stderr[-2000:]
    assert two.returncode == 0, two.stderr[-2000:]
    assert _max_difference(_weights(tmp_path / "one"), _weights(tmp_path / "two")) < 1e-5
    store = RunStore(tmp_path / "two")
    (run,) = store.list_runs()                         # rank 0 alone wrote the store: one run
    assert run["status"] == "finished" and run["step"] == 6
    start = next(e["message"] for e in store.events(run["id"]) if e["kind"] == "start")
    assert "× 2 processes" in start
    steps = store.metrics(run["id"], keys=["train_bpd"])["train_bpd"]["step"]
    assert steps == [2, 4, 6]                          # one curve, not one per rank
    # and the curve is the single process's (global-batch means of the loss)
    ref = RunStore(tmp_path / "one").metrics(1, keys=["train_bpd"])["train_bpd"]["value"]
    got = store.metrics(run["id"], keys=["train_bpd"])["train_bpd"]["value"]
    assert got == pytest.approx(ref, abs=1e-5)


@pytest.mark.slow
def test_stop_and_resume_under_torchrun_continue_the_same_training(tmp_path):
    straight = _train(tmp_path / "one", "--steps", "8")
    first = _train(tmp_path / "two", "--steps", "4", procs=2)
    resumed = _train(tmp_path / "two", "--resume", "1", "--steps", "8", procs=2)
    for proc in (straight, first, resumed):
        assert proc.returncode == 0, proc.stderr[-2000:]
    assert _max_difference(_weights(tmp_path / "one"), _weights(tmp_path / "two")) < 1e-5


@pytest.mark.slow
def test_a_batch_that_does_not_split_over_the_processes_is_refused_in_words(tmp_path):
    proc = _train(tmp_path / "runs", "--steps", "4", "--batch-size", "7", procs=2)
    assert proc.returncode != 0
    (run,) = RunStore(tmp_path / "runs").list_runs()
    assert run["status"] == "failed" and "does not split evenly over 2 processes" in run["message"]
