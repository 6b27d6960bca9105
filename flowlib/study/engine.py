"""A Flow Lab study is an Optuna study: how one is made, read, stopped, resumed, and fed trials.

    from flowlib.study import engine
    study = engine.create(storage, p, name="perm", owner=None)     # p: a StudyPlan or SearchPlan
    study = engine.load(storage, "perm")                            # KeyError naming it if absent
    engine.request_stop(study); engine.resume(study)
    engine.state(study)              # "waiting" | "running" | "finished" | "stopped" | "failed"
    trial = engine.take_trial(study) # the next queued trial, now RUNNING, or None
    flow, train = engine.trial_configs(study, trial)

The study in the storage (any Optuna tool can read it):

study user attributes   ``flowlab_plan`` (the StudyPlan's ``describe()``: spec, arms with their
                        full configs, base configuration, ranges, seeds, warnings),
                        ``flowlab_version`` (the code's git commit), ``flowlab_created``,
                        ``flowlab_owner``, ``flowlab_stop`` (a stop was asked for)
direction               minimize: the trial's value is its final *validation* bits/dim
trials                  one trial = one run (one arm or configuration, one seed).

A comparison enqueues every arm × seed at once (``enqueue_trial``: param ``arm``, user
attributes ``seed``, ``role="run"``), seed by seed, so a stopped study has whole seeds. A
search enqueues ``trials`` empty *lead* trials (``role="lead"``, the first seed): when a
worker takes one, Optuna's TPE sampler draws its configuration from the ranges (seeded by the
study's first seed and the trial's number, so one worker repeats itself exactly and two never
draw the same); when a lead completes, its other seeds are enqueued with the same
configuration (``role="seed"``). Taking a queued trial is Optuna's own atomic pop, so two
workers never train the same trial.

Pruning (searches only, on by default; ``prune=False`` turns it off): Optuna's
:class:`~optuna.pruners.MedianPruner`, judging each configuration's *first-seed* run at every
evaluation against the other configurations' first-seed runs at the same step. Why that one:
a trial here is one run, and the runs compared share the seed — the same initial weights
wherever shapes agree, the same batches and noise — so the comparison is paired by
construction, as a study's differences are. Only first-seed runs are ever cut: a
configuration that survives gets every seed (its interval needs them all), and a losing one
costs one partial run instead of ``seeds`` full ones. The WilcoxonPruner (a paired test
across a trial's steps against the best trial's) was the other candidate: it would need one
trial to hold all seeds of a configuration, and with 3 seeds its smallest possible p-value
is 0.125, so at its 0.1 threshold it could never prune. Settings: at least
``max(2, trials // 5)`` first-seed runs completed, no pruning before a third of the budget,
at least two first-seed curves at the step judged. Comparisons never prune: a verdict needs
every run.
"""

from __future__ import annotations

import json
import subprocess
import time
from typing import Any

from flowlib.config import FlowConfig, TrainConfig
from flowlib.env import REPO_ROOT
from flowlib.settings import ConfigError

from .spec import Base, StudySpec, plan

__all__ = ["create", "load", "list_studies", "request_stop", "resume", "state", "take_trial", "trial_configs",
           "stored_plan", "enqueue_seeds", "prune_now", "code_version", "StudyExistsError", "PLAN_KEY",
           "sampler_for", "lead_pruner", "TRIAL_STATES_DONE"]

PLAN_KEY = "flowlab_plan"
TRIAL_STATES_DONE = ("COMPLETE", "PRUNED", "FAIL")


class StudyExistsError(ConfigError):
    """A study of that name exists in the storage with another spec."""


def code_version() -> str:
    """The checkout's git commit (with ``-dirty`` when files changed), or ``unknown``."""
    try:
        head = subprocess.run(["git", "-C", str(REPO_ROOT), "rev-parse", "--short=12", "HEAD"],
                              capture_output=True, text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(REPO_ROOT), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return (head + ("-dirty" if dirty else "")) if head else "unknown"


def _same_spec(a: dict, b: dict) -> bool:
    keys = set(a) | set(b)
    keys.discard("name")
    return all(json.dumps(a.get(k), sort_keys=True) == json.dumps(b.get(k), sort_keys=True) for k in keys)


def create(storage, p, name: str, owner: str | None = None, stored: dict | None = None):
    """Store the study and queue its trials (all or nothing); the Optuna study.

    ``stored``: the plan's ``describe()`` (default: ``p.describe()``). A study of the same name
    with the same spec is returned as it is (the command was run again); with another spec,
    StudyExistsError naming the field ``name``, and nothing is changed.
    """
    import optuna

    described = stored if stored is not None else p.describe()
    existing = _find(storage, name)
    if existing is not None:
        old = existing.user_attrs.get(PLAN_KEY, {}).get("spec", {})
        if _same_spec(old, described["spec"]):
            return existing
        raise StudyExistsError(f"a study named {name!r} already exists in this storage with another spec; "
                               "choose another --name, or --resume it as it is", "name")
    study = optuna.create_study(storage=storage, study_name=name, direction="minimize")
    try:
        study.set_user_attr(PLAN_KEY, described)
        study.set_user_attr("flowlab_version", code_version())
        study.set_user_attr("flowlab_created", time.time())
        study.set_user_attr("flowlab_owner", owner)
        study.set_user_attr("flowlab_stop", False)
        _enqueue_planned(study, p)
    except BaseException:
        optuna.delete_study(study_name=name, storage=storage)
        raise
    return study


def _enqueue_planned(study, p) -> None:
    if p.kind == "comparison":
        for seed in p.seeds:                       # seed-major: a stopped study has whole seeds
            for arm in p.arms:
                study.enqueue_trial({"arm": arm.name}, user_attrs={"seed": seed, "arm": arm.name, "role": "run"})
    else:
        for _ in range(p.spec.trials):
            study.enqueue_trial({}, user_attrs={"seed": p.seeds[0], "role": "lead"})


def _find(storage, name: str):
    import optuna

    try:
        return optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        return None


def load(storage, name: str):
    """The study ``name`` (KeyError naming it and the studies there when absent)."""
    study = _find(storage, name)
    if study is None:
        names = [s.study_name for s in storage.get_all_studies()]
        raise KeyError(f"no study named {name!r} in this storage" + (f" (it has: {', '.join(names[:10])})"
                                                                     if names else " (it has none)"))
    return study


def list_studies(storage) -> list:
    """Every Flow Lab study in the storage (FrozenStudy), newest first."""
    out = [s for s in storage.get_all_studies() if PLAN_KEY in s.user_attrs]
    return sorted(out, key=lambda s: -s.user_attrs.get("flowlab_created", 0))


def stored_plan(study) -> dict:
    return study.user_attrs.get(PLAN_KEY) or {}


def _base_of(described: dict) -> Base:
    base = described.get("base") or {}
    return Base(FlowConfig.from_dict(base["config"]), TrainConfig.from_dict(base["train"]))


def trial_configs(study, trial) -> tuple[str, dict, FlowConfig, TrainConfig]:
    """(arm or configuration name, its settings, FlowConfig, TrainConfig) of a trial, seed applied.

    A comparison's arm comes from the stored plan (its full configs); a search's configuration
    is drawn now by the sampler (or read back: a retried or later-seed trial has it fixed)."""
    described = stored_plan(study)
    seed = int(trial.user_attrs["seed"])
    if described.get("kind") == "search":
        settings = suggest(study, trial, described)
        base = _base_of(described)
        arm = base.arm(settings)
        return config_key(trial), settings, arm.config.replace(seed=seed), arm.train.replace(seed=seed)
    names = [a["name"] for a in described["arms"]]
    name = trial.suggest_categorical("arm", names)
    arm = next(a for a in described["arms"] if a["name"] == name)
    return (name, dict(arm["settings"]), FlowConfig.from_dict(arm["config"]).replace(seed=seed),
            TrainConfig.from_dict(arm["train"]).replace(seed=seed))


def config_key(trial) -> str:
    """A search configuration's name: ``c`` and the number of the trial that drew it."""
    return str(trial.user_attrs.get("config") or f"c{trial.number}")


def _ranges(described: dict):
    from .space import parse_range
    from .spec import _setting_of, parse_value

    return [parse_range(name, text, _setting_of(name)[1], lambda k, v: parse_value(k, v))
            for name, text in described.get("ranges", [])]


def sampler_for(described: dict, trial_number: int):
    """Optuna's TPE sampler, seeded by the study's first seed and the trial's number."""
    import optuna

    spec = StudySpec.from_dict(described["spec"])
    return optuna.samplers.TPESampler(seed=int(spec.first_seed) * 100_003 + int(trial_number),
                                      n_startup_trials=max(2, min(10, spec.trials // 3)),
                                      constant_liar=True, multivariate=True)


def suggest(study, trial, described: dict) -> dict:
    """The configuration of a search trial, drawn from its ranges (or fixed, when queued so)."""
    study.sampler = sampler_for(described, trial.number)
    settings = {}
    for r in _ranges(described):
        dist = r.distribution()
        settings[r.name] = trial._suggest(r.name, dist)
    return settings


def lead_pruner(described: dict):
    """The MedianPruner of a search (see the module's docstring), or None when pruning is off."""
    import optuna

    spec = StudySpec.from_dict(described["spec"])
    if not spec.pruning:
        return None
    steps = spec.steps or 0
    return optuna.pruners.MedianPruner(n_startup_trials=max(2, spec.trials // 5), n_warmup_steps=steps // 3,
                                       interval_steps=1, n_min_trials=2)


class _Leads:
    """A view of a study that shows the pruner only first-seed (lead) trials: the paired ones."""

    def __init__(self, study):
        self._study = study
        self.direction = study.direction

    def get_trials(self, deepcopy: bool = True, states=None):
        return [t for t in self._study.get_trials(deepcopy=deepcopy, states=states)
                if t.user_attrs.get("role") == "lead"]


def prune_now(study, trial_id: int) -> bool:
    """True when the search's pruner cuts this lead trial at its latest reported step."""
    frozen = study._storage.get_trial(trial_id)
    if frozen.user_attrs.get("role") != "lead":
        return False
    pruner = lead_pruner(stored_plan(study))
    return bool(pruner is not None and pruner.prune(_Leads(study), frozen))


def enqueue_seeds(study, lead) -> int:
    """Queue the other seeds of a completed lead's configuration (once); how many were queued."""
    described = stored_plan(study)
    key = config_key(lead)
    have = {t.user_attrs.get("seed") for t in study.get_trials(deepcopy=False)
            if t.user_attrs.get("config") == key and t.user_attrs.get("role") == "seed"}
    queued = 0
    for seed in described.get("seeds", [])[1:]:
        if seed in have:
            continue
        study.enqueue_trial(dict(lead.params), user_attrs={"seed": seed, "role": "seed", "config": key})
        queued += 1
    return queued


def take_trial(study):
    """The oldest queued trial, claimed (RUNNING) by this process, as an Optuna Trial; None if none.

    Optuna's own claim (``Study._pop_waiting_trial_id``: a conditional state update in one
    transaction, or the journal's ordered log): never ``ask()``, which makes a fresh trial when
    the queue is empty, so a study never grows trials nobody planned.
    """
    import optuna

    study._thread_local.cached_all_trials = None
    trial_id = study._pop_waiting_trial_id()
    if trial_id is None:
        return None
    return optuna.Trial(study, trial_id)


def request_stop(study) -> None:
    study.set_user_attr("flowlab_stop", True)


def stop_requested(study) -> bool:
    return bool(study._storage.get_study_user_attrs(study._study_id).get("flowlab_stop"))


def resume(study) -> int:
    """Clear the stop flag and queue again each trial that a stop (or a worker leaving) ended
    before its budget; how many were queued. Each is trained afresh by whichever worker takes it
    (bit-identical to an uninterrupted run on the same machine type)."""
    import optuna
    from optuna.trial import TrialState

    study.set_user_attr("flowlab_stop", False)
    trials = study.get_trials(deepcopy=False)
    retried = {t.system_attrs.get("failed_trial") for t in trials} | {
        n for t in trials for n in t.system_attrs.get("retry_history", [])}
    queued = 0
    for t in trials:
        if t.state != TrialState.FAIL or not t.user_attrs.get("interrupted") or t.number in retried:
            continue
        attrs = {k: v for k, v in t.user_attrs.items() if k in ("seed", "arm", "role", "config")}
        system = {"failed_trial": t.system_attrs.get("failed_trial", t.number),
                  "retry_history": [*t.system_attrs.get("retry_history", []), t.number]}
        if "fixed_params" in t.system_attrs:
            system["fixed_params"] = t.system_attrs["fixed_params"]
        study.add_trial(optuna.trial.create_trial(state=TrialState.WAITING, params=t.params,
                                                  distributions=t.distributions, user_attrs=attrs,
                                                  system_attrs=system))
        queued += 1
    return queued


def state(study, trials: list | None = None) -> str:
    """One word for the study: waiting, running, stopped, finished (every trial ended, none failed
    without a retry) or failed (some trial failed and was not retried)."""
    from optuna.trial import TrialState

    trials = trials if trials is not None else study.get_trials(deepcopy=False)
    states = [t.state for t in trials]
    if any(s == TrialState.RUNNING for s in states):
        return "running"
    stop = study.user_attrs.get("flowlab_stop") if hasattr(study, "user_attrs") else False
    if stop and any(s == TrialState.WAITING for s in states):
        return "stopped"
    if any(s == TrialState.WAITING for s in states):
        return "waiting"
    if not states:
        return "empty"
    if unretried_failures(trials):
        return "stopped" if stop else "failed"
    return "finished"


def unretried_failures(trials: list) -> list:
    """Failed trials the study did not finish: interrupted (a stop, a worker that left or died)
    and not taken over by a retry. A run that failed in training (diverged, out of memory) is
    an answer, named as such, not an unfinished trial."""
    from optuna.trial import TrialState

    retried = set()
    for t in trials:
        retried.update(t.system_attrs.get("retry_history", []))
    return [t for t in trials if t.state == TrialState.FAIL and t.number not in retried
            and t.user_attrs.get("run_status") != "failed"]


def plan_from_stored(described: dict, image_shape) -> Any:
    """The plan again from a stored ``describe()`` (for estimates on another machine)."""
    return plan(StudySpec.from_dict(described["spec"]), image_shape)
