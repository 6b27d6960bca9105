"""flowlib.analysis.walk: the per-operation trace must add up to the model's own numbers, exactly.

* the ops' log-dets sum to ``encode(x).logdet`` and the latents' log-densities to ``log_pz``;
* the walk's latents are ``encode(x).zs`` and its ops run in the model's own order;
* the backward walk reproduces the image to 1e-5 and its log-dets are minus the forward ones;
* a fresh step (same config, untrained) has a coupling that is exactly the identity;
* the walk's split, prior and merge are the levels' own (``Level.split`` and company), not a copy.
"""

from __future__ import annotations

import pytest
import torch

from flowlib import FlowConfig, FlowModel
from flowlib.analysis.walk import coupling_parts, fresh_model, state_image, walk_backward, walk_forward
from flowlib.core.level import Level
from flowlib.core.ops import fold_to_image
from flowlib.env import REPO_ROOT

ROOT = REPO_ROOT
DEMOS = [ROOT / "checkpoints" / "mnist-fast.pt", ROOT / "checkpoints" / "faces-fast.pt"]

CONFIGS = {
    "glow": dict(image_shape=(1, 8, 8), levels=2, steps=2, hidden=8),
    "realnvp-logit": dict(image_shape=(1, 8, 8), levels=2, steps=2, hidden=8, mask="realnvp",
                          permutation="reverse", input_transform="logit"),
    "additive-colour": dict(image_shape=(3, 8, 8), levels=3, steps=1, hidden=8, coupling="additive",
                            permutation="shuffle", split_prior="standard", top_prior="standard"),
    "checkerboard": dict(image_shape=(1, 8, 8), levels=2, steps=2, hidden=8, mask="checkerboard",
                         permutation="conv1x1"),
}


def _trained_looking(cfg: dict) -> tuple[FlowModel, torch.Tensor]:
    """A small model whose couplings and priors are *not* the identity, and an input batch."""
    torch.manual_seed(0)
    model = FlowModel(FlowConfig(**cfg))
    x = torch.rand(3, *model.config.image_shape) - 0.5
    model.initialize(x)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model.eval(), x


@pytest.mark.slow
@pytest.mark.parametrize("name", list(CONFIGS))
def test_forward_walk_adds_up_to_encode(name):
    model, x = _trained_looking(CONFIGS[name])
    with torch.no_grad():
        out = model.encode(x)
    walk = walk_forward(model, x)
    per_op = torch.stack([op.logdet for op in walk.ops]).sum(0)
    torch.testing.assert_close(per_op, out.logdet, rtol=1e-5, atol=1e-3)
    torch.testing.assert_close(walk.logdet, out.logdet, rtol=1e-5, atol=1e-3)
    torch.testing.assert_close(walk.ops[-1].total, out.logdet, rtol=1e-5, atol=1e-3)
    leaving = walk.of_kind("split", "top")
    assert [op.latent_index for op in leaving] == list(range(model.config.levels))
    for op, z, lp in zip(leaving, out.zs, out.log_pz_levels):
        torch.testing.assert_close(op.latent, z)
        torch.testing.assert_close(op.log_pz, lp)
    torch.testing.assert_close(walk.log_pz, out.log_pz)
    # The logdet isn't trivially zero: at least one coupling and one ActNorm contribute.
    assert any(op.logdet.abs().max() > 1e-3 for op in walk.of_kind("actnorm"))
    if model.config.coupling == "affine":
        assert any(op.logdet.abs().max() > 1e-3 for op in walk.of_kind("coupling"))
    # Each op's input is the previous op's output (before a split: the kept half goes on).
    for prev, op in zip(walk.ops, walk.ops[1:]):
        assert op.before is not None
        if prev.kind not in ("split",):
            assert op.before.shape == prev.after.shape
            torch.testing.assert_close(op.before, prev.after)
    # One squeeze per level, each quadrupling the channels.
    squeezes = walk.of_kind("squeeze")
    assert len(squeezes) == model.config.levels
    for op in squeezes:
        c, h, w = op.before.shape[1:]
        assert op.shape == (4 * c, h // 2, w // 2)
        assert float(op.logdet.abs().max()) == 0.0


@pytest.mark.slow
@pytest.mark.parametrize("name", list(CONFIGS))
def test_backward_walk_reproduces_the_image(name):
    model, x = _trained_looking(CONFIGS[name])
    forward = walk_forward(model, x)
    backward = walk_backward(model, forward.zs)
    assert backward.ops[-1].kind == "output"
    assert float((backward.ops[-1].after - x).abs().max()) < 1e-5
    torch.testing.assert_close(backward.logdet, -forward.logdet, rtol=1e-5, atol=1e-3)
    # Every forward layer is undone in reverse order: its inverse lands on the forward input,
    # with minus the forward log-det.
    fwd = [op for op in forward.ops if op.kind not in ("input", "split", "top")]
    back = [op for op in backward.ops if op.kind not in ("merge", "output")]
    assert [op.kind for op in fwd] == [op.kind for op in reversed(back)]
    for f, b in zip(fwd, reversed(back)):
        torch.testing.assert_close(b.after, f.before, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(b.logdet, -f.logdet, rtol=1e-4, atol=1e-3)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(CONFIGS))
def test_every_state_folds_back_to_the_image_shape(name):
    model, x = _trained_looking(CONFIGS[name])
    forward = walk_forward(model, x)
    backward = walk_backward(model, forward.zs)
    for walk in (forward, backward):
        for op in walk.ops:
            assert tuple(state_image(op, forward.zs).shape) == tuple(x.shape), op.name
    # The top of the forward walk, folded, is the latents in the image's layout.
    torch.testing.assert_close(state_image(forward.ops[-1], forward.zs), fold_to_image(None, forward.zs))


def test_walk_backward_needs_one_latent_per_level():
    model, x = _trained_looking(CONFIGS["glow"])
    zs = walk_forward(model, x).zs
    with pytest.raises(ValueError, match="one latent"):
        walk_backward(model, zs[:1])
    with pytest.raises(ValueError, match="batch size"):
        walk_backward(model, [None] * len(zs))


def test_backward_walk_from_noise_is_decode():
    model, _ = _trained_looking(CONFIGS["glow"])
    eps = model.sample_eps(2, torch.Generator().manual_seed(3))
    with torch.no_grad():
        expected = model.decode([None, None], temperature=0.7, eps=eps)
    walk = walk_backward(model, [None, None], temperature=0.7, eps=eps)
    torch.testing.assert_close(walk.ops[-1].after, expected)
    # The latents it drew, encoded again, give back the same image.
    back = walk_backward(model, walk.zs)
    torch.testing.assert_close(back.ops[-1].after, expected)


def _spy_on_levels(monkeypatch) -> dict:
    """Count the calls of the Level pieces the walk must share with encode and decode."""
    calls = dict.fromkeys(("flat_layers", "split", "latent_density", "draw_latent", "merge"), 0)
    for piece in calls:
        real = getattr(Level, piece)

        def spy(self, *args, _real=real, _piece=piece, **kwargs):
            calls[_piece] += 1
            return _real(self, *args, **kwargs)
        monkeypatch.setattr(Level, piece, spy)
    return calls


@pytest.mark.slow
@pytest.mark.parametrize("name", list(CONFIGS))
def test_the_walk_runs_the_levels_own_split_prior_and_merge(name, monkeypatch):
    model, x = _trained_looking(CONFIGS[name])
    L = model.config.levels
    calls = _spy_on_levels(monkeypatch)
    forward = walk_forward(model, x)
    assert calls == {"flat_layers": L, "split": L, "latent_density": L, "draw_latent": 0, "merge": 0}
    calls.update(dict.fromkeys(calls, 0))
    walk_backward(model, forward.zs)
    assert calls == {"flat_layers": L, "split": 0, "latent_density": L, "draw_latent": 0, "merge": L}
    calls.update(dict.fromkeys(calls, 0))
    walk_backward(model, [forward.zs[0]] + [None] * (L - 1), 0.5, model.sample_eps(3))
    assert calls == {"flat_layers": L, "split": 0, "latent_density": L, "draw_latent": L - 1, "merge": L}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(CONFIGS))
def test_a_fresh_coupling_is_the_identity(name):
    model, x = _trained_looking(CONFIGS[name])
    fresh = fresh_model(model.config)
    walk = walk_forward(model, x)
    for op in walk.of_kind("coupling"):
        step = (fresh.levels[op.level].pre_steps if op.stage == "pre" else fresh.levels[op.level].steps)[op.step]
        with torch.no_grad():
            y, logdet = step.coupling(op.before)
            parts = coupling_parts(step.coupling, op.before)
        assert torch.equal(y, op.before)            # bit for bit: s = 0 and t = 0
        assert torch.equal(logdet, torch.zeros_like(logdet))
        assert float(parts["s"].abs().max()) == 0.0 and float(parts["t"].abs().max()) == 0.0
        # ... while the "trained" one does change x2.
        assert float((op.after - op.before).abs().max()) > 1e-4
    # The fresh ActNorms are the identity (scale 1, shift 0) and stay so: no data-dependent init.
    for step in fresh.levels[0].steps:
        if step.actnorm is not None:
            y, ld = step.actnorm(x.new_ones(2, step.actnorm.channels, 2, 2) * 3.0)
            assert torch.equal(y, x.new_ones(2, step.actnorm.channels, 2, 2) * 3.0)
            assert float(ld.detach().abs().max()) == 0.0


def test_coupling_parts_rebuild_the_output():
    model, x = _trained_looking(CONFIGS["glow"])
    op = walk_forward(model, x).of_kind("coupling")[0]
    parts = coupling_parts(op.layer, op.before)
    torch.testing.assert_close(parts["x2"] * torch.exp(parts["s"]) + parts["t"], parts["y2"])
    torch.testing.assert_close(parts["s"].flatten(1).sum(1), op.logdet)


@pytest.mark.slow
@pytest.mark.skipif(not all(p.is_file() for p in DEMOS), reason="demo checkpoints missing")
@pytest.mark.parametrize("path", DEMOS, ids=lambda p: p.stem)
def test_demo_checkpoints_walk(path):
    from flowlib.core.checkpoint import load_model
    from flowlib.data import load_images
    from flowlib.data.sources.common import DatasetError
    model, ckpt = load_model(path)
    model.eval()
    try:  # real test images: random noise is far off the data, where float error grows
        x_uint8 = load_images(ckpt["dataset"], "test").images[:2]
    except DatasetError as exc:
        pytest.skip(str(exc))
    with torch.no_grad():
        x = model.dequantize(x_uint8, noise=False)[0]
        out = model.encode(x)
    walk = walk_forward(model, x)
    torch.testing.assert_close(walk.logdet, out.logdet, rtol=1e-5, atol=1e-2)
    back = walk_backward(model, walk.zs)
    assert float((back.ops[-1].after - x).abs().max()) < 1e-5
