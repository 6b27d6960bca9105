"""The tool bar's strip is made inside the figure: the plot keeps its size, the title sits
under the strip. (Made outside, as CSS padding, it cut the bottom 30 px off every chart.)"""

from __future__ import annotations

import plotly.graph_objects as go
import pytest

from flowlib.viz.chart_style import PLOTLY_TOP_PX, STREAMLIT_HEIGHT_PX, TOOL_STRIP_PX, tool_strip


@pytest.mark.parametrize("height, top", [(360, 44), (None, None)])
def test_the_strip_adds_to_the_height_and_the_top_margin_so_the_plot_keeps_its_size(height, top):
    fig = go.Figure(go.Scatter(x=[0, 1], y=[0, 1]))
    fig.update_layout(height=height, margin=dict(t=top, b=10), title="a title")
    tool_strip(fig)
    h, t = height or STREAMLIT_HEIGHT_PX, PLOTLY_TOP_PX if top is None else top
    assert fig.layout.height == h + TOOL_STRIP_PX and fig.layout.margin.t == t + TOOL_STRIP_PX
    assert fig.layout.margin.b == 10
    # the title's top is just under the strip, in the figure's own coordinates
    assert fig.layout.title.yref == "container" and fig.layout.title.yanchor == "top"
    assert (1 - fig.layout.title.y) * fig.layout.height == pytest.approx(TOOL_STRIP_PX + 4)


def test_a_figure_without_a_title_gets_no_title():
    fig = tool_strip(go.Figure(layout=dict(height=300)))
    assert not fig.layout.title.text and fig.layout.height == 300 + TOOL_STRIP_PX
