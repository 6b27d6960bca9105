"""Decode every picture of a folder or zip once, within a budget, and keep the pixels.

The decoded uint8 array is cached, keyed by what the pictures are: every file's size, mtime,
ctime and inode, and every zip member's CRC.  A file replaced by another of the same size
with an older mtime still gets a new key (its ctime changed).  A folder's pixels are kept in
the cache folder; an upload's beside the upload, inside the upload quota, and removed with it
(``uploads``).

Decoding has a budget per folder, so a small input cannot cost minutes or gigabytes: pixels
(a floor plus an allowance per byte of picture files: a 1.9 MB zip of forty black 7000x7000
PNGs claims 2 gigapixels) and wall-clock seconds.  Every picture costs at least the square it
becomes, so the listing alone says whether the result can fit: a 17 MB zip of 110,000 1x1
PNGs read at 64x64 RGB would make 1.3 GB of pixels, and is refused before anything is
decoded; an upload's pixels must also fit in the upload quota beside it.  Otherwise each
header is checked before its picture is decoded, and each picture goes straight into its row
of the result (no list of pictures, no second copy).
"""

from __future__ import annotations

import json
import time
import warnings
import zipfile
from pathlib import Path

import numpy as np

from flowlib import env
from flowlib.fileio import atomic_write

from .common import PROGRESS_EVERY, DatasetError, Progress, ensure_cache_dir, shown_path
from .images import Skip, decode_picture
from .listing import Listing, list_pictures
from .uploads import check_decoded_room, decoded_path, keep_decoded, touch, upload_of

# Bump when folder preprocessing changes, so stale caches are not reused.
# 2: squares 6x the size or more get a box reduction before Lanczos (reducing_gap=3).
# 3: pictures are turned upright by their EXIF orientation.
# 4: names kept in the metadata (a fixed-width array made every row as wide as the longest).
PREPROCESS_VERSION = 4
CACHE_OVERHEAD = 64 * 1024  # bytes of a cache file beyond its pixels and metadata

MIN_DECODE_PIXELS = 64_000_000  # every folder may decode this much, however small its files
DECODE_PIXELS_PER_BYTE = 10  # real photos decode to 0.05..3 pixels per stored byte
MIN_DECODE_SECONDS = 60.0
DECODE_SECONDS_PER_MB = 1.0  # CelebA's 1.4 GB zip decodes in about 5 minutes on 2 cores
BUDGET_PIXELS_ENV = "FLOWLAB_DECODE_BUDGET_MPX"
BUDGET_SECONDS_ENV = "FLOWLAB_DECODE_BUDGET_SECONDS"


def _env_number(name: str) -> float | None:
    """A positive number from the environment, None when unset; a bad value is a DatasetError."""
    try:
        return env.read(name)
    except ValueError as exc:
        raise DatasetError(str(exc)) from None


class DecodeBudget:
    """How many pixels and seconds one folder or zip may spend being decoded."""

    def __init__(self, root: Path, stored_bytes: int):
        self.root, self.stored_bytes = root, stored_bytes
        megapixels = _env_number(BUDGET_PIXELS_ENV)
        self.pixels = (int(megapixels * 1_000_000) if megapixels is not None
                       else max(MIN_DECODE_PIXELS, DECODE_PIXELS_PER_BYTE * stored_bytes))
        seconds = _env_number(BUDGET_SECONDS_ENV)
        self.seconds = (seconds if seconds is not None
                        else max(MIN_DECODE_SECONDS, DECODE_SECONDS_PER_MB * stored_bytes / 1024**2))
        self.spent_pixels = 0
        self.started = time.monotonic()

    def _how_to_raise(self, env: str) -> str:
        return (f"Shrink the pictures (the model sees them at most 128×128), use fewer, or raise "
                f"the limit with {env} on the machine that runs Flow Lab.")

    def charge(self, pixels: int) -> None:
        """Count a picture about to be decoded; raise DatasetError once over either budget."""
        self.spent_pixels += pixels
        if self.spent_pixels > self.pixels:
            raise DatasetError(
                f"Stopped reading {shown_path(self.root)}: its pictures hold more than its decode "
                f"budget of {self.pixels / 1e6:,.0f} megapixels ({self._pixel_rule()}), far more "
                f"than {_megabytes(self.stored_bytes)} of files should. "
                + self._how_to_raise(BUDGET_PIXELS_ENV)
            )
        elapsed = time.monotonic() - self.started
        if elapsed > self.seconds:
            raise DatasetError(
                f"Stopped reading {shown_path(self.root)}: decoding its pictures took more than its "
                f"budget of {self.seconds:,.0f} seconds ({self._seconds_rule()}). "
                + self._how_to_raise(BUDGET_SECONDS_ENV)
            )

    def check_squares(self, count: int, size: int) -> None:
        """Before decoding: ``count`` pictures cost at least a size×size square each."""
        least = count * size * size
        if least > self.pixels:
            raise DatasetError(
                f"{shown_path(self.root)} holds {count:,} pictures: at {size}×{size} they make "
                f"{least / 1e6:,.0f} megapixels, more than its decode budget of {self.pixels / 1e6:,.0f} "
                f"megapixels ({self._pixel_rule()}), far more than {_megabytes(self.stored_bytes)} of "
                f"files should. Choose a smaller size, use fewer pictures, or raise the limit with "
                f"{BUDGET_PIXELS_ENV} on the machine that runs Flow Lab."
            )

    def _pixel_rule(self) -> str:
        if _env_number(BUDGET_PIXELS_ENV) is not None:
            return f"set by {BUDGET_PIXELS_ENV}"
        return (f"{MIN_DECODE_PIXELS // 1_000_000} megapixels, or {DECODE_PIXELS_PER_BYTE} pixels "
                "per byte of picture files if more")

    def _seconds_rule(self) -> str:
        if _env_number(BUDGET_SECONDS_ENV) is not None:
            return f"set by {BUDGET_SECONDS_ENV}"
        return (f"{MIN_DECODE_SECONDS:.0f} s, or {DECODE_SECONDS_PER_MB:.0f} s per MB of picture "
                "files if more")


def _megabytes(n_bytes: int) -> str:
    return f"{n_bytes / 1024**2:,.1f} MB" if n_bytes >= 102_400 else f"{n_bytes / 1024:,.0f} KB"


def preprocess_pictures(
    root: Path, size: int, channels: int, crop: int | None, progress: Progress | None
) -> tuple[np.ndarray, list[str], dict[str, int]]:
    """Decode every picture under root once; reuse the cached uint8 array afterwards.

    Returns (images uint8 [N,C,size,size], relative names, skip tallies).
    """
    listing = list_pictures(root)
    try:
        listing.remember(PREPROCESS_VERSION, size, channels, crop)
        key = listing.fingerprint.hexdigest()[:32]
        upload = upload_of(root)
        cache_file = decoded_path(upload, key) if upload else ensure_cache_dir() / f"pictures-{key}.npz"
        cached = _read_cache(cache_file)
        if cached is not None:
            touch(cache_file)
            return cached
        count = len(listing.entries)
        budget = DecodeBudget(root, listing.stored_bytes)
        budget.check_squares(count, size)
        if upload:
            what = f"its {count:,} pictures at {size}×{size} {'RGB' if channels == 3 else 'grey'}"
            check_decoded_room(upload, _cache_bytes(count * channels * size * size, listing), what)
        images, names, skipped = _decode_all(listing, budget, size, channels, crop, progress)
    finally:
        listing.close()
    if len(images):  # an empty result is not cached: the user will fix the folder and retry
        _write_cache(cache_file, images, names, skipped, upload is not None)
    return images, names, skipped


def _cache_bytes(pixel_bytes: int, listing: Listing) -> int:
    """At most what a cache file of these pictures takes: pixels, names, tallies, zip headers."""
    names = sum(len(entry.name.encode("utf-8", "surrogatepass")) * 6 + 4 for entry in listing.entries)
    return pixel_bytes + names + CACHE_OVERHEAD


def _decode_all(listing: Listing, budget: DecodeBudget, size: int, channels: int, crop: int | None,
                progress: Progress | None) -> tuple[np.ndarray, list[str], dict[str, int]]:
    """Each picture straight into its row of one array (rows of skipped files are reused)."""
    total = len(listing.entries)
    images = np.empty((total, channels, size, size), dtype=np.uint8)  # pages untouched stay free
    names: list[str] = []
    skipped = dict(listing.skipped)
    square = size * size

    def charge(pixels: int) -> None:
        budget.charge(max(pixels, square))  # every picture costs at least the square it becomes

    for done, entry in enumerate(listing.entries, start=1):
        try:
            with entry.open() as stream:
                images[len(names)] = decode_picture(stream, size, channels, crop, charge)
            names.append(entry.name)
        except Skip as skip:
            skipped[skip.reason] += 1
        except (OSError, zipfile.BadZipFile, EOFError, RuntimeError, ValueError) as exc:
            if isinstance(exc, DatasetError):
                raise
            skipped["corrupt"] += 1  # unreadable file, file gone since it was listed...
        if progress is not None and (done % PROGRESS_EVERY == 0 or done == total):
            progress(done, total)
    return images[: len(names)], names, skipped


def _read_cache(cache_file: Path) -> tuple[np.ndarray, list[str], dict[str, int]] | None:
    if not cache_file.exists():
        return None
    try:
        with np.load(cache_file, allow_pickle=False) as stored:
            meta = json.loads(stored["meta"].tobytes().decode("ascii"))
            return stored["images"], [str(n) for n in meta["names"]], meta["skipped"]
    except (OSError, ValueError, KeyError, TypeError, UnicodeDecodeError, zipfile.BadZipFile):
        cache_file.unlink(missing_ok=True)  # damaged cache: rebuild it
        return None


def _write_cache(cache_file: Path, images: np.ndarray, names: list[str], skipped: dict[str, int],
                 in_quota: bool) -> None:
    # JSON (ASCII) bytes: names as long as they are, not a fixed-width array of the longest
    text = json.dumps({"skipped": skipped, "version": PREPROCESS_VERSION, "names": names})
    meta = np.frombuffer(text.encode("ascii"), dtype=np.uint8)

    def write(f) -> None:
        np.savez(f, images=images, meta=meta)

    try:
        if in_quota:
            keep_decoded(cache_file, images.nbytes + meta.nbytes + CACHE_OVERHEAD, write)
        else:
            atomic_write(cache_file, write)
    except OSError as exc:
        # A full disk only costs speed next time; the pictures are already decoded.
        warnings.warn(f"Could not cache preprocessed pictures in {cache_file}: {exc}", stacklevel=2)
