"""Run requests into the store, and back out: typed on the way in, checked again on the way out,
and a row whose settings cannot be read is never trained with default settings. Also the
store's public transaction / read API that its neighbours use."""

import sqlite3

import pytest

from flowlib.config import FlowConfig, TrainConfig
from flowlib.jobs import worker
from flowlib.settings import ConfigError
from flowlib.store.request import RunRequest
from flowlib.store.runs import DamagedRunError, RunStateError
from tests.runs_kit import TINY, tiny_train


def _request(name="r", **train):
    return RunRequest(name, TINY, tiny_train(**train))


def _set(store, run_id, **columns):
    """Change a run's row behind the store's back (as another program or a bad disk could)."""
    sets = ", ".join(f"{k}=?" for k in columns)
    store.transaction(lambda c: c.execute(f"UPDATE runs SET {sets} WHERE id=?", (*columns.values(), run_id)))


# -- the request -----------------------------------------------------------------------------------
def test_a_request_holds_checked_configs_and_its_dataset_is_the_training_configs():
    request = RunRequest("r", TINY, TrainConfig(dataset="faces", max_steps=5), owner="v", preset="faces-fast")
    assert request.dataset == "faces"
    with pytest.raises(TypeError, match="RunRequest.config must be a FlowConfig, got dict"):
        RunRequest("r", TINY.to_dict(), TrainConfig(max_steps=5))
    with pytest.raises(TypeError, match="RunRequest.train must be a TrainConfig"):
        RunRequest("r", TINY, {"max_steps": 5})
    with pytest.raises(ConfigError, match="batch_size") as info:
        RunRequest.from_dicts("r", {}, {"max_steps": 5, "batch_size": 0})
    assert info.value.field == "batch_size"
    with pytest.raises(ConfigError, match="unknown FlowConfig field"):
        RunRequest.from_dicts("r", {"levles": 2}, {"max_steps": 5})


def test_the_store_takes_requests_only_and_gives_the_same_request_back(store):
    with pytest.raises(TypeError, match="create_run takes a RunRequest, got str"):
        store.create_run("r")
    request = RunRequest("mine", TINY, tiny_train(max_steps=7), owner="visitor", preset="faces-fast")
    run_id = store.create_run(request)
    run = store.get_run(run_id)
    assert run["config"] == TINY.to_dict() and run["train"] == tiny_train(max_steps=7).to_dict()
    assert (run["dataset"], run["owner"], run["preset"], run["damaged"]) == ("faces", "visitor", "faces-fast", None)
    assert store.stored_request(run_id) == request
    with pytest.raises(KeyError):
        store.stored_request(run_id + 1)


# -- damaged rows ------------------------------------------------------------------------------------
@pytest.mark.parametrize("column, stored, words", [
    ("config", "{not json", "model settings (config) is not readable"),
    ("train", "[1, 2]", "training settings (train) is not readable"),     # JSON, but not a dict
    ("train", "", "training settings (train) is not readable"),
])
def test_a_run_whose_settings_are_unreadable_says_so_and_cannot_start_resume_or_change(store, column, stored,
                                                                                        words):
    run_id = store.create_run(_request("broken"))
    _set(store, run_id, **{column: stored})
    run = store.get_run(run_id)
    sentence = f"run {run_id} 'broken' is damaged: its stored {words}"
    assert run["damaged"].startswith(sentence) and run["message"].startswith("R" + sentence[1:])
    assert run[column] == {} and run["status"] == "created"
    assert store.list_runs()[0]["damaged"] == run["damaged"]
    for attempt in (lambda: store.stored_request(run_id), lambda: store.request_start(run_id),
                    lambda: worker.start_run(store, run_id), lambda: worker.resume_run(store, run_id),
                    lambda: worker.resume_run(store, run_id, max_steps=100),
                    lambda: store.update_train(run_id, tiny_train(max_steps=100))):
        with pytest.raises(DamagedRunError, match=f"run {run_id} 'broken' is damaged") as info:
            attempt()
        assert isinstance(info.value, RunStateError) and isinstance(info.value, ValueError)
    after = store.get_run(run_id)
    assert after["status"] == "created" and not worker.running_processes()
    assert store.read(lambda c: c.execute(f"SELECT {column} FROM runs WHERE id=?", (run_id,)).fetchone()[0]) == stored
    store.delete_run(run_id)                                                # deleting it is how it goes
    assert store.get_run(run_id) is None


def test_a_waiting_run_that_is_damaged_fails_with_the_sentence_and_the_queue_moves_on(store):
    broken = store.create_run(_request("broken"), status="waiting")
    sound = store.create_run(_request("sound"), status="waiting")
    _set(store, broken, config="{")
    assert store.claim_next_waiting() == sound
    assert store.get_run(broken)["status"] == "failed"
    stored = store.read(lambda c: c.execute("SELECT message FROM runs WHERE id=?", (broken,)).fetchone()[0])
    assert stored.startswith(f"Not started: run {broken} 'broken' is damaged")


def test_a_stored_value_no_config_allows_is_refused_at_start_naming_the_run_and_the_field(store):
    run_id = store.create_run(_request("changed"))
    _set(store, run_id, train=tiny_train().to_json().replace('"batch_size": 8', '"batch_size": -4'))
    with pytest.raises(ConfigError, match=rf"run {run_id} 'changed' has a stored setting that is not allowed: "
                                          r"batch_size must be an integer in 1\.\.4096, got -4") as info:
        worker.start_run(store, run_id)
    assert info.value.field == "batch_size" and store.get_run(run_id)["status"] == "created"


# -- the public transaction API ----------------------------------------------------------------------
def test_transaction_commits_what_fn_wrote_or_nothing_when_fn_raises(store):
    run_id = store.create_run(_request("t"))
    assert store.transaction(lambda c: c.execute("UPDATE runs SET message='one' WHERE id=?", (run_id,)).rowcount) == 1

    def half(conn):
        conn.execute("UPDATE runs SET message='two' WHERE id=?", (run_id,))
        raise ValueError("changed my mind")

    with pytest.raises(ValueError, match="changed my mind"):
        store.transaction(half)
    row = store.read(lambda c: c.execute("SELECT message FROM runs WHERE id=?", (run_id,)).fetchone())
    assert isinstance(row, sqlite3.Row) and row["message"] == "one"
    with pytest.raises(sqlite3.OperationalError):   # an SQL mistake is the caller's, raised as it is
        store.read(lambda c: c.execute("SELECT nope FROM runs").fetchall())


def test_flow_config_round_trips_through_the_store(store):
    config = FlowConfig(levels=2, hidden=8, image_shape=(1, 28, 28))
    run_id = store.create_run(RunRequest("rt", config, TrainConfig(max_steps=3)))
    assert store.stored_request(run_id).config == config
