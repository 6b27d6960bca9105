"""Who a browser is, in a real browser: a first-party cookie, never the URL.

Two browser contexts are two browsers (each its own cookie jar). A's run is A's in a new tab
of A; the very link copied from A, even with an old ``?visitor=`` of A's in it, opens in B as
B: the link loses that parameter and B is not offered A's controls.
"""

from __future__ import annotations

import time

import pytest

from tests.browser.conftest import VIEWPORT
from tests.browser.test_browser_train import wait_for_app

pytestmark = pytest.mark.browser

COOKIE = "flowlab_visitor"


def visitor_cookie(context, timeout_s: float = 30.0) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = [c["value"] for c in context.cookies() if c["name"] == COOKIE]
        if found:
            return found[0]
        time.sleep(0.3)
    raise AssertionError(f"no {COOKIE} cookie after {timeout_s:.0f} s")


def finished_run(owner: str) -> int:
    from flowlib import preset
    from flowlib.config import TrainConfig
    from flowlib.store.request import RunRequest
    from flowlib.store.runs import RunStore
    store = RunStore()
    rid = store.create_run(RunRequest("a-run-of-A", preset("mnist-fast"), TrainConfig(max_steps=20, batch_size=16),
                                      owner=owner, preset="mnist-fast"))
    store.append_metrics(rid, [(step, 1000.0 + step, "train_bpd", 8.0 - step / 10) for step in (10, 20)])
    store.request_start(rid)
    store.finish_run(rid, "finished", "Finished 20 steps.", step=20)
    return rid


def delete_button(page):
    button = page.get_by_role("button", name="Delete…")
    button.wait_for(timeout=60_000)
    return button


def test_a_copied_link_opens_as_another_visitor_in_another_browser(streamlit_server, chromium, artifacts_dir):
    a = chromium.new_context(viewport=VIEWPORT)
    b = chromium.new_context(viewport=VIEWPORT)
    try:
        first = a.new_page()
        first.goto(streamlit_server.url)
        wait_for_app(first)
        vid_a = visitor_cookie(a)
        assert "visitor=" not in first.url
        rid = finished_run(owner=vid_a)

        link = f"{streamlit_server.url}/runs?compare={rid}&visitor={vid_a}"
        tab = a.new_page()                      # a new tab of A: the same visitor, by the cookie
        tab.goto(link)
        wait_for_app(tab)
        assert delete_button(tab).is_enabled()
        assert "visitor=" not in tab.url

        other = b.new_page()                    # the link, pasted into another browser
        other.goto(link)
        wait_for_app(other)
        assert delete_button(other).is_disabled()
        assert "Someone else started this run" in other.inner_text("[data-testid='stMain']")
        assert "visitor=" not in other.url
        assert visitor_cookie(b) != vid_a
        other.screenshot(path=str(artifacts_dir / "identity-other-browser.png"))
        # The cookie is written without Streamlit's deprecated components.v1.html frame, which
        # logs "components.v1.html … deprecated" on every page that uses it.
        assert "deprecated" not in streamlit_server.log_path.read_text(errors="replace").lower()
    finally:
        a.close()
        b.close()
