"""AppTest of the "One image, step by step" page with the shipped demo checkpoints."""

from __future__ import annotations

import pytest
from streamlit.testing.v1 import AppTest

from tests.app.kit import ROOT, assert_ok, image_urls, needs_demos, widget

PAGE = str(ROOT / "pages" / "step_by_step.py")
pytestmark = [needs_demos, pytest.mark.usefixtures("runs_dir")]   # runs_dir: tests/conftest.py





def _metric(at: AppTest, start: str) -> str:
    return next(m.value for m in at.metric if m.label.startswith(start))


def test_walk_page_renders_every_section():
    at = AppTest.from_file(PAGE, default_timeout=180).run()
    assert_ok(at)
    headers = [h.value for h in at.header]
    assert len(headers) == 6 and headers[0].startswith("1 ·") and headers[-1].startswith("6 ·")
    assert float(_metric(at, "Invertibility error")) < 1e-4
    assert float(_metric(at, "Fresh coupling: max |y − x|")) == 0.0
    assert _metric(at, "Fresh coupling: log-det").startswith("+0.00")
    assert any("equals its input, bit for bit" in s.value for s in at.success)
    assert len(at.expander) >= 6  # a "what am I looking at" per section
    assert len(at.latex) >= 5  # the formulas
    table = at.dataframe[0].value
    assert "log-det (nats)" in table.columns and "latent leaving" in table.columns
    # The per-op log-dets add up to the total shown on top.
    total = float(_metric(at, "Σ log-det of all operations").split()[0].replace(",", "").replace("+", ""))
    assert abs(table["log-det (nats)"].sum() - total) < 0.5
    assert table["latent leaving"].str.startswith("z").sum() == 2  # mnist-fast: 2 levels


def test_walk_page_image_op_and_backward_controls():
    at = AppTest.from_file(PAGE, default_timeout=180).run()
    assert_ok(at)
    before = image_urls(at)
    widget(at.slider, "walk_index").set_value(3).run()
    assert_ok(at)
    assert image_urls(at)[0] != before[0]
    # every kind of operation can be inspected
    formulas = set()
    pieces = ("logit", r"\to [4C", "H\\cdot W\\cdot\\sum_c", r"\log|\det W|", "e^{s(x_1)}",
              r"\log p(z_\ell\mid h)")
    n_ops = len(widget(at.selectbox, "walk_op").options)
    # logit, squeeze, ActNorm, 1×1 conv, coupling, ..., the split of level 1 (after K steps)
    for k in range(1, n_ops):
        widget(at.selectbox, "walk_op").set_value(k).run()
        assert_ok(at)
        formulas |= {el.value for el in at.latex}
        if all(any(piece in f for f in formulas) for piece in pieces):
            break
    for piece in pieces:
        assert any(piece in f for f in formulas), piece
    widget(at.radio, "walk_back_mode").set_value("fresh noise").run()
    assert_ok(at)
    grid = image_urls(at)
    widget(at.button, "walk_reseed").click().run()
    assert_ok(at)
    assert image_urls(at) != grid


def test_walk_page_faces_demo_and_a_later_coupling():
    at = AppTest.from_file(PAGE, default_timeout=180).run()
    faces = next(label for label in at.selectbox[0].options if "Faces" in label)
    at.selectbox[0].set_value(faces).run()
    assert_ok(at)
    pick = widget(at.selectbox, "walk_fresh_pick")
    pick.set_value(pick.options[-1]).run()  # the top level's last coupling
    assert_ok(at)
    assert float(_metric(at, "Fresh coupling: max |y − x|")) == 0.0
    table = at.dataframe[0].value
    assert table["latent leaving"].str.startswith("z").sum() == 3  # faces-fast: 3 levels


def test_walk_page_draw_by_hand_without_a_drawing_says_what_to_do():
    at = AppTest.from_file(PAGE, default_timeout=180).run()
    widget(at.radio, "walk_source").set_value("Draw by hand").run()
    assert_ok(at)
    assert any("Draw something" in i.value for i in at.info)


def test_walk_page_without_the_canvas_package_falls_back_to_slider_shapes(monkeypatch):
    from pages.common import canvas
    monkeypatch.setattr(canvas, "st_canvas", None)
    at = AppTest.from_file(PAGE, default_timeout=180).run()
    widget(at.radio, "walk_source").set_value("Draw by hand").run()
    assert_ok(at)
    assert any("pip install streamlit-drawable-canvas==0.13.0" in i.value for i in at.info)
    assert len(at.header) == 6  # the walk goes on with the slider-drawn shape
    assert float(_metric(at, "Invertibility error")) < 1e-4
