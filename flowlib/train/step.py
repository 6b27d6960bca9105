"""One training step, the same function wherever a Flow Lab model trains or is timed.

    loss = BitsPerDimLoss(model)                  # or DistributedDataParallel(BitsPerDimLoss(model))
    optimizer = make_optimizer(params, lr=1e-3)
    uniform = torch.rand(x_uint8.shape, generator=noise)   # the dequantisation noise's U[0, 1) draws
    result = train_step(loss, optimizer, params, x_uint8, uniform, clip=50.0, bf16=False)
    result.applied, result.loss, result.grad_norm
    train_step(..., labels=y)       # a conditional model: learns p(x | y) (and its classifier)

The trainer (``flowlib.train.loop``), the Train page's speed estimate
(``flowlib.jobs.estimate.measure_training_speed``) and the benchmarks (``benchmarks/run.py``,
``side_by_side.py``, ``contention.py``, ``peak.py``) all call :func:`train_step`, so what they time is the step
the trainer takes. The caller draws the noise: the trainer slices each torchrun rank's rows out
of the global batch's draws, so N processes see exactly the noise one process would.

A small module of its own (torch and ``flowlib.core`` only), so code that times a step does
not load the training loop or the run store.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Callable

import torch

from flowlib.core.layers import low_precision_networks
from flowlib.core.model import BitsPerDim, FlowModel

__all__ = ["make_optimizer", "batch_terms", "BitsPerDimLoss", "StepResult", "train_step", "forward_backward"]


def make_optimizer(params, lr: float) -> torch.optim.Adam:
    """Adam as every Flow Lab training loop builds it (trainer, Train page estimate, benchmarks).

    The fused kernel updates all ~100 small parameter tensors of a model in one call where
    the device has it (CPU, CUDA): a mnist-fast batch-32 bf16 step went from 28.9 to 26.0 ms
    here. Fused updates do not bump tensors' version counters, so nothing may key a cache
    on them (see ``flowlib.core.permutations._CachedWeightMixin``).
    """
    params = list(params)
    fused = bool(params) and all(p.device.type in ("cpu", "cuda") and p.is_floating_point()
                                 for p in params)
    return torch.optim.Adam(params, lr=lr, fused=fused or None)


def batch_terms(model: FlowModel, x_uint8: torch.Tensor, uniform: torch.Tensor,
                labels: torch.Tensor | None = None) -> BitsPerDim:
    """A batch's bits/dim terms, dequantised with the given U[0, 1) draws: the model's own
    (a conditional model's given ``labels``)."""
    return model.bits_per_dim_terms(x_uint8, uniform=uniform, labels=labels)


class BitsPerDimLoss(torch.nn.Module):
    """A model's bits/dim terms as a module's forward ``(x_uint8, uniform) -> BitsPerDim``.

    A module, so DistributedDataParallel can wrap it (DDP averages gradients only through its
    wrapped module's forward). ``terms`` computes the terms (:func:`batch_terms` unless a
    training session was given another, see ``flowlib.train.loop.Collaborators``).
    """

    def __init__(self, model: FlowModel,
                 terms: Callable[[FlowModel, torch.Tensor, torch.Tensor], BitsPerDim] = batch_terms):
        super().__init__()
        self.model = model
        self.terms = terms

    def forward(self, x_uint8: torch.Tensor, uniform: torch.Tensor, labels: torch.Tensor | None = None) -> BitsPerDim:
        if labels is None:
            return self.terms(self.model, x_uint8, uniform)
        return self.terms(self.model, x_uint8, uniform, labels)


@dataclass(frozen=True)
class StepResult:
    """What one step measured, as the batch's means (under torchrun, the global batch's)."""

    stats: tuple[float, ...]   # bits/dim, grad norm, prior bits per level (finest first), logdet bits, dequant bits
    applied: bool              # every statistic finite, so the optimizer stepped

    @property
    def loss(self) -> float:
        """The batch's mean bits/dim: the loss the step minimised."""
        return self.stats[0]

    @property
    def grad_norm(self) -> float:
        """The gradients' total norm before clipping."""
        return self.stats[1]


def forward_backward(loss: Callable[[torch.Tensor, torch.Tensor], BitsPerDim], optimizer: torch.optim.Optimizer,
                     x_uint8: torch.Tensor, uniform: torch.Tensor, bf16: bool = False,
                     labels: torch.Tensor | None = None):
    """The forward pass (coupling networks in bf16 when ``bf16``) and the backward pass of the
    mean objective (the bits/dim, plus a conditional model's weighted classification loss),
    into freshly zeroed gradients; returns ``(terms, mean bits/dim)``. Updates nothing."""
    precision = low_precision_networks(torch.bfloat16) if bf16 else contextlib.nullcontext()
    with precision:
        terms = loss(x_uint8, uniform) if labels is None else loss(x_uint8, uniform, labels)
    mean = terms.total.float().mean()
    objective = mean if terms.objective is None else terms.objective.float().mean()
    optimizer.zero_grad(set_to_none=True)
    objective.backward()
    return terms, mean


def train_step(loss: Callable[[torch.Tensor, torch.Tensor], BitsPerDim], optimizer: torch.optim.Optimizer,
               params: list, x_uint8: torch.Tensor, uniform: torch.Tensor, clip: float, *,
               bf16: bool = False,
               reduce: Callable[[torch.Tensor], torch.Tensor] | None = None,
               labels: torch.Tensor | None = None) -> StepResult:
    """One optimisation step on a uint8 batch; the step is applied only if everything is finite.

    ``loss(x_uint8, uniform)`` gives the batch's bits/dim terms (a :class:`BitsPerDimLoss`, or
    DistributedDataParallel around one). The mean total is back-propagated, the gradient norm
    of ``params`` is clipped at ``clip`` (``math.inf``: measured, never clipped), and the step
    statistics come to the host in one sync. ``reduce`` maps them first (the trainer passes
    the torchrun all-reduce, so every rank sees the same means and takes the same decision).
    ``optimizer.step()`` runs only when all of them are finite. Out-of-memory and every other
    error of the forward or backward pass propagate; nothing was updated then.
    """
    terms, mean = forward_backward(loss, optimizer, x_uint8, uniform, bf16, labels)
    norm = torch.nn.utils.clip_grad_norm_(params, clip)
    stats = torch.cat([mean.detach().reshape(1), norm.detach().float().reshape(1).to(mean.device),
                       terms.prior_levels.detach().float().mean(0),
                       terms.logdet.detach().float().mean().reshape(1),
                       terms.dequant.detach().float().mean().reshape(1)])
    if reduce is not None:
        stats = reduce(stats)
    values = tuple(stats.tolist())
    applied = all(math.isfinite(v) for v in values)
    if applied:
        optimizer.step()
    return StepResult(values, applied)
