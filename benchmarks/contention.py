"""Training throughput on a shared CPU: fixed thread counts against the adaptive governor.

    python -m benchmarks.contention                    # quiet and beside 2 busy processes
    python -m benchmarks.contention --busy 0 2 --seconds 20 --repeats 3 --markdown

A class shares the machine: the Streamlit server, the browsers and other runs take CPU
time from a training run. This measures mnist-fast training (batch 64, float32, the
trainer's step) for ``--seconds`` per figure in a fresh process, once per thread policy:

``1`` / ``2`` ... fixed torch thread counts
``auto``          flowlib.machine.threads.ThreadGovernor, as the trainer runs

beside ``--busy`` processes that each spin one core (pure Python loops, started before and
killed after each figure). Each figure is images/s over the whole timed span (probes
included), median of ``--repeats``. The score the issue asks for: under contention, auto
reaches at least 0.8 of the best fixed count; quiet, it loses nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUSY_LOOP = "import time\nend = time.monotonic() + {limit}\nwhile time.monotonic() < end: pass\n"


def measure_here(policy: str, seconds: float, warmup_s: float = 3.0) -> dict:
    """Train mnist-fast steps for ``seconds`` in this process; images/s over that span."""
    import torch

    from benchmarks.run import make_train_step
    from flowlib import FlowModel, preset
    from flowlib.machine.memory import tune_for_training
    from flowlib.machine.threads import ThreadGovernor
    from flowlib.train.step import make_optimizer

    tune_for_training()
    cores = os.cpu_count() or 1
    governor = None
    if policy == "auto":
        torch.set_num_threads(cores)
        governor = ThreadGovernor(cores)
    else:
        torch.set_num_threads(int(policy))
    model = FlowModel(preset("mnist-fast"))
    gen = torch.Generator().manual_seed(0)
    batch = torch.randint(0, 256, (64, 1, 28, 28), generator=gen, dtype=torch.uint8)
    model.initialize(model.preprocess(batch))
    step = make_train_step(model, batch, make_optimizer(model.parameters(), lr=1e-4), bf16=False)
    end_warm = time.monotonic() + warmup_s
    while time.monotonic() < end_warm:    # allocator and kernels warm; not counted
        step()
    images, start = 0, time.monotonic()
    while time.monotonic() - start < seconds:
        t0 = time.perf_counter()
        step()
        if governor is not None:
            governor.step_done(time.perf_counter() - t0, 64)
        images += 64
    elapsed = time.monotonic() - start
    row = {"policy": policy, "images_per_s": images / elapsed}
    if governor is not None:
        row["threads_at_end"] = governor.threads
        row["probes"] = len(governor.history)
    return row


def measure(policy: str, busy: int, seconds: float) -> dict:
    """One figure in a fresh process, beside ``busy`` spinning processes."""
    env = dict(os.environ)
    limit = seconds + 60
    spinners = [subprocess.Popen([sys.executable, "-c", BUSY_LOOP.format(limit=limit)])
                for _ in range(busy)]
    try:
        proc = subprocess.run([sys.executable, "-m", "benchmarks.contention", "--one", policy,
                               "--seconds", str(seconds)], cwd=REPO, env=env,
                              capture_output=True, text=True, timeout=seconds + 120)
    finally:
        for s in spinners:
            s.kill()
            s.wait()
    line = next((l for l in proc.stdout.splitlines() if l.startswith("CONTENTION ")), None)
    if line is None:
        return {"policy": policy, "error": (proc.stderr.strip().splitlines() or ["no output"])[-1][:200]}
    return json.loads(line[len("CONTENTION "):])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--busy", type=int, nargs="*", default=[0, 2],
                        help="numbers of competing busy processes to measure beside (default 0 2)")
    parser.add_argument("--policies", nargs="*", default=None,
                        help="thread policies: fixed counts and/or auto (default: 1..cores, auto)")
    parser.add_argument("--seconds", type=float, default=15.0, help="timed span per figure")
    parser.add_argument("--repeats", type=int, default=3, help="figures per cell (median)")
    parser.add_argument("--markdown", action="store_true", help="print only the markdown table")
    parser.add_argument("--one", help=argparse.SUPPRESS)   # internal: measure here
    args = parser.parse_args(argv)
    if args.one:
        print("CONTENTION " + json.dumps(measure_here(args.one, args.seconds)), flush=True)
        return 0
    if args.seconds <= 0 or args.repeats < 1 or any(b < 0 for b in args.busy):
        parser.error("--seconds must be > 0, --repeats ≥ 1 and --busy counts ≥ 0")
    cores = os.cpu_count() or 1
    from flowlib.machine.threads import candidate_thread_counts
    policies = args.policies or [str(n) for n in sorted(candidate_thread_counts(cores))] + ["auto"]
    for p in policies:
        if p != "auto" and not (p.isdigit() and int(p) >= 1):
            parser.error(f"a policy is a thread count ≥ 1 or 'auto', got {p!r}")
    table: dict[tuple[int, str], list[float]] = {}
    for busy in args.busy:
        for _ in range(args.repeats):
            for policy in policies:   # interleaved, so a drifting machine hits every policy alike
                row = measure(policy, busy, args.seconds)
                if "error" in row:
                    print(f"busy={busy} policy={policy}: failed: {row['error']}", file=sys.stderr)
                    continue
                table.setdefault((busy, policy), []).append(row["images_per_s"])
                if not args.markdown:
                    extra = f" (ended at {row['threads_at_end']} threads)" if "threads_at_end" in row else ""
                    print(f"busy={busy} policy={policy}: {row['images_per_s']:.1f} img/s{extra}", flush=True)
    load = os.getloadavg()[0]
    print(f"\n{cores} cores; mnist-fast, batch 64, float32; {args.seconds:g} s per figure, "
          f"median of {args.repeats}; load average at the end {load:.2f}\n")
    header = "| busy processes | " + " | ".join(f"{p} thread{'s' if p not in ('1',) else ''}"
                                                if p != "auto" else "auto (governor)"
                                                for p in policies) + " | auto / best fixed |"
    print(header)
    print("|---" * (len(policies) + 2) + "|")
    for busy in args.busy:
        medians = {p: statistics.median(table[(busy, p)]) for p in policies if (busy, p) in table}
        fixed = [v for p, v in medians.items() if p != "auto"]
        ratio = (f"{medians['auto'] / max(fixed):.2f}" if "auto" in medians and fixed else "–")
        cells = [f"{medians[p]:.0f}" if p in medians else "failed" for p in policies]
        print(f"| {busy} | " + " | ".join(cells) + f" | {ratio} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
