"""AppTest for the app shell, Home, Train and Runs.

``run_every`` timers never fire inside AppTest: the tests poll the store themselves and call
``at.run()``. Plotly charts come back as UnknownElement; their data is ``json.loads(el.proto.spec)``.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from flowlib.config import PRESET_LR
from flowlib.env import REPO_ROOT
from flowlib.store.request import RunRequest

APP = str(REPO_ROOT / "app.py")


@pytest.fixture
def runs_dir(runs_dir):
    """tests/conftest.py's empty store; runs the page started are stopped afterwards."""
    yield runs_dir
    from tests.runs_kit import stop_training
    stop_training(runs_dir)


def app(page: str | None = None, **query) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=60)
    for key, value in query.items():
        at.query_params[key] = value
    if page:
        at.switch_page(page)
    return at


def test_home_explains_and_offers_quick_paths(runs_dir):
    at = app()
    at.run()
    assert not at.exception
    text = " ".join(m.value for m in at.markdown)
    assert "normalizing flow" in text and "bits per dimension" in text
    labels = [b.label for b in at.button]
    assert "Train MNIST now" in labels and "Explore a trained model" in labels
    assert "Device" in text
    # who this browser is lives in a cookie and the session, never in the URL (a shared link
    # would hand it over)
    assert at.session_state["visitor_id"] and "visitor" not in at.query_params


# -- helpers ---------------------------------------------------------------------------------
def store():
    from flowlib.store.runs import RunStore
    return RunStore()


def wait_status(run_id: int, statuses, timeout: float = 240.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        run = store().get_run(run_id)
        if run and run["status"] in statuses:
            return run
        if time.monotonic() > deadline:
            raise AssertionError(f"run {run_id} is {run and run['status']} after {timeout} s: "
                                 f"{run and run['message']}")
        time.sleep(0.5)


def charts(at) -> dict:
    """Plotly charts on screen by their key's stem: {'bpd_chart': spec, ...}."""
    out = {}
    for el in at.get("plotly_chart"):
        spec = json.loads(el.proto.spec)
        out[el.proto.id or str(len(out))] = spec
    return out


def chart_points(at, name: str) -> int:
    """Points in the traces called `name` of every plotly chart on screen."""
    n = 0
    for el in at.get("plotly_chart"):
        for trace in json.loads(el.proto.spec)["data"]:
            if trace.get("name") == name:
                n += len([y for y in trace.get("y", []) if y is not None])
    return n


def tiny_settings(at, steps: int = 20, eval_every: int = 10) -> None:
    at.number_input(key="tr_hidden").set_value(8)
    at.number_input(key="tr_steps").set_value(1)
    at.number_input(key="tr_batch_size").set_value(16)
    at.number_input(key="tr_warmup_steps").set_value(5)
    at.number_input(key="tr_eval_every").set_value(eval_every)
    at.number_input(key="tr_max_steps").set_value(steps)
    at.run()


def train_page(**query) -> AppTest:
    at = app("pages/train.py", **query)
    at.run()
    assert not at.exception, at.exception
    return at


# -- Train -------------------------------------------------------------------------------------
@pytest.mark.slow
def test_train_page_shows_data_parameters_and_estimate(runs_dir):
    at = train_page(dataset="mnist", preset="mnist-fast")
    text = " ".join(m.value for m in at.markdown)
    assert "60,000" in text and "1×28×28" in text          # count and shape of the dataset
    assert "parameters" in text                             # arithmetic: there at once
    # The speed is measured in a separate process while the page stays usable; run_every
    # timers never fire in AppTest, so rerun until it is in.
    deadline = time.monotonic() + 120
    while "images/s" not in text:
        assert "separate process" in text and time.monotonic() < deadline, text
        time.sleep(0.5)
        at.run()
        text = " ".join(m.value for m in at.markdown)
    assert at.selectbox(key="tr_dataset").value == "mnist"
    assert at.selectbox(key="tr_preset").value == "mnist-fast"
    assert not at.button(key="tr_start").disabled
    # the small preset brings its measured learning rate; the cosine schedule is the default
    assert at.number_input(key="tr_lr").value == PRESET_LR["mnist-fast"] > 1e-3
    assert at.selectbox(key="tr_lr_schedule").value == "cosine"
    assert at.selectbox(key="tr_dequantization").value == "variational"   # the preset's learned noise
    at.selectbox(key="tr_preset").set_value("realnvp").run()
    assert not at.exception, at.exception
    assert at.number_input(key="tr_lr").value == 1e-3
    assert at.selectbox(key="tr_dequantization").value == "uniform"


@pytest.mark.slow
def test_the_form_comes_back_as_it_was_left_after_visiting_another_page(runs_dir):
    at = train_page(dataset="mnist", preset="mnist-fast")
    at.number_input(key="tr_hidden").set_value(96).run()
    at.number_input(key="tr_batch_size").set_value(32).run()
    at.selectbox(key="tr_lr_schedule").set_value("constant").run()
    at.switch_page("pages/runs.py").run()
    at.switch_page("pages/train.py").run()
    assert not at.exception, at.exception
    assert at.number_input(key="tr_hidden").value == 96      # was 0 before the form kept a copy
    assert at.number_input(key="tr_batch_size").value == 32
    assert at.number_input(key="tr_levels").value == 2
    assert at.number_input(key="tr_lr").value == PRESET_LR["mnist-fast"]
    assert at.selectbox(key="tr_lr_schedule").value == "constant"
    assert not at.error and not at.button(key="tr_start").disabled


@pytest.mark.slow
def test_bad_input_is_refused_next_to_the_field(runs_dir):
    at = train_page()
    at.number_input(key="tr_batch_size").set_value(0)
    at.number_input(key="tr_lr").set_value(-0.001)
    at.number_input(key="tr_levels").set_value(3)        # 28×28 allows at most 2
    at.run()
    assert not at.exception
    errors = " | ".join(e.value for e in at.error)
    assert "Batch_size must be an integer in 1..4096, got 0" in errors
    assert "Lr must be a finite number with 0 < value ≤ 1" in errors
    assert "levels=3 needs height and width divisible by 2**levels = 8" in errors.lower() \
        or "Levels=3 needs" in errors
    assert "use levels ≤ 2" in errors
    assert at.button(key="tr_start").disabled
    assert store().list_runs() == []


@pytest.mark.slow
def test_start_tiny_run_reaches_finished_with_points_in_the_chart(runs_dir):
    at = train_page(dataset="mnist", preset="mnist-fast")
    tiny_settings(at, steps=20, eval_every=10)
    at.button(key="tr_start").click().run()
    assert not at.exception, at.exception
    runs = store().list_runs()
    assert len(runs) == 1 and runs[0]["status"] in ("queued", "running", "finished")
    run = wait_status(runs[0]["id"], ("finished", "failed"))
    assert run["status"] == "finished", run["message"]
    at.run()
    assert not at.exception, at.exception
    assert chart_points(at, "train (batches)") >= 2
    assert chart_points(at, "test (held-out images)") >= 2
    # The run's header ends with the arithmetic its trainer used: the form asks for bf16
    # networks exactly where this CPU does bf16 natively, and the trainer agrees.
    from flowlib.machine.device import bf16_is_fast
    precision = "bf16 coupling networks" if bf16_is_fast("cpu") else "float32"
    assert any(c.value.startswith("mnist · preset mnist-fast") and c.value.endswith(f"· {precision}")
               for c in at.caption), [c.value for c in at.caption]
    assert any("finished" in b.proto.label.lower() for b in at.get("badge")) or \
        any("Finished" in s.value for s in at.success)
    # the Runs page lists it with its best test bits/dim
    runs_at = app("pages/runs.py")
    runs_at.run()
    assert not runs_at.exception, runs_at.exception
    table = runs_at.dataframe[0].value
    assert list(table["id"]) == [run["id"]]
    assert table["status"].iloc[0] == "finished"
    assert float(table["best test bits/dim"].iloc[0]) < 8.5


@pytest.mark.slow
def test_start_pressed_twice_with_two_free_slots_starts_one_run(runs_dir, monkeypatch):
    # A probe: a double click on Start with 2 free slots made two identical runs, both training.
    # Both clicks reach the server before the page can rerun; here, two sessions of one browser
    # (one visitor) press Start on the same settings.
    monkeypatch.setenv("FLOWLAB_MAX_CONCURRENT", "2")
    pages = []
    for _ in range(2):
        at = app("pages/train.py")
        at.session_state["visitor_id"] = "a1b2c3d4e5f6"
        at.run()
        tiny_settings(at, steps=100000, eval_every=1000)
        pages.append(at)
    for at in pages:
        at.button(key="tr_start").click().run()
        assert not at.exception, at.exception
    runs = store().list_runs()
    assert len(runs) == 1, [(r["id"], r["status"]) for r in runs]


@pytest.mark.slow
def test_stop_and_resume(runs_dir):
    at = train_page()
    tiny_settings(at, steps=100000, eval_every=1000)
    at.button(key="tr_start").click().run()
    run_id = store().list_runs()[0]["id"]
    wait_status(run_id, ("running",))
    at.run()
    # The sidebar names the training run everywhere, but its step only away from the Train
    # page, whose dashboard shows a fresher one (two different steps side by side confused).
    # Fresh sessions: AppTest keeps a sidebar only in a session's first run.
    for page, steps in (("pages/train.py", False), ("pages/home.py", True)):
        other = app(page)
        other.run()
        training = [m.value for m in other.sidebar.markdown if m.value.startswith("**Training**")]
        assert training and all((", step " in t) == steps for t in training), (page, training)
    at.button(key=f"stop_{run_id}").click().run()
    assert not at.exception, at.exception
    run = wait_status(run_id, ("stopped",), timeout=120)
    assert "Stopped at step" in run["message"]
    at.run()
    assert not at.exception
    assert at.button(key=f"resume_{run_id}")  # the buttons follow the store
    at.button(key=f"resume_{run_id}").click().run()
    wait_status(run_id, ("running",))
    from flowlib.jobs import worker
    worker.stop_run(store(), run_id)
    wait_status(run_id, ("stopped",), timeout=120)


@pytest.mark.slow
def test_picking_faces_proposes_augmentation_and_mnist_takes_it_back(runs_dir):
    at = train_page(dataset="mnist", preset="mnist-fast")
    augment = lambda: next(w for w in at.get("selectbox") + at.get("radio") if w.key == "tr_augment")  # noqa: E731
    assert augment().value == "none"
    at.selectbox(key="tr_dataset").set_value("faces").run()
    assert not at.exception, at.exception
    assert augment().value == "flip-shift"                   # 360 photos: mirrored and shifted copies
    at.selectbox(key="tr_dataset").set_value("mnist").run()
    assert augment().value == "none"                         # digits must not be mirrored
    assert train_page(dataset="faces", preset="faces-fast").session_state["tr_augment"] == "flip-shift"


@pytest.mark.slow
def test_a_failed_run_says_why_on_its_dashboard(runs_dir, tmp_path):
    from flowlib import preset
    from flowlib.config import TrainConfig
    from flowlib.jobs import worker
    s = store()
    missing = tmp_path / "no-such-folder"
    tc = TrainConfig(dataset="folder", dataset_options={"path": str(missing), "size": 32},
                     max_steps=10)
    run_id = s.create_run(RunRequest("broken", preset("faces-fast"), tc))
    worker.start_run(s, run_id)
    run = wait_status(run_id, ("failed",), timeout=120)
    at = train_page(run=str(run_id))
    shown = " ".join(e.value for e in at.error)
    assert "This run failed" in shown and run["message"] in shown
    assert "Traceback" not in shown


@pytest.mark.slow
def test_a_run_that_ran_out_of_memory_offers_to_resume_with_the_batch_that_fits(runs_dir):
    import os

    from flowlib import preset
    from flowlib.config import TrainConfig
    s = store()
    run_id = s.create_run(RunRequest("big batch", preset("mnist-fast"), TrainConfig(max_steps=100, batch_size=64)))
    s.request_start(run_id)
    s.begin_run(run_id, os.getpid())
    s.append_metrics(run_id, [(3, 1000.0, "oom_fitting_batch", 16.0)])
    s.finish_run(run_id, "failed", "Out of memory at step 4 with batch size 64. A step with batch size 16 "
                                   "fits on this GPU (tried just after the failure): resume with batch "
                                   "size 16, or start a new run with it.", 3)
    at = train_page(run=str(run_id))
    assert not at.exception, at.exception
    assert at.button(key=f"resume_{run_id}").label == "Resume with batch 16"
    assert "batch size 16 fits" in " ".join(e.value for e in at.error)


# -- Runs ------------------------------------------------------------------------------------
def _finished_run(name: str, owner: str | None = None, permutation: str = "conv1x1_lu") -> int:
    """A run in the store with a few metric rows, as a finished worker would leave it."""
    from flowlib import preset
    from flowlib.config import TrainConfig
    s = store()
    rid = s.create_run(RunRequest(name, preset("mnist-fast", permutation=permutation),
                                  TrainConfig(max_steps=20, batch_size=16), owner=owner, preset="mnist-fast"))
    s.append_metrics(rid, [(step, 1000.0 + step, key, 8.0 - step / 10 - rid / 100)
                           for step in (10, 20) for key in ("train_bpd", "test_bpd")]
                     + [(step, 1000.0 + step, "elapsed_s", step / 2) for step in (10, 20)])
    s.request_start(rid)                       # as if a worker had trained it to the end
    s.finish_run(rid, "finished", "Finished 20 steps.", step=20)
    return rid


@pytest.mark.slow
@pytest.mark.parametrize("learned_noise", [False, True])
def test_bits_split_chart_keeps_the_quantisation_line_and_adds_log_q_only_for_learned_noise(runs_dir, learned_noise):
    rid = _finished_run("split")
    keys = ["bpd_prior_L0", "bpd_prior_L1", "bpd_logdet"] + (["bpd_dequant"] if learned_noise else [])
    store().append_metrics(rid, [(step, 1000.0 + step, key, 0.5) for step in (10, 20) for key in keys])
    at = train_page(run=str(rid))
    assert not at.exception, at.exception
    assert chart_points(at, "quantisation (+8)") == 2       # the +8 line, whatever the noise
    assert chart_points(at, "dequantisation noise log q") == (2 if learned_noise else 0)


def test_runs_page_overlays_selected_runs_and_highlights_differences(runs_dir):
    a = _finished_run("a-reverse", permutation="reverse")
    b = _finished_run("b-shuffle", permutation="shuffle")
    at = app("pages/runs.py", compare=f"{a},{b}")
    at.run()
    assert not at.exception, at.exception
    assert set(at.dataframe[0].value["id"]) == {a, b}
    assert chart_points(at, f"{a} · a-reverse") == 2 and chart_points(at, f"{b} · b-shuffle") == 2
    text = " ".join(m.value for m in at.markdown)
    assert "Differing settings are highlighted: **permutation**" in text
    at.button(key="study_start")  # the one-click study is offered (tests/app/test_studies_page.py)


def test_rename_and_delete_with_confirmation(runs_dir):
    rid = _finished_run("old-name")
    at = app("pages/runs.py", compare=str(rid))
    at.run()
    at.text_input(key=f"rename_{rid}").set_value("new-name")
    at.button(key=f"do_rename_{rid}").click().run()
    assert store().get_run(rid)["name"] == "new-name"
    at.button(key=f"delete_{rid}").click().run()
    assert store().get_run(rid) is not None          # nothing deleted before the confirmation
    at.button(key=f"confirm_delete_{rid}").click().run()
    assert not at.exception, at.exception
    assert store().get_run(rid) is None


def test_folder_resize_offers_only_sides_the_models_levels_can_halve(runs_dir):
    # A probe: "Resize to" offered 28, which a model of 3 levels then refused.
    at = train_page()
    at.selectbox(key="tr_dataset").set_value("folder").run()
    assert not at.exception, at.exception

    def sides():
        return [int(option.split("×")[0]) for option in at.selectbox(key="tr_size").options]

    levels = at.number_input(key="tr_levels").value
    assert sides() and all(side % 2 ** levels == 0 for side in sides()), (levels, sides())
    at.number_input(key="tr_levels").set_value(3).run()
    at.run()  # the sizes follow the levels of the last run of the form
    assert sides() == [16, 24, 32, 48, 64, 96, 128] and 28 not in sides()
    at.selectbox(key="tr_size").set_value(24).run()
    at.number_input(key="tr_levels").set_value(4).run()
    at.run()
    assert sides() == [16, 32, 48, 64, 96, 128]
    assert at.selectbox(key="tr_size").value == 16  # 24 no longer works: the first that does


# -- classroom mode --------------------------------------------------------------------------
@pytest.mark.slow
def test_classroom_mode_caps_and_ownership(runs_dir, monkeypatch):
    monkeypatch.setenv("FLOWLAB_CLASSROOM", "1")
    monkeypatch.setenv("FLOWLAB_MAX_BATCH", "32")
    at = train_page()
    assert at.selectbox(key="tr_dataset").options == ["MNIST digits", "ORL faces (grayscale)",
                                                       "Your pictures"]
    at.selectbox(key="tr_dataset").set_value("folder").run()
    assert "tr_path" not in [t.key for t in at.text_input]      # no server paths
    at.selectbox(key="tr_dataset").set_value("mnist").run()
    at.number_input(key="tr_batch_size").set_value(64).run()
    assert any("above this server's limit of 32" in e.value for e in at.error)
    assert at.button(key="tr_start").disabled

    theirs = _finished_run("someone-elses", owner="othervisitor")
    at = app("pages/runs.py", compare=str(theirs))
    at.run()
    assert not at.exception, at.exception
    assert at.button(key=f"do_rename_{theirs}").disabled
    assert at.button(key=f"delete_{theirs}").disabled

    mine = _finished_run("mine", owner="myvisitor1")
    at2 = app("pages/runs.py", compare=str(mine))
    at2.session_state["visitor_id"] = "myvisitor1"         # what this browser's cookie gives
    at2.run()
    assert not at2.button(key=f"delete_{mine}").disabled   # the same visitor owns it


@pytest.mark.slow
def test_classroom_teacher_key_unlocks_every_run_and_a_wrong_key_does_not(runs_dir, monkeypatch):
    monkeypatch.setenv("FLOWLAB_CLASSROOM", "1")
    monkeypatch.setenv("FLOWLAB_TEACHER_KEY", "chalk-and-talk")
    theirs = _finished_run("a-students-run", owner="studentvisitor")

    wrong = app("pages/runs.py", compare=str(theirs))
    wrong.session_state["teacher_key"] = "guess"
    wrong.run()
    assert not wrong.exception, wrong.exception
    assert wrong.button(key=f"delete_{theirs}").disabled

    teacher = app("pages/runs.py", compare=str(theirs))
    teacher.session_state["teacher_key"] = "chalk-and-talk"
    teacher.run()
    assert not teacher.exception, teacher.exception
    assert not teacher.button(key=f"delete_{theirs}").disabled
    assert not teacher.button(key=f"do_rename_{theirs}").disabled
    assert any("teacher" in c.value for c in teacher.sidebar.caption)
    assert "teacher_key" not in teacher.query_params   # the key never goes into the URL


def test_the_server_does_not_watch_the_source_tree():
    # The default watcher re-walked .venv and the run folders on every inotify overflow and
    # kept ~1.8 of 2 cores busy under an idle page (measured), slowing training 3-4×.
    import tomllib
    config = tomllib.loads((Path(APP).parent / ".streamlit" / "config.toml").read_text())
    assert config["server"]["fileWatcherType"] == "none"


def test_home_lists_and_links_every_page_of_the_navigation(runs_dir):
    at = app()
    at.run()
    assert not at.exception
    router = Path(APP).read_text()
    pages = [p for p in re.findall(r'st\.Page\("pages/(\w+)\.py"', router) if p != "home"]
    assert len(pages) >= 8
    linked = [el.proto.page.strip("/") for el in at.get("page_link")]  # each page's URL path
    assert linked == pages  # every page, in the sidebar's order
