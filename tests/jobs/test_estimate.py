"""Estimates without a model in the caller: parameter arithmetic, history, the measuring process."""

import json
import os
import subprocess
import sys
import time

import pytest

from flowlib import PRESETS, FlowConfig, FlowModel, preset
from flowlib.env import REPO_ROOT
from flowlib.jobs.estimate import SpeedEstimator, SpeedRequest, history_images_per_s
from flowlib.settings import settings_of
from flowlib.size import parameter_count
from flowlib.store.limits import Limits
from flowlib.store.request import RunRequest
from flowlib.store.runs import RunStore

REPO = REPO_ROOT
TINY = preset("faces-fast", levels=2, steps=1, hidden=4, permutation="reverse")


@pytest.mark.parametrize("name", list(PRESETS))
def test_parameter_count_of_every_preset_is_the_models(name):
    assert parameter_count(PRESETS[name]) == FlowModel(PRESETS[name]).num_parameters()


# Every value each model setting offers, read from its declaration in flowlib/config.py: a
# new choice is counted here the moment it is declared (booleans both ways; n_bits at 8 and 5).
OPTIONS = {name: (tuple(s.choices) if s.kind == "choice" else (True, False) if s.kind == "bool" else (8, 5))
           for name, s in settings_of(FlowConfig) if s.kind in ("choice", "bool") or name == "n_bits"}


@pytest.mark.parametrize("field, value", [(f, v) for f, values in OPTIONS.items() for v in values])
@pytest.mark.parametrize("shape, levels", [((1, 8, 8), 2), ((3, 8, 4), 1), ((2, 16, 16), 3)])
def test_parameter_count_of_every_option_is_the_models(field, value, shape, levels):
    # a conditional prior needs its number of classes beside it (the config refuses it alone)
    companions = {"n_classes": 3} if field == "condition" and value != "none" else {}
    cfg = preset("faces-fast", image_shape=shape, levels=levels, steps=2, hidden=6, **{field: value},
                 **companions)
    assert parameter_count(cfg) == FlowModel(cfg).num_parameters()


def test_parameter_count_of_a_huge_config_costs_nothing():
    cfg = preset("faces-fast", levels=5, steps=64, hidden=2048)
    t0 = time.perf_counter()
    n = parameter_count(cfg)
    assert n > 1_000_000_000 and time.perf_counter() - t0 < 0.01


def test_the_estimate_module_does_not_import_torch():
    code = "import sys, flowlib.jobs.estimate, flowlib.store; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=str(REPO), capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "False"


def _request(**kw):
    return SpeedRequest(**{"config": TINY.to_dict(), "batch": 8, "device": "cpu", "threads": 1, **kw})


def test_cache_key_covers_every_input_and_the_measured_batch():
    base = _request()
    assert base.key() == _request().key()
    for change in ({"batch": 16}, {"device": "auto"}, {"bf16": True}, {"threads": 2},
                   {"grad_clip": None}, {"config": {**TINY.to_dict(), "hidden": 8}}):
        assert _request(**change).key() != base.key(), change
    assert _request(batch=64).key() == _request(batch=512).key()       # both time batches of 64


def test_history_is_the_median_of_earlier_runs_with_the_same_settings(tmp_path):
    store = RunStore(tmp_path, Limits())
    train = {"batch_size": 8, "device": "cpu", "bf16": False, "threads": 1, "max_steps": 10}
    same = store.create_run(RunRequest.from_dicts("same", TINY.to_dict(), train))
    other = store.create_run(RunRequest.from_dicts("other", {**TINY.to_dict(), "hidden": 8}, train))
    bigger = store.create_run(RunRequest.from_dicts("bigger", TINY.to_dict(), {**train, "batch_size": 16}))
    for run_id, values in ((same, [100.0, 900.0, 300.0, 310.0]), (other, [5.0] * 4), (bigger, [7.0] * 4)):
        store.append_metrics(run_id, [(10 * i, 0.0, "images_per_s", v) for i, v in enumerate(values)])
    known = history_images_per_s(store, _request())
    assert known == {"images_per_s": 305.0, "source": "history", "runs": 1, "points": 4}
    assert history_images_per_s(store, _request(threads=2)) is None
    assert SpeedEstimator(tmp_path / "cache").estimate(_request(), store) == known


@pytest.mark.slow
def test_a_measurement_runs_in_its_own_process_and_is_cached(tmp_path):
    estimator = SpeedEstimator(tmp_path / "cache", timeout_s=120)
    request = _request()
    assert estimator.estimate(request) is None                         # started, not waited for
    assert estimator.measuring(request)
    assert estimator.estimate(request) is None and estimator.measuring(request)  # one process only
    deadline = time.monotonic() + 120
    while estimator.cached(request) is None:
        assert time.monotonic() < deadline
        time.sleep(0.2)
    result = estimator.estimate(request)
    assert result["source"] == "measured" and result["images_per_s"] > 0, result
    assert result["batch_measured"] == 8 and result["threads"] == 1 and result["device"] == "cpu"
    deadline = time.monotonic() + 10
    while estimator.measuring(request):                                # reaped by its watcher
        assert time.monotonic() < deadline
        time.sleep(0.05)


@pytest.mark.slow
def test_a_model_too_large_for_the_memory_limit_says_so_and_leaves_the_caller_alone(tmp_path):
    out = tmp_path / "big.json"
    request = _request(config=preset("faces-fast", levels=3, steps=16, hidden=1024).to_dict(), batch=64)
    proc = subprocess.run([sys.executable, "-m", "flowlib.jobs.estimate", "--request",
                           json.dumps(request.__dict__), "--out", str(out), "--timeout", "120",
                           "--memory-mb", "64"], cwd=str(REPO), capture_output=True, text=True,
                          timeout=180)
    assert proc.returncode == 1, proc.stderr
    assert "more than the 64 MB" in json.loads(out.read_text())["error"]


def test_a_measurement_past_its_time_says_so(tmp_path):
    out = tmp_path / "slow.json"
    request = _request(config=preset("faces-fast", levels=3, steps=16, hidden=256).to_dict(), batch=64)
    proc = subprocess.run([sys.executable, "-m", "flowlib.jobs.estimate", "--request",
                           json.dumps(request.__dict__), "--out", str(out), "--timeout", "1"],
                          cwd=str(REPO), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert "longer than 1 s" in json.loads(out.read_text())["error"]


def _age(path, seconds):
    then = time.time() - seconds
    os.utime(path, (then, then))


def test_a_failed_measurement_is_retried_after_a_while(tmp_path):
    import flowlib.jobs.estimate as estimate
    estimator = SpeedEstimator(tmp_path / "cache")
    request = _request()
    estimator.path(request).parent.mkdir(parents=True)
    estimator.path(request).write_text(json.dumps({"error": "took longer than 60 s"}))
    assert estimator.cached(request) == {"error": "took longer than 60 s"}
    _age(estimator.path(request), estimate.RETRY_FAILED_AFTER_S - 60)
    assert estimator.cached(request) == {"error": "took longer than 60 s"}
    _age(estimator.path(request), estimate.RETRY_FAILED_AFTER_S + 1)
    assert estimator.cached(request) is None


def test_a_model_whose_state_alone_exceeds_the_limit_is_answered_without_a_process(tmp_path):
    estimator = SpeedEstimator(tmp_path / "cache", memory_mb=1024)
    request = _request(config=preset("faces-fast", levels=3, steps=64, hidden=2048).to_dict())
    result = estimator.estimate(request)
    assert "more than the 1,024 MB" in result["error"] and not estimator.measuring(request)


def test_a_measurement_is_renewed_after_a_day(tmp_path):
    import flowlib.jobs.estimate as estimate
    estimator = SpeedEstimator(tmp_path / "cache")
    request = _request()
    estimator.path(request).parent.mkdir(parents=True)
    estimator.path(request).write_text(json.dumps({"images_per_s": 500.0, "source": "measured"}))
    assert estimator.cached(request)["images_per_s"] == 500.0
    _age(estimator.path(request), estimate.REMEASURE_AFTER_S - 60)
    assert estimator.cached(request)["images_per_s"] == 500.0
    _age(estimator.path(request), estimate.REMEASURE_AFTER_S + 1)
    assert estimator.cached(request) is None


def test_a_figure_measured_on_a_busy_machine_is_measured_again_once_it_is_quiet(tmp_path):
    import json
    import os
    import time

    from flowlib.config import PRESETS
    from flowlib.jobs import estimate
    load = [2.5]
    est = estimate.SpeedEstimator(tmp_path, load_per_core=lambda: load[0])
    request = estimate.SpeedRequest(PRESETS["mnist-fast"].to_dict(), 64)
    path = est.path(request)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"images_per_s": 17.0, "source": "measured", "load": 3.0}))
    old = time.time() - 120
    os.utime(path, (old, old))
    assert est.cached(request)["images_per_s"] == 17.0                # still busy: keep it
    load[0] = 0.2
    assert est.cached(request) is None                                # quiet now: measure again
    path.write_text(json.dumps({"images_per_s": 900.0, "source": "measured", "load": 0.4}))
    os.utime(path, (old, old))
    assert est.cached(request)["images_per_s"] == 900.0               # a quiet figure stays
