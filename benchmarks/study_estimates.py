"""A study's time estimate against what it took, and what the Optuna engine adds per trial,
quiet and with a run training beside it.

    python -m benchmarks.study_estimates --runs-dir /tmp/sest                 # quiet
    python -m benchmarks.study_estimates --runs-dir /tmp/sest --beside        # beside a faces run

Each study (``--studies``, default three: a two-arm comparison, a width comparison and a
three-configuration search) is started the way a researcher starts one, ``python -m
flowlib.study …`` in a process of its own on the shared ``--runs-dir``, and read afterwards:

* the estimate: the seconds the CLI printed before starting ("time: about …"), against the
  wall time from the command's start to its answer;
* per trial, from the Optuna storage and the run store: the trial's wall time (Optuna's start
  to complete) against its run's (the run row's start to end), the difference being what
  the engine adds per trial (ask, enqueue, the worker's claim, tell, the answer's records);
  and the run's start-up (its start to its first logged step: process, data, model, ActNorm).

Studies run in order on one store, so later ones learn speeds from earlier runs, as a
researcher's second study does: run it quiet first, then ``--beside`` on the same folder.
The target is estimate / actual within 0.7–1.3.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.estimates import beside_run, emit

REPO = Path(__file__).resolve().parent.parent

STUDIES = {
    "coupling": ["--preset", "coupling", "--seeds", "2", "--steps", "300"],
    "width": ["--vary", "hidden=32,64", "--seeds", "2", "--steps", "300"],
    "search": ["--search", "lr=1e-3:1e-2:log", "--trials", "3", "--seeds", "1", "--steps", "300", "--no-prune"],
}

_ESTIMATE = re.compile(r"time: about (?:(\d+) min)? ?(?:(\d+) s)?")


def parse_estimate(text: str) -> float | None:
    """Seconds from the CLI's "time: about 4 min 05 s …" line (None when it had no estimate)."""
    for line in text.splitlines():
        m = _ESTIMATE.search(line)
        if m and (m.group(1) or m.group(2)):
            return 60.0 * int(m.group(1) or 0) + int(m.group(2) or 0)
    return None


def trial_timings(runs_dir: Path, name: str) -> list[dict]:
    """Per trial of study ``name``: its wall time in Optuna, its run's wall time and start-up."""
    import optuna

    from flowlib.store.runs import RunStore

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(study_name=name, storage=f"sqlite:///{runs_dir / 'studies.sqlite'}")
    store = RunStore(runs_dir)
    rows = []
    for t in study.trials:
        run_id = t.user_attrs.get("run_id")
        if run_id is None or t.datetime_complete is None:
            continue
        run = store.get_run(run_id)
        walls = store.metrics(run_id, keys=["train_bpd"]).get("train_bpd", {}).get("wall") or [None]
        trial_s = (t.datetime_complete - t.datetime_start).total_seconds()
        run_s = run["ended"] - run["started"]
        rows.append({"trial": t.number, "trial_s": trial_s, "run_s": run_s, "engine_s": trial_s - run_s,
                     "startup_s": (walls[0] - run["started"]) if walls[0] else None})
    return rows


def run_study(runs_dir: Path, label: str, args: list[str], beside: bool) -> dict:
    name = f"sest-{label}-{'beside' if beside else 'quiet'}-{int(time.time())}"
    # The CLI's own number of workers (one per training slot): extra workers would only wait for
    # a slot, and Optuna would count that wait in their trials' time.
    cmd = [sys.executable, "-m", "flowlib.study", *args, "--threads", "1",
           "--runs-dir", str(runs_dir), "--name", name]
    t0 = time.monotonic()
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    took = time.monotonic() - t0
    estimate = parse_estimate(proc.stdout)
    trials = trial_timings(runs_dir, name) if proc.returncode == 0 else []
    engine = [r["engine_s"] for r in trials]
    startup = [r["startup_s"] for r in trials if r["startup_s"] is not None]
    return {"study": label, "load": "beside a run" if beside else "quiet", "exit": proc.returncode,
            "estimate_s": estimate, "actual_s": round(took, 1),
            "ratio": round(estimate / took, 2) if estimate else None, "trials": len(trials),
            "engine_s_median": round(statistics.median(engine), 2) if engine else None,
            "engine_s_max": round(max(engine), 2) if engine else None,
            "startup_s_median": round(statistics.median(startup), 2) if startup else None,
            "estimate_line": next((line.strip() for line in proc.stdout.splitlines() if "time:" in line), None),
            "stderr": proc.stderr[-800:] if proc.returncode else ""}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.study_estimates", description=__doc__.split("\n")[0])
    parser.add_argument("--runs-dir", required=True, help="run store (and study storage) the studies share")
    parser.add_argument("--studies", nargs="+", default=list(STUDIES), choices=list(STUDIES))
    parser.add_argument("--beside", action="store_true", help="with a faces-fast run training beside them")
    parser.add_argument("--json", default=None, help="append the rows to this JSON-lines file")
    args = parser.parse_args(argv)
    runs_dir = Path(args.runs_dir).resolve()
    runs_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    with beside_run(runs_dir / "beside", 60.0, args.beside):
        for label in args.studies:
            row = run_study(runs_dir, label, STUDIES[label], args.beside)
            rows.append(row)
            emit(row, args.json)
    print("\n| study | load | estimate / actual, s | ratio | trials | engine per trial, median (max) s | run start-up, s |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['study']} | {r['load']} | {r['estimate_s']} / {r['actual_s']} | {r['ratio']} | {r['trials']} | "
              f"{r['engine_s_median']} ({r['engine_s_max']}) | {r['startup_s_median']} |")
    return 0 if all(r["exit"] == 0 for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
