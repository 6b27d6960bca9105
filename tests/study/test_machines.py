"""One study, many machines: a real PostgreSQL server and two worker processes with run stores of
their own (as two machines would), and the embedded SQLite default with two processes on one
machine. Every trial is trained once, a worker killed with SIGKILL mid-trial has its trial failed
by the heartbeat and retried by the other, nothing is counted twice, the answer is identical to the
same study run by one worker, and the app's Runs page shows trials from both workers."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from optuna.trial import TrialState

from flowlib.env import REPO_ROOT
from flowlib.store.runs import RunStore
from flowlib.study import api, engine
from flowlib.study.spec import StudySpec
from flowlib.study.storage import open_storage
from tests import postgres_kit

pytestmark = pytest.mark.slow

FACES = (1, 32, 32)
GRACE_S = "5"
STEPS = 600          # a few seconds a trial: long enough to be killed in the middle of one


def spec(name: str) -> StudySpec:
    return StudySpec(vary=(("permutation", ("reverse", "shuffle")),), name=name, dataset="faces",
                     model_preset="faces-fast", seeds=2, steps=STEPS, threads=1,
                     overrides={"hidden": "4", "steps": "1", "levels": "2", "batch_size": "8"})


def worker(url: str, runs: os.PathLike, log, concurrent: int = 1) -> subprocess.Popen:
    env = {**os.environ, "FLOWLAB_STUDY_STORAGE": url, "FLOWLAB_STUDY_GRACE_S": GRACE_S,
           "FLOWLAB_HEARTBEAT_STALE_S": GRACE_S, "FLOWLAB_MAX_CONCURRENT": str(concurrent),
           "PYTHONPATH": str(REPO_ROOT)}
    env.pop("FLOWLAB_CLASSROOM", None)
    return subprocess.Popen([sys.executable, "-m", "flowlib.study", "work", "--runs-dir", str(runs), "--gpus", "none"],
                            cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)


def trials_of(url: str, name: str):
    return engine.load(open_storage(url), name).get_trials()


def kill_mid_trial(url: str, name: str, victim: subprocess.Popen, runs, timeout: float = 240) -> int:
    """SIGKILL ``victim`` while it trains its second trial (after it finished one), its run between
    two evaluations in its run store; that trial's number."""
    deadline = time.monotonic() + timeout
    store = RunStore(runs)
    while time.monotonic() < deadline:
        mine = [t for t in trials_of(url, name) if (t.user_attrs.get("worker") or "").endswith(f":{victim.pid}")]
        running = [t for t in mine if t.state == TrialState.RUNNING and "run_id" in t.user_attrs]
        run = store.get_run(running[0].user_attrs["run_id"]) if running else None
        if run and run["status"] == "running" and 0 < run["step"] < STEPS * 3 // 4 and any(
                t.state == TrialState.COMPLETE for t in mine):
            os.kill(victim.pid, signal.SIGKILL)
            victim.wait()
            return running[0].number
        time.sleep(0.05)
    raise AssertionError("the worker to kill never trained a second trial")


def numbers(result: dict) -> dict:
    """What an answer claims, without where and when it was trained."""
    return {"arms": [(a["name"], a["n"], a["mean"], a["ci95"], [r["final_test_bpd"] for r in a["runs"]])
                     for a in result["arms"]],
            "pairs": [(p["arm"], p["vs"], p["mean"], p["ci95"], p["holm_p"], p["resolved"]) for p in result["pairs"]],
            "verdict": result["verdict"][:2]}


def one_worker_reference(tmp_path) -> dict:
    runs = tmp_path / "reference-runs"
    store = RunStore(runs)
    ref = api.start(store, spec("ref"), FACES, launch=False)
    with open(tmp_path / "reference.log", "wb") as log:
        assert worker(ref.storage_url, runs, log).wait(timeout=600) == 0
    return api.answer(store, "ref", ref.storage_url)


@pytest.fixture
def server_folder():
    """A folder the ``postgres`` user can reach (pytest's tmp_path sits under a root-only folder)."""
    folder = Path(tempfile.mkdtemp(prefix="flowlab-pg-"))
    os.chmod(folder, 0o755)
    yield folder / "pg"
    shutil.rmtree(folder, ignore_errors=True)


# skipped only where the server cannot exist; any other failure to start it fails the test
@pytest.mark.parametrize("where", [
    pytest.param("postgresql", marks=pytest.mark.skipif(postgres_kit.not_installed() is not None,
                                                        reason=postgres_kit.not_installed() or "")),
    "embedded"])
def test_two_workers_train_every_trial_once_survive_a_kill_and_answer_like_one(tmp_path, where, monkeypatch,
                                                                               server_folder):
    monkeypatch.delenv("FLOWLAB_STUDY_STORAGE", raising=False)
    with (postgres_kit.postgres_server(server_folder) if where == "postgresql" else _nothing()) as pg_url:
        if where == "postgresql":
            url, runs_a, runs_b, concurrent = pg_url, tmp_path / "machine-a", tmp_path / "machine-b", 1
        else:
            runs_a = runs_b = tmp_path / "runs"
            url, concurrent = None, 2
        store_a = RunStore(runs_a)
        ref = api.start(store_a, spec("two"), FACES, storage_url=url, launch=False)
        url = ref.storage_url
        with open(tmp_path / "a.log", "wb") as log_a, open(tmp_path / "b.log", "wb") as log_b:
            a = worker(url, runs_a, log_a, concurrent)
            b = worker(url, runs_b, log_b, concurrent)
            killed = kill_mid_trial(url, "two", b, runs_b)
            assert a.wait(timeout=600) == 0, (tmp_path / "a.log").read_text()
        trials = trials_of(url, "two")
        by_state = {s: [t for t in trials if t.state == s] for s in TrialState}
        assert len(by_state[TrialState.COMPLETE]) == 4 and len(trials) == 5
        assert [t.number for t in by_state[TrialState.FAIL]] == [killed]
        retry = [t for t in trials if t.system_attrs.get("failed_trial") == killed]
        assert len(retry) == 1 and retry[0].state == TrialState.COMPLETE
        assert retry[0].user_attrs["worker"].endswith(f":{a.pid}")
        done = sorted((t.user_attrs["arm"], t.user_attrs["seed"]) for t in by_state[TrialState.COMPLETE])
        assert done == sorted((arm, s) for arm in ("reverse", "shuffle") for s in (0, 1))   # each once
        workers = {t.user_attrs["worker"].rsplit(":", 1)[1] for t in by_state[TrialState.COMPLETE]}
        assert workers == {str(a.pid), str(b.pid)}                                      # both trained some
        # the killed trial's run is lost in its machine's store and never counted
        lost_run = trials[killed].user_attrs["run_id"]
        assert RunStore(runs_b).get_run(lost_run)["status"] in ("lost", "running")
        result = api.answer(store_a, "two", url)
        assert result["study"]["status"] == "finished"
        assert all(a_["n"] == 2 and len(a_["runs"]) == 2 for a_ in result["arms"])
        counted = {(r["worker"], r["run_id"]) for a_ in result["arms"] for r in a_["runs"]}
        assert (trials[killed].user_attrs["worker"], lost_run) not in counted and len(counted) == 4
        assert numbers(result) == numbers(one_worker_reference(tmp_path))
        _app_shows_trials_from_both(runs_a, url, {a.pid, b.pid}, monkeypatch)


class _nothing:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def _app_shows_trials_from_both(runs, url, pids, monkeypatch):
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("FLOWLAB_RUNS_DIR", str(runs))
    monkeypatch.setenv("FLOWLAB_STUDY_STORAGE", url)
    at = AppTest.from_file(str(REPO_ROOT / "app.py"), default_timeout=120)
    at.switch_page("pages/runs.py")
    at.run()
    assert not at.exception, at.exception
    studies = at.dataframe[0].value
    assert "two" in list(studies["name"])
    trials = next(d.value for d in at.dataframe if "worker" in d.value.columns)
    assert {w.rsplit(":", 1)[1] for w in trials["worker"] if w != "–"} == {str(p) for p in pids}
    assert set(trials["state"]) == {"finished"}
    assert any(c.value.startswith("optuna-dashboard") for c in at.code)
