"""A page polling a live run reads only the rows written since its last poll (issue #27, round
three), and what it holds is always exactly what a full read returns: after appends, after a
resume or a rollback that drops rows (the curve revision), after a row that goes back in step,
after another run's rows were deleted."""

import random

from flowlib.store.limits import Limits
from flowlib.store.records import CurveFollower
from flowlib.store.request import RunRequest
from flowlib.store.runs import RunStore


def _run(store, name="r"):
    return store.create_run(RunRequest.from_dicts(name, {}, {"max_steps": 10**6}))


def _rows(steps, wall0=1000.0):
    return [(s, wall0 + s, k, s * m) for s in steps for k, m in (("train_bpd", 1.0), ("lr", 1e-3))]


def test_incremental_polls_equal_a_full_read_through_appends_resumes_and_rollbacks(tmp_path):
    store = RunStore(tmp_path / "runs", Limits())
    run_id, other = _run(store, "a"), _run(store, "b")
    follower = CurveFollower(run_id)
    assert follower.refresh(store) == store.metrics(run_id) == {}
    rng = random.Random(5)
    step = 0
    for poll in range(40):
        if poll in (12, 30):                     # a resume / a rollback to an earlier checkpoint
            step -= rng.randint(1, 30)
            store.truncate_after(run_id, step)
        n = rng.randint(0, 15)
        store.append_metrics(run_id, _rows(range(step + 1, step + n + 1)))
        store.append_metrics(other, _rows(range(step + 1, step + 3)))
        if poll == 20:                           # the same step written again (a re-logged point)
            store.append_metrics(run_id, [(step + n, 5.0, "train_bpd", 1.5)])
        step += n
        if poll % 7 == 3:                        # another test_bpd point, less often
            store.append_metrics(run_id, [(step, 2000.0 + step, "test_bpd", 3.0 - poll / 100)])
        assert follower.refresh(store) == store.metrics(run_id), poll
    assert follower.full_reads == 3              # the first poll and the two truncations only


def test_a_row_written_before_its_curve_end_makes_the_next_poll_read_afresh(tmp_path):
    store = RunStore(tmp_path / "runs", Limits())
    run_id = _run(store)
    follower = CurveFollower(run_id)
    store.append_metrics(run_id, _rows(range(10, 60, 10)))
    follower.refresh(store)
    store.append_metrics(run_id, _rows([55, 70]))
    store.append_metrics(run_id, [(15, 9.0, "train_bpd", 0.5)])   # before the curve's end: no truncation said so
    assert follower.refresh(store) == store.metrics(run_id)
    assert store.metrics(run_id)["train_bpd"]["step"] == [10, 15, 20, 30, 40, 50, 55, 70]
    assert follower.full_reads == 2


def test_deleting_another_run_does_not_hide_new_rows(tmp_path):
    store = RunStore(tmp_path / "runs", Limits())
    run_id, other = _run(store, "a"), _run(store, "b")
    store.append_metrics(run_id, _rows(range(1, 5)))
    store.append_metrics(other, _rows(range(1, 50)))       # the highest row ids are the other run's
    follower = CurveFollower(run_id)
    follower.refresh(store)
    store.delete_run(other)
    store.append_metrics(run_id, _rows(range(5, 9)))
    assert follower.refresh(store) == store.metrics(run_id)
    assert store.metrics(run_id)["lr"]["step"] == list(range(1, 9))


def test_a_poll_reads_only_the_new_rows(tmp_path, monkeypatch):
    store = RunStore(tmp_path / "runs", Limits())
    run_id = _run(store)
    store.append_metrics(run_id, _rows(range(1, 2001)))
    follower = CurveFollower(run_id)
    follower.refresh(store)
    store.append_metrics(run_id, _rows([2001, 2002]))
    fetched = []
    real_read = store.read

    def counting_read(fn):
        result = real_read(fn)
        if isinstance(result, tuple) and isinstance(result[0], list):
            fetched.append(len(result[0]))
        return result
    monkeypatch.setattr(store, "read", counting_read)
    curves = follower.refresh(store)
    assert fetched == [4] and curves["train_bpd"]["step"][-3:] == [2000, 2001, 2002]
