"""The learned split prior of one image, level by level, and what it saves over N(0, I).

    view = prior_view(model, x)              # x [1, C, H, W] in model space
    view.label                               # a conditional model's class the priors were given
    view.levels[k].z, .mean, .log_scale      # [c, h, w] numpy: the latent and its predicted Gaussian
    view.bits(strength=1.0)                  # bits/dim of the image with the prior at this strength

A multi-scale flow sends half of its channels out at every level. That half, z, is scored
by a Gaussian whose mean μ and scale σ a small convolution computes from the half that stays
(the top level's from learned constants, or none). ``prior_view`` returns, for every level,
z, μ and log σ, and the log-density of z under the learned prior and under a standard
N(0, I), so a page can show both on the same image and the difference in bits.

``strength`` blends the two by hand: μ_s = s·μ and log σ_s = s·log σ, so s = 0 is N(0, I), s = 1
the trained prior; only the prior terms of the bits/dim change, the flow's log-determinant
does not.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from flowlib.core.layers import gaussian_log_prob

__all__ = ["LevelPrior", "PriorView", "prior_view"]


@dataclass
class LevelPrior:
    index: int                 # 0 = finest
    learned: bool              # False: this level's prior is N(0, I) in the model itself
    z: np.ndarray              # [c, h, w]
    mean: np.ndarray           # [c, h, w] μ predicted for z
    log_scale: np.ndarray      # [c, h, w] log σ

    def log_density(self, strength: float = 1.0) -> float:
        """log p(z) in nats under the prior blended towards N(0, I) (strength 0)."""
        z = torch.from_numpy(self.z)[None].double()
        mean = strength * torch.from_numpy(self.mean)[None].double()
        log_scale = strength * torch.from_numpy(self.log_scale)[None].double()
        return float(gaussian_log_prob(z, mean, log_scale)[0])

    def standardised(self, strength: float = 1.0) -> np.ndarray:
        """(z − μ_s)/σ_s: what is left to encode once the prior's prediction is taken out."""
        return (self.z - strength * self.mean) * np.exp(-strength * self.log_scale)


@dataclass
class PriorView:
    levels: list[LevelPrior]
    logdet: float              # nats: the flow's whole log-determinant at this image
    dims: int                  # D = C·H·W
    n_bits: int
    dequant: float = 0.0       # bits/dim of a learned dequantiser (0 for uniform noise)
    label: int | None = None   # the class a conditional model's priors were given (None: unconditional)

    def prior_bits(self, strength: float = 1.0) -> list[float]:
        """Each level's −log p(z) / (D ln 2): its share of the bits/dim."""
        scale = self.dims * math.log(2)
        return [-lv.log_density(strength) / scale for lv in self.levels]

    def bits(self, strength: float = 1.0) -> float:
        """The image's bits/dim with the prior at ``strength``: Σ prior terms − logdet/(D ln 2)
        + dequantisation + n_bits (``strength=1`` gives the model's own number)."""
        scale = self.dims * math.log(2)
        return sum(self.prior_bits(strength)) - self.logdet / scale + self.dequant + self.n_bits


@torch.no_grad()
def prior_view(model, x: torch.Tensor, dequant_bits: float = 0.0, label: int | None = None) -> PriorView:
    """Every level's latent and predicted Gaussian for one image ``x`` [1, C, H, W] (model
    space, e.g. ``model.dequantize(pixels, noise=False)[0]``).

    A class-conditional model's priors need a label: ``label``, or else the class the model
    itself finds most likely for ``x`` (its generative classifier); ``view.label`` says which.
    Unconditional models ignore ``label``.
    """
    if x.shape[0] != 1:
        raise ValueError(f"prior_view takes one image [1, C, H, W], got {list(x.shape)}")
    labels = None
    if model.n_classes:
        label = int(model.classify(x).argmax(1)[0]) if label is None else int(label)
        labels = torch.tensor([label], device=x.device)
    else:
        label = None
    h, logdet = model.transform_input(x)
    levels = []
    for k, level in enumerate(model.levels):
        out = level(h, labels)
        mean, log_scale = level.prior(out.h_next, 1, out.z, labels)
        learned = (level.prior_net is not None or level.prior_mean is not None
                   or level.class_table is not None)
        levels.append(LevelPrior(k, learned, out.z[0].double().numpy(), mean[0].double().numpy(),
                                 log_scale[0].double().numpy()))
        logdet = logdet + out.logdet
        h = out.h_next
    return PriorView(levels, float(logdet[0]), int(np.prod(x.shape[1:])), int(model.config.n_bits),
                     dequant_bits, label)
