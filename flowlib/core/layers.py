"""The invertible layers a flow step is made of, and the small networks inside them.

Contract for every invertible layer here:

    y, logdet = layer(x)      # logdet: [B], log |det dy/dx| per example, in nats
    x = layer.inverse(y)

No ``reverse=`` flags and no tuple-or-tensor returns: forward always gives ``(y, logdet)``,
inverse always gives the tensor. A flow's log-likelihood is the sum of the layers' logdets
plus the log-density of the final latent under its prior (see ``model.py``).

One flow step (Glow) is  ActNorm -> permutation -> coupling:

* ActNorm normalises each channel with a learned scale and shift, started from the first
  batch's statistics so the step begins with well-scaled activations.
* The permutation mixes channels so that the next coupling conditions on different values
  than the last one did. Options, from the article: reverse the channel order (RealNVP),
  a fixed random shuffle, or a learned invertible 1×1 convolution (Glow), optionally
  parameterised by its LU decomposition so its log-determinant is a cheap sum. They live in
  ``flowlib.core.permutations`` (one protocol, :class:`ChannelMixing`) and are importable from here.
* The coupling splits its input into x1 and x2 and changes only x2, by an amount that
  depends on x1. Its Jacobian is triangular, so the log-determinant is a sum.

Each level of the model squeezes (:class:`Squeeze`) before its channel steps: a reshape, so a
layer with logdet 0.
"""

from __future__ import annotations

import contextlib
import contextvars
import math

import torch
import torch.nn.functional as F
from torch import nn

from .ops import channel_split_sizes, checkerboard_mask, squeeze2d, unsqueeze2d
from .permutations import (
    ChannelMixing,
    InvConv1x1,
    InvConv1x1LU,
    ReversePermutation,
    ShufflePermutation,
    make_permutation,
)

__all__ = [
    "ActNorm", "ChannelMixing", "ReversePermutation", "ShufflePermutation", "InvConv1x1",
    "InvConv1x1LU", "Squeeze", "ZeroConv2d", "CouplingNet", "Coupling", "FlowStep", "make_permutation",
    "low_precision_networks", "run_network", "VariationalDequantizer", "LogitTransform",
]

# Precision of the coupling networks' convolutions; None = the input's own (float32).
_NET_DTYPE: contextvars.ContextVar = contextvars.ContextVar("flowlib_net_dtype", default=None)


@contextlib.contextmanager
def low_precision_networks(dtype: torch.dtype = torch.bfloat16):
    """Run only the networks inside the flow (the couplings' and the learned dequantisation's
    convolutions, most of the FLOPs) in ``dtype``.

    Everything that makes the flow a flow stays float32: the couplings' scales and shifts
    are applied in float32, and every log-determinant and prior log-density is summed in
    float32. The networks never need inverting, so a lower-precision network is still an
    exactly invertible flow; it is simply a (very slightly) different function of x1.
    On this project's CPU with AVX-512 BF16 it cut the step of the width-512 demo models by
    about 45 % (benchmarks/RESULTS.md); on GPUs it is not measured.
    """
    token = _NET_DTYPE.set(dtype)
    try:
        yield
    finally:
        _NET_DTYPE.reset(token)


class ActNorm(nn.Module):
    """Per-channel affine normalisation: ``y = (x + bias) * exp(log_scale)``.

    The first batch that passes through sets ``bias = -mean`` and ``log_scale = -log(std)``
    per channel, so that batch leaves with zero mean and unit variance. Whether that has
    happened is the ``initialized`` buffer, which lives in the state dict: a model loaded
    from a checkpoint is never re-initialised from whatever batch it sees next.

    logdet = H · W · Σ_c log_scale_c  (every pixel of a channel is scaled the same way).
    """

    def __init__(self, channels: int, eps: float = 1e-6):
        super().__init__()
        self.channels = channels
        self.eps = eps
        self.bias = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.log_scale = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.register_buffer("initialized", torch.tensor(False))

    def extra_repr(self) -> str:
        return f"channels={self.channels}, initialized={bool(self.initialized)}"

    @torch.no_grad()
    def initialize(self, x: torch.Tensor) -> None:
        """Set bias and scale from this batch's per-channel mean and standard deviation."""
        flat = x.transpose(0, 1).reshape(self.channels, -1).float()
        mean, std = flat.mean(dim=1), flat.std(dim=1, unbiased=False)
        # A channel that is constant over the batch (e.g. a coupling net's input where a
        # checkerboard on a 1×1 grid masks everything) has nothing to normalise: keep its
        # scale at 1 rather than multiplying by 1/eps.
        log_scale = torch.where(std > self.eps, -torch.log(std + self.eps), torch.zeros_like(std))
        self.bias.copy_((-mean).view(1, -1, 1, 1))
        self.log_scale.copy_(log_scale.view(1, -1, 1, 1))
        self.initialized.fill_(True)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.initialized:
            self.initialize(x)
        h, w = x.shape[2], x.shape[3]
        y = (x + self.bias) * torch.exp(self.log_scale)
        logdet = (h * w) * self.log_scale.sum()
        return y, logdet.expand(x.shape[0])

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        return y * torch.exp(-self.log_scale) - self.bias


class Squeeze(nn.Module):
    """:func:`~flowlib.core.ops.squeeze2d` as a layer: ``[B, C, H, W] -> [B, 4C, H/2, W/2]``.

    It only moves values (its Jacobian is a permutation matrix), so logdet = 0 exactly.
    """

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return squeeze2d(x), x.new_zeros(x.shape[0])

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        return unsqueeze2d(y)


class ZeroConv2d(nn.Module):
    """A 3×3 convolution that starts as exactly zero, with a learned per-channel gain.

    Used as the last layer of every coupling network and of the learned priors: a zero
    output means s = 0 and t = 0, so every coupling starts as the identity and every
    learned prior starts as N(0, I). The gain ``exp(3 · log_gain)`` (Glow's Conv2dZeros)
    lets the output grow quickly once training moves it away from zero.
    """

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        nn.init.zeros_(self.conv.weight)
        nn.init.zeros_(self.conv.bias)
        self.log_gain = nn.Parameter(torch.zeros(1, out_channels, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x) * torch.exp(self.log_gain * 3)


class CouplingNet(nn.Module):
    """The coupling's network: conv3×3 -> ReLU -> conv1×1 -> ReLU -> ZeroConv2d.

    It never has to be inverted, so it can be any network; three convolutions is the
    Glow / article recipe. With ``actnorm=True`` each hidden convolution is followed by an
    ActNorm (as in Glow), which keeps activations well scaled from the first step.
    """

    def __init__(self, in_channels: int, out_channels: int, hidden: int, actnorm: bool = False):
        super().__init__()
        self.conv_in = nn.Conv2d(in_channels, hidden, 3, padding=1, bias=not actnorm)
        self.conv_mid = nn.Conv2d(hidden, hidden, 1, bias=not actnorm)
        self.norm_in = ActNorm(hidden) if actnorm else None
        self.norm_mid = ActNorm(hidden) if actnorm else None
        self.conv_out = ZeroConv2d(hidden, out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(x)
        if self.norm_in is not None:
            h = self.norm_in(h)[0]
        h = F.relu(h)
        h = self.conv_mid(h)
        if self.norm_mid is not None:
            h = self.norm_mid(h)[0]
        h = F.relu(h)
        return self.conv_out(h)


def run_network(net: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
    """Run a coupling (or dequantisation) network: float32 NCHW in, float32 NCHW out.

    Channels-last (NHWC) activations inside: training throughput rose 5-17 % with them
    here in float32 and about 7 % in bf16 (benchmarks/RESULTS.md). The flow itself stays NCHW.
    Inside :func:`low_precision_networks` the network runs in that dtype and only its output
    comes back as float32.
    """
    inputs = inputs.contiguous(memory_format=torch.channels_last)
    dtype = _NET_DTYPE.get()
    if dtype is None or dtype == inputs.dtype:
        return net(inputs).contiguous()
    with torch.autocast(inputs.device.type, dtype=dtype):
        h = net(inputs)
    return h.to(inputs.dtype).contiguous()


class Coupling(nn.Module):
    """Affine (RealNVP / Glow) or additive (NICE) coupling with a channel or checkerboard mask.

    Notation:
        x1  the values the coupling conditions on; they pass through unchanged (y1 = x1)
        x2  the values it transforms
        s, t = NN(x1)                     log-scale and shift, one per value of x2
        affine:    y2 = x2 · exp(s) + t   logdet = Σ s
        additive:  y2 = x2 + t            logdet = 0   (s is never computed)

    Because y1 = x1 and y2 depends on x2 only elementwise, the Jacobian is triangular with
    exp(s) on its diagonal: its log-determinant is just the sum of s.

    ``s`` is soft-clamped, ``s = c · tanh(raw / c)`` with c = ``clamp``. Unlike Glow's
    ``sigmoid(raw + 2)`` it is exactly 0 when the network outputs 0, so a fresh coupling is
    the identity; unlike a hard clamp its gradient never vanishes abruptly; and |s| ≤ c keeps
    exp(s) from overflowing, the usual source of early NaNs.

    Masks:
        channel       x1 = the first C//2 channels, x2 = the rest
        checkerboard  x1 = pixels where (i + j) % 2 == parity, in every channel; x2 = the others.
                      The network sees the masked input (zeros at x2) plus the mask itself,
                      and s, t are zeroed on x1's pixels, so y = x · exp(s) + t reduces to
                      y1 = x1 there.
    """

    def __init__(self, channels: int, height: int, width: int, hidden: int,
                 kind: str = "affine", mask: str = "channel", parity: int = 0,
                 clamp: float = 2.0, net_actnorm: bool = False):
        super().__init__()
        if kind not in ("affine", "additive"):
            raise ValueError(f"unknown coupling {kind!r}; expected 'affine' or 'additive'")
        if mask not in ("channel", "checkerboard"):
            raise ValueError(f"unknown coupling mask {mask!r}; expected 'channel' or 'checkerboard'")
        self.kind, self.mask_type, self.parity = kind, mask, parity
        self.channels, self.clamp = channels, clamp
        per_value = 2 if kind == "affine" else 1
        if mask == "channel":
            self.c1, self.c2 = channel_split_sizes(channels)
            self.net = CouplingNet(self.c1, per_value * self.c2, hidden, net_actnorm)
            self.register_buffer("mask", None)
        else:
            self.register_buffer("mask", checkerboard_mask(height, width, parity))
            self.net = CouplingNet(channels + 1, per_value * channels, hidden, net_actnorm)

    def extra_repr(self) -> str:
        if self.mask_type == "channel":
            split = f"x1=channels[:{self.c1}], x2=channels[{self.c1}:]"
        else:
            split = f"x1=checkerboard(parity={self.parity}) of {tuple(self.mask.shape[2:])}"
        return f"kind={self.kind}, mask={self.mask_type}, {split}"

    def _log_scale(self, raw: torch.Tensor) -> torch.Tensor:
        return self.clamp * torch.tanh(raw / self.clamp)

    def shift_and_log_scale(self, x1_view: torch.Tensor):
        """Run the network on the conditioning values; return (t, s) shaped like x2.

        ``x1_view``: x1 for a channel mask; the whole x for a checkerboard mask (only its x1
        positions are read). ``s`` is None for an additive coupling.
        """
        if self.mask_type == "channel":
            h = run_network(self.net, x1_view)
        else:
            b = self.mask.expand(x1_view.shape[0], 1, -1, -1)
            h = run_network(self.net, torch.cat([x1_view * self.mask, b], dim=1))
        if self.kind == "additive":
            t, s = h, None
        else:
            raw_s, t = h.chunk(2, dim=1)
            s = self._log_scale(raw_s)
        if self.mask_type == "checkerboard":
            keep = 1 - self.mask  # s and t act only where x2 lives
            t = t * keep
            s = None if s is None else s * keep
        return t, s

    def forward(self, x):
        if self.mask_type == "channel":
            x1, x2 = x[:, :self.c1], x[:, self.c1:]
            t, s = self.shift_and_log_scale(x1)
        else:
            x2 = x
            t, s = self.shift_and_log_scale(x)
        if s is None:
            y2 = x2 + t
            logdet = x.new_zeros(x.shape[0])
        else:
            y2 = x2 * torch.exp(s) + t
            logdet = s.flatten(1).sum(1)
        y = torch.cat([x1, y2], dim=1) if self.mask_type == "channel" else y2
        return y, logdet

    def inverse(self, y):
        if self.mask_type == "channel":
            y1, y2 = y[:, :self.c1], y[:, self.c1:]
            t, s = self.shift_and_log_scale(y1)
        else:
            y2 = y
            t, s = self.shift_and_log_scale(y)  # y1 == x1 on the mask, and only that is read
        x2 = y2 - t if s is None else (y2 - t) * torch.exp(-s)
        return torch.cat([y1, x2], dim=1) if self.mask_type == "channel" else x2


class FlowStep(nn.Module):
    """One step of flow: [ActNorm] -> permutation -> coupling."""

    def __init__(self, channels: int, height: int, width: int, *, hidden: int, coupling: str,
                 permutation: str, mask: str, parity: int, actnorm: bool, net_actnorm: bool,
                 clamp: float, generator: torch.Generator):
        super().__init__()
        self.actnorm = ActNorm(channels) if actnorm else None
        self.permutation = make_permutation(permutation, channels, generator)
        self.coupling = Coupling(channels, height, width, hidden, kind=coupling, mask=mask,
                                 parity=parity, clamp=clamp, net_actnorm=net_actnorm)

    def layers(self) -> list[nn.Module]:
        return [m for m in (self.actnorm, self.permutation, self.coupling) if m is not None]

    def forward(self, x):
        logdet = x.new_zeros(x.shape[0])
        for layer in self.layers():
            x, ld = layer(x)
            logdet = logdet + ld
        return x, logdet

    def inverse(self, y):
        for layer in reversed(self.layers()):
            y = layer.inverse(y)
        return y


class LogitTransform(nn.Module):
    """RealNVP's input transform: ``y = logit(α + (1 - 2α)·v)`` with v = x + 0.5 in [0, 1].

    A fixed, elementwise first layer of the flow (no parameters). It stretches the values
    near 0 and 1: MNIST's black background (80 % of its pixels are exactly 0) dequantises to
    a box [0, 1/256] with hard edges, which a flow of affine couplings fits badly; after the
    logit the same box is the long interval [-13.8, -5.5] with an exponential density on it,
    a shape the flow's Gaussian tails fit well. α keeps 0 and 1 finite (1e-6, as MAF used
    for MNIST). Like every layer, its log-determinant is counted, so bits/dim stays exact:

        logdet = Σ [log(1 - 2α) - log p - log(1 - p)],   p = α + (1 - 2α)·v

    Its inverse is a sigmoid, so every decoded image lies in [-0.5, 0.5] (up to α).
    """

    def __init__(self, alpha: float = 1e-6):
        super().__init__()
        self.alpha = alpha

    def extra_repr(self) -> str:
        return f"alpha={self.alpha:g}"

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        p = self.alpha + (1 - 2 * self.alpha) * (x + 0.5)
        log_p, log_1mp = torch.log(p), torch.log1p(-p)
        logdet = (math.log(1 - 2 * self.alpha) - log_p - log_1mp).flatten(1).sum(1)
        return log_p - log_1mp, logdet

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        return (torch.sigmoid(y) - self.alpha) / (1 - 2 * self.alpha) - 0.5


class VariationalDequantizer(nn.Module):
    """Learned dequantisation noise q(u | x) (Flow++, Ho et al. 2019) instead of u ~ U[0, 1).

    Why: with uniform noise the flow must spread a pixel's probability evenly over its bin,
    a box with hard edges. An affine coupling moves each value affinely given the others,
    so the density a flow of them gives one bin is bump-shaped, not flat, and fitting a box
    with a bump wastes bits (a Gaussian fitted to a uniform box costs 0.25 bits). On MNIST,
    where 80 % of the pixels are 0, that is a large share of the total. Here the noise takes
    the shape of the flow's bump instead. The score stays an honest bound:

        bits/dim = -(log p(x̃) - log q(u | x) - D·log n_bins) / (D·ln 2),  u ~ q(· | x)

    is an upper bound on the discrete -log2 P(x) / D (Jensen's inequality), tight when q
    equals the flow's own density inside the bin. With q uniform, log q = 0 and this is the
    usual formula.

    Notation (per value, C×H×W of them):
        x        the integer pixel, 0..n_bins-1
        ε        standard logistic noise, logit(v) with v ~ U(0, 1)
        μ, ρ     table[x] (one learned pair per grey level) + net(image) (a small conv net
                 on the squeezed image whose last conv starts at zero: it sees the
                 neighbourhood, which decides where the flow's bump sits)
        a = μ + exp(ρ)·ε,   u = sigmoid(a) in (0, 1)
        log q(u | x) = log σ'(ε) - ρ - log σ'(a)      (change of variables ε -> u)

    At initialisation μ = ρ = 0, so u = sigmoid(logit(v)) = v is exactly U(0, 1) and
    log q = 0: a new model starts as the uniform-dequantised flow.
    """

    def __init__(self, channels: int, n_bins: int, hidden: int = 32):
        super().__init__()
        self.channels, self.n_bins = channels, n_bins
        self.table = nn.Parameter(torch.zeros(n_bins, 2))
        self.net = CouplingNet(4 * channels, 8 * channels, hidden)

    def extra_repr(self) -> str:
        return f"channels={self.channels}, n_bins={self.n_bins}"

    def forward(self, x_int: torch.Tensor,
                uniform: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """x_int: float [B, C, H, W] holding integers 0..n_bins-1 -> (u [B, C, H, W], log q [B]).

        ``uniform``: U(0, 1) values v of x_int's shape, the source of the noise
        (ε = logit(v)); None takes ε = 0, the median of q (u = 0.5 for a fresh model, as with
        uniform noise), a deterministic choice for display.
        """
        if uniform is not None:
            eps = torch.logit(uniform.to(x_int.device), eps=1e-6)
        else:
            eps = torch.zeros_like(x_int)
        params = self.table[x_int.long()]                      # [B, C, H, W, 2]
        centred = (x_int + 0.5) / self.n_bins - 0.5
        h = unsqueeze2d(run_network(self.net, squeeze2d(centred)))  # [B, 2C, H, W]
        mu = params[..., 0] + h[:, :self.channels]
        log_scale = params[..., 1] + h[:, self.channels:]
        a = mu + torch.exp(log_scale) * eps
        u = torch.sigmoid(a)
        log_q = _log_sigmoid_slope(eps) - log_scale - _log_sigmoid_slope(a)
        return u, log_q.flatten(1).sum(1)


def _log_sigmoid_slope(a: torch.Tensor) -> torch.Tensor:
    """log σ'(a) = log σ(a) + log σ(-a), stable for any a."""
    return F.logsigmoid(a) + F.logsigmoid(-a)


def gaussian_log_prob(z: torch.Tensor, mean: torch.Tensor, log_scale: torch.Tensor) -> torch.Tensor:
    """log N(z; mean, exp(log_scale)²) summed over all but the batch axis: [B] nats."""
    normalised = (z - mean) * torch.exp(-log_scale)
    per_value = -0.5 * (math.log(2 * math.pi) + normalised ** 2) - log_scale
    return per_value.flatten(1).sum(1)
