"""One picture's bytes -> a small square uint8 array: decoding and mode normalisation.

The single picture decoder of the library lives here, below everything that reads pictures:
``decode_plain`` opens a picture with its safety checks (one pixel cap,
``MAX_IMAGE_PIXELS``, read from the header before anything is decoded; Pillow's
decompression-bomb warnings treated as refusals) and returns its first frame as 8-bit L or
RGB by the one rule ``to_plain_mode``, turned upright as its EXIF orientation says (a phone
photo stored sideways with orientation 6 comes out as the phone showed it). The dataset
sources use it through
``decode_picture`` (a small square thumbnail); ``flowlib.viz.uploads`` uses it for a
picture someone uploads. A refusal is a :class:`Skip` with a tally key and plain words.
"""

from __future__ import annotations

import math
import warnings
from pathlib import PurePosixPath
from typing import IO, Callable, NamedTuple

import numpy as np
from PIL import ExifTags, Image, ImageOps

IMAGE_SUFFIXES = frozenset(
    {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".pgm", ".ppm", ".pbm"}
)
MAX_IMAGE_PIXELS = 50_000_000  # refuse to decode anything bigger (header check first)
TRANSPARENT_MODES = ("RGBA", "LA", "PA", "La", "RGBa")


def is_picture_name(name: str) -> bool:
    return PurePosixPath(name).suffix.lower() in IMAGE_SUFFIXES


class Skip(Exception):
    """One file could not be used; ``reason`` is a short tally key of ``SKIP_REASONS``.

    ``words``: why, as the end of a sentence that starts with the file's name (e.g. "is not a
    picture Pillow can read ..."); set by :func:`decode_plain`, empty where only the tally counts.
    """

    def __init__(self, reason: str, words: str = ""):
        super().__init__(reason)
        self.reason = reason
        self.words = words


# ----------------------------------------------------------------------------- modes


def _sixteen_bit_to_l(img: Image.Image) -> Image.Image:
    # Scale the full 16-bit range onto 0..255 (65535 -> 255); clipping would turn it white.
    values = np.asarray(img, dtype=np.float64)
    values = np.clip(values, 0, 65535) * (255.0 / 65535.0)
    return Image.fromarray(np.rint(values).astype(np.uint8), mode="L")


def _float_to_l(img: Image.Image, top: float | None = None) -> Image.Image:
    # Float images are usually 0..1; if not, assume they are already 0..255. ``top``: the
    # largest value of the whole picture when ``img`` is one band of it.
    values = np.asarray(img, dtype=np.float64)
    if top is None:
        top = _float_top(img)
    if top <= 1.0:
        values = values * 255.0
    return Image.fromarray(np.rint(np.clip(np.nan_to_num(values), 0, 255)).astype(np.uint8), mode="L")


def _float_top(img: Image.Image) -> float:
    return float(np.nanmax(np.asarray(img, dtype=np.float32), initial=0.0))


def _on_white(img: Image.Image) -> Image.Image:
    # Transparent pixels become white rather than whatever colour hides under alpha 0.
    rgba = img.convert("RGBA")
    background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(background, rgba).convert("RGB")


# Pictures larger than this are converted one band of rows at a time: a 49-megapixel 16-bit
# PNG took 890 MB to convert at once (float64 copies of every pixel), 150 MB in bands.
BAND_PIXELS = 1 << 20


def to_plain_mode(img: Image.Image) -> Image.Image:
    """Any Pillow mode -> "L" or "RGB" with 8 bits per channel.

    16-bit and 32-bit integer pictures are scaled from the full 0..65535 range; float pictures
    from 0..1 (or taken as 0..255 when larger); transparency is composited on white. Every rule
    is per pixel (the float range is decided once for the whole picture), so a large picture
    is converted in bands of rows: what it costs beyond its own pixels is its 8-bit copy and
    one band, never several full-size copies.
    """
    if img.mode in ("L", "RGB"):
        return img
    width, height = img.size
    rows = max(1, BAND_PIXELS // max(width, 1))
    if rows >= height:
        return _plain(img, None)
    top = _band_top(img, rows) if img.mode == "F" else None
    out = None
    for y in range(0, height, rows):
        band = _plain(img.crop((0, y, width, min(y + rows, height))), top)
        if out is None:
            out = Image.new(band.mode, (width, height))
        out.paste(band, (0, y))
    return out


def _band_top(img: Image.Image, rows: int) -> float:
    width, height = img.size
    return max(_float_top(img.crop((0, y, width, min(y + rows, height)))) for y in range(0, height, rows))


def _plain(img: Image.Image, top: float | None) -> Image.Image:
    mode = img.mode
    if mode.startswith("I;16") or mode == "I":
        return _sixteen_bit_to_l(img)
    if mode == "F":
        return _float_to_l(img, top)
    if mode in ("L", "RGB"):
        return img
    if mode == "1":
        return img.convert("L")
    if mode == "P":
        return _on_white(img) if img.has_transparency_data else img.convert("RGB")
    if mode in TRANSPARENT_MODES:
        return _on_white(img)
    return img.convert("RGB")  # CMYK, YCbCr, LAB, HSV, ...


def plain_mode_note(img: Image.Image) -> str | None:
    """What :func:`to_plain_mode` does to ``img`` that a person would notice, in words; None
    for a plain conversion (already 8-bit, 1-bit, palette without transparency, CMYK...)."""
    mode = img.mode
    if mode.startswith("I;16") or mode == "I":
        return "scaled 16-bit depth to 8 bits"
    if mode == "F":
        return "scaled floating-point values to 8 bits"
    if mode in TRANSPARENT_MODES or (mode == "P" and img.has_transparency_data):
        return "composited transparency on white"
    return None


# ----------------------------------------------------------------------------- decoding


class Picture(NamedTuple):
    """A decoded picture (see :func:`decode_plain`)."""
    image: Image.Image          # its first frame, 8-bit "L" or "RGB", upright, loaded into memory
    header_width: int           # the upright width its header declares (a JPEG draft may decode fewer)
    animated: bool              # the file holds more frames (animated GIF/WebP/PNG, multi-page TIFF)
    note: str | None            # what the mode conversion did, in words (plain_mode_note)
    orientation: int = 1        # its EXIF orientation (1: stored upright; 6: turned 90° clockwise)


BOMB_WORDS = "declares an enormous size (a possible decompression bomb); it was refused."


def decode_plain(
    stream: IO[bytes],
    *,
    max_pixels: int = MAX_IMAGE_PIXELS,
    draft_side: tuple[int, int | None] | None = None,
    charge: Callable[[int], None] = lambda pixels: None,
) -> Picture:
    """A picture file's first frame as 8-bit L or RGB (:class:`Picture`), or raise :class:`Skip`.

    Refused, before anything is decoded where the header allows: more than ``max_pixels``
    pixels by its header (``too_large``), a size Pillow calls a decompression bomb
    (``too_large``), not a picture or a damaged one (``corrupt``); each :class:`Skip` carries
    its reason in words. ``draft_side``: ``(size, crop)`` of a caller that will cut a centre
    square (side ``crop``, or the largest when None) and shrink it to ``size``: a JPEG is then
    decoded at a reduced scale whose square is still at least twice ``size`` (quality
    unaffected); None decodes at full scale. An EXIF orientation other than 1 is applied
    (``ImageOps.exif_transpose``), so every reader of pictures sees them upright. ``charge(pixels)`` is told how many pixels are
    about to be decoded, after the header was read and before any decoding, so a caller's
    budget can stop a folder before it costs anything; whatever it raises propagates.
    """
    raw = _decode(stream, max_pixels, draft_side, charge)
    try:
        plain = to_plain_mode(raw.image)
    except Exception as exc:  # noqa: BLE001
        raise Skip("corrupt", _damaged(exc)) from None
    return raw._replace(image=plain)


def _decode(stream: IO[bytes], max_pixels: int, draft_side: tuple[int, int | None] | None,
            charge: Callable[[int], None]) -> Picture:
    """:func:`decode_plain` up to the mode conversion: the first frame loaded and upright, in
    the mode the file stores (``note`` says what :func:`to_plain_mode` would do to it)."""
    with warnings.catch_warnings():
        # Pillow only *warns* between its own limit and twice that; we treat it as refusal.
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            img = Image.open(stream)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise Skip("too_large", BOMB_WORDS) from None
        except Image.UnidentifiedImageError:
            raise Skip("corrupt", "is not a picture Pillow can read (PNG, JPEG, BMP, GIF, TIFF, "
                                  "WebP are fine).") from None
        except Exception as exc:  # noqa: BLE001 - decoders raise many types on hostile files; count it
            raise Skip("corrupt", _damaged(exc)) from None
        # Leaving ``with`` closes only the file: the loaded pixels stay usable.
        with img:
            width, height = img.size  # from the header, nothing decoded yet
            if width * height > max_pixels:
                raise Skip("too_large", f"is {width}×{height} pixels; pictures up to "
                                        f"{max_pixels / 1e6:g} megapixels are accepted.")
            if width < 1 or height < 1:
                raise Skip("corrupt", f"declares {width}×{height} pixels; it may be damaged.")
            if draft_side is not None:
                _draft(img, *draft_side)
            decoded_width, decoded_height = img.size  # smaller than the header's after a draft
            charge(decoded_width * decoded_height)
            try:
                animated = bool(getattr(img, "is_animated", False))
                img.seek(0)  # animated GIF/WebP/TIFF: the first frame
                img.load()
                orientation = _orientation(img)
                if orientation in SIDEWAYS:
                    width, height = height, width
                ImageOps.exif_transpose(img, in_place=True)
                note = plain_mode_note(img)
            except (Image.DecompressionBombError, Image.DecompressionBombWarning):
                raise Skip("too_large", BOMB_WORDS) from None
            except Exception as exc:  # noqa: BLE001
                raise Skip("corrupt", _damaged(exc)) from None
    return Picture(img, width, animated, note, orientation)


SIDEWAYS = (5, 6, 7, 8)  # EXIF orientations that swap width and height


def _orientation(img: Image.Image) -> int:
    value = img.getexif().get(ExifTags.Base.Orientation, 1)
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def _damaged(exc: Exception) -> str:
    return f"could not be decoded ({type(exc).__name__}); it may be damaged."


def _draft(img: Image.Image, size: int, crop: int | None) -> None:
    """Ask a JPEG for a reduced-scale decode whose crop is still at least twice ``size``."""
    width, height = img.size
    side = min(width, height) if crop is None else min(crop, width, height)
    try:
        factor = 2 * size / side
        if factor < 1:
            img.draft(None, (math.ceil(width * factor), math.ceil(height * factor)))
    except Exception as exc:  # noqa: BLE001
        raise Skip("corrupt", _damaged(exc)) from None


def decode_picture(
    stream: IO[bytes],
    size: int,
    channels: int,
    crop: int | None,
    charge: Callable[[int], None] = lambda pixels: None,
) -> np.ndarray:
    """One picture file -> uint8 [channels, size, size], or raise ``Skip``.

    ``crop``: side of the centre square to cut first (CelebA's 148); None = largest square.
    ``charge``: as for :func:`decode_plain`, which decodes the file (a JPEG at a reduced scale
    when the square allows).
    """
    raw = _decode(stream, MAX_IMAGE_PIXELS, (size, crop), charge)
    try:
        if raw.image.mode not in ("L", "RGB") and raw.image.width * raw.image.height > BAND_PIXELS:
            # A large picture in another mode (RGBA, 16-bit, ...): each band of the square is
            # converted and box-reduced at once, so no full-size converted copy is ever made.
            return _banded_thumbnail(raw.image, raw.header_width, size, channels, crop)
        plain, header_width = to_plain_mode(raw.image), raw.header_width
    except Exception as exc:  # noqa: BLE001
        raise Skip("corrupt", _damaged(exc)) from None
    del raw   # a converted copy was made: the picture as stored can go before the thumbnail
    return _square_thumbnail(plain, header_width, size, channels, crop)


def _square_box(width: int, height: int, header_width: int, crop: int | None) -> tuple[int, int, int]:
    """(left, top, side) of the centre square; a JPEG draft may have shrunk the picture, so
    the crop side is scaled with it."""
    shrink = width / header_width
    side = min(width, height) if crop is None else min(round(crop * shrink), width, height)
    return (width - side) // 2, (height - side) // 2, side


def _banded_thumbnail(img: Image.Image, header_width: int, size: int, channels: int,
                      crop: int | None) -> np.ndarray:
    """What ``_square_thumbnail(to_plain_mode(img), ...)`` returns, pixel for pixel, without a
    full-size converted copy: the square is cut, converted (:func:`_plain`, then to L or RGB)
    and box-reduced band by band of rows, by the whole factor :func:`_resize` reduces by
    first; only the reduced square meets Lanczos. Decoding a 7000×7000 RGBA PNG for a 32×32
    grey thumbnail now costs 207 MB above the process (its own 196 MB of pixels) instead of
    398 MB: the 147 MB RGB copy and the 49 MB grey one are never made."""
    left, top, side = _square_box(*img.size, header_width, crop)
    factor = _reduce_factor(side, size)
    if factor == 1:
        return _square_thumbnail(to_plain_mode(img), header_width, size, channels, crop)
    wanted = "L" if channels == 1 else "RGB"
    width, height = img.size
    # The float range is decided once for the whole picture, as to_plain_mode does.
    float_top = _band_top(img, max(1, BAND_PIXELS // width)) if img.mode == "F" else None
    rows = max(factor, BAND_PIXELS // side // factor * factor)   # whole blocks per band
    reduced = Image.new(wanted, (math.ceil(side / factor), math.ceil(side / factor)))
    for y in range(0, side, rows):
        band = _plain(img.crop((left, top + y, left + side, top + min(y + rows, side))), float_top)
        band = band if band.mode == wanted else band.convert(wanted)
        reduced.paste(band.reduce(factor), (0, y // factor))
        del band
    small = reduced.resize((size, size), Image.Resampling.LANCZOS, box=(0, 0, side / factor, side / factor))
    pixels = np.asarray(small, dtype=np.uint8)
    return pixels[None] if channels == 1 else pixels.transpose(2, 0, 1)


def _reduce_factor(side: int, size: int) -> int:
    """The whole factor ``_resize`` box-reduces a ``side`` square by before Lanczos (Pillow's
    ``reducing_gap`` rule: the square must stay at least REDUCING_GAP times ``size``)."""
    return int(side / size / REDUCING_GAP) or 1


def _square_thumbnail(plain: Image.Image, header_width: int, size: int, channels: int,
                      crop: int | None) -> np.ndarray:
    left, top, side = _square_box(*plain.size, header_width, crop)
    # No copy of a picture that is already the square, or already in the wanted mode: each
    # would be another full-size copy (147 MB for a 7000×7000 RGB picture).
    square = plain if (side, side) == plain.size else plain.crop((left, top, left + side, top + side))
    wanted = "L" if channels == 1 else "RGB"
    if channels == 3 and square.mode == "L":
        # Grey to RGB copies one channel three times, which commutes with resizing exactly:
        # resizing first costs a third, and 0.14 s less on a 7000-pixel square.
        small = _resize(square, size).convert("RGB")
    else:
        small = _resize(square if square.mode == wanted else square.convert(wanted), size)
    pixels = np.asarray(small, dtype=np.uint8)
    return pixels[None] if channels == 1 else pixels.transpose(2, 0, 1)


def _resize(square: Image.Image, size: int) -> Image.Image:
    # reducing_gap: a whole-factor box reduction first whenever the square is at least 6x the
    # size, leaving 3x for Lanczos; from a 7000-pixel square that is 0.03 s instead of 0.5 s,
    # and Pillow documents the result as indistinguishable from plain Lanczos in most cases
    # (measured on ORL at size 8: mean difference 0.5 grey levels, at most 8).
    # Smaller squares (ORL's 92 pixels at size 32) get plain Lanczos, exactly.
    return square.resize((size, size), Image.Resampling.LANCZOS, reducing_gap=REDUCING_GAP)


REDUCING_GAP = 3.0
