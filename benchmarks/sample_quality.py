"""Sample quality of a trained flow, measured rather than eyeballed.

    python -m benchmarks.sample_quality mnist checkpoints/mnist-fast.pt      # trains the judge once
    python -m benchmarks.sample_quality faces checkpoints/faces-fast.pt

MNIST: a small CNN (two conv layers, ~0.1 M parameters) is trained once on the MNIST
training split and cached under ``.cache/`` (never shipped in the app); the score is the
share of ``--n`` samples at ``--temperature`` that it reads as some digit with confidence
≥ 0.9, next to the same share for real test digits (the ceiling).

Faces: the distance (root-mean-square over pixels, 0..255) from each sample to its nearest
training photo, next to the same distance for the held-out test photos: samples much closer
to the training set than unseen real faces are would be copies, much farther ones are not
faces the data would recognise.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from torch import nn

REPO = Path(__file__).resolve().parent.parent
JUDGE = REPO / ".cache" / "mnist_judge.pt"
CONFIDENT = 0.9


def _judge_net() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(64 * 7 * 7, 128), nn.ReLU(), nn.Linear(128, 10))


def _as_input(x_uint8: torch.Tensor) -> torch.Tensor:
    return x_uint8.float() / 255.0 - 0.5


def mnist_judge(epochs: int = 2) -> nn.Module:
    """The cached MNIST classifier, trained here the first time (about 2 minutes on 2 cores)."""
    from flowlib.data import load_images

    net = _judge_net()
    if JUDGE.is_file():
        net.load_state_dict(torch.load(JUDGE, weights_only=True))
        return net.eval()
    train = load_images("mnist", "train")
    test = load_images("mnist", "test")
    x, y = train.images, torch.as_tensor(train.labels)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(0)
    start = time.monotonic()
    for epoch in range(epochs):
        order = torch.randperm(x.shape[0], generator=gen)
        for i in range(0, x.shape[0], 128):
            idx = order[i:i + 128]
            loss = nn.functional.cross_entropy(net(_as_input(x[idx])), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    net.eval()
    with torch.no_grad():
        pred = torch.cat([net(_as_input(test.images[i:i + 1000])).argmax(1)
                          for i in range(0, test.images.shape[0], 1000)])
    accuracy = float((pred == torch.as_tensor(test.labels)).float().mean())
    print(f"judge trained in {time.monotonic() - start:.0f} s: {accuracy:.2%} test accuracy", file=sys.stderr)
    JUDGE.parent.mkdir(parents=True, exist_ok=True)
    torch.save(net.state_dict(), JUDGE)
    return net


@torch.no_grad()
def confident_share(net: nn.Module, x_uint8: torch.Tensor) -> float:
    probs = torch.cat([net(_as_input(x_uint8[i:i + 500])).softmax(1) for i in range(0, x_uint8.shape[0], 500)])
    return float((probs.max(1).values >= CONFIDENT).float().mean())


@torch.no_grad()
def draw_samples(model, n: int, temperature: float, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    out = []
    for start in range(0, n, 250):
        eps = model.sample_eps(min(250, n - start), gen)
        x = model.sample(eps[0].shape[0], temperature=temperature, eps=eps)
        out.append(model.to_uint8(torch.nan_to_num(x.float(), nan=0.0)))
    return torch.cat(out)


@torch.no_grad()
def nearest_rms(x: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """For each image in x, the RMS pixel distance (0..255) to its nearest image in reference."""
    a = x.flatten(1).float()
    b = reference.flatten(1).float()
    d2 = torch.cdist(a, b).pow(2) / a.shape[1]
    return d2.min(1).values.sqrt()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dataset", choices=["mnist", "faces"])
    parser.add_argument("checkpoint", help="a Flow Lab checkpoint (e.g. checkpoints/mnist-fast.pt)")
    parser.add_argument("--n", type=int, default=1000, help="samples to score (default 1000)")
    parser.add_argument("--temperature", type=float, default=0.7)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    from flowlib.core.checkpoint import load_model
    from flowlib.data import load_images

    model, _ = load_model(args.checkpoint)
    samples = draw_samples(model, args.n, args.temperature, args.seed)
    if args.dataset == "mnist":
        net = mnist_judge()
        real = load_images("mnist", "test").images[:args.n]
        print(f"{args.checkpoint}: {confident_share(net, samples):.1%} of {args.n} samples at "
              f"T={args.temperature:g} read as a digit with confidence ≥ {CONFIDENT} "
              f"(real test digits: {confident_share(net, real):.1%})")
    else:
        train = load_images("faces", "train").images
        test = load_images("faces", "test").images
        s = nearest_rms(samples, train)
        t = nearest_rms(test, train)
        print(f"{args.checkpoint}: RMS distance to the nearest training photo, median "
              f"{s.median():.1f} for {args.n} samples at T={args.temperature:g} "
              f"(min {s.min():.1f}); {t.median():.1f} for the {test.shape[0]} held-out photos "
              f"(min {t.min():.1f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
