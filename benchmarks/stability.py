"""Is training stable enough to compare? Seeds × {before, after} gradient clipping.

    python -m benchmarks.stability                         # 3 seeds × 2,000 steps, both settings
    python -m benchmarks.stability --steps 50 --seeds 2    # a quick check that it runs

Trains an mnist-fast-sized model (L=2, K=4, width 64) with the issue's "plain" choices by
default (reverse permutation, uniform dequantisation, no logit input: the setting whose
gradient norms are 100–300) through the real trainer, once per seed and setting:

``before``  the old clipping: the gradient norm clipped at 50, nothing relative
``after``   the defaults now: clipped at 3× its running mean (and at 50 as an upper bound)

Each run evaluates on the trainer's fixed 512 held-out images every ``--eval-every`` steps.
Per seed it prints the final bits/dim on the full test set, the largest rise of one
evaluation over the previous one after step ``--settle`` (500), and the fraction of steps
whose gradient was clipped; per setting the standard deviation of the final bits/dim over
the seeds. Targets: s.d. < 0.02, no rise > 0.05. Uses one CPU thread per run
unless ``--threads`` says otherwise; a 2,000-step run takes 2–5 minutes on a 2-core CPU.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile

SETTINGS = {
    "before": {"grad_clip": 50.0, "grad_clip_relative": None},
    "after": {},            # TrainConfig's defaults
}


def run_one(setting: str, seed: int, args, root: str) -> dict:
    from flowlib.config import TrainConfig, preset
    from flowlib.core.checkpoint import load_checkpoint
    from flowlib.store.limits import Limits
    from flowlib.store.request import RunRequest
    from flowlib.store.runs import RunStore
    from flowlib.train.loop import train_run

    model = {"plain": dict(permutation="reverse", dequantization="uniform", input_transform="none"),
             "preset": {}}[args.model]
    cfg = preset("mnist-fast", **model)
    tc = TrainConfig(dataset="mnist", max_steps=args.steps, lr=args.lr, lr_schedule=args.schedule,
                     warmup_steps=min(200, args.steps // 10), seed=seed, eval_every=args.eval_every,
                     first_eval=0, threads=args.threads, checkpoint_every_minutes=60.0 * 24,
                     **SETTINGS[setting])
    store = RunStore(f"{root}/{setting}-{seed}", Limits())
    run_id = store.create_run(RunRequest(f"{setting}-{seed}", cfg, tc))
    store.request_start(run_id)
    result = train_run(store, run_id)
    if result.status != "finished":
        raise SystemExit(f"{setting} seed {seed}: {result.message}")
    m = store.metrics(run_id)
    evals = list(zip(m["test_bpd"]["step"], m["test_bpd"]["value"]))
    rises = [b - a for (_, a), (s, b) in zip(evals, evals[1:]) if s > args.settle]
    clip = load_checkpoint(store.checkpoint_path(run_id))["grad_clip"]
    return {"setting": setting, "seed": seed, "final": m["test_bpd_full"]["value"][-1],
            "max_rise": max(rises, default=float("nan")), "clipped": clip["clipped"] / max(clip["count"], 1),
            "evals": evals}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--first-seed", type=int, default=0, help="seeds first-seed, first-seed+1, ...")
    p.add_argument("--eval-every", type=int, default=100)
    p.add_argument("--settle", type=int, default=500, help="rises count after this step")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--schedule", default="constant", choices=("constant", "cosine"))
    p.add_argument("--model", default="plain", choices=("plain", "preset"),
                   help="plain: reverse, uniform noise, no logit; preset: mnist-fast as it is")
    p.add_argument("--settings", default="before,after")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--show-evals", action="store_true", help="print every evaluation too")
    args = p.parse_args(argv)
    settings = args.settings.split(",")
    unknown = set(settings) - set(SETTINGS)
    if unknown:
        raise SystemExit(f"unknown setting(s) {sorted(unknown)}; choose from {', '.join(SETTINGS)}")
    print(f"mnist-fast-sized ({args.model}), {args.steps} steps, lr {args.lr:g} {args.schedule}, "
          f"{args.seeds} seeds, eval every {args.eval_every} on 512 fixed test images", flush=True)
    summary = []
    with tempfile.TemporaryDirectory() as root:
        for setting in settings:
            print(f"\n{setting}: {SETTINGS[setting] or 'TrainConfig defaults'}")
            print(f"{'seed':>4}  {'final bpd':>9}  {'max rise':>8}  {'clipped':>7}", flush=True)
            rows = []
            for seed in range(args.first_seed, args.first_seed + args.seeds):
                r = run_one(setting, seed, args, root)
                rows.append(r)
                print(f"{seed:>4}  {r['final']:>9.4f}  {r['max_rise']:>+8.3f}  {r['clipped']:>7.1%}", flush=True)
                if args.show_evals:
                    print("      " + " ".join(f"{s}:{v:.3f}" for s, v in r["evals"]))
            finals = [r["final"] for r in rows]
            sd = statistics.stdev(finals) if len(finals) > 1 else float("nan")
            worst = max(r["max_rise"] for r in rows)
            summary.append((setting, statistics.mean(finals), sd, worst))
            print(f"mean {statistics.mean(finals):.4f}  s.d. {sd:.4f}  worst rise {worst:+.3f}", flush=True)
    print("\nsetting  mean bpd  s.d.    worst rise   (targets: s.d. < 0.02, rise ≤ 0.05)")
    for setting, mean, sd, worst in summary:
        print(f"{setting:<7}  {mean:.4f}   {sd:.4f}  {worst:+.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
