"""The Optuna engine with a stand-in trainer: trials queued and claimed once, a search's TPE draws and
its later seeds, pruning, retries after a dead worker, stop and resume, refusals that store nothing,
admission against the caps, and the answer read from the storage."""

from __future__ import annotations

import threading
import time

import optuna
import pytest
from optuna.trial import TrialState

from flowlib.settings import ConfigError
from flowlib.store.limits import Limits
from flowlib.store.runs import RunLimitError, RunStore
from flowlib.store.studies import StudyStore
from flowlib.study import api, engine, work
from flowlib.study.spec import StudySpec, plan
from flowlib.study.storage import StorageError, open_storage
from tests.study import fake_training
from tests.study.fake_training import bpd_of, fake_train_run

MNIST = (1, 28, 28)


@pytest.fixture
def fake(monkeypatch):
    monkeypatch.setattr("flowlib.train.loop.train_run", fake_train_run)
    monkeypatch.setattr(work, "REPORT_S", 0.02)
    monkeypatch.setattr(work, "environment", lambda tc: {"machine": "test", "threads": tc.threads})
    monkeypatch.setenv("FLOWLAB_STUDY_GRACE_S", "2")
    monkeypatch.delenv("FLOWLAB_STUDY_STORAGE", raising=False)


def comparison(**kw):
    return StudySpec.from_preset("coupling", seeds=3, steps=20).replace(name="cmp", **kw)


def search(trials=6, seeds=2, **kw):
    return StudySpec(search=(("lr", "1e-4:1e-1:log"), ("hidden", "16,32,64")), trials=trials, seeds=seeds,
                     steps=20, name="srch", **kw)


def run_all(store, **kw):
    return work.work(None, store.root, log=lambda line: None, poll_s=0.05, **kw)


def test_a_comparison_enqueues_arms_times_seeds_seed_by_seed_and_each_is_claimed_once(store, fake):
    ref = api.start(store, comparison(), MNIST, launch=False)
    study = engine.load(open_storage(ref.storage_url), "cmp")
    waiting = study.get_trials(states=(TrialState.WAITING,))
    assert [(t.user_attrs["seed"], t.system_attrs["fixed_params"]["arm"]) for t in waiting] == [
        (s, a) for s in (0, 1, 2) for a in ("additive", "affine")]
    claimed, lock = [], threading.Lock()

    def grab():
        while True:
            t = engine.take_trial(engine.load(open_storage(ref.storage_url), "cmp"))
            if t is None:
                return
            with lock:
                claimed.append(t.number)
    threads = [threading.Thread(target=grab) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(claimed) == list(range(6))          # every trial once, none twice, no extra trial


def test_work_trains_every_trial_as_a_linked_run_and_the_answer_reads_the_storage(store, fake):
    ref = api.start(store, comparison(), MNIST, launch=False)
    assert run_all(store) == 0
    study = engine.load(open_storage(ref.storage_url), "cmp")
    trials = study.get_trials()
    assert len(trials) == 6 and {t.state for t in trials} == {TrialState.COMPLETE}
    runs = {r["id"]: r for r in store.list_runs()}
    assert sorted(t.user_attrs["run_id"] for t in trials) == sorted(runs)
    assert set(StudyStore(store).run_ids()) == set(runs)          # the Runs table marks them
    assert all(runs[t.user_attrs["run_id"]]["name"].startswith(f"cmp-{t.user_attrs['arm']}-s") for t in trials)
    result = api.answer(store, "cmp")
    assert result["study"]["status"] == "finished" and result["study"]["id"] == ref.local_id
    for arm in result["arms"]:
        expected = [bpd_of(arm["config"], {**arm["train"], "seed": s}) for s in (0, 1, 2)]
        assert [r["final_test_bpd"] for r in arm["runs"]] == pytest.approx(expected)
        assert all(r["steps_trained"] == 20 and r["machine"] for r in arm["runs"])
    # trial value = final validation bits/dim; the test number is an attribute, read once at the end
    t0 = trials[0]
    assert t0.value == pytest.approx(t0.user_attrs["curve"]["value"][-1])
    assert t0.user_attrs["test_bpd"] != t0.value
    assert sorted(t0.intermediate_values) == list(range(2, 21, 2))
    assert StudyStore(store).local_of(api.storage_key(ref.storage_url), "cmp")["spec"]["closed"]


def test_a_search_draws_configurations_then_trains_their_other_seeds_and_names_the_best(store, fake):
    api.start(store, search(trials=6, seeds=2, prune=False), MNIST, launch=False)
    assert run_all(store) == 0
    study = engine.load(open_storage(api.storage_url_of(store)), "srch")
    trials = study.get_trials()
    leads = [t for t in trials if t.user_attrs["role"] == "lead"]
    later = [t for t in trials if t.user_attrs["role"] == "seed"]
    assert len(leads) == 6 and len(later) == 6 and len(trials) == 12
    for t in later:                                   # the same configuration, the next seed
        lead = next(x for x in leads if f"c{x.number}" == t.user_attrs["config"])
        assert t.params == lead.params and t.user_attrs["seed"] == 1 and lead.user_attrs["seed"] == 0
    assert all(1e-4 <= t.params["lr"] <= 1e-1 and t.params["hidden"] in (16, 32, 64) for t in trials)
    assert len({tuple(sorted(t.params.items())) for t in leads}) == 6   # seeded per trial: never the same draw
    result = api.answer(store, "srch")
    complete = [c for c in result["configurations"] if c["state"] == "complete"]
    best = min(complete, key=lambda c: c["valid_mean"])
    assert result["best"]["key"] == best["key"] and result["best"]["n"] == 2
    assert result["best"]["ci95"] is not None and result["verdict"][0].startswith("Best of 6")
    assert set(result["importance"]) <= {"lr", "hidden"} and result["importance"]
    assert [p["trial"] for p in result["progress"]] == sorted(t.number for t in leads)
    rerun = api.rerun_best_spec(result)
    p = plan(rerun, MNIST)
    assert [a.name for a in p.arms][0] == "base configuration" and p.seeds == (2, 3)


def test_a_search_prunes_losing_first_seed_runs_against_the_other_first_seed_runs(store, fake, monkeypatch):
    monkeypatch.setattr(fake_training, "PAUSE_S", 0.08)
    api.start(store, search(trials=8, seeds=2), MNIST, launch=False)
    assert run_all(store) == 0
    study = engine.load(open_storage(api.storage_url_of(store)), "srch")
    trials = study.get_trials()
    pruned = [t for t in trials if t.state == TrialState.PRUNED]
    assert pruned, [(t.number, t.state) for t in trials]
    for t in pruned:
        assert t.user_attrs["role"] == "lead" and t.user_attrs["pruned_at"] >= 20 // 3
        assert not [x for x in trials if x.user_attrs.get("config") == f"c{t.number}" and x.user_attrs["role"] == "seed"]
        run = store.get_run(t.user_attrs["run_id"])
        assert run["status"] == "stopped" and run["step"] < 20
        assert any("pruned by study srch" in e["message"] for e in store.events(run["id"]))
    result = api.answer(store, "srch")
    assert {p["key"] for p in result["pruned"]} == {f"c{t.number}" for t in pruned}
    assert any("pruned" in line and "MedianPruner" in line for line in result["verdict"])


def test_a_dead_workers_trial_is_failed_by_the_heartbeat_and_retried_once(store, fake):
    ref = api.start(store, comparison(seeds=1), MNIST, launch=False)
    storage = open_storage(ref.storage_url)
    study = engine.load(storage, "cmp")
    dead = engine.take_trial(study)                  # claimed by a worker that then died
    storage.record_heartbeat(dead._trial_id)
    time.sleep(3)
    assert run_all(store) == 0
    trials = engine.load(storage, "cmp").get_trials()
    assert trials[dead.number].state == TrialState.FAIL
    retries = [t for t in trials if t.system_attrs.get("failed_trial") == dead.number]
    assert len(retries) == 1 and retries[0].state == TrialState.COMPLETE
    result = api.answer(store, "cmp")
    assert result["study"]["status"] == "finished"
    assert all(a["n"] == 1 and len(a["runs"]) == 1 for a in result["arms"])   # counted once


def test_stop_keeps_interrupted_trials_until_resume(store, fake, monkeypatch):
    monkeypatch.setattr(fake_training, "PAUSE_S", 0.05)
    ref = api.start(store, comparison(seeds=2), MNIST, launch=False)
    study = engine.load(open_storage(ref.storage_url), "cmp")
    real = fake_train_run

    def stopping(store_, run_id, **kw):
        engine.request_stop(study)           # asked while the first run trains
        return real(store_, run_id, **kw)
    monkeypatch.setattr("flowlib.train.loop.train_run", stopping)
    assert run_all(store) == 1
    result = api.answer(store, "cmp")
    assert result["study"]["status"] == "stopped"
    monkeypatch.setattr("flowlib.train.loop.train_run", real)
    assert api.resume(store, "cmp", launch=False) == 1
    assert run_all(store) == 0
    result = api.answer(store, "cmp")
    assert result["study"]["status"] == "finished" and all(a["n"] == 2 for a in result["arms"])


@pytest.mark.parametrize("case", ["runs-store", "not-sqlite", "unknown-scheme", "no-server", "not-journal",
                                  "missing-folder"])
def test_a_storage_that_is_not_a_study_database_is_refused_in_one_sentence(store, tmp_path, case):
    junk = tmp_path / "junk.journal"
    junk.write_text("hello\n")
    (tmp_path / "plain.sqlite").write_bytes(b"not a database at all")
    url = {"runs-store": f"sqlite:///{store.db_path}", "not-sqlite": f"sqlite:///{tmp_path / 'plain.sqlite'}",
           "unknown-scheme": "redis://localhost/0", "no-server": "postgresql://flowlab:pw@127.0.0.1:1/flowlab",
           "not-journal": str(junk), "missing-folder": f"sqlite:///{tmp_path / 'nope' / 's.sqlite'}"}[case]
    with pytest.raises(StorageError) as info:
        api.start(store, comparison(), MNIST, storage_url=url, launch=False)
    message = str(info.value)
    assert message.startswith("--storage: ") and message.count(". ") == 0 and "pw" not in message
    assert info.value.field == "storage"
    assert StudyStore(store).list() == [] and store.list_runs() == []
    if case == "runs-store":
        assert "run store" in message


def test_a_name_that_exists_with_another_spec_is_refused_and_nothing_changes(store, fake):
    api.start(store, comparison(), MNIST, launch=False)
    with pytest.raises(ConfigError) as info:
        api.start(store, comparison(seeds=2), MNIST, launch=False)
    assert info.value.field == "name" and "another spec" in str(info.value)
    study = engine.load(open_storage(api.storage_url_of(store)), "cmp")
    assert len(study.get_trials()) == 6 and len(StudyStore(store).list()) == 1
    again = api.start(store, comparison(), MNIST, launch=False)       # the same spec: the same study
    assert again.name == "cmp" and len(engine.load(open_storage(again.storage_url), "cmp").get_trials()) == 6


@pytest.mark.parametrize("text, words", [("lr=1e-2:1e-4", "is empty"), ("lr=0:1e-2:log", "log scale"),
                                         ("hidden=32", "distinct value"), ("hidden=8:99999", "hidden"),
                                         ("coupling=1:3", "list of values"), ("lr=a:b", "not a number"),
                                         ("seed=1,2", "cannot vary")])
def test_a_bad_search_range_is_refused_naming_the_setting(store, text, words):
    name, rng = text.split("=", 1)
    with pytest.raises(ConfigError) as info:
        api.start(store, StudySpec(search=((name, rng),), steps=20), MNIST, launch=False)
    assert info.value.field == name and words in str(info.value)
    assert StudyStore(store).list() == []


def test_two_studies_at_once_cannot_both_slip_under_the_visitors_cap(tmp_path, fake):
    store = RunStore(tmp_path / "runs", Limits(classroom=True, max_waiting_per_owner=12, max_steps=5000,
                                               max_minutes=60.0))
    results = []

    def submit(name):
        try:
            results.append(api.start(store, comparison(seeds=4).replace(name=name), MNIST, owner="alice",
                                     launch=False))      # 8 runs each
        except RunLimitError as exc:
            results.append(exc)
    threads = [threading.Thread(target=submit, args=(n,)) for n in ("a", "b", "c")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    admitted = [r for r in results if not isinstance(r, Exception)]
    assert len(admitted) == 1, results
    assert "limit is 12" in str(next(r for r in results if isinstance(r, Exception)))
    names = {s.study_name for s in open_storage(api.storage_url_of(store)).get_all_studies()}
    assert names == {admitted[0].name}


def test_a_journal_file_on_a_shared_disk_works_the_same(store, fake, tmp_path, monkeypatch):
    url = str(tmp_path / "shared" / "flowlab.journal")
    (tmp_path / "shared").mkdir()
    api.start(store, comparison(seeds=1), MNIST, storage_url=url, launch=False)
    # a worker told the storage only by $FLOWLAB_STUDY_STORAGE, as the CLI's own workers and
    # `work --gpus all`'s per-GPU workers are, serves that storage, not the embedded default
    monkeypatch.setenv("FLOWLAB_STUDY_STORAGE", url)
    assert work.work(None, store.root, log=lambda line: None, poll_s=0.05) == 0
    monkeypatch.delenv("FLOWLAB_STUDY_STORAGE")
    result = api.answer(store, "cmp", url)
    assert result["study"]["status"] == "finished" and result["study"]["dashboard"].startswith("optuna-dashboard /")
    assert optuna.load_study(study_name="cmp", storage=open_storage(url)).trials[0].state == TrialState.COMPLETE


def test_a_postgresql_url_opens_with_the_installed_driver_and_never_shows_its_password():
    # SQLAlchemy 2.1 reads a bare postgresql:// as psycopg 3; requirements.txt installs psycopg2
    from sqlalchemy.engine import make_url

    from flowlib.study.storage import dashboard_command, storage_key, with_driver

    url = "postgresql://flowlab:SECRET@db-host/flowlab"
    make_url(with_driver(url)).get_dialect().import_dbapi()          # the driver it names is here
    assert with_driver("sqlite:///x.sqlite") == "sqlite:///x.sqlite"
    for shown in (storage_key(url), dashboard_command(url)):
        assert "SECRET" not in shown and "flowlab:***@db-host/flowlab" in shown
    assert storage_key(url) == storage_key(with_driver(url))         # one study database, one key


def test_the_cli_exit_code_says_whether_the_study_finished(store, fake, capsys):
    from flowlib.cli.study import main

    api.start(store, comparison(seeds=1), MNIST, launch=False)
    here = ["--runs-dir", str(store.root)]
    assert main(["--show", "cmp", *here]) == 3                 # queued: still to train
    assert main(["--stop", "cmp", *here]) == 0
    assert main(["--show", "cmp", *here]) == 1                 # stopped unfinished
    assert "stopped" in capsys.readouterr().out
    assert api.resume(store, "cmp", launch=False) == 0         # nothing was interrupted
    assert run_all(store) == 0
    assert main(["--show", "cmp", *here]) == 0                 # finished
    assert main(["--show", "no-such-study", *here]) == 2       # refused


def test_many_openers_of_a_new_study_database_at_once_all_get_it(tmp_path):
    # Two tabs starting a study at once: the second opener looked at the file while the first
    # was creating Optuna's tables and refused it as "another program's database".
    from flowlib.study.storage import open_storage as open_study_storage

    errors, barrier = [], threading.Barrier(6)

    def open_it():
        barrier.wait()
        try:
            open_study_storage(f"sqlite:///{tmp_path / 'studies.sqlite'}")
        except Exception as exc:  # noqa: BLE001 - the test reports every one
            errors.append(exc)
    threads = [threading.Thread(target=open_it) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
