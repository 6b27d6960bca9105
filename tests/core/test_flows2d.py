"""Exact maths of the 2-D flows against brute force, as tests/core/test_flows.py does for images."""

from __future__ import annotations

import itertools

import pytest
import torch

from flowlib.core.flows2d import (
    COUPLINGS,
    MIXINGS,
    TARGETS,
    Coupling2D,
    FixedRotation,
    Flow2D,
    Flow2DConfig,
    PointwiseLayer,
    Swap,
    grid_points,
    make_optimizer,
    one_thread,
    points_dataset,
    sample_target,
    standard_normal_log_prob,
    train_steps,
)
from flowlib.core.layers import ActNorm
from flowlib.core.permutations import InvConv1x1LU

COMBOS = list(itertools.product(COUPLINGS, MIXINGS, [True, False]))


def perturb(module: torch.nn.Module, noise: float = 0.3, seed: int = 0) -> None:
    """Move every parameter off its start: a zero-initialised coupling is the identity, and a
    test of the identity proves little."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(noise * torch.randn(p.shape, generator=gen, dtype=p.dtype))


def points(n: int = 5, seed: int = 1) -> torch.Tensor:
    return torch.randn(n, 2, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def autograd_logabsdet(fn, x: torch.Tensor) -> torch.Tensor:
    """log|det ∂fn/∂x| of a map R² -> R² at each row of x, by autograd (float64)."""
    out = []
    for row in x:
        jac = torch.autograd.functional.jacobian(lambda v: fn(v.view(1, 2)).view(2), row)
        sign, logabsdet = torch.linalg.slogdet(jac)
        assert sign != 0
        out.append(logabsdet)
    return torch.stack(out)


def layer_kinds() -> dict[str, torch.nn.Module]:
    gen = torch.Generator().manual_seed(4)
    actnorm = PointwiseLayer(ActNorm(2)).double()
    actnorm(points(64, seed=9) * 3 + 1)  # data-dependent start, then perturbed below
    layers = {
        "actnorm": actnorm,
        "swap": Swap().double(),
        "rotation": FixedRotation(gen).double(),
        "lu": PointwiseLayer(InvConv1x1LU(2, gen)).double(),
        "affine": Coupling2D("affine", hidden=8, zero_init=False).double(),
        "additive": Coupling2D("additive", hidden=8, zero_init=False).double(),
    }
    for layer in layers.values():
        perturb(layer)
    return layers


@pytest.mark.parametrize("kind", ["actnorm", "swap", "rotation", "lu", "affine", "additive"])
def test_every_layer_inverts_and_its_logdet_matches_autograd(kind):
    layer = layer_kinds()[kind]
    x = points()
    y, logdet = layer(x)
    assert y.shape == (5, 2) and logdet.shape == (5,)
    assert (layer.inverse(y) - x).abs().max() < 1e-6
    assert torch.allclose(logdet, autograd_logabsdet(lambda v: layer(v)[0], x), atol=1e-10)


@pytest.mark.parametrize("coupling,mixing,actnorm", COMBOS)
def test_whole_model_inverts_and_its_logdet_matches_autograd(coupling, mixing, actnorm):
    model = Flow2D(Flow2DConfig(steps=3, coupling=coupling, mixing=mixing, actnorm=actnorm,
                                hidden=8, zero_init=False, seed=2)).double()
    model.initialize(points(64, seed=7) * 2)
    perturb(model, noise=0.2)
    x = points()
    enc = model.encode(x)
    assert len(enc.step_outputs) == 3 and torch.equal(enc.step_outputs[-1], enc.z)
    assert (model.inverse(enc.z) - x).abs().max() < 1e-6
    assert torch.allclose(enc.logdet, autograd_logabsdet(lambda v: model(v)[0], x), atol=1e-9)
    # log p(x) = log N(z; 0, I) + Σ_k log|det J_k|, and the trace holds every term of that sum
    trace = model.trace(x)
    assert len(trace.logdets) == len(model.layers) == len(trace.names)
    assert torch.allclose(trace.log_prob(), model.log_prob(x))
    assert torch.allclose(sum(trace.logdets), enc.logdet)
    back = model.trace_inverse(enc.z)
    assert all((b - p).abs().max() < 1e-6 for b, p in zip(back, trace.points))


def test_coupling_jacobian_is_lower_triangular_with_exp_s_on_the_diagonal():
    model = Flow2D(Flow2DConfig(steps=2, mixing="lu", hidden=8, zero_init=False, seed=1)).double()
    model.initialize(points(64))
    perturb(model)
    coupling_index = model.names.index("step 2 · affine coupling")
    jac, u = model.jacobian([0.3, -0.7], coupling_index)
    assert jac[0, 1] == 0.0                  # y1 = x1 does not depend on x2: exactly zero
    assert jac[0, 0] == 1.0                  # y1 = x1
    assert jac[1, 0] != 0.0                  # y2 depends on x1 through s(x1) and t(x1)
    t, s = model.layers[coupling_index].shift_and_log_scale(u.view(1, 2)[:, :1])
    assert torch.allclose(jac[1, 1], torch.exp(s).squeeze())
    _, logdet = model.layers[coupling_index](u.view(1, 2))
    assert torch.allclose(logdet, torch.log(jac.diagonal()).sum())  # the sum of the diagonal's logs


def test_additive_coupling_logdet_is_exactly_zero():
    layer = Coupling2D("additive", hidden=8, zero_init=False)
    perturb(layer)
    _, logdet = layer(torch.randn(100, 2) * 5)
    assert torch.equal(logdet, torch.zeros(100))
    # with swaps and no ActNorm nothing in the flow changes volume: log p(x) = log N(z; 0, I)
    model = Flow2D(Flow2DConfig(steps=4, coupling="additive", mixing="swap", actnorm=False, zero_init=False))
    perturb(model)
    x = torch.randn(50, 2)
    z, logdet = model(x)
    assert torch.equal(logdet, torch.zeros(50))
    assert torch.equal(model.log_prob(x), standard_normal_log_prob(z))


@pytest.mark.parametrize("mixing", list(MIXINGS))
def test_zero_init_couplings_start_as_the_identity(mixing):
    model = Flow2D(Flow2DConfig(steps=4, mixing=mixing, actnorm=True, hidden=16))
    trace = model.trace(torch.randn(200, 2) * 3)
    couplings = [i for i, name in enumerate(trace.names) if "coupling" in name]
    assert len(couplings) == 4
    for i in couplings:
        assert torch.equal(trace.points[i + 1], trace.points[i])
        assert torch.equal(trace.logdets[i], torch.zeros(200))
    # random init: the same couplings now move points (what the page's toggle shows)
    moved = Flow2D(Flow2DConfig(steps=4, mixing=mixing, hidden=16, zero_init=False)).trace(torch.randn(200, 2))
    assert all((moved.points[i + 1] - moved.points[i]).abs().max() > 1e-3 for i in couplings)


def test_swap_and_zero_init_make_an_even_flow_exactly_the_identity():
    model = Flow2D(Flow2DConfig(steps=4, mixing="swap", actnorm=False))
    x = torch.randn(30, 2)
    z, logdet = model(x)
    assert torch.equal(z, x) and torch.equal(logdet, torch.zeros(30))


def test_lu_logdet_is_the_sum_of_log_abs_s():
    layer = PointwiseLayer(InvConv1x1LU(2, torch.Generator().manual_seed(3))).double()
    perturb(layer, noise=0.5)
    lu = layer.image_layer
    w = lu.weight_matrix()
    f = lu.factors()
    assert torch.allclose(f["P"] @ f["L"] @ f["U"], w)
    assert f["L"][0, 1] == 0 and f["U"][1, 0] == 0           # triangular factors
    _, logdet = layer(points(3))
    expected = torch.log(torch.abs(torch.diagonal(f["U"]))).sum()
    assert torch.allclose(logdet, expected.expand(3))
    assert torch.allclose(expected, lu.log_s.sum())
    assert torch.allclose(expected, torch.linalg.slogdet(w)[1])


def test_actnorm_data_init_gives_zero_mean_and_unit_variance():
    model = Flow2D(Flow2DConfig(steps=2, actnorm=True))
    assert not model.is_initialized()
    batch = torch.randn(512, 2) * torch.tensor([3.0, 0.2]) + torch.tensor([5.0, -1.0])
    model.initialize(batch)
    assert model.is_initialized()
    after = model.trace(batch).points[1]  # the first layer is step 1's ActNorm
    assert torch.allclose(after.mean(0), torch.zeros(2), atol=1e-5)
    assert torch.allclose(after.std(0, unbiased=False), torch.ones(2), atol=1e-4)
    # once initialised it is never re-initialised from whatever batch comes next
    before = [p.clone() for p in model.actnorms()[0].parameters()]
    model.initialize(torch.randn(64, 2))
    assert all(torch.equal(a, b) for a, b in zip(before, model.actnorms()[0].parameters()))


def test_training_lowers_the_loss_on_two_moons():
    torch.manual_seed(0)
    data = sample_target("two_moons", 2000, seed=0)
    model = Flow2D(Flow2DConfig(steps=4, hidden=32, mixing="lu"))
    opt = make_optimizer(model, lr=5e-3)
    with torch.no_grad():
        model.initialize(data[:256])
        before = -model.log_prob(data).mean().item()
    losses = train_steps(model, opt, data, 150, generator=torch.Generator().manual_seed(0))
    assert len(losses) == 150
    with torch.no_grad():
        after = -model.log_prob(data).mean().item()
    assert after < before - 0.5, (before, after)


def test_train_steps_stops_at_its_time_budget():
    model = Flow2D(Flow2DConfig(steps=2, hidden=8))
    losses = train_steps(model, make_optimizer(model), sample_target("rings", 500), 10_000,
                         time_budget_s=0.05)
    assert 1 <= len(losses) < 10_000


@pytest.mark.parametrize("name", list(TARGETS))
def test_targets_are_seeded_and_sized(name):
    a, b = sample_target(name, 300, seed=5), sample_target(name, 300, seed=5)
    assert a.shape == (300, 2) and a.dtype == torch.float32 and torch.equal(a, b)
    assert not torch.equal(a, sample_target(name, 300, seed=6))
    assert a.abs().max() < 4.5  # everything fits the page's fixed view


def test_points_dataset_and_grid():
    data = points_dataset([[0.0, 0.0], [2.0, 1.0]], n=400, spread=0.01)
    assert data.shape == (400, 2)
    assert ((data - torch.tensor([0.0, 0.0])).norm(dim=1) < 0.1).any()
    assert ((data - torch.tensor([2.0, 1.0])).norm(dim=1) < 0.1).any()
    with pytest.raises(ValueError, match="at least one point"):
        points_dataset([])
    g = grid_points(-1, 1, 3)
    assert g.shape == (9, 2) and g[1].tolist() == [0.0, -1.0] and g[3].tolist() == [-1.0, 0.0]


def test_config_errors_name_the_field():
    with pytest.raises(ValueError, match="mixing"):
        Flow2DConfig(mixing="shuffle")
    with pytest.raises(ValueError, match="coupling"):
        Flow2DConfig(coupling="spline")
    with pytest.raises(ValueError, match="steps"):
        Flow2DConfig(steps=0)


def test_one_thread_nests_across_callers_and_restores_the_count():
    before = torch.get_num_threads()
    with one_thread():
        with one_thread():
            assert torch.get_num_threads() == 1
        assert torch.get_num_threads() == 1  # the outer block still holds it
    assert torch.get_num_threads() == before


def test_warm_up_ramps_the_learning_rate_and_chunks_train_like_one_call():
    from flowlib.core.flows2d import WARMUP_STEPS
    data = sample_target("two_moons", 1000, seed=0)
    whole, chunked = Flow2D(Flow2DConfig(steps=2, hidden=16)), Flow2D(Flow2DConfig(steps=2, hidden=16))
    opt_w, opt_c = make_optimizer(whole, lr=5e-3), make_optimizer(chunked, lr=5e-3)
    gen_w, gen_c = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    one = train_steps(whole, opt_w, data, 1, generator=gen_w)
    assert opt_w.param_groups[0]["lr"] == pytest.approx(5e-3 / WARMUP_STEPS)   # step 1 of the ramp
    one += train_steps(whole, opt_w, data, 39, generator=gen_w, start_step=1)
    assert opt_w.param_groups[0]["lr"] == pytest.approx(5e-3)                   # the peak after it
    pieces = []
    for k in range(4):   # the page trains in chunks: the ramp continues across them
        pieces += train_steps(chunked, opt_c, data, 10, generator=gen_c, start_step=10 * k)
    assert pieces == one
    for a, b in zip(whole.parameters(), chunked.parameters()):
        assert torch.equal(a, b)
