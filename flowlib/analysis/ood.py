"""Scoring whole data sets with a trained flow: what its likelihood says about other data.

    sets = comparison_sets(model_dataset="mnist", shape=(1, 28, 28), n=1000)
    for s in sets: s.images    # uint8 [N, C, H, W], or None with s.missing saying why
    scores = score_images(model, s.images)   # bits/dim and its per-level split, numpy

The sets a page compares (Nalisnick et al. 2019, "Do deep generative models know what they
don't know?"):

    own test set     the held-out split of the data the model was trained on
    blurred          the same test images, Gaussian-blurred: simpler, smoother pictures
    other sets       every other built-in set that is installed: for an MNIST model
                     Fashion-MNIST (when installed) and the ORL faces, which ship with the
                     app; for a faces model MNIST digits padded to 32×32 (and Fashion-MNIST)
    uniform noise    every pixel independent and uniform on 0..255
    constant images  one grey level everywhere (0, 1, ..., 255)

``typicality_flags`` implements the two-sided test of Nalisnick et al. 2019b: an input is
suspicious when its bits/dim is *either* higher *or lower* than what the model's own test
data gives, instead of only when it is higher. No Streamlit here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["ScoreSet", "Scores", "OTHER_DATASET", "OTHER_DATASETS", "score_images", "uniform_noise",
           "constant_images", "fit_to_shape", "blurred", "comparison_sets", "typicality_flags",
           "likelihood_flags", "subset", "gaussian_shell"]

# The contrast sets for a model trained on each built-in dataset, in order; each one that is
# installed is scored. MNIST and the ORL faces ship with the app; Fashion-MNIST is a Debian
# package (dataset-fashion-mnist).
OTHER_DATASETS = {"mnist": ("fashion-mnist", "faces"), "fashion-mnist": ("mnist", "faces"),
                  "faces": ("mnist", "fashion-mnist")}
OTHER_DATASET = {name: others[0] for name, others in OTHER_DATASETS.items()}   # the first choice
BLUR_RADIUS = 1.0   # pixels: enough to smooth strokes and skin, not to hide what the picture is
NAMES = {"mnist": "MNIST digits", "fashion-mnist": "Fashion-MNIST clothes", "faces": "ORL faces"}


@dataclass
class ScoreSet:
    key: str                       # "test", "blurred", "other:<dataset>", "noise", "constant", "drawings"
    label: str                     # words for a legend
    images: np.ndarray | None      # uint8 [N, C, H, W]
    missing: str | None = None     # why images is None (e.g. how to install the data set)


@dataclass
class Scores:
    """Per-image bits/dim and its exact split (see ``FlowModel.bits_per_dim_terms``)."""

    total: np.ndarray          # [N]
    prior_levels: np.ndarray   # [N, L]
    logdet: np.ndarray         # [N]
    dequant: np.ndarray        # [N]
    quantisation: float

    def __len__(self) -> int:
        return len(self.total)

    def budget(self) -> dict[str, float]:
        """Mean of each term over the set: level 1..L priors, log-det, dequantisation, n_bits."""
        out = {f"z{k + 1} prior": float(self.prior_levels[:, k].mean())
               for k in range(self.prior_levels.shape[1])}
        out["log-det"] = float(self.logdet.mean())
        if np.any(self.dequant):
            out["dequantisation"] = float(self.dequant.mean())
        out["quantisation"] = self.quantisation
        return out


@torch.no_grad()
def score_images(model, images, batch: int = 250, seed: int = 0) -> Scores:
    """Bits/dim of uint8 images [N, C, H, W] in batches, with seeded dequantisation noise."""
    images = torch.from_numpy(np.array(images, dtype=np.uint8, copy=True))
    generator = torch.Generator().manual_seed(seed)
    parts = []
    for start in range(0, len(images), batch):
        terms = model.bits_per_dim_terms(images[start:start + batch], noise=True, generator=generator)
        parts.append(terms)
    if not parts:
        levels = len(model.levels)
        empty = np.zeros(0, np.float32)
        return Scores(empty, np.zeros((0, levels), np.float32), empty, empty, float(model.config.n_bits))
    cat = lambda name: torch.cat([getattr(t, name).float() for t in parts]).cpu().numpy()  # noqa: E731
    return Scores(cat("total"), cat("prior_levels"), cat("logdet"), cat("dequant"),
                  float(parts[0].quantisation))


def subset(images, n: int, seed: int = 0) -> np.ndarray:
    """A seeded random subset of n images (all of them if there are fewer)."""
    images = np.asarray(images)
    if len(images) <= n:
        return images
    order = np.random.default_rng(seed).permutation(len(images))[:n]
    return images[np.sort(order)]


def uniform_noise(shape, n: int, seed: int = 0) -> np.ndarray:
    """n images whose pixels are independent and uniform on 0..255."""
    return np.random.default_rng(seed).integers(0, 256, size=(n, *shape), dtype=np.uint8)


def constant_images(shape, n: int = 256) -> np.ndarray:
    """n images of one grey level each, evenly spread over 0..255 (0 and 255 included)."""
    levels = np.unique(np.rint(np.linspace(0, 255, max(1, min(n, 256)))).astype(np.uint8))
    return np.broadcast_to(levels[:, None, None, None], (len(levels), *shape)).copy()


def fit_to_shape(images, shape) -> np.ndarray:
    """uint8 [N, c, h, w] -> [N, C, H, W]: pad (or centre-crop) to H×W, repeat/average channels."""
    images = np.asarray(images, dtype=np.uint8)
    c_out, h_out, w_out = (int(v) for v in shape)
    n, c, h, w = images.shape
    if c != c_out:
        grey = images.mean(axis=1, keepdims=True).round().astype(np.uint8)
        images = np.repeat(grey, c_out, axis=1)
    out = np.zeros((n, c_out, h_out, w_out), np.uint8)
    top, left = (h_out - h) // 2, (w_out - w) // 2
    src = images[:, :, max(0, -top):max(0, -top) + min(h, h_out), max(0, -left):max(0, -left) + min(w, w_out)]
    out[:, :, max(0, top):max(0, top) + src.shape[2], max(0, left):max(0, left) + src.shape[3]] = src
    return out


def blurred(images, radius: float = BLUR_RADIUS) -> np.ndarray:
    """uint8 [N, C, H, W] Gaussian-blurred channel by channel (PIL), same shape and type."""
    from PIL import Image, ImageFilter
    images = np.asarray(images, dtype=np.uint8)
    out = np.empty_like(images)
    for i, img in enumerate(images):
        for c, plane in enumerate(img):
            out[i, c] = np.asarray(Image.fromarray(plane).filter(ImageFilter.GaussianBlur(radius)))
    return out


def _dataset(name: str, n: int, seed: int):
    """(uint8 images, None) for a built-in dataset's test split, or (None, why it is missing)."""
    from flowlib.data import load_images
    from flowlib.data.sources.common import DatasetError
    try:
        images = load_images(name, "test").images.numpy()
    except (DatasetError, OSError) as exc:
        return None, str(exc)
    return subset(images, n, seed), None


def comparison_sets(model_dataset: str | None, shape, n: int = 1000, seed: int = 0) -> list[ScoreSet]:
    """The model's own test set and a blurred copy of it, every other built-in data set (one
    that is not installed comes back with ``images=None`` and the reason), uniform noise and
    constant images."""
    shape = tuple(int(v) for v in shape)
    sets = []
    if model_dataset is not None:
        images, why = _dataset(model_dataset, n, seed)
        name = NAMES.get(model_dataset, model_dataset)
        if images is not None:
            images = fit_to_shape(images, shape)
        sets.append(ScoreSet("test", f"{name} (its own test set)", images, why))
        if images is not None:
            sets.append(ScoreSet("blurred", f"{name}, blurred (its own test set, smoothed)", blurred(images)))
        for other in OTHER_DATASETS.get(model_dataset, ()):
            images, why = _dataset(other, n, seed)
            fits = images is None or tuple(images.shape[1:]) == shape
            label = NAMES.get(other, other) + ("" if fits else (" (padded to fit)" if images.shape[-1] <= shape[-1]
                                                                 else " (cropped to fit)"))
            if images is not None:
                images = fit_to_shape(images, shape)
            sets.append(ScoreSet(f"other:{other}", label, images, why))
    sets.append(ScoreSet("noise", "uniform noise", uniform_noise(shape, n, seed)))
    sets.append(ScoreSet("constant", "constant images (one grey level each)", constant_images(shape)))
    return sets


def likelihood_flags(reference: np.ndarray, values: np.ndarray, q: float = 0.99) -> np.ndarray:
    """One-sided test: flag bits/dim above the reference's q-quantile (unlikely = unusual)."""
    return np.asarray(values) > np.quantile(reference, q)


def typicality_flags(reference: np.ndarray, values: np.ndarray, q: float = 0.99) -> np.ndarray:
    """Two-sided test: flag bits/dim outside the reference's central q interval.

    Too *few* bits is as suspicious as too many: the model's own images almost never score
    that well, just as a draw from a high-dimensional Gaussian almost never lands at its mode.
    """
    lo, hi = np.quantile(reference, [(1 - q) / 2, 1 - (1 - q) / 2])
    values = np.asarray(values)
    return (values < lo) | (values > hi)


def gaussian_shell(dims: int) -> tuple[float, float]:
    """Mean and standard deviation of ‖z‖ for z ~ N(0, I_D): about √D and 1/√2."""
    mean = math.sqrt(2) * math.exp(math.lgamma((dims + 1) / 2) - math.lgamma(dims / 2))
    return mean, math.sqrt(max(dims - mean ** 2, 0.0))
