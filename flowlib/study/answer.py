"""A study's answer from its records: never more than the runs show.

    from flowlib.study.answer import answer_from, json_result, answer_csv, fmt_bpd
    result = answer_from(meta, described, records)     # a comparison or a search
    result["verdict"][0]                               # one plain sentence first
    json_result(result); answer_csv(result)

Comparisons: each arm's final test bits/dim (the full test split, read once at the end of
each run), mean and 95 % Student-t interval over seeds; the paired difference of **every
pair** of arms with its 95 % interval and a two-sided paired t-test, the p-values corrected
with Holm's method over all the pairs; a pair is *resolved* only when its Holm-adjusted
p-value is below 0.05. One seed: "no conclusion". An arm's interval that reaches below 0
bits/dim is said to be too wide to mean anything, never printed as if it could.

Searches: each configuration's runs; the best configuration is the one with the lowest mean
*validation* bits/dim over all its seeds (selection never reads the test split), reported
with its test bits/dim and interval over seeds; each searched setting's importance
(Optuna's, computed by the caller); pruned configurations named with the step they were cut
at. Being the best of many, its number is a little optimistic: a re-run against the
baseline on fresh seeds (``--rerun-best``) is the fair comparison.

Every run that does not tell the plain story is named in the verdict, the table, the JSON and
the CSV: rolled back after non-finite losses, learning rate cut, trained fewer steps than its
budget or past it (those two are not counted: they did not train what the others trained),
diverged, lost. The numbers in the verdict and the tables are the same, with the same digits
(:func:`fmt_bpd`).
"""

from __future__ import annotations

import csv
import io
import math
import statistics
from typing import Any

from .stats import ALPHA, Summary, holm, paired_difference, paired_p_value, summarize

__all__ = ["answer_from", "json_result", "answer_csv", "fmt_bpd", "run_flags", "DIGITS", "PAPER_CAVEAT"]

DIGITS = 4
PAPER_CAVEAT = "which measured CIFAR-10 at a far larger budget"


def fmt_bpd(v: float | None, digits: int = DIGITS, sign: bool = False) -> str:
    if v is None:
        return "–"
    return f"{v:+.{digits}f}" if sign else f"{v:.{digits}f}"


# -- one run ------------------------------------------------------------------------------------
def run_flags(rec: dict) -> tuple[list[str], bool]:
    """(the things said about a run, whether its test number counts in the answer)."""
    flags, counted = [], rec["state"] == "finished" and rec.get("test_bpd") is not None
    steps, budget = rec.get("steps_trained"), rec.get("budget_steps")
    if rec["state"] == "finished" and steps is not None and budget:
        if steps < budget:
            flags.append(f"trained {steps:,} of its {budget:,} steps: not counted")
            counted = False
        elif steps > budget:
            flags.append(f"trained {steps:,} steps, past the study's budget of {budget:,}: not counted")
            counted = False
    if rec.get("rollbacks"):
        flags.append(f"rolled back {rec['rollbacks']}× after non-finite losses")
    if rec.get("lr_cuts"):
        flags.append(f"learning rate cut {rec['lr_cuts']}×")
    if rec["state"] == "diverged":
        flags.append("diverged (non-finite losses kept returning)")
    elif rec["state"] in ("failed", "lost"):
        flags.append(rec["state"] + (f": {rec['message']}" if rec.get("message") else ""))
    elif rec["state"] == "pruned":
        flags.append(f"pruned at step {rec['pruned_at']:,}" if rec.get("pruned_at") else "pruned")
    return flags, counted


def _run_row(rec: dict, with_curves: bool) -> dict:
    flags, counted = run_flags(rec)
    row = {"seed": rec["seed"], "run_id": rec.get("run_id"), "trial": rec.get("trial"),
           "machine": rec.get("machine"), "worker": rec.get("worker"), "status": rec["state"],
           "final_test_bpd": rec["test_bpd"] if counted else None,
           "test_bpd_not_counted": rec["test_bpd"] if (rec.get("test_bpd") is not None and not counted) else None,
           "valid_bpd": rec.get("valid_bpd"), "steps_trained": rec.get("steps_trained"),
           "budget_steps": rec.get("budget_steps"), "rollbacks": rec.get("rollbacks") or 0,
           "lr_cuts": rec.get("lr_cuts") or 0, "flags": flags, "counted": counted,
           "images_per_s": rec.get("images_per_s"), "train_seconds": rec.get("train_seconds"),
           "message": rec.get("message", "")}
    if with_curves:
        row["curve"] = {**rec.get("curve", {}), "images_per_s": rec.get("images_per_s")}
    return row


def _latest_per_seed(records: list[dict]) -> list[dict]:
    """One record per seed: the latest attempt (a retry supersedes the trial it retried)."""
    by_seed: dict[Any, dict] = {}
    for rec in records:
        if rec["state"] == "retried":
            continue
        by_seed[rec["seed"]] = rec       # records come in trial order: the later one wins
    return [by_seed[s] for s in sorted(by_seed, key=lambda s: (s is None, s))]


def _interval_words(s: Summary) -> str:
    if s.n == 0:
        return "no finished run"
    if s.n == 1:
        return f"{fmt_bpd(s.mean)} (one seed: no interval, no conclusion)"
    if s.low <= 0:
        return f"{fmt_bpd(s.mean)} (interval too wide to mean anything: {s.n} seeds)"
    return f"{fmt_bpd(s.mean)} ± {fmt_bpd(s.half_width)}"


def _arm(name: str, settings: dict, config: dict | None, train: dict | None, records: list[dict],
         with_curves: bool) -> dict:
    from flowlib.config import FlowConfig
    from flowlib.size import parameter_count

    rows = [_run_row(r, with_curves) for r in _latest_per_seed(records)]
    finals = {r["seed"]: r["final_test_bpd"] for r in rows if r["counted"]}
    s = summarize(finals.values())
    speeds = [r["images_per_s"] for r in rows if r["images_per_s"]]
    return {"name": name, "settings": settings, "config": config, "train": train, "runs": rows,
            "n": s.n, "mean": s.mean, "sd": s.sd, "ci95": None if s.low is None else [s.low, s.high],
            "interval": _interval_words(s), "too_wide": s.low is not None and s.low <= 0,
            "images_per_s": statistics.median(speeds) if speeds else None,
            "parameters": parameter_count(FlowConfig.from_dict(config)) if config else None,
            "_finals": finals}


# -- comparisons ----------------------------------------------------------------------------------
def _pair_words(a: str, b: str, d: Summary, holm_p: float | None, m: int) -> str:
    if d.n == 0:
        return f"{a} vs {b}: no seed has finished in both arms yet."
    if d.n == 1:
        return (f"{a} vs {b}: {fmt_bpd(d.mean, sign=True)} bits/dim on one seed — no interval, so no "
                "conclusion; run more seeds.")
    size = f"{fmt_bpd(abs(d.mean))} ± {fmt_bpd(d.half_width)} bits/dim over {d.n} seeds"
    if holm_p is not None and holm_p < ALPHA:
        better, worse = (a, b) if d.mean < 0 else (b, a)
        return f"{better} beats {worse} by {size} (Holm-adjusted p = {holm_p:.3g})."
    extra = (f"; its own interval excludes 0, but with {m} pairs compared one such is expected by luck "
             f"(Holm-adjusted p = {holm_p:.3g})") if d.excludes_zero() and m > 1 else ""
    return (f"No difference this study can resolve between {a} and {b}: {fmt_bpd(d.mean, sign=True)} ± "
            f"{fmt_bpd(d.half_width)} bits/dim over {d.n} seeds{extra}.")


def _pairs(arms: list[dict], baseline: str) -> list[dict]:
    names = [a["name"] for a in arms]
    finals = {a["name"]: a["_finals"] for a in arms}
    pairs = []
    for i in range(len(names)):
        for j in range(i + 1, len(names)):
            a, b = names[j], names[i]
            if a == baseline:            # "arm − baseline", as the baseline differences always read
                a, b = b, a
            d = paired_difference(finals[a], finals[b])
            pairs.append({"arm": a, "vs": b, "n": d.n, "mean": d.mean, "sd": d.sd,
                          "ci95": None if d.low is None else [d.low, d.high], "p": paired_p_value(d), "_d": d})
    adjusted = holm([p["p"] for p in pairs])
    m = sum(1 for p in pairs if p["p"] is not None)
    for p, h in zip(pairs, adjusted):
        p["holm_p"] = h
        p["resolved"] = h is not None and h < ALPHA
        p["verdict"] = _pair_words(p["arm"], p["vs"], p["_d"], h, m)
    return pairs


def _headline(arms: list[dict], pairs: list[dict], seeds: int) -> str:
    counted = [a for a in arms if a["n"] > 0]
    if not counted:
        return "No conclusion yet: no run has finished."
    if min(a["n"] for a in arms) < 2:
        return ("No conclusion: an arm has fewer than two finished seeds, so there is no interval to tell a "
                "difference from the seeds' own noise.")
    best = min(counted, key=lambda a: a["mean"])
    wins = [p for p in pairs if p["resolved"]]
    if not wins:
        return (f"No difference this study can resolve: the {len(arms)} arms are within the seeds' own noise "
                f"of each other ({min(a['n'] for a in arms)} seeds each).")
    beaten = [p["vs"] if p["mean"] < 0 else p["arm"] for p in wins
              if (p["arm"] if p["mean"] < 0 else p["vs"]) == best["name"]]
    if beaten:
        return (f"{best['name']} reached the lowest test bits/dim ({fmt_bpd(best['mean'])}) and beats "
                f"{', '.join(beaten)} by more than the seeds' own noise.")
    first = wins[0]
    better, worse = (first["arm"], first["vs"]) if first["mean"] < 0 else (first["vs"], first["arm"])
    return (f"{better} beats {worse} by more than the seeds' own noise; {best['name']} has the lowest mean "
            f"({fmt_bpd(best['mean'])}) but not by a margin this study can resolve against every arm.")


def _paper_words(order: list, pairs: list[dict], source: str) -> str:
    names = {p["arm"] for p in pairs} | {p["vs"] for p in pairs}
    order = [a for a in order if a in names]
    if len(order) < 2:
        return ""

    def pair(a, b):
        p = next(p for p in pairs if {p["arm"], p["vs"]} == {a, b})
        diff = p["mean"] if p["mean"] is None or p["arm"] == a else -p["mean"]   # a − b
        return p, diff
    steps = [(order[i], order[i + 1], *pair(order[i], order[i + 1])) for i in range(len(order) - 1)]
    paper = " < ".join(order)
    wrong = [f"{a} > {b}" for a, b, p, diff in steps if p["resolved"] and diff is not None and diff > 0]
    if wrong:
        return (f"Opposite direction to the paper's order ({paper}; {PAPER_CAVEAT}): {', '.join(wrong)} here. "
                f"Source: {source}.")
    if all(p["resolved"] for _a, _b, p, _d in steps):
        return (f"Same direction as the paper ({PAPER_CAVEAT}): {paper}, every step resolved at this budget. "
                f"Source: {source}.")
    open_pairs = [f"{a} vs {b}" for a, b, p, _d in steps if not p["resolved"]]
    return (f"The paper's order ({paper}; {PAPER_CAVEAT}) is not resolved at this budget: "
            f"{', '.join(open_pairs)} within the noise. Source: {source}.")


def _named_runs(arms: list[dict], spec_seeds: int) -> list[str]:
    out = []
    for arm in arms:
        for r in arm["runs"]:
            if r["flags"]:
                where = f"run {r['run_id']}" if r.get("run_id") is not None else f"trial {r.get('trial')}"
                out.append(f"{arm['name']}, seed {r['seed']} ({where}): {'; '.join(r['flags'])}.")
        if arm["n"] < spec_seeds:
            out.append(f"{arm['name']}: based on {arm['n']} of {spec_seeds} seeds.")
    return out


def answer_from(meta: dict, described: dict, records: list[dict], with_curves: bool = True,
                importance: dict | None = None) -> dict:
    """The answer of a study: ``meta`` says which (id, name, status, created, owner, storage...),
    ``described`` is its stored plan, ``records`` its runs (:mod:`flowlib.study.records`)."""
    from .spec import StudySpec

    spec = StudySpec.from_dict(described.get("spec", {}))
    study = {"id": meta.get("id"), "name": meta.get("name"), "status": meta.get("status"),
             "created": meta.get("created"), "owner": meta.get("owner"), "preset": spec.preset,
             "dataset": spec.dataset, "model_preset": spec.model_preset, "seeds": spec.seeds,
             "first_seed": spec.first_seed,
             "steps": spec.steps, "minutes": spec.minutes, "overrides": spec.overrides,
             "vary": [[n, list(v)] for n, v in spec.vary], "source": described.get("source", ""),
             "kind": described.get("kind", "comparison"), "search": [[n, t] for n, t in spec.search],
             "trials": spec.trials if spec.search else None, "pruning": spec.pruning,
             "threads": ((described.get("base") or {}).get("train") or {}).get("threads", spec.threads),
             "storage": meta.get("storage"), "dashboard": meta.get("dashboard"),
             "code_version": meta.get("code_version"), "engine": meta.get("engine", "optuna")}
    environments = []
    for rec in records:
        if rec.get("environment") and rec["environment"] not in environments:
            environments.append(rec["environment"])
    common = {"study": study, "environment": environments, "warnings": list(described.get("warnings", []))}
    if study["kind"] == "search":
        return {**common, **_search_answer(spec, described, records, with_curves, importance, meta)}
    return {**common, **_comparison_answer(spec, described, records, with_curves)}


def _comparison_answer(spec, described: dict, records: list[dict], with_curves: bool) -> dict:
    baseline = described.get("baseline")
    arms = [_arm(a["name"], a["settings"], a.get("config"), a.get("train"),
                 [r for r in records if r["arm"] == a["name"]], with_curves) for a in described.get("arms", [])]
    pairs = _pairs(arms, baseline)
    m = sum(1 for p in pairs if p["p"] is not None)
    verdict = [_headline(arms, pairs, spec.seeds)]
    verdict += [p["verdict"] for p in pairs]
    if m > 1:
        verdict.append(f"Every pair of the {len(arms)} arms was compared ({m} paired t-tests); a difference counts "
                       "as resolved only when its p-value, corrected with Holm's method for the number of pairs, "
                       "is below 0.05. The ± intervals are each pair's own 95 % interval.")
    order_line = _paper_words(described.get("paper_order") or [], pairs, described.get("source", ""))
    if order_line:
        verdict.append(order_line)
    named = _named_runs(arms, spec.seeds)
    verdict += named
    differences = [_public_pair(p) for p in pairs if p["vs"] == baseline]
    return {"arms": [_public_arm(a) for a in arms], "baseline": baseline, "differences": differences,
            "pairs": [_public_pair(p) for p in pairs], "verdict": verdict, "named_runs": named}


def _public_arm(a: dict) -> dict:
    return {k: v for k, v in a.items() if not k.startswith("_")}


def _public_pair(p: dict) -> dict:
    return {k: v for k, v in p.items() if not k.startswith("_")}


# -- searches -----------------------------------------------------------------------------------
def _search_answer(spec, described: dict, records: list[dict], with_curves: bool, importance: dict | None,
                   meta: dict) -> dict:
    keys = []
    for rec in records:
        key = rec.get("config") or f"c{rec['trial']}"
        if key not in keys:
            keys.append(key)
    configs = []
    n_seeds = len(described.get("seeds", [])) or spec.seeds
    for key in keys:
        recs = [r for r in records if (r.get("config") or f"c{r['trial']}") == key]
        settings = next((r["settings"] for r in recs if r["settings"]), {})
        arm = _arm(f"{key}: " + (_settings_words(settings) or "not drawn yet"), settings, None, None, recs,
                   with_curves)
        latest = _latest_per_seed(recs)
        valid = [r["valid_bpd"] for r in latest if r["state"] == "finished" and r.get("valid_bpd") is not None
                 and run_flags(r)[1]]
        states = [r["state"] for r in latest]
        arm.update(key=key, valid_mean=statistics.fmean(valid) if len(valid) else None,
                   complete=len(valid) == n_seeds and arm["n"] == n_seeds,
                   pruned=next((r.get("pruned_at") or 0 for r in latest if r["state"] == "pruned"), None),
                   state="pruned" if "pruned" in states else ("complete" if len(valid) == n_seeds else
                                                              ("running" if any(s in ("running", "waiting") for s in states)
                                                               else "incomplete")))
        configs.append(arm)
    complete = [c for c in configs if c["complete"]]
    best = min(complete, key=lambda c: c["valid_mean"]) if complete else None
    pruned = [c for c in configs if c["state"] == "pruned"]
    verdict = []
    if best is None:
        verdict.append("No configuration has finished every seed yet: no best to name.")
    else:
        s = summarize(best["_finals"].values())
        verdict.append(f"Best of {len(complete)} fully trained configuration(s), chosen by validation bits/dim: "
                       f"{_settings_words(best['settings'])} — test bits/dim {_interval_words(s)} over "
                       f"{s.n} seed(s).")
        verdict.append("Chosen as the best of several, this number is a little optimistic (the winner's curse); "
                       "re-run it against the baseline on fresh seeds (--rerun-best) for a fair paired comparison.")
    if pruned:
        verdict.append(f"{len(pruned)} configuration(s) pruned (first-seed run cut early by Optuna's MedianPruner "
                       "against the other configurations' first-seed runs): "
                       + "; ".join(f"{c['key']} at step {c['pruned']:,}" for c in pruned) + ".")
    if importance:
        verdict.append("Importance of each setting for validation bits/dim (Optuna's PED-ANOVA, shares of 1): "
                       + ", ".join(f"{k} {v:.2f}" for k, v in importance.items()) + ".")
    elif len(complete) < 2:
        verdict.append("Importance: needs at least two finished configurations.")
    named = _named_runs([c for c in configs if c["state"] != "pruned"], n_seeds)
    verdict += named
    progress, so_far = [], None
    for rec in sorted((r for r in records if r["role"] == "lead" and r["state"] == "finished"
                       and r.get("valid_bpd") is not None), key=lambda r: r["trial"]):
        so_far = rec["valid_bpd"] if so_far is None else min(so_far, rec["valid_bpd"])
        progress.append({"trial": rec["trial"], "valid_bpd": rec["valid_bpd"], "best_so_far": so_far})
    best_out = None
    if best is not None:
        best_out = {"key": best["key"], "settings": best["settings"], "valid_bpd_mean": best["valid_mean"],
                    "n": best["n"], "mean": best["mean"], "ci95": best["ci95"], "interval": best["interval"],
                    "rerun": meta.get("rerun")}
    arms = [_public_arm(c) for c in configs]
    return {"arms": arms, "configurations": arms, "baseline": described.get("baseline"), "differences": [],
            "pairs": [], "best": best_out, "importance": importance or {}, "progress": progress,
            "pruned": [{"key": c["key"], "step": c["pruned"]} for c in pruned], "verdict": verdict,
            "named_runs": named,
            "ranges": described.get("ranges", [])}


def _settings_words(settings: dict) -> str:
    def one(k, v):
        return f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
    return ", ".join(one(k, v) for k, v in settings.items())


# -- export -------------------------------------------------------------------------------------------
def json_result(result: dict) -> dict:
    """The answer without curves and run messages: the ``--json`` file's content."""
    def run(r):
        return {k: r[k] for k in ("seed", "run_id", "trial", "machine", "worker", "status", "final_test_bpd",
                                  "test_bpd_not_counted", "valid_bpd", "steps_trained", "budget_steps",
                                  "rollbacks", "lr_cuts", "flags", "counted") if k in r}
    arms = [{**{k: a.get(k) for k in ("name", "settings", "config", "train", "n", "mean", "ci95", "sd",
                                     "interval", "images_per_s", "parameters")},
             **({k: a.get(k) for k in ("key", "valid_mean", "state", "pruned")} if "key" in a else {}),
             "runs": [run(r) for r in a["runs"]]} for a in result["arms"]]
    pairs = [{k: d[k] for k in ("arm", "vs", "n", "mean", "ci95", "p", "holm_p", "resolved", "verdict")}
             for d in result.get("pairs", [])]
    out = {"study": result["study"], "arms": arms, "baseline": result["baseline"],
           "differences": [p for p in pairs if p["vs"] == result["baseline"]], "pairs": pairs,
           "verdict": result["verdict"], "warnings": result["warnings"], "named_runs": result.get("named_runs", []),
           "environment": result.get("environment", [])}
    if result["study"].get("kind") == "search":
        out.update({k: result[k] for k in ("best", "importance", "pruned", "progress", "ranges")})
    return out


def answer_csv(result: dict) -> str:
    """The results table as CSV: one row per arm (or configuration), then one per pair of arms."""
    out = io.StringIO()
    w = csv.writer(out)
    w.writerow(["row", "arm", "vs", "seeds", "mean_test_bpd", "ci95_low", "ci95_high", "sd",
                "images_per_s", "parameters", "per_seed_test_bpd", "holm_p", "notes"])

    def num(v, digits=5):
        return "" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f"{v:.{digits}f}"
    for a in result["arms"]:
        low, high = a["ci95"] or (None, None)
        per_seed = " ".join(f"s{r['seed']}={num(r['final_test_bpd'])}" if r["final_test_bpd"] is not None
                            else f"s{r['seed']}={r['status']}" for r in a["runs"])
        notes = " | ".join(f"s{r['seed']}: {'; '.join(r['flags'])}" for r in a["runs"] if r["flags"])
        if a.get("too_wide"):
            notes = ("interval too wide to mean anything | " + notes).rstrip(" |")
        w.writerow(["arm", a["name"], "", a["n"], num(a["mean"]), num(low), num(high), num(a["sd"]),
                    num(a["images_per_s"], 1), a["parameters"] if a["parameters"] is not None else "", per_seed,
                    "", notes])
    for d in result.get("pairs", []):
        low, high = d["ci95"] or (None, None)
        w.writerow(["difference", d["arm"], d["vs"], d["n"], num(d["mean"]), num(low), num(high),
                    "", "", "", "", num(d["holm_p"], 4), "resolved" if d["resolved"] else "not resolved"])
    return out.getvalue()
