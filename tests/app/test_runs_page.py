"""AppTest for the Runs page's table and single-run actions, and a run whose settings are damaged."""

from __future__ import annotations

from streamlit.testing.v1 import AppTest

from flowlib import preset
from flowlib.config import TrainConfig
from flowlib.env import REPO_ROOT
from flowlib.store.request import RunRequest

APP = str(REPO_ROOT / "app.py")


def store():
    from flowlib.store.runs import RunStore
    return RunStore()


def _run(name: str, status: str = "created") -> int:
    s = store()
    rid = s.create_run(RunRequest(name, preset("mnist-fast"), TrainConfig(max_steps=200, batch_size=16, first_eval=50)))
    if status in ("queued", "running"):
        s.request_start(rid)
        if status == "running":
            s.begin_run(rid, 999_999)
    return rid


def page(**query) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=60)
    for k, v in query.items():
        at.query_params[k] = v
    at.switch_page("pages/runs.py")
    return at


def test_table_says_statuses_in_words_and_dashes_for_missing_values(runs_dir):
    _run("never-started")
    at = page()
    at.run()
    assert not at.exception, at.exception
    df = at.dataframe[0].value
    assert list(df["status"]) == ["not started"]
    assert df["best test bits/dim"][0] == "–" and df["images/s"][0] == "–" and df["study"][0] == "–"


def test_ticked_run_without_points_says_when_they_come_and_can_be_stopped(runs_dir):
    rid = _run("training-now", status="running")
    at = page(compare=str(rid))
    at.run()
    assert not at.exception, at.exception
    assert "Nothing ticked yet." not in [c.value for c in at.caption]     # the URL's tick counts at once
    info = " ".join(i.value for i in at.info)
    assert "No held-out bits/dim (validation images; test images in older runs) points yet" in info and "step 50" in info
    at.button(key=f"stop_{rid}").click().run()
    assert not at.exception, at.exception
    assert store().get_run(rid)["status"] == "stopping"


def test_a_foreign_run_database_stops_the_page_with_one_sentence_and_is_not_touched(runs_dir):
    db = runs_dir / "runs.sqlite"
    db.write_bytes(b"not a database at all, " * 50)
    before = db.read_bytes()
    at = page()
    at.run()
    assert not at.exception, at.exception
    errors = " ".join(e.value for e in at.error)
    assert "The run store cannot be used" in errors and "not an SQLite database" in errors
    assert db.read_bytes() == before


def test_a_run_whose_stored_settings_are_damaged_reads_as_damaged_on_both_pages(runs_dir):
    rid = _run("broken")
    store().transaction(lambda c: c.execute("UPDATE runs SET config='{oops', train='[]' WHERE id=?", (rid,)))
    at = page()
    at.run()
    assert not at.exception, at.exception
    assert at.dataframe[0].value["settings"][0] == "damaged: unreadable"
    at.switch_page("pages/train.py")
    at.query_params["run"] = str(rid)
    at.run()
    assert not at.exception, at.exception
    shown = " ".join(e.value for e in at.error)
    assert f"Run {rid} 'broken' is damaged" in shown and "cannot be started, resumed or changed" in shown
    assert not [b for b in at.button if b.key == f"resume_{rid}"]
