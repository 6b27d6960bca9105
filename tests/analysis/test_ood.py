"""flowlib.analysis.ood: the comparison sets and the scores the likelihood page shows."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from flowlib import FlowConfig, FlowModel
from flowlib.analysis.ood import (
    comparison_sets,
    constant_images,
    fit_to_shape,
    gaussian_shell,
    likelihood_flags,
    score_images,
    subset,
    typicality_flags,
    uniform_noise,
)


def test_constant_images_cover_every_grey_level_once():
    imgs = constant_images((1, 4, 4))
    assert imgs.shape == (256, 1, 4, 4) and imgs.dtype == np.uint8
    assert sorted(int(i.flat[0]) for i in imgs) == list(range(256))
    assert all((i == i.flat[0]).all() for i in imgs)
    few = constant_images((3, 2, 2), n=5)
    assert [int(i.flat[0]) for i in few] == [0, 64, 128, 191, 255]


def test_fit_to_shape_pads_and_crops_exactly():
    x = np.arange(2 * 1 * 4 * 4, dtype=np.uint8).reshape(2, 1, 4, 4)
    padded = fit_to_shape(x, (1, 8, 8))
    assert padded.shape == (2, 1, 8, 8)
    assert (padded[:, :, 2:6, 2:6] == x).all() and padded.sum() == x.astype(int).sum()
    cropped = fit_to_shape(padded, (1, 4, 4))
    assert (cropped == x).all()
    colour = fit_to_shape(x, (3, 4, 4))
    assert colour.shape == (2, 3, 4, 4) and (colour[:, 1] == x[:, 0]).all()


def test_noise_and_subset_are_seeded():
    assert (uniform_noise((1, 3, 3), 5, seed=1) == uniform_noise((1, 3, 3), 5, seed=1)).all()
    data = np.arange(100)
    assert (subset(data, 10, seed=2) == subset(data, 10, seed=2)).all()
    assert len(set(subset(data, 10).tolist())) == 10 and len(subset(data, 500)) == 100


def test_flags_one_and_two_sided():
    ref = np.linspace(1.0, 2.0, 1001)
    values = np.array([0.1, 1.5, 9.0])
    assert likelihood_flags(ref, values).tolist() == [False, False, True]   # too likely passes
    assert typicality_flags(ref, values).tolist() == [True, False, True]    # ... not here


def test_gaussian_shell_matches_sampling():
    torch.manual_seed(0)
    norms = torch.randn(20000, 784).norm(dim=1)
    mean, sd = gaussian_shell(784)
    assert abs(norms.mean().item() - mean) < 0.02 and abs(norms.std().item() - sd) < 0.02
    assert abs(mean - 28.0) < 0.01 and abs(sd - 2 ** -0.5) < 0.01


def test_score_images_equals_the_models_bits_per_dim():
    torch.manual_seed(0)
    model = FlowModel(FlowConfig(image_shape=(1, 8, 8), levels=2, steps=1, hidden=8)).eval()
    imgs = uniform_noise((1, 8, 8), 7, seed=3)
    model.initialize(model.preprocess(torch.from_numpy(imgs)))
    scores = score_images(model, imgs, batch=3, seed=5)
    assert scores.total.shape == (7,) and scores.prior_levels.shape == (7, 2)
    with torch.no_grad():
        g = torch.Generator().manual_seed(5)
        parts = [model.bits_per_dim_terms(torch.from_numpy(imgs[i:i + 3]), generator=g) for i in range(0, 7, 3)]
    expected = torch.cat([p.total for p in parts]).numpy()
    np.testing.assert_allclose(scores.total, expected, rtol=1e-6)
    budget = scores.budget()
    assert list(budget)[:2] == ["z1 prior", "z2 prior"]
    assert sum(budget.values()) == pytest.approx(float(scores.total.mean()), rel=1e-5)


def test_comparison_sets_without_a_dataset_still_has_noise_and_constants():
    sets = comparison_sets(None, (1, 8, 8), n=10)
    assert [s.key for s in sets] == ["noise", "constant"]
    assert sets[0].images.shape == (10, 1, 8, 8)
