"""Pictures as numpy arrays: grids, labels, PNG bytes, and latents in a diverging colour map.

The picture functions take numpy arrays or torch tensors and return a numpy ``uint8``
picture (``[H, W]`` grey or ``[H, W, 3]`` RGB; ``latent_grid`` also returns its colour
limit); small helpers around them size pictures (``fit_factor``), encode them
(``png_bytes``) and write numbers and words for them (``signed_number``, ``signed_factor``,
``wrap_text``). No plotly and no Streamlit here, so a process that only makes pictures can use it
without loading either.
"""

from __future__ import annotations

import io
import math
from typing import Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

__all__ = ["PAD_COLOUR", "as_numpy", "upscale", "fit_factor", "to_rgb", "image_grid",
           "labelled_grid", "hstack_images", "png_bytes", "diverging_rgb", "latent_grid",
           "signed_number", "signed_factor", "wrap_text", "tint", "outline"]

PAD_COLOUR = 255


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
                  text, fill=(20, 20, 20), font=font, align="right")
        y += r.shape[0]
    return np.asarray(out)


def hstack_images(images: Sequence[np.ndarray], gap: int = 8, captions: Sequence[str] | None = None,
                  font_size: int = 18) -> np.ndarray:
    """Place RGB pictures side by side (top-aligned) with optional captions under each."""
    images = [to_rgb(i) for i in images]
    font = _font(font_size)
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    # A caption wider than its picture wraps onto more lines instead of running into the
    # next caption (or off the right edge); the strip grows taller to hold the longest one.
    lines = [wrap_text(captions[k], images[k].shape[1], font, measure) for k in range(len(images))] \
        if captions else [[] for _ in images]
    line_h = font_size + 4
    cap_h = max(len(ls) for ls in lines) * line_h + 6 if captions else 0
    widths = []
    for img, ls in zip(images, lines):
        text_w = max((measure.textbbox((0, 0), t, font=font)[2] for t in ls), default=0)
        widths.append(max(img.shape[1], text_w))
    height = max(i.shape[0] for i in images) + cap_h
    width = sum(widths) + gap * (len(images) - 1)
    out = Image.new("RGB", (width, height), (PAD_COLOUR,) * 3)
    draw = ImageDraw.Draw(out)
    x = 0
    for img, ls, cell_w in zip(images, lines, widths):
        out.paste(Image.fromarray(img), (x + (cell_w - img.shape[1]) // 2, 0))
        for n, text in enumerate(ls):
            box = draw.textbbox((0, 0), text, font=font)
            draw.text((x + max(0, (cell_w - (box[2] - box[0])) // 2), img.shape[0] + 4 + n * line_h),
                      text, fill=(20, 20, 20), font=font)
        x += cell_w + gap
    return np.asarray(out)


def signed_number(value: float, digits: int = 3) -> str:
    """A number with a typographic sign: '+0.398', '−0.398' (U+2212, not a hyphen)."""
    text = f"{float(value):+.{digits}f}"
    return text.replace("-", "\u2212")


def signed_factor(value: float, digits: int = 3) -> str:
    """A number as a factor in a product: '0.398', or '(−0.398)' in parentheses when negative,
    so '14·14·(−0.398)' never reads as a subtraction."""
    text = f"{float(value):.{digits}f}"
    return f"(\u2212{text[1:]})" if text.startswith("-") else text


def wrap_text(text: str, width: int, font, draw) -> list[str]:
    """Split ``text`` into lines no wider than ``width`` pixels (a single long word stays whole).

    An explicit newline always starts a new line."""
    lines: list[str] = []
    for para in str(text).split("\n"):
        line = ""
        for word in para.split(" "):
            trial = f"{line} {word}" if line else word
            box = draw.textbbox((0, 0), trial, font=font)
            if line and box[2] - box[0] > width:
                lines.append(line)
                line = word
            else:
                line = trial
        lines.append(line)
    return lines


def png_bytes(img) -> bytes:
    """Encode a uint8 picture as PNG bytes (for download buttons)."""
    buf = io.BytesIO()
    Image.fromarray(to_rgb(img)).save(buf, format="PNG")
    return buf.getvalue()


def tint(gray: np.ndarray, colour: np.ndarray, strength: float = 0.55) -> np.ndarray:
    """Blend a grey picture [H, W] with a colour: dark stays dark-tinted, white becomes pale colour."""
    g = gray.astype(np.float32)[..., None]
    base = np.concatenate([g, g, g], axis=-1)
    mixed = base * (1 - strength) + colour.astype(np.float32)[None, None] * strength * (0.35 + 0.65 * g / 255)
    return np.clip(mixed, 0, 255).astype(np.uint8)


def outline(tile: np.ndarray, colour=(60, 60, 60), width: int = 1) -> np.ndarray:
    """A copy of an RGB tile [H, W, 3] with a ``width``-pixel frame of ``colour`` drawn inside its edge."""
    out = tile.copy()
    out[:width], out[-width:], out[:, :width], out[:, -width:] = colour, colour, colour, colour
    return out


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
