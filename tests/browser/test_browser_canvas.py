"""Draw by hand in real Chromium: streamlit-drawable-canvas strokes reach the model.

Mouse strokes on the 280×280 canvas of "What the likelihood knows" must come back as a
drawing the model scores; "Keep" adds it to the histograms' data sets; "Clear" empties it.
Screenshots (1600×1000) land in test-artifacts/.
"""

from __future__ import annotations

import importlib.util
import re
import time

import pytest

# Not imported here: outside a Streamlit runtime the package refuses to register its component.
pytestmark = [pytest.mark.browser,
              pytest.mark.skipif(importlib.util.find_spec("streamlit_drawable_canvas") is None,
                                 reason="streamlit-drawable-canvas is not installed")]


def wait_idle(page, settle: float = 1.0) -> None:
    """No 'running' indicator and no spinner, twice in a row."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        busy = page.locator("[data-testid='stStatusWidget'], [data-testid='stSpinner']").count()
        if not busy:
            time.sleep(settle)
            if not page.locator("[data-testid='stStatusWidget'], [data-testid='stSpinner']").count():
                return
        time.sleep(0.3)
    raise AssertionError("the page did not finish running")


def draw_a_seven(page) -> None:
    canvas = page.locator("canvas.upper-canvas").first
    canvas.scroll_into_view_if_needed()
    box = canvas.bounding_box()
    x0, y0 = box["x"], box["y"]
    page.mouse.move(x0 + 90, y0 + 60)
    page.mouse.down()
    for i in range(20):
        page.mouse.move(x0 + 90 + i * 5, y0 + 60)
    for i in range(30):
        page.mouse.move(x0 + 190 - i * 3, y0 + 60 + i * 6.5)
    page.mouse.up()


def test_draw_keep_and_clear_on_the_likelihood_page(streamlit_server, page, artifacts_dir):
    page.goto(streamlit_server.url + "/likelihood")
    page.get_by_text("2 · Score your own drawing").wait_for(timeout=120_000)
    wait_idle(page)
    assert page.get_by_text("Your drawing's bits/dim").count() == 0
    draw_a_seven(page)
    page.get_by_text("Your drawing's bits/dim").wait_for(timeout=60_000)
    wait_idle(page)
    main = page.inner_text("[data-testid='stMain']")
    bpd = float(re.search(r"Your drawing's bits/dim\s+([\d.]+)", main).group(1))
    assert 0.3 < bpd < 6.0, bpd  # a digit-like stroke: far better than noise (~9.7)
    err = float(re.search(r"max \|decode\(encode\(x\)\) − x\|\s+([\d.e+-]+)", main).group(1))
    assert err < 1e-4
    page.get_by_role("button", name="Keep this drawing").click()
    page.get_by_text("1 drawing(s) kept in this browser tab.").wait_for(timeout=60_000)
    wait_idle(page)
    page.screenshot(path=str(artifacts_dir / "canvas-likelihood-kept.png"))
    assert "your drawings" in page.inner_text("[data-testid='stMain']")
    page.get_by_role("button", name="Clear the drawing").click()
    wait_idle(page)
    page.get_by_text("Your drawing's bits/dim").wait_for(state="detached", timeout=60_000)
