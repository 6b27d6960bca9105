"""Estimate against actual: a run's first point and its steps in a time budget, quiet and with
a run training beside it.

    python -m benchmarks.estimates --runs-dir /tmp/est --minutes 0.6            # quiet
    python -m benchmarks.estimates --runs-dir /tmp/est --minutes 0.6 --beside   # beside a faces run

For each setting in turn (``--settings``, default four: mnist-fast at batch 64 and 32, a
narrower mnist-fast, faces-fast), the benchmark asks what the Train page asks before Start
(``flowlib.jobs.forecast.forecast`` over the store's history and the load now, with the
speed measurement of ``flowlib.jobs.estimate`` when no earlier run has these settings),
then starts the run as the page does (``worker.submit``, a process of its own, the app's
training defaults and a minutes budget), and reads what happened: the first point's time
after the submit and the last step. Every run stays in the store, so later runs learn from
earlier ones: run it quiet first, then ``--beside`` on the same ``--runs-dir``.

``--beside`` first starts a faces-fast run in a store of its own (``--runs-dir``/beside,
the trainer's own CLI, 2 threads) and waits for its first point, then stops it at the end.
The target is estimate/actual within 0.7–1.3 for both numbers.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

SETTINGS = {
    "mnist-64": dict(preset="mnist-fast", dataset="mnist", batch=64, changes={}),
    "mnist-32": dict(preset="mnist-fast", dataset="mnist", batch=32, changes={}),
    "mnist-narrow": dict(preset="mnist-fast", dataset="mnist", batch=64, changes={"hidden": 32}),
    "faces-64": dict(preset="faces-fast", dataset="faces", batch=64, changes={}),
}


def _configs(name: str, minutes: float):
    from flowlib.config import APP_TRAIN_DEFAULTS, PRESET_LR, PRESETS
    from flowlib.data import load_images

    s = SETTINGS[name]
    shape = tuple(load_images(s["dataset"], "test").images.shape[1:])
    cfg = PRESETS[s["preset"]].replace(image_shape=shape, **s["changes"])
    tc = APP_TRAIN_DEFAULTS.replace(dataset=s["dataset"], batch_size=s["batch"], max_steps=None,
                                    max_minutes=minutes, lr=PRESET_LR.get(s["preset"], APP_TRAIN_DEFAULTS.lr),
                                    bf16=True, first_eval=50)
    return cfg, tc


def predict(store, cfg, tc, wait_s: float = 90.0):
    """The forecast the Train page would show now (waiting for a speed measurement if one is needed)."""
    from flowlib.config import FlowConfig, TrainConfig
    from flowlib.jobs.estimate import SpeedEstimator, SpeedRequest
    from flowlib.jobs.forecast import forecast

    estimator = SpeedEstimator(store.root / "speed-estimates")
    request = SpeedRequest.for_run(cfg, tc)

    def measured_of(run):
        known = estimator.cached(SpeedRequest.for_run(FlowConfig.from_dict(run["config"]),
                                                      TrainConfig.from_dict(run["train"])))
        return (known or {}).get("images_per_s")

    deadline = time.monotonic() + wait_s
    while True:
        speed = estimator.estimate(request, store)
        if speed is not None or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    while estimator.measuring(request) and time.monotonic() < deadline:
        time.sleep(0.2)    # the measuring process is still exiting: not a load beside the run
    time.sleep(5.0)        # as a person would: the previous run has left the load watch's 4-s window
    return forecast(store, request, tc, speed, measured_of=measured_of)


def run_once(store, name: str, minutes: float) -> dict:
    from flowlib.jobs import worker
    from flowlib.store.request import RunRequest

    cfg, tc = _configs(name, minutes)
    fc = predict(store, cfg, tc)
    t0 = time.time()
    run_id = worker.submit(store, RunRequest(f"est-{name}", cfg, tc, preset=SETTINGS[name]["preset"]))
    first = None
    while True:
        run = store.get_run(run_id)
        if first is None:
            rows = store.metrics(run_id, keys=["train_bpd"]).get("train_bpd")
            if rows:
                first = rows["wall"][0] - t0
        if run["status"] not in ("queued", "running", "stopping"):
            break
        time.sleep(0.2)
    return {"setting": name, "run": run_id, "busy_now": round(fc.busy_now, 2) if fc else None,
            "source": fc.source if fc else None,
            "first_point_est": round(fc.first_point_s, 1) if fc else None, "first_point": round(first or -1, 1),
            "steps_est": fc.steps_in(minutes) if fc else None, "steps": run["step"], "status": run["status"]}


def start_beside(folder: Path, minutes: float) -> subprocess.Popen:
    """A faces-fast run training in a store of its own, in its own session (killed by group at the end)."""
    folder.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(
        [sys.executable, "-m", "flowlib.train", "--preset", "faces-fast", "--dataset", "faces",
         "--minutes", str(minutes), "--steps", "100000000", "--threads", "2", "--runs-dir", str(folder),
         "--name", "beside", "--quiet"], cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True)
    from flowlib.store.runs import RunStore
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        time.sleep(1.0)
        try:
            runs = RunStore(folder).list_runs()
        except Exception:   # noqa: BLE001 - the store is being created
            continue
        if runs and RunStore(folder).metrics(runs[0]["id"], keys=["train_bpd"]):
            return proc
    return proc


@contextlib.contextmanager
def beside_run(folder: Path, minutes: float, wanted: bool = True):
    """With ``wanted``: a faces-fast run (:func:`start_beside`) trains while the block runs and is
    stopped at its end, however the block ends; yields its process, or None when not wanted."""
    proc = start_beside(folder, minutes) if wanted else None
    try:
        yield proc
    finally:
        if proc is not None:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=60)


def emit(row: dict, json_path: str | None) -> None:
    """Print one benchmark row as JSON, and append it to ``json_path`` (JSON lines) when given."""
    print(json.dumps(row), flush=True)
    if json_path:
        with open(json_path, "a") as f:
            f.write(json.dumps(row) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.estimates", description=__doc__.split("\n")[0])
    parser.add_argument("--runs-dir", required=True, help="run store whose history the estimates learn from")
    parser.add_argument("--minutes", type=float, default=0.6, help="each run's time budget")
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--beside", action="store_true", help="with a faces-fast run training beside them")
    parser.add_argument("--json", default=None, help="append the rows to this JSON-lines file")
    args = parser.parse_args(argv)
    from flowlib.store.runs import RunStore

    store = RunStore(args.runs_dir)
    rows = []
    with beside_run(Path(args.runs_dir) / "beside", 30.0, args.beside):
        for name in args.settings:
            row = run_once(store, name, args.minutes)
            row["load"] = "beside a run" if args.beside else "quiet"
            rows.append(row)
            emit(row, args.json)
    print("\n| setting | load | first point est. / actual, s | ratio | steps est. / actual | ratio |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        fr = r["first_point_est"] / r["first_point"] if r["first_point_est"] and r["first_point"] > 0 else float("nan")
        sr = r["steps_est"] / r["steps"] if r["steps_est"] and r["steps"] else float("nan")
        print(f"| {r['setting']} | {r['load']} | {r['first_point_est']} / {r['first_point']} | {fr:.2f} | "
              f"{r['steps_est']} / {r['steps']} | {sr:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
