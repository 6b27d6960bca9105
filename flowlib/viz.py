"""Pictures of what a flow does: numpy / PIL / plotly builders the exploration pages share.

Every function here takes numpy arrays or torch tensors and returns either a numpy
``uint8`` image (``[H, W]`` grey or ``[H, W, 3]`` RGB) or a plotly figure. The pages only lay
them out. No Streamlit import here.

The pictures are computed with the same functions the models use (``squeeze2d``,
``checkerboard_mask``, the layers' own ``channel_order`` and ``weight_matrix``), so what the
app shows is what the model does, not a drawing of it.

Conventions:

* ``x1`` = the values a coupling conditions on (passed through unchanged), ``x2`` = the
  values it transforms. Pictures colour x1 blue and x2 orange.
* Block positions inside a 2×2 squeeze block are numbered ``2·di + dj``: 0 top-left,
  1 top-right, 2 bottom-left, 3 bottom-right, each with its own hue (``BLOCK_COLOURS``).
"""

from __future__ import annotations

import io
import math
import warnings
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import plotly.graph_objects as go
import torch
from PIL import Image, ImageDraw, ImageFont

from .ops import checkerboard_mask, squeeze2d

__all__ = [
    "BLOCK_COLOURS", "BLOCK_NAMES", "X1_COLOUR", "X2_COLOUR", "UploadError",
    "as_numpy", "upscale", "to_rgb", "image_grid", "labelled_grid", "hstack_images", "png_bytes",
    "block_position_map", "squeeze_source", "squeeze_overlay", "squeezed_channel_tiles",
    "channel_tiles_image", "multiscale_stages", "squeeze_walk",
    "coupling_x1_mask", "MaskTrace", "trace_masks", "model_step_specs", "mask_tiles_image",
    "coverage_image", "mask_overlay",
    "matrix_heatmap", "actnorm_scales", "actnorm_figure",
    "diverging_rgb", "latent_grid", "bpd_budget_figure",
    "lerp", "slerp", "interpolate_latents",
    "prepare_upload", "synthetic_stroke",
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
PAD_COLOUR = 255


# ---------------------------------------------------------------------------- basic images

def as_numpy(x) -> np.ndarray:
    """A torch tensor or array-like as a numpy array (detached, on the CPU)."""
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def upscale(img: np.ndarray, factor: int) -> np.ndarray:
    """Nearest-neighbour enlargement by an integer factor (each pixel becomes a factor² block)."""
    img = as_numpy(img)
    if factor < 1 or int(factor) != factor:
        raise ValueError(f"upscale factor must be a positive integer, got {factor!r}")
    factor = int(factor)
    return np.repeat(np.repeat(img, factor, axis=0), factor, axis=1)


def fit_factor(side: int, target: int = 240) -> int:
    """The integer enlargement that brings ``side`` pixels closest to ``target`` (at least 1)."""
    return max(1, round(target / max(side, 1)))


def to_rgb(img) -> np.ndarray:
    """[H, W], [1, H, W], [3, H, W] or [H, W, 3] uint8 -> [H, W, 3] uint8."""
    img = as_numpy(img)
    if img.ndim == 3 and img.shape[0] in (1, 3) and img.shape[-1] not in (1, 3):
        img = np.moveaxis(img, 0, -1)
    if img.ndim == 3 and img.shape[-1] == 1:
        img = img[..., 0]
    if img.ndim == 2:
        img = np.stack([img] * 3, axis=-1)
    if img.ndim != 3 or img.shape[-1] != 3:
        raise ValueError(f"cannot show an array of shape {img.shape} as an image")
    return img.astype(np.uint8, copy=False)


def image_grid(images, ncol: int, pad: int = 2, scale: int = 1, pad_value: int = PAD_COLOUR) -> np.ndarray:
    """uint8 images ``[N, C, H, W]`` (C = 1 or 3) -> one ``[rows·(H·s+pad)+pad, ...]`` RGB picture.

    Images fill the grid row by row; empty cells are padding. ``scale`` enlarges each image
    (nearest neighbour) before padding, so pixels stay crisp on a projector.
    """
    images = as_numpy(images)
    if images.ndim != 4:
        raise ValueError(f"image_grid expects [N, C, H, W], got shape {images.shape}")
    n, c, h, w = images.shape
    ncol = max(1, min(ncol, n)) if n else max(1, ncol)
    nrow = max(1, math.ceil(n / ncol))
    hs, ws = h * scale, w * scale
    out = np.full((nrow * (hs + pad) + pad, ncol * (ws + pad) + pad, 3), pad_value, np.uint8)
    for k in range(n):
        r, q = divmod(k, ncol)
        tile = to_rgb(images[k])
        if scale > 1:
            tile = upscale(tile, scale)
        y, x = pad + r * (hs + pad), pad + q * (ws + pad)
        out[y:y + hs, x:x + ws] = tile
    return out


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: a fixed bitmap font
        return ImageFont.load_default()


def labelled_grid(rows: Sequence[np.ndarray], labels: Sequence[str], label_width: int = 110,
                  font_size: int = 20, pad: int = 2) -> np.ndarray:
    """Stack RGB row pictures vertically with a text label to the left of each."""
    if len(rows) != len(labels):
        raise ValueError(f"{len(rows)} rows but {len(labels)} labels")
    rows = [to_rgb(r) for r in rows]
    width = max(r.shape[1] for r in rows) + label_width
    height = sum(r.shape[0] for r in rows)
    out = Image.new("RGB", (width, height), (PAD_COLOUR,) * 3)
    draw = ImageDraw.Draw(out)
    font = _font(font_size)
    y = 0
    for r, text in zip(rows, labels):
        out.paste(Image.fromarray(r), (label_width, y))
        box = draw.textbbox((0, 0), text, font=font)
        draw.text((max(2, label_width - (box[2] - box[0]) - 8), y + (r.shape[0] - (box[3] - box[1])) // 2 - box[1]),
                  text, fill=(20, 20, 20), font=font)
        y += r.shape[0]
    return np.asarray(out)


def hstack_images(images: Sequence[np.ndarray], gap: int = 8, captions: Sequence[str] | None = None,
                  font_size: int = 18) -> np.ndarray:
    """Place RGB pictures side by side (top-aligned) with optional captions under each."""
    images = [to_rgb(i) for i in images]
    cap_h = font_size + 10 if captions else 0
    height = max(i.shape[0] for i in images) + cap_h
    width = sum(i.shape[1] for i in images) + gap * (len(images) - 1)
    out = Image.new("RGB", (width, height), (PAD_COLOUR,) * 3)
    draw = ImageDraw.Draw(out)
    font = _font(font_size)
    x = 0
    for k, img in enumerate(images):
        out.paste(Image.fromarray(img), (x, 0))
        if captions:
            text = captions[k]
            box = draw.textbbox((0, 0), text, font=font)
            draw.text((x + max(0, (img.shape[1] - (box[2] - box[0])) // 2), img.shape[0] + 4),
                      text, fill=(20, 20, 20), font=font)
        x += img.shape[1] + gap
    return np.asarray(out)


def png_bytes(img) -> bytes:
    """Encode a uint8 picture as PNG bytes (for download buttons)."""
    buf = io.BytesIO()
    Image.fromarray(to_rgb(img)).save(buf, format="PNG")
    return buf.getvalue()


def _tint(gray: np.ndarray, colour: np.ndarray, strength: float = 0.55) -> np.ndarray:
    """Blend a grey picture [H, W] with a colour: dark stays dark-tinted, white becomes pale colour."""
    g = gray.astype(np.float32)[..., None]
    base = np.concatenate([g, g, g], axis=-1)
    mixed = base * (1 - strength) + colour.astype(np.float32)[None, None] * strength * (0.35 + 0.65 * g / 255)
    return np.clip(mixed, 0, 255).astype(np.uint8)


def _outline(tile: np.ndarray, colour=(60, 60, 60), width: int = 1) -> np.ndarray:
    out = tile.copy()
    out[:width], out[-width:], out[:, :width], out[:, -width:] = colour, colour, colour, colour
    return out


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
        tinted = _tint(gray, BLOCK_COLOURS[p], strength=0.6)
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
        tile = upscale(_tint(sq[k], BLOCK_COLOURS[2 * di + dj], strength=0.6), scale)
        label = f"ch {k} = pixel (2i+{di}, 2j+{dj})" + (f" of ch {c}" if x.shape[0] > 1 else "")
        tiles.append((label, _outline(tile)))
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


def model_step_specs(model, level: int, stage: str = "post") -> tuple[list[int], list[dict]]:
    """The shape entering a model level's steps and one spec per step for :func:`trace_masks`."""
    lvl = model.levels[level]
    steps = lvl.pre_steps if stage == "pre" else lvl.steps
    if not len(steps):
        raise ValueError(f"level {level + 1} has no {stage}-squeeze steps")
    specs = []
    for step in steps:
        perm = step.permutation
        if hasattr(perm, "channel_order"):
            mix = perm.channel_order().numpy()
        else:
            mix = perm.weight_matrix().detach().cpu().numpy()
        cp = step.coupling
        specs.append({"mix": mix, "mask": cp.mask_type, "parity": cp.parity})
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
        t = np.where(x1[k][..., None], _tint(vals[k], X1_COLOUR, 0.75), _tint(vals[k], X2_COLOUR, 0.75))
        tiles.append(_outline(upscale(t, scale)))
    return hstack_images(tiles, gap=gap, captions=labels, font_size=font_size)


def coverage_image(covered: np.ndarray, scale: int = 12, gap: int = 6,
                   labels: Sequence[str] | None = None, font_size: int = 16) -> np.ndarray:
    """Per original channel: green where the value has been transformed at least once, grey where not."""
    covered = as_numpy(covered).astype(bool)
    tiles = [_outline(upscale(np.where(covered[k][..., None], COVERED_COLOUR, UNCOVERED_COLOUR)
                              .astype(np.uint8), scale)) for k in range(covered.shape[0])]
    return hstack_images(tiles, gap=gap, captions=labels, font_size=font_size)


def mask_overlay(image, x1_plane: np.ndarray, scale: int = 10) -> np.ndarray:
    """An image [H, W] (or [C, H, W], first channel) with x1 pixels tinted blue and x2 orange."""
    img = as_numpy(image)
    gray = img[0] if img.ndim == 3 else img
    m = as_numpy(x1_plane).astype(bool)
    out = np.where(m[..., None], _tint(gray, X1_COLOUR, 0.6), _tint(gray, X2_COLOUR, 0.6))
    return upscale(out.astype(np.uint8), scale)


# ---------------------------------------------------------------------------- parameters

def matrix_heatmap(m, title: str, zmid: float | None = 0.0, colorscale: str = "RdBu_r",
                   height: int = 320) -> go.Figure:
    """A square matrix as a plotly heatmap (row 0 at the top), symmetric colours around ``zmid``."""
    m = as_numpy(m).astype(float)
    kw = {}
    if zmid is not None:
        lim = float(np.abs(m - zmid).max()) or 1.0
        kw = dict(zmin=zmid - lim, zmax=zmid + lim)
    fig = go.Figure(go.Heatmap(z=m, colorscale=colorscale, **kw,
                               hovertemplate="row %{y}, col %{x}: %{z:.3f}<extra></extra>"))
    fig.update_yaxes(autorange="reversed", scaleanchor="x", constrain="domain", title="output channel")
    fig.update_xaxes(title="input channel", constrain="domain")
    fig.update_layout(title=title, height=height, margin=dict(l=10, r=10, t=40, b=10), font=dict(size=14))
    return fig


def actnorm_scales(model) -> list[np.ndarray]:
    """Per level: [steps, channels] of ActNorm scales exp(log_scale) (post-squeeze steps)."""
    out = []
    for lvl in model.levels:
        rows = [torch.exp(s.actnorm.log_scale.detach()).flatten().cpu().numpy()
                for s in lvl.steps if s.actnorm is not None]
        out.append(np.stack(rows) if rows else np.zeros((0, 0)))
    return out


def actnorm_figure(scales: np.ndarray, level: int, height: int = 260) -> go.Figure:
    """Heatmap of one level's ActNorm scales, step × channel, on a log colour axis (1 = white)."""
    s = as_numpy(scales)
    logs = np.log10(np.clip(s, 1e-6, None))
    lim = float(np.abs(logs).max()) or 1.0
    fig = go.Figure(go.Heatmap(
        z=logs, customdata=s, colorscale="RdBu_r", zmin=-lim, zmax=lim,
        x=[str(c) for c in range(s.shape[1])], y=[f"step {k + 1}" for k in range(s.shape[0])],
        colorbar=dict(title="log10 scale"),
        hovertemplate="%{y}, channel %{x}: scale %{customdata:.3f}<extra></extra>"))
    fig.update_yaxes(autorange="reversed")
    fig.update_xaxes(title="channel", type="category")
    fig.update_layout(title=f"Level {level + 1}: ActNorm scale exp(log s) per channel",
                      height=height, margin=dict(l=10, r=10, t=40, b=10), font=dict(size=14))
    return fig


# ---------------------------------------------------------------------------- latents

def diverging_rgb(values, limit: float = 3.0) -> np.ndarray:
    """Map values to blue (−limit) — white (0) — red (+limit), clipped. Any shape -> shape + (3,)."""
    v = np.clip(as_numpy(values).astype(np.float32) / float(limit), -1, 1)[..., None]
    white = np.array([255, 255, 255], np.float32)
    red = np.array([178, 24, 43], np.float32)
    blue = np.array([33, 102, 172], np.float32)
    out = np.where(v >= 0, white + (red - white) * v, white + (blue - white) * (-v))
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def latent_grid(z, limit: float | None = 3.0, ncol: int | None = None, scale: int | None = None,
                target: int = 90, pad: int = 3) -> tuple[np.ndarray, float]:
    """One latent [c, h, w] as a grid of channel tiles in a diverging colour map.

    ``limit`` = value mapped to full colour (±); None = the latent's largest |value| (raw z).
    Returns the picture and the limit used (for a caption).
    """
    z = as_numpy(z).astype(np.float32)
    if z.ndim != 3:
        raise ValueError(f"latent_grid expects one latent [c, h, w], got shape {z.shape}")
    c, h, w = z.shape
    if limit is None:
        limit = float(np.abs(z).max()) or 1.0
    ncol = ncol or min(c, 8 if c > 8 else c)
    scale = scale or fit_factor(h, target)
    tiles = diverging_rgb(z, limit).transpose(0, 3, 1, 2)
    return image_grid(tiles, ncol=ncol, pad=pad, scale=scale, pad_value=90), float(limit)


def bpd_budget_figure(prior_levels: Sequence[float], logdet: float, quantisation: float,
                      total: float, height: int = 380, dequant: float | None = None) -> go.Figure:
    """Bar chart of one image's bits/dim: each level's prior term, the log-det term,
    [the learned dequantisation term,] n_bits, total."""
    names = [f"prior z{k + 1}" for k in range(len(prior_levels))] + ["log-det"]
    vals = [float(v) for v in prior_levels] + [float(logdet)]
    colours = ["#0072B2"] * len(prior_levels) + ["#E69F00"]
    hover = ([f"-log p(z{k + 1} | coarser) / (D ln 2)" for k in range(len(prior_levels))]
             + ["-Σ log|det J| / (D ln 2): negative when the flow spreads the data out"])
    if dequant is not None:
        names.append("dequantisation")
        vals.append(float(dequant))
        colours.append("#009E73")
        hover.append("log q(u | x) / (D ln 2): the learned noise's own density")
    names += ["quantisation", "total"]
    vals += [float(quantisation), float(total)]
    colours += ["#999999", "#333333"]
    hover += ["log2(n_bins): turns a density into a probability of a pixel bin",
              "sum of the bars to the left"]
    fig = go.Figure(go.Bar(x=names, y=vals, marker_color=colours, text=[f"{v:+.2f}" for v in vals],
                           textposition="outside", customdata=hover,
                           hovertemplate="%{x}: %{y:.3f} bits/dim<br>%{customdata}<extra></extra>"))
    lo, hi = min(0.0, min(vals)), max(0.0, max(vals))
    span = hi - lo or 1.0
    fig.update_yaxes(title="bits per dimension", range=[lo - 0.15 * span, hi + 0.15 * span],
                     zeroline=True, zerolinecolor="#444")
    fig.update_layout(height=height, margin=dict(l=10, r=10, t=30, b=10), font=dict(size=15),
                      showlegend=False)
    return fig


# ---------------------------------------------------------------------------- interpolation

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


# ---------------------------------------------------------------------------- user images

class UploadError(ValueError):
    """An uploaded file cannot be used; the message says why in plain words."""


MAX_UPLOAD_BYTES = 20 * 1024 ** 2
MAX_UPLOAD_PIXELS = 40_000_000


def prepare_upload(data: bytes, shape: Sequence[int], name: str = "the upload",
                   max_bytes: int = MAX_UPLOAD_BYTES, max_pixels: int = MAX_UPLOAD_PIXELS
                   ) -> tuple[np.ndarray, list[str]]:
    """Bytes of a picture -> uint8 [C, H, W] for a model, plus notes on what was converted.

    Converted when sensible: colour -> grey (or grey -> colour), transparency composited on
    white, 16-bit and float depths scaled to 8 bits, first frame of an animation, centre
    square crop, resized to the model's side. Refused with :class:`UploadError`: not a picture,
    a damaged file, more than ``max_bytes`` or ``max_pixels`` (decompression bombs included).
    """
    c, h, w = (int(v) for v in shape)
    if c not in (1, 3):
        raise UploadError(f"the model expects {c} channels; only grey (1) or colour (3) pictures "
                          "can be converted.")
    if not data:
        raise UploadError(f"{name} is empty.")
    if len(data) > max_bytes:
        raise UploadError(f"{name} is {len(data) / 1024 ** 2:.1f} MB; pictures up to "
                          f"{max_bytes // 1024 ** 2} MB are accepted.")
    notes: list[str] = []
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            with Image.open(io.BytesIO(data)) as img:
                width, height = img.size
                if width * height > max_pixels:
                    raise UploadError(f"{name} is {width}×{height} pixels; pictures up to "
                                      f"{max_pixels / 1e6:.0f} megapixels are accepted.")
                if getattr(img, "n_frames", 1) > 1:
                    notes.append("used the first frame of an animation")
                img.seek(0)
                img.load()
                plain = _plain(img, notes)
        except UploadError:
            raise
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise UploadError(f"{name} declares an enormous size (a possible decompression bomb); "
                              "it was refused.") from None
        except Image.UnidentifiedImageError:
            raise UploadError(f"{name} is not a picture Pillow can read (PNG, JPEG, BMP, GIF, "
                              "TIFF, WebP are fine).") from None
        except Exception as exc:  # noqa: BLE001 - hostile or damaged files raise many types
            raise UploadError(f"{name} could not be decoded ({type(exc).__name__}); it may be "
                              "damaged.") from None
    width, height = plain.size
    side = min(width, height)
    if width != height:
        notes.append(f"cropped the centre {side}×{side} square of {width}×{height}")
    left, top = (width - side) // 2, (height - side) // 2
    square = plain.crop((left, top, left + side, top + side))
    target_mode = "L" if c == 1 else "RGB"
    if square.mode != target_mode:
        notes.append("converted colour to grey" if c == 1 else "converted grey to colour")
        square = square.convert(target_mode)
    if (side, side) != (w, h):
        notes.append(f"resized to {w}×{h}")
        square = square.resize((w, h), Image.Resampling.LANCZOS)
    pixels = np.asarray(square, dtype=np.uint8)
    if c == 1:
        pixels = pixels[None]
    else:
        pixels = pixels.transpose(2, 0, 1)
    return np.ascontiguousarray(pixels), notes


def _plain(img: Image.Image, notes: list[str]) -> Image.Image:
    mode = img.mode
    if mode.startswith("I;16") or mode == "I":
        notes.append("scaled 16-bit depth to 8 bits")
        values = np.asarray(img, dtype=np.float64)
        top = 65535.0 if values.max(initial=0) > 255 or mode.startswith("I;16") else 255.0
        return Image.fromarray(np.rint(np.clip(values, 0, top) * (255.0 / top)).astype(np.uint8), "L")
    if mode == "F":
        notes.append("scaled floating-point values to 8 bits")
        values = np.nan_to_num(np.asarray(img, dtype=np.float64))
        if values.max(initial=0) <= 1.0:
            values = values * 255
        return Image.fromarray(np.rint(np.clip(values, 0, 255)).astype(np.uint8), "L")
    if mode in ("RGBA", "LA", "PA", "La", "RGBa") or (mode == "P" and img.has_transparency_data):
        notes.append("composited transparency on white")
        rgba = img.convert("RGBA")
        bg = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(bg, rgba).convert("RGB")
    if mode in ("L", "RGB"):
        return img.copy()
    return img.convert("RGB")


def synthetic_stroke(shape: Sequence[int], kind: str = "seven", thickness: float = 0.12,
                     angle: float = 0.0, size: float = 0.7, invert: bool = False) -> np.ndarray:
    """A pen-like shape drawn from a few sliders, uint8 [C, H, W] (a stand-in for drawing).

    ``kind``: "seven", "one", "zero", "four", "cross", "bar". Drawn 8× larger with round
    joints and reduced with a box filter, so edges are soft like scanned digits. White on
    black like MNIST unless ``invert``.
    """
    c, h, w = (int(v) for v in shape)
    big = 8
    H, W = h * big, w * big
    canvas = Image.new("L", (W, H), 0)
    draw = ImageDraw.Draw(canvas)
    s = size
    paths = {
        "seven": [[(-0.5, -0.8), (0.5, -0.8), (-0.1, 0.8)]],
        "one": [[(-0.25, -0.55), (0.05, -0.8), (0.05, 0.8)]],
        "zero": [[(0.5 * math.cos(a), 0.8 * math.sin(a)) for a in np.linspace(0, 2 * math.pi, 40)]],
        "four": [[(0.25, 0.8), (0.25, -0.8), (-0.55, 0.3), (0.55, 0.3)]],
        "cross": [[(-0.7, -0.7), (0.7, 0.7)], [(-0.7, 0.7), (0.7, -0.7)]],
        "bar": [[(-0.8, 0.0), (0.8, 0.0)]],
    }
    if kind not in paths:
        raise ValueError(f"unknown shape {kind!r}; choose one of {', '.join(paths)}")
    ca, sa = math.cos(math.radians(angle)), math.sin(math.radians(angle))
    width = max(1, int(round(thickness * min(H, W))))
    for path in paths[kind]:
        pts = [(W / 2 + (x * ca - y * sa) * s * W / 2, H / 2 + (x * sa + y * ca) * s * H / 2) for x, y in path]
        draw.line(pts, fill=255, width=width, joint="curve")
        r = width / 2
        for x, y in (pts[0], pts[-1]):
            draw.ellipse((x - r, y - r, x + r, y + r), fill=255)
    small = np.asarray(canvas.resize((w, h), Image.Resampling.BOX), dtype=np.uint8)
    if invert:
        small = 255 - small
    return np.repeat(small[None], c, axis=0)
