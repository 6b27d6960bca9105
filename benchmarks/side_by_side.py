"""Flow Lab against a public PyTorch Glow at the identical architecture, on this machine.

    python -m benchmarks.side_by_side --reference ~/src/glow-pytorch
    python -m benchmarks.side_by_side --reference ~/src/glow-pytorch --batches 16 --repeats 9

``--reference`` is a checkout of https://github.com/rosinality/glow-pytorch (its ``model.py``
is imported from there, never copied into this repository; it needs ``pip install scipy``).
Both sides build the article's demo shape: 1×32×32 images, L=3 levels, K=6 steps per level,
affine coupling, LU-parameterised 1×1 convolutions, coupling networks of width 512, learned
split priors. Both train on the same real images (the bundled 32×32 faces) with the same
protocol: dequantise with fresh uniform noise, forward, bits/dim loss, backward, Adam step.
Flow Lab's side is its trainer's own step (``flowlib.train.step.train_step``), which also
clips the gradient norm and brings the step's statistics to the host once.

Every (implementation, batch) pair runs in a fresh process, so one allocator's history
cannot help or hurt the other; the figure is the median step time of ``--repeats`` timed
steps after 2 warm-up steps. Minor page faults per step are reported too: they are the
memory churn that makes the reference slower per image at batch 64.

Flow Lab is measured twice: float32, and with its coupling networks in bf16
(``flowlib.core.layers.low_precision_networks``; log-determinants and priors stay float32). The
last part checks that bf16 keeps the maths: a demo-shape model is trained for
``--likelihood-steps`` steps, then its test bits/dim is evaluated in float32 and with bf16
networks on the same images and the same dequantisation noise.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import time

from benchmarks.run import REPO, demo_model, make_train_step

IMPLEMENTATIONS = ("reference", "flowlab-fp32", "flowlab-bf16")
DEMO = demo_model(1)   # with FlowConfig's learned split and top priors, as the reference has


def _load_reference(folder: str):
    path = os.path.join(os.path.expanduser(folder), "model.py")
    if not os.path.isfile(path):
        raise SystemExit(f"--reference: no model.py in {folder!r}; pass a checkout of "
                         "rosinality/glow-pytorch")
    spec = importlib.util.spec_from_file_location("reference_glow_model", path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except ModuleNotFoundError as exc:
        raise SystemExit(f"the reference's model.py needs {exc.name}: pip install {exc.name}") from None
    return module


def _faces(batch: int, generator):
    import torch

    from flowlib.data import load_images
    images = load_images("faces", "train").images
    idx = torch.randint(0, images.shape[0], (batch,), generator=generator)
    return images[idx]


def measure(impl: str, batch: int, repeats: int, reference: str | None) -> dict:
    """Median training-step time of one implementation at one batch size, in this process."""
    import torch

    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    x_uint8 = _faces(batch, gen)
    n_bins = 256.0
    if impl == "reference":
        ref = _load_reference(reference)
        model = ref.Glow(1, 6, 3, affine=True, conv_lu=True)
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
        pixels = 32 * 32 * 1

        def step():  # rosinality's train.py loop, one batch
            image = x_uint8.float() / n_bins - 0.5
            log_p, logdet, _ = model(image + torch.rand_like(image) / n_bins)
            loss = -math.log(n_bins) * pixels + logdet.mean() + log_p
            loss = (-loss / (math.log(2) * pixels)).mean()
            model.zero_grad()
            loss.backward()
            optimizer.step()

        with torch.no_grad():  # its ActNorm initialises on the first forward
            model(x_uint8.float() / n_bins - 0.5 + torch.rand(x_uint8.shape) / n_bins)
    else:
        from flowlib import FlowConfig, FlowModel
        from flowlib.machine.memory import tune_for_training
        from flowlib.train.step import make_optimizer
        tune_for_training()  # as Flow Lab's trainer does; the reference keeps glibc's default
        model = FlowModel(FlowConfig(**DEMO))
        model.initialize(model.preprocess(x_uint8, generator=gen))
        optimizer = make_optimizer(model.parameters(), lr=1e-4)
        step = make_train_step(model, x_uint8, optimizer, bf16=impl.endswith("bf16"))

    for _ in range(2):
        step()
    times, faults = [], []
    for _ in range(repeats):
        f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0)
    step_s = statistics.median(times)
    return {"impl": impl, "batch": batch, "params": sum(p.numel() for p in model.parameters()),
            "images_per_s": batch / step_s, "step_ms": step_s * 1000,
            "page_faults_per_step": statistics.median(faults)}


def likelihood_check(steps: int, batch: int) -> dict:
    """Train a demo-shape model briefly with the trainer's step (bf16 networks, clip at 50),
    then compare bf16 and float32 bits/dim."""
    import torch

    from flowlib import FlowConfig, FlowModel
    from flowlib.core.layers import low_precision_networks
    from flowlib.data import load_images
    from flowlib.machine.memory import tune_for_training
    from flowlib.train.step import BitsPerDimLoss, make_optimizer, train_step

    tune_for_training()
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    train = load_images("faces", "train").images
    test = load_images("faces", "test").images
    model = FlowModel(FlowConfig(**DEMO))
    model.initialize(model.preprocess(train[:64], generator=gen))
    params = list(model.parameters())
    optimizer = make_optimizer(params, lr=1e-3)
    loss = BitsPerDimLoss(model)
    for i in range(steps):
        idx = torch.randint(0, train.shape[0], (batch,), generator=gen)
        for group in optimizer.param_groups:
            group["lr"] = 1e-3 * min(1.0, (i + 1) / 50)
        x = train[idx]
        train_step(loss, optimizer, params, x, torch.rand(x.shape, generator=gen), 50.0, bf16=True)
    model.eval()

    def test_bpd(bf16: bool) -> float:
        noise = torch.Generator().manual_seed(123)   # the same noise for both evaluations
        with torch.inference_mode():
            if bf16:
                with low_precision_networks(torch.bfloat16):
                    return model.bits_per_dim(test, generator=noise).mean().item()
            return model.bits_per_dim(test, generator=noise).mean().item()

    fp32, bf16 = test_bpd(False), test_bpd(True)
    return {"steps": steps, "test_images": int(test.shape[0]), "fp32_bpd": fp32, "bf16_bpd": bf16,
            "difference": abs(bf16 - fp32)}


def _in_fresh_process(args: list[str]) -> dict:
    cmd = [sys.executable, "-m", "benchmarks.side_by_side", *args]
    out = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed:\n{out.stderr.strip()[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reference", required=True, metavar="DIR",
                        help="checkout of rosinality/glow-pytorch (its model.py is imported)")
    parser.add_argument("--batches", default="16,64", help="comma-separated batch sizes (default 16,64)")
    parser.add_argument("--repeats", type=int, default=7, help="timed steps per figure (median; default 7)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores)")
    parser.add_argument("--likelihood-steps", type=int, default=100,
                        help="training steps before the bf16-vs-float32 check (0 skips it; default 100)")
    parser.add_argument("--measure", nargs=2, metavar=("IMPL", "BATCH"), help=argparse.SUPPRESS)
    parser.add_argument("--likelihood", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    import torch
    torch.set_num_threads(args.threads or os.cpu_count() or 1)
    if args.measure:
        print(json.dumps(measure(args.measure[0], int(args.measure[1]), args.repeats, args.reference)))
        return 0
    if args.likelihood:
        print(json.dumps(likelihood_check(args.likelihood_steps, 16)))
        return 0

    _load_reference(args.reference)  # fail early, before minutes of measuring
    common = ["--reference", args.reference, "--repeats", str(args.repeats),
              "--threads", str(torch.get_num_threads())]
    print(f"# {torch.get_num_threads()} torch threads, torch {torch.__version__}, "
          f"{time.strftime('%Y-%m-%d')}", flush=True)
    print("| implementation | params | batch | train img/s | step ms | page faults / step | vs reference |")
    print("|---|---:|---:|---:|---:|---:|---:|", flush=True)
    for batch in (int(b) for b in args.batches.split(",")):
        base = None
        for impl in IMPLEMENTATIONS:
            row = _in_fresh_process([*common, "--measure", impl, str(batch)])
            base = base or row["images_per_s"]
            print(f"| {impl} | {row['params'] / 1e6:.2f} M | {batch} | {row['images_per_s']:.1f} | "
                  f"{row['step_ms']:.0f} | {row['page_faults_per_step']:,.0f} | "
                  f"{row['images_per_s'] / base:.2f}× |", flush=True)
    if args.likelihood_steps:
        check = _in_fresh_process([*common, "--likelihood", "--likelihood-steps", str(args.likelihood_steps)])
        print(f"\nbf16 keeps the maths: after {check['steps']} training steps, test bits/dim on "
              f"{check['test_images']} face images is {check['fp32_bpd']:.4f} in float32 and "
              f"{check['bf16_bpd']:.4f} with bf16 networks (difference {check['difference']:.4f}; "
              f"the bound is 0.01)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
