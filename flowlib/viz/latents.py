"""Paths between latents: linear and spherical interpolation, per level or all levels joined."""

from __future__ import annotations

from typing import Sequence

import torch

__all__ = ["lerp", "slerp", "interpolate_latents"]


def lerp(a: torch.Tensor, b: torch.Tensor, t: float) -> torch.Tensor:
    return (1 - t) * a + t * b


def slerp(a: torch.Tensor, b: torch.Tensor, t: float, eps: float = 1e-7) -> torch.Tensor:
    """Spherical interpolation of two tensors, treated as one flattened vector per batch row.

    Moves along the great circle between the directions of a and b while the norm changes
    linearly, so a path between two typical Gaussian latents stays at a typical radius instead
    of cutting through the low-norm middle. Endpoints are exact: t=0 -> a, t=1 -> b.
    """
    if t == 0:
        return a.clone()
    if t == 1:
        return b.clone()
    fa, fb = a.flatten(1), b.flatten(1)
    na, nb = fa.norm(dim=1, keepdim=True), fb.norm(dim=1, keepdim=True)
    ua, ub = fa / na.clamp_min(eps), fb / nb.clamp_min(eps)
    cos = (ua * ub).sum(1, keepdim=True).clamp(-1, 1)
    omega = torch.arccos(cos)
    so = torch.sin(omega)
    small = so.abs() < 1e-4
    wa = torch.where(small, 1 - t, torch.sin((1 - t) * omega) / so.where(~small, torch.ones_like(so)))
    wb = torch.where(small, torch.full_like(so, t), torch.sin(t * omega) / so.where(~small, torch.ones_like(so)))
    direction = wa * ua + wb * ub
    direction = direction / direction.norm(dim=1, keepdim=True).clamp_min(eps)
    out = direction * ((1 - t) * na + t * nb)
    return out.view_as(a)


def interpolate_latents(zs_a: Sequence[torch.Tensor], zs_b: Sequence[torch.Tensor],
                        ts: Sequence[float], mode: str = "linear") -> list[torch.Tensor]:
    """Per-level latents for each t (batch = len(ts)): linear per level, or slerp on all levels joined."""
    if mode not in ("linear", "spherical"):
        raise ValueError(f"mode must be 'linear' or 'spherical', got {mode!r}")
    sizes = [z[0].numel() for z in zs_a]
    fa = torch.cat([z.reshape(1, -1) for z in zs_a], 1)
    fb = torch.cat([z.reshape(1, -1) for z in zs_b], 1)
    f = lerp if mode == "linear" else slerp
    path = torch.cat([f(fa, fb, float(t)) for t in ts], 0)
    out, start = [], 0
    for z, n in zip(zs_a, sizes):
        out.append(path[:, start:start + n].reshape(len(ts), *z.shape[1:]))
        start += n
    return out
