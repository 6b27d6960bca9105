"""Exact maths of flowlib against brute force: Jacobians, inverses, masks, bits/dim by hand."""

from __future__ import annotations

import io
import itertools
import json
import math

import pytest
import torch

from flowlib import PRESETS, FlowConfig, FlowModel, config, preset
from flowlib.core.layers import ActNorm, Coupling, VariationalDequantizer
from flowlib.core.ops import channel_split_sizes, checkerboard_mask, squeeze2d, unsqueeze2d
from flowlib.core.permutations import InvConv1x1, InvConv1x1LU
from flowlib.env import REPO_ROOT

# Every choice the config declares: a new coupling, permutation, mask or prior is covered here
# the moment it is declared in flowlib/config.py.
COUPLINGS, PERMUTATIONS, MASKS, PRIORS = config.COUPLINGS, config.PERMUTATIONS, config.MASKS, config.PRIORS
# 2×8×8 (two channels, two levels) is the slow half: `make test-fast` checks every combination at 1×4×4
SHAPES = [(1, 4, 4), pytest.param((2, 8, 8), marks=pytest.mark.slow)]
COMBOS = list(itertools.product(COUPLINGS, PERMUTATIONS, MASKS, PRIORS))


def make_model(shape, coupling="affine", permutation="conv1x1_lu", mask="channel",
               prior="learned", dtype=torch.float64, noise=0.2, **kw):
    cfg = FlowConfig(image_shape=shape, levels=2, steps=2, hidden=8, coupling=coupling,
                     permutation=permutation, mask=mask, actnorm=True, split_prior=prior,
                     top_prior=prior, seed=3, **kw)
    model = FlowModel(cfg).to(dtype)
    gen = torch.Generator().manual_seed(0)
    # ActNorm init from a real batch, then perturb every parameter: a zero-initialised coupling
    # is the identity, and a test of the identity proves little.
    model.initialize(torch.rand(16, *shape, generator=gen, dtype=dtype) - 0.5)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(noise * torch.randn(p.shape, generator=gen, dtype=dtype))
    return model


def flat_latents(model, x):
    return torch.cat([z.flatten() for z in model.encode(x).zs])


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("coupling,permutation,mask,prior", COMBOS)
def test_inverse_and_logdet_match_brute_force(shape, coupling, permutation, mask, prior):
    model = make_model(shape, coupling, permutation, mask, prior)
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(3, *shape, generator=gen, dtype=torch.float64) - 0.5

    out = model.encode(x)
    assert out.logdet.shape == (3,) and out.log_pz.shape == (3,)
    assert [tuple(z.shape[1:]) for z in out.zs] == model.latent_shapes
    # The perturbed weights make some combinations stretch x by 10^4 (latents up to ~3·10^4 with
    # the RealNVP masks), so float64 rounding in the latents alone comes back as ~10^-9 in x, and
    # how much depends on the CPU's BLAS kernels. Bound the error relative to the latents' size:
    # measured here ≤ 5·10^-13 of it; a wrong inverse is off by O(0.1), far above.
    latent_scale = max(1.0, max(float(z.detach().abs().max()) for z in out.zs))
    assert (model.decode(out.zs) - x).abs().max() <= 1e-11 * latent_scale
    assert torch.allclose(sum(out.log_pz_levels), out.log_pz)

    # log|det J| of x -> concat(zs), by autograd, for each example separately.
    for i in range(3):
        jac = torch.autograd.functional.jacobian(lambda v: flat_latents(model, v.view(1, *shape)),
                                                 x[i].flatten())
        sign, logabsdet = torch.linalg.slogdet(jac)
        assert sign != 0
        assert torch.allclose(out.logdet[i], logabsdet, rtol=1e-6, atol=1e-8), (out.logdet[i], logabsdet)


@pytest.mark.parametrize("coupling,permutation,mask,prior", COMBOS)
def test_float32_roundtrip_and_sample_then_encode(coupling, permutation, mask, prior):
    # Milder weights than the float64 test: sampling from a prior whose scale is exp(large)
    # is ill-conditioned in float32 for reasons that have nothing to do with the flow.
    model = make_model((2, 8, 8), coupling, permutation, mask, prior, dtype=torch.float32, noise=0.05)
    x = torch.rand(4, 2, 8, 8) - 0.5
    assert (model.decode(model.encode(x).zs) - x).abs().max() < 1e-4

    eps = model.sample_eps(4, torch.Generator().manual_seed(5))
    samples = model.sample(4, temperature=0.8, eps=eps)
    back = model.encode(samples)
    for level_eps, got in zip(eps, back.eps):
        assert torch.allclose(got, level_eps * 0.8, rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("coupling,permutation,mask", list(itertools.product(COUPLINGS, PERMUTATIONS, MASKS)))
def test_gradients_reach_every_parameter(coupling, permutation, mask):
    # 8×8 so that even the last level's checkerboard (2×2) conditions on something.
    model = make_model((1, 8, 8), coupling, permutation, mask, "learned", dtype=torch.float32,
                       coupling_actnorm=True, noise=0.05)
    x = torch.randint(0, 256, (8, 1, 8, 8), dtype=torch.uint8)
    model.bits_per_dim(x).mean().backward()
    for name, p in model.named_parameters():
        if name.endswith(("lower", "upper")) and p.shape == (1, 1):
            continue  # a 1-channel LU conv has no off-diagonal entries to learn
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


@pytest.mark.parametrize("mask", MASKS)
def test_logit_input_transform_inverts_and_its_logdet_matches_brute_force(mask):
    model = make_model((1, 4, 4), mask=mask, input_transform="logit")
    x = torch.rand(2, 1, 4, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64) - 0.5
    out = model.encode(x)
    assert torch.allclose(model.decode(out.zs), x, atol=1e-9)
    for i in range(2):
        jac = torch.autograd.functional.jacobian(lambda v: flat_latents(model, v.view(1, 1, 4, 4)),
                                                 x[i].flatten())
        assert torch.allclose(out.logdet[i], torch.linalg.slogdet(jac)[1], rtol=1e-6, atol=1e-8)
    # samples come back through a sigmoid: always inside the pixel range (up to α = 1e-6)
    samples = model.sample(16, temperature=1.0, eps=model.sample_eps(16, torch.Generator().manual_seed(2)))
    assert samples.min() >= -0.5 - 1e-5 and samples.max() <= 0.5 + 1e-5   # up to α


def _mnist_like(n=6, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n, 1, 8, 8), generator=gen, dtype=torch.uint8)
    return torch.where(torch.rand(x.shape, generator=gen) < 0.7, torch.zeros_like(x), x)  # mostly 0


def test_variational_dequantisation_starts_as_exactly_uniform_noise():
    cfg = FlowConfig(image_shape=(1, 8, 8), levels=2, steps=2, hidden=8)
    uniform, learned = FlowModel(cfg), FlowModel(cfg.replace(dequantization="variational"))
    learned.load_state_dict(uniform.state_dict(), strict=False)   # same flow, fresh dequantiser
    x = _mnist_like()
    a = uniform.bits_per_dim_terms(x, generator=torch.Generator().manual_seed(2))
    b = learned.bits_per_dim_terms(x, generator=torch.Generator().manual_seed(2))
    assert torch.allclose(a.total, b.total, atol=1e-5)
    assert torch.equal(a.dequant, torch.zeros(6)) and b.dequant.abs().max() < 1e-6
    assert torch.allclose(uniform.preprocess(x, noise=False), learned.dequantize(x, noise=False)[0])


def test_learned_noise_log_q_is_the_density_of_u_and_u_stays_in_its_bin():
    torch.manual_seed(0)
    deq = VariationalDequantizer(channels=2, n_bins=32)
    with torch.no_grad():   # moderate weights: a saturated sigmoid has slope 0 in float32
        for p in deq.parameters():
            p.add_(0.05 * torch.randn(p.shape))
        deq.table.add_(0.5 * torch.randn(deq.table.shape))
    x = torch.randint(0, 32, (3, 2, 4, 6)).float()
    u, log_q = deq(x, torch.rand(x.shape, generator=torch.Generator().manual_seed(5)))
    assert u.shape == x.shape and log_q.shape == (3,)
    assert (u >= 0).all() and (u <= 1).all() and not torch.equal(u, u.round())
    # Change of variables by autograd: u = f(ε) elementwise with ε standard logistic, so
    # log q(u) = Σ [log p_logistic(ε) - log f'(ε)].
    eps = torch.logit(torch.rand(x.shape, generator=torch.Generator().manual_seed(5)), eps=1e-6)
    eps.requires_grad_(True)
    params = deq.table[x.long()]
    from flowlib.core.ops import squeeze2d, unsqueeze2d
    h = unsqueeze2d(deq.net(squeeze2d((x + 0.5) / 32 - 0.5)))
    u_again = torch.sigmoid(params[..., 0] + h[:, :2] + torch.exp(params[..., 1] + h[:, 2:]) * eps)
    (slope,) = torch.autograd.grad(u_again.sum(), eps)
    log_logistic = -torch.nn.functional.softplus(eps) - torch.nn.functional.softplus(-eps)
    expected = (log_logistic - torch.log(slope)).flatten(1).sum(1)
    assert torch.allclose(u_again, u, atol=1e-6)
    assert torch.allclose(log_q, expected.detach(), rtol=1e-4, atol=1e-3)


def test_variational_dequantiser_learns_and_its_model_round_trips():
    cfg = FlowConfig(image_shape=(1, 8, 8), levels=2, steps=1, hidden=8, dequantization="variational")
    model = FlowModel(cfg)
    assert FlowConfig.from_dict(cfg.to_dict()) == cfg and "learned dequantisation" in cfg.summary()
    assert FlowConfig.from_dict({k: v for k, v in cfg.to_dict().items() if k != "dequantization"}
                                ).dequantization == "uniform"   # configs saved before the field
    model.bits_per_dim(_mnist_like()).mean().backward()
    assert model.dequantizer.table.grad.abs().sum() > 0
    assert model.dequantizer.net.conv_out.conv.weight.grad.abs().sum() > 0
    twin = FlowModel(cfg)
    twin.load_state_dict(model.state_dict())
    gen = lambda: torch.Generator().manual_seed(1)
    assert torch.equal(model.bits_per_dim(_mnist_like(), generator=gen()),
                       twin.bits_per_dim(_mnist_like(), generator=gen()))


def test_config_round_trips_through_json():
    cfg = FlowConfig(image_shape=(3, 32, 32), levels=3, steps=5, hidden=32, coupling="additive",
                     permutation="shuffle", mask="realnvp", actnorm=False, split_prior="standard",
                     top_prior="learned", n_bits=5, seed=7)
    again = FlowConfig.from_dict(json.loads(cfg.to_json()))
    assert again == cfg and again.image_shape == (3, 32, 32)
    assert FlowConfig(**cfg.to_dict()) == cfg


def test_state_dict_round_trip_gives_identical_outputs_without_actnorm_reinit():
    model = make_model((2, 8, 8), "affine", "shuffle", "realnvp", "learned", dtype=torch.float32)
    buffer = io.BytesIO()
    torch.save({"config": model.config.to_dict(), "model": model.state_dict()}, buffer)
    buffer.seek(0)
    ckpt = torch.load(buffer, weights_only=True)
    loaded = FlowModel(FlowConfig.from_dict(ckpt["config"]))
    assert not loaded.is_initialized
    loaded.load_state_dict(ckpt["model"])
    assert loaded.is_initialized
    # Data with very different statistics: a re-initialised ActNorm would change the output.
    x = (torch.rand(4, 2, 8, 8) - 0.5) * 0.01 + 0.3
    a, b = model.encode(x), loaded.encode(x)
    for za, zb in zip(a.zs, b.zs):
        assert torch.equal(za, zb)
    assert torch.equal(a.logdet, b.logdet) and torch.equal(a.log_pz, b.log_pz)
    # The shuffle permutations come back from the state dict, not from a new draw.
    other_seed = FlowModel(FlowConfig.from_dict({**ckpt["config"], "seed": 99}))
    other_seed.load_state_dict(ckpt["model"])
    assert torch.equal(other_seed.encode(x).zs[0], a.zs[0])


def test_squeeze_on_arange_matches_exact_layout():
    x = torch.arange(2 * 4 * 4).view(1, 2, 4, 4)
    y = squeeze2d(x)
    assert y.shape == (1, 8, 2, 2)
    # channel 4c + 2di + dj at (i, j) is pixel (c, 2i+di, 2j+dj)
    assert y[0, :4, 0, 0].tolist() == [0, 1, 4, 5]
    assert y[0, :4, 1, 1].tolist() == [10, 11, 14, 15]
    assert y[0, 4:, 0, 1].tolist() == [18, 19, 22, 23]
    for c, i, j, di, dj in itertools.product(range(2), range(2), range(2), range(2), range(2)):
        assert y[0, 4 * c + 2 * di + dj, i, j] == x[0, c, 2 * i + di, 2 * j + dj]
    assert torch.equal(unsqueeze2d(y), x)


def test_squeeze_rejects_bad_shapes_with_message():
    with pytest.raises(ValueError, match="even height and width"):
        squeeze2d(torch.zeros(1, 1, 3, 4))
    with pytest.raises(ValueError, match=r"4-d tensor \[B, C, H, W\], got shape \(4, 4\)"):
        squeeze2d(torch.zeros(4, 4))
    with pytest.raises(ValueError, match="divisible by 4"):
        unsqueeze2d(torch.zeros(1, 3, 2, 2))


def test_mask_patterns_are_exact():
    assert checkerboard_mask(3, 4, 0)[0, 0].tolist() == [[1, 0, 1, 0], [0, 1, 0, 1], [1, 0, 1, 0]]
    assert checkerboard_mask(3, 4, 1)[0, 0].tolist() == [[0, 1, 0, 1], [1, 0, 1, 0], [0, 1, 0, 1]]
    assert channel_split_sizes(4) == (2, 2) and channel_split_sizes(5) == (2, 3)


@pytest.mark.parametrize("kind", COUPLINGS)
@pytest.mark.parametrize("mask", ["channel", "checkerboard"])
def test_coupling_leaves_x1_untouched_and_changes_x2(kind, mask):
    torch.manual_seed(0)
    coupling = Coupling(4, 4, 4, hidden=8, kind=kind, mask=mask, parity=1)
    with torch.no_grad():
        for p in coupling.parameters():
            p.add_(0.3 * torch.randn_like(p))
    x = torch.randn(2, 4, 4, 4)
    y, logdet = coupling(x)
    if mask == "channel":
        x1_sel = torch.zeros(1, 4, 1, 1, dtype=torch.bool)
        x1_sel[:, :2] = True
    else:
        x1_sel = checkerboard_mask(4, 4, 1).bool()
    x1_sel = x1_sel.expand_as(x)
    assert torch.equal(y[x1_sel], x[x1_sel])
    assert (y[~x1_sel] - x[~x1_sel]).abs().min() > 0
    if kind == "additive":
        assert torch.equal(logdet, torch.zeros(2))
    assert torch.allclose(coupling.inverse(y), x, atol=1e-5)


def test_actnorm_initialises_from_first_batch_only():
    layer = ActNorm(3)
    x = torch.randn(64, 3, 5, 5) * torch.tensor([2.0, 0.5, 7.0]).view(1, 3, 1, 1) + 3
    y, logdet = layer(x)
    assert torch.allclose(y.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-5)
    assert torch.allclose(y.std(dim=(0, 2, 3), unbiased=False), torch.ones(3), atol=1e-4)
    assert torch.allclose(logdet, torch.full((64,), 25 * layer.log_scale.sum().item()))
    before = layer.log_scale.detach().clone()
    layer(torch.randn(8, 3, 5, 5) * 100)
    assert torch.equal(layer.log_scale, before) and bool(layer.initialized)


@pytest.mark.parametrize("cls", [InvConv1x1LU, InvConv1x1])
def test_1x1_conv_logdet_equals_slogdet_of_assembled_weight(cls):
    gen = torch.Generator().manual_seed(2)
    layer = cls(6, gen)
    with torch.no_grad():
        for p in layer.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=gen))
    w = layer.weight_matrix().double()
    x = torch.randn(2, 6, 3, 5)
    _, logdet = layer(x)
    expected = 15 * torch.linalg.slogdet(w)[1]
    assert torch.allclose(logdet.double(), expected.expand(2), rtol=1e-5)
    if cls is InvConv1x1LU:
        f = layer.factors()
        assert torch.allclose(f["P"] @ f["L"] @ f["U"], layer.weight_matrix())
        assert torch.equal(torch.triu(f["L"], 1), torch.zeros(6, 6))
        assert torch.equal(torch.diagonal(f["L"]), torch.ones(6))
    # the cached inverse (autograd off) still follows parameter updates
    with torch.no_grad():
        y, _ = layer(x)
        assert torch.allclose(layer.inverse(y), x, atol=1e-5)
        for p in layer.parameters():
            p.mul_(1.1)
        y, _ = layer(x)
        assert torch.allclose(layer.inverse(y), x, atol=1e-5)


@pytest.mark.parametrize("cls", [InvConv1x1LU, InvConv1x1])
@pytest.mark.parametrize("update", ["fused_adam", "data_write"])
def test_cached_1x1_weight_follows_updates_that_do_not_bump_version_counters(cls, update):
    # Fused Adam (what the trainer uses) and writes through .data change the values without
    # touching _version; a cache keyed on versions served the first evaluation's W forever.
    gen = torch.Generator().manual_seed(3)
    layer = cls(4, gen)
    x = torch.randn(2, 4, 3, 3, generator=gen)
    with torch.no_grad():
        layer(x)  # fills the cache
    if update == "fused_adam":
        opt = torch.optim.Adam(layer.parameters(), lr=0.1, fused=True)
        for p in layer.parameters():
            p.grad = torch.randn(p.shape, generator=gen)
        opt.step()
    else:
        for p in layer.parameters():
            p.data.add_(0.1 * torch.randn(p.shape, generator=gen))
    with torch.no_grad():
        y, _ = layer(x)
        expected = torch.einsum("oc,bchw->bohw", layer.weight_matrix(), x)
        assert torch.allclose(y, expected, atol=1e-6)
        assert torch.allclose(layer.inverse(y), x, atol=1e-5)


def test_temperature_zero_returns_the_prior_mean():
    model = make_model((1, 4, 4), dtype=torch.float32)
    a = model.sample(3, temperature=0.0, eps=model.sample_eps(3, torch.Generator().manual_seed(0)))
    b = model.sample(3, temperature=0.0, eps=model.sample_eps(3, torch.Generator().manual_seed(1)))
    assert torch.allclose(a, b)
    # Encoding the mean image gives latents equal to their prior means: eps == 0 everywhere.
    out = model.encode(a)
    for e in out.eps:
        assert e.abs().max() < 1e-4


def test_per_level_temperature_changes_only_what_it_should():
    # float64: the perturbed model stretches some values ~1000×, which float32 round-off
    # would blur at the 1e-4 level; the claim is exact, so it is checked at 1e-8
    model = make_model((1, 4, 4), dtype=torch.float64)
    eps = model.sample_eps(2, torch.Generator().manual_seed(0))
    a = model.sample(2, temperature=[0.0, 1.0], eps=eps)
    out = model.encode(a)
    assert out.eps[0].abs().max() < 1e-8
    assert torch.allclose(out.eps[1], eps[1].double(), atol=1e-8)   # eps itself is float32 noise
    with pytest.raises(ValueError, match="one temperature per level"):
        model.sample(2, temperature=[0.5])


def _hand_bpd(pixel: int, n_bits: int) -> float:
    """Bits/dim of a constant image under an identity flow with an N(0, 1) prior, by hand."""
    n_bins = 2 ** n_bits
    x = (pixel // 2 ** (8 - n_bits) + 0.5) / n_bins - 0.5  # u = 0.5: the bin's centre
    log_density = -0.5 * math.log(2 * math.pi) - 0.5 * x * x  # per dimension
    return -(log_density - math.log(n_bins)) / math.log(2)


@pytest.mark.parametrize("n_bits,pixel", [(8, 0), (8, 255), (8, 77), (5, 0), (5, 200), (1, 128)])
def test_bits_per_dim_of_identity_model_equals_hand_computation(n_bits, pixel):
    # Additive couplings and priors start at zero, reversal has logdet 0, no ActNorm:
    # the whole flow is a volume-preserving rearrangement of the pixels.
    cfg = FlowConfig(image_shape=(1, 4, 4), levels=2, steps=2, hidden=4, coupling="additive",
                     permutation="reverse", mask="channel", actnorm=False,
                     split_prior="standard", top_prior="standard", n_bits=n_bits)
    model = FlowModel(cfg)
    x = torch.full((2, 1, 4, 4), pixel, dtype=torch.uint8)
    bpd = model.bits_per_dim(x, noise=False)
    assert torch.allclose(bpd, torch.full((2,), _hand_bpd(pixel, n_bits), dtype=torch.float32), atol=1e-5)
    if (n_bits, pixel) == (8, 0):
        assert abs(bpd[0].item() - 9.504679) < 1e-5  # (0.5·log 2π + 0.5·0.498046875² + log 256) / ln 2
    terms = model.bits_per_dim_terms(x, noise=False)
    assert torch.allclose(terms.prior_levels.sum(1) + terms.logdet + terms.quantisation, terms.total)
    assert torch.equal(terms.logdet, torch.zeros(2))


def test_dequantisation_noise_stays_inside_the_bin():
    model = FlowModel(FlowConfig(image_shape=(1, 4, 4), levels=1, n_bits=5))
    x = torch.tensor([0, 7, 8, 255], dtype=torch.uint8).repeat(4).view(1, 1, 4, 4)
    for _ in range(20):
        v = (model.preprocess(x) + 0.5) * 32  # back to bin units
        bins = torch.floor(v)
        assert torch.equal(bins, torch.floor(x.float() / 8))
        assert v.max() < 32


def test_bad_inputs_raise_value_errors_naming_what_is_expected():
    model = FlowModel(FlowConfig(image_shape=(1, 8, 8), levels=2))
    with pytest.raises(ValueError, match="NaN"):
        model.encode(torch.full((1, 1, 8, 8), float("nan")))
    with pytest.raises(ValueError, match=r"expected input of shape \[B, 1, 8, 8\], got \[1, 3, 8, 8\]"):
        model.encode(torch.zeros(1, 3, 8, 8))
    with pytest.raises(ValueError, match="shape"):
        model.encode(torch.zeros(8, 8))
    with pytest.raises(ValueError, match="0..255"):
        model.bits_per_dim(torch.full((1, 1, 8, 8), 300, dtype=torch.int32))
    with pytest.raises(ValueError, match="integer pixels"):
        model.bits_per_dim(torch.zeros(1, 1, 8, 8))


@pytest.mark.parametrize("kwargs,message", [
    (dict(levels=0), "levels must be an integer in 1..8, got 0"),
    (dict(hidden=0), "hidden must be an integer in 1..2048, got 0"),
    (dict(n_bits=9), "n_bits must be an integer in 1..8, got 9"),
    (dict(n_bits=0), "n_bits must be an integer in 1..8, got 0"),
    (dict(steps=2.5), "steps must be an integer"),
    (dict(permutation="lu"), "permutation must be one of reverse, shuffle, conv1x1, conv1x1_lu; got 'lu'"),
    (dict(coupling="affline"), "coupling must be one of affine, additive"),
    (dict(mask="stripes"), "mask must be one of"),
    (dict(split_prior="gauss"), "split_prior must be one of learned, standard"),
    (dict(dequantization="learned"), "dequantization must be one of uniform, variational; got 'learned'"),
    (dict(input_transform="log"), "input_transform must be one of none, logit; got 'log'"),
    (dict(levels=3), r"divisible by 2\*\*levels = 8, but the image is 28×28; use levels ≤ 2"),
    (dict(image_shape=(1, 28)), "three integers"),
    (dict(actnorm="yes"), "actnorm must be True or False"),
    (dict(affine_clamp=float("nan")), "affine_clamp"),
])
def test_config_validation_messages(kwargs, message):
    base = dict(image_shape=(1, 28, 28), levels=2)
    with pytest.raises(ValueError, match=message):
        FlowConfig(**{**base, **kwargs})


def test_unknown_config_field_is_named():
    with pytest.raises(ValueError, match=r"unknown FlowConfig field\(s\) \['depth'\]"):
        FlowConfig.from_dict({"depth": 3})


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets_build_and_run(name):
    cfg = PRESETS[name]
    small = cfg.replace(steps=min(cfg.steps, 2), hidden=8)
    model = FlowModel(small)
    x = torch.randint(0, 256, (2, *small.image_shape), dtype=torch.uint8)
    bpd = model.bits_per_dim(x)
    assert bpd.shape == (2,) and torch.isfinite(bpd).all()
    assert preset(name, image_shape=(1, 32, 32)).image_shape == (1, 32, 32)


def test_same_seed_same_model():
    a, b = FlowModel(PRESETS["faces-fast"]), FlowModel(PRESETS["faces-fast"])
    for (na, pa), (nb, pb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert na == nb and torch.equal(pa, pb)


def test_low_precision_networks_keep_the_flow_exactly_invertible():
    from flowlib.core.layers import low_precision_networks
    model = make_model((2, 8, 8), dtype=torch.float32, noise=0.05)
    x = torch.rand(4, 2, 8, 8, generator=torch.Generator().manual_seed(0)) - 0.5
    with low_precision_networks(torch.bfloat16):
        out = model.encode(x)
        assert out.logdet.dtype == torch.float32 and out.log_pz.dtype == torch.float32
        assert (model.decode(out.zs) - x).abs().max() < 1e-4
    reference = model.encode(x)
    assert not torch.equal(reference.logdet, out.logdet)  # the networks really ran in bf16
    assert torch.allclose(reference.logdet, out.logdet, rtol=0.05, atol=0.05)


@pytest.mark.slow
def test_bf16_networks_change_a_trained_models_bits_per_dim_by_under_0_01():

    from flowlib.core.checkpoint import load_model
    from flowlib.core.layers import low_precision_networks
    from flowlib.data import load_images
    path = REPO_ROOT / "checkpoints" / "mnist-fast.pt"
    model, _ = load_model(path)
    x = load_images("mnist", split="test").images[:256]
    with torch.no_grad():
        exact = model.bits_per_dim(x, noise=False).mean().item()
        with low_precision_networks(torch.bfloat16):
            fast = model.bits_per_dim(x, noise=False).mean().item()
    assert abs(exact - fast) < 0.01, (exact, fast)


# -- the level as a module, squeeze as a layer ---------------------------------------------

@pytest.mark.parametrize("mask,prior,transform", [("channel", "learned", "none"),
                                                  ("realnvp", "standard", "none"),
                                                  ("checkerboard", "learned", "logit")])
def test_each_level_inverts_exactly_and_its_terms_sum_to_the_models(mask, prior, transform):
    model = make_model((2, 8, 8), mask=mask, prior=prior, input_transform=transform)
    x = torch.rand(3, 2, 8, 8, generator=torch.Generator().manual_seed(4), dtype=torch.float64) - 0.5
    whole = model.encode(x)
    h, logdet = model.input_transform(x) if model.input_transform is not None else (x, x.new_zeros(3))
    for i, level in enumerate(model.levels):
        out = level(h)
        assert out.logdet.shape == (3,) and out.log_pz.shape == (3,)
        assert torch.equal(out.z, whole.zs[i]) and torch.equal(out.eps, whole.eps[i])
        assert torch.equal(out.log_pz, whole.log_pz_levels[i])
        assert (out.h_next is None) == (i == len(model.levels) - 1)
        # exact up to float64 round-off of the largest value that passed through the level
        # (the perturbed weights stretch some latents to ~1e4)
        scale = max(float(h.detach().abs().max()), float(out.z.detach().abs().max()))
        assert torch.allclose(level.inverse(out.h_next, out.z), h, atol=1e-13 * scale, rtol=0)
        logdet = logdet + out.logdet
        h = out.h_next
    assert torch.allclose(logdet, whole.logdet, atol=1e-10, rtol=0)
    assert torch.allclose(sum(whole.log_pz_levels), whole.log_pz, atol=1e-10, rtol=0)


def test_a_level_draws_a_missing_latent_from_its_prior():
    model = make_model((1, 4, 4))
    top = model.levels[-1]
    eps = torch.randn(2, *top.latent_shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    mean, log_scale = top.prior(None, 2, eps)
    h = top.inverse(None, None, temperature=0.5, eps=eps)
    assert torch.allclose(top(h).z, mean + 0.5 * torch.exp(log_scale) * eps, atol=1e-10)
    assert top.inverse(None, None, batch=3).shape == (3, 2, 2, 2)     # fresh noise, batch given
    with pytest.raises(ValueError, match=r"latent 1 must have shape \[B, 8, 1, 1\]"):
        top.inverse(None, torch.zeros(2, 4, 1, 1, dtype=torch.float64))
    with pytest.raises(ValueError, match="needs the kept half"):
        model.levels[0].inverse(None, torch.zeros(2, 2, 2, 2, dtype=torch.float64))


@pytest.mark.parametrize("prior", PRIORS)
def test_split_and_merge_cut_the_channels_in_one_place_and_undo_each_other(prior):
    model = make_model((1, 4, 4), prior=prior)
    first, top = model.levels
    h = torch.arange(2 * 4 * 2 * 2, dtype=torch.float64).view(2, 4, 2, 2)
    h_next, z = first.split(h)
    assert first.keep_channels == 2 and tuple(z.shape[1:]) == first.latent_shape == (2, 2, 2)
    assert torch.equal(h_next, h[:, :2]) and torch.equal(z, h[:, 2:])   # the kept half comes first
    assert torch.equal(first.merge(h_next, z), h)
    g = torch.arange(2 * 8, dtype=torch.float64).view(2, 8, 1, 1)
    kept, latent = top.split(g)
    assert kept is None and latent is g and top.merge(None, g) is g     # the top keeps nothing
    with pytest.raises(ValueError, match=r"latent 0 must have shape \[B, 2, 2, 2\], got \[2, 3, 2, 2\]"):
        first.merge(h_next, torch.zeros(2, 3, 2, 2, dtype=torch.float64))
    with pytest.raises(ValueError, match="needs the kept half"):
        first.merge(None, z)


@pytest.mark.parametrize("prior", PRIORS)
def test_latent_density_is_the_gaussian_log_density_and_draw_latent_its_inverse(prior):
    model = make_model((1, 4, 4), prior=prior)
    gen = torch.Generator().manual_seed(6)
    for level in model.levels:
        h_next = None if level.last else torch.randn(3, *level.out_shape, generator=gen, dtype=torch.float64)
        z = torch.randn(3, *level.latent_shape, generator=gen, dtype=torch.float64)
        mean, log_scale = level.prior(h_next, 3, z)
        if prior == "learned":
            assert float(log_scale.detach().abs().max()) > 1e-3   # the perturbed prior is not N(0, I)
        log_pz, eps = level.latent_density(h_next, z)
        brute = torch.distributions.Normal(mean, torch.exp(log_scale)).log_prob(z).flatten(1).sum(1)
        torch.testing.assert_close(log_pz, brute, rtol=1e-12, atol=1e-10)
        torch.testing.assert_close(eps, (z - mean) / torch.exp(log_scale), rtol=1e-12, atol=1e-12)
        # draw_latent puts eps back where latent_density found it, scaled by the temperature
        drawn = level.draw_latent(h_next, temperature=0.5, eps=eps)
        torch.testing.assert_close(drawn, mean + 0.5 * torch.exp(log_scale) * eps, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(level.latent_density(h_next, drawn)[1], 0.5 * eps, rtol=1e-10, atol=1e-10)
        assert torch.allclose(level.draw_latent(h_next, eps=eps), z, atol=1e-10)
    with pytest.raises(ValueError, match="needs the kept half"):
        model.levels[0].draw_latent(None, eps=torch.zeros(3, *model.levels[0].latent_shape))
    with pytest.raises(ValueError, match="batch size"):
        model.levels[-1].draw_latent(None)


@pytest.mark.slow
@pytest.mark.parametrize("mask", ["channel", "realnvp"])
def test_a_level_is_its_flat_layers_then_split_and_latent_density(mask):
    model = make_model((2, 8, 8), mask=mask)
    h = torch.rand(3, 2, 8, 8, generator=torch.Generator().manual_seed(8), dtype=torch.float64) - 0.5
    for level in model.levels:
        places = level.flat_layers()
        expected = [(layer, k, "pre") for k, step in enumerate(level.pre_steps) for layer in step.layers()]
        expected += [(level.squeeze, None, None)]
        expected += [(layer, k, "post") for k, step in enumerate(level.steps) for layer in step.layers()]
        assert [(p.layer, p.step, p.stage) for p in places] == expected
        out, t, logdet = level(h), h, h.new_zeros(3)
        for place in places:
            t, ld = place.layer(t)
            logdet = logdet + ld
        h_next, z = level.split(t)
        log_pz, eps = level.latent_density(h_next, z)
        assert torch.equal(z, out.z) and torch.equal(eps, out.eps) and torch.equal(log_pz, out.log_pz)
        assert (h_next is None and out.h_next is None) or torch.equal(h_next, out.h_next)
        torch.testing.assert_close(logdet, out.logdet, rtol=1e-12, atol=1e-10)
        # and back: merge, then every flat layer's inverse in reverse order
        back = level.merge(h_next, z)
        for place in reversed(places):
            back = place.layer.inverse(back)
        torch.testing.assert_close(back, level.inverse(h_next, z), rtol=0, atol=0)
        h = h_next


@pytest.mark.parametrize("transform", ["none", "logit"])
def test_encode_and_decode_are_transform_and_level_loops(transform):
    model = make_model((1, 8, 8), input_transform=transform)
    x = torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(9), dtype=torch.float64) - 0.5
    whole = model.encode(x)
    h, logdet = model.transform_input(x)
    assert (transform == "none") == (h is x)
    outs = model.encode_levels(h)
    assert all(torch.equal(out.z, z) for out, z in zip(outs, whole.zs)) and outs[-1].h_next is None
    for out in outs:
        logdet = logdet + out.logdet
    torch.testing.assert_close(logdet, whole.logdet, rtol=0, atol=0)
    states = model.decode_levels(whole.zs)                 # coarsest first: each level's input again
    inputs = [h] + [out.h_next for out in outs[:-1]]
    for state, level_input in zip(states, reversed(inputs)):
        assert torch.allclose(state, level_input, atol=1e-9)
    torch.testing.assert_close(states[0], model.levels[-1].inverse(None, whole.zs[-1]), rtol=0, atol=0)
    torch.testing.assert_close(model.transform_output(states[-1]), model.decode(whole.zs), rtol=0, atol=0)
    assert torch.allclose(model.transform_output(h), x, atol=1e-9)
    with pytest.raises(ValueError, match=r"expected input of shape \[B, 1, 8, 8\]"):
        model.check_input(torch.zeros(2, 1, 4, 4, dtype=torch.float64))
    with pytest.raises(ValueError, match="NaN or infinite"):
        model.check_input(torch.full((1, 1, 8, 8), float("nan"), dtype=torch.float64))


def test_squeeze_layer_has_zero_logdet_and_inverts_exactly():
    from flowlib.core.layers import Squeeze
    layer = Squeeze()
    x = torch.arange(2 * 3 * 4 * 6, dtype=torch.float64).view(2, 3, 4, 6)
    y, logdet = layer(x)
    assert torch.equal(y, squeeze2d(x)) and y.shape == (2, 12, 2, 3)
    assert logdet.shape == (2,) and torch.equal(logdet, torch.zeros(2, dtype=torch.float64))
    assert torch.equal(layer.inverse(y), x)
    with pytest.raises(ValueError, match="even height and width"):
        layer(torch.zeros(1, 1, 3, 4))


# -- the permutation protocol --------------------------------------------------------------

@pytest.mark.parametrize("kind", PERMUTATIONS)
def test_as_matrix_is_what_the_layer_does_and_gives_its_logdet(kind):
    from flowlib.core.permutations import ChannelMixing, make_permutation
    gen = torch.Generator().manual_seed(5)
    layer = make_permutation(kind, 6, gen).double()
    with torch.no_grad():
        for p in layer.parameters():   # move the convolutions away from their rotation start
            p.add_(0.3 * torch.randn(p.shape, generator=gen, dtype=torch.float64))
    assert isinstance(layer, ChannelMixing)
    x = torch.randn(2, 6, 3, 5, generator=gen, dtype=torch.float64)
    y, logdet = layer(x)
    w = layer.as_matrix()
    assert w.shape == (6, 6)
    assert torch.allclose(torch.einsum("oc,bchw->bohw", w.to(x.dtype), x), y, atol=1e-12)
    expected = 3 * 5 * torch.linalg.slogdet(w.double())[1]
    assert torch.allclose(logdet, expected.expand(2).to(logdet.dtype), atol=1e-9)
    assert torch.allclose(layer.log_abs_det().double(), expected / 15, atol=1e-9)
    f = {k: v.double() for k, v in layer.factors().items()}
    if kind == "conv1x1_lu":
        assert layer.learned and set(f) == {"P", "L", "U", "s"}
        assert torch.allclose(f["P"] @ f["L"] @ f["U"], w, atol=1e-12)
        assert torch.equal(torch.diagonal(f["U"]), f["s"])
    elif kind == "conv1x1":
        assert layer.learned and set(f) == {"W"} and torch.equal(f["W"], w)
    else:
        assert not layer.learned and set(f) == {"P"} and torch.equal(f["P"], w.double())
        assert torch.equal(w.sum(0), torch.ones(6)) and torch.equal(w.sum(1), torch.ones(6))
        assert torch.equal(layer.inverse(y), x)


# -- the shipped checkpoints ---------------------------------------------------------------

# bits/dim of the first 8 test images with noise from torch.Generator().manual_seed(0), for the
# demos retrained on 2026-12-06 (checkpoints/README.md): a change here means the model code
# now computes something else from the same weights.
SHIPPED_BPD = {
    "mnist-fast": ("mnist", [0.9215164184570312, 1.1164369583129883, 0.5231380462646484,
                             1.2563705444335938, 1.0093345642089844, 0.5532569885253906,
                             1.1118278503417969, 0.9965524673461914]),
    "faces-fast": ("faces", [4.504591464996338, 5.23545503616333, 5.260097026824951,
                             4.512633323669434, 5.090592384338379, 4.934788703918457,
                             4.695508003234863, 4.818388938903809]),
}


@pytest.mark.parametrize("name", sorted(SHIPPED_BPD))
def test_shipped_checkpoints_score_as_recorded_and_load_from_the_old_layout(name, tmp_path):

    from flowlib.core.checkpoint import load_checkpoint, load_model, model_payload, save_checkpoint
    from flowlib.data import load_images
    path = REPO_ROOT / "checkpoints" / f"{name}.pt"
    model, ckpt = load_model(path)
    dataset, expected = SHIPPED_BPD[name]
    x = load_images(dataset, "test").images[:8]
    with torch.no_grad():
        bpd = model.bits_per_dim(x, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(bpd, torch.tensor(expected), atol=1e-5, rtol=0), bpd.tolist()
    # The same weights written as files were before the levels became modules (the top prior
    # on the model, as ``top_mean`` / ``top_log_scale``) load and score identically.
    top = f"levels.{model.config.levels - 1}."
    payload = model_payload(model)
    state = payload["model"]
    payload["model"] = {"top_mean": state.pop(top + "prior_mean"),
                        "top_log_scale": state.pop(top + "prior_log_scale"), **state}
    save_checkpoint(tmp_path / "old.pt", payload)
    assert "top_mean" in load_checkpoint(tmp_path / "old.pt")["model"]          # the old layout on disk
    old, _ = load_model(tmp_path / "old.pt")
    assert torch.equal(old.state_dict()[top + "prior_mean"], model.state_dict()[top + "prior_mean"])
    with torch.no_grad():
        assert torch.equal(old.bits_per_dim(x, generator=torch.Generator().manual_seed(0)), bpd)


def test_an_optimizer_state_saved_with_the_old_layout_lines_up_on_resume(tmp_path):
    from flowlib.core.checkpoint import load_checkpoint, model_payload, save_checkpoint
    model = FlowModel(FlowConfig(image_shape=(1, 8, 8), levels=2, steps=1, hidden=4,
                                 dequantization="variational"))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.bits_per_dim(torch.randint(0, 256, (4, 1, 8, 8), dtype=torch.uint8)).mean().backward()
    opt.step()
    # Write the checkpoint as the code before this layout did: top prior first, on the model.
    payload = model_payload(model)
    state = payload["model"]
    payload["model"] = {"top_mean": state.pop("levels.1.prior_mean"),
                        "top_log_scale": state.pop("levels.1.prior_log_scale"), **state}
    new_state = opt.state_dict()
    n = len(new_state["param_groups"][0]["params"])
    payload["optimizer"] = {"param_groups": new_state["param_groups"],
                            "state": {(j + 2) % n: v for j, v in new_state["state"].items()}}
    save_checkpoint(tmp_path / "old.pt", payload)

    ckpt = load_checkpoint(tmp_path / "old.pt")
    resumed = FlowModel(model.config)
    resumed.load_state_dict(ckpt["model"])
    resumed_opt = torch.optim.Adam(resumed.parameters(), lr=1e-3)
    resumed_opt.load_state_dict(ckpt["optimizer"])
    for p, q in zip(model.parameters(), resumed.parameters()):
        assert torch.equal(p, q)
        assert torch.equal(opt.state[p]["exp_avg"], resumed_opt.state[q]["exp_avg"])


def test_a_training_forward_leaves_the_allocator_alone(monkeypatch):
    # The allocator setting belongs to the training process (the trainer, the CLI, the
    # benchmarks call flowlib.machine.memory.tune_for_training); the model never switches it.
    import flowlib.machine.memory as speed
    calls = []
    monkeypatch.setattr(speed, "tune_for_training", lambda: calls.append(1))
    model = FlowModel(FlowConfig(image_shape=(1, 4, 4), levels=1, steps=1, hidden=4)).train()
    model.bits_per_dim(torch.randint(0, 256, (2, 1, 4, 4), dtype=torch.uint8)).mean().backward()
    assert calls == [] and not hasattr(speed, "disable_auto_tuning")
