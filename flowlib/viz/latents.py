"""Latents as pictures and paths: linear and spherical interpolation between latents (per level
or all levels joined), and an image's journey to noise and fresh noise's back, level by level
(``flow_journey``, drawn by ``journey_strip``), with states in standardised grey."""

from __future__ import annotations

from typing import Sequence

import torch

from flowlib.core.ops import fold_to_image

__all__ = ["lerp", "slerp", "interpolate_latents", "standardised_grey", "flow_journey", "journey_strip"]


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


# ---------------------------------------------------------------------------- image <-> noise

def standardised_grey(t: torch.Tensor) -> torch.Tensor:
    """A [C, H, W] state as uint8 grey: standardised (median 0, robust spread), ±3 -> 0..255."""
    v = t.detach().double().cpu()
    med = v.median()
    spread = (v - med).abs().median() * 1.4826
    if not torch.isfinite(spread) or spread < 1e-8:
        spread = v.std().clamp_min(1e-8)
    g = ((v - med) / spread).clamp(-3, 3)
    return ((g + 3) / 6 * 255).round().to(torch.uint8)


@torch.no_grad()
def flow_journey(model, pixels, eps: Sequence[torch.Tensor], temperature: float = 0.8) -> dict:
    """An image's way to noise through the flow, level by level, and fresh noise's way back.

    ``pixels`` uint8 [C, H, W]; ``eps`` one standard-normal tensor [1, *shape] per level.
    Returns ``{"forward": [uint8 [C, H, W]] (the image, then the state after each level,
    the last being its standardised latent ε), "backward": [...] (the noise T·ε, the state
    after undoing each level, coarsest first, the last being the new image),
    "round_trip": max |decode(encode(x)) − x| in model units}``. States are shown
    standardised (see ``standardised_grey``), so each picture's contrast is its own. The
    levels run through the model's own ``encode_levels`` and ``decode_levels``.
    """
    pixels = torch.as_tensor(pixels, dtype=torch.uint8)
    x = model.dequantize(pixels[None], noise=False)[0]
    outs = model.encode_levels(model.transform_input(x)[0])
    eps_in = [out.eps for out in outs]
    forward = [pixels] + [standardised_grey(fold_to_image(out.h_next, eps_in[:i + 1])[0])
                          for i, out in enumerate(outs)]
    round_trip = float((model.decode([out.z for out in outs]) - x).abs().max())
    scaled = [temperature * e for e in eps]
    states = model.decode_levels([None] * len(outs), temperature, eps)   # coarsest first
    backward = [standardised_grey(fold_to_image(None, scaled)[0])]
    backward += [standardised_grey(fold_to_image(h, scaled[:i])[0])
                 for i, h in zip(range(len(outs) - 1, 0, -1), states)]
    backward.append(model.to_uint8(model.transform_output(states[-1]))[0])
    return {"forward": forward, "backward": backward, "round_trip": round_trip}


def journey_strip(journey: dict, scale: int, font_size: int = 18):
    """The two rows of :func:`flow_journey` as one picture with a caption under each frame."""
    import numpy as np

    from .images import hstack_images, to_rgb, upscale

    fwd, bwd = journey["forward"], journey["backward"]
    n = len(fwd) - 1
    f_caps = ["a real image"] + [f"after level {k + 1}" for k in range(n - 1)] + ["its latent (noise)"]
    b_caps = ["fresh noise"] + [f"level {k + 1} undone" for k in range(n - 1, 0, -1)] + ["a new image"]
    tiles = lambda frames: [upscale(to_rgb(f.numpy()), scale) for f in frames]  # noqa: E731
    arrow = lambda h, right: _arrow(h, right)  # noqa: E731
    rows = []
    for frames, caps, right in ((fwd, f_caps, True), (bwd, b_caps, True)):
        pics, words = [], []
        for k, tile in enumerate(tiles(frames)):
            if k:
                pics.append(arrow(tile.shape[0], right))
                words.append("")
            pics.append(tile)
            words.append(caps[k])
        rows.append(hstack_images(pics, gap=6, captions=words, font_size=font_size))
    width = max(r.shape[1] for r in rows)
    rows = [np.pad(r, ((0, 14), (0, width - r.shape[1]), (0, 0)), constant_values=255) for r in rows]
    return np.concatenate(rows)


def _arrow(height: int, right: bool = True, width: int = 34):
    """A grey arrow → (or ←) as an RGB picture ``height`` tall."""
    import numpy as np

    out = np.full((height, width, 3), 255, np.uint8)
    mid = height // 2
    out[mid - 2:mid + 2, 4:width - 10] = 110
    for k in range(12):
        x = width - 4 - k if right else 4 + k
        out[max(0, mid - k):mid + k + 1, x] = 110
    return out
