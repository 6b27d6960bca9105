"""The real app in headless Chromium: home → Train → Start on MNIST → live curve → Runs.

Screenshots (1600×1000, a projector's 16:10) land in test-artifacts/.
"""

from __future__ import annotations

import re
import time

import pytest

pytestmark = pytest.mark.browser

# 'Step 63 of 2,000 · 2.810 bits/dim at step 60 (test 2.950 at step 50) · …': each number
# says which logged step it belongs to.
LIVE = re.compile(r"Step (\d[\d,]*)(?: of [\d,]+)? · ([\d.]+) bits/dim at step [\d,]+ \(test ([\d.]+)")


def wait_for_app(page) -> None:
    """Streamlit has finished the current script run (no 'running' indicator)."""
    page.wait_for_selector("[data-testid='stApp']")
    # Streamlit marks its root with the script's state. Its "Running…" status widget never showed
    # in Chromium with this app's config (a 20 s page load watched), so waiting for it never waited.
    page.wait_for_function(
        "() => document.querySelector('[data-testid=\"stApp\"]').dataset.testScriptState !== 'running'",
        timeout=60_000)


def set_number(page, label: str, value) -> None:
    box = page.get_by_label(label, exact=True)
    box.fill(str(value))
    box.press("Enter")
    wait_for_app(page)


def live_numbers(page, timeout_s: float = 120.0):
    """Wait for the progress line 'Step N of M · X bits/dim (test Y) · …'; returns (step, train, test)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        text = page.inner_text("body")
        m = LIVE.search(text)
        if m:
            return int(m.group(1).replace(",", "")), float(m.group(2)), float(m.group(3))
        if "This run failed" in text:
            raise AssertionError("the run failed: " + text[text.index("This run failed"):][:400])
        time.sleep(1.0)
    raise AssertionError("no live bits/dim line within the time limit")


def tall_screenshot(page, path, height: int = 2400) -> None:
    """The whole page: Streamlit scrolls inside its own container, so grow the viewport."""
    size = page.viewport_size
    page.set_viewport_size({"width": size["width"], "height": height})
    time.sleep(2.5)
    page.screenshot(path=str(path))
    page.set_viewport_size(size)


def step_now(page) -> int:
    m = re.search(r"Step (\d[\d,]*)", page.inner_text("[data-testid='stMain']"))
    return int(m.group(1).replace(",", "")) if m else -1


def plotted_points(page, trace_name: str) -> int:
    """Points of the named trace in any plotly chart on the page (read from the plotly DOM)."""
    return page.evaluate(
        """(name) => Array.from(document.querySelectorAll('.js-plotly-plot'))
             .flatMap(gd => (gd.data || []).filter(t => t.name === name))
             .reduce((n, t) => n + (t.y || []).filter(v => v !== null).length, 0)""", trace_name)


def test_home_to_live_curve_to_runs(streamlit_server, page, artifacts_dir):
    t0 = time.monotonic()
    page.goto(streamlit_server.url)
    page.get_by_text("Quickest paths").wait_for()
    wait_for_app(page)
    page.screenshot(path=str(artifacts_dir / "01-home.png"))

    page.get_by_role("button", name="Train MNIST now").click()
    page.get_by_text("Set up a new run").wait_for()
    page.get_by_text("60,000").first.wait_for(timeout=60_000)       # dataset count and shape
    page.get_by_text("parameters").first.wait_for(timeout=60_000)   # count + measured estimate
    set_number(page, "Training steps", 400)
    set_number(page, "Evaluate every (steps)", 50)
    page.get_by_text("of training time here").first.wait_for(timeout=60_000)   # the measured pace
    tall_screenshot(page, artifacts_dir / "02-train-setup.png")

    page.get_by_role("button", name="Start").click()
    step, train_bpd, test_bpd = live_numbers(page)
    assert 0 < train_bpd < 9 and 0 < test_bpd < 9
    page.wait_for_function(
        """() => Array.from(document.querySelectorAll('.js-plotly-plot'))
             .some(gd => (gd.data || []).some(t => t.name === 'test (held-out images)'
                                                 && (t.y || []).length >= 2))""", timeout=120_000)
    assert plotted_points(page, "train (batches)") >= 2
    page.get_by_text("Rows: temperature 0").first.wait_for(timeout=60_000)  # the sample grid
    time.sleep(2.5)  # one more fragment refresh so the newest grid is on screen
    page.screenshot(path=str(artifacts_dir / "03-train-live.png"))
    tall_screenshot(page, artifacts_dir / "04-train-live-full.png")
    print(f"live curve {time.monotonic() - t0:.1f} s after opening the app (step {step})")

    page.goto(streamlit_server.url + "/runs?compare=1")
    page.get_by_text("Tick several to overlay").wait_for(timeout=60_000)
    page.wait_for_selector(".js-plotly-plot", timeout=60_000)
    wait_for_app(page)
    tall_screenshot(page, artifacts_dir / "05-runs.png", height=1800)


def test_run_survives_a_server_restart_and_stop_works(server_factory, artifacts_dir, page):
    first = server_factory("first")
    first.start()
    try:
        page.goto(first.url + "/train?dataset=mnist&preset=mnist-fast")
        page.get_by_text("parameters").first.wait_for(timeout=60_000)
        set_number(page, "Training steps", 100000)
        page.get_by_role("button", name="Start").click()
        live_numbers(page)
    finally:
        first.stop()   # the server dies; the training process lives in its own session

    second = server_factory("second")
    second.start()
    try:
        page.goto(second.url + "/train")   # a bookmarked page on a fresh server
        page.get_by_role("button", name="Stop").wait_for(timeout=60_000)
        live_numbers(page)
        assert "training" in page.inner_text("[data-testid='stMain']")
        sidebar = page.inner_text("[data-testid='stSidebar']")
        assert "Masks & squeeze" in sidebar and "explore common" not in sidebar  # via the router
        step_a = step_now(page)
        time.sleep(6)
        step_b = step_now(page)
        assert step_b > step_a, "the run should keep training after the server restarted"
        page.screenshot(path=str(artifacts_dir / "06-after-restart.png"))
        page.get_by_role("button", name="Stop").click()
        page.get_by_text("stopped (can be resumed)").first.wait_for(timeout=60_000)
        page.get_by_role("button", name="Resume").wait_for()
    finally:
        second.stop()
