"""Run requests into the store, and back out: typed on the way in, checked again on the way out.
Also the store's public transaction / read API that its neighbours use."""

import sqlite3

import pytest

from flowlib.config import ConfigError, FlowConfig, TrainConfig
from flowlib.jobs import worker
from flowlib.store.request import RunRequest
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
    assert (run["dataset"], run["owner"], run["preset"]) == ("faces", "visitor", "faces-fast")
    assert store.stored_request(run_id) == request
    with pytest.raises(KeyError):
        store.stored_request(run_id + 1)


# -- rows changed behind the store's back ---------------------------------------------------------
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
