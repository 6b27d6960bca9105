"""What the command line and the pages do with studies, in one place.

    from flowlib.study import api
    ref = api.start(store, spec, image_shape, owner=visitor)        # admitted, stored, queued, workers started
    result = api.answer(store, ref)          # ref: this run store's study id (int) or a study name (str)
    api.stop(store, ref); api.resume(store, ref)
    api.overview(store)                      # every study of the storage, and the older ones of the run store

``storage_url`` everywhere: None is ``$FLOWLAB_STUDY_STORAGE``, else the embedded default
(``studies.sqlite`` in the run store's folder). :class:`StudyRef` says which study a caller
means: this machine's record id (what ``--show ID`` and the Runs page use, also for studies
made before the Optuna engine) and, for engine studies, the storage and the study's name.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

from flowlib import env
from flowlib.store.runs import RunStore
from flowlib.store.studies import ENGINE, StudyStore

from . import engine
from .answer import answer_from
from .records import legacy_records, trial_records
from .spec import StudySpec, plan
from .storage import dashboard_command, open_storage, redact, storage_key

__all__ = ["StudyRef", "storage_url_of", "start", "check_caps", "answer", "resolve", "stop", "resume", "overview",
           "importance", "spawn_workers", "rerun_best_spec"]


@dataclass(frozen=True)
class StudyRef:
    local_id: int | None          # this run store's record of it (None: never here)
    name: str
    storage_url: str | None       # None: an older study, all in the run store


def storage_url_of(store: RunStore, storage_url: str | None = None) -> str:
    """The storage a command means: the argument, else $FLOWLAB_STUDY_STORAGE, else the embedded one."""
    from .storage import default_url

    url = storage_url or env.read("FLOWLAB_STUDY_STORAGE") or None
    return url or default_url(store.root)


def start(store: RunStore, spec: StudySpec, image_shape, owner: str | None = None, storage_url: str | None = None,
          workers: int | None = None, launch: bool = True) -> StudyRef:
    """Check the spec, admit it against the caps, store the study and queue its trials (all or
    nothing), then start workers on this machine; the study's reference.

    ConfigError naming the field, StorageError, RunLimitError (over the visitor's cap) or
    StudyExistsError (same name, other spec) before anything is stored.
    """
    p = plan(spec, image_shape)
    check_caps(store, p)
    url = storage_url_of(store, storage_url)
    storage = open_storage(url, store.root)
    name = _unique_name(storage, spec)
    key = storage_key(url)
    studies = StudyStore(store)
    existing = studies.local_of(key, name)
    local = studies.admit(name, key, name, p.n_runs, owner) if existing is None else existing["id"]
    try:
        engine.create(storage, p, name, owner=owner)
    except BaseException:
        if existing is None:
            studies.forget(local)
        raise
    if launch:
        spawn_workers(store, url, name, workers)
    return StudyRef(local, name, url)


def check_caps(store: RunStore, p) -> None:
    """Every run the plan can make is within this server's caps (ConfigError naming the field):
    each arm of a comparison; a search's base configuration with each range's ends."""
    arms = list(p.arms)
    if p.kind == "search":
        for r in p.ranges:
            ends = r.choices if r.kind == "choice" else (r.low, r.high)
            arms += [p.base.arm({r.name: v}, r.name) for v in ends]
    for arm in arms:
        store.limits.check_run(arm.config.to_dict(), arm.train.to_dict())


def _unique_name(storage, spec: StudySpec) -> str:
    """The spec's name; a study started without one gets a free ``study-N`` style name."""
    base = spec.name or spec.preset or "study"
    if spec.name:
        return spec.name
    taken = {s.study_name for s in storage.get_all_studies()}
    name, n = base, 2
    while name in taken:
        name, n = f"{base}-{n}", n + 1
    return name


def spawn_workers(store: RunStore, url: str, name: str | None, workers: int | None = None) -> list[int]:
    """Start ``python -m flowlib.study work`` processes here (their own sessions: Ctrl-C in the
    caller's terminal or a Streamlit restart does not reach them); their pids. Default count:
    the free training slots here (at least one). The storage URL travels in the environment
    (``FLOWLAB_STUDY_STORAGE``), never on a command line other users can read."""
    from flowlib.jobs.launch import start_module

    if workers is None:
        try:
            free = store.limits.max_concurrent - len(store.active_runs())
        except Exception:  # noqa: BLE001
            free = 1
        workers = max(1, free)
    log_dir = store.root / "study-workers"
    log_dir.mkdir(parents=True, exist_ok=True)
    pids = []
    for i in range(int(workers)):
        args = ["work", "--runs-dir", str(store.root), "--gpus", "auto"]
        if name:
            args += ["--study", name]
        with open(log_dir / f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}-{i}.log", "ab") as log:
            proc = start_module("flowlib.study", args, log, FLOWLAB_STUDY_STORAGE=url,
                                FLOWLAB_RUNS_DIR=str(store.root))
        pids.append(proc.pid)
    return pids


def resolve(store: RunStore, ref, storage_url: str | None = None) -> StudyRef:
    """A study id of this run store, or a study name in the storage, as a StudyRef (KeyError)."""
    studies = StudyStore(store)
    if isinstance(ref, StudyRef):
        return ref
    text = str(ref).strip()
    if text.isdigit():
        row = studies.get(int(text))
        if row is None:
            raise KeyError(f"no study with id {text} in the run store {store.root}")
        spec = row["spec"]
        if spec.get("engine") != ENGINE:
            return StudyRef(row["id"], row["name"], None)
        url = storage_url_of(store, storage_url)
        if storage_key(url) != spec.get("storage"):
            raise KeyError(f"study {text} '{spec.get('study')}' lives in {spec.get('storage')}; give that storage "
                           "with --storage (or FLOWLAB_STUDY_STORAGE)")
        return StudyRef(row["id"], spec["study"], url)
    url = storage_url_of(store, storage_url)
    local = studies.local_of(storage_key(url), text)
    return StudyRef(local["id"] if local else None, text, url)


def importance(study) -> dict:
    """Optuna's importance (PED-ANOVA) of each searched setting for the validation bits/dim,
    over the completed trials; {} when fewer than two configurations completed."""
    import optuna
    from optuna.trial import TrialState

    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if len({tuple(sorted(t.params.items())) for t in done}) < 2:
        return {}
    try:
        return dict(optuna.importance.get_param_importances(study))
    except Exception:  # noqa: BLE001 - too few distinct values for the evaluator: no importance yet
        return {}


def answer(store: RunStore, ref, storage_url: str | None = None, with_curves: bool = True) -> dict:
    """Everything a study has found so far (:func:`flowlib.study.answer.answer_from`)."""
    ref = resolve(store, ref, storage_url)
    if ref.storage_url is None:
        row = StudyStore(store).get(ref.local_id)
        meta = {"id": row["id"], "name": row["name"], "status": row["status"], "created": row["created"],
                "owner": row["owner"], "engine": "run store (older study)"}
        return answer_from(meta, row["spec"], legacy_records(store, row), with_curves)
    storage = open_storage(ref.storage_url, store.root)
    study = engine.load(storage, ref.name)
    trials = study.get_trials(deepcopy=False)
    described = engine.stored_plan(study)
    meta = {"id": ref.local_id, "name": study.study_name, "status": engine.state(study, trials),
            "created": study.user_attrs.get("flowlab_created"), "owner": study.user_attrs.get("flowlab_owner"),
            "storage": redact(ref.storage_url), "dashboard": dashboard_command(ref.storage_url),
            "code_version": study.user_attrs.get("flowlab_version"), "rerun": study.user_attrs.get("flowlab_rerun"),
            "optuna_study_id": study._study_id}
    imp = importance(study) if described.get("kind") == "search" else None
    return answer_from(meta, described, trial_records(study, trials), with_curves, imp)


def stop(store: RunStore, ref, storage_url: str | None = None, owner: str | None = None) -> str:
    """Ask the study to stop: no new trial starts, the training ones stop (checkpoint kept) and
    wait for ``resume``. PermissionError when ``owner`` is not the study's."""
    ref = resolve(store, ref, storage_url)
    if ref.storage_url is None:
        done = StudyStore(store).stop(ref.local_id, owner)
        return f"{done['cancelled']} waiting run(s) cancelled, {done['stopping']} stopping"
    study = engine.load(open_storage(ref.storage_url, store.root), ref.name)
    _check_owner(study, owner, "stop")
    engine.request_stop(study)
    return "stop requested: training trials stop within seconds, none starts; --resume continues"


def resume(store: RunStore, ref, storage_url: str | None = None, owner: str | None = None,
           workers: int | None = None, launch: bool = True) -> int:
    """Clear the stop, queue the interrupted trials again and start workers here; how many queued."""
    ref = resolve(store, ref, storage_url)
    if ref.storage_url is None:
        raise KeyError(f"study {ref.local_id} was made before studies were Optuna studies; it cannot be "
                       "resumed, only read (start it again to train it)")
    study = engine.load(open_storage(ref.storage_url, store.root), ref.name)
    _check_owner(study, owner, "resume")
    queued = engine.resume(study)
    if launch:
        spawn_workers(store, ref.storage_url, ref.name, workers)
    return queued


def _check_owner(study, owner, action: str) -> None:
    have = study.user_attrs.get("flowlab_owner")
    if owner is not None and have is not None and str(owner) != have:
        raise PermissionError(f"study '{study.study_name}' belongs to someone else; only its owner can {action} it")


def overview(store: RunStore, storage_url: str | None = None) -> tuple[list[dict], str | None]:
    """(rows, problem): every study of the storage, then the run store's older studies; each row
    {local_id, name, kind, status, trials, machines, created, owner, storage}. ``problem``: why
    the storage could not be read (one sentence), else None."""
    from optuna.trial import TrialState

    rows, problem = [], None
    url = storage_url_of(store, storage_url)
    studies = StudyStore(store)
    try:
        storage = open_storage(url, store.root)
        key = storage_key(url)
        for frozen in engine.list_studies(storage):
            trials = storage.get_all_trials(frozen._study_id, deepcopy=False)
            local = studies.local_of(key, frozen.study_name)
            described = frozen.user_attrs.get(engine.PLAN_KEY, {})
            done = sum(1 for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED))
            rows.append({"local_id": local["id"] if local else None, "name": frozen.study_name,
                         "kind": described.get("kind", "comparison"), "status": engine.state(frozen, trials),
                         "trials": f"{done} of {len(trials)} ended",
                         "pruned": sum(1 for t in trials if t.state == TrialState.PRUNED),
                         "machines": sorted({t.user_attrs.get("machine") for t in trials if t.user_attrs.get("machine")}),
                         "created": frozen.user_attrs.get("flowlab_created") or 0,
                         "owner": frozen.user_attrs.get("flowlab_owner"), "storage": url,
                         "arms": [a["name"] for a in described.get("arms", [])]})
    except (ValueError, OSError) as exc:
        problem = str(exc)
    for s in studies.list(legacy_only=True):
        rows.append({"local_id": s["id"], "name": s["name"], "kind": "comparison (older)", "status": s["status"],
                     "trials": f"{sum(r['status'] == 'finished' for r in s['runs'])} of {len(s['runs'])} finished",
                     "pruned": 0, "machines": [], "created": s["created"], "owner": s["owner"], "storage": None,
                     "arms": [a["name"] for a in s["spec"].get("arms", [])]})
    return rows, problem


def rerun_best_spec(result: dict, seeds: int | None = None) -> StudySpec:
    """A comparison of a search's best configuration against its base configuration, on fresh
    seeds (after the ones the search used), same budget and base: the fair paired answer."""
    best = result.get("best")
    if not best:
        raise ValueError("the search has no best configuration yet (no configuration finished every seed)")
    spec = StudySpec.from_dict({k: v for k, v in result["study"].items()
                                if k in ("dataset", "model_preset", "seeds", "steps", "minutes", "overrides",
                                         "threads")})
    first = int(result["study"].get("first_seed") or 0) + int(result["study"]["seeds"])
    label = "best: " + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                 for k, v in best["settings"].items())
    return spec.replace(name=f"{result['study']['name']}-rerun", seeds=seeds or spec.seeds, first_seed=first,
                        arms=[["base configuration", {}], [label, dict(best["settings"])]],
                        baseline="base configuration", search=[], vary=[])
