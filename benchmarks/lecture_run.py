"""What Home's "Train MNIST now" reaches in a lecture's minutes on this machine, judged by
classifiers that were never tuned for it.

    python -m benchmarks.lecture_run --runs-dir /tmp/lecture                 # quiet, 3 minutes
    python -m benchmarks.lecture_run --runs-dir /tmp/lecture --beside        # beside a faces run
    python -m benchmarks.lecture_run --runs-dir /tmp/lecture --batch 32 --set hidden=48 --no-bf16

The run is started as the Train page starts the one Home sends it to (``worker.submit`` with
the app's training defaults, the ``mnist-fast`` preset and its learning rate, a minutes budget,
bf16 coupling networks where they are fast here); ``--batch``, ``--set`` and ``--no-bf16``
change that configuration to compare another one. When it ends, the benchmark reads its steps,
images/s and the full test set's bits/dim from the store, loads its checkpoint, draws
``--n`` samples at T = 0.7 and reports the share that each of two MNIST judges
(``benchmarks.sample_quality``: two CNNs built and trained differently, cached in ``.cache/``)
reads as some digit with confidence ≥ 0.9, next to the same share for real test digits.

``--beside`` first starts a faces-fast run (the trainer's CLI, 2 threads, a store of its own)
and stops it at the end: a class sharing the machine.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from benchmarks.estimates import beside_run, emit


def lecture_configs(minutes: float, batch: int, changes: dict, bf16: bool):
    """The model and training settings of Home's run (with ``changes``)."""
    from flowlib.config import APP_TRAIN_DEFAULTS, PRESET_LR, PRESETS

    cfg = PRESETS["mnist-fast"].replace(**changes)
    tc = APP_TRAIN_DEFAULTS.replace(dataset="mnist", batch_size=batch, max_steps=None, max_minutes=minutes,
                                    lr=PRESET_LR["mnist-fast"], bf16=bf16)
    return cfg, tc


def run_lecture(store, minutes: float, batch: int, changes: dict, bf16: bool, n: int) -> dict:
    from benchmarks.sample_quality import confident_share, draw_samples, mnist_judge
    from flowlib.core.checkpoint import load_model
    from flowlib.data import load_images
    from flowlib.jobs import worker
    from flowlib.machine.device import fast_bf16_here
    from flowlib.store.request import RunRequest

    use_bf16 = bf16 and fast_bf16_here()
    cfg, tc = lecture_configs(minutes, batch, changes, use_bf16)
    t0 = time.time()
    run_id = worker.submit(store, RunRequest("lecture", cfg, tc, preset="mnist-fast"))
    while store.get_run(run_id)["status"] in ("queued", "running", "stopping"):
        time.sleep(1.0)
    run = store.get_run(run_id)
    curve = store.metrics(run_id, keys=["train_bpd", "test_bpd_full"])
    first = curve.get("train_bpd", {}).get("wall", [None])[0]
    final = curve.get("test_bpd_full", {}).get("value", [None])[-1]
    train_s = (run["ended"] or time.time()) - (run["started"] or t0)
    model, _ = load_model(store.checkpoint_path(run_id))
    samples = draw_samples(model, n, 0.7, seed=0)
    real = load_images("mnist", "test").images[:n]
    shares = {}
    for name in ("A", "B"):
        judge = mnist_judge(name)
        shares[name] = (confident_share(judge, samples), confident_share(judge, real))
    return {"run": run_id, "status": run["status"], "steps": run["step"], "batch": batch, "bf16": use_bf16,
            "changes": changes, "first_point_s": round(first - t0, 1) if first else None,
            "images_per_s": round(run["step"] * batch / train_s, 1), "final_test_bpd": final,
            "judge_a": round(shares["A"][0], 3), "judge_b": round(shares["B"][0], 3),
            "real_a": round(shares["A"][1], 3), "real_b": round(shares["B"][1], 3)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.lecture_run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs-dir", required=True)
    parser.add_argument("--minutes", type=float, default=3.0)
    parser.add_argument("--batch", type=int, default=64, help="batch size (Home's run: the Train form's 64)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a model setting to change")
    parser.add_argument("--no-bf16", action="store_true", help="float32 coupling networks")
    parser.add_argument("--n", type=int, default=1000, help="samples to judge")
    parser.add_argument("--beside", action="store_true", help="with a faces-fast run training beside it")
    parser.add_argument("--json", default=None, help="append the row to this JSON-lines file")
    args = parser.parse_args(argv)
    from flowlib.settings import ConfigError
    from flowlib.study.spec import parse_assignment, parse_value

    changes = {}
    for item in args.set:   # the study CLI's --set parsing: known settings, values of their kind
        try:
            key, text = parse_assignment(item)
            changes[key] = parse_value(key, text)
        except ConfigError as exc:
            parser.error(f"--set {item}: {exc}")
    from flowlib.store.runs import RunStore

    store = RunStore(args.runs_dir)
    with beside_run(Path(args.runs_dir) / "beside", 60.0, args.beside):
        row = run_lecture(store, args.minutes, args.batch, changes, not args.no_bf16, args.n)
    row["load"] = "beside a run" if args.beside else "quiet"
    row["minutes"] = args.minutes
    emit(row, args.json)
    return 0 if row["status"] == "finished" else 1


if __name__ == "__main__":
    sys.exit(main())
