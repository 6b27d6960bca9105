"""Reference curves: earlier finished runs of the same settings first, else the shipped curves."""

from __future__ import annotations

import json
import os

import pytest

from flowlib.analysis.reference import (
    curve_of_run,
    published_numbers,
    reference_curves,
    same_curve_settings,
    shipped_curves,
)
from flowlib.config import TrainConfig, preset
from flowlib.store.request import RunRequest
from flowlib.store.runs import RunStore

CFG = preset("mnist-fast", hidden=8)
TC = TrainConfig(dataset="mnist", max_steps=100, batch_size=16, lr=1e-2)


def _run(store, name, cfg=CFG, tc=TC, status="finished", points=((50, 1.8), (100, 1.5))):
    rid = store.create_run(RunRequest(name, cfg, tc, preset="mnist-fast"))
    rows = [(s, 0.0, "test_bpd", v) for s, v in points]
    rows += [(s, 0.0, "elapsed_s", 0.5 * s) for s in range(10, 101, 10)]
    store.append_metrics(rid, rows)
    if status == "finished":      # one at a time: the store trains one run at once by default
        store.request_start(rid)
        store.begin_run(rid, os.getpid())
        store.finish_run(rid, "finished", "done", 100)
    return rid


@pytest.fixture
def store(tmp_path):
    return RunStore(tmp_path / "runs")


def test_earlier_finished_runs_of_the_same_settings_are_the_reference(store):
    a = _run(store, "a", points=((50, 2.0), (100, 1.6)))
    _run(store, "other lr", tc=TC.replace(lr=1e-3))
    _run(store, "other model", cfg=CFG.replace(hidden=16))
    _run(store, "other budget", tc=TC.replace(max_steps=200))        # cosine: the budget shapes the curve
    _run(store, "unfinished", status="created")
    b = _run(store, "b", points=((50, 1.9), (100, 1.55)))
    live = store.get_run(_run(store, "live", status="created"))
    curves = reference_curves(store, live)
    assert [c.source for c in curves] == ["earlier run", "earlier run"]
    assert [f"run {b} 'b'" in curves[0].label, f"run {a} 'a'" in curves[1].label] == [True, True]
    assert curves[0].step == (50, 100) and curves[0].test_bpd == (1.9, 1.55)
    assert curves[0].x("time") == [25.0, 50.0]       # elapsed_s = 0.5 · step, read at the test steps
    # a constant schedule does not depend on the budget
    constant = TC.replace(lr_schedule="constant")
    _run(store, "c1", tc=constant.replace(max_steps=500))
    assert reference_curves(store, store.get_run(_run(store, "c2", tc=constant, status="created")))


def test_without_earlier_runs_the_shipped_curve_of_the_preset_and_dataset_is_drawn(store, tmp_path):
    donor = _run(store, "donor", points=((50, 1.7), (100, 1.4)))
    entry = curve_of_run(store, donor, "the app's default run", note="batch 16, 100 steps")
    assert entry["test_bpd"] == [1.7, 1.4] and entry["preset"] == "mnist-fast" and entry["dataset"] == "mnist"
    path = tmp_path / "curves.json"
    path.write_text(json.dumps({"curves": [entry]}))
    assert shipped_curves(path)[0]["name"] == "the app's default run"
    fresh = RunStore(tmp_path / "other")
    live = fresh.get_run(_run(fresh, "live", tc=TC.replace(lr=3e-3), status="created"))
    (curve,) = reference_curves(fresh, live, shipped_path=path)
    assert curve.source == "shipped" and "batch 16, 100 steps" in curve.label and curve.step == (50, 100)
    same = fresh.get_run(_run(fresh, "same", status="created"))
    assert "same settings" in reference_curves(fresh, same, shipped_path=path)[0].label
    # of several shipped curves only the closest kind is drawn: the same model before another one
    bigger = dict(entry, name="a bigger model's run", config=CFG.replace(hidden=64).to_dict())
    path.write_text(json.dumps({"curves": [bigger, entry]}))
    assert [c.label for c in reference_curves(fresh, live, shipped_path=path)] == [curve.label]
    path.write_text(json.dumps({"curves": [bigger]}))
    assert "a bigger model's run" in reference_curves(fresh, live, shipped_path=path)[0].label
    faces = fresh.get_run(_run(fresh, "faces", tc=TC.replace(dataset="faces"), status="created"))
    assert reference_curves(fresh, faces, shipped_path=path) == []
    assert shipped_curves(tmp_path / "missing.json") == []


def test_same_curve_settings_and_the_published_numbers():
    a = {"config": CFG.to_dict(), "dataset": "mnist", "train": TC.to_dict()}
    assert same_curve_settings(a, dict(a))
    assert not same_curve_settings(a, {**a, "train": {**TC.to_dict(), "batch_size": 32}})
    assert same_curve_settings(a, {**a, "train": {**TC.to_dict(), "eval_every": 7}})   # where points fall only
    assert dict(published_numbers("mnist")) == {"Glow (published)": 1.05, "RealNVP (published)": 1.06}
    assert published_numbers("faces") == [] and published_numbers(None) == []


def test_the_shipped_curves_file_is_readable_and_each_curve_names_a_preset_and_dataset():
    for c in shipped_curves():
        assert c["preset"] and c["dataset"] and len(c["step"]) == len(c["test_bpd"]) == len(c["elapsed_s"])
        assert all(b > a for a, b in zip(c["step"], c["step"][1:]))
