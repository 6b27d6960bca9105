"""How long a study will take on this machine, told before it starts and corrected as runs finish.

    from flowlib.study.estimate import study_seconds, remaining_seconds, load_share
    seconds = study_seconds(p, {"arm": images_per_s, ...}, workers=1)     # None if a speed is unknown
    left = remaining_seconds(p, records, speeds, workers=1)               # after some trials ended

Before: each arm's training speed on this device (``flowlib.jobs.estimate``: the median speed of
earlier runs of the same configuration here, else a short measurement), times the budget, plus
each run's evaluations (about 3× faster per image than a training step), its final pass over
the test split, and a worker's start-up per run; divided among the runs that train at once,
and slowed by the machine's current load (:func:`load_share`: each thread's fair share of the
cores among all the threads ready to run now).
During: every finished trial says how long a run of its arm really took here (wall time
from its start to its end); the rest of the study is re-estimated from those (the
median of the arm's finished runs, else the first estimate scaled by how far the finished
runs were off), so the estimate converges as runs finish. Searches use the base
configuration's speed for every configuration (a drawn width changes it; said in words).
"""

from __future__ import annotations

import os
import statistics

__all__ = ["study_seconds", "run_seconds", "remaining_seconds", "load_share", "RUN_OVERHEAD_S", "EVAL_SPEEDUP"]

# Measured here (2-core VM): a trial takes ~6 s from being claimed to its first step (the
# run's row, data from disk, model build, ActNorm start) and evaluation runs ~3× faster per
# image than a training step (forward only, no backward).
RUN_OVERHEAD_S = 6.0
EVAL_SPEEDUP = 3.0


def load_share(threads: int | None, busy: float | None = None) -> float:
    """The share of a core each of a run's threads gets now: 1 on a quiet machine,
    less when other processes keep the cores busy. ``busy``: threads of other programs ready to
    run (default :func:`flowlib.machine.load.busy_lately`, over the last seconds; the 1-minute
    load average it replaces still counted a run that had ended a minute ago, and a study
    started after one was estimated about twice too long)."""
    from flowlib.machine.load import busy_lately

    cores = os.cpu_count() or 1
    busy = busy_lately() if busy is None else busy
    want = threads or cores
    # Linux shares the cores among the threads ready to run: with more of them than cores, each
    # gets cores / (all of them). ("What the others leave", cores − busy, said 25 % for a
    # one-thread study beside a two-thread run on 2 cores, and the study took 0.42 of that estimate.)
    return max(0.2, min(1.0, cores / max(cores, busy + want)))


def run_seconds(train, images_per_s: float, test_images: int = 10_000, validation: int | None = None) -> float:
    """Seconds of one run: training, its evaluations, the final test pass, start-up."""
    if train.max_steps is not None:
        train_s = train.max_steps * train.batch_size / images_per_s
        evals = train.max_steps // train.eval_every
    else:
        train_s = train.max_minutes * 60
        evals = 10
    per_eval = validation if validation is not None else (
        train.validation_images if train.validation_images else train.eval_subset)
    eval_s = (evals * per_eval + test_images) / (EVAL_SPEEDUP * images_per_s)
    if train.max_minutes is not None:
        train_s = min(train_s, train.max_minutes * 60)
    return train_s + eval_s + RUN_OVERHEAD_S


def runs_at_once(p, max_concurrent: int, workers: int | None = None) -> int:
    """How many of a study's runs train at once here: no more than its workers (all the store's
    training slots when not given), than the slots (workers beyond them wait for one) or than
    the study's runs (extra workers stay idle)."""
    return max(1, min(max_concurrent if workers is None else workers, max_concurrent, p.n_runs))


def study_seconds(p, images_per_s: dict, workers: int = 1, test_images: int = 10_000,
                  share: float | None = None) -> float | None:
    """The whole study's seconds here, from each arm's training images/s (None when one is
    unknown), shared among ``workers`` and slowed by the current load. ``workers``: the runs
    that train at once here (workers beyond the store's training slots wait for a slot, so
    callers pass at most ``store.limits.max_concurrent``; more workers than runs leave the
    extra ones idle, so at most ``p.n_runs`` count)."""
    total = 0.0
    for arm in p.arms:
        ips = images_per_s.get(arm.name)
        if not ips or ips <= 0:
            return None
        runs = p.n_runs if p.kind == "search" else len(p.seeds)
        total += runs * run_seconds(arm.train, ips, test_images)
    share = load_share(p.arms[0].train.threads) if share is None else share
    return total / max(1, min(workers, p.n_runs)) / share


def remaining_seconds(p, records: list[dict], first_estimate: dict, workers: int = 1) -> float | None:
    """Seconds left, corrected by the trials that ended: ``first_estimate`` maps each arm to its
    predicted seconds per run; ``records`` are the study's trials so far (a running one counts
    as half a run left)."""
    ended = [r for r in records if r["state"] in ("finished", "pruned", "failed", "diverged")
             and r.get("started") and r.get("ended")]
    took: dict[str, list[float]] = {}
    ratios = []
    for r in ended:
        arm = r["arm"] if p.kind == "comparison" else p.arms[0].name
        took.setdefault(arm, []).append(r["ended"] - r["started"])
        if r["state"] == "finished" and first_estimate.get(arm):
            ratios.append((r["ended"] - r["started"]) / first_estimate[arm])
    scale = statistics.median(ratios) if ratios else 1.0
    left = 0.0
    planned_left = _planned_left(p, records)
    for arm, count in planned_left.items():
        per_run = statistics.median(took[arm]) if took.get(arm) else (first_estimate.get(arm) or 0) * scale
        if not per_run:
            return None
        left += count * per_run
    return left / max(1, workers)


def _planned_left(p, records: list[dict]) -> dict[str, float]:
    """Runs still to train per arm (a search: every configuration left, all its seeds; a pruned
    configuration's missing seeds are not counted)."""
    active = [r for r in records if r["state"] in ("waiting", "running")]
    if p.kind == "comparison":
        out: dict[str, float] = {}
        for r in active:
            out[r["arm"]] = out.get(r["arm"], 0) + (0.5 if r["state"] == "running" else 1)
        return out
    leads_left = sum(1 for r in active if r["role"] == "lead")
    seeds_left = sum(1 for r in active if r["role"] == "seed")
    n_seeds = len(p.seeds)
    return {p.arms[0].name: leads_left * n_seeds + seeds_left}
