"""Pure tensor operations behind the flows: squeeze / unsqueeze and the coupling masks.

Nothing here has parameters. Each function is exact and cheap, and the visualisation pages
call the very same functions the models use, so what the app shows is what the model does.

Shapes follow PyTorch: images are ``[B, C, H, W]``.
"""

from __future__ import annotations

from typing import Sequence

import torch

__all__ = ["squeeze2d", "unsqueeze2d", "checkerboard_mask", "channel_split_sizes", "fold_to_image"]


def _check_4d(x: torch.Tensor, what: str) -> None:
    if x.dim() != 4:
        raise ValueError(f"{what} expects a 4-d tensor [B, C, H, W], got shape {tuple(x.shape)}")


def squeeze2d(x: torch.Tensor) -> torch.Tensor:
    """Fold every 2×2 spatial block into the channel axis: ``[B, C, H, W] -> [B, 4C, H/2, W/2]``.

    Output channel ``4*c + 2*di + dj`` at ``(i, j)`` holds input pixel ``(c, 2i+di, 2j+dj)``:
    the four pixels of one block sit next to each other, grouped by their source channel.
    After a squeeze a 1×1 convolution or a channel split mixes pixels that were spatial
    neighbours, which is how the flow keeps locality while acting only on channels.
    """
    _check_4d(x, "squeeze2d")
    b, c, h, w = x.shape
    if h % 2 or w % 2:
        raise ValueError(f"squeeze2d needs even height and width, got H={h}, W={w}")
    x = x.reshape(b, c, h // 2, 2, w // 2, 2)
    x = x.permute(0, 1, 3, 5, 2, 4)  # b, c, di, dj, i, j
    return x.reshape(b, c * 4, h // 2, w // 2)


def unsqueeze2d(x: torch.Tensor) -> torch.Tensor:
    """Exact inverse of :func:`squeeze2d`: ``[B, 4C, H, W] -> [B, C, 2H, 2W]``."""
    _check_4d(x, "unsqueeze2d")
    b, c4, h, w = x.shape
    if c4 % 4:
        raise ValueError(f"unsqueeze2d needs a channel count divisible by 4, got C={c4}")
    c = c4 // 4
    x = x.reshape(b, c, 2, 2, h, w)
    x = x.permute(0, 1, 4, 2, 5, 3)  # b, c, i, di, j, dj
    return x.reshape(b, c, h * 2, w * 2)


def checkerboard_mask(height: int, width: int, parity: int = 0,
                      device=None, dtype=torch.float32) -> torch.Tensor:
    """RealNVP's spatial mask, shape ``[1, 1, H, W]``.

    Value 1 marks the pixels the coupling *conditions on* (x1, passed through unchanged);
    0 marks the pixels it *transforms* (x2). Pixel ``(i, j)`` is 1 when ``(i + j) % 2 == parity``,
    so parity 0 puts a 1 in the top-left corner and parity 1 is its complement.
    """
    if parity not in (0, 1):
        raise ValueError(f"parity must be 0 or 1, got {parity!r}")
    i = torch.arange(height, device=device).view(-1, 1)
    j = torch.arange(width, device=device).view(1, -1)
    mask = ((i + j) % 2 == parity).to(dtype)
    return mask.view(1, 1, height, width)


def channel_split_sizes(channels: int) -> tuple[int, int]:
    """Sizes of (x1, x2) when a coupling splits ``channels`` along the channel axis.

    x1 (the conditioning half) gets the first ``C // 2`` channels and x2 the rest, so an
    odd channel count transforms one channel more than it conditions on.
    """
    if channels < 2:
        raise ValueError(f"a channel split needs at least 2 channels, got {channels}")
    return channels // 2, channels - channels // 2


def fold_to_image(h: torch.Tensor | None, zs: Sequence[torch.Tensor]) -> torch.Tensor:
    """Lay a flow's state out in the image's shape, for a picture.

    The state between levels is the tensor ``h`` going on (None past the top level) and the
    latents ``zs`` already split off (finest first). Each level split ``cat([h_next, z])``
    after a squeeze, so concatenating and unsqueezing level by level (coarsest first) gives
    back a [B, C, H, W] tensor: a display fold only, nothing is inverted.
    """
    t = h
    for z in reversed(list(zs)):
        t = z if t is None else torch.cat([t, z], dim=1)
        t = unsqueeze2d(t)
    if t is None:
        raise ValueError("fold_to_image needs a tensor or at least one latent")
    return t
