"""Studies: specs and their refusals, intervals, the store's older all-or-nothing groups (studies made
before the Optuna engine still open and answer), the command line end to end on the embedded storage."""

import json
import math
import subprocess
import sys
import time

import pytest

from flowlib.config import APP_TRAIN_DEFAULTS, PRESET_LR
from flowlib.env import REPO_ROOT
from flowlib.settings import ConfigError
from flowlib.store.limits import Limits
from flowlib.store.request import RunRequest
from flowlib.store.runs import RunStateError, RunStore
from flowlib.store.studies import StudyStore
from flowlib.study import api
from flowlib.study.answer import answer_csv, json_result
from flowlib.study.spec import STUDY_PRESETS, StudySpec, plan
from flowlib.study.stats import paired_difference, summarize, t_critical

pytestmark = pytest.mark.store_limits(stale_after_s=30.0, start_timeout_s=60)

REPO = REPO_ROOT
MNIST = (1, 28, 28)


# -- statistics ----------------------------------------------------------------------------
def test_t_interval_matches_a_hand_computation():
    s = summarize([1.0, 2.0, 3.0])
    assert s.n == 3 and s.mean == 2.0 and s.sd == pytest.approx(1.0)
    half = 4.303 / math.sqrt(3)          # t(0.975, df=2) · sd / √n
    assert (s.low, s.high) == (pytest.approx(2 - half), pytest.approx(2 + half))
    assert t_critical(1) == 12.706 and t_critical(30) == 2.042
    assert abs(t_critical(60) - 2.000) < 0.003


def test_one_value_has_no_interval_and_none_are_dropped():
    s = summarize([1.5, None, float("nan")])
    assert (s.n, s.mean, s.low, s.high) == (1, 1.5, None, None)
    assert not s.excludes_zero()
    assert summarize([]).mean is None


def test_paired_difference_uses_only_the_seeds_both_arms_have():
    d = paired_difference({0: 1.0, 1: 1.1, 2: 1.2}, {0: 1.5, 1: 1.6, 3: 9.9})
    assert d.n == 2 and d.mean == pytest.approx(-0.5) and d.sd == pytest.approx(0.0)
    assert d.excludes_zero()


# -- the spec and its refusals -----------------------------------------------------------------
def test_permutation_preset_plans_paired_runs_with_the_train_pages_lr_and_a_scaled_warmup():
    p = plan(StudySpec.from_preset("permutation", seeds=3, steps=300), MNIST)
    assert [a.name for a in p.arms] == ["reverse", "shuffle", "conv1x1_lu"]    # the LU one, not plain 1×1
    assert p.baseline == "shuffle" and p.seeds == (0, 1, 2) and p.n_runs == 9
    for arm in p.arms:
        tc = arm.train
        assert tc.lr == PRESET_LR["mnist-fast"] and tc.lr_schedule == APP_TRAIN_DEFAULTS.lr_schedule
        assert tc.warmup_steps == 30 and tc.max_steps == 300 and tc.max_minutes is None
        cfg, seeded = arm.run_configs(2)
        assert cfg.seed == 2 and seeded.seed == 2            # model seed = training seed = s
    # everything but the permutation is equal across arms
    configs = [a.config.to_dict() for a in p.arms]
    for c in configs:
        c.pop("permutation")
    assert configs[0] == configs[1] == configs[2]
    # a long budget keeps the Train page's warm-up (never more than 10 % of the budget)
    long = plan(StudySpec.from_preset("coupling", steps=20000), MNIST)
    assert long.arms[0].train.warmup_steps == APP_TRAIN_DEFAULTS.warmup_steps


@pytest.mark.parametrize("name", sorted(STUDY_PRESETS))
def test_every_one_click_study_plans_on_mnist(name):
    p = plan(StudySpec.from_preset(name, steps=100), MNIST)
    assert len(p.arms) >= 2 and p.baseline in [a.name for a in p.arms]


@pytest.mark.parametrize("spec, field", [
    (StudySpec(vary=(("coupling", ()),)), "coupling"),                           # empty value list
    (StudySpec(vary=(("permutation", ("reverse", "bogus")),)), "permutation"),    # invalid value
    (StudySpec(vary=(("hidden", ("64", "-3")),)), "hidden"),                      # out of range
    (StudySpec(vary=(("coupling", ("additive", "affine")),), seeds=0), "seeds"),
    (StudySpec(vary=(("hidden", ("32", "32.0")),)), "hidden"),                   # identical arms
    (StudySpec(vary=(("seed", ("1", "2")),)), "seed"),                            # not a setting to vary
    (StudySpec(vary=(("colour", ("1", "2")),)), "colour"),                        # unknown setting
    (StudySpec(vary=(("coupling", ("additive", "affine")),), steps=None), "steps"),   # no budget
    (StudySpec(vary=(("coupling", ("additive", "affine")),), baseline="nope"), "baseline"),
    (StudySpec(vary=(("coupling", ("additive", "affine")),), overrides={"hidden": "wide"}), "hidden"),
    (StudySpec(vary=()), "vary"),
    (StudySpec(vary=(("coupling", ("additive", "affine")),), steps=0), "steps"),
    (StudySpec(vary=(("coupling", ("additive", "affine")),), steps=None, minutes=-1.0), "minutes"),
])
def test_bad_studies_are_refused_naming_the_field(spec, field):
    with pytest.raises(ConfigError) as info:
        plan(spec, MNIST)
    assert info.value.field == field, str(info.value)


def test_identical_arms_message_names_both(tmp_path):
    with pytest.raises(ConfigError, match="'hidden=32' and 'hidden=32' have identical settings"):
        plan(StudySpec(vary=(("hidden", ("32", "032")),)), MNIST)


@pytest.mark.parametrize("vary", [("32",), ("32", "32"), ("affine", " affine")])
def test_a_one_value_vary_is_refused_in_one_sentence(vary):
    with pytest.raises(ConfigError, match="has one value") as info:
        plan(StudySpec(vary=(("coupling" if vary[0] == "affine" else "hidden", vary),)), MNIST)
    assert info.value.field in ("hidden", "coupling") and "--set" in str(info.value)


@pytest.mark.parametrize("key", ["dataset", "dataset_options", "validation_images", "image_shape"])
def test_a_study_refuses_set_of_its_data(key):
    value = {"dataset": "cifar10", "dataset_options": '{"path": "x"}', "validation_images": "0",
             "image_shape": "1,32,32"}[key]
    with pytest.raises(ConfigError) as info:
        plan(StudySpec.from_preset("coupling", overrides={key: value}), MNIST)
    assert info.value.field == key


def test_a_study_over_the_classroom_cap_leaves_nothing_behind(tmp_path):
    store = RunStore(tmp_path / "runs", Limits(classroom=True, max_steps=100, max_minutes=60.0))
    with pytest.raises(ValueError, match="100"):
        api.start(store, StudySpec.from_preset("coupling", steps=500), MNIST, launch=False)
    assert store.list_runs() == [] and StudyStore(store).list() == []
    assert not (tmp_path / "runs" / "studies.sqlite").exists() or api.overview(store)[0] == []


def test_time_budget_warns_that_it_is_unfair():
    p = plan(StudySpec.from_preset("coupling", steps=None, minutes=2.0), MNIST)
    assert any("unfair across devices" in w for w in p.warnings)


# -- the store: one unit ---------------------------------------------------------------------
def _planned(n=4):
    from flowlib.config import PRESETS, TrainConfig
    cfg = PRESETS["mnist-fast"]
    tc = TrainConfig(max_steps=10)
    return [(f"arm{i % 2}", i // 2, RunRequest(f"r{i}", cfg, tc, preset="mnist-fast")) for i in range(n)]


def test_create_is_all_or_nothing(store, monkeypatch):
    real = store.create_run
    calls = []

    def flaky(*a, **kw):
        calls.append(1)
        if len(calls) == 3:
            raise OSError("disk full")
        return real(*a, **kw)
    monkeypatch.setattr(store, "create_run", flaky)
    with pytest.raises(OSError):
        StudyStore(store).create("s", {}, _planned(4))
    assert store.list_runs() == [] and StudyStore(store).list() == []


def test_runs_wait_until_all_are_linked_then_stop_cancels_and_delete_removes_them(store):
    studies = StudyStore(store)
    sid = studies.create("my study", {"spec": {}}, _planned(4), owner="alice")
    study = studies.get(sid)
    assert [r["status"] for r in study["runs"]] == ["waiting"] * 4 and study["status"] == "waiting"
    assert set(studies.run_ids()) == {r["id"] for r in study["runs"]}
    with pytest.raises(PermissionError):
        studies.delete(sid, owner="bob")
    assert studies.rename(sid, "renamed/../x", owner="alice") == "renamed-x"
    # one run training: delete refuses, stop cancels the waiting ones and asks the active to stop
    first = study["runs"][0]["id"]
    store.request_start(first)
    with pytest.raises(RunStateError, match="stop the study first"):
        studies.delete(sid)
    assert [r["status"] for r in studies.get(sid)["runs"]][1:] == ["waiting"] * 3   # refusal changed nothing
    assert studies.stop(sid) == {"cancelled": 3, "stopping": 1}
    store.finish_run(first, "stopped", "stopped")
    folders = [store.run_dir(r["id"]) for r in study["runs"]]
    assert studies.delete(sid, owner="alice") == 4
    assert store.list_runs() == [] and studies.get(sid) is None
    assert not any(f.exists() for f in folders)


# -- the answer of a study made before the Optuna engine (read as it is, not migrated) ---------
def _finish(store, run_id, bpd, ips=1000.0):
    store.request_start(run_id)
    store.begin_run(run_id, 1)
    now = time.time()
    store.append_metrics(run_id, [(5, now, "test_bpd", bpd + 0.2), (5, now, "elapsed_s", 1.0),
                                  (5, now, "images_per_s", ips), (10, now, "elapsed_s", 2.0),
                                  (10, now, "test_bpd_full", bpd)])
    store.finish_run(run_id, "finished", "done", step=10)


def test_answer_means_intervals_paired_differences_and_verdict(store):
    spec = StudySpec.from_preset("coupling", seeds=3, steps=10)
    p = plan(spec, MNIST)     # built in the store directly: no worker trains these runs
    planned = [(a.name, s, RunRequest(f"{a.name}-{s}", *a.run_configs(s), preset="mnist-fast"))
               for s in p.seeds for a in p.arms]
    sid = StudyStore(store).create("coupling", p.describe(), planned)
    runs = {(r["arm"], r["seed"]): r["id"] for r in StudyStore(store).get(sid)["runs"]}
    additive = {0: 1.80, 1: 1.84, 2: 1.79}
    affine = {0: 1.70, 1: 1.75, 2: 1.69}     # 0.10, 0.09, 0.10 better, seed by seed
    for seed in (0, 1, 2):
        _finish(store, runs[("additive", seed)], additive[seed])
        _finish(store, runs[("affine", seed)], affine[seed])
    result = api.answer(store, sid)
    arms = {a["name"]: a for a in result["arms"]}
    assert arms["affine"]["mean"] == pytest.approx(sum(affine.values()) / 3)
    low, high = arms["affine"]["ci95"]
    assert low < arms["affine"]["mean"] < high
    assert arms["affine"]["parameters"] > arms["additive"]["parameters"] > 0
    (diff,) = result["differences"]
    assert diff["arm"] == "affine" and diff["vs"] == "additive" and diff["resolved"]
    assert diff["mean"] == pytest.approx(-0.29 / 3)
    assert result["verdict"][0].startswith("affine reached the lowest test bits/dim (1.7133)")
    assert result["verdict"][1].startswith("affine beats additive by 0.0967 ±")
    assert result["verdict"][2].startswith("Same direction as the paper (which measured CIFAR-10 at a far larger")
    assert not any("reproduced" in line for line in result["verdict"])
    assert result["arms"][0]["runs"][0]["curve"]["step"] == [5]
    csv_text = answer_csv(result)
    assert csv_text.splitlines()[0].startswith("row,arm,vs,seeds,mean_test_bpd,ci95_low")
    assert len(csv_text.splitlines()) == 4
    data = json_result(result)
    json.dumps(data)    # plain JSON
    assert {r["seed"] for r in data["arms"][0]["runs"]} == {0, 1, 2}


def test_a_failed_run_is_shown_and_the_answer_says_fewer_seeds(store):
    p = plan(StudySpec.from_preset("coupling", seeds=3, steps=10), MNIST)
    planned = [(a.name, s, RunRequest(f"{a.name}-{s}", *a.run_configs(s), preset="mnist-fast"))
               for s in p.seeds for a in p.arms]
    sid = StudyStore(store).create("coupling", p.describe(), planned)
    runs = {(r["arm"], r["seed"]): r["id"] for r in StudyStore(store).get(sid)["runs"]}
    for seed in (0, 1, 2):
        _finish(store, runs[("additive", seed)], 1.8 + seed / 100)
    _finish(store, runs[("affine", 0)], 1.7)
    _finish(store, runs[("affine", 1)], 1.9)
    rid = runs[("affine", 2)]
    store.request_start(rid)
    store.finish_run(rid, "failed", "Training diverged: non-finite losses kept returning")
    result = api.answer(store, sid)
    affine = next(a for a in result["arms"] if a["name"] == "affine")
    assert affine["n"] == 2 and [r["status"] for r in affine["runs"]] == ["finished", "finished", "diverged"]
    assert any(line.startswith("affine, seed 2 (run ") and "diverged" in line for line in result["verdict"])
    assert "affine: based on 2 of 3 seeds." in result["verdict"]
    assert result["differences"][0]["n"] == 2


# -- the command line, end to end ----------------------------------------------------------------
@pytest.mark.slow
def test_cli_runs_a_tiny_study_and_writes_json_for_every_arm_and_seed(tmp_path):
    out = tmp_path / "r.json"
    cmd = [sys.executable, "-m", "flowlib.study", "--vary", "permutation=reverse,shuffle", "--seeds", "2",
           "--steps", "3", "--dataset", "faces", "--model-preset", "faces-fast",
           "--set", "hidden=4", "--set", "steps=1", "--set", "levels=2", "--set", "batch_size=8",
           "--set", "eval_subset=16", "--set", "threads=1", "--runs-dir", str(tmp_path / "runs"),
           "--json", str(out)]
    proc = subprocess.run(cmd + ["--csv", str(tmp_path / "r.csv")], cwd=REPO, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Verdict:" in proc.stdout
    assert "time: about" in proc.stdout          # measured on this device before the study started
    data = json.loads(out.read_text())
    assert set(data) >= {"study", "arms", "baseline", "differences"}
    # what the JSON records beside the answer: full configs, code version, environment, steps trained
    assert data["study"]["kind"] == "comparison" and data["study"]["code_version"] != "unknown"
    assert data["study"]["storage"].endswith("studies.sqlite") and data["study"]["threads"] == 1
    assert data["arms"][0]["config"]["permutation"] == "reverse" and data["arms"][0]["train"]["threads"] == 1
    assert {e["threads"] for e in data["environment"]} == {1} and data["environment"][0]["torch"]
    assert all(r["steps_trained"] == 3 and r["rollbacks"] == 0 for a in data["arms"] for r in a["runs"])
    assert (tmp_path / "r.csv").read_text().startswith("row,arm,vs,seeds,mean_test_bpd")
    assert [a["name"] for a in data["arms"]] == ["reverse", "shuffle"] and data["baseline"] == "reverse"
    for arm in data["arms"]:
        assert set(arm) >= {"name", "settings", "runs", "mean", "ci95"}
        assert [r["seed"] for r in arm["runs"]] == [0, 1]
        values = [r["final_test_bpd"] for r in arm["runs"]]
        assert all(isinstance(v, float) and math.isfinite(v) for v in values)
        assert arm["mean"] == pytest.approx(sum(values) / 2)
        assert arm["ci95"][0] <= arm["mean"] <= arm["ci95"][1]
    (diff,) = data["differences"]
    assert diff["arm"] == "shuffle" and diff["vs"] == "reverse" and len(diff["ci95"]) == 2
    # the same store answers again without training anything
    again = subprocess.run([sys.executable, "-m", "flowlib.study", "--show", str(data["study"]["id"]),
                            "--runs-dir", str(tmp_path / "runs")], cwd=REPO, capture_output=True, text=True,
                           timeout=60)
    assert again.returncode == 0 and "Verdict:" in again.stdout


@pytest.mark.slow
def test_cli_ctrl_c_detaches_and_the_study_goes_on_to_finish(tmp_path):
    import signal

    runs = tmp_path / "runs"
    cmd = [sys.executable, "-m", "flowlib.study", "--vary", "permutation=reverse,shuffle", "--seeds", "1",
           "--steps", "40", "--dataset", "faces", "--model-preset", "faces-fast", "--name", "detach",
           "--set", "hidden=4", "--set", "steps=1", "--set", "levels=2", "--set", "batch_size=8",
           "--set", "threads=1", "--runs-dir", str(runs), "--workers", "1", "--no-estimate"]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if "queued in" in line:
            break
    proc.send_signal(signal.SIGINT)                # while it watches: the workers have barely started
    rest, _ = proc.communicate(timeout=60)
    assert proc.returncode == 3, "".join(seen) + rest
    assert "Detached: the study goes on" in rest and "Traceback" not in rest
    show = [sys.executable, "-m", "flowlib.study", "--show", "detach", "--runs-dir", str(runs)]
    deadline = time.monotonic() + 300
    while True:                                    # nothing cancelled it: it finishes with no terminal
        done = subprocess.run(show, cwd=REPO, capture_output=True, text=True, timeout=120)
        if done.returncode != 3 or time.monotonic() > deadline:
            break
        time.sleep(2)
    assert done.returncode == 0, done.stdout + done.stderr
    assert sorted(r["status"] for r in RunStore(runs).list_runs()) == ["finished", "finished"]


@pytest.mark.slow
def test_cli_refuses_bad_input_with_the_field_and_stores_nothing(tmp_path):
    cmd = [sys.executable, "-m", "flowlib.study", "--vary", "coupling=additive,bogus", "--steps", "3",
           "--runs-dir", str(tmp_path / "runs")]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "bogus" in proc.stderr and "(field: coupling)" in proc.stderr and "Traceback" not in proc.stderr
    assert RunStore(tmp_path / "runs").list_runs() == []


@pytest.mark.parametrize("target, words", [("missing-folder/r.json", "does not exist"), (".", "is a folder")])
def test_cli_refuses_a_json_path_it_could_not_write_before_training(tmp_path, target, words):
    proc = subprocess.run([sys.executable, "-m", "flowlib.study", "--preset", "coupling", "--steps", "3",
                           "--runs-dir", str(tmp_path / "runs"), "--json", str(tmp_path / target)],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and words in proc.stderr
    assert not (tmp_path / "runs").exists() or RunStore(tmp_path / "runs").list_runs() == []


@pytest.mark.parametrize("argv, name, preset", [
    (["--preset", "coupling", "--name", "my-coupling"], "my-coupling", "coupling"),   # was a TypeError
    (["--preset", "coupling"], "coupling-study", "coupling"),
    (["--vary", "hidden=32,64", "--name", "widths"], "widths", None),
])
def test_cli_names_a_study_of_a_preset_or_a_vary(argv, name, preset):
    from flowlib.cli.study import _spec, build_parser

    spec = _spec(build_parser().parse_args([*argv, "--steps", "3"]))
    assert (spec.name, spec.preset) == (name, preset)
