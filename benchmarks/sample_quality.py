"""Sample quality of a trained flow, measured rather than eyeballed.

    python -m benchmarks.sample_quality mnist checkpoints/mnist-fast.pt      # trains the judges once
    python -m benchmarks.sample_quality mnist checkpoints/mnist-cond.pt      # per digit asked for
    python -m benchmarks.sample_quality faces checkpoints/faces-fast.pt

MNIST: two classifiers, built differently, are trained once on the MNIST training split and
cached under ``.cache/`` (never shipped in the app), so a model is not tuned to one judge:

    judge A   a small CNN (two conv layers, ~0.4 M parameters), 2 epochs on the digits as they are
    judge B   a wider CNN with batch norm and dropout (three conv blocks), 3 epochs on digits
              shifted by up to 2 pixels, another seed

An unconditional model: the share of ``--n`` samples at ``--temperature`` a judge reads as some
digit with confidence ≥ 0.9, next to the same share for real test digits (the ceiling). A
class-conditional model: ``--n`` samples *per digit*, each asked for with its label, and the
share a judge reads as that digit with confidence ≥ 0.9, per digit and overall; plus the
model's own generative accuracy (argmax p(y | x)) on the test set. ``--bpd`` adds the test
bits/dim (for a conditional model of log p(x) = log Σ_y p(x | y) p(y), and given the label).

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
JUDGE = REPO / ".cache" / "mnist_judge.pt"          # judge A (the name it has always had)
JUDGE_B = REPO / ".cache" / "mnist_judge_b.pt"
CONFIDENT = 0.9


def _judge_net() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(64 * 7 * 7, 128), nn.ReLU(), nn.Linear(128, 10))


def _judge_b_net() -> nn.Module:
    def block(c_in, c_out):
        return [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU()]
    return nn.Sequential(
        *block(1, 48), *block(48, 48), nn.MaxPool2d(2),
        *block(48, 96), nn.MaxPool2d(2),
        *block(96, 128), nn.AdaptiveAvgPool2d(1),
        nn.Flatten(), nn.Dropout(0.3), nn.Linear(128, 10))


# name -> (builder, cache file, epochs, shift in pixels, seed)
JUDGES = {"A": (_judge_net, JUDGE, 2, 0, 0), "B": (_judge_b_net, JUDGE_B, 3, 2, 1)}


def _as_input(x_uint8: torch.Tensor) -> torch.Tensor:
    return x_uint8.float() / 255.0 - 0.5


def _shifted(x: torch.Tensor, shift: int, gen: torch.Generator) -> torch.Tensor:
    """Each image rolled by up to ``shift`` pixels each way (MNIST's border is black)."""
    if not shift:
        return x
    out = torch.empty_like(x)
    moves = torch.randint(-shift, shift + 1, (x.shape[0], 2), generator=gen)
    for i, (dy, dx) in enumerate(moves.tolist()):
        out[i] = torch.roll(x[i], (dy, dx), dims=(-2, -1))
    return out


def mnist_judge(name: str = "A") -> nn.Module:
    """A cached MNIST classifier (see the module's docstring), trained here the first time
    (judge A about 2 minutes on 2 cores, judge B about 6)."""
    from flowlib.data import load_images

    build, path, epochs, shift, seed = JUDGES[name]
    net = build()
    if path.is_file():
        net.load_state_dict(torch.load(path, weights_only=True))
        return net.eval()
    train = load_images("mnist", "train")
    test = load_images("mnist", "test")
    x, y = train.images, torch.as_tensor(train.labels)
    torch.manual_seed(seed)
    net = build()
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(seed)
    start = time.monotonic()
    net.train()
    for epoch in range(epochs):
        order = torch.randperm(x.shape[0], generator=gen)
        for i in range(0, x.shape[0], 128):
            idx = order[i:i + 128]
            loss = nn.functional.cross_entropy(net(_as_input(_shifted(x[idx], shift, gen))), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    net.eval()
    with torch.no_grad():
        pred = torch.cat([net(_as_input(test.images[i:i + 1000])).argmax(1)
                          for i in range(0, test.images.shape[0], 1000)])
    accuracy = float((pred == torch.as_tensor(test.labels)).float().mean())
    print(f"judge {name} trained in {time.monotonic() - start:.0f} s: {accuracy:.2%} test accuracy", file=sys.stderr)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(net.state_dict(), path)
    return net


@torch.no_grad()
def judge_probs(net: nn.Module, x_uint8: torch.Tensor) -> torch.Tensor:
    return torch.cat([net(_as_input(x_uint8[i:i + 500])).softmax(1) for i in range(0, x_uint8.shape[0], 500)])


@torch.no_grad()
def confident_share(net: nn.Module, x_uint8: torch.Tensor) -> float:
    """The share read as some digit with confidence ≥ CONFIDENT."""
    return float((judge_probs(net, x_uint8).max(1).values >= CONFIDENT).float().mean())


@torch.no_grad()
def asked_for_share(net: nn.Module, x_uint8: torch.Tensor, labels: torch.Tensor) -> float:
    """The share read as the digit that was asked for, with confidence ≥ CONFIDENT."""
    probs = judge_probs(net, x_uint8)
    return float((probs[torch.arange(len(labels)), labels] >= CONFIDENT).float().mean())


@torch.no_grad()
def draw_samples(model, n: int, temperature: float, seed: int = 0, label: int | None = None) -> torch.Tensor:
    """n samples (uint8) at a temperature; a conditional model's of one class when ``label`` is given."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    for start in range(0, n, 250):
        eps = model.sample_eps(min(250, n - start), gen)
        m = eps[0].shape[0]
        labels = None if label is None else torch.full((m,), label)
        x = model.sample(m, temperature=temperature, eps=eps, labels=labels)
        out.append(model.to_uint8(torch.nan_to_num(x.float(), nan=0.0)))
    return torch.cat(out)


@torch.no_grad()
def nearest_rms(x: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """For each image in x, the RMS pixel distance (0..255) to its nearest image in reference."""
    a = x.flatten(1).float()
    b = reference.flatten(1).float()
    d2 = torch.cdist(a, b).pow(2) / a.shape[1]
    return d2.min(1).values.sqrt()


@torch.no_grad()
def test_bits_per_dim(model, images: torch.Tensor, labels: torch.Tensor | None = None) -> float:
    """Mean bits/dim of test images with the trainer's fixed evaluation noise (seed 0)."""
    gen = torch.Generator().manual_seed(0)
    total = 0.0
    for i in range(0, images.shape[0], 500):
        y = None if labels is None else labels[i:i + 500]
        total += float(model.bits_per_dim(images[i:i + 500], generator=gen, labels=y).double().sum())
    return total / images.shape[0]


def _mnist_unconditional(args, model, judges, real) -> None:
    samples = draw_samples(model, args.n, args.temperature, args.seed)
    for name, net in judges.items():
        print(f"{args.checkpoint}: judge {name}: {confident_share(net, samples):.1%} of {args.n} samples at "
              f"T={args.temperature:g} read as a digit with confidence ≥ {CONFIDENT} "
              f"(real test digits: {confident_share(net, real.images[:args.n]):.1%})")


def _mnist_conditional(args, model, judges, real) -> None:
    from flowlib.analysis.classes import generative_accuracy
    per_class = {name: [] for name in judges}
    for k in range(model.n_classes):
        samples = draw_samples(model, args.n, args.temperature, args.seed + k, label=k)
        for name, net in judges.items():
            per_class[name].append(asked_for_share(net, samples, torch.full((args.n,), k)))
    for name, shares in per_class.items():
        real_share = asked_for_share(judges[name], real.images, torch.as_tensor(real.labels))
        print(f"{args.checkpoint}: judge {name}: {sum(shares) / len(shares):.1%} of {args.n} samples per digit at "
              f"T={args.temperature:g} read as the digit asked for with confidence ≥ {CONFIDENT} "
              f"(real test digits read as their label: {real_share:.1%})")
        print("    per digit: " + "  ".join(f"{k}: {s:.1%}" for k, s in enumerate(shares)))
    with torch.no_grad():
        acc = generative_accuracy(model, real.images, torch.as_tensor(real.labels))
    print(f"{args.checkpoint}: generative classifier argmax p(y | x): {acc:.2%} right on the "
          f"{real.images.shape[0]:,} test digits")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dataset", choices=["mnist", "faces"])
    parser.add_argument("checkpoint", help="a Flow Lab checkpoint (e.g. checkpoints/mnist-fast.pt)")
    parser.add_argument("--n", type=int, default=1000,
                        help="samples to score (default 1000; per class for a conditional model)")
    parser.add_argument("--temperature", type=float, default=0.7)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--judges", default="A,B", help="MNIST judges to use (default A,B)")
    parser.add_argument("--bpd", action="store_true", help="also the bits/dim of the whole test set")
    args = parser.parse_args(argv)
    from flowlib.core.checkpoint import load_model
    from flowlib.data import load_images

    torch.set_num_threads(max(1, torch.get_num_threads()))
    model, _ = load_model(args.checkpoint)
    if args.dataset == "mnist":
        judges = {name.strip(): mnist_judge(name.strip()) for name in args.judges.split(",")}
        real = load_images("mnist", "test")
        if getattr(model, "n_classes", 0):
            _mnist_conditional(args, model, judges, real)
        else:
            _mnist_unconditional(args, model, judges, real)
    else:
        samples = draw_samples(model, args.n, args.temperature, args.seed)
        train = load_images("faces", "train").images
        test = load_images("faces", "test").images
        s = nearest_rms(samples, train)
        t = nearest_rms(test, train)
        print(f"{args.checkpoint}: RMS distance to the nearest training photo, median "
              f"{s.median():.1f} for {args.n} samples at T={args.temperature:g} "
              f"(min {s.min():.1f}); {t.median():.1f} for the {test.shape[0]} held-out photos "
              f"(min {t.min():.1f})")
    if args.bpd:
        real = load_images(args.dataset, "test")
        line = f"{args.checkpoint}: test bits/dim {test_bits_per_dim(model, real.images):.4f}"
        if getattr(model, "n_classes", 0):
            line += (" for log p(x) = log Σ_y p(x | y) p(y); "
                     f"{test_bits_per_dim(model, real.images, torch.as_tensor(real.labels)):.4f} given the label")
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
