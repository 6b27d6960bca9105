"""torchrun on CPU (gloo, 2 processes): the same model as one process on the same global batches,
ActNorm started from the global batch on every rank, rank 0 alone writing, stop and resume."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from flowlib.checkpoint import load_checkpoint
from flowlib.layers import noise_shard, uniform_noise
from flowlib.store import RunStore

REPO = Path(__file__).resolve().parent.parent
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


def test_noise_shards_are_the_rows_one_process_would_draw():
    whole = uniform_noise((6, 2, 3), torch.Generator().manual_seed(3))
    parts = []
    for rank in range(3):
        with noise_shard(rank, 3):
            parts.append(uniform_noise((2, 2, 3), torch.Generator().manual_seed(3)))
    assert torch.equal(torch.cat(parts), whole)


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


def test_stop_and_resume_under_torchrun_continue_the_same_training(tmp_path):
    straight = _train(tmp_path / "one", "--steps", "8")
    first = _train(tmp_path / "two", "--steps", "4", procs=2)
    resumed = _train(tmp_path / "two", "--resume", "1", "--steps", "8", procs=2)
    for proc in (straight, first, resumed):
        assert proc.returncode == 0, proc.stderr[-2000:]
    assert _max_difference(_weights(tmp_path / "one"), _weights(tmp_path / "two")) < 1e-5


def test_a_batch_that_does_not_split_over_the_processes_is_refused_in_words(tmp_path):
    proc = _train(tmp_path / "runs", "--steps", "4", "--batch-size", "7", procs=2)
    assert proc.returncode != 0
    (run,) = RunStore(tmp_path / "runs").list_runs()
    assert run["status"] == "failed" and "does not split evenly over 2 processes" in run["message"]


ACTNORM_SCRIPT = textwrap.dedent("""
    import sys, torch
    from flowlib import distributed
    from flowlib.config import preset
    from flowlib.model import FlowModel
    out = sys.argv[1]
    d = distributed.from_env("cpu")
    torch.manual_seed(0)
    model = FlowModel(preset("faces-fast", levels=2, steps=1, hidden=4))
    x = torch.rand(16, 1, 32, 32, generator=torch.Generator().manual_seed(1)) - 0.5
    with torch.no_grad():
        model.initialize(x[distributed.shard_slice(16, d)])
    torch.save({k: v for k, v in model.state_dict().items() if "bias" in k or "log_scale" in k},
               f"{out}/rank{d.rank}.pt")
    torch.distributed.barrier()             # leave together (see flowlib.cli.main)
    torch.distributed.destroy_process_group()
""")


def test_actnorm_starts_from_the_global_batch_and_is_identical_on_every_rank(tmp_path):
    script = tmp_path / "init.py"
    script.write_text(ACTNORM_SCRIPT)
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           str(script), str(tmp_path)], cwd=REPO, capture_output=True, text=True, timeout=300,
                          env={**__import__("os").environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 0, proc.stderr[-2000:]
    r0, r1 = torch.load(tmp_path / "rank0.pt"), torch.load(tmp_path / "rank1.pt")
    assert r0.keys() == r1.keys() and any("actnorm" in k for k in r0)
    for k in r0:
        assert torch.equal(r0[k], r1[k]), k                     # every rank starts identical
    # ... and from the global batch: as one process initialised on all 16 images
    from flowlib.config import preset
    from flowlib.model import FlowModel
    torch.manual_seed(0)
    model = FlowModel(preset("faces-fast", levels=2, steps=1, hidden=4))
    x = torch.rand(16, 1, 32, 32, generator=torch.Generator().manual_seed(1)) - 0.5
    with torch.no_grad():
        model.initialize(x)
    whole = {k: v for k, v in model.state_dict().items() if k in r0}
    assert _max_difference(whole, r0) < 1e-5
    # (each rank initialising from its own 8 images alone would not be: the test can tell)
    torch.manual_seed(0)
    alone = FlowModel(preset("faces-fast", levels=2, steps=1, hidden=4))
    with torch.no_grad():
        alone.initialize(x[:8])
    assert _max_difference({k: v for k, v in alone.state_dict().items() if k in r0}, r0) > 1e-3
