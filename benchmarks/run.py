"""Speed table for Flow Lab's models: training images/s, sampling and encoding latency, memory.

    python -m benchmarks.run                     # every configuration, printed as a table
    python -m benchmarks.run --only demo-1x32-b16 --repeats 7
    python -m benchmarks.run --markdown >> benchmarks/RESULTS.md

Each configuration runs in its own fresh process, so the peak-memory column is that
configuration's alone and one configuration's allocator state cannot slow the next.
Every figure is the median over ``--repeats`` timed runs after ``--warmup`` untimed ones.

Training throughput counts the trainer's own step (``flowlib.train.step.train_step``): forward,
backward, gradient-norm clipping, the one host sync of the step's statistics, Adam update, on
a fixed uint8 batch dequantised with fresh noise each step.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@dataclass(frozen=True)
class BenchConfig:
    name: str
    description: str
    model: dict          # FlowConfig fields (or {"preset": name, ...overrides})
    batch: int
    bf16: bool = False   # coupling networks in bf16 (flowlib.core.layers.low_precision_networks)


def demo_model(channels: int) -> dict:
    """FlowConfig fields of the article's demo shape: L=3, K=6, affine, LU 1×1, width 512."""
    return dict(image_shape=(channels, 32, 32), levels=3, steps=6, hidden=512, coupling="affine",
                permutation="conv1x1_lu", mask="channel", actnorm=True)


def make_train_step(model, batch, optimizer, bf16: bool):
    """A call of the trainer's own step (``flowlib.train.step.train_step``) on ``batch`` (uint8),
    with fresh dequantisation noise from torch's global generator each call: bits/dim loss
    (coupling networks in bf16 if asked), backward, gradient-norm clipping at a fixed 50 (the
    trainer's default absolute clip; its relative clip only moves the threshold, and clipping
    scales the gradients whatever the threshold), the step's one host sync, Adam."""
    import torch

    from flowlib.train.step import BitsPerDimLoss, train_step

    loss = BitsPerDimLoss(model)
    params = [p for p in model.parameters() if p.requires_grad]

    def step():
        train_step(loss, optimizer, params, batch, torch.rand(batch.shape), 50.0, bf16=bf16)
    return step


def _demo(channels: int, batch: int, bf16: bool = False) -> BenchConfig:
    shape = f"{channels}x32"
    return BenchConfig(
        f"demo-{shape}-b{batch}" + ("-bf16" if bf16 else ""),
        f"article demo shape {channels}×32×32, L=3 K=6, affine, LU 1×1, width 512",
        demo_model(channels), batch, bf16)


_GLOW_DEPTH = dict(image_shape=(1, 32, 32), levels=3, steps=32, hidden=512, coupling="affine",
                   permutation="conv1x1_lu", mask="channel", actnorm=True)

CONFIGS: list[BenchConfig] = [
    _demo(1, 16), _demo(1, 64), _demo(3, 16), _demo(3, 64),
    BenchConfig("glow-depth-1x32-b16", "Glow depth: 1×32×32, L=3 K=32, affine, LU 1×1, width 512",
                _GLOW_DEPTH, 16),
    BenchConfig("mnist-fast-b64", "shipped demo model mnist-fast (1×28×28) at its training batch",
                dict(preset="mnist-fast"), 64),
    BenchConfig("faces-fast-b64", "shipped demo model faces-fast (1×32×32) at its training batch",
                dict(preset="faces-fast"), 64),
    # The same shapes with bf16 coupling networks (float32 log-dets and priors).
    _demo(1, 16, bf16=True), _demo(1, 64, bf16=True), _demo(3, 16, bf16=True), _demo(3, 64, bf16=True),
    BenchConfig("glow-depth-1x32-b16-bf16", "Glow depth with bf16 coupling networks",
                _GLOW_DEPTH, 16, bf16=True),
    BenchConfig("mnist-fast-b64-bf16", "mnist-fast with bf16 coupling networks",
                dict(preset="mnist-fast"), 64, bf16=True),
]


def _peak_rss_mb() -> float:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _median_ms(fn, warmup: int, repeats: int, sync) -> float:
    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def run_one(cfg: BenchConfig, warmup: int, repeats: int, device_name: str,
            malloc_tuning: bool = True) -> dict:
    """Measure one configuration in this process; returns a JSON-able row."""
    import contextlib

    import torch

    from flowlib import FlowConfig, FlowModel, preset
    from flowlib.core.layers import low_precision_networks
    from flowlib.machine.memory import tune_for_training
    from flowlib.train.step import make_optimizer

    if malloc_tuning:
        tune_for_training()
    device = torch.device(device_name)
    spec = dict(cfg.model)
    config = preset(spec.pop("preset"), **spec) if "preset" in spec else FlowConfig(**spec)
    model = FlowModel(config).to(device)
    gen = torch.Generator().manual_seed(0)
    batch = torch.randint(0, 256, (cfg.batch, *config.image_shape), generator=gen,
                          dtype=torch.uint8).to(device)
    model.initialize(model.preprocess(batch))
    optimizer = make_optimizer(model.parameters(), lr=1e-4)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    precision = (lambda: low_precision_networks(torch.bfloat16)) if cfg.bf16 else contextlib.nullcontext
    train_step_once = make_train_step(model, batch, optimizer, cfg.bf16)

    step_ms = _median_ms(train_step_once, warmup, repeats, sync)
    model.eval()
    eps = model.sample_eps(64, torch.Generator().manual_seed(1))
    x_float = model.preprocess(batch)

    def sample_grid():  # bf16 rows sample and encode with bf16 networks too
        with torch.inference_mode(), precision():
            model.to_uint8(model.sample(64, temperature=0.7, eps=eps))

    def encode_batch():
        with torch.inference_mode(), precision():
            model.encode(x_float)

    sample_ms = _median_ms(sample_grid, 2, repeats, sync)
    encode_ms = _median_ms(encode_batch, 2, repeats, sync)
    peak = (torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else _peak_rss_mb())
    return {
        "name": cfg.name, "description": cfg.description, "params": model.num_parameters(),
        "batch": cfg.batch, "train_images_per_s": cfg.batch / (step_ms / 1000),
        "train_step_ms": step_ms, "sample64_ms": sample_ms, "encode_batch_ms": encode_ms,
        "peak_mb": peak, "peak_kind": "GPU allocated" if device.type == "cuda" else "process RSS",
    }


def describe_machine(device_name: str) -> str:
    import torch
    if device_name.startswith("cuda"):
        props = torch.cuda.get_device_properties(0)
        return f"{props.name}, {props.total_memory / 2**30:.0f} GiB, torch {torch.__version__}"
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{cpu}, {torch.get_num_threads()} torch threads, torch {torch.__version__}"


def format_table(rows: list[dict]) -> str:
    header = ("| configuration | params | batch | train img/s | step ms | 64-sample grid ms "
              "| encode batch ms | peak MB |\n|---|---:|---:|---:|---:|---:|---:|---:|")
    lines = [header]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['name']} | failed: {r['error']} | | | | | | |")
            continue
        lines.append(f"| {r['name']} | {r['params'] / 1e6:.2f} M | {r['batch']} | "
                     f"{r['train_images_per_s']:.1f} | {r['train_step_ms']:.0f} | "
                     f"{r['sample64_ms']:.0f} | {r['encode_batch_ms']:.0f} | {r['peak_mb']:.0f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="*", help="configuration names to run (default: all)")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per figure (median)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed training steps first")
    parser.add_argument("--device", default="auto", help="cpu, cuda or auto")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: all cores)")
    parser.add_argument("--markdown", action="store_true", help="print only the markdown table")
    parser.add_argument("--no-malloc-tuning", action="store_true",
                        help="leave glibc's allocator as it is (to measure what flowlib.machine.memory buys)")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: measure one config here
    args = parser.parse_args(argv)

    import torch
    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.set_num_threads(args.threads or os.cpu_count() or 1)

    if args.one:
        cfg = next(c for c in CONFIGS if c.name == args.one)
        try:
            row = run_one(cfg, args.warmup, args.repeats, device, not args.no_malloc_tuning)
        except Exception as exc:  # report, don't hide: the table says which config failed
            row = {"name": cfg.name, "error": f"{type(exc).__name__}: {exc}"[:200]}
        print("BENCH " + json.dumps(row), flush=True)
        return 0

    names = args.only or [c.name for c in CONFIGS]
    unknown = set(names) - {c.name for c in CONFIGS}
    if unknown:
        parser.error(f"unknown configuration(s) {sorted(unknown)}; "
                     f"choose from {[c.name for c in CONFIGS]}")
    rows = []
    machine = describe_machine(device)
    if not args.markdown:
        print(f"# {machine}; median of {args.repeats} after {args.warmup} warm-up steps", flush=True)
    for name in names:
        cmd = [sys.executable, "-m", "benchmarks.run", "--one", name, "--repeats", str(args.repeats),
               "--warmup", str(args.warmup), "--device", device]
        if args.threads:
            cmd += ["--threads", str(args.threads)]
        if args.no_malloc_tuning:
            cmd.append("--no-malloc-tuning")
        proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
        line = next((l for l in proc.stdout.splitlines() if l.startswith("BENCH ")), None)
        row = json.loads(line[6:]) if line else {"name": name, "error": (proc.stderr.strip().splitlines() or ["no output"])[-1][:200]}
        rows.append(row)
        if not args.markdown:
            print(format_table([row]).splitlines()[-1], flush=True)
    if args.markdown:
        print(f"Machine: {machine}. Median of {args.repeats} timed runs after {args.warmup} warm-up.\n")
    print(format_table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
