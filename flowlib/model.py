"""FlowConfig, the multi-scale FlowModel, and the presets.

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
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, fields, replace
from typing import NamedTuple, Sequence

import torch
from torch import nn

from .layers import (ActNorm, FlowStep, LogitTransform, VariationalDequantizer, ZeroConv2d,
                     gaussian_log_prob)
from .ops import squeeze2d, unsqueeze2d
from .speed import tune_for_training_automatically

__all__ = ["FlowConfig", "FlowModel", "EncodeOutput", "BitsPerDim", "PRESETS", "PRESET_NOTES",
           "preset"]

COUPLINGS = ("affine", "additive")
PERMUTATIONS = ("reverse", "shuffle", "conv1x1", "conv1x1_lu")
MASKS = ("channel", "checkerboard", "realnvp")
PRIORS = ("learned", "standard")
DEQUANTIZATIONS = ("uniform", "variational")
INPUT_TRANSFORMS = ("none", "logit")

# Upper bounds that keep a config trainable on one machine; they exist to refuse typos
# such as hidden=51200 with a message instead of exhausting memory.
MAX_LEVELS, MAX_STEPS, MAX_HIDDEN, MAX_CHANNELS, MAX_SIDE = 8, 64, 2048, 4, 256


@dataclass(frozen=True)
class FlowConfig:
    """Everything needed to rebuild a model. Round-trips through a plain dict / JSON."""

    image_shape: tuple[int, int, int] = (1, 28, 28)  # (C, H, W) of the data; H, W divisible by 2**levels
    levels: int = 2             # L: scales; after each but the last, half the channels leave as a latent
    steps: int = 4              # K: flow steps per level (mask="realnvp": K before and K after the squeeze)
    hidden: int = 64            # width of each coupling network; most of the parameters live here
    coupling: str = "affine"    # "affine" y2 = x2·exp(s)+t (RealNVP/Glow) | "additive" y2 = x2+t (NICE)
    permutation: str = "conv1x1_lu"  # channel mixing between couplings: reverse | shuffle | conv1x1 | conv1x1_lu
    mask: str = "channel"       # coupling split: channel halves | checkerboard pixels | realnvp (both, paper pattern)
    actnorm: bool = True        # Glow's data-initialised per-channel scale and shift at the start of each step
    coupling_actnorm: bool = False  # ActNorm inside the coupling networks too (Glow does this)
    split_prior: str = "learned"    # prior of each split-off half: "learned" from the kept half (split2d) | "standard" N(0,I)
    top_prior: str = "learned"      # prior of the last level's latent: "learned" mean and scale | "standard"
    n_bits: int = 8             # bits per pixel modelled: 8 = full 256 levels, 5 = Glow's CelebA-HQ trick
    dequantization: str = "uniform"  # noise u in a pixel's bin: "uniform" U[0,1) (RealNVP, Glow) | "variational" learned q(u|x) (Flow++)
    input_transform: str = "none"    # "logit": RealNVP's logit(α + (1-2α)x) as the flow's first, fixed layer (its logdet counted)
    affine_clamp: float = 2.0   # bound c on |s| in affine couplings, s = c·tanh(raw/c); keeps exp(s) finite
    seed: int = 0               # seeds the initial weights and the shuffle permutations: same seed, same model

    def __post_init__(self):
        shape = self.image_shape
        if isinstance(shape, (list, tuple)):
            object.__setattr__(self, "image_shape", tuple(shape))
        self._validate()

    # -- validation ------------------------------------------------------------------------
    def _validate(self) -> None:
        shape = self.image_shape
        if (not isinstance(shape, tuple) or len(shape) != 3
                or not all(isinstance(v, int) and not isinstance(v, bool) for v in shape)):
            raise ValueError(f"image_shape must be three integers (C, H, W), got {shape!r}")
        c, h, w = shape
        for name, lo, hi in (("levels", 1, MAX_LEVELS), ("steps", 1, MAX_STEPS),
                             ("hidden", 1, MAX_HIDDEN), ("n_bits", 1, 8), ("seed", 0, 2**31 - 1)):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool):
                raise ValueError(f"{name} must be an integer in {lo}..{hi}, got {value!r}")
            if not lo <= value <= hi:
                raise ValueError(f"{name} must be in {lo}..{hi}, got {value}")
        if not 1 <= c <= MAX_CHANNELS:
            raise ValueError(f"image_shape channels must be in 1..{MAX_CHANNELS}, got {c}")
        for name, value in (("coupling", self.coupling), ("permutation", self.permutation),
                            ("mask", self.mask), ("split_prior", self.split_prior),
                            ("top_prior", self.top_prior), ("dequantization", self.dequantization),
                            ("input_transform", self.input_transform)):
            options = {"coupling": COUPLINGS, "permutation": PERMUTATIONS, "mask": MASKS,
                       "split_prior": PRIORS, "top_prior": PRIORS,
                       "dequantization": DEQUANTIZATIONS, "input_transform": INPUT_TRANSFORMS}[name]
            if value not in options:
                raise ValueError(f"{name} must be one of {', '.join(options)}; got {value!r}")
        for name in ("actnorm", "coupling_actnorm"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be True or False, got {getattr(self, name)!r}")
        clamp = self.affine_clamp
        if (not isinstance(clamp, (int, float)) or isinstance(clamp, bool)
                or not math.isfinite(clamp) or not 0.1 <= clamp <= 10):
            raise ValueError(f"affine_clamp must be a number in 0.1..10, got {clamp!r}")
        factor = 2 ** self.levels
        max_levels = _max_levels(h, w)
        if h % factor or w % factor or h < 2 or w < 2 or h > MAX_SIDE or w > MAX_SIDE:
            if h > MAX_SIDE or w > MAX_SIDE:
                raise ValueError(f"image_shape height and width must be at most {MAX_SIDE}, got {h}×{w}")
            raise ValueError(
                f"levels={self.levels} needs height and width divisible by 2**levels = {factor}, "
                f"but the image is {h}×{w}; use levels ≤ {max_levels} for this image size")

    # -- conversions -----------------------------------------------------------------------
    def to_dict(self) -> dict:
        d = asdict(self)
        d["image_shape"] = list(self.image_shape)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "FlowConfig":
        """Build from a dict (e.g. a checkpoint's ``config``); unknown keys are an error."""
        return dataclass_from_dict(cls, d)

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    def replace(self, **changes) -> "FlowConfig":
        return replace(self, **changes)

    @property
    def n_bins(self) -> int:
        return 2 ** self.n_bits

    @property
    def dims(self) -> int:
        """D = C·H·W, the number of real values per image (bits/dim divides by this)."""
        c, h, w = self.image_shape
        return c * h * w

    def summary(self) -> str:
        c, h, w = self.image_shape
        return (f"{c}×{h}×{w}, L={self.levels}, K={self.steps}, hidden={self.hidden}, "
                f"{self.coupling}, {self.permutation}, {self.mask} mask"
                f"{', ActNorm' if self.actnorm else ''}, {self.n_bits}-bit"
                f"{', logit input' if self.input_transform == 'logit' else ''}"
                f"{', learned dequantisation' if self.dequantization == 'variational' else ''}")


def dataclass_from_dict(cls, d: dict):
    """``cls(**d)`` for a config dataclass, refusing a non-dict or unknown keys by name."""
    if not isinstance(d, dict):
        raise ValueError(f"a {cls.__name__} dict is needed, got {type(d).__name__}")
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(d) - known)
    if unknown:
        raise ValueError(f"unknown {cls.__name__} field(s) {unknown}; valid fields: {sorted(known)}")
    return cls(**d)


def _max_levels(h: int, w: int) -> int:
    levels = 0
    while h % 2 == 0 and w % 2 == 0 and levels < MAX_LEVELS:
        h, w, levels = h // 2, w // 2, levels + 1
    return levels


class EncodeOutput(NamedTuple):
    zs: list            # per-level latents, finest first, each [B, c_i, h_i, w_i]
    logdet: torch.Tensor        # [B] nats: Σ log|det J| over every layer
    log_pz: torch.Tensor        # [B] nats: Σ over levels of the latent's log-density
    log_pz_levels: list         # per-level [B] terms of log_pz, finest first
    eps: list                   # latents standardised by their prior, (z - mean) / scale


class BitsPerDim(NamedTuple):
    """Bits/dim and its exact decomposition: total = Σ prior_levels + logdet + dequant + quantisation."""
    total: torch.Tensor         # [B]
    prior_levels: torch.Tensor  # [B, L]: -log p(z_level) / (D ln 2), finest first
    logdet: torch.Tensor        # [B]: -Σ log|det J| / (D ln 2) (negative when the flow expands volume)
    quantisation: float         # n_bits: the log(n_bins) per dimension that turns a density into a probability
    dequant: torch.Tensor       # [B]: log q(u|x) / (D ln 2) of learned dequantisation noise; 0 for uniform noise


class _Level(nn.Module):
    """One scale: [pre-squeeze checkerboard steps] -> squeeze -> K steps -> [split prior]."""

    def __init__(self, cfg: FlowConfig, in_shape: tuple[int, int, int], last: bool,
                 generator: torch.Generator):
        super().__init__()
        c, h, w = in_shape
        common = dict(hidden=cfg.hidden, coupling=cfg.coupling, permutation=cfg.permutation,
                      actnorm=cfg.actnorm, net_actnorm=cfg.coupling_actnorm,
                      clamp=cfg.affine_clamp, generator=generator)
        # RealNVP's pattern: alternating checkerboards at full resolution before the squeeze.
        pre = []
        if cfg.mask == "realnvp":
            pre = [FlowStep(c, h, w, mask="checkerboard", parity=k % 2, **common)
                   for k in range(cfg.steps)]
        self.pre_steps = nn.ModuleList(pre)
        c, h, w = 4 * c, h // 2, w // 2
        step_mask = "checkerboard" if cfg.mask == "checkerboard" else "channel"
        self.steps = nn.ModuleList(
            FlowStep(c, h, w, mask=step_mask, parity=k % 2, **common) for k in range(cfg.steps))
        self.last = last
        if last:
            self.keep_channels, self.latent_shape = c, (c, h, w)
            self.out_shape = None
        else:
            self.keep_channels = c // 2
            self.latent_shape = (c - c // 2, h, w)
            self.out_shape = (c // 2, h, w)
        self.prior_net = None
        if not last and cfg.split_prior == "learned":
            self.prior_net = ZeroConv2d(self.keep_channels, 2 * self.latent_shape[0])

    def split_prior(self, kept: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and log-scale of the leaving half's Gaussian, computed from the kept half."""
        if self.prior_net is None:
            zeros = kept.new_zeros(kept.shape[0], *self.latent_shape)
            return zeros, zeros
        mean, log_scale = self.prior_net(kept).chunk(2, dim=1)
        return mean, log_scale


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
        # Same seed, same model: weights and shuffles come from a private RNG stream.
        generator = torch.Generator().manual_seed(cfg.seed)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            levels, shape = [], cfg.image_shape
            for i in range(cfg.levels):
                level = _Level(cfg, shape, last=(i == cfg.levels - 1), generator=generator)
                levels.append(level)
                shape = level.out_shape
            self.dequantizer = None
            if cfg.dequantization == "variational":
                self.dequantizer = VariationalDequantizer(cfg.image_shape[0], cfg.n_bins)
        self.levels = nn.ModuleList(levels)
        self.input_transform = LogitTransform() if cfg.input_transform == "logit" else None
        top_shape = self.levels[-1].latent_shape
        self.top_mean = self.top_log_scale = None
        if cfg.top_prior == "learned":
            self.top_mean = nn.Parameter(torch.zeros(1, *top_shape))
            self.top_log_scale = nn.Parameter(torch.zeros(1, *top_shape))

    # -- shapes and bookkeeping -----------------------------------------------------------
    @property
    def latent_shapes(self) -> list[tuple[int, int, int]]:
        """(c, h, w) of each level's latent, finest first."""
        return [level.latent_shape for level in self.levels]

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

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

    def _top_prior(self, batch: int, like: torch.Tensor):
        if self.top_mean is None:
            zeros = like.new_zeros(batch, *self.latent_shapes[-1])
            return zeros, zeros
        return (self.top_mean.expand(batch, -1, -1, -1),
                self.top_log_scale.expand(batch, -1, -1, -1))

    def _check_input(self, x: torch.Tensor) -> None:
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
    def encode(self, x: torch.Tensor) -> EncodeOutput:
        """x [B, C, H, W] in [-0.5, 0.5] -> latents, logdet [B], log_pz [B] (nats)."""
        self._check_input(x)
        if self.training and x.device.type == "cpu" and torch.is_grad_enabled():
            # Training on the CPU: keep freed activation memory for the next step instead of
            # handing it back to the kernel (about a million page faults per step at batch 64
            # otherwise; flowlib/speed.py). Once per process; the app server opts out.
            tune_for_training_automatically()
        batch = x.shape[0]
        logdet = x.new_zeros(batch)
        zs, eps, log_pz_levels = [], [], []
        h = x
        if self.input_transform is not None:
            h, logdet = self.input_transform(h)
        for level in self.levels:
            for step in level.pre_steps:
                h, ld = step(h)
                logdet = logdet + ld
            h = squeeze2d(h)
            for step in level.steps:
                h, ld = step(h)
                logdet = logdet + ld
            if level.last:
                z = h
                mean, log_scale = self._top_prior(batch, h)
            else:
                h, z = h[:, :level.keep_channels], h[:, level.keep_channels:]
                mean, log_scale = level.split_prior(h)
            zs.append(z)
            eps.append((z - mean) * torch.exp(-log_scale))
            log_pz_levels.append(gaussian_log_prob(z, mean, log_scale))
        log_pz = torch.stack(log_pz_levels, 0).sum(0)
        return EncodeOutput(zs, logdet, log_pz, log_pz_levels, eps)

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

    def decode(self, zs: Sequence[torch.Tensor | None], temperature=1.0,
               eps: Sequence[torch.Tensor] | None = None) -> torch.Tensor:
        """Invert the flow. A latent given as ``None`` is drawn from its prior.

        A missing latent becomes ``mean + temperature · scale · eps`` where the mean and scale
        come from its (conditional) prior and eps is the matching entry of ``eps`` or fresh
        N(0, I) noise. So ``decode(out.zs)`` is the exact inverse of ``encode``, and
        ``decode([out.zs[0], None, None])`` keeps the finest detail of an image while
        resampling its coarse structure.
        """
        n = len(self.levels)
        if len(zs) != n:
            raise ValueError(f"decode needs one latent (or None) per level: {n}, got {len(zs)}")
        temps = self._temperatures(temperature)
        batch = next((z.shape[0] for z in zs if z is not None),
                     None if eps is None else eps[0].shape[0])
        if batch is None:
            raise ValueError("decode needs at least one latent or eps to know the batch size")
        ref = self.top_mean if self.top_mean is not None else next(self.parameters())
        h = None
        for i in reversed(range(n)):
            level = self.levels[i]
            if level.last:
                mean, log_scale = self._top_prior(batch, ref)
            else:
                mean, log_scale = level.split_prior(h)
            z = zs[i]
            if z is None:
                noise = eps[i] if eps is not None else torch.randn_like(mean)
                z = mean + temps[i] * torch.exp(log_scale) * noise
            elif tuple(z.shape[1:]) != level.latent_shape:
                raise ValueError(f"latent {i} must have shape [B, {', '.join(map(str, level.latent_shape))}], "
                                 f"got {list(z.shape)}")
            h = z if level.last else torch.cat([h, z], dim=1)
            for step in reversed(level.steps):
                h = step.inverse(h)
            h = unsqueeze2d(h)
            for step in reversed(level.pre_steps):
                h = step.inverse(h)
        if self.input_transform is not None:
            h = self.input_transform.inverse(h)
        return h

    def sample_eps(self, n: int, generator: torch.Generator | None = None) -> list[torch.Tensor]:
        """Standard-normal noise for every level (finest first), for repeatable sampling."""
        return [torch.randn(n, *shape, generator=generator).to(self.device)
                for shape in self.latent_shapes]

    def sample(self, n: int, temperature=0.7, eps: Sequence[torch.Tensor] | None = None,
               generator: torch.Generator | None = None) -> torch.Tensor:
        """n images [n, C, H, W] (about [-0.5, 0.5]) drawn at a temperature (or one per level).

        Fixed ``eps`` (from :meth:`sample_eps`) gives the same samples at every temperature,
        scaled towards the prior mean as the temperature falls; temperature 0 returns the
        decoded prior mean.
        """
        if not isinstance(n, int) or n < 1:
            raise ValueError(f"n must be a positive integer, got {n!r}")
        if eps is None:
            eps = self.sample_eps(n, generator)
        return self.decode([None] * len(self.levels), temperature=temperature, eps=eps)

    # -- likelihood ------------------------------------------------------------------------
    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """log p(x) in nats [B] for continuous x in [-0.5, 0.5]: log_pz + logdet."""
        out = self.encode(x)
        return out.log_pz + out.logdet

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

    def preprocess(self, x_uint8: torch.Tensor, noise: bool = True,
                   generator: torch.Generator | None = None) -> torch.Tensor:
        """Integer pixels 0..255 -> dequantised floats ``(x + u) / n_bins - 0.5``, u ~ U[0, 1).

        With n_bits < 8 the pixels are first reduced to n_bits (x // 2**(8 - n_bits)).
        ``noise=False`` puts every value in the middle of its bin (u = 0.5), a deterministic
        choice for display. Always uniform noise, whatever ``config.dequantization`` says:
        for scoring use :meth:`dequantize` (through :meth:`bits_per_dim`).
        """
        x = self.pixel_bins(x_uint8)
        if noise:
            u = torch.rand(x.shape, generator=generator).to(x.device)
        else:
            u = torch.full_like(x, 0.5)
        return (x + u) / self.config.n_bins - 0.5

    def dequantize(self, x_uint8: torch.Tensor, noise: bool = True,
                   generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(x̃, log q(u|x) [B])`` with the model's dequantisation; log q is None for uniform noise.

        Uniform: exactly :meth:`preprocess`. Variational: u drawn from the learned q (its
        median when ``noise=False``); see :class:`flowlib.layers.VariationalDequantizer`.
        """
        if self.dequantizer is None:
            return self.preprocess(x_uint8, noise=noise, generator=generator), None
        x = self.pixel_bins(x_uint8)
        u, log_q = self.dequantizer(x, noise=noise, generator=generator)
        return (x + u) / self.config.n_bins - 0.5, log_q

    def bits_per_dim_terms(self, x_uint8: torch.Tensor, noise: bool = True,
                           generator: torch.Generator | None = None) -> BitsPerDim:
        """Bits/dim of integer images and its split into prior-per-level, logdet, dequant, quantisation.

        bpd = -(log p(x̃) - log q(u|x) - D·log n_bins) / (D·ln 2), with x̃ = (x + u)/n_bins - 0.5
        the dequantised image, D = C·H·W real pixels, and log q = 0 for uniform noise (the
        usual formula). Either way an upper bound on the discrete -log2 P(x) / D.
        Differentiable: the trainer uses ``total.mean()`` as its loss.
        """
        x, log_q = self.dequantize(x_uint8, noise=noise, generator=generator)
        out = self.encode(x)
        scale = self.config.dims * math.log(2)
        prior_levels = -torch.stack(out.log_pz_levels, dim=1) / scale
        logdet = -out.logdet / scale
        dequant = log_q / scale if log_q is not None else torch.zeros_like(logdet)
        total = prior_levels.sum(1) + logdet + dequant + self.config.n_bits
        return BitsPerDim(total, prior_levels, logdet, float(self.config.n_bits), dequant)

    def bits_per_dim(self, x_uint8: torch.Tensor, noise: bool = True,
                     generator: torch.Generator | None = None) -> torch.Tensor:
        """[B] bits per dimension of integer images 0..255 (dequantised as the config says)."""
        return self.bits_per_dim_terms(x_uint8, noise=noise, generator=generator).total

    def to_uint8(self, x: torch.Tensor) -> torch.Tensor:
        """Model space [-0.5, 0.5] -> uint8 pixels, each at the centre of its n_bits bin."""
        n_bins = self.config.n_bins
        step = 256 // n_bins
        q = torch.floor((x.float().clamp(-0.5, 0.5 - 1e-6) + 0.5) * n_bins)
        return (q * step + step // 2).clamp(0, 255).to(torch.uint8)


# -- presets -------------------------------------------------------------------------------
# Each preset's one line says where it comes from. The app swaps image_shape for the chosen
# dataset's shape (levels permitting).
PRESET_NOTES: dict[str, str] = {}
PRESETS: dict[str, FlowConfig] = {}


def _preset(name: str, note: str, **kwargs) -> None:
    PRESETS[name] = FlowConfig(**kwargs)
    PRESET_NOTES[name] = note


_preset("glow", "The Glow paper: ActNorm, LU 1×1 conv, affine, channel masks, learned priors, K=32, L=3, width 512.",
        image_shape=(3, 32, 32), levels=3, steps=32, hidden=512, coupling="affine",
        permutation="conv1x1_lu", mask="channel", actnorm=True, coupling_actnorm=True,
        split_prior="learned", top_prior="learned")
_preset("realnvp", "RealNVP: affine couplings, checkerboard then channel masks per scale, shuffles, no ActNorm, N(0,I) priors.",
        image_shape=(3, 32, 32), levels=3, steps=3, hidden=256, coupling="affine",
        permutation="shuffle", mask="realnvp", actnorm=False, split_prior="standard",
        top_prior="standard")
_preset("article-demo", "The article's Keras demo on 32×32 faces: L=3, K=6, additive coupling, random shuffle.",
        image_shape=(3, 32, 32), levels=3, steps=6, hidden=512, coupling="additive",
        permutation="shuffle", mask="channel", actnorm=True, split_prior="learned",
        top_prior="learned")
_preset("nice", "NICE: additive (volume-preserving) couplings, channel reversal, N(0,I) priors.",
        image_shape=(1, 28, 28), levels=2, steps=4, hidden=128, coupling="additive",
        permutation="reverse", mask="channel", actnorm=False, split_prior="standard",
        top_prior="standard")
_preset("mnist-fast", "Small Glow for MNIST on a laptop CPU: L=2, K=4, width 64, logit input and learned "
        "dequantisation noise; learns visibly within a minute.",
        image_shape=(1, 28, 28), levels=2, steps=4, hidden=64, coupling="affine",
        permutation="conv1x1_lu", mask="channel", actnorm=True, split_prior="learned",
        top_prior="learned", dequantization="variational", input_transform="logit")
_preset("faces-fast", "Small Glow for 32×32 grayscale faces on a laptop CPU: L=3, K=4, width 64.",
        image_shape=(1, 32, 32), levels=3, steps=4, hidden=64, coupling="affine",
        permutation="conv1x1_lu", mask="channel", actnorm=True, split_prior="learned",
        top_prior="learned")


def preset(name: str, **overrides) -> FlowConfig:
    """A preset's config with some fields changed, e.g. ``preset("glow", image_shape=(1, 32, 32))``."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    return PRESETS[name].replace(**overrides)
