"""Pictures from people: an uploaded file made fit for a model, or a stroke drawn from sliders."""

from __future__ import annotations

import io
import math
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw

from flowlib.data.sources.images import MAX_IMAGE_PIXELS, Skip, decode_plain

__all__ = ["UploadError", "MAX_UPLOAD_BYTES", "prepare_upload", "synthetic_stroke"]


class UploadError(ValueError):
    """An uploaded file cannot be used; the message says why in plain words."""


MAX_UPLOAD_BYTES = 20 * 1024 ** 2


def prepare_upload(data: bytes, shape: Sequence[int], name: str = "the upload",
                   max_bytes: int = MAX_UPLOAD_BYTES, max_pixels: int = MAX_IMAGE_PIXELS
                   ) -> tuple[np.ndarray, list[str]]:
    """Bytes of a picture -> uint8 [C, H, W] for a model, plus notes on what was converted.

    Converted when sensible: turned upright by its EXIF orientation, colour -> grey (or grey
    -> colour), transparency composited on white, 16-bit and float depths scaled to 8 bits,
    first frame of an animation, centre square crop, resized to the model's side. Refused with :class:`UploadError`: not a picture,
    a damaged file, more than ``max_bytes`` or ``max_pixels`` (decompression bombs included).
    The decoding and its refusals are the data sources' own (``decode_plain``).
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
    try:
        picture = decode_plain(io.BytesIO(data), max_pixels=max_pixels)
    except Skip as refused:
        raise UploadError(f"{name} {refused.words}") from None
    notes: list[str] = []
    if picture.orientation != 1:
        notes.append(f"turned upright as its EXIF orientation ({picture.orientation}) says")
    if picture.animated:
        notes.append("used the first frame of an animation")
    if picture.note:
        notes.append(picture.note)
    plain = picture.image
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
