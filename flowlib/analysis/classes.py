"""Classes and a flow: a generative classifier, class samples, and latent arithmetic.

    from flowlib.analysis.classes import (class_rows, classify_images, generative_accuracy,
                                          group_mean_latents, attribute_direction, move_along)
    x = class_rows(model, [3, 7], eps, temperature=0.7)         # a row per class, the same noise
    probs = classify_images(model, x_uint8)                     # [B, K] p(y | x), Bayes' rule
    acc = generative_accuracy(model, test_x, test_y)            # share whose argmax is right
    mean_a = group_mean_latents(model, sevens)                  # per level, the mean latent
    d = attribute_direction(mean_a, mean_b)                     # mean_b - mean_a, per level
    x_moved = model.decode(move_along(zs, d, alpha=0.8))        # z + α·d, decoded

Latent arithmetic is Glow's attribute manipulation (Kingma & Dhariwal 2018, section 5.3):
encode the images that have an attribute and those that do not, take the difference of their
mean latents, and move any image's latent along it. A flow makes this exact in both
directions: every image has a latent (``encode``) and every latent an image (``decode``). It
works with any model, conditional or not; the groups can be two classes or any two sets of
images. Everything here is torch only and runs under the caller's grad mode.
"""

from __future__ import annotations

from typing import Sequence

import torch

__all__ = ["class_rows", "classify_images", "generative_accuracy", "group_mean_latents",
           "attribute_direction", "move_along", "swap_label"]


def class_rows(model, classes: Sequence[int], eps: Sequence[torch.Tensor], temperature=0.7) -> torch.Tensor:
    """Samples [len(classes) · n, C, H, W]: for each class (a row) the same n noises ``eps``
    (per level [n, ...]) decoded under that class's prior, so the class is all that changes."""
    n = eps[0].shape[0]
    rows = len(classes)
    tiled = [e.repeat(rows, *([1] * (e.dim() - 1))) for e in eps]
    labels = torch.tensor(list(classes), dtype=torch.long, device=eps[0].device).repeat_interleave(n)
    return model.sample(rows * n, temperature=temperature, eps=tiled, labels=labels)


def classify_images(model, x_uint8: torch.Tensor, batch: int = 250) -> torch.Tensor:
    """[B, K] p(y | x) of a conditional model for integer images, at their bin centres (the
    median of learned noise): the model's own class likelihoods turned round by Bayes' rule."""
    out = []
    for start in range(0, x_uint8.shape[0], batch):
        x, _ = model.dequantize(x_uint8[start:start + batch], noise=False)
        out.append(model.classify(x).exp())
    return torch.cat(out)


def generative_accuracy(model, x_uint8: torch.Tensor, labels: torch.Tensor, batch: int = 250) -> float:
    """The share of images whose most likely class under p(y | x) is their label."""
    probs = classify_images(model, x_uint8, batch)
    return float((probs.argmax(1).cpu() == labels.cpu()).float().mean())


def group_mean_latents(model, x_uint8: torch.Tensor, batch: int = 250) -> list[torch.Tensor]:
    """Per level (finest first) the mean latent [1, c, h, w] of a group of integer images,
    each encoded at its bin centres."""
    sums, count = None, 0
    for start in range(0, x_uint8.shape[0], batch):
        x, _ = model.dequantize(x_uint8[start:start + batch], noise=False)
        zs = model.encode(x).zs
        part = [z.sum(0, keepdim=True) for z in zs]
        sums = part if sums is None else [a + b for a, b in zip(sums, part)]
        count += x.shape[0]
    if not count:
        raise ValueError("a group needs at least one image")
    return [s / count for s in sums]


def attribute_direction(mean_from: Sequence[torch.Tensor], mean_to: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """Per level, ``mean_to - mean_from``: the way from one group to the other in latent space."""
    return [b - a for a, b in zip(mean_from, mean_to)]


def move_along(zs: Sequence[torch.Tensor], direction: Sequence[torch.Tensor], alpha: float,
               levels: Sequence[bool] | None = None) -> list[torch.Tensor]:
    """``z + alpha · d`` at each level (only where ``levels[l]`` is True, when given)."""
    keep = [True] * len(zs) if levels is None else list(levels)
    return [z + alpha * d if on else z for z, d, on in zip(zs, direction, keep)]


def swap_label(model, x: torch.Tensor, label_from: torch.Tensor, label_to: torch.Tensor) -> torch.Tensor:
    """A conditional model's analogy: x's standardised latents ε under ``label_from``'s priors,
    decoded under ``label_to``'s; what the label does not explain (slant, thickness) stays."""
    eps = model.encode(x, label_from).eps
    return model.decode([None] * len(eps), temperature=1.0, eps=eps, labels=label_to)
