"""The multi-scale FlowModel (its FlowConfig and the presets are in flowlib.config).

The model maps an image x to a list of latents, one per level, and knows the exact
log-likelihood of x through the change-of-variables formula:

    log p(x) = Σ_levels log p(z_level | what stays)   +   Σ_layers log |det J_layer|
               \\_______________ log_pz _____________/      \\_________ logdet _________/

The two parts are kept apart all the way up (``EncodeOutput.log_pz`` and ``.logdet``) because
the app plots them separately.

Multi-scale structure (Glow; RealNVP is the same with other masks). For each of L levels:

    squeeze          [C, H, W] -> [4C, H/2, W/2]
    K flow steps     ActNorm -> permutation -> coupling, on the squeezed tensor
    split            (all levels but the last) half the channels leave as this level's
                     latent z; their prior is a Gaussian whose mean and log-scale are
                     computed from the half that stays (Glow's split2d), or N(0, I).

The last level's whole output is the top latent, with a learned or standard Gaussian prior.
Latents are listed finest level first. With ``mask="realnvp"`` each level first runs K
checkerboard couplings at full resolution, then squeezes and runs K channel couplings,
as in the RealNVP paper.

Each level is a module (:class:`flowlib.core.level.Level`) that owns its steps and its
latent's prior, with ``forward(h) -> (h_next, z, logdet, log_pz, eps)`` and ``inverse(h_next, z) -> h``; the
model's ``encode`` and ``decode`` are loops over the levels (``encode_levels``,
``decode_levels``) between ``transform_input`` and ``transform_output``. A level is made of
public pieces (``layers``/``flat_layers``, ``split``/``merge``, ``latent_density``,
``draw_latent``) that the per-operation walk (``flowlib.analysis.walk``) and the level-by-level
journey (``flowlib.viz.latents``) call too, so the split, the prior's arithmetic and the
merge exist once.

Class-conditional models (``FlowConfig.condition``, Glow's ``ycond``): the top prior (and with
``"all"`` every split prior) is shifted by a learned per-class table, so ``encode``, ``decode``,
``sample``, ``log_prob`` and ``bits_per_dim`` take ``labels``. The label never enters a layer,
so without labels ``encode`` gives the exact marginal log p(x) = log Σ_y p(x | y) p(y) from one
pass through the flow, and ``classify`` gives p(y | x); see ``flowlib.core.conditioning``.
"""

from __future__ import annotations

import math
from typing import NamedTuple, Sequence

import torch
from torch import nn

from flowlib.config import PRESET_NOTES, PRESETS, FlowConfig, preset

from .conditioning import ClassifierHead, check_labels, class_labels, log_class_prior, marginal_terms
from .layers import ActNorm, FlowStep, LogitTransform, VariationalDequantizer, ZeroConv2d
from .level import LayerPlace, Level, LevelOutput, position_seed

__all__ = ["FlowConfig", "FlowModel", "EncodeOutput", "BitsPerDim", "Level", "LevelOutput", "LayerPlace",
           "PRESETS", "PRESET_NOTES", "preset"]


class EncodeOutput(NamedTuple):
    zs: list            # per-level latents, finest first, each [B, c_i, h_i, w_i]
    logdet: torch.Tensor        # [B] nats: Σ log|det J| over every layer
    log_pz: torch.Tensor        # [B] nats: Σ over levels of the latent's log-density
    log_pz_levels: list         # per-level [B] terms of log_pz, finest first
    eps: list                   # latents standardised by their prior, (z - mean) / scale
    # Conditional models only (None otherwise): the labels the priors were given, or, when
    # none were, the most likely class of each image, which eps is standardised by; and,
    # when none were given, log p(y | x) [B, K] (log_pz is then the marginal over labels).
    labels: torch.Tensor | None = None
    log_posterior: torch.Tensor | None = None


class BitsPerDim(NamedTuple):
    """Bits/dim and its exact decomposition: total = Σ prior_levels + logdet + dequant + quantisation."""
    total: torch.Tensor         # [B]
    prior_levels: torch.Tensor  # [B, L]: -log p(z_level) / (D ln 2), finest first
    logdet: torch.Tensor        # [B]: -Σ log|det J| / (D ln 2) (negative when the flow expands volume)
    quantisation: float         # n_bits: the log(n_bins) per dimension that turns a density into a probability
    dequant: torch.Tensor       # [B]: log q(u|x) / (D ln 2) of learned dequantisation noise; 0 for uniform noise
    # Conditional models trained with labels: -log2 p_head(y | z_top) per image (Glow's
    # classification loss), and what training minimises, total + class_loss_weight · class_bits.
    # None otherwise (the objective is then the total).
    class_bits: torch.Tensor | None = None
    objective: torch.Tensor | None = None


def _rename_top_prior_keys(module, state_dict, prefix, *_):
    """Load-time hook: a checkpoint that keeps the top prior on the model (``top_mean``,
    ``top_log_scale``) loads into ``levels.<L-1>.prior_*``."""
    top = f"{prefix}levels.{len(module.levels) - 1}."
    for old, new in (("top_mean", "prior_mean"), ("top_log_scale", "prior_log_scale")):
        if prefix + old in state_dict and top + new not in state_dict:
            state_dict[top + new] = state_dict.pop(prefix + old)


def align_legacy_optimizer_state(ckpt: dict) -> None:
    """Line up, in place, an optimizer state saved with the top prior on the model.

    Such a checkpoint has the model keys ``top_mean`` and ``top_log_scale`` (renamed on load
    by ``_rename_top_prior_keys``). Those two parameters come first in its parameter order
    and last in this model's; an optimizer state is indexed by that order, so its entries are rotated
    to match, or a resumed run would apply one tensor's Adam moments to another.
    """
    model, opt = ckpt.get("model"), ckpt.get("optimizer")
    if not isinstance(model, dict) or "top_mean" not in model or not isinstance(opt, dict):
        return
    groups, state = opt.get("param_groups"), opt.get("state")
    if not isinstance(groups, list) or len(groups) != 1 or not isinstance(state, dict):
        return
    n = len(groups[0].get("params", []))
    if n < 2 or groups[0]["params"] != list(range(n)):
        return
    opt["state"] = {j: state[(j + 2) % n] for j in range(n) if (j + 2) % n in state}


def _place_seeded_init(model: nn.Module, seed: int) -> None:
    """Draw every randomly initialised convolution's weight and bias again, each from
    :func:`position_seed` of its own name, with torch's default init (Kaiming-uniform weight;
    bias uniform in ±1/√fan_in, so a bias is the same draw scaled by its layer's fan-in).
    Zero-initialised ones (``ZeroConv2d``) stay zero. The checkpoint format is unchanged."""
    zeroed = {id(m.conv) for m in model.modules() if isinstance(m, ZeroConv2d)}
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        for name, module in model.named_modules():
            if not isinstance(module, nn.Conv2d) or id(module) in zeroed:
                continue
            torch.manual_seed(position_seed(seed, f"{name}.weight"))
            nn.init.kaiming_uniform_(module.weight, a=math.sqrt(5))
            if module.bias is not None:
                fan_in = module.weight[0].numel()
                torch.manual_seed(position_seed(seed, f"{name}.bias"))
                module.bias.uniform_(-1.0, 1.0).mul_(1.0 / math.sqrt(fan_in))


class FlowModel(nn.Module):
    """A multi-scale normalizing flow (Glow / RealNVP / NICE, by config).

    >>> model = FlowModel(FlowConfig(image_shape=(1, 28, 28), levels=2, steps=4))
    >>> out = model.encode(x)              # x float [B,1,28,28] in [-0.5, 0.5]
    >>> x_back = model.decode(out.zs)      # exact inverse
    >>> model.bits_per_dim(x_uint8)        # [B]
    """

    def __init__(self, config: FlowConfig | dict):
        super().__init__()
        if isinstance(config, dict):
            config = FlowConfig.from_dict(config)
        if not isinstance(config, FlowConfig):
            raise ValueError(f"FlowModel needs a FlowConfig or a dict, got {type(config).__name__}")
        self.config = config
        cfg = config
        # Same seed, same model, and the same layer wherever two configs agree: every layer's
        # random start comes from (seed, its place in the model), never from one shared stream,
        # so a config that adds, drops or resizes one layer leaves every other layer as it was.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            levels, shape = [], cfg.image_shape
            for i in range(cfg.levels):
                level = Level(cfg, shape, i)
                levels.append(level)
                shape = level.out_shape
            self.dequantizer = None
            if cfg.dequantization == "variational":
                self.dequantizer = VariationalDequantizer(cfg.image_shape[0], cfg.n_bins)
        self.levels = nn.ModuleList(levels)
        self.input_transform = LogitTransform() if cfg.input_transform == "logit" else None
        # Glow's classifier on the top latent, for its classification loss (conditional only)
        self.classifier = None
        if cfg.conditional and cfg.class_loss_weight > 0:
            self.classifier = ClassifierHead(cfg.n_classes, self.levels[-1].latent_shape)
        _place_seeded_init(self, cfg.seed)
        self.register_load_state_dict_pre_hook(_rename_top_prior_keys)

    # -- shapes and bookkeeping -----------------------------------------------------------
    @property
    def latent_shapes(self) -> list[tuple[int, int, int]]:
        """(c, h, w) of each level's latent, finest first."""
        return [level.latent_shape for level in self.levels]

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def n_classes(self) -> int:
        """K, the labels a conditional model's priors take (0..K-1); 0 for an unconditional model."""
        return self.config.n_classes if self.config.conditional else 0

    def _labels(self, labels, batch: int) -> torch.Tensor | None:
        """Checked labels [batch] on the model's device; None for an unconditional model."""
        if not self.n_classes:
            return None
        labels = check_labels(labels, self.n_classes)
        if labels.shape[0] != batch:
            raise ValueError(f"labels must be [{batch}], one per image, got {list(labels.shape)}")
        return labels.to(self.device)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def flow_steps(self) -> list[tuple[int, str, FlowStep]]:
        """Every step in forward order as (level index, 'pre' | 'post', step), for display."""
        out = []
        for i, level in enumerate(self.levels):
            out += [(i, "pre", s) for s in level.pre_steps]
            out += [(i, "post", s) for s in level.steps]
        return out

    @property
    def is_initialized(self) -> bool:
        """True once every ActNorm has seen data (always True for models without ActNorm)."""
        return all(bool(m.initialized) for m in self.modules() if isinstance(m, ActNorm))

    @torch.no_grad()
    def initialize(self, x: torch.Tensor) -> None:
        """Data-dependent ActNorm init from a batch x in [-0.5, 0.5]; a no-op once done."""
        if not self.is_initialized:
            self.encode(x)

    def check_input(self, x: torch.Tensor) -> None:
        """Raise ValueError unless x is a finite float tensor [B, *config.image_shape]."""
        if not isinstance(x, torch.Tensor):
            raise ValueError(f"expected a tensor [B, C, H, W], got {type(x).__name__}")
        expected = self.config.image_shape
        if x.dim() != 4 or tuple(x.shape[1:]) != expected:
            raise ValueError(f"expected input of shape [B, {expected[0]}, {expected[1]}, "
                             f"{expected[2]}], got {list(x.shape)}")
        if not x.is_floating_point():
            raise ValueError(f"encode expects float values in [-0.5, 0.5], got dtype {x.dtype}; "
                             "use bits_per_dim() for integer images")
        if not torch.isfinite(x).all():
            raise ValueError("input contains NaN or infinite values")

    # -- the flow --------------------------------------------------------------------------
    def transform_input(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x in [-0.5, 0.5] -> (what the first level sees, logdet [B]): the input transform
        (RealNVP's logit) when the config has one, else (x, 0)."""
        if self.input_transform is None:
            return x, x.new_zeros(x.shape[0])
        return self.input_transform(x)

    def transform_output(self, h: torch.Tensor) -> torch.Tensor:
        """The inverse of :meth:`transform_input`: what the first level gives back -> an image."""
        return h if self.input_transform is None else self.input_transform.inverse(h)

    def _transform_levels(self, h: torch.Tensor) -> list[tuple]:
        """Each level's bijective part and split, finest first: [(h_next, z, logdet)]."""
        parts = []
        for level in self.levels:
            t, logdet = level.transform(h)
            h_next, z = level.split(t)
            parts.append((h_next, z, logdet))
            h = h_next
        return parts

    def _marginal(self, parts: list[tuple]) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Per-level terms of log p(z) summed over the labels, and log p(y | x) [B, K]
        (see :func:`flowlib.core.conditioning.marginal_terms`)."""
        per_class = [level.log_density_per_class(h_next, z) for level, (h_next, z, _) in zip(self.levels, parts)]
        exact = [level.latent_density(h_next, z)[0] if pc is None else None
                 for level, (h_next, z, _), pc in zip(self.levels, parts, per_class)]
        return marginal_terms(per_class, exact, self.n_classes)

    def encode_levels(self, h: torch.Tensor, labels: torch.Tensor | None = None) -> list[LevelOutput]:
        """Each level's :class:`LevelOutput`, finest first, for ``h = transform_input(x)[0]``.

        A conditional model's priors take ``labels`` [B]; without them, each image's most
        likely class (the argmax of p(y | x))."""
        parts = self._transform_levels(h)
        if self.n_classes:
            labels = (self._marginal(parts)[1].argmax(1) if labels is None
                      else self._labels(labels, h.shape[0]))
        return [LevelOutput(h_next, z, logdet, *level.latent_density(h_next, z, labels))
                for level, (h_next, z, logdet) in zip(self.levels, parts)]

    def encode(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> EncodeOutput:
        """x [B, C, H, W] in [-0.5, 0.5] -> latents, logdet [B], log_pz [B] (nats).

        A conditional model: with ``labels`` [B], log_pz is log p(z | y); without them, the
        marginal log Σ_y p(z | y) p(y) (its per-level split: see ``marginal_terms``), with
        ``log_posterior`` = log p(y | x) and eps standardised by the most likely class's prior.
        """
        self.check_input(x)
        h, logdet = self.transform_input(x)
        parts = self._transform_levels(h)
        for _, _, level_logdet in parts:
            logdet = logdet + level_logdet
        log_posterior = None
        if self.n_classes and labels is None:
            log_pz_levels, log_posterior = self._marginal(parts)
            labels = log_posterior.argmax(1)
            eps = [level.latent_density(h_next, z, labels)[1] for level, (h_next, z, _) in zip(self.levels, parts)]
        else:
            labels = self._labels(labels, x.shape[0]) if self.n_classes else None
            densities = [level.latent_density(h_next, z, labels) for level, (h_next, z, _) in zip(self.levels, parts)]
            log_pz_levels, eps = [d[0] for d in densities], [d[1] for d in densities]
        log_pz = torch.stack(log_pz_levels, 0).sum(0)
        return EncodeOutput([z for _, z, _ in parts], logdet, log_pz, log_pz_levels, eps, labels, log_posterior)

    forward = encode

    def _temperatures(self, temperature) -> list[float]:
        n = len(self.levels)
        if isinstance(temperature, (int, float)):
            temps = [float(temperature)] * n
        else:
            temps = [float(t) for t in temperature]
            if len(temps) != n:
                raise ValueError(f"one temperature per level is needed ({n}), got {len(temps)}")
        if any(not math.isfinite(t) or t < 0 for t in temps):
            raise ValueError(f"temperatures must be finite and ≥ 0, got {temps}")
        return temps

    def decode_levels(self, zs: Sequence[torch.Tensor | None], temperature=1.0,
                      eps: Sequence[torch.Tensor] | None = None,
                      labels: torch.Tensor | None = None) -> list[torch.Tensor]:
        """The way back level by level: the tensor after undoing each level, coarsest first,
        so the last is the finest level's input, which :meth:`transform_output` makes the image.

        Arguments as for :meth:`decode`.
        """
        n = len(self.levels)
        if len(zs) != n:
            raise ValueError(f"decode needs one latent (or None) per level: {n}, got {len(zs)}")
        temps = self._temperatures(temperature)
        batch = next((z.shape[0] for z in zs if z is not None),
                     None if eps is None else eps[0].shape[0])
        if batch is None:
            raise ValueError("decode needs at least one latent or eps to know the batch size")
        if self.n_classes:
            labels = (class_labels(self.n_classes, batch, self.device) if labels is None
                      else self._labels(labels, batch))
        h, states = None, []
        for i in reversed(range(n)):
            h = self.levels[i].inverse(h, zs[i], temps[i], None if eps is None else eps[i],
                                       batch=batch, labels=labels)
            states.append(h)
        return states

    def decode(self, zs: Sequence[torch.Tensor | None], temperature=1.0,
               eps: Sequence[torch.Tensor] | None = None, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Invert the flow. A latent given as ``None`` is drawn from its prior.

        A missing latent becomes ``mean + temperature · scale · eps`` where the mean and scale
        come from its (conditional) prior and eps is the matching entry of ``eps`` or fresh
        N(0, I) noise. So ``decode(out.zs)`` is the exact inverse of ``encode``, and
        ``decode([out.zs[0], None, None])`` keeps the finest detail of an image while
        resampling its coarse structure. A conditional model draws given ``labels`` [B]
        (without them: the classes in turn, 0, 1, …); latents that are given decode the same
        whatever the labels, since the label enters only the priors.
        """
        return self.transform_output(self.decode_levels(zs, temperature, eps, labels)[-1])

    def sample_eps(self, n: int, generator: torch.Generator | None = None) -> list[torch.Tensor]:
        """Standard-normal noise for every level (finest first), for repeatable sampling."""
        return [torch.randn(n, *shape, generator=generator).to(self.device)
                for shape in self.latent_shapes]

    def sample(self, n: int, temperature=0.7, eps: Sequence[torch.Tensor] | None = None,
               generator: torch.Generator | None = None, labels: torch.Tensor | None = None) -> torch.Tensor:
        """n images [n, C, H, W] (about [-0.5, 0.5]) drawn at a temperature (or one per level).

        Fixed ``eps`` (from :meth:`sample_eps`) gives the same samples at every temperature,
        scaled towards the prior mean as the temperature falls; temperature 0 returns the
        decoded prior mean. A conditional model draws from p(x | y) for ``labels`` [n] (without
        them: the classes in turn), so the same eps with other labels changes only the class.
        """
        if not isinstance(n, int) or n < 1:
            raise ValueError(f"n must be a positive integer, got {n!r}")
        if eps is None:
            eps = self.sample_eps(n, generator)
        return self.decode([None] * len(self.levels), temperature=temperature, eps=eps, labels=labels)

    # -- likelihood ------------------------------------------------------------------------
    def log_prob(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """log p(x) in nats [B] for continuous x in [-0.5, 0.5]: log_pz + logdet (a conditional
        model: log p(x | y) with ``labels``, else the marginal log Σ_y p(x | y) p(y))."""
        out = self.encode(x, labels)
        return out.log_pz + out.logdet

    def class_log_likelihoods(self, x: torch.Tensor) -> torch.Tensor:
        """[B, K] log p(x | y) in nats for every class y of a conditional model (one pass
        through the flow; only the priors are evaluated K times)."""
        if not self.n_classes:
            raise ValueError("this model is unconditional: it has no class likelihoods")
        out = self.encode(x)
        return out.log_posterior + (out.log_pz + out.logdet)[:, None] - log_class_prior(self.n_classes)

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        """[B, K] log p(y | x) of a conditional model, by Bayes' rule from its class likelihoods:
        a generative classifier (the classification head, if any, plays no part)."""
        if not self.n_classes:
            raise ValueError("this model is unconditional: it cannot classify")
        return self.encode(x).log_posterior

    def pixel_bins(self, x_uint8: torch.Tensor) -> torch.Tensor:
        """Integer pixels 0..255 -> float bin indices 0..n_bins-1 on the model's device.

        With n_bits < 8 the pixels are first reduced to n_bits (x // 2**(8 - n_bits)).
        """
        if not isinstance(x_uint8, torch.Tensor) or x_uint8.is_floating_point() or x_uint8.dtype == torch.bool:
            raise ValueError("bits_per_dim expects integer pixels 0..255 (e.g. a uint8 tensor); "
                             f"got {getattr(x_uint8, 'dtype', type(x_uint8).__name__)}")
        if x_uint8.numel() and (int(x_uint8.min()) < 0 or int(x_uint8.max()) > 255):
            raise ValueError("pixel values must be in 0..255, got "
                             f"{int(x_uint8.min())}..{int(x_uint8.max())}")
        x = x_uint8.to(self.device, torch.float32)
        if self.config.n_bits < 8:
            x = torch.floor(x / 2 ** (8 - self.config.n_bits))
        return x

    @staticmethod
    def _uniform(x: torch.Tensor, noise: bool, generator: torch.Generator | None,
                 uniform: torch.Tensor | None) -> torch.Tensor | None:
        """The U[0, 1) draws behind x's dequantisation noise: ``uniform`` when given, else drawn
        on the CPU from ``generator`` (so a seed gives the same noise on every device); None
        when ``noise`` is False."""
        if not noise:
            return None
        if uniform is None:
            uniform = torch.rand(x.shape, generator=generator)
        elif tuple(uniform.shape) != tuple(x.shape):
            raise ValueError(f"uniform noise must have the images' shape {list(x.shape)}, got {list(uniform.shape)}")
        return uniform.to(x.device)

    def preprocess(self, x_uint8: torch.Tensor, noise: bool = True,
                   generator: torch.Generator | None = None,
                   uniform: torch.Tensor | None = None) -> torch.Tensor:
        """Integer pixels 0..255 -> dequantised floats ``(x + u) / n_bins - 0.5``, u ~ U[0, 1).

        With n_bits < 8 the pixels are first reduced to n_bits (x // 2**(8 - n_bits)).
        ``noise=False`` puts every value in the middle of its bin (u = 0.5), a deterministic
        choice for display. ``uniform``: the U[0, 1) values to use as u (e.g. one process's
        rows of a larger batch's draws); otherwise drawn from ``generator``. Always uniform
        noise, whatever ``config.dequantization`` says: for scoring use :meth:`dequantize`
        (through :meth:`bits_per_dim`).
        """
        x = self.pixel_bins(x_uint8)
        u = self._uniform(x, noise, generator, uniform)
        if u is None:
            u = torch.full_like(x, 0.5)
        return (x + u) / self.config.n_bins - 0.5

    def dequantize(self, x_uint8: torch.Tensor, noise: bool = True,
                   generator: torch.Generator | None = None,
                   uniform: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(x̃, log q(u|x) [B])`` with the model's dequantisation; log q is None for uniform noise.

        Uniform: exactly :meth:`preprocess`. Variational: u drawn from the learned q (its
        median when ``noise=False``), with ``uniform`` (or draws from ``generator``) as the
        U(0, 1) source of its noise; see :class:`flowlib.core.layers.VariationalDequantizer`.
        """
        if self.dequantizer is None:
            return self.preprocess(x_uint8, noise=noise, generator=generator, uniform=uniform), None
        x = self.pixel_bins(x_uint8)
        u, log_q = self.dequantizer(x, self._uniform(x, noise, generator, uniform))
        return (x + u) / self.config.n_bins - 0.5, log_q

    def bits_per_dim_terms(self, x_uint8: torch.Tensor, noise: bool = True,
                           generator: torch.Generator | None = None,
                           uniform: torch.Tensor | None = None,
                           labels: torch.Tensor | None = None) -> BitsPerDim:
        """Bits/dim of integer images and its split into prior-per-level, logdet, dequant, quantisation.

        bpd = -(log p(x̃) - log q(u|x) - D·log n_bins) / (D·ln 2), with x̃ = (x + u)/n_bins - 0.5
        the dequantised image, D = C·H·W real pixels, and log q = 0 for uniform noise (the
        usual formula). Either way an upper bound on the discrete -log2 P(x) / D.
        Differentiable: the trainer uses ``objective.mean()`` as its loss. ``uniform``: the
        U[0, 1) draws behind the noise (see :meth:`preprocess`). A conditional model: with
        ``labels``, the bits/dim of x given y (what it trains on) and, with a classifier, its
        loss; without, of the marginal p(x) = Σ_y p(x | y) p(y), comparable with an
        unconditional model's.
        """
        x, log_q = self.dequantize(x_uint8, noise=noise, generator=generator, uniform=uniform)
        out = self.encode(x, labels)
        scale = self.config.dims * math.log(2)
        prior_levels = -torch.stack(out.log_pz_levels, dim=1) / scale
        logdet = -out.logdet / scale
        dequant = log_q / scale if log_q is not None else torch.zeros_like(logdet)
        total = prior_levels.sum(1) + logdet + dequant + self.config.n_bits
        class_bits = objective = None
        if self.classifier is not None and labels is not None:
            class_bits = self.classifier.class_bits(out.zs[-1], out.labels)
            objective = total + self.config.class_loss_weight * class_bits
        return BitsPerDim(total, prior_levels, logdet, float(self.config.n_bits), dequant, class_bits, objective)

    def bits_per_dim(self, x_uint8: torch.Tensor, noise: bool = True,
                     generator: torch.Generator | None = None,
                     labels: torch.Tensor | None = None) -> torch.Tensor:
        """[B] bits per dimension of integer images 0..255 (dequantised as the config says);
        a conditional model's of x given ``labels``, or without them of the marginal p(x)."""
        return self.bits_per_dim_terms(x_uint8, noise=noise, generator=generator, labels=labels).total

    def to_uint8(self, x: torch.Tensor) -> torch.Tensor:
        """Model space [-0.5, 0.5] -> uint8 pixels, each at the centre of its n_bits bin."""
        n_bins = self.config.n_bins
        step = 256 // n_bins
        q = torch.floor((x.float().clamp(-0.5, 0.5 - 1e-6) + 0.5) * n_bins)
        return (q * step + step // 2).clamp(0, 255).to(torch.uint8)
