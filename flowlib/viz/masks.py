"""Squeeze and mask tracing: which pixel goes where, and which values a coupling transforms.

The pictures are computed with the same functions the models use (``squeeze2d``,
``checkerboard_mask``, and each permutation's ``as_matrix()`` from the
:class:`~flowlib.core.layers.ChannelMixing` protocol), so what the app shows is what the model
does, not a drawing of it.

Conventions:

* ``x1`` = the values a coupling conditions on (passed through unchanged), ``x2`` = the
  values it transforms. Pictures colour x1 blue and x2 orange.
* Block positions inside a 2×2 squeeze block are numbered ``2·di + dj``: 0 top-left,
  1 top-right, 2 bottom-left, 3 bottom-right, each with its own hue (``BLOCK_COLOURS``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from flowlib.core.ops import checkerboard_mask, squeeze2d

from .images import as_numpy, hstack_images, image_grid, outline, tint, to_rgb, upscale

__all__ = [
    "BLOCK_COLOURS", "BLOCK_NAMES", "X1_COLOUR", "X2_COLOUR",
    "block_position_map", "squeeze_source", "squeeze_overlay", "squeezed_channel_tiles",
    "channel_tiles_image", "multiscale_stages", "squeeze_walk",
    "coupling_x1_mask", "channel_mixing", "MaskTrace", "trace_masks", "model_step_specs",
    "mask_tiles_image", "coverage_image", "mask_overlay",
]

# Four hues that stay distinct on a projector and for the common colour-blindnesses
# (Okabe-Ito palette): top-left, top-right, bottom-left, bottom-right of each 2×2 block.
BLOCK_COLOURS = np.array([[230, 159, 0], [86, 180, 233], [0, 158, 115], [204, 121, 167]],
                         dtype=np.uint8)
BLOCK_NAMES = ("top-left", "top-right", "bottom-left", "bottom-right")
X1_COLOUR = np.array([0, 114, 178], dtype=np.uint8)    # conditioned on (kept as is)
X2_COLOUR = np.array([230, 120, 0], dtype=np.uint8)    # transformed
COVERED_COLOUR = np.array([0, 158, 115], dtype=np.uint8)
UNCOVERED_COLOUR = np.array([200, 200, 200], dtype=np.uint8)


# ---------------------------------------------------------------------------- squeeze

def block_position_map(height: int, width: int) -> np.ndarray:
    """[H, W] int: the position ``2·di + dj`` of each pixel inside its 2×2 squeeze block."""
    i = np.arange(height)[:, None] % 2
    j = np.arange(width)[None, :] % 2
    return (2 * i + j).astype(np.int64)


def squeeze_source(k: int) -> tuple[int, int, int]:
    """Where squeezed channel k comes from: ``(c, di, dj)`` with ``k = 4c + 2di + dj``."""
    c, pos = divmod(int(k), 4)
    return c, pos // 2, pos % 2


def squeeze_overlay(image, scale: int = 10, grid: bool = True) -> np.ndarray:
    """An image [C, H, W] (first channel shown) with every pixel tinted by its block position.

    Thin lines mark the 2×2 blocks, so one sees which four pixels travel together.
    """
    img = as_numpy(image)
    gray = img[0] if img.ndim == 3 else img
    h, w = gray.shape
    pos = block_position_map(h, w)
    out = np.zeros((h, w, 3), np.uint8)
    for p in range(4):
        tinted = tint(gray, BLOCK_COLOURS[p], strength=0.6)
        out[pos == p] = tinted[pos == p]
    out = upscale(out, scale)
    if grid and scale >= 4:
        out[::2 * scale] = 40
        out[:, ::2 * scale] = 40
    return out


def squeezed_channel_tiles(image, scale: int = 10) -> list[tuple[str, np.ndarray]]:
    """The 4C channels of ``squeeze2d(image)``, each tinted by the hue of its block position.

    Returns ``[(label, RGB tile)]`` in channel order; channel ``k = 4c + 2di + dj`` holds pixel
    ``(c, 2i+di, 2j+dj)`` at ``(i, j)``, and its tile has the hue of position ``2di + dj``.
    """
    x = torch.as_tensor(as_numpy(image))
    if x.dim() == 2:
        x = x[None]
    sq = squeeze2d(x[None].float())[0].round().clamp(0, 255).to(torch.uint8).numpy()
    tiles = []
    for k in range(sq.shape[0]):
        c, di, dj = squeeze_source(k)
        tile = upscale(tint(sq[k], BLOCK_COLOURS[2 * di + dj], strength=0.6), scale)
        # Line breaks at the natural joints, so a narrow tile's caption wraps cleanly
        # (hstack_images wraps further only if a line is still wider than the tile).
        label = (f"ch {k} = pixel\n(2i+{di}, 2j+{dj})" + (f"\nof ch {c}" if x.shape[0] > 1 else "")
                 if scale * sq.shape[-1] < 200 else
                 f"ch {k} = pixel (2i+{di}, 2j+{dj})" + (f" of ch {c}" if x.shape[0] > 1 else ""))
        tiles.append((label, outline(tile)))
    return tiles


def channel_tiles_image(tiles: Sequence[np.ndarray], ncol: int, gap: int = 6) -> np.ndarray:
    """Lay RGB tiles (same size) out in a grid with white gaps."""
    arr = np.stack([to_rgb(t) for t in tiles]).transpose(0, 3, 1, 2)
    return image_grid(arr, ncol=ncol, pad=gap)


def multiscale_stages(image_shape: Sequence[int], levels: int) -> list[dict]:
    """The tensor shapes a multi-scale flow passes through, as rows for a table.

    Each row: ``{"stage", "shape" [C, H, W], "note"}``. Per level: squeeze (×4 channels, ½ side),
    K flow steps (shape unchanged), then (all levels but the last) a split where half the
    channels leave as that level's latent z.
    """
    c, h, w = (int(v) for v in image_shape)
    rows = [{"stage": "input image", "shape": [c, h, w], "note": "pixels"}]
    for lvl in range(levels):
        c, h, w = 4 * c, h // 2, w // 2
        rows.append({"stage": f"level {lvl + 1}: squeeze", "shape": [c, h, w],
                     "note": "each 2×2 block becomes 4 channels"})
        rows.append({"stage": f"level {lvl + 1}: K flow steps", "shape": [c, h, w],
                     "note": "ActNorm → permutation/1×1 conv → coupling, shape unchanged"})
        if lvl < levels - 1:
            keep = c // 2
            rows.append({"stage": f"level {lvl + 1}: split", "shape": [c - keep, h, w],
                         "note": f"z{lvl + 1} leaves (stored); [{keep}, {h}, {w}] goes on"})
            c = keep
        else:
            rows.append({"stage": f"level {lvl + 1}: top latent", "shape": [c, h, w],
                         "note": f"z{lvl + 1}: everything left"})
    return rows


def squeeze_walk(image, levels: int) -> list[dict]:
    """Squeeze a raw image level by level (no flow steps), keeping the first half at each split.

    Returns per level ``{"level", "shape", "tensor" uint8 [C, H, W], "kept", "left"}``:
    the squeezed tensor and which channels go on / leave. Without the flow steps this shows
    only the reshaping; in a model the channels are transformed before they are split.
    """
    x = torch.as_tensor(as_numpy(image)).float()
    if x.dim() == 2:
        x = x[None]
    out = []
    for lvl in range(levels):
        x = squeeze2d(x[None])[0]
        c = x.shape[0]
        last = lvl == levels - 1
        keep = c if last else c // 2
        out.append({"level": lvl + 1, "shape": list(x.shape),
                    "tensor": x.round().clamp(0, 255).to(torch.uint8).numpy(),
                    "kept": list(range(keep)), "left": list(range(keep, c))})
        x = x[:keep]
    return out


# ---------------------------------------------------------------------------- masks

def coupling_x1_mask(mask_type: str, channels: int, height: int, width: int, parity: int = 0) -> np.ndarray:
    """[C, H, W] bool: True where a coupling conditions on the value (x1), False where it transforms (x2).

    ``channel``: x1 = the first C//2 channels (as ``Coupling`` splits). ``checkerboard``:
    x1 = pixels with ``(i + j) % 2 == parity``, in every channel (``checkerboard_mask``).
    """
    if mask_type == "channel":
        m = np.zeros((channels, height, width), bool)
        m[: channels // 2] = True
        return m
    if mask_type == "checkerboard":
        cb = checkerboard_mask(height, width, parity)[0, 0].numpy().astype(bool)
        return np.broadcast_to(cb, (channels, height, width)).copy()
    raise ValueError(f"unknown mask type {mask_type!r}; expected 'channel' or 'checkerboard'")


@dataclass
class MaskTrace:
    """One flow step as seen by the masks (see :func:`trace_masks`)."""
    step: int                   # 1-based
    mixing: str                 # "none" | "permutation" | "conv"
    x1: np.ndarray              # [C, H, W] bool, current positions: True = conditioned on
    origin: np.ndarray | None   # [C] for permutations: original channel now at each position
    influence: np.ndarray       # [C, C] bool: position p's value depends on original channel o
    covered: np.ndarray         # [C, H, W] bool over ORIGINAL dims: transformed at least once so far
    mask_type: str
    parity: int

    @property
    def covered_count(self) -> int:
        return int(self.covered.sum())

    @property
    def covered_fraction(self) -> float:
        return float(self.covered.mean())


def trace_masks(shape: Sequence[int], specs: Sequence[dict], tol: float = 1e-6) -> list[MaskTrace]:
    """Follow where each original channel goes through K steps and what each coupling transforms.

    ``shape`` = [C, H, W] of the (squeezed) tensor entering the steps. Each spec is
    ``{"mix": None | order [C] | matrix [C, C], "mask": "channel"|"checkerboard", "parity": 0|1}``;
    ``mix`` is applied first (as in a flow step), then the coupling. An order means output
    channel i = input channel ``order[i]``; a matrix W means output = W @ input, so output i
    depends on every input j with ``|W[i, j]| > tol``.

    An original value counts as *transformed* once it feeds some x2 position of a coupling.
    With channel masks and no mixing the same half is transformed every time, so coverage
    stalls at 50 %; reversal or a shuffle moves the other half into x2; a 1×1 conv mixes
    every channel into every position.
    """
    c, h, w = (int(v) for v in shape)
    influence = np.eye(c, dtype=bool)
    origin: np.ndarray | None = np.arange(c)
    covered = np.zeros((c, h, w), bool)
    out = []
    for k, spec in enumerate(specs):
        mix = spec.get("mix")
        if mix is None:
            kind = "none"
        else:
            mix = as_numpy(mix)
            if mix.ndim == 1:
                kind = "permutation"
                order = mix.astype(np.int64)
                if sorted(order.tolist()) != list(range(c)):
                    raise ValueError(f"step {k + 1}: {order.tolist()} is not a permutation of {c} channels")
                influence = influence[order]
                origin = None if origin is None else origin[order]
            else:
                kind = "conv"
                if mix.shape != (c, c):
                    raise ValueError(f"step {k + 1}: mixing matrix must be {c}×{c}, got {mix.shape}")
                influence = (np.abs(mix) > tol).astype(np.int64) @ influence.astype(np.int64) > 0
                origin = None  # positions now hold mixtures, not single original channels
        x1 = coupling_x1_mask(spec["mask"], c, h, w, spec.get("parity", 0))
        # original channel o at pixel (i, j) is transformed if some x2 position at (i, j) depends on o
        hit = np.einsum("po,phw->ohw", influence.astype(np.int64), (~x1).astype(np.int64)) > 0
        covered = covered | hit
        out.append(MaskTrace(k + 1, kind, x1, None if origin is None else origin.copy(),
                             influence.copy(), covered.copy(), spec["mask"], int(spec.get("parity", 0))))
    return out


def channel_mixing(layer) -> np.ndarray:
    """A :class:`~flowlib.core.layers.ChannelMixing` layer as :func:`trace_masks` reads it.

    A fixed permutation becomes its channel order (output i = input ``order[i]``), so the
    trace can say which original channel sits where; a learned 1×1 convolution becomes its
    matrix W.
    """
    w = layer.as_matrix().detach().cpu()
    if layer.learned:
        return w.numpy()
    return w.argmax(dim=1).numpy()


def model_step_specs(model, level: int, stage: str = "post") -> tuple[list[int], list[dict]]:
    """The shape entering a model level's steps and one spec per step for :func:`trace_masks`."""
    lvl = model.levels[level]
    steps = lvl.pre_steps if stage == "pre" else lvl.steps
    if not len(steps):
        raise ValueError(f"level {level + 1} has no {stage}-squeeze steps")
    specs = []
    for step in steps:
        cp = step.coupling
        specs.append({"mix": channel_mixing(step.permutation), "mask": cp.mask_type,
                      "parity": cp.parity})
    c = steps[0].coupling.channels
    _, h, w = model.config.image_shape
    for _ in range(level + (0 if stage == "pre" else 1)):
        h, w = h // 2, w // 2
    return [int(c), int(h), int(w)], specs


def mask_tiles_image(x1: np.ndarray, values=None, scale: int = 12, gap: int = 6,
                     labels: Sequence[str] | None = None, font_size: int = 16) -> np.ndarray:
    """Per-channel tiles in one row: x1 values blue, x2 values orange (over ``values`` if given).

    ``values``: uint8 [C, H, W] shown through the colours (e.g. the squeezed image).
    """
    x1 = as_numpy(x1).astype(bool)
    c, h, w = x1.shape
    vals = np.full((c, h, w), 200, np.uint8) if values is None else as_numpy(values).astype(np.uint8)
    tiles = []
    for k in range(c):
        t = np.where(x1[k][..., None], tint(vals[k], X1_COLOUR, 0.75), tint(vals[k], X2_COLOUR, 0.75))
        tiles.append(outline(upscale(t, scale)))
    return hstack_images(tiles, gap=gap, captions=labels, font_size=font_size)


def coverage_image(covered: np.ndarray, scale: int = 12, gap: int = 6,
                   labels: Sequence[str] | None = None, font_size: int = 16) -> np.ndarray:
    """Per original channel: green where the value has been transformed at least once, grey where not."""
    covered = as_numpy(covered).astype(bool)
    tiles = [outline(upscale(np.where(covered[k][..., None], COVERED_COLOUR, UNCOVERED_COLOUR)
                              .astype(np.uint8), scale)) for k in range(covered.shape[0])]
    return hstack_images(tiles, gap=gap, captions=labels, font_size=font_size)


def mask_overlay(image, x1_plane: np.ndarray, scale: int = 10) -> np.ndarray:
    """An image [H, W] (or [C, H, W], first channel) with x1 pixels tinted blue and x2 orange."""
    img = as_numpy(image)
    gray = img[0] if img.ndim == 3 else img
    m = as_numpy(x1_plane).astype(bool)
    out = np.where(m[..., None], tint(gray, X1_COLOUR, 0.6), tint(gray, X2_COLOUR, 0.6))
    return upscale(out.astype(np.uint8), scale)
