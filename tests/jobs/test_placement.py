"""Every GPU used: runs placed one per GPU by free memory, tested with a stand-in device list."""

from __future__ import annotations

import threading

import pytest

from flowlib.jobs import placement
from flowlib.jobs.placement import GPU_FILE, choose_gpu, gpu_indices, place_run
from flowlib.store.request import RunRequest
from tests.runs_kit import TINY, tiny_train

FOUR = [{"index": 0, "free_gib": 10.0, "total_gib": 80.0}, {"index": 1, "free_gib": 70.0, "total_gib": 80.0},
        {"index": 2, "free_gib": 40.0, "total_gib": 80.0}, {"index": 3, "free_gib": 70.0, "total_gib": 80.0}]


def test_a_new_run_goes_to_the_free_gpu_with_the_most_free_memory():
    assert choose_gpu(FOUR) == 1                        # 70 GiB free; the lower index breaks the tie with 3
    assert choose_gpu(FOUR, busy={1}) == 3
    assert choose_gpu(FOUR, busy={1, 3}) == 2
    assert choose_gpu(FOUR, busy={0, 1, 2, 3}) == 1    # all hold a run: the most free memory anyway
    assert choose_gpu([]) is None                       # no GPU: nothing to place (the CPU keeps its governor)


@pytest.mark.store_limits(max_concurrent=4)
def test_concurrent_runs_are_placed_one_per_gpu_and_each_process_sees_only_its_own(store, monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    envs, lock = {}, threading.Lock()

    def launch(i):
        run_id = store.create_run(RunRequest(f"r{i}", TINY, tiny_train()), status="queued")
        env = place_run(store, run_id, devices=FOUR)
        with lock:
            envs[run_id] = env
    threads = [threading.Thread(target=launch, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(e["CUDA_VISIBLE_DEVICES"] for e in envs.values()) == ["0", "1", "2", "3"]
    for run_id, env in envs.items():
        assert (store.run_dir(run_id) / GPU_FILE).read_text() == env["CUDA_VISIBLE_DEVICES"]
    # a run that ends frees its GPU for the next one
    first = min(envs)
    store.finish_run(first, "finished", "done")
    nxt = store.create_run(RunRequest("next", TINY, tiny_train()), status="queued")
    assert place_run(store, nxt, devices=FOUR)["CUDA_VISIBLE_DEVICES"] == envs[first]["CUDA_VISIBLE_DEVICES"]


def test_no_gpu_or_a_pinned_worker_changes_nothing(store, monkeypatch):
    run_id = store.create_run(RunRequest("cpu", TINY, tiny_train()), status="queued")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert place_run(store, run_id, devices=[]) == {}
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2")       # a study worker already given its GPU
    assert place_run(store, run_id, devices=FOUR) == {}


def test_work_gpus_flag_picks_one_worker_per_gpu(monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert gpu_indices("all", FOUR) == [0, 1, 2, 3] and gpu_indices("auto", []) == []
    assert gpu_indices("none", FOUR) == [] and gpu_indices("0,2", FOUR) == [0, 2]
    with pytest.raises(ValueError, match="--gpus"):
        gpu_indices("first", FOUR)


def test_the_app_launch_passes_the_placement_to_the_run_process(store, monkeypatch):
    from flowlib.jobs import worker
    seen = {}
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setattr(placement, "list_gpus", lambda: FOUR)
    monkeypatch.setattr(worker, "start_module", lambda module, args, log, **env: seen.update(env) or None)
    run_id = store.create_run(RunRequest("gpu", TINY, tiny_train()), status="queued")
    worker._launch(store, run_id)
    assert seen["CUDA_VISIBLE_DEVICES"] == "1" and seen["FLOWLAB_RUNS_DIR"] == str(store.root)
