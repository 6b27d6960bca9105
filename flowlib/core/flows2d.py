"""Normalizing flows on 2-D points: the image flows' ideas small enough to watch every layer.

Every layer keeps the contract of :mod:`flowlib.core.layers`:

    y, logdet = layer(x)      # x, y: [B, 2]; logdet: [B], log |det dy/dx| in nats
    x = layer.inverse(y)

A :class:`Flow2D` is K steps of  [ActNorm] -> mixing -> coupling, the same order as a Glow
step. ActNorm and the LU-parameterised matrix are the image layers themselves, run on each
point as a 2-channel 1×1 "image" (:class:`PointwiseLayer`); the couplings get a small MLP
instead of a convolution, because a point has no neighbours to convolve over.

The model's density is the change of variables

    log p(x) = log N(z; 0, I) + Σ_k log |det J_k(x)|,   z = f_K ∘ … ∘ f_1 (x),

and :meth:`Flow2D.trace` returns every intermediate point and every term of that sum, which
is what the "Flows in 2-D" page draws.
"""

from __future__ import annotations

import contextlib
import math
import threading
import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .layers import ActNorm
from .permutations import InvConv1x1LU

__all__ = [
    "TARGETS", "MIXINGS", "COUPLINGS", "Flow2DConfig", "Flow2D", "Trace", "PointwiseLayer",
    "Coupling2D", "Swap", "FixedRotation", "sample_target", "points_dataset", "train_steps",
    "make_optimizer", "one_thread", "grid_points", "standard_normal_log_prob",
]

TARGETS = {
    "two_moons": "Two moons",
    "eight_gaussians": "8 Gaussians",
    "checkerboard": "Checkerboard",
    "spiral": "Spiral",
    "rings": "Concentric rings",
}
MIXINGS = {
    "swap": "swap the two coordinates",
    "rotation": "fixed random rotation",
    "lu": "learned 2×2 matrix (LU)",
}
COUPLINGS = {"affine": "affine: y₂ = x₂·exp(s(x₁)) + t(x₁)", "additive": "additive: y₂ = x₂ + t(x₁)"}


# -- layers ------------------------------------------------------------------------------------
class PointwiseLayer(nn.Module):
    """Run a per-channel image layer (ActNorm, the LU 1×1 convolution) on points.

    A batch of points [B, 2] is a batch of 1×1 images with 2 channels, so the image layer's
    log-determinant (H · W · per-pixel term) is exactly the point's log-determinant.
    """

    def __init__(self, image_layer: nn.Module):
        super().__init__()
        self.image_layer = image_layer

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y, logdet = self.image_layer(x[:, :, None, None])
        return y[:, :, 0, 0], logdet

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        return self.image_layer.inverse(y[:, :, None, None])[:, :, 0, 0]


class Swap(nn.Module):
    """(x₁, x₂) -> (x₂, x₁): the next coupling changes the coordinate this one kept. logdet = 0."""

    def forward(self, x):
        return x.flip(1), x.new_zeros(x.shape[0])

    def inverse(self, y):
        return y.flip(1)


class FixedRotation(nn.Module):
    """Rotate every point by one fixed angle drawn at construction. A rotation keeps areas: logdet = 0.

    Unlike a swap, a rotation by an odd angle mixes both coordinates, so the next coupling
    conditions on a new direction rather than on the other axis.
    """

    def __init__(self, generator: torch.Generator):
        super().__init__()
        # Kept as an angle in float64, so that the matrix built from it is a rotation to the
        # last bit in whatever precision the flow runs (|det| = 1 exactly, not 1 ± 1e-8).
        angle = float(torch.rand((), generator=generator, dtype=torch.float64)) * 2 * math.pi
        self.register_buffer("angle", torch.tensor(angle, dtype=torch.float64))

    @property
    def angle_deg(self) -> float:
        return math.degrees(float(self.angle))

    def extra_repr(self) -> str:
        return f"angle={self.angle_deg:.1f}°"

    def matrix(self, dtype: torch.dtype = torch.float64) -> torch.Tensor:
        a = self.angle.double()
        c, s = torch.cos(a), torch.sin(a)
        return torch.stack([torch.stack([c, -s]), torch.stack([s, c])]).to(dtype)

    def forward(self, x):
        return x @ self.matrix(x.dtype).T, x.new_zeros(x.shape[0])

    def inverse(self, y):
        return y @ self.matrix(y.dtype)  # a rotation's inverse is its transpose


class CouplingMLP(nn.Module):
    """x₁ (one number) -> hidden -> hidden -> (raw s, t). The last layer starts at zero
    (``zero_init``), so s = t = 0 and the coupling starts as the identity, as ZeroConv2d does
    for the image couplings; ``zero_init=False`` leaves PyTorch's random start."""

    def __init__(self, out_features: int, hidden: int, zero_init: bool):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(1, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU())
        self.last = nn.Linear(hidden, out_features)
        if zero_init:
            nn.init.zeros_(self.last.weight)
            nn.init.zeros_(self.last.bias)

    def forward(self, x1: torch.Tensor) -> torch.Tensor:
        return self.last(self.body(x1))


class Coupling2D(nn.Module):
    """Affine or additive coupling on a point: the first coordinate steers the second.

    Notation:
        x₁ = x[:, 0]   passes through unchanged (y₁ = x₁) and is the network's only input
        x₂ = x[:, 1]   is transformed
        s, t = MLP(x₁)                          log-scale and shift
        affine:    y₂ = x₂ · exp(s) + t         logdet = s
        additive:  y₂ = x₂ + t                  logdet = 0   (s is never computed)

    The Jacobian is [[1, 0], [∂y₂/∂x₁, exp(s)]]: lower-triangular, because y₁ does not depend
    on x₂, so its log-determinant is the log of its diagonal, 0 + s. The network inside can
    be anything; it is never inverted. s is soft-clamped as in :class:`flowlib.core.layers.Coupling`,
    s = c · tanh(raw / c), which is exactly 0 when the network outputs 0.
    """

    def __init__(self, kind: str = "affine", hidden: int = 64, clamp: float = 2.0, zero_init: bool = True):
        super().__init__()
        if kind not in COUPLINGS:
            raise ValueError(f"unknown coupling {kind!r}; expected one of {sorted(COUPLINGS)}")
        self.kind, self.clamp = kind, clamp
        self.net = CouplingMLP(2 if kind == "affine" else 1, hidden, zero_init)

    def extra_repr(self) -> str:
        return f"kind={self.kind}, clamp={self.clamp}"

    def shift_and_log_scale(self, x1: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(t, s) for conditioning values x1 [B, 1]; s is None for an additive coupling."""
        h = self.net(x1)
        if self.kind == "additive":
            return h, None
        raw_s, t = h.chunk(2, dim=1)
        return t, self.clamp * torch.tanh(raw_s / self.clamp)

    def forward(self, x):
        x1, x2 = x[:, :1], x[:, 1:]
        t, s = self.shift_and_log_scale(x1)
        if s is None:
            return torch.cat([x1, x2 + t], dim=1), x.new_zeros(x.shape[0])
        return torch.cat([x1, x2 * torch.exp(s) + t], dim=1), s[:, 0]

    def inverse(self, y):
        y1, y2 = y[:, :1], y[:, 1:]
        t, s = self.shift_and_log_scale(y1)
        x2 = y2 - t if s is None else (y2 - t) * torch.exp(-s)
        return torch.cat([y1, x2], dim=1)


# -- the model ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Flow2DConfig:
    steps: int = 6               # K: more steps bend space more, each one a coupling
    coupling: str = "affine"     # "affine" scales and shifts; "additive" only shifts (volume-preserving)
    mixing: str = "lu"           # between couplings: "swap", "rotation" or "lu"
    actnorm: bool = True         # start each step with a data-initialised per-coordinate affine map
    hidden: int = 64             # width of each coupling's MLP
    zero_init: bool = True       # last MLP layer at zero: every step starts as the identity
    clamp: float = 2.0           # |s| ≤ clamp per coupling, so exp(s) never overflows
    seed: int = 0                # draws rotations, the LU start and the MLP weights

    def __post_init__(self):
        if self.coupling not in COUPLINGS:
            raise ValueError(f"coupling: {self.coupling!r} is not one of {sorted(COUPLINGS)}")
        if self.mixing not in MIXINGS:
            raise ValueError(f"mixing: {self.mixing!r} is not one of {sorted(MIXINGS)}")
        if not 1 <= self.steps <= 32:
            raise ValueError(f"steps: {self.steps} is outside 1..32")


@dataclass
class Trace:
    """One batch followed through every layer."""

    names: list[str]              # "step 1 · ActNorm", ..., one per layer
    points: list[torch.Tensor]    # len(names) + 1 tensors [B, 2]: the input, then after each layer
    logdets: list[torch.Tensor]   # len(names) tensors [B]: each layer's log|det J| at its input

    @property
    def z(self) -> torch.Tensor:
        return self.points[-1]

    def log_prob(self) -> torch.Tensor:
        return standard_normal_log_prob(self.z) + sum(self.logdets)


@dataclass
class Encoded:
    z: torch.Tensor               # [B, 2] latent
    logdet: torch.Tensor          # [B] Σ over layers of log|det J|
    step_outputs: list[torch.Tensor]  # K tensors [B, 2]: the points after each whole step


def standard_normal_log_prob(z: torch.Tensor) -> torch.Tensor:
    """log N(z; 0, I) for points [B, 2]: [B] nats."""
    return -0.5 * (z ** 2).sum(1) - math.log(2 * math.pi)


_MIXING_NAMES = {"swap": "swap", "rotation": "rotation", "lu": "LU matrix"}  # short, for layer names


def _mixing_layer(kind: str, generator: torch.Generator) -> nn.Module:
    if kind == "swap":
        return Swap()
    if kind == "rotation":
        return FixedRotation(generator)
    return PointwiseLayer(InvConv1x1LU(2, generator))


class Flow2D(nn.Module):
    """K steps of [ActNorm] -> mixing -> coupling on 2-D points, with a N(0, I) latent."""

    def __init__(self, config: Flow2DConfig = Flow2DConfig()):
        super().__init__()
        self.config = config
        generator = torch.Generator().manual_seed(config.seed)
        torch_state = torch.random.get_rng_state()
        torch.manual_seed(config.seed)  # nn.Linear draws its random start from the global RNG
        try:
            layers, names = [], []
            for k in range(1, config.steps + 1):
                if config.actnorm:
                    layers.append(PointwiseLayer(ActNorm(2)))
                    names.append(f"step {k} · ActNorm")
                layers.append(_mixing_layer(config.mixing, generator))
                names.append(f"step {k} · {_MIXING_NAMES[config.mixing]}")
                layers.append(Coupling2D(config.coupling, config.hidden, config.clamp, config.zero_init))
                names.append(f"step {k} · {config.coupling} coupling")
        finally:
            torch.random.set_rng_state(torch_state)
        self.layers = nn.ModuleList(layers)
        self.names = names

    @property
    def layers_per_step(self) -> int:
        return 3 if self.config.actnorm else 2

    def actnorms(self) -> list[ActNorm]:
        return [layer.image_layer for layer in self.layers
                if isinstance(layer, PointwiseLayer) and isinstance(layer.image_layer, ActNorm)]

    def is_initialized(self) -> bool:
        return all(bool(a.initialized) for a in self.actnorms())

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logdet = x.new_zeros(x.shape[0])
        for layer in self.layers:
            x, ld = layer(x)
            logdet = logdet + ld
        return x, logdet

    def inverse(self, z: torch.Tensor) -> torch.Tensor:
        for layer in reversed(self.layers):
            z = layer.inverse(z)
        return z

    def encode(self, x: torch.Tensor) -> Encoded:
        logdet, outputs = x.new_zeros(x.shape[0]), []
        for i, layer in enumerate(self.layers):
            x, ld = layer(x)
            logdet = logdet + ld
            if (i + 1) % self.layers_per_step == 0:
                outputs.append(x)
        return Encoded(x, logdet, outputs)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        z, logdet = self(x)
        return standard_normal_log_prob(z) + logdet

    def sample(self, n: int, generator: torch.Generator | None = None, temperature: float = 1.0) -> torch.Tensor:
        dtype = next(self.parameters()).dtype
        z = torch.randn(n, 2, generator=generator, dtype=dtype) * temperature
        return self.inverse(z)

    def trace(self, x: torch.Tensor) -> Trace:
        points, logdets = [x], []
        for layer in self.layers:
            x, ld = layer(x)
            points.append(x)
            logdets.append(ld)
        return Trace(list(self.names), points, logdets)

    def trace_inverse(self, z: torch.Tensor) -> list[torch.Tensor]:
        """Latent points walked back to data space: len(layers) + 1 tensors, ``out[i]`` is
        where they are between layer i-1 and layer i (``out[-1]`` = z, ``out[0]`` = data),
        indexed like :attr:`Trace.points` so the two directions share one slider."""
        out = [z]
        for layer in reversed(self.layers):
            z = layer.inverse(z)
            out.append(z)
        return out[::-1]

    def jacobian(self, x_point, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(J, u): the 2×2 Jacobian of layer ``layer`` at the place ``x_point`` (in data space)
        has reached when it enters that layer, and that place u. By autograd, float64."""
        x = torch.as_tensor(x_point, dtype=torch.float64).reshape(1, 2)
        model = self if next(self.parameters()).dtype == torch.float64 else self.double_copy()
        with torch.no_grad():
            u = model.trace(x).points[layer]
        jac = torch.autograd.functional.jacobian(lambda v: model.layers[layer](v.view(1, 2))[0].view(2), u.view(2))
        return jac, u.view(2)

    @torch.no_grad()
    def initialize(self, x: torch.Tensor) -> None:
        """Run one batch through, so every ActNorm takes its scale and shift from it."""
        self(x)

    def double_copy(self) -> Flow2D:
        """A float64 twin with the same weights, for numbers printed to many digits."""
        twin = Flow2D(self.config)
        twin.load_state_dict(self.state_dict())
        return twin.double()


# -- targets -----------------------------------------------------------------------------------
def sample_target(name: str, n: int, seed: int = 0) -> torch.Tensor:
    """``n`` points [n, 2] (float32) from one of :data:`TARGETS`, roughly within [-3, 3]²."""
    rng = np.random.default_rng(seed)
    if name == "two_moons":
        a = rng.uniform(0, math.pi, n)
        upper = rng.random(n) < 0.5
        x = np.where(upper, np.cos(a), 1 - np.cos(a))
        y = np.where(upper, np.sin(a), 0.5 - np.sin(a))
        pts = (np.stack([x, y], 1) - [0.5, 0.25]) * 1.6 + rng.normal(0, 0.08, (n, 2))
    elif name == "eight_gaussians":
        centres = 2.2 * np.stack([np.cos(np.arange(8) * math.pi / 4), np.sin(np.arange(8) * math.pi / 4)], 1)
        pts = centres[rng.integers(0, 8, n)] + rng.normal(0, 0.18, (n, 2))
    elif name == "checkerboard":
        # 4×4 squares of side 1 on [-2, 2]², every other one filled.
        x1 = rng.uniform(-2, 2, n)
        x2 = rng.uniform(0, 1, n) + rng.integers(0, 2, n) * 2 - 2 + (np.floor(x1) % 2)
        pts = np.stack([x1, x2], 1)
    elif name == "spiral":
        t = np.sqrt(rng.random(n)) * 3 * math.pi
        arm = rng.random(n) < 0.5
        sign = np.where(arm, 1.0, -1.0)
        pts = sign[:, None] * np.stack([t * np.cos(t), t * np.sin(t)], 1) / (3 * math.pi) * 2.6
        pts = pts + rng.normal(0, 0.1, (n, 2))
    elif name == "rings":
        radius = rng.choice([0.8, 1.8, 2.8], n)
        a = rng.uniform(0, 2 * math.pi, n)
        pts = radius[:, None] * np.stack([np.cos(a), np.sin(a)], 1) + rng.normal(0, 0.1, (n, 2))
    else:
        raise ValueError(f"unknown target {name!r}; expected one of {sorted(TARGETS)}")
    return torch.as_tensor(pts, dtype=torch.float32)


def points_dataset(points, n: int = 2000, spread: float = 0.15, seed: int = 0) -> torch.Tensor:
    """A data set from a few user-placed points: each copied with Gaussian noise of std
    ``spread``, so the flow learns a smooth density around them instead of spikes on them."""
    base = torch.as_tensor(np.asarray(points, dtype=np.float32)).reshape(-1, 2)
    if len(base) == 0:
        raise ValueError("points: place at least one point")
    gen = torch.Generator().manual_seed(seed)
    picks = torch.randint(0, len(base), (n,), generator=gen)
    return base[picks] + spread * torch.randn(n, 2, generator=gen)


def grid_points(lo: float, hi: float, n: int) -> torch.Tensor:
    """An n×n grid over [lo, hi]², row-major with y outer: reshape results to [n, n] for a heat map."""
    axis = torch.linspace(lo, hi, n)
    yy, xx = torch.meshgrid(axis, axis, indexing="ij")
    return torch.stack([xx.flatten(), yy.flatten()], 1)


# -- training ----------------------------------------------------------------------------------
def make_optimizer(model: Flow2D, lr: float = 5e-3) -> torch.optim.Optimizer:
    # fused: one kernel for all parameters instead of ~10 small ops per tensor; with a
    # model this small the optimizer's per-tensor overhead is a fifth of the step.
    return torch.optim.Adam(model.parameters(), lr=lr, fused=True)


WARMUP_STEPS = 30


def train_steps(model: Flow2D, opt: torch.optim.Optimizer, data: torch.Tensor, n_steps: int,
                batch_size: int = 512, generator: torch.Generator | None = None,
                time_budget_s: float | None = None, max_grad_norm: float = 10.0,
                start_step: int = 0, warmup_steps: int = WARMUP_STEPS) -> list[float]:
    """Up to ``n_steps`` Adam steps on minibatches of ``data``; returns each step's loss
    (mean −log p(x), nats per point). Stops early once ``time_budget_s`` has passed, so a page
    can train in short chunks and stay responsive. The first batch initialises ActNorm.

    Gradients are clipped to ``max_grad_norm``: a batch that lands where a young flow has
    squeezed space hard gives a huge loss, and an unclipped step from it undoes a hundred
    steps of training. The learning rate also rises linearly over the first ``warmup_steps``
    (``start_step``: steps already taken, when training comes in chunks): without it the page's
    default two-moons flow had one step at 31 nats (from 2.3) near step 30, 8 Gaussians one at 21;
    with 30 steps of warm-up the worst rise after step 10 was 0.6 and 9 nats, and the loss
    after 400 steps was as low or lower on four of the five targets."""
    if not model.is_initialized():
        model.initialize(data[:batch_size])
    losses, start = [], time.perf_counter()
    model.train()
    for group in opt.param_groups:
        group.setdefault("peak_lr", group["lr"])
    with one_thread():
        for i in range(n_steps):
            warm = min(1.0, (start_step + i + 1) / warmup_steps) if warmup_steps else 1.0
            for group in opt.param_groups:
                group["lr"] = group["peak_lr"] * warm
            idx = torch.randint(0, len(data), (min(batch_size, len(data)),), generator=generator)
            loss = -model.log_prob(data[idx]).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
            opt.step()
            losses.append(loss.item())
            if time_budget_s is not None and time.perf_counter() - start >= time_budget_s:
                break
    return losses


_THREADS_LOCK = threading.Lock()
_threads_users = 0
_threads_before = 1


@contextlib.contextmanager
def one_thread():
    """Run torch on one thread inside the block, then restore the previous count.

    A 2-D flow's tensors are tiny ([256, 64]), so a second OpenMP thread has nothing to
    share, and on a busy machine it is ruinous: measured here under load, one training step
    took 36 ms on one thread and 726 ms on two (the threads spin, waiting for each other),
    and the whole 2-D page rendered in 0.8 s instead of 6.2 s. The thread count is global to
    the process, and a Streamlit server runs many sessions at once, so the first block to
    enter saves the count and the last one to leave restores it.
    """
    global _threads_users, _threads_before
    with _THREADS_LOCK:
        if _threads_users == 0:
            _threads_before = torch.get_num_threads()
            torch.set_num_threads(1)
        _threads_users += 1
    try:
        yield
    finally:
        with _THREADS_LOCK:
            _threads_users -= 1
            if _threads_users == 0:
                torch.set_num_threads(_threads_before)
