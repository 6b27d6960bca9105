"""``python -m flowlib.study``: compare settings or search ranges, on Optuna, with no browser.

    python -m flowlib.study --preset permutation --seeds 3 --steps 2000 --json results.json
    python -m flowlib.study --vary coupling=additive,affine --set hidden=32 --steps 300 --csv table.csv
    python -m flowlib.study --search lr=1e-4:1e-2:log --search hidden=32,64,128 --trials 12 --steps 500
    python -m flowlib.study --list | --show ID_OR_NAME | --stop ID_OR_NAME | --resume ID_OR_NAME
    python -m flowlib.study --rerun-best ID_OR_NAME       # the search's best vs its baseline, fresh seeds
    python -m flowlib.study work --storage postgresql://flowlab@db-host/flowlab [--gpus all]

A study is an Optuna study in a study storage (``--storage URL``; default
``$FLOWLAB_STUDY_STORAGE``, else ``studies.sqlite`` in the runs folder). Starting one stores it,
queues its trials and starts workers on this machine (``work`` processes in their own
sessions), then watches: each trial as it ends, the time left (corrected as runs finish), and
at the end the answer, ``--json`` and ``--csv``. Ctrl-C *detaches*: the workers go on, the
study finishes without this terminal (``--show`` reads it, ``--stop`` stops it). ``--no-wait``
returns once it is queued.

Exit codes: 0 the study finished (every planned trial ended); 1 it ended without finishing
(stopped, or trials failed with no retry left); 2 refused input (one sentence naming the
field, nothing stored); 3 detached or queued while it still runs.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import time

from flowlib.config import PRESETS
from flowlib.settings import ConfigError

__all__ = ["main", "build_parser", "print_answer"]

EXIT_FINISHED, EXIT_UNFINISHED, EXIT_REFUSED, EXIT_DETACHED = 0, 1, 2, 3


def build_parser() -> argparse.ArgumentParser:
    from flowlib.study.spec import MAX_SEEDS, MAX_TRIALS, STUDY_PRESETS

    p = argparse.ArgumentParser(
        prog="python -m flowlib.study",
        description="Train the same model under two or more settings (a comparison) or over ranges of "
                    "settings (a search), several paired seeds each, on Optuna; answer with 95 %% intervals, "
                    "every pair compared (Holm-corrected), the best configuration and each setting's importance. "
                    "`python -m flowlib.study work --storage URL` joins a study from another machine.",
        formatter_class=lambda prog: argparse.HelpFormatter(prog, max_help_position=34, width=120))
    p.add_argument("--preset", choices=sorted(STUDY_PRESETS), metavar="NAME",
                   help="a one-click study: " + "; ".join(f"{k} ({v.title})" for k, v in STUDY_PRESETS.items()))
    p.add_argument("--vary", action="append", default=[], metavar="SETTING=V1,V2",
                   help="a setting to compare and its values (once or twice; replaces the preset's)")
    p.add_argument("--search", action="append", default=[], metavar="SETTING=RANGE",
                   help="a setting to search: LOW:HIGH, LOW:HIGH:log, LOW:HIGH:STEP (whole numbers) or V1,V2,... "
                        "(repeat for more settings); Optuna's TPE sampler draws --trials configurations")
    p.add_argument("--trials", type=int, default=10, metavar="N",
                   help=f"a search: configurations to draw, 2..{MAX_TRIALS} (default 10), each trained with every seed")
    prune = p.add_mutually_exclusive_group()
    prune.add_argument("--prune", dest="prune", action="store_true", default=None,
                       help="prune losing configurations (a search's default; Optuna's MedianPruner on first-seed runs)")
    prune.add_argument("--no-prune", dest="prune", action="store_false", help="train every configuration to the end")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
                   help="change the base configuration, model or training (e.g. hidden=32, lr=0.005)")
    p.add_argument("--seeds", type=int, default=3, metavar="N", help=f"seeds per arm or configuration, 1..{MAX_SEEDS} (default 3)")
    p.add_argument("--first-seed", type=int, default=0, metavar="N", help="the first seed (default 0)")
    p.add_argument("--steps", type=int, default=None, metavar="N", help="training steps per run (default 2000)")
    p.add_argument("--minutes", type=float, default=None, metavar="M",
                   help="a time budget per run instead (unfair across devices and loads)")
    p.add_argument("--threads", type=int, default=None, metavar="N",
                   help="CPU threads of every run, fixed so runs repeat bit for bit (default 2, or 1 on one core)")
    p.add_argument("--baseline", default=None, metavar="ARM", help="the arm the others are compared with first")
    p.add_argument("--model-preset", default="mnist-fast", choices=sorted(PRESETS), metavar="NAME",
                   help="the base model (default mnist-fast)")
    p.add_argument("--dataset", default="mnist", metavar="NAME", help="dataset (default mnist)")
    p.add_argument("--data-path", default=None, metavar="PATH", help="folder or file for datasets that read one")
    p.add_argument("--name", default=None, metavar="NAME", help="the study's name (unique in its storage)")
    p.add_argument("--storage", default=None, metavar="URL",
                   help="study storage: sqlite:///PATH, postgresql://USER@HOST/DB or a journal file on a shared disk "
                        "(default $FLOWLAB_STUDY_STORAGE, else studies.sqlite in the runs folder)")
    p.add_argument("--runs-dir", default=None, metavar="DIR",
                   help="run store folder (default $FLOWLAB_RUNS_DIR or checkpoints/runs)")
    p.add_argument("--workers", type=int, default=None, metavar="N",
                   help="worker processes to start here (default: the free training slots, FLOWLAB_MAX_CONCURRENT)")
    p.add_argument("--json", default=None, metavar="FILE", help="write the answer as JSON here")
    p.add_argument("--csv", default=None, metavar="FILE", help="write the results table as CSV here")
    p.add_argument("--no-wait", action="store_true", help="queue the study, start its workers and return")
    p.add_argument("--no-estimate", action="store_true",
                   help="do not measure this device's speed before starting (earlier runs still count)")
    p.add_argument("--show", default=None, metavar="ID|NAME", help="print the answer of a study (also while it runs)")
    p.add_argument("--stop", default=None, metavar="ID|NAME", help="stop a study (its training runs save a checkpoint)")
    p.add_argument("--resume", default=None, metavar="ID|NAME", help="queue a stopped study's unfinished trials again "
                                                                      "and watch it")
    p.add_argument("--rerun-best", default=None, metavar="ID|NAME",
                   help="start a comparison of a search's best configuration against its base configuration on fresh seeds")
    p.add_argument("--list", action="store_true", help="list the studies of the storage and the run store")
    p.add_argument("--dashboard", action="store_true", help="print the command that opens the storage in optuna-dashboard")
    return p


def build_work_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m flowlib.study work",
                                description="Take trials of the studies in a storage until they are done; each "
                                            "trains as a Flow Lab run in this machine's run store.")
    p.add_argument("--storage", default=None, metavar="URL",
                   help="study storage (default $FLOWLAB_STUDY_STORAGE, else studies.sqlite in the runs folder)")
    p.add_argument("--study", action="append", default=None, metavar="NAME", help="only this study (repeatable)")
    p.add_argument("--runs-dir", default=None, metavar="DIR", help="this machine's run store")
    p.add_argument("--gpus", default="auto", metavar="all|auto|none|0,1",
                   help="one worker per GPU, each seeing only its GPU (CUDA_VISIBLE_DEVICES); auto: all if any")
    p.add_argument("--max-trials", type=int, default=None, metavar="N", help="leave after N trials")
    return p


def _spec(args):
    from flowlib.study.spec import StudySpec, parse_assignment

    vary, search = [], []
    for item in args.vary:
        name, values = parse_assignment(item)
        vary.append((name, tuple(v.strip() for v in values.split(",") if v.strip())))
    for item in args.search:
        name, text = parse_assignment(item)
        search.append((name, text))
    overrides = dict(parse_assignment(item) for item in args.overrides)
    steps = args.steps if args.steps is not None else (None if args.minutes is not None else 2000)
    common = dict(seeds=args.seeds, first_seed=args.first_seed, steps=steps, minutes=args.minutes,
                  dataset=args.dataset, model_preset=args.model_preset, overrides=overrides,
                  dataset_options={"path": args.data_path} if args.data_path else {}, threads=args.threads,
                  prune=args.prune)
    if args.name:
        common["name"] = args.name
    if search:
        if args.preset or vary:
            raise ConfigError("a study either compares (--preset, --vary) or searches (--search), not both", "search")
        return StudySpec(search=tuple(search), trials=args.trials, **{
            **common, "name": args.name or "search-" + "-".join(n for n, _ in search)})
    if args.preset:
        spec = StudySpec.from_preset(args.preset, **common)
        if vary:
            spec = spec.replace(vary=vary, baseline=None, preset=None)
    elif vary:
        spec = StudySpec(vary=tuple(vary), **{**common, "name": args.name or "study-" + "-".join(n for n, _ in vary)})
    else:
        raise ConfigError("say what to study: --preset NAME, --vary SETTING=V1,V2 or --search SETTING=RANGE", "vary")
    if args.baseline:
        spec = spec.replace(baseline=args.baseline)
    return spec


def _fmt(v, digits=3) -> str:
    return "–" if v is None else f"{v:.{digits}f}"


def print_answer(result: dict, out=sys.stdout) -> None:
    from flowlib.study.answer import fmt_bpd

    s = result["study"]
    budget = f"{s['steps']:,} steps" if s["steps"] else f"{s['minutes']:g} minutes"
    kind = "search" if s.get("kind") == "search" else "comparison"
    print(f"\nStudy {s['id'] if s['id'] is not None else ''} '{s['name']}' ({kind}, {s['status']}): "
          f"{s['model_preset']} on {s['dataset']}, {budget} per run, {s['seeds']} seed(s); baseline: "
          f"{result['baseline']}", file=out)
    if s.get("storage"):
        print(f"storage: {s['storage']}   dashboard: {s.get('dashboard')}", file=out)
    print(f"{'arm' if kind == 'comparison' else 'configuration':<34} {'seeds':>5}  "
          f"{'test bits/dim, mean ± 95 %':<46} {'images/s':>9}", file=out)
    for a in result["arms"]:
        print(f"{a['name'][:34]:<34} {a['n']:>2}/{len(a['runs']):<2}  {a['interval'][:46]:<46} "
              f"{_fmt(a['images_per_s'], 0):>9}", file=out)
        per_seed = ", ".join(f"s{r['seed']} {fmt_bpd(r['final_test_bpd'])}" if r["final_test_bpd"] is not None
                             else f"s{r['seed']} {r['status']}" for r in a["runs"])
        print(f"{'':<34}        {per_seed}", file=out)
        for r in a["runs"]:
            for flag in r["flags"]:
                print(f"{'':<34}        ! seed {r['seed']} (run {r['run_id']}): {flag}", file=out)
    if result.get("pairs"):
        print("Paired differences (first − second, same seeds; negative = the first is better; "
              "Holm-corrected over all pairs):", file=out)
        for d in result["pairs"]:
            ci = "no interval" if d["ci95"] is None else f"95 % [{d['ci95'][0]:+.3f}, {d['ci95'][1]:+.3f}]"
            holm = "" if d.get("holm_p") is None else f", Holm p = {d['holm_p']:.3g}"
            print(f"  {d['arm']} − {d['vs']}: {fmt_bpd(d['mean'], sign=True)} ({ci}, {d['n']} seeds{holm}) "
                  f"{'resolved' if d['resolved'] else 'not resolved'}", file=out)
    print("Verdict:", file=out)
    for line in result["verdict"]:
        print(f"  {line}", file=out)
    for line in result["warnings"]:
        print(f"  note: {line}", file=out)


def _write(path: str, data: bytes) -> None:
    from pathlib import Path

    from flowlib.fileio import atomic_write
    atomic_write(Path(path).expanduser(), lambda f: f.write(data))
    print(f"wrote {path}")


def _exports(args, result: dict) -> None:
    from flowlib.study.answer import answer_csv, json_result

    if args.json:
        _write(args.json, json.dumps(json_result(result), indent=2).encode())
    if args.csv:
        _write(args.csv, answer_csv(result).encode())


def _target_problem(flag: str, path: str, no_wait: bool) -> str | None:
    """Why --json / --csv could not be written at the end (checked before hours of training), or None."""
    import os
    from pathlib import Path

    if no_wait:
        return f"{flag} needs the study's end; without --no-wait, or later with --show ID {flag} FILE"
    target = Path(path).expanduser()
    folder = target.parent if str(target.parent) else Path(".")
    if target.is_dir():
        return f"{flag} {path} is a folder; give a file name"
    if not folder.is_dir():
        return f"{flag} {path}: the folder {folder} does not exist"
    if not os.access(folder, os.W_OK):
        return f"{flag} {path}: the folder {folder} is not writable"
    return None


def _speeds(store, p, wait_s: float) -> dict:
    from flowlib.jobs.estimate import SpeedEstimator, SpeedRequest

    estimator = SpeedEstimator(store.root / "speed-estimates")
    requests = {arm.name: SpeedRequest.for_run(arm.config, arm.train) for arm in p.arms}
    speeds: dict = {}
    deadline = time.monotonic() + wait_s
    while True:
        for name, request in requests.items():
            if speeds.get(name) is None:
                got = estimator.estimate(request, store) if wait_s > 0 else estimator.known(request, store)
                if got and "images_per_s" in got:
                    speeds[name] = got["images_per_s"]
        if all(speeds.get(n) for n in requests) or time.monotonic() > deadline or wait_s <= 0:
            return speeds
        time.sleep(0.5)


def _duration(seconds: float) -> str:
    """``45 s``, ``4 min 05 s`` (to the second: benchmarks/study_estimates.py reads it back)."""
    seconds = round(seconds)
    return f"{seconds} s" if seconds < 90 else f"{seconds // 60} min {seconds % 60:02d} s"


def _estimate_line(p, speeds: dict, workers: int, share: float) -> str:
    from flowlib.study.estimate import study_seconds

    seconds = study_seconds(p, speeds, workers, share=share)   # workers: the runs that train at once here
    if seconds is None:
        return ("time: not known yet on this device (no earlier run of these settings; the measurement did not "
                "finish); the estimate follows the first finished run")
    busy = f", the machine's load leaving {share:.0%} of the cores" if share < 0.99 else ""
    what = "every configuration at the base configuration's speed" if p.kind == "search" else "one after another"
    return (f"time: about {_duration(seconds)} for up to {p.n_runs} runs, {workers} at a time here "
            f"({what}; training at {min(speeds.values()):,.0f} images/s{busy}), corrected as runs finish")


# Ctrl-C while a study is followed detaches. A handler sets this flag instead of letting
# KeyboardInterrupt fly: Python raises that wherever the main thread happens to be, and inside a
# garbage collector's weakref callback it is printed and dropped ("Exception ignored in ..."),
# so the CLI went on watching to the end (seen in tests/study/test_study.py's Ctrl-C test).
_CTRL_C = threading.Event()


_BEFORE_CTRL_C: list = []   # the SIGINT handler _detach_on_ctrl_c replaced, put back by _follow


def _detach_on_ctrl_c() -> None:
    """Until :func:`_follow` returns, Ctrl-C (SIGINT) only sets :data:`_CTRL_C` (main thread only)."""
    if threading.current_thread() is threading.main_thread():
        _BEFORE_CTRL_C.append(signal.signal(signal.SIGINT, lambda signum, frame: _CTRL_C.set()))


def _watch(store, ref, p, per_run: dict, workers: int) -> str:
    """Print each trial as it ends until the study is done; the final state ('detached' on Ctrl-C)."""
    from flowlib.study import api
    from flowlib.study.estimate import remaining_seconds

    seen: dict = {}
    try:
        while True:
            if _CTRL_C.is_set():
                return "detached"
            result = api.answer(store, ref, with_curves=False)
            records = [(a, r) for a in result["arms"] for r in a["runs"]]
            for arm, r in records:
                key = (r.get("trial"), r["seed"], arm["name"])
                if r["status"] not in ("waiting", "running") and seen.get(key) != r["status"]:
                    seen[key] = r["status"]
                    words = f"test {r['final_test_bpd']:.4f}" if r["final_test_bpd"] is not None else r["status"]
                    eta = ""
                    if result["study"]["status"] in ("waiting", "running"):
                        from flowlib.study.records import trial_records  # noqa: F401 - records for the estimate
                        left = remaining_seconds(p, _records_for_estimate(store, ref), per_run, workers)
                        eta = f" About {_duration(left)} left." if left else ""
                    where = f" on {r['machine']}" if r.get("machine") else ""
                    print(f"[{len(seen)}] trial {r.get('trial')} {arm['name']} seed {r['seed']}{where}: {words}."
                          f"{eta}", flush=True)
            if result["study"]["status"] not in ("waiting", "running"):
                return result["study"]["status"]
            _CTRL_C.wait(1.0)
    except KeyboardInterrupt:
        return "detached"


def _records_for_estimate(store, ref) -> list:
    from flowlib.study import engine
    from flowlib.study.records import trial_records
    from flowlib.study.storage import open_storage

    return trial_records(engine.load(open_storage(ref.storage_url, store.root), ref.name))


def _refuse(exc) -> int:
    field = getattr(exc, "field", None)
    text = str(exc).rstrip(".")
    print(f"error: {text}" + (f" (field: {field})" if field and f"--{field}" not in text else "") + ".",
          file=sys.stderr)
    return EXIT_REFUSED


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "work":
        return work_main(argv[1:])
    args = build_parser().parse_args(argv)
    from flowlib.store.runs import RunStore
    try:
        store = RunStore(args.runs_dir)
    except Exception as exc:  # noqa: BLE001 - one sentence, not a traceback
        print(f"error: cannot open the run store: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    from flowlib.study import api
    from flowlib.study.storage import StorageError

    for flag in ("json", "csv"):
        target = getattr(args, flag)
        if target and not (args.show or args.stop):
            problem = _target_problem(f"--{flag}", target, args.no_wait)
            if problem:
                print(f"error: {problem}", file=sys.stderr)
                return EXIT_REFUSED
    try:
        if args.dashboard:
            from flowlib.study.storage import dashboard_command
            print(dashboard_command(api.storage_url_of(store, args.storage)))
            return 0
        if args.list:
            rows, problem = api.overview(store, args.storage)
            if problem:
                print(f"error: {problem}", file=sys.stderr)
            for s in rows:
                ident = "" if s["local_id"] is None else s["local_id"]
                print(f"{ident!s:>4}  {s['name']:<32} {s['kind']:<20} {s['status']:<9} {s['trials']}"
                      + (f"  machines: {', '.join(s['machines'])}" if s["machines"] else ""))
            return 0 if not problem else EXIT_REFUSED
        if args.show is not None:
            result = api.answer(store, args.show, args.storage, with_curves=False)
            print_answer(result)
            _exports(args, result)
            return EXIT_FINISHED if result["study"]["status"] == "finished" else (
                EXIT_DETACHED if result["study"]["status"] in ("waiting", "running") else EXIT_UNFINISHED)
        if args.stop is not None:
            print(api.stop(store, args.stop, args.storage))
            return 0
        if args.resume is not None:
            ref = api.resolve(store, args.resume, args.storage)
            queued = api.resume(store, ref, workers=args.workers)
            _detach_on_ctrl_c()
            print(f"Study '{ref.name}' resumed: {queued} interrupted trial(s) queued again; workers started here.")
            return _follow(args, store, ref, None, {}, args.workers or 1)
        if args.rerun_best is not None:
            result = api.answer(store, args.rerun_best, args.storage, with_curves=False)
            spec = api.rerun_best_spec(result)
            return _start(args, store, spec)
        return _start(args, store, _spec(args))
    except (ConfigError, StorageError, ValueError, PermissionError, KeyError) as exc:
        if isinstance(exc, KeyError):
            print(f"error: {exc.args[0]}", file=sys.stderr)
            return EXIT_REFUSED
        return _refuse(exc)


def _start(args, store, spec) -> int:
    from flowlib.study import api
    from flowlib.study.estimate import load_share, run_seconds, runs_at_once
    from flowlib.study.spec import dataset_shape, plan

    shape = dataset_shape(spec.dataset, spec.dataset_options)
    p = plan(spec, shape)
    for arm in p.arms:
        store.limits.check_train(arm.train.to_dict())
    tc = p.arms[0].train
    budget = f"{tc.max_steps:,} steps" if tc.max_steps else f"{tc.max_minutes:g} minutes"
    if p.kind == "search":
        print(f"Search '{spec.name}': {spec.trials} configurations × {len(p.seeds)} seeds (up to {p.n_runs} runs) of "
              f"{budget} on {spec.dataset} ({spec.model_preset}); ranges: {'; '.join(r.words() for r in p.ranges)}; "
              f"pruning {'on (MedianPruner on first-seed runs)' if spec.pruning else 'off'}")
    else:
        print(f"Study '{spec.name}': {len(p.arms)} arms × {len(p.seeds)} seeds = {p.n_runs} runs of {budget} "
              f"on {spec.dataset} ({spec.model_preset}); baseline {p.baseline}")
        print(f"  arms: {'; '.join(a.name for a in p.arms)}")
    print(f"  training: lr {tc.lr:g}, {tc.lr_schedule} schedule, warm-up {tc.warmup_steps} steps, batch "
          f"{tc.batch_size}, {tc.threads} thread(s) per run{', bf16 coupling networks' if tc.bf16 else ''}, validation every {tc.eval_every} steps on "
          f"{tc.validation_images} held-out training images, the full test set once at the end")
    workers = args.workers or max(1, min(p.n_runs, store.limits.max_concurrent))
    at_once = runs_at_once(p, store.limits.max_concurrent, workers)   # what the estimate divides by
    # The load before measuring speeds: the measuring process, still exiting, counted as a run
    # beside and made a quiet machine look a third busy.
    share = load_share(tc.threads) if not args.no_estimate else 1.0
    speeds = _speeds(store, p, 0.0 if args.no_estimate else 45.0)
    print(f"  {_estimate_line(p, speeds, at_once, share)}", flush=True)
    if at_once < workers:
        print(f"  note: {workers} workers, but this machine trains {at_once} run(s) at a time "
              "(FLOWLAB_MAX_CONCURRENT); the others wait for a slot", flush=True)
    per_run = {a.name: run_seconds(a.train, speeds[a.name]) for a in p.arms if speeds.get(a.name)}
    for w in p.warnings:
        print(f"  warning: {w}")
    ref = api.start(store, spec, shape, storage_url=args.storage, workers=workers)
    if not args.no_wait:
        _detach_on_ctrl_c()
    print(f"Study {ref.local_id} '{ref.name}' queued in {api.redact(ref.storage_url)} with {workers} worker(s) "
          f"here; it shows on the app's Runs page. Other machines join with: python -m flowlib.study work "
          f"--storage URL --study {ref.name}", flush=True)
    if args.no_wait:
        return EXIT_DETACHED
    return _follow(args, store, ref, p, per_run, at_once)


def _follow(args, store, ref, p, per_run: dict, workers: int) -> int:
    from flowlib.study import api, engine
    from flowlib.study.spec import dataset_shape
    from flowlib.study.storage import open_storage

    if p is None:
        study = engine.load(open_storage(ref.storage_url, store.root), ref.name)
        described = engine.stored_plan(study)
        spec_dict = described["spec"]
        p = engine.plan_from_stored(described, dataset_shape(spec_dict["dataset"], spec_dict.get("dataset_options")))
    try:
        status = _watch(store, ref, p, per_run, workers)
    finally:
        while _BEFORE_CTRL_C:
            signal.signal(signal.SIGINT, _BEFORE_CTRL_C.pop())
        _CTRL_C.clear()
    result = api.answer(store, ref, with_curves=False)
    print_answer(result)
    _exports(args, result)
    if status == "detached":
        print(f"\nDetached: the study goes on in the background. Read it with --show {ref.local_id or ref.name}, "
              f"stop it with --stop {ref.local_id or ref.name}.", flush=True)
        return EXIT_DETACHED
    return EXIT_FINISHED if result["study"]["status"] == "finished" else EXIT_UNFINISHED


def work_main(argv: list[str]) -> int:
    args = build_work_parser().parse_args(argv)
    from flowlib.jobs.placement import gpu_indices, worker_env
    from flowlib.study.storage import StorageError
    from flowlib.study.work import work

    gpus = gpu_indices(args.gpus)
    if len(gpus) > 1:
        return _work_per_gpu(args, gpus)
    if gpus:
        import os
        os.environ.update(worker_env(gpus[0]))
    try:
        return work(args.storage, args.runs_dir, args.study, max_trials=args.max_trials,
                    log=lambda line: print(line, flush=True))
    except (StorageError, KeyError, ValueError) as exc:
        print(f"error: {exc.args[0] if isinstance(exc, KeyError) else exc}", file=sys.stderr)
        return EXIT_REFUSED


def _work_per_gpu(args, gpus: list[int]) -> int:
    """One worker process per GPU, each seeing only its own (CUDA_VISIBLE_DEVICES); waits for all."""
    from flowlib.jobs.launch import start_module
    from flowlib.jobs.placement import worker_env

    base = ["work", "--gpus", "none"] + (["--runs-dir", args.runs_dir] if args.runs_dir else []) + [
        x for s in (args.study or []) for x in ("--study", s)]
    extra = {"FLOWLAB_STUDY_STORAGE": args.storage} if args.storage else {}   # never on a command line
    procs = [start_module("flowlib.study", base, sys.stdout, **worker_env(g), **extra) for g in gpus]
    print(f"{len(procs)} workers, one per GPU ({', '.join(map(str, gpus))})", flush=True)
    try:
        codes = [p.wait() for p in procs]
    except KeyboardInterrupt:
        for p in procs:
            p.terminate()
        codes = [p.wait() for p in procs]
    return max(codes) if codes else 0


if __name__ == "__main__":
    sys.exit(main())
