"""Share of the chip's own matrix peak that a training step reaches, in float32 and with bf16
coupling networks.

    python -m benchmarks.peak                       # every shape, both precisions, CPU (and CUDA if present)
    python -m benchmarks.peak --only demo --repeats 15
    python -m benchmarks.peak --json out.json

For each shape and precision, in a fresh process:

* the chip's peak in that precision (float32, or bfloat16: AMX tiles or AVX-512 BF16 dot
  products where the CPU has them), in the same process and thread count as the step: the
  faster of two large, well-shaped products, each as 2·m·n·k / its median time — a 2048×2048
  by 2048×2048 ``torch.matmul`` and a 1×1 convolution of 512 to 512 channels over a
  16×512×32×32 channels-last batch (oneDNN). Both are reported: on the AMD EPYC (Zen 4) this
  project moved to, MKL's float32 matmul reached 73 GFLOP/s per core where oneDNN's
  convolution reached 104, so a matmul alone would flatter every share;
* the step's FLOPs, counted by ``torch.utils.flop_counter.FlopCounterMode`` over one
  forward and backward pass (the optimizer's few elementwise FLOPs are not counted);
* the step's time: the median of ``--repeats`` timed training steps after ``--warmup``
  untimed ones, each the trainer's own step (forward, backward, clipping, Adam);
* achieved = FLOPs / step time, and share = achieved / peak;
* on the CPU, the time a step spends inside its convolutions (forward and backward kernels,
  from ``torch.profiler`` over ``--profile-steps`` more steps) and the **ceiling**: the share
  the step would reach if everything else (the flow's own ops, casts, Adam, Python) took no
  time at all. When the ceiling itself is under a goal, no work outside the convolution
  kernels can reach that goal; only faster kernels or a larger problem can.

The shapes: the article's demo (1×32×32, L=3, K=6, affine, LU 1×1, width 512, batch 16), the
``mnist-fast`` preset at the Train form's default batch of 64 (what Home's "Train MNIST now"
starts), and the shipped MNIST demo's shape (width 128, K=8, batch 32).
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

from flowlib.env import REPO_ROOT

SHAPES = {
    "demo": ("article demo 1×32×32, L=3 K=6, affine, LU 1×1, width 512",
             dict(image_shape=(1, 32, 32), levels=3, steps=6, hidden=512, coupling="affine",
                  permutation="conv1x1_lu", mask="channel", actnorm=True), 16),
    "mnist-fast": ("mnist-fast preset, batch 64 (Home's Train MNIST now)", dict(preset="mnist-fast"), 64),
    "mnist-demo": ("shipped MNIST demo shape: mnist-fast at width 128, K=8, batch 32",
                   dict(preset="mnist-fast", hidden=128, steps=8), 32),
}
MATMUL_N = 2048
# The profiler's names for the convolution kernels themselves (oneDNN on the CPU): the
# forward and the backward (input and weight gradients). Their self time excludes the casts
# and layout copies they call.
CONV_KERNELS = ("aten::mkldnn_convolution", "aten::convolution_backward")


def _median_s(fn, warmup: int, repeats: int, sync) -> float:
    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def matmul_peak(dtype, device, sync) -> float:
    """FLOP/s of a MATMUL_N² by MATMUL_N² matmul in ``dtype`` here (median of 7 after 2 untimed)."""
    import torch

    a = torch.randn(MATMUL_N, MATMUL_N, device=device, dtype=dtype)
    b = torch.randn(MATMUL_N, MATMUL_N, device=device, dtype=dtype)
    return 2 * MATMUL_N ** 3 / _median_s(lambda: torch.matmul(a, b), 2, 7, sync)


def conv_peak(dtype, device, sync) -> float:
    """FLOP/s of a 512→512 1×1 convolution over [16, 512, 32, 32] channels-last in ``dtype``:
    the same product as a 16,384×512 by 512×512 matmul, through the library the coupling
    networks use (oneDNN on the CPU, cuDNN on CUDA); median of 7 after 2 untimed."""
    import torch

    x = torch.randn(16, 512, 32, 32, device=device, dtype=dtype).contiguous(memory_format=torch.channels_last)
    conv = torch.nn.Conv2d(512, 512, 1, bias=False).to(device=device, dtype=dtype)
    with torch.no_grad():
        seconds = _median_s(lambda: conv(x), 2, 7, sync)
    return 2 * 16 * 32 * 32 * 512 * 512 / seconds


def conv_ms_per_step(step, steps: int) -> float:
    """Milliseconds per step spent inside the convolution kernels (CPU): their self time
    under ``torch.profiler`` over ``steps`` steps, divided by ``steps``."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            step()
    inside = sum(e.self_cpu_time_total for e in prof.key_averages() if e.key in CONV_KERNELS)
    return inside / 1000 / steps


def measure(shape: str, bf16: bool, device_name: str, warmup: int, repeats: int, threads: int | None = None,
            profile_steps: int = 3) -> dict:
    """One shape and precision, in this process: peak, FLOPs, step time and share (and on the
    CPU, the time inside the convolutions and the share that leaves as a ceiling)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from flowlib import FlowConfig, FlowModel, preset, tune_for_training
    from flowlib.train.step import BitsPerDimLoss, forward_backward, make_optimizer, train_step

    device = torch.device(device_name)
    if device.type == "cpu":
        tune_for_training()
        if threads:
            torch.set_num_threads(threads)
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    dtype = torch.bfloat16 if bf16 else torch.float32
    peaks = {"matmul": matmul_peak(dtype, device, sync), "conv1x1": conv_peak(dtype, device, sync)}
    peak = max(peaks.values())

    _, spec, batch = SHAPES[shape]
    spec = dict(spec)
    config = preset(spec.pop("preset"), **spec) if "preset" in spec else FlowConfig(**spec)
    model = FlowModel(config).to(device)
    gen = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (batch, *config.image_shape), generator=gen, dtype=torch.uint8).to(device)
    model.initialize(model.preprocess(x, generator=gen))
    model.train()
    params = list(model.parameters())
    opt = make_optimizer(params, lr=1e-4)
    loss = BitsPerDimLoss(model)

    def step():
        train_step(loss, opt, params, x, torch.rand(x.shape, generator=gen), 50.0, bf16=bf16)

    with FlopCounterMode(display=False) as counter:
        forward_backward(loss, opt, x, torch.rand(x.shape, generator=gen), bf16)
    flops = counter.get_total_flops()
    step_s = _median_s(step, warmup, repeats, sync)
    achieved = flops / step_s
    # The profiler's CPU times say nothing about CUDA kernels, which run asynchronously.
    conv_ms = conv_ms_per_step(step, profile_steps) if device.type == "cpu" and profile_steps > 0 else None
    return {"shape": shape, "precision": "bf16 networks" if bf16 else "float32", "device": device.type,
            "threads": torch.get_num_threads(), "batch": batch, "gflop_per_step": flops / 1e9,
            "step_ms": step_s * 1000, "images_per_s": batch / step_s, "achieved_gflops": achieved / 1e9,
            "peak_gflops": peak / 1e9, "peak_by": max(peaks, key=peaks.get),
            "peak_matmul_gflops": peaks["matmul"] / 1e9, "peak_conv1x1_gflops": peaks["conv1x1"] / 1e9,
            "share": achieved / peak, "conv_ms": conv_ms,
            "ceiling_share": flops / (conv_ms / 1000) / peak if conv_ms else None}


def _machine() -> str:
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.2f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.peak", description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", choices=sorted(SHAPES), action="append", help="a shape (repeatable)")
    parser.add_argument("--precision", choices=["float32", "bf16"], action="append")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cpu, and cuda too when present)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: the trainer's choice)")
    parser.add_argument("--profile-steps", type=int, default=3,
                        help="steps profiled for the time inside the convolutions (CPU; 0: skip)")
    parser.add_argument("--json", default=None, help="write the rows here as well")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.warmup < 0 or args.repeats < 1 or args.profile_steps < 0:
        parser.error("--warmup and --profile-steps must be ≥ 0 and --repeats ≥ 1")
    if args.child:
        shape, precision, device = args.child.split(",")
        print(json.dumps(measure(shape, precision == "bf16", device, args.warmup, args.repeats, args.threads,
                                 args.profile_steps)))
        return 0
    import torch
    devices = [args.device] if args.device else (["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])
    rows = []
    print(f"# {_machine()}, torch {torch.__version__}", flush=True)
    print(f"{'shape':<11} {'precision':<14} {'dev':<5} {'GFLOP/step':>10} {'step ms':>8} {'img/s':>7} "
          f"{'GFLOP/s':>8} {'peak':>7} {'share':>6} {'conv ms':>8} {'ceiling':>8}", flush=True)
    for device in devices:
        for shape in args.only or list(SHAPES):
            for precision in args.precision or ["float32", "bf16"]:
                proc = subprocess.run([sys.executable, "-m", "benchmarks.peak", "--child",
                                       f"{shape},{precision},{device}", "--warmup", str(args.warmup),
                                       "--repeats", str(args.repeats), "--profile-steps", str(args.profile_steps),
                                       *(["--threads", str(args.threads)] if args.threads else [])], cwd=REPO_ROOT, capture_output=True,
                                      text=True, env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
                if proc.returncode != 0:
                    print(f"{shape} {precision} {device}: failed\n{proc.stderr[-1500:]}", file=sys.stderr)
                    continue
                row = json.loads(proc.stdout.strip().splitlines()[-1])
                rows.append(row)
                print(f"{shape:<11} {row['precision']:<14} {device:<5} {row['gflop_per_step']:>10.1f} "
                      f"{row['step_ms']:>8.1f} {row['images_per_s']:>7.0f} {row['achieved_gflops']:>8.0f} "
                      f"{row['peak_gflops']:>7.0f} {100 * row['share']:>5.0f}% "
                      + (f"{row['conv_ms']:>8.1f} {100 * row['ceiling_share']:>7.0f}%" if row["conv_ms"] else
                         f"{'–':>8} {'–':>8}"), flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": _machine(), "rows": rows}, f, indent=1)
    return 0 if rows else 1


if __name__ == "__main__":
    sys.exit(main())
