"""Pictures of dequantisation: pixel values are whole numbers, a flow's density is not.

    bins_figure(value=77, n_bits=5, u=noise)     # plotly: the bins around one pixel value and the noise in its bin
    dequant_pictures(pixels, n_bits=5, u=noise)  # numpy: the image, its n-bit bins, the noise, the result

A flow models a density over continuous values, but an image's pixels are integers 0..255.
Uniform dequantisation spreads each value x over its bin: x̃ = (x_b + u) / n_bins − 0.5 with
u ~ U[0, 1), where x_b = x // 2^(8 − n_bits) is the pixel's bin when the model keeps only
n_bits per value (Glow trained its CelebA-HQ model at 5 bits: 32 bins of width 8). Each bin
is 1/n_bins wide in model space, so the probability of the whole bin is about the density
times 1/n_bins per value: the n_bits that every bits/dim adds back. No Streamlit here.
"""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

from .images import hstack_images, to_rgb, upscale

__all__ = ["bin_of", "bins_figure", "dequant_pictures"]

BIN = "#3b5bdb"
NOISE = "#e8590c"


def bin_of(value: int, n_bits: int) -> tuple[int, int]:
    """(bin index, bin width in 0..255 units) of an 8-bit ``value`` kept at ``n_bits``."""
    width = 2 ** (8 - int(n_bits))
    return int(value) // width, width


def bins_figure(value: int, n_bits: int, u: np.ndarray, height: int = 330) -> go.Figure:
    """The number line of pixel values around ``value``: its n-bit bins (the pixel's own in
    blue), the 8-bit values as ticks, and each noise draw ``u`` (values in [0, 1)) placed in the
    pixel's bin as x_b·width + u·width, i.e. where x̃ lands (in 0..255 units)."""
    k, width = bin_of(value, n_bits)
    n_bins = 2 ** int(n_bits)
    lo_bin, hi_bin = max(0, k - 2), min(n_bins - 1, k + 2)
    lo, hi = lo_bin * width, (hi_bin + 1) * width
    fig = go.Figure()
    for b in range(lo_bin, hi_bin + 1):
        own = b == k
        fig.add_shape(type="rect", x0=b * width, x1=(b + 1) * width, y0=0, y1=1,
                      fillcolor=BIN if own else ("#e9ecef" if b % 2 else "#f8f9fa"),
                      opacity=0.35 if own else 1.0, line=dict(color="#495057", width=1.5), layer="below")
        fig.add_annotation(x=(b + 0.5) * width, y=1.0, yanchor="bottom", showarrow=False,
                           text=f"bin {b}", font=dict(color=BIN if own else "#495057"))
    u = np.asarray(u, dtype=float).ravel()
    jitter = np.random.default_rng(0).uniform(0.15, 0.85, len(u))
    fig.add_trace(go.Scatter(x=k * width + u * width, y=jitter, mode="markers", name="x̃ = bin + noise u",
                             marker=dict(size=11, color=NOISE, line=dict(color="white", width=1)),
                             hovertemplate="x̃ = %{x:.2f} (in 0..255 units)<extra></extra>"))
    fig.add_trace(go.Scatter(x=[value], y=[0.5], mode="markers+text", name=f"the pixel's value {value}",
                             marker=dict(size=18, symbol="diamond", color="#212529"),
                             text=[f"x = {value}"], textposition="bottom center", hoverinfo="skip"))
    fig.update_layout(height=height, margin=dict(l=10, r=10, t=36, b=10), plot_bgcolor="white",
                      legend=dict(orientation="h", yanchor="top", y=-0.28, x=0), font=dict(size=16))
    step = max(1, width if width > 1 else 1)
    ticks = list(range(lo, hi + 1, step if (hi - lo) // step <= 12 else step * 2))
    fig.update_xaxes(range=[lo - 0.02 * (hi - lo), hi + 0.02 * (hi - lo)], tickvals=ticks,
                     title=f"pixel value (0..255); one bin = {width} value{'s' if width > 1 else ''}"
                           f" = 1/{n_bins} of the model's range", showgrid=False, zeroline=False)
    fig.update_yaxes(visible=False, range=[0, 1.25])
    return fig


def dequant_pictures(pixels, n_bits: int, u: np.ndarray, scale: int = 6,
                     font_size: int = 18) -> np.ndarray:
    """One strip: the image, the image kept at ``n_bits`` (each value at its bin's centre),
    the noise u (black 0 … white 1) and the dequantised image x̃ = (x_b + u)/n_bins, drawn as
    grey. ``pixels`` uint8 [C, H, W]; ``u`` floats in [0, 1) of the same shape."""
    pixels = np.asarray(pixels, dtype=np.uint8)
    u = np.asarray(u, dtype=np.float64).reshape(pixels.shape)
    width = 2 ** (8 - int(n_bits))
    n_bins = 2 ** int(n_bits)
    bins = pixels.astype(np.int64) // width
    centres = (bins * width + width // 2).clip(0, 255).astype(np.uint8)
    noise = np.rint(u * 255).astype(np.uint8)
    tilde = np.rint((bins + u) / n_bins * 255).clip(0, 255).astype(np.uint8)
    tiles = [upscale(to_rgb(p), scale) for p in (pixels, centres, noise, tilde)]
    captions = ["the image (8 bits)", f"kept at {n_bits} bits: {n_bins} levels",
                "the noise u, one draw per value", "x̃ = (bin + u) / n_bins"]
    return hstack_images(tiles, gap=14, captions=captions, font_size=font_size)
