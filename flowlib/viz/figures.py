"""Plotly figures the pages share: matrices, ActNorm scales, the bits/dim budget."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import plotly.graph_objects as go
import torch

from .images import as_numpy

__all__ = ["matrix_heatmap", "actnorm_scales", "actnorm_figure", "bpd_budget_figure", "prior_bits_figure"]


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


PRIOR_COLOURS = {"standard": "#adb5bd", "learned": "#3b5bdb", "yours": "#e8590c"}


def prior_bits_figure(series: dict[str, tuple[list[float], float]], height: int = 380) -> go.Figure:
    """One image's prior terms per level and its bits/dim under several priors, side by side.

    ``series``: name -> (bits/dim of each level's prior term, finest first; the image's whole
    bits/dim). Names "standard" (N(0, I)), "learned" and any other (drawn orange); each bar is
    labelled with its value, so the difference can be read off without hovering.
    """
    fig = go.Figure()
    for name, (levels, total) in series.items():
        x = [f"z{k + 1} prior" for k in range(len(levels))] + ["bits/dim (total)"]
        y = [float(v) for v in levels] + [float(total)]
        fig.add_bar(x=x, y=y, name=name, marker_color=PRIOR_COLOURS.get(name.split(" ")[0], PRIOR_COLOURS["yours"]),
                    text=[f"{v:.2f}" for v in y], textposition="outside", cliponaxis=False,
                    hovertemplate="%{x}: %{y:.3f} bits/dim<extra>" + name + "</extra>")
    top = max((max(v[0] + [v[1]]) for v in series.values()), default=1.0)
    fig.update_layout(barmode="group", height=height, margin=dict(l=10, r=10, t=40, b=10),
                      legend=dict(orientation="h", yanchor="bottom", y=1.0, x=0),
                      font=dict(size=16), bargap=0.25)
    fig.update_yaxes(title="bits per dimension", range=[min(0.0, min(min(v[0]) for v in series.values())) * 1.2,
                                                        top * 1.18], zeroline=True, zerolinecolor="#444")
    return fig
