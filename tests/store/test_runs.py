"""Run store: schema, slot claims, stop flag, reaping, metrics/events/samples, owners, names."""

import sqlite3
import threading

import pytest

from flowlib.config import FlowConfig
from flowlib.store.limits import Limits
from flowlib.store.request import RunRequest
from flowlib.store.runs import RunLimitError, RunStateError, RunStore, sanitize_name
from tests.runs_kit import FakeClock


def _train(**kw):
    return {"dataset": "faces", "batch_size": 16, "max_steps": 30, "max_minutes": None, **kw}


def _request(name, config=None, owner=None, **train):
    return RunRequest.from_dicts(name, {"levels": 2} if config is None else config, _train(**train), owner=owner)


def _new(store, name="r", owner=None, **kw):
    return store.create_run(_request(name, owner=owner, **kw.pop("train", {})), **kw)


def test_store_uses_wal_and_creates_run_folders_from_ids(tmp_path):
    store = RunStore(tmp_path, Limits())
    with sqlite3.connect(store.db_path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    run_id = _new(store, "../../escape")
    run = store.get_run(run_id)
    assert run["status"] == "created" and run["config"] == FlowConfig(levels=2).to_dict()
    assert run["train"]["max_steps"] == 30
    assert store.run_dir(run_id) == tmp_path / f"run-{run_id:05d}" and store.run_dir(run_id).is_dir()
    assert run["name"] == "escape"
    assert not (tmp_path.parent / "escape").exists()


def test_root_comes_from_env_when_not_given(tmp_path, monkeypatch):
    monkeypatch.setenv("FLOWLAB_RUNS_DIR", str(tmp_path / "elsewhere"))
    assert RunStore().root == tmp_path / "elsewhere"


@pytest.mark.parametrize("raw, expected", [
    ("mnist a", "mnist a"), ("../../etc/passwd", "etc-passwd"), ("a/b\\c", "a-b-c"),
    ("x\x00y", "x-y"), ("..", "run"), ("", "run"), (None, "run"), ("  spaced   out  ", "spaced out"),
    ("ünï©ødé", "n-d"), ("a" * 500, "a" * 80), ("/" * 10, "run"),
])
def test_sanitize_name(raw, expected):
    assert sanitize_name(raw) == expected


def test_names_are_unique_and_rename_sanitises(tmp_path):
    store = RunStore(tmp_path, Limits())
    a, b = _new(store, "same"), _new(store, "same")
    assert store.get_run(b)["name"] == "same-2"
    assert store.rename_run(a, "new/../name") == "new-name"
    with pytest.raises(ValueError, match="already called"):
        store.rename_run(b, "new-name")
    assert store.find_run("new-name")["id"] == a and store.find_run(str(b))["id"] == b


def test_only_one_slot_and_the_error_names_the_run_in_the_way(tmp_path):
    store = RunStore(tmp_path, Limits(max_concurrent=1))
    a, b = _new(store, "mnist-a"), _new(store, "other")
    store.request_start(a)
    with pytest.raises(RunLimitError, match=rf"Another run is training \(run {a} 'mnist-a'\).*FLOWLAB_MAX_CONCURRENT"):
        store.request_start(b)
    with pytest.raises(RunStateError, match="already queued"):
        store.request_start(a)
    assert store.get_run(b)["status"] == "created"


def test_concurrent_claims_from_many_threads_start_exactly_one(tmp_path):
    store = RunStore(tmp_path, Limits(max_concurrent=1))
    ids = [_new(store, f"r{i}") for i in range(8)] + [None] * 0
    barrier = threading.Barrier(len(ids) + 2)
    results = []

    def claim(run_id):
        barrier.wait()
        try:
            store.request_start(run_id)
            results.append(("ok", run_id))
        except (RunLimitError, RunStateError) as exc:
            results.append(("refused", str(exc)))

    threads = [threading.Thread(target=claim, args=(i,)) for i in ids + ids[:2]]  # also same-run double clicks
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(1 for kind, _ in results if kind == "ok") == 1
    assert sum(1 for r in store.list_runs() if r["status"] == "queued") == 1


def test_stop_is_idempotent_and_begin_run_honours_an_early_stop(tmp_path):
    store = RunStore(tmp_path, Limits())
    run_id = _new(store)
    assert store.request_stop(run_id) is False          # not active: nothing to stop
    store.request_start(run_id)
    assert store.request_stop(run_id) is True
    assert store.request_stop(run_id) is False          # pressed twice: harmless
    assert store.get_run(run_id)["status"] == "stopping"
    assert store.begin_run(run_id, 123) == "stopping"    # worker sees it before training
    assert store.finish_run(run_id, "stopped", "Stopped before training began.")
    assert store.get_run(run_id)["status"] == "stopped"
    store.request_start(run_id)                          # a stopped run can start again
    assert store.begin_run(run_id, 123) == "queued"
    assert store.get_run(run_id)["status"] == "running"
    assert store.heartbeat(run_id, 5) == ("running", False)


def test_an_old_process_exiting_after_a_resume_does_not_mark_the_new_attempt_lost(tmp_path):
    store = RunStore(tmp_path, Limits())
    run_id = _new(store)
    store.request_start(run_id)
    store.begin_run(run_id, 4242)
    store.request_stop(run_id)
    store.finish_run(run_id, "stopped", "Stopped at step 3.")
    store.request_start(run_id)                        # resumed: queued, new pid not yet recorded
    assert store.mark_exited(run_id, 4242, 0) is False  # the old process's exit arrives late
    assert store.get_run(run_id)["status"] == "queued"
    store.set_pid(run_id, 5151)
    assert store.mark_exited(run_id, 4242, 0) is False
    assert store.mark_exited(run_id, 5151, 1) is True   # the new process dying is still caught
    assert store.get_run(run_id)["status"] == "lost"


def test_stale_heartbeat_marks_run_lost_on_read_and_frees_the_slot(tmp_path):
    clock = FakeClock()
    store = RunStore(tmp_path, Limits(stale_after_s=3.0, start_timeout_s=6.0), clock=clock.clock())
    a, b = _new(store, "a"), _new(store, "b")
    store.request_start(a)
    store.begin_run(a, 99999)
    store.heartbeat(a, 7)
    assert store.get_run(a)["status"] == "running"
    clock.advance(4.5)                                   # no heartbeat for 1.5 windows
    run = store.list_runs()[-1]
    assert run["id"] == a and run["status"] == "lost" and "step 7" in run["message"]
    assert [e["kind"] for e in store.events(a)] == ["lost"]
    store.request_start(b)                               # the slot is free again
    assert store.get_run(b)["status"] == "queued"
    clock.advance(7.0)                                   # queued, but no process ever came up
    assert store.get_run(b)["status"] == "lost" and "never started" in store.get_run(b)["message"]


def test_metrics_roundtrip_incremental_latest_and_truncate(tmp_path):
    store = RunStore(tmp_path, Limits())
    run_id = _new(store)
    rows = [(s, 1000.0 + s, k, s * m) for s in range(10, 101, 10) for k, m in (("train_bpd", 1.0), ("lr", 0.1))]
    assert store.append_metrics(run_id, rows) == 20
    m = store.metrics(run_id)
    assert m["train_bpd"]["step"] == list(range(10, 101, 10))
    assert m["lr"]["value"][-1] == pytest.approx(10.0) and m["lr"]["wall"][0] == 1010.0
    assert store.metrics(run_id, keys=["lr"], after_step=80) == {"lr": {"step": [90, 100], "wall": [1090.0, 1100.0],
                                                                      "value": [9.0, 10.0]}}
    assert store.latest_metrics(run_id)["train_bpd"] == (100, 100.0)
    img = store.run_dir(run_id) / "samples_step0000090.png"
    img.write_bytes(b"png")
    store.add_samples(run_id, 50, store.run_dir(run_id) / "samples_step0000050.png")
    store.add_samples(run_id, 90, img)
    assert store.latest_samples(run_id)["step"] == 90
    assert store.truncate_after(run_id, 60) == 8
    assert store.metrics(run_id)["train_bpd"]["step"] == [10, 20, 30, 40, 50, 60]
    assert store.latest_samples(run_id)["step"] == 50 and not img.exists()


def test_events_in_order_and_filters(tmp_path):
    store = RunStore(tmp_path, Limits())
    run_id = _new(store)
    store.add_event(run_id, "nan_skip", "step 3: non-finite loss", 3)
    store.add_event(run_id, "rollback", "rolled back", 5)
    with pytest.raises(ValueError, match="event kind"):
        store.add_event(run_id, "bogus", "x")
    events = store.events(run_id)
    assert [(e["kind"], e["step"]) for e in events] == [("nan_skip", 3), ("rollback", 5)]
    assert store.events(run_id, kinds=["rollback"])[0]["message"] == "rolled back"
    assert store.events(run_id, after_id=events[0]["id"])[0]["kind"] == "rollback"


def test_delete_refuses_active_runs_and_removes_rows_and_folder(tmp_path):
    store = RunStore(tmp_path, Limits())
    run_id = _new(store)
    store.append_metrics(run_id, [(1, 1.0, "lr", 0.1)])
    store.request_start(run_id)
    with pytest.raises(RunStateError, match="stop it before deleting"):
        store.delete_run(run_id)
    store.finish_run(run_id, "failed", "x")
    store.delete_run(run_id)
    assert store.get_run(run_id) is None and not store.run_dir(run_id).exists()
    assert store.metrics(run_id) == {}
    assert tmp_path.is_dir() and store.db_path.exists()


def test_owner_checks_for_start_stop_rename_delete(tmp_path):
    store = RunStore(tmp_path, Limits())
    run_id = _new(store, owner="visitor-a")
    for call in (lambda o: store.request_start(run_id, o), lambda o: store.rename_run(run_id, "x", o),
                 lambda o: store.delete_run(run_id, o)):
        with pytest.raises(PermissionError, match="belongs to someone else"):
            call("visitor-b")
    store.request_start(run_id, "visitor-a")
    with pytest.raises(PermissionError):
        store.request_stop(run_id, "visitor-b")
    assert store.request_stop(run_id, None)              # trusted caller (CLI / teacher)
    assert store.list_runs(owner="visitor-a")[0]["id"] == run_id and store.list_runs(owner="zz") == []


def test_a_queued_create_claims_its_slot_in_the_same_transaction(tmp_path):
    store = RunStore(tmp_path, Limits(max_concurrent=1))
    a = store.create_run(_request("a"), status="queued")
    assert store.get_run(a)["status"] == "queued"
    with pytest.raises(RunLimitError, match=rf"run {a} 'a'"):
        store.create_run(_request("b"), status="queued")
    assert [r["id"] for r in store.list_runs()] == [a]                  # nothing left behind
    assert sorted(p.name for p in tmp_path.glob("run-*")) == [store.run_dir(a).name]
    with pytest.raises(ValueError, match="created, waiting or queued"):
        store.create_run(_request("c", {}), status="running")


def test_the_queue_hands_slots_to_the_oldest_waiting_runs_only(tmp_path):
    store = RunStore(tmp_path, Limits(max_concurrent=2))
    created = _new(store, "created-by-hand")                            # never started by the queue
    w1, w2, w3 = (store.create_run(_request(f"w{i}", {}), status="waiting") for i in range(3))
    assert store.get_run(w1)["status"] == "waiting" and "slot" in store.get_run(w1)["message"]
    assert store.claim_next_waiting() == w1 and store.claim_next_waiting() == w2
    assert store.claim_next_waiting() is None                           # both slots taken
    store.finish_run(w1, "finished", "done")
    assert store.claim_next_waiting() == w3
    assert store.get_run(created)["status"] == "created"
    with pytest.raises(RunStateError):
        store.request_start(w3)                                         # already queued


def test_a_waiting_run_over_a_new_cap_fails_with_the_reason_and_the_next_one_starts(tmp_path):
    big = RunStore(tmp_path, Limits()).create_run(_request("big", {}, batch_size=512), status="waiting")
    small = RunStore(tmp_path, Limits()).create_run(_request("small", {}), status="waiting")
    capped = RunStore(tmp_path, Limits(max_batch=256))                  # the server restarted with a cap
    assert capped.claim_next_waiting() == small
    run = capped.get_run(big)
    assert run["status"] == "failed" and "FLOWLAB_MAX_BATCH" in run["message"]


def test_concurrent_queue_drains_never_exceed_the_limit(tmp_path):
    store = RunStore(tmp_path, Limits(max_concurrent=2))
    for i in range(6):
        store.create_run(_request(f"w{i}", {}), status="waiting")
    barrier = threading.Barrier(8)
    claimed = []

    def drain():
        barrier.wait()
        run_id = store.claim_next_waiting()
        if run_id is not None:
            claimed.append(run_id)

    threads = [threading.Thread(target=drain) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(claimed) == 2 and sorted(claimed) == [1, 2]


def test_the_dataset_paths_of_runs_that_have_not_ended_are_in_use(tmp_path):
    # A probe: uploads evicted by later uploads while the runs that read them waited in the
    # queue: 3 of 3 failed. The Train page passes these paths to store_upload as in use.
    store = RunStore(tmp_path, Limits(max_concurrent=2))

    def folder_run(name, status):
        options = {"path": str(tmp_path / f"{name}.zip"), "size": 32}
        return _new(store, name, status=status, train={"dataset": "folder", "dataset_options": options})

    folder_run("created", "created"), folder_run("waiting", "waiting")
    training, ended = folder_run("training", "created"), folder_run("ended", "created")
    _new(store, "faces")  # no path
    store.request_start(training)
    store.request_start(ended)
    store.finish_run(ended, "finished", "done")
    assert store.dataset_paths_in_use() == {str(tmp_path / f"{n}.zip") for n in ("created", "waiting", "training")}
    store.finish_run(training, "failed", "gone")
    assert store.dataset_paths_in_use() == {str(tmp_path / f"{n}.zip") for n in ("created", "waiting")}
