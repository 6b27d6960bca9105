"""AppTest of the lecture's numbers: the dashboard's cards name what they show and agree with
each other, a running run's words use its own pace, and Home plays the recorded run."""

from __future__ import annotations

import os

import pytest
from streamlit.testing.v1 import AppTest

from flowlib import preset
from flowlib.config import TrainConfig
from flowlib.env import REPO_ROOT
from flowlib.store.request import RunRequest
from flowlib.store.runs import RunStore

APP = str(REPO_ROOT / "app.py")
SHIPPED = REPO_ROOT / "checkpoints" / "timeline-mnist" / "timeline.json"


def _page(page: str | None = None, **query) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=60)
    for key, value in query.items():
        at.query_params[key] = value
    if page:
        at.switch_page(page)
    at.run()
    assert not at.exception, at.exception
    return at


def _lecture_run(status: str = "finished") -> int:
    """The issue's 3-minute run as the store held it: 207 steps of 64 in 180 s of training,
    windows of steps alone at 228 images/s, a test point at step 50 and one at 150, the final
    full test set at the end."""
    s = RunStore()
    tc = TrainConfig(dataset="mnist", max_steps=None, max_minutes=3.0, batch_size=64, lr=0.01)
    rid = s.create_run(RunRequest("lecture", preset("mnist-fast"), tc, preset="mnist-fast"))
    rows = []
    for step in list(range(10, 201, 10)) + [207]:
        rows += [(step, 0.0, "train_bpd", 3.0 - step / 200), (step, 0.0, "images_per_s", 228.0),
                 (step, 0.0, "elapsed_s", 180.0 * step / 207), (step, 0.0, "lr", 0.005),
                 (step, 0.0, "loss_nats", 1500.0)]
    rows += [(50, 0.0, "test_bpd", 1.586), (150, 0.0, "test_bpd", 1.45)]
    s.request_start(rid)
    s.begin_run(rid, os.getpid())
    if status == "finished":
        rows.append((207, 0.0, "test_bpd_full", 1.3709))
    s.append_metrics(rid, rows)
    if status == "finished":
        s.finish_run(rid, "finished", "Finished 3 minutes (207 steps): 1.3709 bits/dim on the full test set "
                                      "(10,000 images).", 207)
    else:
        s.heartbeat(rid, 207)
    return rid


def _cards(at) -> dict:
    """{label: (value, the line under it)}"""
    return {m.label: (m.value, m.proto.delta) for m in at.metric}


@pytest.mark.slow
def test_finished_run_cards_show_the_final_test_and_the_whole_runs_images_per_second(runs_dir):
    rid = _lecture_run()
    at = _page("pages/train.py", run=str(rid))
    cards = _cards(at)
    assert cards["Test bits/dim"] == ("1.3709", "final")   # not the step-150 (or 50) point
    assert cards["Images/s"][0] == f"{207 * 64 / 180:,.0f}" == "74"           # steps × batch ÷ time, not 228
    assert cards["Learning rate"][1] == "peak 0.01"
    words = " ".join(c.value for c in at.caption)
    assert "best **1.4500** at step 150" in words and "final: **1.3709** on the whole test set" in words


def test_a_running_runs_cards_name_their_step_and_its_words_use_its_own_pace(runs_dir):
    rid = _lecture_run(status="running")
    at = _page("pages/train.py", run=str(rid))
    cards = _cards(at)
    assert cards["Test bits/dim"] == ("1.450", "at step 150")
    progress = at.get("progress")[0].proto.text
    # 180 s of a 3-minute budget: nothing left; the pace of the last 30 s is 74 images/s
    assert "about 0 s left" in progress and "207 steps by the end at the pace so far" in progress


@pytest.mark.skipif(not SHIPPED.is_file(), reason="no recorded timeline shipped")
def test_home_states_measured_promises_and_plays_the_recorded_run(runs_dir):
    at = _page()
    captions = " ".join(c.value for c in at.caption)
    assert "In the recorded run below: the first point" in captions and "after one minute" in captions
    slider = at.select_slider(key="home_tl_step")
    steps = [int(o.split()[-1].replace(",", "")) for o in slider.options]   # "step 1,250"
    assert len(steps) >= 15
    slider.set_value(steps[5]).run()
    text = " ".join(m.value for m in at.markdown)
    assert f"Step {steps[5]:,} ·" in text and "of training" in text
    at.button(key="home_tl_button").click().run()              # Play
    assert not at.exception and at.session_state["home_tl_playing"] is True
    assert at.button(key="home_tl_button").label == "Pause"
