"""The lecture in headless Chromium: Home's recorded run played, then "Train MNIST now" on a
minutes budget, with the live sample grid changing between evaluations and the finished
run's cards agreeing with each other. Screenshots at 1600×1000 and 1280×720 in test-artifacts/.
"""

from __future__ import annotations

import re
import time

import pytest

from tests.browser.test_browser_train import wait_for_app

pytestmark = pytest.mark.browser

VIEWPORTS = {"1600": {"width": 1600, "height": 1000}, "1280": {"width": 1280, "height": 720}}
GRID_STEP = re.compile(r"Step ([\d,]+) \(drawn")


def grid_step(page) -> int | None:
    m = GRID_STEP.search(page.inner_text("[data-testid='stMain']"))
    return int(m.group(1).replace(",", "")) if m else None


# Streamlit cuts a label that does not fit with an ellipsis (text-overflow) instead of wrapping it
CUT_TEXTS_JS = """() => Array.from(document.querySelectorAll("[data-testid='stMain'] *"))
    .filter(e => getComputedStyle(e).textOverflow === 'ellipsis' && e.scrollWidth > e.clientWidth + 1
                 && e.offsetParent !== null)
    .map(e => e.innerText.trim()).filter(t => t)"""


def cut_texts(page) -> list[str]:
    """The texts on the page's main area shown cut short with an ellipsis."""
    return page.evaluate(CUT_TEXTS_JS)


def test_home_replay_then_a_live_run_on_a_minutes_budget(streamlit_server, page, artifacts_dir):
    page.goto(streamlit_server.url)
    page.get_by_text("A recorded run, to replay").wait_for()
    wait_for_app(page)
    assert "In the recorded run below: the first point" in page.inner_text("body")
    for name, size in VIEWPORTS.items():
        page.set_viewport_size(size)
        page.get_by_text("A recorded run, to replay").scroll_into_view_if_needed()
        time.sleep(1.0)
        page.screenshot(path=str(artifacts_dir / f"lecture-home-replay-{name}.png"))
    page.set_viewport_size(VIEWPORTS["1600"])
    page.get_by_role("button", name="Play").click()
    time.sleep(4.0)                                   # a few frames at ~0.7 s each
    shown = page.inner_text("[data-testid='stMain']")
    assert re.search(r"Step [\d,]+ · (\d+ min )?\d+ s of training", shown), shown[-600:]
    page.screenshot(path=str(artifacts_dir / "lecture-home-playing-1600.png"))

    page.get_by_role("button", name="Train MNIST now").click()
    page.get_by_text("Set up a new run").wait_for()
    page.get_by_text("60,000").first.wait_for(timeout=60_000)
    page.get_by_text("minutes", exact=True).click()   # the budget switch
    wait_for_app(page)
    from playwright.sync_api import TimeoutError as PlaywrightTimeout  # the fixture has it, or skipped

    box = page.get_by_label("Minutes of training", exact=True)
    estimate = page.get_by_text(re.compile(r"about [\d,]+ steps in 0\.5 minutes")).first
    for attempt in range(3):
        # A value typed while the page is still rerunning (the first visit's warm-up and cookie
        # script) can be overwritten by that rerun, as in any Streamlit page: type it again then.
        box.fill("0.5")
        box.press("Enter")
        wait_for_app(page)
        try:
            estimate.wait_for(timeout=40_000)
            break
        except PlaywrightTimeout:
            if attempt == 2:
                raise
            print(f"the budget box read {box.input_value()!r} after typing 0.5; typing it again")
    page.screenshot(path=str(artifacts_dir / "lecture-train-estimate-1600.png"))

    t0 = time.monotonic()
    page.get_by_role("button", name="Start").click()
    seen = set()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        step = grid_step(page)
        if step is not None:
            seen.add(step)
        text = page.inner_text("[data-testid='stMain']")
        if "on the whole test set" in text:
            break
        if len(seen) == 2:
            page.screenshot(path=str(artifacts_dir / "lecture-train-live-1600.png"))
        time.sleep(1.0)
    print(f"finished {time.monotonic() - t0:.1f} s after Start; live grids seen at steps {sorted(seen)}")
    # grids between evaluations (first at 50, then every 250 or 1/8 of the half minute)
    assert len(seen) >= 2, seen
    text = page.inner_text("[data-testid='stMain']")
    assert "on the whole test set" in text
    assert page.locator("[data-testid='stMetricDelta']", has_text="final").count() == 1
    for name, size in VIEWPORTS.items():
        page.set_viewport_size(size)
        time.sleep(2.0)
        page.screenshot(path=str(artifacts_dir / f"lecture-train-finished-{name}.png"))
        # "Train 5 more minutes", "Compare in Runs" and the cards' labels read whole at both sizes
        assert cut_texts(page) == [], (name, cut_texts(page))


# The busy line is style.py's ::after on the app root while its script runs; it fades in after
# 1 s, so a quick rerun never flashes it.
BUSY_LINE_JS = """() => {
    const app = document.querySelector("[data-testid='stApp']");
    if (!app) return null;
    const after = getComputedStyle(app, '::after');
    return {state: app.dataset.testScriptState, content: after.content, opacity: parseFloat(after.opacity)};
}"""


def test_a_rerun_longer_than_a_second_shows_the_busy_line(streamlit_server, page, artifacts_dir):
    # The likelihood page loads two demo models and scores test images on its first visit: several
    # seconds of script on this machine
    page.goto(f"{streamlit_server.url}/likelihood")
    deadline, seen = time.monotonic() + 90, None
    while time.monotonic() < deadline and seen is None:
        state = page.evaluate(BUSY_LINE_JS)
        if state and "Working" in state["content"] and state["opacity"] > 0.95:
            seen = state
            page.screenshot(path=str(artifacts_dir / "busy-line-1600.png"))
        time.sleep(0.2)
    assert seen is not None and seen["state"] == "running", "no busy line while the page's first run was working"
    wait_for_app(page)
    idle = page.evaluate(BUSY_LINE_JS)
    assert idle["state"] == "notRunning" and idle["content"] in ("none", "normal"), idle   # gone once idle
