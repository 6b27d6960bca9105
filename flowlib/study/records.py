"""A study's runs as plain records, whichever machine trained them and however the study was stored.

    from flowlib.study.records import trial_records, legacy_records, run_summary
    records = trial_records(study)            # an Optuna study: one record per trial
    records = legacy_records(store, study)    # a study made before studies were Optuna studies
    run_summary(store, run_id)                # what a worker reports of a finished run

A record is a dict::

    trial, run_id, machine, arm, settings, seed, role, config   which run this is
    state       finished | pruned | failed | diverged | stopped | lost | running | waiting | retried
    test_bpd    the full test split's bits/dim, read once at the end (None unless finished)
    valid_bpd   the last evaluation on the validation images (what a search selects by)
    steps_trained, budget_steps, rollbacks, lr_cuts    what the run actually did
    curve       {"step", "time", "value"}: the periodic held-out evaluations
    images_per_s, train_seconds, message, environment, retry_of

Older studies (made in the run store's ``studies`` table before this engine) are read as they
are, not migrated: their runs' curves and test numbers are in the run store.
"""

from __future__ import annotations

import math
import statistics

__all__ = ["trial_records", "legacy_records", "run_summary", "state_of_run", "TRIAL_WORDS"]

TRIAL_WORDS = {"COMPLETE": "finished", "PRUNED": "pruned", "FAIL": "failed", "RUNNING": "running",
               "WAITING": "waiting"}


def state_of_run(status: str, message: str = "") -> str:
    """A run store status in a study's words (a failed run that diverged says so)."""
    if status == "failed" and "diverged" in (message or "").lower():
        return "diverged"
    return {"queued": "running", "stopping": "running", "created": "stopped"}.get(status, status)


def _finite(v) -> float | None:
    return float(v) if v is not None and math.isfinite(float(v)) else None


def run_summary(store, run_id: int) -> dict:
    """What the run store knows of a run, as a study reports it (the worker calls this at a
    trial's end; the legacy reader for old studies)."""
    run = store.get_run(run_id) or {}
    m = store.metrics(run_id, keys=["test_bpd", "test_bpd_full", "elapsed_s", "images_per_s"])
    events = store.events(run_id, kinds=["rollback", "lr_drop"])
    curve = _curve(m)
    full = m.get("test_bpd_full", {}).get("value") or []
    elapsed = [v for v in m.get("elapsed_s", {}).get("value", []) if v is not None]
    ips = [v for v in m.get("images_per_s", {}).get("value", []) if v]
    train = run.get("train") or {}
    return {"run_id": run_id, "run_status": run.get("status"), "message": run.get("message", ""),
            "test_bpd": _finite(full[-1]) if full and run.get("status") == "finished" else None,
            "valid_bpd": curve["value"][-1] if curve["value"] else None,
            "steps_trained": int(run.get("step") or 0), "budget_steps": train.get("max_steps"),
            "rollbacks": sum(1 for e in events if e["kind"] == "rollback"),
            "lr_cuts": sum(1 for e in events if e["kind"] == "lr_drop"),
            "curve": curve, "images_per_s": statistics.median(ips) if ips else None,
            "train_seconds": elapsed[-1] if elapsed else None}


def _curve(m: dict) -> dict:
    c = m.get("test_bpd") or {"step": [], "value": []}
    elapsed = m.get("elapsed_s", {"step": [], "value": []})
    steps, values, times = [], [], []
    for s, v in zip(c["step"], c["value"]):
        if v is None:
            continue
        earlier = [t for st, t in zip(elapsed["step"], elapsed["value"]) if st <= s and t is not None]
        steps.append(s)
        values.append(float(v))
        times.append(earlier[-1] if earlier else 0.0)
    return {"step": steps, "time": times, "value": values}


def trial_records(study, trials: list | None = None) -> list[dict]:
    """One record per trial of an Optuna study, in trial order; a failed trial that a retry took
    over reads ``retried`` (its retry is the one that counts)."""
    trials = trials if trials is not None else study.get_trials(deepcopy=False)
    retried = set()
    for t in trials:
        retried.update(t.system_attrs.get("retry_history", []))
    out = []
    for t in trials:
        a = t.user_attrs
        state = TRIAL_WORDS.get(t.state.name, t.state.name.lower())
        if t.state.name == "FAIL":
            if t.number in retried:
                state = "retried"
            elif a.get("interrupted"):
                state = "stopped"
            elif a.get("run_status") == "failed":
                state = state_of_run("failed", a.get("message", ""))
            else:
                state = "lost"
        curve = a.get("curve") or {"step": [], "time": [], "value": []}
        if not curve.get("step") and t.intermediate_values:
            steps = sorted(t.intermediate_values)
            curve = {"step": steps, "time": [None] * len(steps), "value": [t.intermediate_values[s] for s in steps]}
        out.append({"trial": t.number, "run_id": a.get("run_id"), "machine": a.get("machine"),
                    "worker": a.get("worker"),
                    "arm": a.get("arm") or a.get("config") or f"c{t.number}", "settings": dict(t.params),
                    "seed": a.get("seed"), "role": a.get("role"), "config": a.get("config"),
                    "state": state, "test_bpd": a.get("test_bpd") if state == "finished" else None,
                    "valid_bpd": t.value if t.value is not None else a.get("valid_bpd"),
                    "steps_trained": a.get("steps_trained"), "budget_steps": a.get("budget_steps"),
                    "rollbacks": a.get("rollbacks", 0), "lr_cuts": a.get("lr_cuts", 0), "curve": curve,
                    "images_per_s": a.get("images_per_s"), "train_seconds": a.get("train_seconds"),
                    "message": a.get("message", ""), "environment": a.get("environment"),
                    "retry_of": t.system_attrs.get("failed_trial"), "pruned_at": a.get("pruned_at"),
                    "started": t.datetime_start.timestamp() if t.datetime_start else None,
                    "ended": t.datetime_complete.timestamp() if t.datetime_complete else None})
    return out


def legacy_records(store, study: dict) -> list[dict]:
    """Records of a study from the run store's own ``studies`` table (made before the engine)."""
    out = []
    for r in sorted(study["runs"], key=lambda r: (r["seed"], r["id"])):
        summary = run_summary(store, r["id"])
        state = state_of_run(r["status"], r.get("message", ""))
        out.append({"trial": None, "run_id": r["id"], "machine": None, "arm": r["arm"], "settings": {},
                    "seed": r["seed"], "role": "run", "config": None, "state": state,
                    "test_bpd": summary["test_bpd"] if state == "finished" else None,
                    "valid_bpd": summary["valid_bpd"], "steps_trained": summary["steps_trained"],
                    "budget_steps": summary["budget_steps"], "rollbacks": summary["rollbacks"],
                    "lr_cuts": summary["lr_cuts"], "curve": summary["curve"],
                    "images_per_s": summary["images_per_s"], "train_seconds": summary["train_seconds"],
                    "message": r.get("message", ""), "environment": None, "retry_of": None, "pruned_at": None,
                    "started": r.get("started"), "ended": r.get("ended")})
    return out
