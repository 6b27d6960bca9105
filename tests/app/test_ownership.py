"""AppTest for who may control a run, and the queue's words.

Each browser is a visitor (``ui.visitor_id``: a cookie, never the URL); here a test sets the
id in session state, as the cookie would. Outside classroom mode too, a visitor controls only
the runs it started (anyone may watch); runs from the terminal stay controllable except in
classroom mode; the teacher's key overrides. The store refuses what the page does not offer.
"""

from __future__ import annotations

import pytest
from streamlit.testing.v1 import AppTest

from flowlib.config import TrainConfig
from flowlib.store.request import RunRequest
from flowlib.store.rows import TERMINAL_OWNER
from tests.app.kit import APP


@pytest.fixture
def runs_dir(runs_dir):
    """tests/conftest.py's empty store; anything a page started is stopped afterwards."""
    yield runs_dir
    from tests.runs_kit import stop_training
    stop_training(runs_dir)


def store():
    from flowlib.store.runs import RunStore
    return RunStore()


def page(path: str, me: str | None = None, teacher_key: str | None = None, **query) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=60)
    for key, value in query.items():
        at.query_params[key] = value
    if me:
        at.session_state["visitor_id"] = me     # what the browser's cookie would give
    if teacher_key:
        at.session_state["teacher_key"] = teacher_key
    at.switch_page(path)
    at.run()
    assert not at.exception, at.exception
    return at


def new_run(name: str, owner: str | None, status: str = "created") -> int:
    from flowlib import preset
    return store().create_run(RunRequest(name, preset("mnist-fast"), TrainConfig(max_steps=20, batch_size=16),
                                         owner=owner, preset="mnist-fast"), status=status)


def finished_run(name: str, owner: str | None) -> int:
    s = store()
    rid = new_run(name, owner)
    s.append_metrics(rid, [(step, 1000.0 + step, "train_bpd", 8.0 - step / 10) for step in (10, 20)])
    s.request_start(rid)                       # as if a worker had trained it to the end
    s.finish_run(rid, "finished", "Finished 20 steps.", step=20)
    return rid


def keys(at: AppTest) -> set[str]:
    return {b.key for b in at.button}


def captions(at: AppTest) -> str:
    return " ".join(c.value for c in at.caption)


def infos(at: AppTest) -> str:
    return " ".join(i.value for i in at.info)


def test_a_visitor_in_an_old_link_is_dropped_and_never_adopted(runs_dir):
    rid = finished_run("linked", owner="linkowner1")
    at = page("pages/runs.py", compare=str(rid), me="somebody2", visitor="linkowner1")
    assert "visitor" not in at.query_params                    # dropped from the URL
    assert at.session_state["visitor_id"] == "somebody2"       # the browser's own id stays
    assert at.button(key=f"delete_{rid}").disabled

    fresh = page("pages/runs.py", compare=str(rid), visitor="linkowner1")
    assert "visitor" not in fresh.query_params
    assert fresh.session_state["visitor_id"] != "linkowner1"    # a new visitor, not the link's
    assert fresh.button(key=f"delete_{rid}").disabled
    assert fresh.button(key=f"do_rename_{rid}").disabled
    assert "Someone else started this run" in captions(fresh)


def test_outside_classroom_mode_only_the_starter_controls_a_run(runs_dir):
    rid = finished_run("alices", owner="alice1234")
    bob = page("pages/runs.py", me="bob12345", compare=str(rid))
    assert bob.button(key=f"delete_{rid}").disabled and bob.button(key=f"do_rename_{rid}").disabled
    bob_train = page("pages/train.py", me="bob12345", run=str(rid))
    assert f"more_{rid}" not in keys(bob_train)                # no "Train 1,000 more steps"
    assert "only they (or the teacher) can stop, resume" in captions(bob_train)
    with pytest.raises(PermissionError):                      # and the store refuses it
        store().delete_run(rid, owner="bob12345")

    alice = page("pages/runs.py", me="alice1234", compare=str(rid))
    assert not alice.button(key=f"delete_{rid}").disabled
    alice_train = page("pages/train.py", me="alice1234", run=str(rid))
    assert f"more_{rid}" in keys(alice_train)


def test_terminal_runs_are_controllable_outside_classroom_mode_and_the_teachers_inside(runs_dir, monkeypatch):
    rid = finished_run("from-the-shell", owner=TERMINAL_OWNER)
    at = page("pages/train.py", me="anyone12", run=str(rid))
    assert f"more_{rid}" in keys(at)                           # one person, their own machine
    assert not page("pages/runs.py", me="anyone12", compare=str(rid)).button(key=f"delete_{rid}").disabled

    monkeypatch.setenv("FLOWLAB_CLASSROOM", "1")
    monkeypatch.setenv("FLOWLAB_TEACHER_KEY", "chalk-and-talk")
    student = page("pages/train.py", me="anyone12", run=str(rid))
    assert f"more_{rid}" not in keys(student)
    assert "started from the terminal" in captions(student)
    assert page("pages/runs.py", me="anyone12", compare=str(rid)).button(key=f"delete_{rid}").disabled
    teacher = page("pages/train.py", me="anyone12", teacher_key="chalk-and-talk", run=str(rid))
    assert f"more_{rid}" in keys(teacher)


def test_the_teacher_stops_a_students_run_and_the_student_reads_who(runs_dir, monkeypatch):
    monkeypatch.setenv("FLOWLAB_TEACHER_KEY", "chalk-and-talk")   # outside classroom mode too
    rid = new_run("students", owner="student1")
    store().request_start(rid)                                   # queued: as if it were starting
    other = page("pages/train.py", me="classmate1", run=str(rid))
    assert f"stop_{rid}" not in keys(other)                      # B can watch, not stop
    assert f"stop_{rid}" not in keys(page("pages/runs.py", me="classmate1", compare=str(rid)))
    with pytest.raises(PermissionError):
        store().request_stop(rid, owner="classmate1")
    assert store().get_run(rid)["status"] == "queued"

    teacher = page("pages/train.py", me="teacher1", teacher_key="chalk-and-talk", run=str(rid))
    teacher.button(key=f"stop_{rid}").click().run()
    assert not teacher.exception, teacher.exception
    run = store().get_run(rid)
    assert run["status"] == "stopping" and run["stopped_by"] == "the teacher"

    student = page("pages/train.py", me="student1", run=str(rid))
    assert "asked by the teacher" in infos(student)
    store().finish_run(rid, "stopped", "Stopped at step 0.")
    student = page("pages/train.py", me="student1", run=str(rid))
    assert "Stop was asked by the teacher" in infos(student)
    assert f"resume_{rid}" in keys(student)                      # still theirs to resume


def test_a_waiting_run_says_its_place_in_the_queue(runs_dir, monkeypatch):
    monkeypatch.setenv("FLOWLAB_MAX_CONCURRENT", "1")
    training = new_run("first", owner="someone1")
    store().request_start(training)                              # holds the only slot
    ahead = new_run("second", owner="someone1", status="waiting")
    mine = new_run("third", owner="me123456", status="waiting")
    at = page("pages/train.py", me="me123456", run=str(mine))
    assert "2nd in the queue, 1 run training" in infos(at)
    assert "1st in the queue, 1 run training" in infos(page("pages/train.py", me="me123456",
                                                            run=str(ahead)))
    assert store().get_run(mine)["status"] == "waiting"          # nothing started meanwhile


def test_ordinals():
    from pages.common.ui import ordinal
    assert [ordinal(n) for n in (1, 2, 3, 4, 11, 12, 13, 21, 22, 23, 101, 111, 112)] == [
        "1st", "2nd", "3rd", "4th", "11th", "12th", "13th", "21st", "22nd", "23rd", "101st", "111th", "112th"]


def test_a_run_in_the_way_is_named_but_only_its_owner_is_offered_to_stop_it(runs_dir, monkeypatch):
    monkeypatch.setenv("FLOWLAB_MAX_CONCURRENT", "1")
    mine = new_run("mine", owner="me123456")
    store().request_start(mine)
    store().finish_run(mine, "stopped", "Stopped at step 0.")
    theirs = new_run("theirs", owner="someone1")
    store().request_start(theirs)                                # takes the only slot
    at = page("pages/train.py", me="me123456", run=str(mine))
    assert f"wait until run {theirs} finishes (it is someone else's to stop)" in infos(at)
    assert f"stop_other_{mine}_{theirs}" not in keys(at) and f"show_other_{mine}_{theirs}" in keys(at)
    assert f"resume_{mine}" in keys(at)                         # their own run stays theirs to resume
    them = page("pages/train.py", me="someone1", run=str(mine))
    assert f"resume_{mine}" not in keys(them)                   # and not the other visitor's
