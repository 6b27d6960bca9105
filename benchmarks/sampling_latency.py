"""How long the Sampling page needs to redraw its 64-sample grid after a slider move.

    python -m benchmarks.sampling_latency [--threads 2 1] [--repeats 10]

For each demo checkpoint: decode 64 samples from fixed noise at a new temperature, convert
to uint8, lay out the 8×8 grid at the page's enlargement and encode it as PNG (what
st.image sends). Reports the median and spread of ``--repeats`` runs after one warm-up,
each at a different temperature so nothing is cached. Page caching is bypassed on purpose.

The pages compute with one torch thread (``FLOWLAB_VIEW_THREADS``, default 1), so the
1-thread line is what a user sees; the 2-thread line is for comparison. The load average is
printed because a busy machine (a trainer beside the app) changes the numbers a lot.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import torch

from flowlib.core.checkpoint import load_model
from flowlib.viz.images import fit_factor, image_grid, png_bytes

ROOT = Path(__file__).resolve().parent.parent
DEMOS = [ROOT / "checkpoints" / "mnist-fast.pt", ROOT / "checkpoints" / "faces-fast.pt"]


def one_grid(model, eps, temperature: float) -> tuple[float, float]:
    """Seconds for (decode + uint8, grid + PNG)."""
    t0 = time.perf_counter()
    with torch.inference_mode():
        x = model.to_uint8(model.sample(64, temperature=temperature, eps=eps)).numpy()
    t1 = time.perf_counter()
    grid = image_grid(x, ncol=8, pad=3, scale=fit_factor(x.shape[-2], 84))
    png_bytes(grid)
    return t1 - t0, time.perf_counter() - t1


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, nargs="+", default=[2, 1])
    p.add_argument("--repeats", type=int, default=10)
    args = p.parse_args()
    print(f"torch {torch.__version__}, {os.cpu_count()} CPUs, load average "
          + " ".join(f"{v:.1f}" for v in os.getloadavg()))
    for threads in args.threads:
        torch.set_num_threads(threads)
        for path in DEMOS:
            model, _ = load_model(path)
            eps = model.sample_eps(64, torch.Generator().manual_seed(0))
            one_grid(model, eps, 0.7)  # warm-up
            decode, draw, total = [], [], []
            for k in range(args.repeats):
                a, b = one_grid(model, eps, 0.5 + 0.05 * k)
                decode.append(a), draw.append(b), total.append(a + b)
            print(f"{threads} thread(s) {path.name}: 64-sample grid median {statistics.median(total) * 1000:.0f} ms "
                  f"(min {min(total) * 1000:.0f}, max {max(total) * 1000:.0f}; decode "
                  f"{statistics.median(decode) * 1000:.0f} ms + grid/PNG {statistics.median(draw) * 1000:.0f} ms)")

if __name__ == "__main__":
    main()
