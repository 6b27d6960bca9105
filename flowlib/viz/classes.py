"""Pictures of a class-conditional flow: p(y | x) as bars, a row of samples per class.

    fig = class_probability_figure(["0", "1", ...], probs, true_label=3)
    picture = class_rows_picture(samples_uint8, ["3", "7"], per_row=8, scale=3)
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import plotly.graph_objects as go

from .images import as_numpy, image_grid, labelled_grid

__all__ = ["class_probability_figure", "class_rows_picture", "MAX_BARS"]

MAX_BARS = 12       # more classes than this: the most likely ones, the rest summed


def class_probability_figure(names: Sequence[str], probs, true_label: int | None = None,
                             height: int = 360) -> go.Figure:
    """Bars of p(y | x), the most likely class in a strong colour, the true one (if known)
    outlined; with more than MAX_BARS classes the most likely ones and one bar for the rest."""
    p = as_numpy(probs).astype(float).ravel()
    order = list(range(len(p)))
    rest = 0.0
    if len(p) > MAX_BARS:
        order = sorted(np.argsort(-p)[:MAX_BARS - 1].tolist())
        rest = float(p.sum() - p[order].sum())
    labels = [str(names[k]) for k in order] + (["all others"] if rest else [])
    values = [float(p[k]) for k in order] + ([rest] if rest else [])
    best = int(np.argmax(p))
    colours = ["#D55E00" if k == best else "#0072B2" for k in order] + (["#BBBBBB"] if rest else [])
    lines = [3 if k == true_label else 0 for k in order] + ([0] if rest else [])
    fig = go.Figure(go.Bar(x=labels, y=values, marker_color=colours,
                           marker_line=dict(color="#000000", width=lines),
                           text=[f"{v:.0%}" if v >= 0.005 else "" for v in values], textposition="outside",
                           hovertemplate="p(y = %{x} | x) = %{y:.4f}<extra></extra>"))
    fig.update_xaxes(type="category", title="class y")
    fig.update_yaxes(title="p(y | x)", range=[0, 1.12], tickformat=".0%")
    fig.update_layout(height=height, margin=dict(l=10, r=10, t=20, b=10), font=dict(size=18),
                      showlegend=False)
    return fig


def class_rows_picture(samples, names: Sequence[str], per_row: int, scale: int = 1,
                       font_size: int = 26) -> np.ndarray:
    """uint8 samples [rows · per_row, C, H, W], a class per row -> one labelled RGB picture."""
    samples = as_numpy(samples)
    rows = [image_grid(samples[r * per_row:(r + 1) * per_row], ncol=per_row, pad=3, scale=scale)
            for r in range(len(names))]
    width = max(60, 16 + font_size * max(len(str(n)) for n in names) * 6 // 10)
    return labelled_grid(rows, [str(n) for n in names], label_width=width, font_size=font_size)
