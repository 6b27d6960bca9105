"""AppTest: the dashboard's faint 'expected' curve and the Runs overlay's published numbers."""

from __future__ import annotations

import json
import os

from streamlit.testing.v1 import AppTest

from flowlib import preset
from flowlib.config import TrainConfig
from flowlib.env import REPO_ROOT
from flowlib.store.request import RunRequest

APP = str(REPO_ROOT / "app.py")
TC = TrainConfig(dataset="mnist", max_steps=200, batch_size=16, first_eval=50, eval_every=50)


def _finished_run(name: str, values=(1.9, 1.6, 1.5, 1.45)) -> int:
    from flowlib.store.runs import RunStore
    store = RunStore()
    rid = store.create_run(RunRequest(name, preset("mnist-fast"), TC, preset="mnist-fast"))
    store.request_start(rid)
    store.begin_run(rid, os.getpid())
    store.append_metrics(rid, [(50 * (k + 1), 0.0, "test_bpd", v) for k, v in enumerate(values)]
                         + [(s, 0.0, "elapsed_s", s / 10) for s in range(10, 201, 10)])
    store.finish_run(rid, "finished", "done", 200)
    return rid


def _charts(at):
    return [json.loads(el.proto.spec) for el in at.get("plotly_chart")]


def test_the_dashboard_draws_an_earlier_run_of_the_same_settings_as_the_expected_curve(runs_dir):
    earlier = _finished_run("earlier")
    shown = _finished_run("shown", values=(2.0, 1.7, 1.55, 1.5))
    at = AppTest.from_file(APP, default_timeout=60)
    at.query_params["run"] = str(shown)
    at.switch_page("pages/train.py").run()
    assert not at.exception, at.exception
    traces = [t for c in _charts(at) for t in c["data"] if t.get("name", "").startswith("expected")]
    assert traces and f"earlier run {earlier} 'earlier'" in traces[0]["name"]
    assert traces[0]["y"] == [1.9, 1.6, 1.5, 1.45] and traces[0]["x"] == [50, 100, 150, 200]


def test_the_runs_overlay_shows_the_published_numbers_as_labelled_lines(runs_dir):
    rid = _finished_run("mine")
    at = AppTest.from_file(APP, default_timeout=60)
    at.query_params["compare"] = str(rid)
    at.switch_page("pages/runs.py").run()
    at.run()
    assert not at.exception, at.exception
    box = next(c for c in at.checkbox if c.key == "overlay_published")
    assert box.value and "Glow 1.05, RealNVP 1.06" in box.label
    overlay = next(c for c in _charts(at) if any(t.get("name", "").endswith("mine") for t in c["data"]))
    lines = {round(s["y0"], 2) for s in overlay["layout"].get("shapes", [])}
    texts = " ".join(a["text"] for a in overlay["layout"].get("annotations", []))
    assert {1.05, 1.06} <= lines and "Glow (published): 1.05" in texts and "RealNVP (published): 1.06" in texts
    box.uncheck().run()
    overlay = next(c for c in _charts(at) if any(t.get("name", "").endswith("mine") for t in c["data"]))
    assert not overlay["layout"].get("shapes")
