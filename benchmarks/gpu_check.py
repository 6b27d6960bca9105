"""Everything worth knowing about a CUDA machine, in one run of under 8 minutes.

    python -m benchmarks.gpu_check OUT_DIR          # on a GPU machine (or OUT_DIR from $OUT)
    python -m benchmarks.gpu_check OUT_DIR --cpu-dry-run   # the same steps, tiny, on the CPU

Writes under OUT_DIR (each step's output in its own file, and ``summary.md`` last):

1. ``tests.txt``      the suite's CUDA-marked tests (``pytest -m cuda``)
2. ``bench.md``       the benchmark table on CUDA (images/s, ms per 64-sample grid, peak memory)
3. ``peak.md``        the share of the GPU's own matmul peak a training step reaches, float32
                      and bf16 networks, for the demo shape, mnist-fast and the MNIST demo shape
                      (``benchmarks/peak.py``; ``peak.json`` has every column)
4. ``mnist_run.txt``  a fixed-time MNIST run (mnist-fast, 3 minutes): test bits/dim against
                      wall time, read back from the run store
5. ``worker.txt``     a run started through ``flowlib.jobs.worker`` and read back from the store
6. ``torchrun.txt``   a 2-process ``torchrun`` smoke run, if the machine has 2 or more GPUs
                      and the trainer supports it (``--help`` mentions torchrun)
7. ``train_page.txt`` the Train page through AppTest: the sidebar's device and GPU lines, the
                      form's default batch size, the time estimate
8. ``oom.txt``        a run with a batch far too large for the GPU: it must fail with a
                      message naming the batch size that fits (CUDA only)

Every step has its own time limit and a failure is written down, not raised, so one broken
step never hides the others. No number here is a claim until it came from a CUDA machine:
``--cpu-dry-run`` exists to try the script, and its summary says so on its first line.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _run(cmd: list[str], out: Path, timeout: float, env: dict | None = None) -> tuple[int, float]:
    """Run ``cmd`` with stdout+stderr into ``out``; (exit code, seconds). 124 on time-out."""
    start = time.monotonic()
    with open(out, "w") as f:
        f.write("$ " + " ".join(cmd) + "\n")
        f.flush()
        try:
            code = subprocess.run(cmd, cwd=REPO, stdout=f, stderr=subprocess.STDOUT,
                                  timeout=timeout, env=env).returncode
        except subprocess.TimeoutExpired:
            f.write(f"\n[gpu_check] timed out after {timeout:g} s\n")
            code = 124
    return code, time.monotonic() - start


def _read_run(runs_dir: Path) -> dict:
    """The newest run of a store, with its test bits/dim curve against training time."""
    from flowlib.store.runs import RunStore
    store = RunStore(runs_dir)
    runs = store.list_runs()
    if not runs:
        return {"error": "no run in the store"}
    run = runs[0]
    m = store.metrics(run["id"], keys=["test_bpd", "test_bpd_full", "elapsed_s", "images_per_s"])
    curve = []
    if "test_bpd" in m and "elapsed_s" in m:
        import numpy as np
        secs = np.interp(m["test_bpd"]["step"], m["elapsed_s"]["step"], m["elapsed_s"]["value"])
        curve = [(int(s), round(float(t), 1), round(float(v), 4))
                 for s, t, v in zip(m["test_bpd"]["step"], secs, m["test_bpd"]["value"])]
    speed = m.get("images_per_s", {}).get("value", [])
    return {"id": run["id"], "status": run["status"], "message": run["message"], "step": run["step"],
            "config": run["config"], "train": run["train"],
            "test_bpd_full": (m.get("test_bpd_full", {}).get("value") or [None])[-1],
            "median_images_per_s": sorted(speed)[len(speed) // 2] if speed else None,
            "curve_step_seconds_bpd": curve}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", nargs="?", default=os.environ.get("OUT"),
                        help="output folder (default $OUT)")
    parser.add_argument("--cpu-dry-run", action="store_true",
                        help="run every step tiny on the CPU, to try the script without a GPU")
    parser.add_argument("--minutes", type=float, default=3.0, help="length of the MNIST run")
    args = parser.parse_args(argv)
    if not args.out:
        parser.error("give an output folder (or set $OUT)")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    import torch
    cuda = torch.cuda.is_available()
    if not cuda and not args.cpu_dry_run:
        (out / "summary.md").write_text("No CUDA device is visible to torch here: nothing measured. "
                                        "Use --cpu-dry-run to try the script on the CPU.\n")
        print("no CUDA device; see --cpu-dry-run", file=sys.stderr)
        return 2
    device = "cuda" if cuda and not args.cpu_dry_run else "cpu"
    py = sys.executable
    lines = []
    if device == "cpu":
        lines.append("**CPU dry run: these figures say nothing about a GPU.**\n")
    else:
        props = torch.cuda.get_device_properties(0)
        lines.append(f"GPU: {props.name}, {props.total_memory / 2**30:.0f} GiB, "
                     f"{torch.cuda.device_count()} device(s); torch {torch.__version__}\n")

    code, secs = _run([py, "-m", "pytest", "-m", "cuda", "-q", "-p", "no:cacheprovider"],
                      out / "tests.txt", timeout=150)
    tail = (out / "tests.txt").read_text().strip().splitlines()[-1:]
    lines.append(f"1. CUDA tests: exit {code} in {secs:.0f} s: {' '.join(tail)}")

    bench = [py, "-m", "benchmarks.run", "--markdown", "--device", device, "--repeats", "5"]
    if device == "cpu":
        bench += ["--only", "mnist-fast-b64", "--repeats", "2"]
    code, secs = _run(bench, out / "bench.md", timeout=150)
    lines.append(f"2. benchmark table: exit {code} in {secs:.0f} s (bench.md)")

    peak = [py, "-m", "benchmarks.peak", "--device", device, "--json", str(out / "peak.json")]
    if device == "cpu":
        peak += ["--only", "mnist-fast", "--precision", "float32", "--warmup", "0", "--repeats", "1",
                 "--profile-steps", "0"]
    code, secs = _run(peak, out / "peak.md", timeout=240)
    shares = ""
    if (out / "peak.json").exists():
        rows = json.loads((out / "peak.json").read_text())["rows"]
        shares = "; ".join(f"{r['shape']} {r['precision']} {100 * r['share']:.0f} %" for r in rows)
    lines.append(f"3. share of peak: exit {code} in {secs:.0f} s: {shares or 'no rows'} (peak.md)")

    runs_dir = out / "runs"
    minutes = args.minutes if device == "cuda" else 0.2
    batch = "256" if device == "cuda" else "32"
    env = dict(os.environ, FLOWLAB_RUNS_DIR=str(runs_dir))
    code, secs = _run([py, "-m", "flowlib.train", "--preset", "mnist-fast", "--dataset", "mnist",
                       "--device", device, "--minutes", str(minutes), "--batch-size", batch,
                       "--lr", "1e-2", "--lr-schedule", "cosine", "--bf16", "--eval-every", "500",
                       "--first-eval", "100", "--name", f"gpu-check-{minutes:g}min", "--quiet",
                       "--runs-dir", str(runs_dir)],
                      out / "mnist_run.txt", timeout=minutes * 60 + 150, env=env)
    try:
        result = _read_run(runs_dir)
    except Exception as exc:  # noqa: BLE001 - written down, the other steps still run
        result = {"error": f"{type(exc).__name__}: {exc}"}
    (out / "mnist_run.json").write_text(json.dumps(result, indent=1, default=str))
    lines.append(f"4. MNIST {minutes:g}-minute run, batch {batch}: exit {code}; full test set "
                 f"{result.get('test_bpd_full')} bits/dim; median {result.get('median_images_per_s')} "
                 f"img/s (mnist_run.json has bits/dim against seconds)")

    worker_script = (
        "import sys, json\n"
        "from flowlib import preset\n"
        "from flowlib.store.runs import RunStore\n"
        "from flowlib.store.request import RunRequest\n"
        "from flowlib.config import TrainConfig\n"
        "from flowlib.jobs import worker\n"
        f"store = RunStore({str(out / 'worker_runs')!r})\n"
        f"tc = TrainConfig(dataset='mnist', max_steps=60, eval_every=30, first_eval=0, device={device!r})\n"
        "cfg = preset('mnist-fast', hidden=32)\n"
        "rid = store.create_run(RunRequest('gpu-check-worker', cfg, tc))\n"
        "worker.start_run(store, rid)\n"
        "run = worker.wait_for_run(store, rid, timeout=150)\n"
        "print(json.dumps({k: run[k] for k in ('id', 'status', 'step', 'message')}))\n"
        "sys.exit(0 if run['status'] == 'finished' else 1)\n")
    code, secs = _run([py, "-c", worker_script], out / "worker.txt", timeout=180)
    lines.append(f"5. run through the worker: exit {code} in {secs:.0f} s (worker.txt)")

    n_gpus = torch.cuda.device_count() if device == "cuda" else 0
    help_text = subprocess.run([py, "-m", "flowlib.train", "--help"], cwd=REPO,
                               capture_output=True, text=True).stdout
    if n_gpus >= 2 and "torchrun" in help_text:
        code, secs = _run([py, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           "-m", "flowlib.train", "--preset", "mnist-fast", "--dataset", "mnist",
                           "--steps", "100", "--device", "cuda", "--quiet",
                           "--runs-dir", str(out / "ddp_runs")],
                          out / "torchrun.txt", timeout=150)
        lines.append(f"6. torchrun, 2 processes: exit {code} in {secs:.0f} s (torchrun.txt)")
    else:
        why = "fewer than 2 GPUs" if n_gpus < 2 else "the trainer has no torchrun support yet"
        lines.append(f"6. torchrun: skipped ({why})")
    page_script = (
        "from streamlit.testing.v1 import AppTest\n"
        "at = AppTest.from_file('app.py', default_timeout=180)\n"
        "at.switch_page('pages/train.py')\n"
        "at.run()\n"
        "print('exceptions:', [e.message for e in at.exception])\n"
        "print('sidebar:', [m.value for m in at.sidebar.markdown])\n"
        "print('form batch size:', at.session_state['tr_batch_size'])\n"
        "import time\n"
        f"time.sleep({20 if device == 'cuda' else 4})   # the estimate is measured in the background, then polled\n"
        "at.run()\n"
        "texts = [e.value for kind in (at.markdown, at.caption, at.info, at.success) for e in kind]\n"
        "print('estimate:', [t for t in texts if 'images/s' in t or '≈' in t][:4])\n")
    code, secs = _run([py, "-c", page_script], out / "train_page.txt", timeout=240,
                      env=dict(os.environ, FLOWLAB_RUNS_DIR=str(out / "page_runs")))
    lines.append(f"7. Train page (AppTest): exit {code} in {secs:.0f} s: sidebar, batch default and "
                 "time estimate in train_page.txt")

    if device == "cuda":
        # A batch whose activations (the classroom cap's estimate) are twice the GPU's memory:
        # the run must stop with a message naming a batch that fits, its checkpoint intact.
        from flowlib.config import preset
        from flowlib.size import activation_mb
        cfg = preset("glow", image_shape=(1, 32, 32))
        total_mb = torch.cuda.get_device_properties(0).total_memory / 2**20
        huge = 64
        while activation_mb(cfg, huge) < 2 * total_mb:
            huge *= 2
        code, secs = _run([py, "-m", "flowlib.train", "--preset", "glow", "--image-shape", "1,32,32",
                           "--dataset", "faces", "--device", "cuda", "--steps", "5", "--batch-size",
                           str(huge), "--eval-every", "1000", "--first-eval", "0", "--quiet",
                           "--name", "gpu-check-oom", "--runs-dir", str(out / "oom_runs")],
                          out / "oom.txt", timeout=240)
        try:
            oom = _read_run(out / "oom_runs")
        except Exception as exc:  # noqa: BLE001
            oom = {"error": f"{type(exc).__name__}: {exc}"}
        lines.append(f"8. out of memory at batch {huge}: exit {code} in {secs:.0f} s; "
                     f"{oom.get('status')}: {oom.get('message') or oom.get('error')}")
    else:
        lines.append("8. out of memory: skipped on the CPU (it would exhaust this machine's RAM)")
    (out / "summary.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
