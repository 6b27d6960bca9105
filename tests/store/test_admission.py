"""Who may do what, what is admitted, and whose folder a run trains in: owners (the terminal
included), the server's caps recorded in the store, submission keys, the server-wide queue
cap, and run folders tied to the store that made them."""

import os

import pytest

from flowlib.config import TrainConfig
from flowlib.store.folders import MARK_NAME
from flowlib.store.limits import Limits
from flowlib.store.request import RunRequest
from flowlib.store.runs import TERMINAL_OWNER, RunLimitError, RunStateError, RunStore
from tests.runs_kit import TINY, tiny_train


def _request(name="r", owner=None, **train):
    return RunRequest(name, TINY, tiny_train(**train), owner=owner)


# -- owners ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("owner", [None, TERMINAL_OWNER, "alice"])
def test_a_visitor_can_act_only_on_runs_it_started_itself(store, owner):
    run_id = store.create_run(_request("theirs", owner=owner))
    bigger = TrainConfig.from_dict(tiny_train(max_steps=99).to_dict())
    for act in (lambda who: store.request_start(run_id, who), lambda who: store.rename_run(run_id, "x", who),
                lambda who: store.update_train(run_id, bigger, who), lambda who: store.delete_run(run_id, who)):
        with pytest.raises(PermissionError, match="belongs to someone else"):
            act("mallory")
    store.request_start(run_id, owner if owner not in (None, TERMINAL_OWNER) else None)
    with pytest.raises(PermissionError, match="only the terminal or the teacher can stop it"
                       if owner in (None, TERMINAL_OWNER) else "only its owner or the teacher can stop it"):
        store.request_stop(run_id, "mallory")
    assert store.get_run(run_id)["status"] == "queued"


def test_a_stop_asked_by_the_teacher_is_said_in_the_runs_message(store):
    run_id = store.create_run(_request("alices", owner="alice"), status="queued")
    store.begin_run(run_id, 4_000_003)
    assert store.request_stop(run_id, None, by="the teacher")
    assert "asked by the teacher" in store.get_run(run_id)["message"]
    store.finish_run(run_id, "stopped", "Stopped at step 5; checkpoint saved. Resume to continue.", 5)
    message = store.get_run(run_id)["message"]
    assert message.startswith("Stopped at step 5") and message.endswith("Stop was asked by the teacher.")
    store.checkpoint_path(run_id).write_bytes(b"placeholder")   # what the stop left to resume from
    store.request_start(run_id, "alice")                   # her own stop says nothing more
    store.begin_run(run_id, 4_000_004)
    assert store.request_stop(run_id, "alice")
    store.finish_run(run_id, "stopped", "Stopped at step 6.", 6)
    assert store.get_run(run_id)["message"] == "Stopped at step 6."


# -- the server's caps -----------------------------------------------------------------------------
def test_caps_switched_on_by_a_restart_reach_runs_already_queued(tmp_path):
    root = tmp_path / "runs"
    before = RunStore(root, Limits())                        # the server before the restart
    before.publish_limits()
    big = before.create_run(_request("big", owner="v", batch_size=64), status="waiting")
    small = before.create_run(_request("small", owner="v", batch_size=8), status="waiting")
    RunStore(root, Limits(max_batch=16, classroom=True)).publish_limits()   # restarted in classroom mode
    old_worker = RunStore(root, Limits())                    # a worker launched before: no caps in its env
    assert old_worker.claim_next_waiting() == small
    run = old_worker.get_run(big)
    assert run["status"] == "failed" and "above this server's limit of 16 (FLOWLAB_MAX_BATCH)" in run["message"]
    assert "recorded in this runs folder" in run["message"]
    assert old_worker.server_limits().max_batch == 16 and old_worker.server_limits().classroom
    assert old_worker.limits.max_batch is None               # its own stay its own


def test_a_visitors_start_is_checked_against_the_recorded_caps(tmp_path):
    root = tmp_path / "runs"
    run_id = RunStore(root, Limits()).create_run(_request("r", owner="v", max_steps=4000))
    RunStore(root, Limits(max_steps=1000)).publish_limits()
    stale_page = RunStore(root, Limits())
    with pytest.raises(ValueError, match="FLOWLAB_MAX_STEPS"):
        stale_page.request_start(run_id, "v")
    stale_page.request_start(run_id)                         # the terminal's own limits


# -- submission keys and the server-wide queue cap -------------------------------------------------
def test_start_pressed_twice_with_two_free_slots_makes_one_run(tmp_path):
    store = RunStore(tmp_path / "runs", Limits(max_concurrent=2))
    first = store.create_run(_request("a", owner="v"), status="queued", submit_key="form-1")
    again = store.create_run(_request("a", owner="v"), status="queued", submit_key="form-1")
    assert again == first and [r["id"] for r in store.list_runs()] == [first]
    other = store.create_run(_request("a", owner="w"), status="queued", submit_key="form-1")
    assert other != first                                     # another visitor's key is another key
    store.finish_run(first, "finished", "done")
    later = store.create_run(_request("a", owner="v"), status="waiting", submit_key="form-1")
    assert later not in (first, other)                        # the first ended: a new run is a new run
    assert "submit_key" not in store.get_run(later)


def test_fresh_visitor_ids_cannot_queue_without_bound(tmp_path):
    store = RunStore(tmp_path / "runs", Limits(max_waiting_per_owner=2, max_waiting=3))
    for i in range(3):
        store.create_run(_request(f"w{i}", owner=f"fresh{i}"), status="waiting")
    with pytest.raises(RunLimitError, match=r"the server's queue is full: 3 runs are waiting .* limit is 3 "
                                            r"\(FLOWLAB_MAX_WAITING\)"):
        store.create_run(_request("w4", owner="fresh4"), status="waiting")
    with pytest.raises(RunLimitError, match="FLOWLAB_MAX_WAITING"):
        store.check_queue_room(None, 1)                       # the teacher too: the queue is full
    assert len(store.list_runs()) == 3


def test_the_queue_position_counts_the_waiting_runs_ahead(store):
    ids = [store.create_run(_request(f"w{i}"), status="waiting") for i in range(3)]
    assert [store.queue_position(i) for i in ids] == [1, 2, 3]
    store.claim_next_waiting()
    assert [store.queue_position(i) for i in ids] == [None, 1, 2]


# -- run folders belong to their store -------------------------------------------------------------
def _move_database_away(root):
    for path in root.glob("runs.sqlite*"):
        os.rename(path, root.parent / path.name)


def test_a_new_database_never_hands_an_old_folder_to_its_run(tmp_path):
    root = tmp_path / "runs"
    old = RunStore(root, Limits())
    run_id = old.create_run(_request("old"))
    old.checkpoint_path(run_id).write_bytes(b"the old run's checkpoint")
    _move_database_away(root)                                 # runs.sqlite moved away, run-00001/ stays
    new = RunStore(root, Limits())
    assert new.store_id != old.store_id
    fresh = new.create_run(_request("new"))
    assert fresh == run_id                                     # the same id, so the same folder name ...
    assert not new.checkpoint_path(fresh).exists()             # ... but not the old folder's checkpoint
    assert new.folder_is_ours(fresh)
    aside = root / f"{new.run_dir(fresh).name}.set-aside-1"
    assert (aside / "checkpoint.pt").read_bytes() == b"the old run's checkpoint"   # set aside, untouched
    (warning,) = new.events(fresh, kinds=["warning"])
    assert "set aside untouched as run-00001.set-aside-1" in warning["message"]
    assert "another run database" in warning["message"] and str(root) not in warning["message"]
    new.delete_run(fresh)
    assert aside.is_dir()                                      # deleting the new run leaves it alone


def test_a_folder_from_before_marks_is_set_aside_unless_its_store_was_migrated(tmp_path):
    root = tmp_path / "runs"
    (root / "run-00001").mkdir(parents=True)
    (root / "run-00001" / "checkpoint.pt").write_bytes(b"whose?")
    store = RunStore(root, Limits())
    run_id = store.create_run(_request("r"))
    assert (root / "run-00001.set-aside-1" / "checkpoint.pt").is_file()
    assert "carries no mark" in store.events(run_id, kinds=["warning"])[0]["message"]
    empty = root / "run-00002"
    empty.mkdir()                                               # an empty leftover is simply taken
    assert store.create_run(_request("r2")) == 2 and not (root / "run-00002.set-aside-1").exists()
    assert (empty / MARK_NAME).is_file()


def test_a_trained_run_in_a_folder_not_its_own_is_not_resumed(tmp_path):
    root = tmp_path / "runs"
    store = RunStore(root, Limits())
    run_id = store.create_run(_request("r"), status="queued")
    store.finish_run(run_id, "stopped", "Stopped at step 5.", 5)
    store.checkpoint_path(run_id).write_bytes(b"ours")
    (store.run_dir(run_id) / MARK_NAME).write_text('{"store": "someone-else", "run": 1}')   # swapped in
    with pytest.raises(RunStateError, match="its folder run-00001 was not made by this run store"):
        store.request_start(run_id)
