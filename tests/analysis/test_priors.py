"""The learned prior's view of one image: its numbers are the model's own."""

from __future__ import annotations

import math

import pytest
import torch

from flowlib import FlowConfig, FlowModel
from flowlib.analysis.priors import prior_view


def _model(**conditional) -> FlowModel:
    cfg = FlowConfig(image_shape=(1, 8, 8), levels=2, steps=2, hidden=8, seed=3, **conditional)
    model = FlowModel(cfg).double()
    gen = torch.Generator().manual_seed(0)
    model.initialize(torch.rand(16, 1, 8, 8, generator=gen, dtype=torch.float64) - 0.5)
    with torch.no_grad():   # away from the zero start, so the priors predict something
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=gen, dtype=p.dtype))
    return model.eval()


@torch.no_grad()
def _bits(model, x, labels=None) -> float:
    enc = model.encode(x, labels)
    dims = x[0].numel()
    return float(-(enc.log_pz + enc.logdet)[0] / (dims * math.log(2))) + model.config.n_bits


@pytest.mark.parametrize("conditional", [{}, {"condition": "all", "n_classes": 3}], ids=["plain", "conditional"])
def test_the_learned_prior_gives_the_models_own_bits_and_standard_differs(conditional):
    model = _model(**conditional)
    x = torch.rand(1, 1, 8, 8, generator=torch.Generator().manual_seed(5), dtype=torch.float64) - 0.5
    view = prior_view(model, x)
    if conditional:
        best = int(model.classify(x).argmax(1)[0])
        assert view.label == best
        assert view.bits(1.0) == pytest.approx(_bits(model, x, torch.tensor([best])), abs=1e-9)
        other = (best + 1) % 3
        assert prior_view(model, x, label=other).bits(1.0) == pytest.approx(
            _bits(model, x, torch.tensor([other])), abs=1e-9)
    else:
        assert view.label is None
        assert view.bits(1.0) == pytest.approx(_bits(model, x), abs=1e-9)
    assert abs(view.bits(0.0) - view.bits(1.0)) > 1e-6   # N(0, I) scores the same z differently
