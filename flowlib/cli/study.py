"""``python -m flowlib.study``: run a study with no browser; it shows in the app while it runs.

    python -m flowlib.study --preset permutation --seeds 3 --steps 2000 --json results.json
    python -m flowlib.study --vary coupling=additive,affine --set hidden=32 --steps 300
    python -m flowlib.study --list
    python -m flowlib.study --show 4 --json study4.json

The runs go through the run store's queue (the same store the app reads), one after another
when the server allows one training run at a time. This command waits for them, printing
each run as it ends, then prints the table and the verdict and writes ``--json``. Ctrl-C
stops the study (waiting runs are cancelled, the training one saves a checkpoint) and
prints what it found so far. ``--no-wait`` queues the study and returns at once.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

from flowlib.config import PRESETS
from flowlib.settings import ConfigError
from flowlib.store.runs import RunStore, StoreBusyError
from flowlib.study.spec import (
    MAX_SEEDS,
    STUDY_PRESETS,
    StudySpec,
    answer,
    estimate_seconds,
    json_result,
    parse_assignment,
    plan,
    submit,
)

__all__ = ["main", "build_parser"]

ENDED = ("finished", "failed", "lost", "stopped", "created")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m flowlib.study",
        description="Train the same model under two or more settings, several seeds each, and "
                    "compare final test bits/dim with 95 %% intervals and paired differences.",
        formatter_class=lambda prog: argparse.HelpFormatter(prog, max_help_position=34, width=120))
    p.add_argument("--preset", choices=sorted(STUDY_PRESETS), metavar="NAME",
                   help="a one-click study: " + "; ".join(f"{k} ({v.title})" for k, v in STUDY_PRESETS.items()))
    p.add_argument("--vary", action="append", default=[], metavar="SETTING=V1,V2",
                   help="a setting to vary and its values (once or twice; replaces the preset's)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
                   help="change the base configuration, model or training (e.g. hidden=32, lr=0.005)")
    p.add_argument("--seeds", type=int, default=3, metavar="N", help=f"seeds per arm, 1..{MAX_SEEDS} (default 3)")
    p.add_argument("--first-seed", type=int, default=0, metavar="N", help="the first seed (default 0)")
    p.add_argument("--steps", type=int, default=None, metavar="N", help="training steps per run (default 2000)")
    p.add_argument("--minutes", type=float, default=None, metavar="M",
                   help="a time budget per run instead (unfair across devices and loads)")
    p.add_argument("--baseline", default=None, metavar="ARM", help="the arm the others are compared with")
    p.add_argument("--model-preset", default="mnist-fast", choices=sorted(PRESETS), metavar="NAME",
                   help="the base model (default mnist-fast)")
    p.add_argument("--dataset", default="mnist", metavar="NAME", help="dataset (default mnist)")
    p.add_argument("--data-path", default=None, metavar="PATH", help="folder or file for datasets that read one")
    p.add_argument("--name", default=None, metavar="NAME", help="the study's name in the app")
    p.add_argument("--runs-dir", default=None, metavar="DIR",
                   help="run store folder (default $FLOWLAB_RUNS_DIR or checkpoints/runs)")
    p.add_argument("--json", default=None, metavar="FILE", help="write the answer as JSON here")
    p.add_argument("--no-wait", action="store_true", help="queue the study and return")
    p.add_argument("--no-estimate", action="store_true",
                   help="do not measure this device's speed before starting (earlier runs still count)")
    p.add_argument("--show", type=int, default=None, metavar="ID", help="print the answer of an existing study")
    p.add_argument("--list", action="store_true", help="list the studies in the store")
    return p


def _spec(args) -> StudySpec:
    vary = []
    for item in args.vary:
        name, values = parse_assignment(item)
        vary.append((name, tuple(v.strip() for v in values.split(",") if v.strip())))
    overrides = dict(parse_assignment(item) for item in args.overrides)
    steps = args.steps if args.steps is not None else (None if args.minutes is not None else 2000)
    common = dict(seeds=args.seeds, first_seed=args.first_seed, steps=steps, minutes=args.minutes,
                  dataset=args.dataset, model_preset=args.model_preset, overrides=overrides,
                  dataset_options={"path": args.data_path} if args.data_path else {})
    if args.name:
        common["name"] = args.name
    if args.preset:
        spec = StudySpec.from_preset(args.preset, **common)
        if vary:
            spec = StudySpec.from_dict({**spec.to_dict(), "vary": vary, "baseline": None, "preset": None})
    elif vary:
        spec = StudySpec(vary=tuple(vary), name=args.name or "study-" + "-".join(n for n, _ in vary), **{
            k: v for k, v in common.items() if k != "name"})
    else:
        raise ConfigError("say what to compare: --preset NAME or --vary SETTING=V1,V2", "vary")
    if args.baseline:
        spec = StudySpec.from_dict({**spec.to_dict(), "baseline": args.baseline})
    return spec


def _fmt(v, digits=4) -> str:
    return "–" if v is None else f"{v:.{digits}f}"


def print_answer(result: dict, out=sys.stdout) -> None:
    s = result["study"]
    budget = f"{s['steps']:,} steps" if s["steps"] else f"{s['minutes']:g} minutes"
    print(f"\nStudy {s['id']} '{s['name']}' ({s['status']}): {s['model_preset']} on {s['dataset']}, "
          f"{budget} per run, {s['seeds']} seed(s); baseline: {result['baseline']}", file=out)
    print(f"{'arm':<28} {'seeds':>5}  {'test bits/dim, mean ± 95 %':<28} {'images/s':>9} {'params':>10}", file=out)
    for a in result["arms"]:
        if a["ci95"] is not None:
            text = f"{a['mean']:.4f} ± {(a['ci95'][1] - a['ci95'][0]) / 2:.4f}"
        else:
            text = _fmt(a["mean"]) + (" (no interval)" if a["mean"] is not None else "")
        print(f"{a['name'][:28]:<28} {a['n']:>2}/{len(a['runs']):<2}  {text:<28} "
              f"{_fmt(a['images_per_s'], 0):>9} {a['parameters']:>10,}", file=out)
        per_seed = ", ".join(f"s{r['seed']} {_fmt(r['final_test_bpd'])}" if r["final_test_bpd"] is not None
                             else f"s{r['seed']} {r['status']}" for r in a["runs"])
        print(f"{'':<28}        {per_seed}", file=out)
    if result["differences"]:
        print("Paired differences (arm − baseline, same seeds; negative = arm is better):", file=out)
        for d in result["differences"]:
            ci = "no interval" if d["ci95"] is None else f"95 % [{d['ci95'][0]:+.4f}, {d['ci95'][1]:+.4f}]"
            print(f"  {d['arm']} − {d['vs']}: {_fmt(d['mean'])} ({ci}, {d['n']} seeds)", file=out)
    print("Verdict:", file=out)
    for line in result["verdict"]:
        print(f"  {line}", file=out)
    for line in result["warnings"]:
        print(f"  note: {line}", file=out)


def _write_json(path: str, result: dict) -> None:
    from pathlib import Path

    from flowlib.fileio import atomic_write
    data = json.dumps(json_result(result), indent=2).encode()
    atomic_write(Path(path).expanduser(), lambda f: f.write(data))
    print(f"wrote {path}")


def _json_target_problem(path: str, no_wait: bool) -> str | None:
    """Why --json could not be written at the end (checked before hours of training), or None."""
    import os
    from pathlib import Path

    if no_wait:
        return "--json needs the study's end; without --no-wait, or later with --show ID --json FILE"
    target = Path(path).expanduser()
    folder = target.parent if str(target.parent) else Path(".")
    if target.is_dir():
        return f"--json {path} is a folder; give a file name"
    if not folder.is_dir():
        return f"--json {path}: the folder {folder} does not exist"
    if not os.access(folder, os.W_OK):
        return f"--json {path}: the folder {folder} is not writable"
    return None


def _estimate_line(store, p, wait_s: float = 45.0) -> str:
    """The whole study's time on this device: from earlier runs of the same settings here, or
    from a short measurement of each arm in a subprocess (at most ``wait_s``; 0: do not measure)."""
    from flowlib.jobs.estimate import SpeedEstimator, SpeedRequest
    estimator = SpeedEstimator(store.root / "speed-estimates")
    requests = {arm.name: SpeedRequest.for_run(arm.config, arm.train) for arm in p.arms}
    speeds: dict[str, float | None] = {}
    deadline = time.monotonic() + wait_s
    while True:
        for name, request in requests.items():
            if speeds.get(name) is None:
                got = estimator.estimate(request, store) if wait_s > 0 else estimator.known(request, store)
                if got and "images_per_s" in got:
                    speeds[name] = got["images_per_s"]
        if all(speeds.get(n) for n in requests) or time.monotonic() > deadline or wait_s <= 0:
            break
        time.sleep(0.5)
    seconds = estimate_seconds(p, speeds)
    if seconds is None:
        return ("time: not known yet on this device (no earlier run of these settings; the measurement "
                "did not finish); an estimate follows after the first run")
    return (f"time: about {_duration(seconds)} for all {p.n_runs} runs, one after another "
            f"(training at {min(speeds.values()):,.0f}–{max(speeds.values()):,.0f} images/s here, plus "
            "evaluations and start-up; longer if the machine is busy)")


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.0f} min"


def _wait(store, study_id: int, p) -> None:
    from flowlib.jobs import worker
    from flowlib.store.studies import StudyStore

    studies, seen = StudyStore(store), {}
    while True:
        study = studies.get(study_id)
        runs = study["runs"] if study else []
        for r in runs:
            if r["status"] in ENDED and seen.get(r["id"]) != r["status"]:
                seen[r["id"]] = r["status"]
                left = sum(1 for x in runs if x["status"] not in ENDED)
                eta = ""
                took = [x["ended"] - x["started"] for x in runs
                        if x["status"] == "finished" and x.get("started") and x.get("ended")]
                if left and took:
                    # from how long this study's finished runs trained (not the time spent waiting
                    # for a slot, which another study or run may have held)
                    eta = f" About {_duration(statistics.median(took) * left)} left."
                message = r["message"].rstrip(".")
                print(f"[{len(seen)}/{len(runs)}] run {r['id']} {r['arm']} seed {r['seed']}: {r['status']} — "
                      f"{message}.{eta}", flush=True)
        if not runs or all(r["status"] in ENDED for r in runs):
            return
        try:
            worker.start_waiting(store)   # a back-up: a worker that died silently cannot
        except StoreBusyError:
            pass
        time.sleep(1.0)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        store = RunStore(args.runs_dir)
    except Exception as exc:  # noqa: BLE001 - one sentence, not a traceback
        print(f"error: cannot open the run store: {exc}", file=sys.stderr)
        return 2
    from flowlib.store.studies import StudyStore

    if args.list:
        for s in StudyStore(store).list():
            print(f"{s['id']:>4}  {s['name']:<30} {s['status']:<9} {len(s['runs'])} runs")
        return 0
    if args.show is not None:
        try:
            result = answer(store, args.show, with_curves=False)
        except KeyError as exc:
            print(f"error: {exc.args[0]}", file=sys.stderr)
            return 2
        print_answer(result)
        if args.json:
            _write_json(args.json, result)
        return 0
    if args.json:
        problem = _json_target_problem(args.json, args.no_wait)
        if problem:
            print(f"error: {problem}", file=sys.stderr)
            return 2
    try:
        spec = _spec(args)
        from flowlib.study.spec import dataset_shape
        shape = dataset_shape(spec.dataset, spec.dataset_options)
        p = plan(spec, shape)
        for arm in p.arms:
            store.limits.check_train(arm.train.to_dict())
    except (ConfigError, ValueError, OSError) as exc:
        field = getattr(exc, "field", None)
        print(f"error: {exc}" + (f" (field: {field})" if field else ""), file=sys.stderr)
        return 2
    tc = p.arms[0].train
    budget = f"{tc.max_steps:,} steps" if tc.max_steps else f"{tc.max_minutes:g} minutes"
    print(f"Study '{spec.name}': {len(p.arms)} arms × {len(p.seeds)} seeds = {p.n_runs} runs of {budget} "
          f"on {spec.dataset} ({spec.model_preset}); baseline {p.baseline}")
    print(f"  arms: {'; '.join(a.name for a in p.arms)}")
    print(f"  training: lr {tc.lr:g}, {tc.lr_schedule} schedule, warm-up {tc.warmup_steps} steps, "
          f"batch {tc.batch_size}, test every {tc.eval_every} steps, full test set at the end")
    print(f"  {_estimate_line(store, p, 0.0 if args.no_estimate else 45.0)}", flush=True)
    for w in p.warnings:
        print(f"  warning: {w}")
    try:
        study_id = submit(store, spec, shape)
    except (ConfigError, ValueError, PermissionError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"Study {study_id} queued ({p.n_runs} runs); it shows on the app's Runs page.", flush=True)
    if args.no_wait:
        return 0
    try:
        _wait(store, study_id, p)
    except KeyboardInterrupt:
        print("\nStopping the study: waiting runs cancelled, the training one saves a checkpoint ...",
              flush=True)
        StudyStore(store).stop(study_id)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            study = StudyStore(store).get(study_id)
            if all(r["status"] in ENDED for r in study["runs"]):
                break
            time.sleep(0.5)
    result = answer(store, study_id, with_curves=False)
    print_answer(result)
    if args.json:
        _write_json(args.json, result)
    return 0 if all(a["n"] > 0 for a in result["arms"]) else 1


if __name__ == "__main__":
    sys.exit(main())
