"""One scale of the multi-scale flow: its steps, its split and its latent's prior.

    level = Level(cfg, in_shape, index)       # index 0 = finest; the last index is the top level
    out = level(h, labels)                  # LevelOutput(h_next, z, logdet, log_pz, eps)
    h = level.inverse(out.h_next, out.z)    # exact inverse
    level.flat_layers()                     # [LayerPlace(layer, step, stage)], the order of forward

A level runs [RealNVP's checkerboard steps at full resolution] -> squeeze -> K flow steps
(ActNorm -> permutation -> coupling) -> split: half the channels leave as its latent z, scored
by a Gaussian whose mean and scale a zero-initialised convolution computes from the half that
stays (Glow's split2d), or N(0, I). The top level keeps everything as its latent, with a
learned or standard Gaussian. A class-conditional level adds its class table's shift to the
prior. :class:`flowlib.core.model.FlowModel` is a loop over these between its input and
output transforms; the walk and the latents view call the same public pieces.
"""

from __future__ import annotations

import hashlib
from typing import NamedTuple

import torch
from torch import nn

from flowlib.config import FlowConfig

from .conditioning import ClassTable
from .layers import FlowStep, Squeeze, ZeroConv2d, gaussian_log_prob

__all__ = ["Level", "LevelOutput", "LayerPlace", "position_seed"]


def position_seed(seed: int, place: str) -> int:
    """The seed of one layer's initial draws: a hash of the model seed and the layer's place
    (its name in the state dict, e.g. ``levels.1.steps.0.coupling.net.conv_in``)."""
    digest = hashlib.sha256(f"{int(seed)}:{place}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


class LevelOutput(NamedTuple):
    """What one level emits on the way in (see :meth:`Level.forward`)."""
    h_next: torch.Tensor | None  # what goes on to the next level; None after the top level
    z: torch.Tensor             # this level's latent [B, *latent_shape]
    logdet: torch.Tensor        # [B] nats: Σ log|det J| over this level's layers
    log_pz: torch.Tensor        # [B] nats: log-density of z under this level's prior
    eps: torch.Tensor           # z standardised by its prior, (z - mean) / scale


class LayerPlace(NamedTuple):
    """One invertible layer of a level and where it sits (see :meth:`Level.flat_layers`)."""
    layer: nn.Module            # ActNorm, permutation, coupling or the squeeze
    step: int | None            # 0-based index of its flow step within its stage; None for the squeeze
    stage: str | None           # "pre" (checkerboard steps before the squeeze), "post"; None for the squeeze


class Level(nn.Module):
    """One scale: [pre-squeeze checkerboard steps] -> squeeze -> K steps -> split (or top latent).

    Not a plain bijection: besides passing ``h_next`` on, it emits its latent z and z's
    log-density under this level's prior, kept apart from the layers' logdet:

        split level   h_next, z = the first and second half of the channels;
                      p(z | h_next) = N(mean, scale²) computed from h_next (Glow's split2d),
                      or N(0, I)
        top level     h_next = None, z = everything; p(z) = N(mean, scale²) with one learned
                      mean and log-scale per value, or N(0, I)

    ``forward(h) -> LevelOutput(h_next, z, logdet, log_pz, eps)`` and
    ``inverse(h_next, z) -> h`` are exact inverses; ``inverse`` draws a missing z from the prior.
    A conditioned level (``class_table``: the top level of a conditional model, and with
    ``condition="all"`` every split level) shifts its prior by the label's row of a learned
    table, so its ``prior``, ``latent_density``, ``draw_latent``, ``forward`` and ``inverse``
    need ``labels`` [B]; the layers never see them.
    Their pieces are public for code that traces a level operation by operation:

        forward   layers() -> split(h) -> latent_density(h_next, z)
        inverse   [draw_latent(h_next, ...)] -> merge(h_next, z) -> layers() reversed

    ``flat_layers()`` lists the same layers with the flow steps opened up.
    """

    def __init__(self, cfg: FlowConfig, in_shape: tuple[int, int, int], index: int):
        super().__init__()
        c, h, w = in_shape
        self.index = index
        last = index == cfg.levels - 1
        common = dict(hidden=cfg.hidden, coupling=cfg.coupling, permutation=cfg.permutation,
                      actnorm=cfg.actnorm, net_actnorm=cfg.coupling_actnorm, clamp=cfg.affine_clamp)

        def mixing_draws(stage: str, k: int) -> torch.Generator:
            # each step's permutation draws from its own stream: (seed, its place), see position_seed
            return torch.Generator().manual_seed(position_seed(cfg.seed, f"levels.{index}.{stage}.{k}.permutation"))
        # RealNVP's pattern: alternating checkerboards at full resolution before the squeeze.
        pre = []
        if cfg.mask == "realnvp":
            pre = [FlowStep(c, h, w, mask="checkerboard", parity=k % 2, generator=mixing_draws("pre_steps", k),
                            **common) for k in range(cfg.steps)]
        self.pre_steps = nn.ModuleList(pre)
        self.squeeze = Squeeze()
        c, h, w = 4 * c, h // 2, w // 2
        step_mask = "checkerboard" if cfg.mask == "checkerboard" else "channel"
        self.steps = nn.ModuleList(
            FlowStep(c, h, w, mask=step_mask, parity=k % 2, generator=mixing_draws("steps", k), **common)
            for k in range(cfg.steps))
        self.last = last
        if last:
            self.keep_channels, self.latent_shape = c, (c, h, w)
            self.out_shape = None
        else:
            self.keep_channels = c // 2
            self.latent_shape = (c - c // 2, h, w)
            self.out_shape = (c // 2, h, w)
        # The prior's parameters come after the steps'. Checkpoints whose top prior sits on the
        # model (top_mean, top_log_scale) list it first; align_legacy_optimizer_state lines up
        # their optimizer states.
        self.prior_net = self.prior_mean = self.prior_log_scale = None
        if not last and cfg.split_prior == "learned":
            self.prior_net = ZeroConv2d(self.keep_channels, 2 * self.latent_shape[0])
        if last and cfg.top_prior == "learned":
            self.prior_mean = nn.Parameter(torch.zeros(1, *self.latent_shape))
            self.prior_log_scale = nn.Parameter(torch.zeros(1, *self.latent_shape))
        self.class_table = None
        if cfg.conditional and (last or cfg.condition == "all"):
            self.class_table = ClassTable(cfg.n_classes, self.latent_shape, per_value=last)

    def layers(self) -> list[nn.Module]:
        """The bijective part in forward order: pre-squeeze steps, squeeze, steps."""
        return [*self.pre_steps, self.squeeze, *self.steps]

    def flat_layers(self) -> list[LayerPlace]:
        """Every invertible layer of :meth:`layers` with the flow steps opened up, in forward
        order, each with its place: (layer, step index within its stage, "pre" | "post"); the
        squeeze is (squeeze, None, None)."""
        out = []
        for k, step in enumerate(self.pre_steps):
            out += [LayerPlace(layer, k, "pre") for layer in step.layers()]
        out.append(LayerPlace(self.squeeze, None, None))
        for k, step in enumerate(self.steps):
            out += [LayerPlace(layer, k, "post") for layer in step.layers()]
        return out

    def split(self, h: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor]:
        """The output of :meth:`layers` -> ``(h_next, z)``: the first ``keep_channels`` channels
        go on, the rest is this level's latent. The top level keeps nothing: ``(None, h)``."""
        if self.last:
            return None, h
        return h[:, :self.keep_channels], h[:, self.keep_channels:]

    def merge(self, h_next: torch.Tensor | None, z: torch.Tensor) -> torch.Tensor:
        """The inverse of :meth:`split`: ``(h_next, z)`` -> the tensor :meth:`layers` produced.

        Raises ValueError when a split level has no h_next or z is not [B, *latent_shape].
        """
        self._require_kept_half(h_next)
        if tuple(z.shape[1:]) != self.latent_shape:
            raise ValueError(f"latent {self.index} must have shape [B, {', '.join(map(str, self.latent_shape))}], "
                             f"got {list(z.shape)}")
        if self.last:
            return z
        return torch.cat([h_next, z], dim=1)

    def _require_kept_half(self, h_next: torch.Tensor | None) -> None:
        if h_next is None and not self.last:
            raise ValueError("a split level needs the kept half h_next to invert")

    def prior(self, h_next: torch.Tensor | None, batch: int, like: torch.Tensor,
              labels: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and log-scale [batch, *latent_shape] of z's Gaussian (dtype and device of ``like``).

        A split level's comes from the kept half ``h_next``; the top level's does not
        depend on anything. A conditioned level adds its class table's rows for ``labels``
        (ValueError without them); other levels ignore ``labels``.
        """
        mean, log_scale = self._unconditional_prior(h_next, batch, like)
        if self.class_table is None:
            return mean, log_scale
        if labels is None:
            raise ValueError(f"level {self.index} is conditioned on a class label: pass labels [B]")
        if labels.shape[0] != batch:
            raise ValueError(f"labels must be [{batch}] for a batch of {batch}, got {list(labels.shape)}")
        d_mean, d_log_scale = self.class_table.shift(labels)
        return mean + d_mean, log_scale + d_log_scale

    def log_density_per_class(self, h_next: torch.Tensor | None, z: torch.Tensor) -> torch.Tensor | None:
        """[B, K]: log p(z | h_next, y) for every class y, or None for a level without labels."""
        if self.class_table is None:
            return None
        mean, log_scale = self._unconditional_prior(h_next, z.shape[0], z)
        return self.class_table.log_density_per_class(z, mean, log_scale)

    def _unconditional_prior(self, h_next: torch.Tensor | None, batch: int,
                             like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.prior_net is not None:
            mean, log_scale = self.prior_net(h_next).chunk(2, dim=1)
            return mean, log_scale
        if self.prior_mean is not None:
            return (self.prior_mean.expand(batch, -1, -1, -1),
                    self.prior_log_scale.expand(batch, -1, -1, -1))
        zeros = like.new_zeros(batch, *self.latent_shape)
        return zeros, zeros

    def latent_density(self, h_next: torch.Tensor | None, z: torch.Tensor,
                       labels: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(log_pz [B], eps)``: z's log-density in nats under this level's prior given the kept
        half ``h_next`` (None for the top level) and the labels, and z standardised by it,
        (z - mean) / scale."""
        mean, log_scale = self.prior(h_next, z.shape[0], z, labels)
        return gaussian_log_prob(z, mean, log_scale), (z - mean) * torch.exp(-log_scale)

    def draw_latent(self, h_next: torch.Tensor | None, temperature: float = 1.0,
                    eps: torch.Tensor | None = None, batch: int | None = None,
                    labels: torch.Tensor | None = None) -> torch.Tensor:
        """A latent z from this level's prior given ``h_next``: ``mean + temperature · scale · eps``,
        with ``eps`` given or fresh N(0, I) noise. ``batch`` is needed only when nothing else
        tells it: the top level drawing with no eps."""
        self._require_kept_half(h_next)
        known = h_next if h_next is not None else eps
        batch = known.shape[0] if known is not None else batch
        if batch is None:
            raise ValueError("the top level needs z, eps or batch to know the batch size")
        mean, log_scale = self.prior(h_next, batch, next(self.parameters()), labels)
        noise = eps if eps is not None else torch.randn_like(mean)
        return mean + temperature * torch.exp(log_scale) * noise

    def transform(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The bijective part, :meth:`layers` in order: ``(output, logdet [B])``."""
        logdet = h.new_zeros(h.shape[0])
        for layer in self.layers():
            h, ld = layer(h)
            logdet = logdet + ld
        return h, logdet

    def forward(self, h: torch.Tensor, labels: torch.Tensor | None = None) -> LevelOutput:
        h, logdet = self.transform(h)
        h_next, z = self.split(h)
        log_pz, eps = self.latent_density(h_next, z, labels)
        return LevelOutput(h_next, z, logdet, log_pz, eps)

    def inverse(self, h_next: torch.Tensor | None, z: torch.Tensor | None,
                temperature: float = 1.0, eps: torch.Tensor | None = None,
                batch: int | None = None, labels: torch.Tensor | None = None) -> torch.Tensor:
        """The input h that :meth:`forward` maps to ``(h_next, z)``.

        A ``None`` z is drawn from the prior (:meth:`draw_latent`) as
        ``mean + temperature · scale · eps``, with ``eps`` given or fresh N(0, I) noise.
        ``batch`` is needed only when nothing else tells it: the top level drawing its latent
        with neither z nor eps.
        """
        self._require_kept_half(h_next)
        if z is None:
            z = self.draw_latent(h_next, temperature, eps, batch, labels)
        h = self.merge(h_next, z)
        for layer in reversed(self.layers()):
            h = layer.inverse(h)
        return h
