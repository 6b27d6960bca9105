"""AppTest for studies on the Runs page: one click queues a paired study in the study storage, a
search starts from the page and shows its progress, best and importance as pictures, the answer
reads as one plain sentence with the detail behind it, an older study (made before the Optuna
engine) still opens, answers and is deleted as one unit, bad input names the setting."""

from __future__ import annotations

import json
import time

import pytest
from optuna.trial import TrialState
from streamlit.testing.v1 import AppTest

from flowlib.env import REPO_ROOT
from flowlib.store.request import RunRequest
from flowlib.store.studies import StudyStore
from flowlib.study import api, engine, work
from flowlib.study.spec import StudySpec, plan
from flowlib.study.storage import open_storage

APP = str(REPO_ROOT / "app.py")


@pytest.fixture
def runs_dir(runs_dir, monkeypatch):
    """tests/conftest.py's empty store, where studies queue but never train."""
    from flowlib.jobs import worker
    from flowlib.jobs.estimate import SpeedEstimator
    # queued, never trained here; the speed is "known" so no measuring process starts
    monkeypatch.setattr(worker, "start_waiting", lambda store, watch=True: [])
    monkeypatch.setattr(api, "spawn_workers", lambda *a, **k: [])       # trials wait; the test trains them
    monkeypatch.delenv("FLOWLAB_STUDY_STORAGE", raising=False)
    monkeypatch.setattr(SpeedEstimator, "estimate",
                        lambda self, request, store=None: {"images_per_s": 1000.0, "source": "history"})
    yield runs_dir


def store():
    from flowlib.store.runs import RunStore
    return RunStore()


def runs_page() -> AppTest:
    at = AppTest.from_file(APP, default_timeout=60)
    at.switch_page("pages/runs.py")
    return at


def text_of(at) -> str:
    return " ".join(m.value for m in at.markdown) + " ".join(c.value for c in at.caption)


def test_one_click_permutation_study_queues_paired_runs_with_an_estimate(runs_dir):
    at = runs_page()
    at.run()
    assert not at.exception, at.exception
    assert at.selectbox(key="study_kind").value == "permutation"
    at.number_input(key="study_steps").set_value(100).run()
    text = text_of(at)
    assert "3 arms × 3 seeds = 9 runs" in text and "baseline **shuffle**" in text
    assert "warm-up 10 steps" in text and "learning rate 0.01" in text
    assert "for all 9 runs on this device" in text            # the time estimate, before starting
    at.button(key="study_start").click().run()
    assert not at.exception, at.exception
    at.button(key="study_start").click().run()             # pressed twice: still one study
    (study,) = open_storage(api.storage_url_of(store())).get_all_studies()
    trials = engine.load(open_storage(api.storage_url_of(store())), study.study_name).get_trials()
    assert len(trials) == 9 and {t.state for t in trials} == {TrialState.WAITING}
    assert {t.system_attrs["fixed_params"]["arm"] for t in trials} == {"reverse", "shuffle", "conv1x1_lu"}
    described = study.user_attrs["flowlab_plan"]
    for arm in described["arms"]:                          # paired: only the permutation differs
        cfg = {k: v for k, v in arm["config"].items() if k != "permutation"}
        first = {k: v for k, v in described["arms"][0]["config"].items() if k != "permutation"}
        assert cfg == first and arm["train"] == described["arms"][0]["train"]
    assert study.study_name.startswith("permutation-study-")
    assert f"{study.study_name}" in text_of(at)
    assert store().list_runs() == []                       # no run until a worker takes a trial


def test_a_search_starts_from_the_page_and_shows_progress_best_and_importance(runs_dir, monkeypatch):
    from tests.study.fake_training import fake_train_run
    monkeypatch.setattr("flowlib.train.loop.train_run", fake_train_run)
    monkeypatch.setattr(work, "environment", lambda tc: {"machine": "test"})
    at = runs_page()
    at.run()
    at.selectbox(key="study_kind").set_value("search").run()
    at.number_input(key="study_steps").set_value(30).run()
    at.number_input(key="study_search_trials").set_value(5).run()
    at.number_input(key="study_seeds").set_value(2).run()
    assert not at.exception, at.exception
    assert "5 configurations × 2 seeds (up to 10 runs)" in text_of(at)
    at.button(key="study_start").click().run()
    assert not at.exception, at.exception
    assert work.work(None, store().root, log=lambda line: None, poll_s=0.05) == 0
    at.run()
    assert not at.exception, at.exception
    text = text_of(at)
    assert "Best of" in text and "chosen by validation bits/dim" in text
    charts = [json.loads(c.proto.spec) for c in at.get("plotly_chart")]
    titles = [c["layout"]["xaxis"]["title"]["text"] for c in charts]
    assert "trial (a configuration's first seed)" in titles                     # progress
    assert "importance for validation bits/dim (shares of 1)" in titles        # importance
    assert any(c.value.startswith("optuna-dashboard sqlite:///") for c in at.code)


def _study_with_results(seeds_bpd: dict[str, dict[int, float]]) -> int:
    s = store()
    p = plan(StudySpec.from_preset("coupling", seeds=3, steps=20), (1, 28, 28))
    planned = [(a.name, seed, RunRequest(f"{a.name}-{seed}", *a.run_configs(seed), preset="mnist-fast"))
               for seed in p.seeds for a in p.arms]
    sid = StudyStore(s).create("coupling-study", p.describe(), planned)
    for r in StudyStore(s).get(sid)["runs"]:
        s.request_start(r["id"])
        s.begin_run(r["id"], 1)
        bpd = seeds_bpd[r["arm"]][r["seed"]]
        now = time.time()
        s.append_metrics(r["id"], [(10, now, "test_bpd", bpd + 0.3), (10, now, "elapsed_s", 5.0),
                                   (10, now, "images_per_s", 900.0), (20, now, "elapsed_s", 10.0),
                                   (20, now, "test_bpd", bpd + 0.01), (20, now, "test_bpd_full", bpd)])
        s.finish_run(r["id"], "finished", "done", step=20)
    return sid


def test_the_answer_reads_as_a_verdict_with_intervals_and_exports(runs_dir):
    sid = _study_with_results({"additive": {0: 1.80, 1: 1.84, 2: 1.79}, "affine": {0: 1.70, 1: 1.75, 2: 1.69}})
    at = runs_page()
    at.run()
    assert not at.exception, at.exception
    text = text_of(at)
    assert "affine reached the lowest test bits/dim (1.7133)" in text          # one plain sentence first
    assert "affine beats additive by 0.0967 ±" in text and "over 3 seeds" in text
    assert "Same direction as the paper (which measured CIFAR-10" in text and "reproduced" not in text
    table = at.dataframe[1].value           # [0] the studies table, [1] the results
    assert list(table["arm"]) == ["additive (baseline)", "affine"]
    assert table["test bits/dim"][1] == "1.7133"                              # the verdict's number
    low, high = (float(v) for v in table["95 % interval"][1].split(" to "))
    assert low < float(table["test bits/dim"][1]) < high and table["seeds"][1] == "3 of 3"
    assert len(at.get("plotly_chart")) == 1
    assert any(b.proto.label == "Download the table (CSV)" for b in at.get("download_button"))
    # a study is deleted as one unit, after one confirmation
    at.button(key=f"study_delete_{sid}").click().run()
    assert StudyStore(store()).get(sid) is not None
    at.button(key=f"study_confirm_{sid}").click().run()
    assert not at.exception, at.exception
    assert StudyStore(store()).get(sid) is None and store().list_runs() == []


def test_no_difference_is_said_plainly(runs_dir):
    _study_with_results({"additive": {0: 1.80, 1: 1.70, 2: 1.75}, "affine": {0: 1.70, 1: 1.80, 2: 1.76}})
    at = runs_page()
    at.run()
    assert "No difference this study can resolve between affine and additive" in text_of(at)


def test_a_study_run_cannot_be_deleted_alone(runs_dir):
    sid = _study_with_results({"additive": {0: 1.8, 1: 1.8, 2: 1.8}, "affine": {0: 1.7, 1: 1.7, 2: 1.7}})
    rid = StudyStore(store()).get(sid)["runs"][0]["id"]
    at = AppTest.from_file(APP, default_timeout=60)
    at.query_params["compare"] = str(rid)
    at.switch_page("pages/runs.py")
    at.run()
    assert at.button(key=f"delete_{rid}").disabled


def test_bad_custom_study_names_the_setting_and_starts_nothing(runs_dir):
    at = runs_page()
    at.run()
    at.selectbox(key="study_kind").set_value("custom").run()
    at.selectbox(key="study_custom_name0").set_value("hidden").run()
    at.text_input(key="study_custom_vals0_hidden").set_value("32, -4").run()
    assert not at.exception, at.exception
    errors = " ".join(e.value for e in at.error)
    assert "(setting: hidden)" in errors
    assert not any(b.key == "study_start" for b in at.button)
    at.text_input(key="study_custom_vals0_hidden").set_value("").run()
    assert "the value list of hidden is empty" in " ".join(e.value for e in at.error)
    assert store().list_runs() == []
