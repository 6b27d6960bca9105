"""Class conditioning of a flow's priors (Glow's ``ycond``) and the sums over labels.

Notation (K classes, y one label, x an image, z_l level l's latent, h_l what level l keeps):

    p(x | y) = Π_l p(z_l | h_l, y) · |det ∂z/∂x|     the flow is the same for every y: the
                                                     label enters only the priors
    p(x)     = Σ_y p(x | y) p(y)                     p(y) = 1/K (uniform), so
    log p(x) = logsumexp_y [Σ_l log p(z_l | h_l, y) + log p(y)] + log|det|
    p(y | x) = softmax_y [Σ_l log p(z_l | h_l, y) + log p(y)]      (the Jacobian cancels)

So the exact marginal costs one pass through the flow and one evaluation of each conditional
prior per class. A conditional prior is the unconditional one shifted by a learned table:

    mean(h, y)      = mean(h) + table[y, :c]         (top level: one entry per latent value;
    log_scale(h, y) = log_scale(h) + table[y, c:]     split levels: one per channel)

The table starts at zero, so a conditional model starts exactly as its unconditional twin.
Glow's classifier on the top latent (``ClassifierHead``) is optional: its cross-entropy,
weighted by ``FlowConfig.class_loss_weight``, is added to the training objective.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .layers import gaussian_log_prob

__all__ = ["ClassTable", "ClassifierHead", "class_labels", "marginal_terms", "log_class_prior"]


class ClassTable(nn.Module):
    """A learned per-class shift of a Gaussian prior's mean and log-scale, zero at the start.

    ``per_value=True`` (the top level): one shift per latent value, [K, 2c, h, w], so each class
    has its own mean latent image. Otherwise (split levels) one per channel, [K, 2c, 1, 1],
    which stays small at any image size; the split prior already sees where it is from h.
    """

    def __init__(self, n_classes: int, latent_shape: tuple[int, int, int], per_value: bool):
        super().__init__()
        c, h, w = latent_shape
        self.n_classes, self.channels = n_classes, c
        self.table = nn.Parameter(torch.zeros(n_classes, 2 * c, *((h, w) if per_value else (1, 1))))

    def extra_repr(self) -> str:
        return f"classes={self.n_classes}, shape={tuple(self.table.shape[1:])}"

    def shift(self, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean shift, log-scale shift) for ``labels`` [B]: each [B, c, h or 1, w or 1]."""
        rows = self.table[check_labels(labels, self.n_classes)]
        return rows[:, :self.channels], rows[:, self.channels:]

    def log_density_per_class(self, z: torch.Tensor, mean: torch.Tensor,
                              log_scale: torch.Tensor) -> torch.Tensor:
        """[B, K]: log N(z; mean + shift_k, exp(log_scale + shift_k)²) for every class k."""
        out = []
        for k in range(self.n_classes):
            dm, ds = self.table[k, :self.channels], self.table[k, self.channels:]
            out.append(gaussian_log_prob(z, mean + dm, log_scale + ds))
        return torch.stack(out, dim=1)


class ClassifierHead(nn.Module):
    """Glow's classifier on the top latent: a linear map of it to K logits, zero at the start.

    Glow averages the top latent over positions first; here every value feeds the map, which
    on a small top latent (7×7 for MNIST) keeps where a stroke is.
    """

    def __init__(self, n_classes: int, latent_shape: tuple[int, int, int]):
        super().__init__()
        self.linear = nn.Linear(math.prod(latent_shape), n_classes)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def forward(self, z_top: torch.Tensor) -> torch.Tensor:
        return self.linear(z_top.flatten(1))

    def class_bits(self, z_top: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """[B] bits per image: -log2 of the probability the head gives the right label."""
        logits = self.forward(z_top)
        return nn.functional.cross_entropy(logits, labels, reduction="none") / math.log(2)


def check_labels(labels, n_classes: int) -> torch.Tensor:
    """``labels`` as an int64 tensor [B]; ValueError unless every one is in 0..n_classes-1."""
    if not isinstance(labels, torch.Tensor) or labels.dim() != 1 or labels.is_floating_point():
        raise ValueError(f"labels must be an integer tensor [B], got {getattr(labels, 'shape', labels)!r}")
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= n_classes):
        raise ValueError(f"labels must be in 0..{n_classes - 1}, got {int(labels.min())}..{int(labels.max())}")
    return labels.long()


def class_labels(n_classes: int, batch: int, device=None) -> torch.Tensor:
    """The classes in turn, 0, 1, …, K-1, 0, 1, …: what a conditional model draws with when no
    labels are given (equal numbers of each class, so a stratified draw from the uniform p(y))."""
    return torch.arange(batch, device=device) % n_classes


def log_class_prior(n_classes: int) -> float:
    """log p(y) = log 1/K: every class equally likely a priori."""
    return -math.log(n_classes)


def marginal_terms(per_class: list[torch.Tensor | None], exact: list[torch.Tensor],
                   n_classes: int) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Per-level terms of log p(z) = log Σ_y p(y) Π_l p(z_l | h_l, y), and log p(y | z) [B, K].

    ``per_class[l]``: level l's [B, K] log-densities, one per class (None for a level the label
    does not enter, whose [B] term ``exact[l]`` holds). The sum over levels of what comes back
    is exactly the marginal; how it is shared among levels is a convention: an unconditioned
    level keeps its own term, a conditioned split level its average under p(y | z), and the
    top level (always conditioned, the last) the rest, so it carries the mixture over labels.
    """
    joint = sum(t for t in per_class if t is not None) + log_class_prior(n_classes)
    log_marginal = torch.logsumexp(joint, dim=1)
    posterior = joint - log_marginal[:, None]
    weights = posterior.exp()
    terms = [exact[l] if t is None else (weights * t).sum(1) for l, t in enumerate(per_class)]
    # log p(z) = Σ unconditioned terms + log_marginal; the top takes what the others leave
    unconditioned = sum(exact[l] for l, t in enumerate(per_class) if t is None)
    terms[-1] = log_marginal + unconditioned - sum(terms[:-1])
    return terms, posterior
