"""The 2-D probe's figure and helpers: its path is always in view, every place on it can be
clicked, a click or a drag is read back as a point, and densities never print as 0.0000."""

from __future__ import annotations

import numpy as np
import pytest

from flowlib.viz import flows2d as figs


def probe(path, lo=-4.0, hi=4.0):
    names = [f"layer {i}" for i in range(len(path) - 1)]
    return figs.probe_path(np.array(path, dtype=float), names, np.ones((8, 8)), lo, hi)


def test_the_whole_path_and_its_latent_star_are_in_view():
    fig = probe([[0.8, 0.4], [2.0, -1.0], [6.5, -7.2]])   # a latent far outside [-4, 4]
    for axis in (fig.layout.xaxis, fig.layout.yaxis):
        lo, hi = axis.range
        assert lo <= -7.2 - 0.3 and hi >= 7.2 + 0.3       # the star's marker fits, not only its centre
    star = next(t for t in fig.data if t.name == "z")
    assert (star.x[0], star.y[0]) == (6.5, -7.2)


def test_a_path_inside_the_square_keeps_the_square():
    fig = probe([[0.8, 0.4], [0.1, 0.2]])
    assert tuple(fig.layout.xaxis.range) == (-4.0, 4.0) == tuple(fig.layout.yaxis.range)


def test_every_place_on_the_square_can_be_clicked_and_nothing_dims():
    fig = probe([[0.8, 0.4], [0.1, 0.2]])
    field = next(t for t in fig.data if t.name == "click")
    xs, ys = np.asarray(field.x), np.asarray(field.y)
    assert xs.min() == -4.0 and xs.max() == 4.0 and ys.min() == -4.0 and ys.max() == 4.0
    assert np.max(np.diff(np.unique(xs))) <= 0.1 + 1e-9    # no gap wider than the spacing
    # Streamlit reports a click only outside the lasso and box modes
    assert fig.layout.clickmode == "event+select" and fig.layout.dragmode == "pan"
    for trace in fig.data[1:]:                            # after a click nothing fades out
        assert trace.unselected.marker.opacity == 1


@pytest.mark.parametrize("state, point", [
    (None, None),
    ({"selection": {"points": [], "box": [], "lasso": []}}, None),
    ({"selection": {"points": [{"x": 1.2, "y": -0.4, "curve_number": 1}]}}, (1.2, -0.4)),
    ({"selection": {"box": [{"x": [0.0, 2.0], "y": [1.0, 3.0]}], "points": [{"x": 9, "y": 9}]}}, (1.0, 2.0)),
    ({"selection": {"lasso": [{"x": [0.0, 0.5, 1.5], "y": [0.0, 0.2, -2.5]}],
                    "points": [{"x": 9, "y": 9}]}}, (1.5, -2.5)),   # a drag ends where it let go
])
def test_a_click_or_a_drag_is_read_as_one_point(state, point):
    assert figs.point_from_selection(state) == point


@pytest.mark.parametrize("v, text", [
    (2.3148e-5, "2.31 × 10⁻⁵"), (9.9996e-5, "1.00 × 10⁻⁴"), (0.254, "0.254"), (0.01, "0.01"),
    (12.5, "12.5"), (31_400.0, "3.14 × 10⁴"), (0.0, "0"), (-3.1e-7, "-3.10 × 10⁻⁷"),
])
def test_densities_in_scientific_notation(v, text):
    assert figs.sci(v) == text
