"""Studies: the same model trained under two or more settings, several seeds each, compared honestly.

    python -m flowlib.study --preset permutation --seeds 3 --steps 2000 --json results.json
    python -m flowlib.study --vary coupling=additive,affine --set hidden=32 --steps 300
    python -m flowlib.study --show 4            # the answer of study 4 (also while it runs)

    from flowlib.study.spec import StudySpec, plan, submit, answer
    spec = StudySpec.from_preset("permutation", seeds=3, steps=2000)
    study_id = submit(store, spec, image_shape=(1, 28, 28), owner=visitor)
    result = answer(store, study_id)        # arms, means, 95 % intervals, paired differences, verdict

A study = a base configuration (a model preset and the Train page's training defaults for
it, changed by ``overrides``), one or two settings to vary with their values (the arms), a
number of seeds, and one budget for every run. Runs are *paired*: seed s of every arm uses
model seed s (same initial noise wherever the shapes agree) and training seed s (same batch
order and dequantisation noise); every evaluation uses the trainer's fixed evaluation noise.
A difference is therefore measured seed by seed, which removes most of what the seeds share.

The learning rate and schedule come from the base configuration exactly as the Train page
sets them (``PRESET_LR``, cosine). Warm-up is scaled to the budget, at most 10 % of it.
The runs go through the run store's queue (``worker``), so a study started here shows in
the app while it runs, and a study started in the app keeps running with no page open.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import statistics
from dataclasses import dataclass, field
from typing import Any

from flowlib.config import APP_TRAIN_DEFAULTS, PRESET_LR, PRESETS, FlowConfig, TrainConfig
from flowlib.settings import ConfigError, Setting, settings_of

from .stats import Summary, paired_difference, summarize

__all__ = ["StudySpec", "StudyPreset", "STUDY_PRESETS", "Arm", "StudyPlan", "plan", "submit",
           "answer", "answer_csv", "parse_assignment", "parse_value", "estimate_seconds",
           "MAX_SEEDS", "MAX_STUDY_RUNS", "TIME_BUDGET_WARNING"]

MAX_SEEDS = 20
MAX_STUDY_RUNS = 60
MAX_VARIED = 2
WARMUP_SHARE = 0.10        # warm-up is at most this share of a step budget
EVALS_PER_RUN = 10         # test evaluations along each run: the points of the curves

# Settings a study may not vary: pairing, data and bookkeeping, not the thing compared.
NOT_VARIABLE = {
    "seed": "the seeds are the study's repeats; set the number of seeds instead",
    "dataset": "bits/dim on different test sets are not comparable; run one study per dataset",
    "dataset_options": "bits/dim on different test sets are not comparable",
    "image_shape": "the image shape comes from the dataset",
    "max_steps": "every arm gets the same budget; set the study's budget instead",
    "max_minutes": "every arm gets the same budget; set the study's budget instead",
}
for _name in ("log_every", "eval_every", "first_eval", "eval_subset", "epoch_size", "sample_temperatures",
              "samples_per_temperature", "checkpoint_every_minutes", "device"):
    NOT_VARIABLE[_name] = "it does not change what is learned"

TIME_BUDGET_WARNING = ("A time budget is unfair across devices and loads: an arm that happens to "
                       "share the CPU with another run gets fewer steps. Prefer a step budget.")

_FLOW_SETTINGS = dict(settings_of(FlowConfig))
_TRAIN_SETTINGS = dict(settings_of(TrainConfig))


# -- values from text -------------------------------------------------------------------------
def _setting_of(name: str) -> tuple[str, Setting]:
    if name in _FLOW_SETTINGS:
        return "flow", _FLOW_SETTINGS[name]
    if name in _TRAIN_SETTINGS:
        return "train", _TRAIN_SETTINGS[name]
    known = sorted(set(_FLOW_SETTINGS) | set(_TRAIN_SETTINGS))
    raise ConfigError(f"unknown setting {name!r}; settings are: {', '.join(known)}", name)


def parse_value(name: str, text: Any):
    """A value for setting ``name`` from text (``"0.01"``, ``"off"``, ``"none"``, ``"1,28,28"``)."""
    _, s = _setting_of(name)
    if not isinstance(text, str):
        return text
    raw = text.strip()
    try:
        if s.optional and raw.lower() in ("none", "null", ""):
            return None
        if s.kind == "bool":
            low = raw.lower()
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off"):
                return False
            raise ValueError
        if s.kind == "int":
            return int(raw)
        if s.kind == "float":
            return float(raw)
        if s.kind == "temperatures":
            return tuple(float(v) for v in raw.split(",") if v.strip())
        if s.kind == "shape":
            return tuple(int(v) for v in raw.replace("x", ",").split(","))
        return raw
    except ValueError:
        raise ConfigError(f"{name}: {raw!r} is not a valid {s.kind} value", name) from None


def parse_assignment(text: str) -> tuple[str, str]:
    """``"key=value"`` -> (key, value text); ConfigError naming the problem otherwise."""
    key, sep, value = str(text).partition("=")
    key = key.strip().replace("-", "_")
    if not sep or not key:
        raise ConfigError(f"expected key=value, got {text!r}", key or None)
    _setting_of(key)
    return key, value.strip()


def _value_words(name: str, value) -> str:
    _, s = _setting_of(name)
    if s.kind == "bool":
        return f"{name} {'on' if value else 'off'}"
    if s.kind == "choice":
        return str(value)
    return f"{name}={value:g}" if isinstance(value, float) else f"{name}={value}"


# -- the spec ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class StudyPreset:
    """A one-click study: what varies, the baseline arm, and the order a paper reports."""

    title: str
    vary: tuple[tuple[str, tuple], ...]
    baseline: str
    source: str
    paper_order: tuple[str, ...] = ()      # arms from lowest (best) bits/dim to highest, if a paper says


STUDY_PRESETS: dict[str, StudyPreset] = {
    "permutation": StudyPreset(
        "Permutation: reverse vs shuffle vs LU 1×1 convolution", (("permutation", ("reverse", "shuffle", "conv1x1_lu")),),
        "shuffle", "Glow (Kingma & Dhariwal 2018), Fig. 3: 1×1 conv < shuffle < reverse",
        ("conv1x1_lu", "shuffle", "reverse")),
    "coupling": StudyPreset(
        "Coupling: additive (NICE) vs affine (RealNVP, Glow)", (("coupling", ("additive", "affine")),),
        "additive", "Glow, Fig. 3: affine coupling reaches a lower bits/dim than additive",
        ("affine", "additive")),
    "mask": StudyPreset(
        "Mask: channel halves vs checkerboard pixels", (("mask", ("checkerboard", "channel")),),
        "checkerboard", "RealNVP (Dinh et al. 2017) uses both; it reports no ranking of the two alone"),
    "split-prior": StudyPreset(
        "Split prior: standard normal vs learned Gaussian (Glow's split2d)",
        (("split_prior", ("standard", "learned")),), "standard",
        "Glow: the learned conditional prior of each split-off half helps", ("learned", "standard")),
    "actnorm": StudyPreset(
        "ActNorm off vs on", (("actnorm", (False, True)),), "actnorm off",
        "Glow: ActNorm replaces batch norm; the paper reports no ablation without it"),
    "dequantization": StudyPreset(
        "Dequantisation: uniform noise vs learned noise (Flow++)",
        (("dequantization", ("uniform", "variational")),), "uniform",
        "Flow++ (Ho et al. 2019): variational dequantisation lowers bits/dim", ("variational", "uniform")),
}


@dataclass(frozen=True)
class StudySpec:
    """What a study runs. Round-trips through a plain dict (stored with the study)."""

    vary: tuple = ()                     # ((setting, (value, value, ...)), ...): one or two settings
    name: str = ""
    dataset: str = "mnist"
    dataset_options: dict = field(default_factory=dict)
    model_preset: str = "mnist-fast"
    seeds: int = 3
    first_seed: int = 0
    steps: int | None = 2000
    minutes: float | None = None
    overrides: dict = field(default_factory=dict)   # base configuration changes (model or training)
    baseline: str | None = None          # an arm's name; default: the preset's, else the first arm
    preset: str | None = None            # the one-click study this came from, if any

    @classmethod
    def from_preset(cls, name: str, **changes) -> "StudySpec":
        if name not in STUDY_PRESETS:
            raise ConfigError(f"unknown study preset {name!r}; choose one of {', '.join(STUDY_PRESETS)}",
                              "preset")
        p = STUDY_PRESETS[name]
        changes.setdefault("name", f"{name}-study")
        return cls(vary=p.vary, baseline=p.baseline, preset=name, **changes)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["vary"] = [[name, list(values)] for name, values in self.vary]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "StudySpec":
        d = dict(d)
        d["vary"] = tuple((name, tuple(values)) for name, values in d.get("vary", ()))
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


@dataclass(frozen=True)
class Arm:
    name: str
    settings: dict            # the varied settings' values
    config: FlowConfig        # for seed 0 of the study (model seed replaced per run)
    train: TrainConfig

    def run_configs(self, seed: int) -> tuple[FlowConfig, TrainConfig]:
        return self.config.replace(seed=seed), self.train.replace(seed=seed)


@dataclass(frozen=True)
class StudyPlan:
    spec: StudySpec
    arms: tuple[Arm, ...]
    baseline: str
    seeds: tuple[int, ...]
    warnings: tuple[str, ...]

    @property
    def n_runs(self) -> int:
        return len(self.arms) * len(self.seeds)

    def describe(self) -> dict:
        """What is stored with the study beside the spec: arms, baseline, warnings, paper order."""
        preset = STUDY_PRESETS.get(self.spec.preset or "")
        return {"spec": self.spec.to_dict(), "baseline": self.baseline, "warnings": list(self.warnings),
                "seeds": list(self.seeds),
                "arms": [{"name": a.name, "settings": a.settings, "config": a.config.to_dict(),
                          "train": a.train.to_dict()} for a in self.arms],
                "paper_order": list(preset.paper_order) if preset else [],
                "source": preset.source if preset else ""}


def _budget(spec: StudySpec) -> dict:
    if spec.steps is None and spec.minutes is None:
        raise ConfigError("a study needs a budget: a number of steps (or minutes)", "steps")
    if spec.steps is not None and (not isinstance(spec.steps, int) or isinstance(spec.steps, bool)
                                   or not 1 <= spec.steps <= 10**8):
        raise ConfigError(f"steps must be a whole number from 1 to 100,000,000, got {spec.steps!r}", "steps")
    if spec.minutes is not None and (not isinstance(spec.minutes, (int, float)) or isinstance(spec.minutes, bool)
                                     or not 0 < spec.minutes <= 60 * 24 * 30):
        raise ConfigError(f"minutes must be a number above 0 and at most 43,200, got {spec.minutes!r}", "minutes")
    out = {"max_steps": spec.steps, "max_minutes": spec.minutes}
    if spec.steps is not None:
        out["warmup_steps"] = min(APP_TRAIN_DEFAULTS.warmup_steps, int(WARMUP_SHARE * spec.steps))
        out["eval_every"] = max(1, spec.steps // EVALS_PER_RUN)
    out["first_eval"] = 0
    return out


def plan(spec: StudySpec, image_shape: tuple[int, int, int]) -> StudyPlan:
    """Check a spec and expand it into arms; ConfigError naming the field if anything is wrong."""
    if not isinstance(spec.seeds, int) or isinstance(spec.seeds, bool) or not 1 <= spec.seeds <= MAX_SEEDS:
        raise ConfigError(f"seeds must be a whole number from 1 to {MAX_SEEDS}, got {spec.seeds!r}", "seeds")
    if spec.model_preset not in PRESETS:
        raise ConfigError(f"unknown model preset {spec.model_preset!r}; choose one of {', '.join(PRESETS)}",
                          "model_preset")
    if not spec.vary:
        raise ConfigError("a study varies one or two settings; none given", "vary")
    if len(spec.vary) > MAX_VARIED:
        raise ConfigError(f"a study varies at most {MAX_VARIED} settings at once; got {len(spec.vary)}", "vary")
    names = [name for name, _ in spec.vary]
    if len(set(names)) != len(names):
        raise ConfigError(f"setting {names[0]!r} is varied twice", names[0])
    for name, values in spec.vary:
        _setting_of(name)
        if name in NOT_VARIABLE:
            raise ConfigError(f"a study cannot vary {name}: {NOT_VARIABLE[name]}", name)
        if not values:
            raise ConfigError(f"the value list of {name} is empty: give at least two values", name)
    flow_over, train_over = {}, {}
    for key, value in spec.overrides.items():
        where, _ = _setting_of(key)
        if key in ("seed", "image_shape"):
            raise ConfigError(f"{key} is set by the study itself", key)
        (flow_over if where == "flow" else train_over)[key] = parse_value(key, value)

    base_flow = PRESETS[spec.model_preset].replace(image_shape=tuple(image_shape), **flow_over)
    train_defaults = {"dataset": spec.dataset, "dataset_options": dict(spec.dataset_options),
                      "lr": PRESET_LR.get(spec.model_preset, APP_TRAIN_DEFAULTS.lr), **_budget(spec)}
    if "warmup_steps" in train_over and spec.steps is not None:
        train_over["warmup_steps"] = min(train_over["warmup_steps"], train_defaults["warmup_steps"])
    base_train = APP_TRAIN_DEFAULTS.replace(**{**train_defaults, **train_over})
    warnings = [TIME_BUDGET_WARNING] if spec.minutes is not None else []

    arms, seen = [], {}
    for combo in itertools.product(*[[(name, parse_value(name, v)) for v in values] for name, values in spec.vary]):
        settings = dict(combo)
        flow_changes = {k: v for k, v in settings.items() if k in _FLOW_SETTINGS}
        train_changes = {k: v for k, v in settings.items() if k in _TRAIN_SETTINGS}
        name = ", ".join(_value_words(k, v) for k, v in combo)
        try:
            cfg = base_flow.replace(**flow_changes)
            tc = base_train.replace(**train_changes)
        except ConfigError as exc:
            raise ConfigError(f"arm {name}: {exc}", exc.field or names[0]) from None
        key = (cfg.to_json(), tc.to_json())
        if key in seen:
            raise ConfigError(f"arms '{seen[key]}' and '{name}' have identical settings: give each arm a "
                              "different value", names[0])
        seen[key] = name
        arms.append(Arm(name, {k: v for k, v in settings.items()}, cfg, tc))

    seeds = tuple(range(int(spec.first_seed), int(spec.first_seed) + spec.seeds))
    if len(arms) * len(seeds) > MAX_STUDY_RUNS:
        raise ConfigError(f"{len(arms)} arms × {len(seeds)} seeds = {len(arms) * len(seeds)} runs; a study "
                          f"may have at most {MAX_STUDY_RUNS}", "seeds")
    arm_names = [a.name for a in arms]
    baseline = spec.baseline if spec.baseline is not None else arm_names[0]
    if baseline not in arm_names:
        raise ConfigError(f"baseline {baseline!r} is not one of the arms ({', '.join(arm_names)})", "baseline")
    if len(seeds) == 1:
        warnings.append("One seed gives no interval: every difference will read as unresolved.")
    return StudyPlan(spec, tuple(arms), baseline, seeds, tuple(warnings))


# -- running ----------------------------------------------------------------------------------
def submit(store, spec: StudySpec, image_shape: tuple[int, int, int], owner: str | None = None) -> int:
    """Check the spec, store the study and queue every run (all or none); the study id.

    Runs start at once when a training slot is free, otherwise as slots free up, whether or
    not any page or this process is still there.
    """
    from flowlib.jobs import worker
    from flowlib.store.request import RunRequest
    from flowlib.store.studies import StudyStore

    p = plan(spec, image_shape)
    planned = []
    for seed in p.seeds:                      # seed-major: a stopped study has whole seeds
        for arm in p.arms:
            cfg, tc = arm.run_configs(seed)
            request = RunRequest(f"{spec.name or 'study'}-{arm.name}-s{seed}", cfg, tc, owner=owner,
                                 preset=spec.model_preset)
            planned.append((arm.name, seed, request))
    # The store admits every run or none: each one's caps are checked before any is stored.
    study_id = StudyStore(store).create(spec.name or spec.preset or "study", p.describe(), planned, owner=owner)
    worker.start_waiting(store)
    return study_id


# -- estimates --------------------------------------------------------------------------------
# Measured here (2-core VM): a worker process takes ~6 s from launch to its first step
# (imports, MNIST from disk, model build) and evaluation runs ~3× faster per image than a
# training step (forward only, no backward).
RUN_OVERHEAD_S = 6.0
EVAL_SPEEDUP = 3.0


def estimate_seconds(p: StudyPlan, images_per_s: dict[str, float | None], test_images: int = 10_000) -> float | None:
    """Seconds for the whole study run one after another, from each arm's training images/s;
    None when any arm's speed is unknown. Includes each run's evaluations and start-up."""
    total = 0.0
    for arm in p.arms:
        ips = images_per_s.get(arm.name)
        if not ips or ips <= 0:
            return None
        tc = arm.train
        if tc.max_steps is not None:
            train_s = tc.max_steps * tc.batch_size / ips
            evals = tc.max_steps // tc.eval_every
        else:
            train_s = tc.max_minutes * 60
            evals = EVALS_PER_RUN
        eval_s = (evals * tc.eval_subset + test_images) / (EVAL_SPEEDUP * ips)
        if tc.max_minutes is not None:
            train_s = min(train_s, tc.max_minutes * 60)
        total += len(p.seeds) * (train_s + eval_s + RUN_OVERHEAD_S)
    return total


# -- the answer -------------------------------------------------------------------------------
def _final_bpd(store, run: dict) -> float | None:
    if run["status"] != "finished":
        return None
    curve = store.metrics(run["id"], keys=["test_bpd_full"]).get("test_bpd_full")
    if not curve or curve["value"][-1] is None or not math.isfinite(curve["value"][-1]):
        return None
    return float(curve["value"][-1])


def _curve_with_time(store, run_id: int) -> dict:
    m = store.metrics(run_id, keys=["test_bpd", "test_bpd_full", "elapsed_s", "images_per_s"])
    elapsed = m.get("elapsed_s", {"step": [], "value": []})
    points = {}
    for key in ("test_bpd", "test_bpd_full"):
        c = m.get(key)
        if c:
            points.update({s: v for s, v in zip(c["step"], c["value"]) if v is not None})
    steps = sorted(points)
    times = []
    for s in steps:   # the training time logged at (or just before) each evaluation
        earlier = [v for st, v in zip(elapsed["step"], elapsed["value"]) if st <= s and v is not None]
        times.append(earlier[-1] if earlier else 0.0)
    ips = [v for v in m.get("images_per_s", {}).get("value", []) if v]
    return {"step": steps, "time": times, "value": [points[s] for s in steps],
            "images_per_s": statistics.median(ips) if ips else None}


def answer(store, study_id: int, with_curves: bool = True) -> dict:
    """Everything a study has found so far: arms, per-seed results, means with 95 % intervals,
    paired differences to the baseline, the verdict in words, and the curves."""
    from flowlib.size import parameter_count
    from flowlib.store.studies import StudyStore

    study = StudyStore(store).get(study_id)
    if study is None:
        raise KeyError(f"no study with id {study_id}")
    described = study["spec"]
    spec = StudySpec.from_dict(described.get("spec", {}))
    baseline = described.get("baseline")
    arms_out, by_arm = [], {}
    for arm in described.get("arms", []):
        runs = sorted((r for r in study["runs"] if r["arm"] == arm["name"]), key=lambda r: r["seed"])
        run_rows, finals, speeds = [], {}, []
        for r in runs:
            final = _final_bpd(store, r)
            curve = _curve_with_time(store, r["id"]) if with_curves or final is not None else None
            row = {"seed": r["seed"], "run_id": r["id"], "status": r["status"], "final_test_bpd": final,
                   "images_per_s": curve["images_per_s"] if curve else None, "message": r["message"]}
            if with_curves:
                row["curve"] = curve
            run_rows.append(row)
            if final is not None:
                finals[r["seed"]] = final
            if row["images_per_s"]:
                speeds.append(row["images_per_s"])
        s = summarize(finals.values())
        by_arm[arm["name"]] = finals
        arms_out.append({"name": arm["name"], "settings": arm["settings"], "runs": run_rows,
                         "n": s.n, "mean": s.mean, "sd": s.sd,
                         "ci95": None if s.low is None else [s.low, s.high],
                         "images_per_s": statistics.median(speeds) if speeds else None,
                         "parameters": parameter_count(FlowConfig.from_dict(arm["config"]))})
    differences = []
    for arm in arms_out:
        if arm["name"] == baseline:
            continue
        d = paired_difference(by_arm[arm["name"]], by_arm.get(baseline, {}))
        differences.append({"arm": arm["name"], "vs": baseline, "n": d.n, "mean": d.mean,
                            "ci95": None if d.low is None else [d.low, d.high],
                            "resolved": d.excludes_zero(), "verdict": _difference_words(arm["name"], baseline, d)})
    verdict = [d["verdict"] for d in differences]
    order_line = _paper_order_words(described.get("paper_order") or [], by_arm, described.get("source", ""))
    if order_line:
        verdict.append(order_line)
    warnings = list(described.get("warnings", []))
    for arm in arms_out:
        failed = [r for r in arm["runs"] if r["status"] in ("failed", "lost")]
        if arm["n"] < spec.seeds:
            why = f"{len(failed)} failed" if failed else "the others have not finished"
            warnings.append(f"{arm['name']}: based on {arm['n']} of {spec.seeds} seeds ({why}).")
    return {"study": {"id": study["id"], "name": study["name"], "status": study["status"],
                      "created": study["created"], "owner": study["owner"], "preset": spec.preset,
                      "dataset": spec.dataset, "model_preset": spec.model_preset, "seeds": spec.seeds,
                      "steps": spec.steps, "minutes": spec.minutes, "overrides": spec.overrides,
                      "vary": [[n, list(v)] for n, v in spec.vary], "source": described.get("source", "")},
            "arms": arms_out, "baseline": baseline, "differences": differences, "verdict": verdict,
            "warnings": warnings}


def _difference_words(arm: str, baseline: str, d: Summary) -> str:
    if d.n == 0:
        return f"{arm} vs {baseline}: no seed has finished in both arms yet."
    if d.n == 1:
        return (f"{arm} vs {baseline}: {d.mean:+.3f} bits/dim on one seed — no interval, so no difference "
                "this study can resolve; run more seeds.")
    size = f"{abs(d.mean):.3f} ± {d.half_width:.3f} bits/dim over {d.n} seeds"
    if d.excludes_zero():
        return f"{arm} beats {baseline} by {size}." if d.mean < 0 else f"{arm} is worse than {baseline} by {size}."
    return (f"No difference this study can resolve between {arm} and {baseline}: {d.mean:+.3f} ± "
            f"{d.half_width:.3f} bits/dim over {d.n} seeds (the interval contains 0).")


def _paper_order_words(order: list, by_arm: dict, source: str) -> str:
    order = [a for a in order if a in by_arm]
    if len(order) < 2:
        return ""
    pairs = [(order[i], order[i + 1], paired_difference(by_arm[order[i]], by_arm[order[i + 1]]))
             for i in range(len(order) - 1)]
    paper = " < ".join(order)
    if any(d.excludes_zero() and d.mean > 0 for _, _, d in pairs):
        wrong = [f"{a} > {b}" for a, b, d in pairs if d.excludes_zero() and d.mean > 0]
        return f"The paper's order ({paper}) is contradicted here: {', '.join(wrong)}. Source: {source}."
    if all(d.excludes_zero() for _, _, d in pairs):
        return f"The paper's order ({paper}) is reproduced, every step resolved. Source: {source}."
    open_pairs = [f"{a} vs {b}" for a, b, d in pairs if not d.excludes_zero()]
    return (f"The paper's order ({paper}) is not resolved at this budget: {', '.join(open_pairs)} "
            f"within the noise. Source: {source}.")


def answer_csv(result: dict) -> str:
    """The results table as CSV: one row per arm, then one per paired difference."""
    import csv
    import io

    out = io.StringIO()
    w = csv.writer(out)
    w.writerow(["row", "arm", "vs", "seeds", "mean_test_bpd", "ci95_low", "ci95_high", "sd",
                "images_per_s", "parameters", "per_seed_test_bpd"])

    def num(v, digits=5):
        return "" if v is None else f"{v:.{digits}f}"
    for a in result["arms"]:
        low, high = a["ci95"] or (None, None)
        per_seed = " ".join(f"s{r['seed']}={num(r['final_test_bpd'])}" if r["final_test_bpd"] is not None
                            else f"s{r['seed']}={r['status']}" for r in a["runs"])
        w.writerow(["arm", a["name"], "", a["n"], num(a["mean"]), num(low), num(high), num(a["sd"]),
                    num(a["images_per_s"], 1), a["parameters"], per_seed])
    for d in result["differences"]:
        low, high = d["ci95"] or (None, None)
        w.writerow(["difference", d["arm"], d["vs"], d["n"], num(d["mean"]), num(low), num(high),
                    "", "", "", ""])
    return out.getvalue()


def json_result(result: dict) -> dict:
    """The answer without curves and messages: the ``--json`` file's content."""
    arms = [{"name": a["name"], "settings": a["settings"],
             "runs": [{"seed": r["seed"], "run_id": r["run_id"], "status": r["status"],
                       "final_test_bpd": r["final_test_bpd"]} for r in a["runs"]],
             "n": a["n"], "mean": a["mean"], "ci95": a["ci95"], "sd": a["sd"],
             "images_per_s": a["images_per_s"], "parameters": a["parameters"]} for a in result["arms"]]
    diffs = [{k: d[k] for k in ("arm", "vs", "n", "mean", "ci95", "resolved", "verdict")}
             for d in result["differences"]]
    return {"study": result["study"], "arms": arms, "baseline": result["baseline"], "differences": diffs,
            "verdict": result["verdict"], "warnings": result["warnings"]}


def dataset_shape(dataset: str, options: dict | None = None) -> tuple[int, int, int]:
    """(C, H, W) of a dataset's images (flowlib.data.image_shape; imported late: torch)."""
    from flowlib.data import image_shape

    return image_shape(dataset, **(options or {}))
