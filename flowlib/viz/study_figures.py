"""A study's pictures: each arm's curve across seeds with its band; a search's progress and importance.

    fig = study_curves_figure(result, axis="step")     # result: flowlib.study.api.answer(...)
    fig = study_curves_figure(result, axis="time")     # x: training seconds (mean over seeds)
    fig = search_progress_figure(result)               # each configuration's first run, best so far, pruned ones
    fig = importance_figure(result["importance"])      # each searched setting's share (Optuna's PED-ANOVA)

The curves are the periodic evaluations on the validation images (held out from the training
split); the numbers a study reports are each run's final test bits/dim, read once at the end.

The band is min–max over the seeds that reached that evaluation: with three seeds an s.d.
band would pretend to a precision three points do not have. Plotly's camera button in the
chart's corner saves the figure as a PNG.
"""

from __future__ import annotations

import statistics

import plotly.graph_objects as go

__all__ = ["study_curves_figure", "search_progress_figure", "importance_figure", "ARM_COLOURS"]

ARM_COLOURS = ["#3b5bdb", "#e8590c", "#2b8a3e", "#ae3ec9", "#1098ad", "#c92a2a", "#5c940d", "#495057"]


def _rgba(hex_colour: str, alpha: float) -> str:
    r, g, b = (int(hex_colour[i:i + 2], 16) for i in (1, 3, 5))
    return f"rgba({r},{g},{b},{alpha})"


def arm_band(arm: dict, axis: str) -> dict:
    """{"x", "mean", "low", "high", "n"}: the arm's curves aligned on their evaluation steps."""
    by_step: dict[int, list[tuple[float, float]]] = {}
    for run in arm["runs"]:
        curve = run.get("curve") or {}
        for step, t, v in zip(curve.get("step", []), curve.get("time", []), curve.get("value", [])):
            by_step.setdefault(step, []).append((t, v))
    out = {"x": [], "mean": [], "low": [], "high": [], "n": []}
    for step in sorted(by_step):
        points = by_step[step]
        values = [v for _, v in points]
        out["x"].append(step if axis == "step" else statistics.fmean(t for t, _ in points))
        out["mean"].append(statistics.fmean(values))
        out["low"].append(min(values))
        out["high"].append(max(values))
        out["n"].append(len(values))
    return out


def _y_range(bands: list[dict]) -> list[float] | None:
    """A y-range for the part of training where the arms are compared: the first evaluations
    (thousands of bits/dim before the model has learned anything) would flatten the rest."""
    late, every = [], []
    for band in bands:
        n = len(band["x"])
        every += band["low"] + band["high"]
        late += band["low"][n // 4:] + band["high"][n // 4:]
    if not late:
        return None
    low, high = min(every), max(late)
    pad = max(0.05 * (high - low), 0.01)
    return None if max(every) <= high + pad else [low - pad, high + pad]


def study_curves_figure(result: dict, axis: str = "step", height: int = 440) -> go.Figure:
    fig = go.Figure()
    bands = []
    for i, arm in enumerate(result["arms"]):
        colour = ARM_COLOURS[i % len(ARM_COLOURS)]
        band = arm_band(arm, axis)
        if not band["x"]:
            continue
        bands.append(band)
        name = arm["name"] + (" (baseline)" if arm["name"] == result.get("baseline") else "")
        fig.add_trace(go.Scatter(x=band["x"] + band["x"][::-1], y=band["high"] + band["low"][::-1],
                                 fill="toself", fillcolor=_rgba(colour, 0.18), line=dict(width=0),
                                 hoverinfo="skip", showlegend=False, legendgroup=name))
        fig.add_trace(go.Scatter(
            x=band["x"], y=band["mean"], mode="lines+markers", name=name, legendgroup=name,
            line=dict(color=colour, width=3), marker=dict(size=7),
            customdata=list(zip(band["low"], band["high"], band["n"])),
            hovertemplate=(f"{arm['name']}: %{{y:.4f}} (seeds %{{customdata[0]:.4f}}–%{{customdata[1]:.4f}}, "
                           "n=%{customdata[2]})<extra></extra>")))
    x_title = "training step" if axis == "step" else "training time (s, mean over seeds)"
    fig.update_layout(height=height, font=dict(size=16), margin=dict(l=10, r=10, t=10, b=10),
                      hovermode="x unified" if axis == "step" else "closest",
                      legend=dict(orientation="h", yanchor="bottom", y=1.0, xanchor="left", x=0,
                                  font=dict(size=15)))
    fig.update_xaxes(title=dict(text=x_title, font=dict(size=17)), tickfont=dict(size=15), showgrid=True)
    y_range = _y_range(bands)
    fig.update_yaxes(title=dict(text="validation bits/dim (lower is better)", font=dict(size=17)),
                     tickfont=dict(size=15), showgrid=True, range=y_range)
    if y_range is not None:
        fig.add_annotation(text="early evaluations above the top edge are cut off (zoom out to see them)",
                           xref="paper", yref="paper", x=1, y=1, xanchor="right", yanchor="top",
                           showarrow=False, font=dict(size=13, color="#495057"))
    return fig


def _layout(fig: go.Figure, height: int, x_title: str, y_title: str) -> go.Figure:
    fig.update_layout(height=height, font=dict(size=16), margin=dict(l=10, r=10, t=10, b=10),
                      legend=dict(orientation="h", yanchor="bottom", y=1.0, xanchor="left", x=0, font=dict(size=15)))
    fig.update_xaxes(title=dict(text=x_title, font=dict(size=17)), tickfont=dict(size=15), showgrid=True)
    fig.update_yaxes(title=dict(text=y_title, font=dict(size=17)), tickfont=dict(size=15), showgrid=True)
    return fig


def search_progress_figure(result: dict, height: int = 380) -> go.Figure:
    """Each configuration's first-seed run (its final validation bits/dim, or the last value
    before it was pruned) by trial number, and the best so far as a step line."""
    fig = go.Figure()
    done_x, done_y, cut_x, cut_y, text_done, text_cut = [], [], [], [], [], []
    for c in result.get("configurations", []):
        lead = next((r for r in c["runs"] if r.get("trial") is not None), None)
        if lead is None or lead.get("trial") is None:
            continue
        curve = lead.get("curve") or {}
        if c["state"] == "pruned" and curve.get("value"):
            cut_x.append(lead["trial"])
            cut_y.append(curve["value"][-1])
            text_cut.append(c["name"])
        elif lead.get("valid_bpd") is not None and lead["status"] == "finished":
            done_x.append(lead["trial"])
            done_y.append(lead["valid_bpd"])
            text_done.append(c["name"])
    fig.add_trace(go.Scatter(x=done_x, y=done_y, mode="markers", name="finished", text=text_done,
                             marker=dict(size=11, color=ARM_COLOURS[0]),
                             hovertemplate="%{text}: %{y:.4f}<extra></extra>"))
    fig.add_trace(go.Scatter(x=cut_x, y=cut_y, mode="markers", name="pruned (value when cut)", text=text_cut,
                             marker=dict(size=11, symbol="x", color=ARM_COLOURS[5]),
                             hovertemplate="%{text}: pruned at %{y:.4f}<extra></extra>"))
    progress = result.get("progress", [])
    if progress:
        fig.add_trace(go.Scatter(x=[p["trial"] for p in progress], y=[p["best_so_far"] for p in progress],
                                 mode="lines", line=dict(shape="hv", width=3, color=ARM_COLOURS[2]),
                                 name="best so far", hovertemplate="best so far: %{y:.4f}<extra></extra>"))
    return _layout(fig, height, "trial (a configuration's first seed)", "validation bits/dim (lower is better)")


def importance_figure(importance: dict, height: int = 260) -> go.Figure:
    names = list(importance)[::-1]
    fig = go.Figure(go.Bar(x=[importance[n] for n in names], y=names, orientation="h",
                           marker=dict(color=ARM_COLOURS[0]), hovertemplate="%{y}: %{x:.2f}<extra></extra>"))
    return _layout(fig, height, "importance for validation bits/dim (shares of 1)", "")
