"""Class-conditional flows against brute force: p(x | y), the marginal over labels, p(y | x).

Every check runs on conditional configurations chosen to differ from the demo's (priors,
couplings, masks, permutations, class counts), with every parameter perturbed away from its
zero start, in float64.
"""

from __future__ import annotations

import math

import pytest
import torch

from flowlib import FlowConfig, FlowModel
from flowlib.config import ConfigError
from flowlib.size import parameter_count

# (condition, prior, coupling, permutation, mask, classes, input transform)
CONDITIONAL = [
    ("top", "learned", "affine", "conv1x1_lu", "channel", 3, "none"),
    ("all", "learned", "affine", "shuffle", "checkerboard", 4, "logit"),
    ("top", "standard", "additive", "reverse", "realnvp", 2, "none"),
    ("all", "standard", "affine", "conv1x1", "realnvp", 5, "logit"),
]
IDS = [f"{c[0]}-{c[1]}-{c[2]}-{c[4]}-K{c[5]}" for c in CONDITIONAL]


def make_conditional(condition="top", prior="learned", coupling="affine", permutation="conv1x1_lu",
                     mask="channel", classes=3, transform="none", shape=(2, 8, 8), weight=0.1,
                     noise=0.2, dtype=torch.float64, levels=2):
    cfg = FlowConfig(image_shape=shape, levels=levels, steps=2, hidden=8, coupling=coupling,
                     permutation=permutation, mask=mask, split_prior=prior, top_prior=prior,
                     input_transform=transform, condition=condition, n_classes=classes,
                     class_loss_weight=weight, seed=11)
    model = FlowModel(cfg).to(dtype)
    gen = torch.Generator().manual_seed(0)
    model.initialize(torch.rand(16, *shape, generator=gen, dtype=dtype) - 0.5)
    with torch.no_grad():   # away from the zero start: tables, head and flow all non-trivial
        for p in model.parameters():
            p.add_(noise * torch.randn(p.shape, generator=gen, dtype=dtype))
    return model


def images(n=5, shape=(2, 8, 8), seed=1, dtype=torch.float64):
    return torch.rand(n, *shape, generator=torch.Generator().manual_seed(seed), dtype=dtype) - 0.5


def brute_log_p_given(model, x, labels):
    """log p(x | y) by hand: the flow's pieces, each level's Gaussian written out with
    torch.distributions, the class table's row added to the unconditional prior, and the
    Jacobian's log-determinant by autograd."""
    h, logdet = model.transform_input(x)
    log_pz = torch.zeros(x.shape[0], dtype=x.dtype)
    for level in model.levels:
        t, ld = level.transform(h)
        logdet = logdet + ld
        h_next, z = level.split(t)
        mean, log_scale = level._unconditional_prior(h_next, x.shape[0], z)
        if level.class_table is not None:
            c = level.latent_shape[0]
            rows = level.class_table.table[labels]
            mean, log_scale = mean + rows[:, :c], log_scale + rows[:, c:]
        log_pz = log_pz + torch.distributions.Normal(mean, log_scale.exp()).log_prob(z).flatten(1).sum(1)
        h = h_next
    flat = lambda v: torch.cat([z.flatten() for z in model.encode(v.view(1, *x.shape[1:]), labels[:1]).zs])
    for i in range(x.shape[0]):
        jac = torch.autograd.functional.jacobian(flat, x[i].flatten())
        assert torch.allclose(logdet[i], torch.linalg.slogdet(jac)[1], rtol=1e-6, atol=1e-8)
    return log_pz + logdet


@pytest.mark.slow
@pytest.mark.parametrize("condition,prior,coupling,permutation,mask,classes,transform", CONDITIONAL, ids=IDS)
def test_log_p_given_a_label_is_the_gaussian_priors_plus_the_jacobian(condition, prior, coupling, permutation,
                                                                     mask, classes, transform):
    model = make_conditional(condition, prior, coupling, permutation, mask, classes, transform)
    x = images(3)
    for y in range(classes):
        labels = torch.full((3,), y)
        out = model.encode(x, labels)
        assert torch.equal(out.labels, labels) and out.log_posterior is None
        torch.testing.assert_close(out.log_pz + out.logdet, brute_log_p_given(model, x, labels),
                                   rtol=1e-10, atol=1e-9)
        assert torch.allclose(model.decode(out.zs), x, atol=1e-9)
        assert torch.allclose(sum(out.log_pz_levels), out.log_pz, atol=1e-10)
    # The label enters only the priors: the latents and the log-det are the same for every label.
    a, b = model.encode(x, torch.zeros(3, dtype=torch.long)), model.encode(x, torch.ones(3, dtype=torch.long))
    assert all(torch.equal(za, zb) for za, zb in zip(a.zs, b.zs)) and torch.equal(a.logdet, b.logdet)
    assert not torch.allclose(a.log_pz, b.log_pz)


@pytest.mark.parametrize("condition,prior,coupling,permutation,mask,classes,transform", CONDITIONAL, ids=IDS)
def test_log_p_of_x_is_the_sum_over_labels_and_p_y_given_x_is_bayes_rule(condition, prior, coupling,
                                                                        permutation, mask, classes, transform):
    model = make_conditional(condition, prior, coupling, permutation, mask, classes, transform)
    x = images(4, seed=2)
    given = torch.stack([model.log_prob(x, torch.full((4,), y)) for y in range(classes)], dim=1)   # [B, K]
    brute_marginal = torch.logsumexp(given + math.log(1 / classes), dim=1)
    out = model.encode(x)
    torch.testing.assert_close(out.log_pz + out.logdet, brute_marginal, rtol=1e-12, atol=1e-10)
    torch.testing.assert_close(model.log_prob(x), brute_marginal, rtol=1e-12, atol=1e-10)
    torch.testing.assert_close(sum(out.log_pz_levels), out.log_pz, rtol=1e-12, atol=1e-10)
    brute_posterior = torch.log_softmax(given, dim=1)
    torch.testing.assert_close(model.classify(x), brute_posterior, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(model.class_log_likelihoods(x), given, rtol=1e-10, atol=1e-9)
    assert torch.equal(out.labels, brute_posterior.argmax(1))
    # eps is standardised by the most likely class's prior
    for got, want in zip(out.eps, model.encode(x, out.labels).eps):
        torch.testing.assert_close(got, want, rtol=0, atol=0)
    # the marginal sits between the best label's joint and it plus log K (in nats)
    best = (given + math.log(1 / classes)).max(1).values
    assert (brute_marginal >= best - 1e-12).all() and (brute_marginal <= best + math.log(classes) + 1e-12).all()


@pytest.mark.parametrize("condition", ["top", "all"])
def test_bits_per_dim_given_labels_and_marginal_by_hand(condition):
    model = make_conditional(condition, shape=(1, 4, 4), classes=3)
    x = torch.randint(0, 256, (5, 1, 4, 4), generator=torch.Generator().manual_seed(3), dtype=torch.uint8)
    labels = torch.tensor([0, 1, 2, 1, 0])
    x_cont = (x.double() + 0.5) / 256 - 0.5      # noise=False: the middle of each bin
    d = 16
    for given in (labels, None):
        bpd = model.bits_per_dim(x, noise=False, labels=given)
        by_hand = -(model.log_prob(x_cont, given) - d * math.log(256)) / (d * math.log(2))
        torch.testing.assert_close(bpd, by_hand.to(bpd.dtype), rtol=1e-10, atol=1e-10)
    terms = model.bits_per_dim_terms(x, noise=False)
    torch.testing.assert_close(terms.prior_levels.sum(1) + terms.logdet + terms.dequant + 8, terms.total)
    assert terms.class_bits is None and terms.objective is None     # no labels: no classification loss


def test_glows_classification_loss_is_the_heads_cross_entropy_in_bits_weighted_into_the_objective():
    model = make_conditional("top", classes=4, weight=0.25)
    x = torch.randint(0, 256, (6, 2, 8, 8), generator=torch.Generator().manual_seed(4), dtype=torch.uint8)
    labels = torch.tensor([0, 1, 2, 3, 3, 1])
    terms = model.bits_per_dim_terms(x, noise=False, labels=labels)
    z_top = model.encode(model.preprocess(x, noise=False), labels).zs[-1]
    logits = z_top.flatten(1) @ model.classifier.linear.weight.T + model.classifier.linear.bias
    brute = -torch.log_softmax(logits, 1)[torch.arange(6), labels] / math.log(2)
    torch.testing.assert_close(terms.class_bits, brute, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(terms.objective, terms.total + 0.25 * brute, rtol=1e-12, atol=1e-12)
    assert FlowModel(model.config.replace(class_loss_weight=0.0)).classifier is None


@pytest.mark.parametrize("condition", ["top", "all"])
def test_gradients_reach_every_parameter_with_labels_and_through_the_marginal(condition):
    model = make_conditional(condition, shape=(1, 8, 8), classes=3, dtype=torch.float32, noise=0.05)
    x = torch.randint(0, 256, (9, 1, 8, 8), dtype=torch.uint8)
    labels = torch.arange(9) % 3
    model.bits_per_dim_terms(x, labels=labels).objective.mean().backward()
    for name, p in model.named_parameters():
        if name.endswith(("lower", "upper")) and p.shape == (1, 1):
            continue
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name
    tables = [lvl.class_table.table for lvl in model.levels if lvl.class_table is not None]
    assert len(tables) == (2 if condition == "all" else 1)
    for table in tables:      # each class's row learns from its own images only
        model.zero_grad()
        model.bits_per_dim(x[:2], labels=torch.tensor([0, 0])).mean().backward()
        assert table.grad[0].abs().sum() > 0 and table.grad[1:].abs().sum() == 0
    model.zero_grad()
    model.bits_per_dim(x).mean().backward()    # the marginal: every class's row gets a gradient
    assert all(t.grad[k].abs().sum() > 0 for t in tables for k in range(3))


def test_samples_of_a_class_encode_back_to_their_noise_and_the_label_is_all_that_changes():
    model = make_conditional("all", classes=3, dtype=torch.float32, noise=0.05)
    eps = model.sample_eps(6, torch.Generator().manual_seed(5))
    labels = torch.tensor([0, 1, 2, 2, 1, 0])
    x = model.sample(6, temperature=0.8, eps=eps, labels=labels)
    back = model.encode(x, labels)
    for level_eps, got in zip(eps, back.eps):
        assert torch.allclose(got, level_eps * 0.8, rtol=1e-3, atol=1e-3)
    same_noise = [e[:1].expand(3, *e.shape[1:]) for e in eps]
    row = model.sample(3, temperature=0.8, eps=same_noise, labels=torch.arange(3))
    assert all((row[i] - row[j]).abs().max() > 1e-3 for i in range(3) for j in range(i))
    # without labels: the classes in turn
    torch.testing.assert_close(model.sample(6, 0.8, eps=eps), model.sample(6, 0.8, eps=eps, labels=torch.arange(6) % 3))
    # latents that are given decode the same whatever the labels
    zs = model.encode(x, labels).zs
    assert torch.equal(model.decode(zs, labels=torch.zeros(6, dtype=torch.long)), model.decode(zs))


def test_a_conditional_model_starts_as_its_unconditional_twin():
    cfg = FlowConfig(image_shape=(1, 8, 8), levels=2, steps=2, hidden=8, condition="all", n_classes=4)
    twin = FlowModel(cfg.replace(condition="none", n_classes=0))
    model = FlowModel(cfg)
    missing, unexpected = model.load_state_dict(twin.state_dict(), strict=False)
    assert not unexpected and all("class_table" in k or "classifier" in k for k in missing)
    x = torch.rand(3, 1, 8, 8) - 0.5
    twin.initialize(x)
    model.initialize(x)
    for y in range(4):
        torch.testing.assert_close(model.log_prob(x, torch.full((3,), y)), twin.log_prob(x))
    torch.testing.assert_close(model.log_prob(x), twin.log_prob(x))
    torch.testing.assert_close(model.classify(x).exp(), torch.full((3, 4), 0.25))


def test_labels_are_checked_and_an_unconditional_model_refuses_to_classify():
    model = make_conditional("top", classes=3)
    x = images(2)
    with pytest.raises(ValueError, match=r"labels must be in 0..2"):
        model.encode(x, torch.tensor([0, 3]))
    with pytest.raises(ValueError, match=r"one per image"):
        model.encode(x, torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match="integer tensor"):
        model.encode(x, torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match="conditioned on a class label"):
        model.levels[-1].latent_density(None, model.encode(x).zs[-1])
    plain = FlowModel(FlowConfig(image_shape=(2, 8, 8), levels=2, steps=1, hidden=4))
    with pytest.raises(ValueError, match="unconditional"):
        plain.classify(x.float())


def test_config_declares_conditioning_once_and_checks_it_together():
    cfg = FlowConfig(condition="all", n_classes=10)
    assert cfg.conditional and "conditioned on 10 classes (all)" in cfg.summary()
    assert FlowConfig.from_dict(cfg.to_dict()) == cfg
    assert FlowConfig.from_dict({k: v for k, v in FlowConfig().to_dict().items()
                                 if k not in ("condition", "n_classes", "class_loss_weight")}) == FlowConfig()
    with pytest.raises(ConfigError, match="needs labelled images") as exc:
        FlowConfig(condition="top")
    assert exc.value.field == "n_classes"
    with pytest.raises(ConfigError, match="needs a conditional model"):
        FlowConfig(n_classes=10)
    with pytest.raises(ConfigError, match="condition must be one of"):
        FlowConfig(condition="labels", n_classes=10)


@pytest.mark.parametrize("condition,weight", [("top", 0.0), ("top", 0.01), ("all", 0.01), ("all", 0.0)])
@pytest.mark.parametrize("shape,levels", [((1, 28, 28), 2), ((3, 32, 32), 3)])
def test_parameter_count_by_arithmetic_matches_the_conditional_model(condition, weight, shape, levels):
    cfg = FlowConfig(image_shape=shape, levels=levels, steps=1, hidden=8, condition=condition, n_classes=7,
                     class_loss_weight=weight)
    assert parameter_count(cfg) == FlowModel(cfg).num_parameters()


def test_a_conditional_checkpoint_records_the_conditioning_and_round_trips(tmp_path):
    from flowlib.core.checkpoint import class_names, load_model, model_payload, save_checkpoint
    model = make_conditional("all", classes=3, dtype=torch.float32, noise=0.05)
    save_checkpoint(tmp_path / "c.pt", {**model_payload(model), "class_names": ["cat", "dog", "owl"]})
    loaded, ckpt = load_model(tmp_path / "c.pt")
    assert ckpt["config"]["condition"] == "all" and ckpt["config"]["n_classes"] == 3
    assert class_names(loaded, ckpt) == ["cat", "dog", "owl"]
    x = images(4, dtype=torch.float32)
    torch.testing.assert_close(loaded.classify(x), model.classify(x), rtol=0, atol=0)
    assert class_names(loaded, {}) == ["0", "1", "2"]
    assert class_names(FlowModel(FlowConfig(image_shape=(1, 4, 4), levels=1, steps=1, hidden=4)), {}) == []
