"""One image through a flow, one operation at a time: the trace the step-by-step page draws.

``walk_forward(model, x)`` runs exactly the layers ``model.encode`` runs, in the same order,
and records the tensor after every operation together with that operation's log-determinant:

    input -> [logit] -> per level: [pre-squeeze steps] -> squeeze -> K × (ActNorm ->
    permutation -> coupling) -> split (a latent leaves) ... -> top latent

``walk_backward(model, zs)`` goes the other way, from the latents to the image, with
``layer.inverse`` and the inverse's log-determinant (minus the forward one, measured at the
point the inverse reached). Both return plain :class:`Op` records (tensors, names, numbers,
and the layer itself for pages that show its parameters), so a page can cache and draw them.

The walk adds no maths of its own: the layers come from each level's ``flat_layers()``, and
the split, the prior's log-density, the drawing of a missing latent and the merge are the
level's ``split``, ``latent_density``, ``draw_latent`` and ``merge`` (flowlib.core.model),
the same code ``encode`` and ``decode`` run.

``fresh_model(config)`` builds the same architecture untrained: every coupling's last
convolution is zero (``ZeroConv2d``), so a fresh coupling is exactly the identity, and its
ActNorms are left at scale 1, shift 0 (what they are before their data-dependent start).

No Streamlit here.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from flowlib.core.layers import ActNorm, Coupling, LogitTransform, Squeeze
from flowlib.core.ops import fold_to_image
from flowlib.core.permutations import ChannelMixing

__all__ = ["Op", "Walk", "walk_forward", "walk_backward", "fresh_model", "coupling_parts",
           "layer_kind", "state_image"]


@dataclass
class Op:
    """One operation of a walk and the tensor it produced.

    kind     "input", "logit", "squeeze", "actnorm", "permutation", "coupling", "split", "top"
             (forward); the backward walk uses the same kinds, plus "merge" where a latent
             joins and "output" for the final image
    name     words for a heading, e.g. "level 1 · step 2 · coupling"
    level    0-based level index (-1 for the model's input and logit)
    step     0-based index of the flow step inside its level (None outside steps)
    stage    "pre" (RealNVP's checkerboard steps before the squeeze) or "post"
    before   the tensor that went in, [B, C, H, W] (None for "input")
    after    the tensor that comes out, [B, C, H, W]; for a split, the half that stays
    logdet   [B] nats: log |det ∂after/∂before| of this operation (0 for squeeze, split)
    total    [B] nats: the running sum of ``logdet`` up to and including this op
    latent   for "split"/"top" (forward) and "merge" (backward): the latent z, [B, c, h, w]
    log_pz   [B] nats: log p(z | what stays) of that latent under its prior
    eps      z standardised by its prior, (z - μ) / σ
    layer    the module (for "actnorm", "permutation", "coupling"), to read its parameters
    """

    kind: str
    name: str
    level: int
    after: torch.Tensor
    logdet: torch.Tensor
    total: torch.Tensor
    before: torch.Tensor | None = None
    step: int | None = None
    stage: str | None = None
    latent: torch.Tensor | None = None
    log_pz: torch.Tensor | None = None
    eps: torch.Tensor | None = None
    latent_index: int | None = None
    squeezed: bool = False        # ``after`` is at its level's squeezed resolution
    layer: object | None = field(default=None, repr=False, compare=False)

    @property
    def shape(self) -> tuple[int, ...]:
        """(C, H, W) of the tensor that comes out."""
        return tuple(self.after.shape[1:])


@dataclass
class Walk:
    """A walk's operations plus the totals that close its books."""

    ops: list
    logdet: torch.Tensor          # [B] Σ of the ops' logdets
    log_pz: torch.Tensor          # [B] Σ of the latents' log-densities (forward walk)
    zs: list                      # latents, finest first (forward walk)

    def of_kind(self, *kinds: str) -> list:
        return [op for op in self.ops if op.kind in kinds]


def layer_kind(layer) -> str:
    """The word a walk uses for one invertible layer."""
    if isinstance(layer, ActNorm):
        return "actnorm"
    if isinstance(layer, Coupling):
        return "coupling"
    if isinstance(layer, Squeeze):
        return "squeeze"
    if isinstance(layer, LogitTransform):
        return "logit"
    if isinstance(layer, ChannelMixing):
        return "permutation"
    return type(layer).__name__.lower()


def _name(level: int, step: int | None, stage: str | None, kind: str) -> str:
    if step is None:
        return f"level {level + 1} · {kind}"
    where = "checkerboard step" if stage == "pre" else "step"
    return f"level {level + 1} · {where} {step + 1} · {kind}"


@torch.no_grad()
def walk_forward(model, x: torch.Tensor, labels: torch.Tensor | None = None) -> Walk:
    """Trace ``model.encode(x)`` operation by operation (x float [B, C, H, W] in [-0.5, 0.5]).

    The ops' logdets sum to ``encode(x).logdet`` and the split/top ops' log_pz to
    ``encode(x).log_pz``: the walk runs the model's own pieces (each level's ``flat_layers``,
    ``split`` and ``latent_density``) in the same order, so they are equal up to float rounding.
    A conditional model's priors take ``labels`` (default: each image's most likely class), so
    its log_pz is ``encode(x, labels).log_pz``.
    """
    model.check_input(x)
    if getattr(model, "n_classes", 0) and labels is None:
        labels = model.encode(x).labels
    batch = x.shape[0]
    total = x.new_zeros(batch)
    ops = [Op("input", "input image x (dequantised, in [−0.5, 0.5])", -1, x, x.new_zeros(batch),
              total.clone())]
    h = x
    if model.input_transform is not None:
        before = h
        h, ld = model.input_transform(h)
        total = total + ld
        ops.append(Op("logit", "logit (RealNVP's input transform)", -1, h, ld, total.clone(),
                      before=before, layer=model.input_transform))
    zs, log_pz = [], x.new_zeros(batch)
    for i, level in enumerate(model.levels):
        for layer, k, stage in level.flat_layers():
            before = h
            h, ld = layer(h)
            total = total + ld
            kind = layer_kind(layer)
            ops.append(Op(kind, _name(i, k, stage, kind), i, h, ld, total.clone(), before=before,
                          step=k, stage=stage, layer=layer,
                          squeezed=stage == "post" or kind == "squeeze"))
        before = h
        h_next, z = level.split(h)
        lp, eps = level.latent_density(h_next, z, labels)
        log_pz = log_pz + lp
        zs.append(z)
        kind = "top" if level.last else "split"
        name = (f"level {i + 1} · top: everything left is the last latent z{i + 1}" if level.last
                else f"level {i + 1} · split: half the channels leave as z{i + 1}")
        ops.append(Op(kind, name, i, z if level.last else h_next, x.new_zeros(batch), total.clone(),
                      before=before, latent=z, log_pz=lp, eps=eps, latent_index=i))
        h = h_next
    return Walk(ops, total, log_pz, zs)


@torch.no_grad()
def walk_backward(model, zs, temperature: float = 1.0, eps=None, labels: torch.Tensor | None = None) -> Walk:
    """Trace ``model.decode(zs)`` operation by operation, from the top latent to the image.

    A latent given as ``None`` is drawn from its prior as ``mean + temperature · scale · eps``
    (``eps[i]``, or fresh N(0, I) noise) by the level's own ``draw_latent``, exactly as
    ``model.decode`` does: so ``walk_backward(model, [None] * L, 0.7, eps)`` walks a sample
    from noise to image. Each op's ``logdet`` is the log-determinant of the *inverse* map,
    which is minus the forward layer's log-determinant at the point reached; their sum is
    -``encode(x).logdet``. A conditional model draws given ``labels`` (default: the classes in
    turn, as ``model.decode`` does).
    """
    n = len(model.levels)
    if len(zs) != n:
        raise ValueError(f"walk_backward needs one latent (or None) per level: {n}, got {len(zs)}")
    known = next((z for z in zs if z is not None), None)
    if known is None and eps is None:
        raise ValueError("walk_backward needs at least one latent or eps to know the batch size")
    first = known if known is not None else eps[0]
    batch = first.shape[0]
    if getattr(model, "n_classes", 0) and labels is None:
        labels = torch.arange(batch, device=first.device) % model.n_classes
    total = first.new_zeros(batch)
    zero = first.new_zeros(batch)
    ops, h = [], None
    for i in reversed(range(n)):
        level = model.levels[i]
        z = zs[i]
        if z is None:
            z = level.draw_latent(h, temperature, None if eps is None else eps[i], batch=batch, labels=labels)
        lp, standardised = level.latent_density(h, z, labels)
        h_new = level.merge(h, z)
        name = (f"level {i + 1} · start from the top latent z{i + 1}" if level.last
                else f"level {i + 1} · merge: z{i + 1} joins what came down")
        ops.append(Op("merge", name, i, h_new, zero.clone(), total.clone(), before=h, latent=z,
                      log_pz=lp, eps=standardised, latent_index=i, squeezed=True))
        h = h_new
        for layer, k, stage in reversed(level.flat_layers()):
            before = h
            h = layer.inverse(h)
            ld = -layer(h)[1]
            total = total + ld
            kind = layer_kind(layer)
            ops.append(Op(kind, _name(i, k, stage, kind) + "⁻¹", i, h, ld, total.clone(),
                          before=before, step=k, stage=stage, layer=layer, squeezed=stage == "post"))
    if model.input_transform is not None:
        before = h
        h = model.input_transform.inverse(h)
        ld = -model.input_transform(h)[1]
        total = total + ld
        ops.append(Op("logit", "sigmoid (the logit's inverse)", -1, h, ld, total.clone(),
                      before=before, layer=model.input_transform))
    ops.append(Op("output", "the image x", -1, h, zero.clone(), total.clone()))
    latents = [op.latent for op in reversed(ops) if op.kind == "merge"]
    log_pz = torch.stack([op.log_pz for op in ops if op.kind == "merge"]).sum(0)
    return Walk(ops, total, log_pz, latents)


def state_image(op: Op, zs) -> torch.Tensor:
    """The whole state of the flow at ``op``, laid out in the image's shape [B, C, H, W].

    The state is the tensor going on plus the latents that have already left (forward) or
    not yet joined (backward), finest first in ``zs``; unsqueezing and concatenating them
    level by level (``flowlib.core.ops.fold_to_image``) gives an image-shaped picture of it.
    A display fold only: nothing is inverted.
    """
    from flowlib.core.ops import unsqueeze2d

    i = op.level
    if i < 0:
        return op.after
    if op.kind == "top":
        return fold_to_image(None, zs)
    if op.kind == "split":
        return fold_to_image(op.after, zs[:i + 1])
    h = unsqueeze2d(op.after) if op.squeezed else op.after
    return fold_to_image(h, zs[:i])


@torch.no_grad()
def coupling_parts(coupling: Coupling, x: torch.Tensor) -> dict:
    """What one coupling computes on its input x: x1 (kept), x2, s (log-scale), t (shift), y2.

    Channel masks: x1/x2 are the channel halves; checkerboard masks: x1 = x·mask, x2 = x·(1-mask)
    (s and t are zero on x1's pixels). ``s`` is all zeros for an additive coupling.
    """
    if coupling.mask_type == "channel":
        x1, x2 = x[:, :coupling.c1], x[:, coupling.c1:]
        t, s = coupling.shift_and_log_scale(x1)
    else:
        mask = coupling.mask
        x1, x2 = x * mask, x * (1 - mask)
        t, s = coupling.shift_and_log_scale(x)
    s = torch.zeros_like(t) if s is None else s
    y, _ = coupling(x)
    y2 = y[:, coupling.c1:] if coupling.mask_type == "channel" else y * (1 - coupling.mask)
    return {"x1": x1, "x2": x2, "s": s, "t": t, "y2": y2}


def fresh_model(config):
    """The same architecture, untrained: what every step of ``config`` is before training.

    Built from the config's seed, so its permutations are the ones training started from.
    Its ActNorms are marked as started with scale 1 and shift 0 (the identity): a fresh
    model would otherwise set them from the first batch it sees.
    """
    from flowlib.core.model import FlowModel

    model = FlowModel(config)
    for module in model.modules():
        if isinstance(module, ActNorm):
            module.initialized.fill_(True)
    return model.eval()
