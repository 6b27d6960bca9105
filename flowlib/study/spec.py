"""Studies: the same model trained under two or more settings, several seeds each, compared honestly.

    python -m flowlib.study --preset permutation --seeds 3 --steps 2000 --json results.json
    python -m flowlib.study --vary coupling=additive,affine --set hidden=32 --steps 300
    python -m flowlib.study --search lr=1e-4:1e-2:log --search hidden=32,64,128 --trials 12 --steps 500

    from flowlib.study.spec import StudySpec, plan
    spec = StudySpec.from_preset("permutation", seeds=3, steps=2000)
    p = plan(spec, image_shape=(1, 28, 28))     # a StudyPlan (a comparison) or a SearchPlan; ConfigError naming the field

Two kinds of study, both paired over seeds:

comparison  one or two settings to vary with their values (the arms, their product), or
            explicit arms (``arms``: a re-run of a search's best against its baseline); every
            arm × seed is one run. No pruning: a verdict needs every run.
search      ranges to sample from (``search``: ``lr=1e-4:1e-2:log``, ``hidden=32,64,128``),
            ``trials`` configurations drawn by Optuna's TPE sampler, each trained with every
            seed; losing configurations are pruned (``flowlib.study.engine`` says which pruner
            and why).

A study = a base configuration (a model preset and the Train page's training defaults for
it, changed by ``overrides``), what varies, a number of seeds, and one budget for every run.
Runs are *paired*: seed s of every arm uses model seed s (every layer's initial weights
derive from (s, its place), so they are the same wherever two arms' shapes agree) and
training seed s (same batch order and dequantisation noise); every evaluation uses the
trainer's fixed evaluation noise. Each run trains with a fixed number of CPU threads
(``threads``) and torch's deterministic kernels, so the same arm and seed give bit-identical
numbers on the same machine. Evaluations during training score validation images held out
from the training split (what pruning and "best" read); the test split is scored once, at
the end of each run, and that is the number a study reports.

The learning rate and schedule come from the base configuration exactly as the Train page
sets them (``PRESET_LR``, cosine). Warm-up is scaled to the budget, at most 10 % of it.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
from dataclasses import dataclass, field
from typing import Any

from flowlib.config import APP_TRAIN_DEFAULTS, PRESET_LR, PRESETS, FlowConfig, TrainConfig
from flowlib.settings import ConfigError, Setting, settings_of

from .space import SearchRange, parse_range

__all__ = ["StudySpec", "StudyPreset", "STUDY_PRESETS", "Arm", "StudyPlan", "SearchPlan", "plan",
           "parse_assignment", "parse_value", "value_words", "arm_name", "dataset_shape", "default_threads",
           "MAX_SEEDS", "MAX_STUDY_RUNS", "MAX_SEARCH_RUNS", "MAX_TRIALS", "TIME_BUDGET_WARNING",
           "NOT_VARIABLE", "EVALS_PER_RUN"]

MAX_SEEDS = 20
MAX_STUDY_RUNS = 60        # a comparison: arms × seeds
MAX_TRIALS = 100           # a search: configurations
MAX_SEARCH_RUNS = 300      # a search: configurations × seeds
MAX_VARIED = 2
MAX_SEARCHED = 6
WARMUP_SHARE = 0.10        # warm-up is at most this share of a step budget
SHORT_WARMUP = 100         # a scaled warm-up shorter than this gets a warning
EVALS_PER_RUN = 10         # evaluations along each run: the points of the curves and of pruning

# Settings a study may not vary (nor set with --set, for the data ones): pairing, data and
# bookkeeping, not the thing compared.
DATA_SETTINGS = ("dataset", "dataset_options", "image_shape", "validation_images")
NOT_VARIABLE = {
    "seed": "the seeds are the study's repeats; set the number of seeds instead",
    "dataset": "bits/dim on different test sets are not comparable; run one study per dataset",
    "dataset_options": "bits/dim on different test sets are not comparable",
    "image_shape": "the image shape comes from the dataset",
    "max_steps": "every arm gets the same budget; set the study's budget instead",
    "max_minutes": "every arm gets the same budget; set the study's budget instead",
    "validation_images": "every arm must be judged on the same validation images",
    "threads": "runs of a study use one fixed thread count (--threads), so they are bit-identical when repeated",
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


def value_words(name: str, value) -> str:
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
    search: tuple = ()                   # ((setting, "range text"), ...): a search instead of a comparison
    trials: int = 10                     # a search: how many configurations to draw
    prune: bool | None = None            # None: on for a search, off for a comparison
    threads: int | None = None           # CPU threads of every run (None: chosen when planned, then fixed)
    arms: tuple = ()                     # ((name, {setting: value}), ...): explicit arms (a re-run)

    @property
    def kind(self) -> str:
        return "search" if self.search else "comparison"

    @property
    def pruning(self) -> bool:
        return bool(self.search) if self.prune is None else bool(self.prune) and bool(self.search)

    @classmethod
    def from_preset(cls, preset: str, /, **changes) -> "StudySpec":
        """The study preset ``preset``; ``changes`` may name the study (``name=``, default
        "<preset>-study") and set any other field."""
        if preset not in STUDY_PRESETS:
            raise ConfigError(f"unknown study preset {preset!r}; choose one of {', '.join(STUDY_PRESETS)}",
                              "preset")
        p = STUDY_PRESETS[preset]
        changes.setdefault("name", f"{preset}-study")
        return cls(vary=p.vary, baseline=p.baseline, preset=preset, **changes)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["vary"] = [[name, list(values)] for name, values in self.vary]
        d["search"] = [[name, str(text)] for name, text in self.search]
        d["arms"] = [[name, dict(settings)] for name, settings in self.arms]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "StudySpec":
        d = dict(d)
        d["vary"] = tuple((name, tuple(values)) for name, values in d.get("vary", ()))
        d["search"] = tuple((name, str(text)) for name, text in d.get("search", ()))
        d["arms"] = tuple((name, dict(settings)) for name, settings in d.get("arms", ()))
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})

    def replace(self, **changes) -> "StudySpec":
        return StudySpec.from_dict({**self.to_dict(), **changes})


@dataclass(frozen=True)
class Arm:
    name: str
    settings: dict            # the varied settings' values
    config: FlowConfig        # for seed 0 of the study (model seed replaced per run)
    train: TrainConfig

    def run_configs(self, seed: int) -> tuple[FlowConfig, TrainConfig]:
        return self.config.replace(seed=seed), self.train.replace(seed=seed)


@dataclass(frozen=True)
class Base:
    """The configuration every arm or trial starts from, and how to change it."""

    config: FlowConfig
    train: TrainConfig

    def arm(self, settings: dict, name: str | None = None) -> Arm:
        """The arm with ``settings`` (parsed values) applied; ConfigError naming the arm and setting."""
        name = name or arm_name(settings)
        flow = {k: v for k, v in settings.items() if k in _FLOW_SETTINGS}
        train = {k: v for k, v in settings.items() if k in _TRAIN_SETTINGS}
        try:
            return Arm(name, dict(settings), self.config.replace(**flow), self.train.replace(**train))
        except ConfigError as exc:
            raise ConfigError(f"arm {name}: {exc}", exc.field or next(iter(settings), None)) from None


@dataclass(frozen=True)
class StudyPlan:
    """A comparison: its arms, baseline and seeds."""

    spec: StudySpec
    arms: tuple[Arm, ...]
    baseline: str
    seeds: tuple[int, ...]
    warnings: tuple[str, ...]
    base: Base | None = None

    kind = "comparison"

    @property
    def n_runs(self) -> int:
        return len(self.arms) * len(self.seeds)

    def describe(self) -> dict:
        """What is stored with the study beside the spec: arms, baseline, warnings, paper order."""
        preset = STUDY_PRESETS.get(self.spec.preset or "")
        return {"spec": self.spec.to_dict(), "kind": "comparison", "baseline": self.baseline,
                "warnings": list(self.warnings), "seeds": list(self.seeds),
                "arms": [{"name": a.name, "settings": a.settings, "config": a.config.to_dict(),
                          "train": a.train.to_dict()} for a in self.arms],
                "base": {"config": self.base.config.to_dict(), "train": self.base.train.to_dict()} if self.base else None,
                "paper_order": list(preset.paper_order) if preset else [],
                "source": preset.source if preset else ""}


@dataclass(frozen=True)
class SearchPlan:
    """A search: the base configuration (its baseline), the ranges, the seeds per configuration."""

    spec: StudySpec
    base: Base
    ranges: tuple[SearchRange, ...]
    seeds: tuple[int, ...]
    warnings: tuple[str, ...]

    kind = "search"
    baseline = "base configuration"

    @property
    def n_runs(self) -> int:
        """Runs if no configuration is pruned (a pruned one costs one run, not len(seeds))."""
        return self.spec.trials * len(self.seeds)

    @property
    def arms(self) -> tuple[Arm, ...]:
        """One arm: the base configuration, for estimates (every trial costs about as much)."""
        return (self.base.arm({}, "base configuration"),)

    def describe(self) -> dict:
        return {"spec": self.spec.to_dict(), "kind": "search", "baseline": self.baseline,
                "warnings": list(self.warnings), "seeds": list(self.seeds),
                "ranges": [[r.name, r.to_text()] for r in self.ranges],
                "base": {"config": self.base.config.to_dict(), "train": self.base.train.to_dict()},
                "arms": [], "paper_order": [], "source": ""}


def arm_name(settings: dict) -> str:
    """"coupling additive" style: the arm's varied values in words, in order."""
    return ", ".join(value_words(k, v) for k, v in settings.items()) or "base configuration"


def default_threads() -> int:
    """CPU threads of a study's runs when the spec does not say: 2 where there are at least 2
    cores (the thread count is fixed for a run and stored with the study, so every machine
    trains it alike)."""
    return max(1, min(2, os.cpu_count() or 1))


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


def _check_common(spec: StudySpec) -> None:
    if not isinstance(spec.seeds, int) or isinstance(spec.seeds, bool) or not 1 <= spec.seeds <= MAX_SEEDS:
        raise ConfigError(f"seeds must be a whole number from 1 to {MAX_SEEDS}, got {spec.seeds!r}", "seeds")
    if spec.model_preset not in PRESETS:
        raise ConfigError(f"unknown model preset {spec.model_preset!r}; choose one of {', '.join(PRESETS)}",
                          "model_preset")
    if spec.threads is not None and (not isinstance(spec.threads, int) or isinstance(spec.threads, bool)
                                     or not 1 <= spec.threads <= 1024):
        raise ConfigError(f"threads must be a whole number from 1 to 1024, got {spec.threads!r}", "threads")


def _base(spec: StudySpec, image_shape: tuple[int, int, int]) -> Base:
    from flowlib.machine.device import fast_bf16_here  # torch: only when planning

    flow_over, train_over = {}, {}
    for key, value in spec.overrides.items():
        where, _ = _setting_of(key)
        if key in ("seed", "image_shape"):
            raise ConfigError(f"{key} is set by the study itself", key)
        if key in DATA_SETTINGS:
            raise ConfigError(f"--set {key}: a study's data is its own setting (--dataset, --data-path); every "
                              "run of a study reads the same data", key)
        (flow_over if where == "flow" else train_over)[key] = parse_value(key, value)
    if train_over.get("threads", 0) is None:
        raise ConfigError("threads: a study's runs use a fixed thread count (so they repeat bit for bit); "
                          "give a number", "threads")
    try:
        base_flow = PRESETS[spec.model_preset].replace(image_shape=tuple(image_shape), **flow_over)
        train_defaults = {"dataset": spec.dataset, "dataset_options": dict(spec.dataset_options),
                          "lr": PRESET_LR.get(spec.model_preset, APP_TRAIN_DEFAULTS.lr), **_budget(spec),
                          "threads": spec.threads or train_over.get("threads") or default_threads(),
                          # bf16 coupling networks where the planning machine does bf16 natively
                          # (`--set bf16=false` turns them off). Measured on MNIST (benchmarks/
                          # RESULTS.md, "bf16 in studies"): 5 paired seeds of 600 steps, bf16 −
                          # float32 = +0.0005 bits/dim (95 % interval −0.001 to +0.002), 22 % more
                          # images/s. The choice is stored with the study, so workers elsewhere train
                          # the same configuration (where bf16 is not fast, the trainer runs those
                          # networks in float32 instead).
                          "bf16": fast_bf16_here()}
        if "warmup_steps" in train_over and spec.steps is not None:
            train_over["warmup_steps"] = min(train_over["warmup_steps"], train_defaults["warmup_steps"])
        base_train = APP_TRAIN_DEFAULTS.replace(**{**train_defaults, **train_over})
    except ConfigError as exc:
        raise ConfigError(f"{exc}", exc.field) from None
    return Base(base_flow, base_train)


def _warnings(spec: StudySpec, base: Base) -> list[str]:
    out = [TIME_BUDGET_WARNING] if spec.minutes is not None else []
    if spec.steps is not None and base.train.warmup_steps < SHORT_WARMUP:
        out.append(f"The budget of {spec.steps:,} steps is short for the warm-up: it was cut to "
                   f"{base.train.warmup_steps} steps (10 % of the budget; the Train page uses "
                   f"{APP_TRAIN_DEFAULTS.warmup_steps}), so early non-finite losses are more likely and the "
                   "answer is about the first minutes of training only.")
    if spec.seeds == 1:
        out.append("One seed gives no interval: every comparison will read 'no conclusion'.")
    return out


def plan(spec: StudySpec, image_shape: tuple[int, int, int]) -> StudyPlan | SearchPlan:
    """Check a spec and expand it into arms (or ranges); ConfigError naming the field if anything is wrong."""
    _check_common(spec)
    if spec.search:
        return _plan_search(spec, image_shape)
    if spec.arms and spec.vary:
        raise ConfigError("give either settings to vary or explicit arms, not both", "vary")
    if not spec.vary and not spec.arms:
        raise ConfigError("a study varies one or two settings (or searches ranges); none given", "vary")
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
        if len({str(v).strip().lower() for v in values}) < 2:
            raise ConfigError(f"--vary {name} has one value ({values[0]}): a comparison needs at least two; "
                              f"to change the base configuration use --set {name}={values[0]}", name)
    base = _base(spec, image_shape)
    if spec.arms:
        combos = []
        for arm_label, settings in spec.arms:
            for key in settings:
                _setting_of(key)
                if key in NOT_VARIABLE:
                    raise ConfigError(f"arm {arm_label}: a study cannot vary {key}: {NOT_VARIABLE[key]}", key)
            combos.append((str(arm_label), {k: parse_value(k, v) for k, v in settings.items()}))
        if len(combos) < 2:
            raise ConfigError("a comparison needs at least two arms", "arms")
    else:
        combos = [(None, dict(c)) for c in itertools.product(
            *[[(name, parse_value(name, v)) for v in values] for name, values in spec.vary])]
    arms, seen = [], {}
    for label, settings in combos:
        arm = base.arm(settings, label)
        key = (arm.config.to_json(), arm.train.to_json())
        if key in seen:
            raise ConfigError(f"arms '{seen[key]}' and '{arm.name}' have identical settings: give each arm a "
                              "different value", names[0] if names else "arms")
        seen[key] = arm.name
        arms.append(arm)
    seeds = tuple(range(int(spec.first_seed), int(spec.first_seed) + spec.seeds))
    if len(arms) * len(seeds) > MAX_STUDY_RUNS:
        raise ConfigError(f"{len(arms)} arms × {len(seeds)} seeds = {len(arms) * len(seeds)} runs; a study "
                          f"may have at most {MAX_STUDY_RUNS}", "seeds")
    arm_names = [a.name for a in arms]
    baseline = spec.baseline if spec.baseline is not None else arm_names[0]
    if baseline not in arm_names:
        raise ConfigError(f"baseline {baseline!r} is not one of the arms ({', '.join(arm_names)})", "baseline")
    return StudyPlan(spec, tuple(arms), baseline, seeds, tuple(_warnings(spec, base)), base)


def _plan_search(spec: StudySpec, image_shape) -> SearchPlan:
    if spec.vary or spec.arms:
        raise ConfigError("a study either compares (--vary) or searches (--search), not both", "search")
    if len(spec.search) > MAX_SEARCHED:
        raise ConfigError(f"a search explores at most {MAX_SEARCHED} settings; got {len(spec.search)}", "search")
    if not isinstance(spec.trials, int) or isinstance(spec.trials, bool) or not 2 <= spec.trials <= MAX_TRIALS:
        raise ConfigError(f"trials must be a whole number from 2 to {MAX_TRIALS}, got {spec.trials!r}", "trials")
    base = _base(spec, image_shape)
    names = [name for name, _ in spec.search]
    if len(set(names)) != len(names):
        dup = next(n for n in names if names.count(n) > 1)
        raise ConfigError(f"setting {dup!r} is searched twice", dup)
    ranges = []
    for name, text in spec.search:
        _, setting = _setting_of(name)
        if name in NOT_VARIABLE:
            raise ConfigError(f"a search cannot vary {name}: {NOT_VARIABLE[name]}", name)

        def check(key, value, _base=base):
            parsed = parse_value(key, value)
            try:
                _base.arm({key: parsed}, key)   # does the setting allow this value?
            except ConfigError as exc:
                reason = str(exc).split(": ", 1)[-1]
                raise ConfigError(f"search range of {key}: {reason}", key) from None
            return parsed
        ranges.append(parse_range(name, text, setting, check))
    seeds = tuple(range(int(spec.first_seed), int(spec.first_seed) + spec.seeds))
    if spec.trials * len(seeds) > MAX_SEARCH_RUNS:
        raise ConfigError(f"{spec.trials} configurations × {len(seeds)} seeds = {spec.trials * len(seeds)} runs; "
                          f"a search may have at most {MAX_SEARCH_RUNS}", "trials")
    return SearchPlan(spec, base, tuple(ranges), seeds, tuple(_warnings(spec, base)))


def dataset_shape(dataset: str, options: dict | None = None) -> tuple[int, int, int]:
    """(C, H, W) of a dataset's images (flowlib.data.image_shape; imported late: torch)."""
    from flowlib.data import image_shape

    return image_shape(dataset, **(options or {}))
