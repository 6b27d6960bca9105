"""Plotly figures for the "Flows in 2-D" page: heat maps, point clouds, deformed grids.

No Streamlit here: every function takes numbers and returns a ``go.Figure``, so the figures
can be built (and checked) without a page. Font sizes are for a projector: 15 px and up.
"""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots

FONT = dict(size=16)
TICKS = dict(size=15)
CLOUD = "#3b5bdb"
GRID = "#e8590c"
PATH = "#c92a2a"
PER_LINE = 120        # points per grid line: enough that a bent line still looks smooth
VIEW = (-4.0, 4.0)   # data and latent both live here: every target fits, and so does 3σ of N(0, I)


def _layout(fig: go.Figure, *, height: int, title: str | None = None, square: bool = True,
            view: tuple[float, float] | None = VIEW) -> go.Figure:
    fig.update_layout(height=height, font=FONT, showlegend=False, hovermode="closest",
                      margin=dict(l=10, r=10, t=44 if title else 10, b=10),
                      title=dict(text=title, font=dict(size=18)) if title else None,
                      plot_bgcolor="white")
    # automargin: the margins above are a floor; plotly widens them to fit the tick labels and
    # axis titles (without it the x labels of a square chart fall below its 10 px margin).
    fig.update_xaxes(tickfont=TICKS, showgrid=False, zeroline=False, range=list(view) if view else None,
                     automargin=True)
    fig.update_yaxes(tickfont=TICKS, showgrid=False, zeroline=False, range=list(view) if view else None,
                     automargin=True)
    if square:
        fig.update_yaxes(scaleanchor="x", scaleratio=1)
    return fig


def _np(t) -> np.ndarray:
    return t.detach().cpu().numpy() if isinstance(t, torch.Tensor) else np.asarray(t)


# -- grids of lines --------------------------------------------------------------------------
def grid_line_points(lo: float = -3.0, hi: float = 3.0, lines: int = 13, per_line: int = PER_LINE) -> torch.Tensor:
    """Points along ``lines`` vertical and ``lines`` horizontal lines over [lo, hi]²:
    [2 · lines · per_line, 2]. Push them through a flow and :func:`line_xy` draws the
    deformed grid."""
    ticks = torch.linspace(lo, hi, lines)
    along = torch.linspace(lo, hi, per_line)
    vertical = [torch.stack([torch.full_like(along, v), along], 1) for v in ticks]
    horizontal = [torch.stack([along, torch.full_like(along, v)], 1) for v in ticks]
    return torch.cat(vertical + horizontal)


def line_xy(points, per_line: int = PER_LINE) -> tuple[list, list]:
    """Polylines of ``per_line`` points each as one x and one y list, broken by None."""
    pts = _np(points).reshape(-1, per_line, 2)
    xs, ys = [], []
    for line in pts:
        xs.extend(line[:, 0].tolist() + [None])
        ys.extend(line[:, 1].tolist() + [None])
    return xs, ys


def view_of(point_sets, margin: float = 0.3, floor: float = 3.0) -> tuple[float, float]:
    """A square range that holds 99 % of every set (and at least ±floor): one range for all
    frames, so an animation does not jump."""
    extent = floor
    for pts in point_sets:
        a = np.abs(_np(pts))
        a = a[np.isfinite(a).all(1)]
        if len(a):
            extent = max(extent, float(np.quantile(a, 0.99)))
    return (-extent - margin, extent + margin)


# -- heat maps -------------------------------------------------------------------------------
def heatmap(values, lo: float, hi: float, *, title: str, colorscale: str = "Viridis",
            zmid: float | None = None, zmax: float | None = None, colorbar_title: str = "",
            height: int = 380, overlay=None) -> go.Figure:
    """values [n, n] on the grid of :func:`flowlib.core.flows2d.grid_points` (rows = y)."""
    v = _np(values)
    axis = np.linspace(lo, hi, v.shape[0])
    kw = {}
    if zmid is not None:
        bound = zmax if zmax is not None else max(float(np.nanmax(np.abs(v))), 1e-6)
        kw = dict(zmin=-bound, zmax=bound, zmid=zmid)
    fig = go.Figure(go.Heatmap(z=v, x=axis, y=axis, colorscale=colorscale, **kw,
                               colorbar=dict(title=dict(text=colorbar_title, font=TICKS), tickfont=TICKS,
                                             thickness=14)))
    if overlay is not None:
        o = _np(overlay)
        fig.add_trace(go.Scatter(x=o[:, 0], y=o[:, 1], mode="markers",
                                 marker=dict(size=3, color="white", opacity=0.5)))
    return _layout(fig, height=height, title=title, view=(lo, hi))


def histogram_density(points, lo: float, hi: float, n: int) -> np.ndarray:
    """The target's density estimated by a 2-D histogram of its samples, rows = y."""
    p = _np(points)
    edges = np.linspace(lo, hi, n + 1)
    counts, _, _ = np.histogram2d(p[:, 1], p[:, 0], bins=[edges, edges])
    cell = ((hi - lo) / n) ** 2
    return counts / max(len(p), 1) / cell


def logdet_panels(panels: list[np.ndarray], titles: list[str], lo: float, hi: float,
                  height: int = 300) -> go.Figure:
    """One log|det J| heat map per layer, side by side, one colour scale centred on 0
    (red = the layer stretches space there, blue = it squeezes)."""
    bound = max([float(np.abs(p).max()) for p in panels] + [1e-3])
    fig = make_subplots(rows=1, cols=len(panels), subplot_titles=titles, horizontal_spacing=0.02)
    axis = np.linspace(lo, hi, panels[0].shape[0])
    for i, p in enumerate(panels):
        fig.add_trace(go.Heatmap(z=p, x=axis, y=axis, colorscale="RdBu_r", zmin=-bound, zmax=bound,
                                 zmid=0, showscale=i == len(panels) - 1,
                                 colorbar=dict(title=dict(text="log|det J|", font=TICKS), tickfont=TICKS,
                                               thickness=14)), 1, i + 1)
    fig.update_annotations(font=dict(size=16, color="#212529"))
    fig.update_layout(height=height, font=FONT, margin=dict(l=10, r=10, t=40, b=10), plot_bgcolor="white")
    fig.update_xaxes(showticklabels=False, ticks="", showgrid=False, zeroline=False, range=[lo, hi])
    fig.update_yaxes(showticklabels=False, ticks="", showgrid=False, zeroline=False, range=[lo, hi])
    for i in range(1, len(panels) + 1):
        fig.update_yaxes(scaleanchor=f"x{'' if i == 1 else i}", scaleratio=1, row=1, col=i)
    return fig


# -- clouds, grids and paths -----------------------------------------------------------------
def cloud_and_grid(cloud, grid, *, title: str, view=None, height: int = 460, per_line: int = PER_LINE) -> go.Figure:
    xs, ys = line_xy(grid, per_line)
    c = _np(cloud)
    fig = go.Figure([
        go.Scatter(x=xs, y=ys, mode="lines", line=dict(color=GRID, width=1.2), opacity=0.6,
                   hoverinfo="skip", name="grid"),
        go.Scatter(x=c[:, 0], y=c[:, 1], mode="markers", marker=dict(size=4, color=CLOUD, opacity=0.55),
                   name="points"),
    ])
    return _layout(fig, height=height, title=title, view=view or view_of([c]))


def animated_cloud_and_grid(clouds: list, grids: list, names: list[str], *, height: int = 560,
                            per_line: int = PER_LINE) -> go.Figure:
    """The same picture as :func:`cloud_and_grid`, one frame per layer, with Play and a slider."""
    view = view_of(clouds)
    first = cloud_and_grid(clouds[0], grids[0], title=names[0], view=view, height=height, per_line=per_line)
    frames = []
    for i, (c, g, name) in enumerate(zip(clouds, grids, names)):
        xs, ys = line_xy(g, per_line)
        c = _np(c)
        frames.append(go.Frame(name=str(i), layout=dict(title=dict(text=name)),
                               data=[go.Scatter(x=xs, y=ys), go.Scatter(x=c[:, 0], y=c[:, 1])]))
    first.frames = frames
    play = dict(frame=dict(duration=700, redraw=True), transition=dict(duration=300), fromcurrent=True)
    first.update_layout(
        updatemenus=[dict(type="buttons", x=0, y=-0.02, xanchor="left", yanchor="top", direction="left",
                          font=dict(size=15), buttons=[
                              dict(label="▶ Play", method="animate", args=[None, play]),
                              dict(label="❚❚ Pause", method="animate",
                                   args=[[None], dict(frame=dict(duration=0), mode="immediate")])])],
        sliders=[dict(active=0, x=0.22, len=0.78, y=-0.02, yanchor="top", font=dict(size=15),
                      currentvalue=dict(visible=False),
                      steps=[dict(label=str(i), method="animate",
                                  args=[[str(i)], dict(mode="immediate", frame=dict(duration=0, redraw=True))])
                             for i in range(len(frames))])],
        margin=dict(l=10, r=10, t=44, b=90))
    return first


def probe_path(path, names: list[str], background, lo: float, hi: float, height: int = 460,
               spacing: float = 0.1) -> go.Figure:
    """The probe point's position after every layer, joined in order, over the model density.

    The axes hold the whole path (every layer's point, the latent ★ included) and at least
    [lo, hi]². Under the path lies a field of nearly invisible dots every ``spacing``: plotly
    reports clicks on markers only, so the dots make every place on the chart clickable
    (:func:`point_from_selection` reads where). Dragging pans by default: Streamlit reports
    clicks only while the drag mode is not the lasso or the box, so a drag that moves the
    probe is the lasso tool's (the page offers it), and it ends where the probe should go."""
    p = _np(path)
    fig = heatmap(background, lo, hi, title="The probe's path, data (●) to latent (★)", height=height,
                  colorscale="Greys", colorbar_title="p(x)")
    fig.update_traces(showscale=False, selector=dict(type="heatmap"))
    axis = np.arange(lo, hi + 1e-9, spacing)
    gx, gy = np.meshgrid(axis, axis)
    # A click selects a dot; plotly would then dim every other point: nothing dims here.
    keep = dict(selected=dict(marker=dict(opacity=1)), unselected=dict(marker=dict(opacity=1)))
    fig.add_trace(go.Scatter(x=gx.ravel().round(2), y=gy.ravel().round(2), mode="markers", name="click",
                             marker=dict(size=9, color="rgba(255,255,255,0.02)"), **keep,
                             hovertemplate="move the probe to (%{x:.2f}, %{y:.2f})<extra></extra>"))
    labels = ["x (data)"] + names
    fig.add_trace(go.Scatter(x=p[:, 0], y=p[:, 1], mode="lines+markers", line=dict(color=PATH, width=2),
                             marker=dict(size=8, color=PATH), text=labels, name="path", **keep,
                             hovertemplate="%{text}<br>(%{x:.2f}, %{y:.2f})<extra></extra>"))
    fig.add_trace(go.Scatter(x=[p[0, 0]], y=[p[0, 1]], mode="markers", hoverinfo="skip", name="x", **keep,
                             marker=dict(size=16, color=CLOUD, line=dict(color="white", width=2))))
    fig.add_trace(go.Scatter(x=[p[-1, 0]], y=[p[-1, 1]], mode="markers", hoverinfo="skip", name="z", **keep,
                             marker=dict(size=20, symbol="star", color="#f08c00", line=dict(color="black", width=1))))
    finite = p[np.isfinite(p).all(1)]
    reach = float(np.abs(finite).max()) + 0.4 if len(finite) else 0.0   # the star's 20 px included
    extent = max(abs(lo), abs(hi), reach)
    fig = _layout(fig, height=height, title="The probe's path, data (●) to latent (★)", view=(-extent, extent))
    fig.update_layout(dragmode="pan", clickmode="event+select")
    return fig


def point_from_selection(state) -> tuple[float, float] | None:
    """Where a click or a drag on a chart puts a point: the end of a lasso drag, the centre
    of a box, or the clicked point; None when the chart reports nothing. ``state`` is what
    ``st.plotly_chart(..., on_select="rerun")`` keeps: ``{"selection": {"points", "box",
    "lasso"}}``."""
    sel = (state or {}).get("selection") or {}
    for lasso in sel.get("lasso") or []:
        if lasso.get("x") and lasso.get("y"):
            return float(lasso["x"][-1]), float(lasso["y"][-1])
    for box in sel.get("box") or []:
        if box.get("x") and box.get("y"):
            return float(np.mean(box["x"])), float(np.mean(box["y"]))
    for point in sel.get("points") or []:
        if "x" in point and "y" in point:
            return float(point["x"]), float(point["y"])
    return None


SUPERSCRIPT = str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹")


def sci(v: float, digits: int = 3) -> str:
    """A density as a reader can read it: 2.31 × 10⁻⁵ (``digits`` significant digits), and
    plain for 0.01 ≤ |v| < 1000 (0.254, 12.5): never "0.0000" for a small one."""
    v = float(v)
    if v == 0 or not np.isfinite(v):
        return f"{v:g}"
    if 0.01 <= abs(v) < 1000:
        return f"{v:.{digits}g}"
    mantissa, exp = f"{v:.{digits - 1}e}".split("e")   # the rounding may carry: 9.999e-5 → 1.00e-04
    return f"{mantissa} × 10{str(int(exp)).translate(SUPERSCRIPT)}"


def loss_curve(series: dict[str, list[float]], height: int = 300, title: str | None = None) -> go.Figure:
    """Training loss (nats per point) per step; one line per named series, lightly smoothed."""
    colours = [CLOUD, GRID, "#2b8a3e", "#ae3ec9"]
    fig = go.Figure()
    for (name, losses), colour in zip(series.items(), colours):
        y = np.asarray(losses, dtype=float)
        if len(y) > 20:  # a running mean, so the trend reads at a glance despite minibatch noise
            k = max(5, len(y) // 50)
            y = np.convolve(np.pad(y, (k - 1, 0), mode="edge"), np.ones(k) / k, mode="valid")
        fig.add_trace(go.Scatter(x=np.arange(1, len(y) + 1), y=y, mode="lines", name=name,
                                 line=dict(color=colour, width=2.5)))
    fig.update_layout(height=height, font=FONT, margin=dict(l=10, r=10, t=44 if title else 10, b=10),
                      title=dict(text=title, font=dict(size=18)) if title else None,
                      showlegend=len(series) > 1, legend=dict(orientation="h", y=1.02, x=0, yanchor="bottom",
                                                               font=dict(size=15)))
    fig.update_xaxes(title=dict(text="training step", font=dict(size=16)), tickfont=TICKS, automargin=True)
    fig.update_yaxes(title=dict(text="loss: −log p(x), nats", font=dict(size=16)), tickfont=TICKS, automargin=True)
    return fig


def point_canvas(points, lo: float, hi: float, spacing: float = 0.25, height: int = 460) -> go.Figure:
    """A field of faint dots to click (or box / lasso) on, with the placed points on top.

    Plotly reports clicks on markers only, so the dots are what makes empty space clickable.
    """
    axis = np.arange(lo, hi + 1e-9, spacing)
    gx, gy = np.meshgrid(axis, axis)
    fig = go.Figure(go.Scatter(x=gx.ravel(), y=gy.ravel(), mode="markers", name="canvas",
                               marker=dict(size=7, color="#adb5bd", opacity=0.35),
                               hovertemplate="add (%{x:.2f}, %{y:.2f})<extra></extra>"))
    p = _np(points).reshape(-1, 2)
    fig.add_trace(go.Scatter(x=p[:, 0], y=p[:, 1], mode="markers", name="your points",
                             marker=dict(size=13, color=CLOUD, line=dict(color="white", width=1.5)),
                             hoverinfo="skip"))
    return _layout(fig, height=height, view=(lo - 0.2, hi + 0.2))


def scatter_pair(before, after, titles: tuple[str, str], height: int = 380) -> go.Figure:
    """Two point clouds side by side on the same axes (e.g. ActNorm before / after its start)."""
    fig = make_subplots(rows=1, cols=2, subplot_titles=titles, horizontal_spacing=0.08)
    for col, pts in ((1, before), (2, after)):
        p = _np(pts)
        fig.add_trace(go.Scatter(x=p[:, 0], y=p[:, 1], mode="markers",
                                 marker=dict(size=4, color=CLOUD, opacity=0.6)), 1, col)
        fig.add_trace(go.Scatter(x=[float(p[:, 0].mean())], y=[float(p[:, 1].mean())], mode="markers",
                                 marker=dict(size=16, symbol="x", color=PATH), hoverinfo="skip"), 1, col)
    view = view_of([before, after], floor=2.5)
    fig.update_annotations(font=dict(size=16, color="#212529"))
    fig.update_layout(height=height, font=FONT, showlegend=False, margin=dict(l=10, r=10, t=40, b=10),
                      plot_bgcolor="white")
    fig.update_xaxes(range=list(view), tickfont=TICKS, zeroline=True, zerolinecolor="#ced4da", showgrid=False,
                     automargin=True)
    fig.update_yaxes(range=list(view), tickfont=TICKS, zeroline=True, zerolinecolor="#ced4da", showgrid=False,
                     automargin=True)
    fig.update_yaxes(scaleanchor="x", scaleratio=1, row=1, col=1)
    fig.update_yaxes(scaleanchor="x2", scaleratio=1, row=1, col=2)
    return fig
