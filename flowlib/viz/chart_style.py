"""Plotly figures legible from the back of a room: every piece of text at least a given size,
in a dark colour, whatever the figure set or left to the theme.

    legible(fig, min_px=16)          # in place; returns fig
    text_sizes(fig)                  # [(where, size)] of every text the figure declares

Streamlit's plotly theme draws tick labels at about 11-12 px in a light grey unless the
figure names a size and colour itself; heat-map axes, colour bars and subplot titles are the
usual gaps. ``legible`` walks the layout (every x/y axis of every subplot, colour bars of
every trace, legend, title, annotations, the sliders and buttons of an animation, bar labels)
and raises each size to ``min_px`` and each tick colour to a dark grey. No Streamlit here.
"""

from __future__ import annotations

import plotly.graph_objects as go

__all__ = ["INK", "TOOL_STRIP_PX", "legible", "tool_strip", "text_sizes", "png_config"]

INK = "#212529"          # tick labels and titles: contrast about 15:1 on white
TITLE_STEP = 2           # titles are this much larger than the smallest text
TOOL_STRIP_PX = 30       # the strip at the top of a chart that holds plotly's tool bar
PLOTLY_TOP_PX = 100      # plotly's top margin when a figure names none
STREAMLIT_HEIGHT_PX = 450  # the height Streamlit gives a plotly chart that names none


def _font(current, size: float, colour: str | None = INK) -> dict:
    """A font dict: the current one's size raised to ``size``; colour set when none is given."""
    size_now = getattr(current, "size", None) if current is not None else None
    out = {"size": max(float(size_now or 0), float(size))}
    colour_now = getattr(current, "color", None) if current is not None else None
    if colour is not None and not colour_now:
        out["color"] = colour
    return out


def legible(fig: go.Figure, min_px: float = 16) -> go.Figure:
    """Raise every text of ``fig`` to at least ``min_px`` (titles ``min_px + 2``), ticks dark."""
    big = min_px + TITLE_STEP
    fig.update_layout(font=_font(fig.layout.font, min_px, None))
    if fig.layout.title is not None and fig.layout.title.text:
        fig.update_layout(title_font=_font(fig.layout.title.font, big))
    if fig.layout.legend is not None:
        fig.update_layout(legend_font=_font(fig.layout.legend.font, min_px))
    fig.update_layout(hoverlabel_font=_font(fig.layout.hoverlabel.font, min_px, None))

    def axis(ax) -> None:
        ax.update(tickfont=_font(ax.tickfont, min_px), title_font=_font(ax.title.font, min_px),
                  tickcolor=ax.tickcolor or "#868e96")

    fig.for_each_xaxis(axis)
    fig.for_each_yaxis(axis)
    for trace in fig.data:
        bar = getattr(trace, "colorbar", None)
        if bar is not None and "colorbar" in trace:
            trace.update(colorbar=dict(tickfont=_font(bar.tickfont, min_px),
                                       title=dict(font=_font(bar.title.font, min_px))))
        if getattr(trace, "type", None) == "bar" and trace.text is not None:
            trace.update(textfont=_font(trace.textfont, min_px))
    for note in fig.layout.annotations or ():
        note.update(font=_font(note.font, min_px, None))
    for menu in fig.layout.updatemenus or ():
        menu.update(font=_font(menu.font, min_px))
    for slider in fig.layout.sliders or ():
        slider.update(font=_font(slider.font, min_px))
    return fig


def tool_strip(fig: go.Figure, px: int = TOOL_STRIP_PX) -> go.Figure:
    """Make ``px`` of room at the top of ``fig`` for plotly's tool bar, so that it never covers
    the title: the figure grows by ``px``, its top margin too (the plot keeps its size), and a
    title is pinned just under the strip. In place; returns ``fig``. (The room is the figure's
    own: Streamlit gives a chart exactly the figure's height, so room made outside it, e.g. by
    padding, cuts the figure's bottom off.)"""
    height = fig.layout.height or STREAMLIT_HEIGHT_PX
    top = fig.layout.margin.t if fig.layout.margin.t is not None else PLOTLY_TOP_PX
    fig.update_layout(height=height + px, margin_t=top + px)
    if fig.layout.title is not None and fig.layout.title.text:
        fig.update_layout(title_yref="container", title_yanchor="top", title_y=1 - (px + 4) / (height + px))
    return fig


def text_sizes(fig: go.Figure) -> list[tuple[str, float]]:
    """(where, px) of every text size the figure declares once laid out by ``legible``:
    the base font, the title, the legend, each axis's ticks and title, colour bars,
    annotations, bar labels. Text without a size of its own inherits the base font."""
    base = float(fig.layout.font.size or 12)

    def size(font) -> float:
        return float(getattr(font, "size", None) or base)

    out = [("font", base)]
    if fig.layout.title is not None and fig.layout.title.text:
        out.append(("title", size(fig.layout.title.font)))
    if fig.layout.showlegend is not False:
        out.append(("legend", size(fig.layout.legend.font)))
    fig.for_each_xaxis(lambda ax: out.extend([(f"{ax.plotly_name} ticks", size(ax.tickfont)),
                                              (f"{ax.plotly_name} title", size(ax.title.font))]))
    fig.for_each_yaxis(lambda ax: out.extend([(f"{ax.plotly_name} ticks", size(ax.tickfont)),
                                              (f"{ax.plotly_name} title", size(ax.title.font))]))
    for k, trace in enumerate(fig.data):
        if "colorbar" in trace and getattr(trace, "showscale", True) is not False:
            out += [(f"trace {k} colour bar", size(trace.colorbar.tickfont)),
                    (f"trace {k} colour bar title", size(trace.colorbar.title.font))]
        if getattr(trace, "type", None) == "bar" and trace.text is not None:
            out.append((f"trace {k} bar labels", size(trace.textfont)))
    for k, note in enumerate(fig.layout.annotations or ()):
        out.append((f"annotation {k}", size(note.font)))
    return out


def png_config(filename: str, scale: int = 2, tools: tuple[str, ...] = ("resetScale2d",)) -> dict:
    """The plotly config of a chart whose tool bar is always shown and short: 'Download plot
    as a PNG' (at ``scale``× resolution, so a slide gets a sharp picture) and ``tools``
    (plotly's button names; by default 'Reset axes', since dragging still zooms)."""
    return {
        "displaylogo": False,
        "displayModeBar": True,
        "modeBarButtons": [["toImage", *tools]],
        "toImageButtonOptions": {"format": "png", "filename": filename, "scale": scale},
    }
