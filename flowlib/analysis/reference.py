"""Reference curves: what a run of these settings should show after N steps or N minutes.

    from flowlib.analysis.reference import reference_curves, published_numbers, curve_of_run
    curves = reference_curves(store, run)          # earlier finished runs like it, else shipped ones
    curves[0].label, curves[0].x("step"), curves[0].test_bpd
    published_numbers("mnist")                     # [("Glow (published)", 1.05), ("RealNVP (published)", 1.06)]

Two sources, best first:

1. earlier *finished* runs in this store (so on this machine) with the same model config, the
   same data and the same curve-shaping training settings (``SHAPING``: batch size, learning
   rate and its schedule, warm-up, augmentation, and the budget a cosine schedule decays over);
2. the curves recorded with the project's own runs and shipped in ``checkpoints/curves.json``
   (``curve_of_run`` writes an entry), for the same preset and dataset: those with the same
   settings, else with the same model, else any; their settings are in their label when they
   differ from the run's.

Pages draw them faintly behind a live curve, so a teacher sees at once whether a run is on
track. Reading only: nothing here trains or builds a model.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from flowlib.env import REPO_ROOT

__all__ = ["ReferenceCurve", "reference_curves", "shipped_curves", "curve_of_run", "published_numbers",
           "SHAPING", "SHIPPED_CURVES", "PUBLISHED"]

SHIPPED_CURVES = REPO_ROOT / "checkpoints" / "curves.json"
# Training settings that change the shape of a test curve by step (the rest, e.g. how often it
# is evaluated, only change where its points fall).
SHAPING = ("batch_size", "lr", "lr_schedule", "warmup_steps", "augment", "dataset_options")
# Published test bits/dim, as tabled by FFJORD (Grathwohl et al. 2019, table 2) and Glow
# (Kingma & Dhariwal 2018, table 2): far larger models trained for days on GPUs.
PUBLISHED = {
    "mnist": (("Glow (published)", 1.05), ("RealNVP (published)", 1.06)),
    "cifar10": (("Glow (published)", 3.35), ("RealNVP (published)", 3.49)),
}


@dataclass(frozen=True)
class ReferenceCurve:
    """One reference: test bits/dim at some steps, with the training seconds at those steps."""

    label: str                  # in words, for a legend: where it comes from and its settings
    source: str                 # "earlier run" or "shipped"
    step: tuple
    elapsed_s: tuple            # training seconds when each point was taken (NaN-free)
    test_bpd: tuple

    def x(self, axis: str) -> list:
        """The points' x on a chart whose x-axis is "step" or "time" (seconds)."""
        return list(self.step if axis == "step" else self.elapsed_s)


def published_numbers(dataset: str | None) -> list[tuple[str, float]]:
    """(label, test bits/dim) of the published models for a dataset; [] when none are known."""
    return list(PUBLISHED.get(dataset or "", ()))


def _budget_matters(train: dict) -> bool:
    return train.get("lr_schedule") == "cosine"


def same_curve_settings(a: dict, b: dict) -> bool:
    """Whether two runs (store dicts) should draw the same test curve by step: same model
    config, dataset and SHAPING settings (and the same budget when the schedule is cosine)."""
    if a.get("config") != b.get("config") or a.get("dataset") != b.get("dataset"):
        return False
    ta, tb = a.get("train") or {}, b.get("train") or {}
    keys = SHAPING + (("max_steps", "max_minutes") if _budget_matters(ta) else ())
    return all(ta.get(k) == tb.get(k) for k in keys)


def _points(metrics: dict) -> tuple[tuple, tuple, tuple] | None:
    """(steps, seconds, test bits/dim) of a run's test evaluations, the seconds interpolated
    from its elapsed_s rows; None without test points."""
    test = metrics.get("test_bpd")
    if not test or not test.get("step"):
        return None
    steps, values = list(test["step"]), [float(v) for v in test["value"]]
    el = metrics.get("elapsed_s") or {}
    el_steps, el_values = list(el.get("step") or []), list(el.get("value") or [])
    seconds = []
    for s in steps:
        if not el_steps:
            seconds.append(0.0)
            continue
        after = next((i for i, t in enumerate(el_steps) if t >= s), len(el_steps) - 1)
        before = max(0, after - 1) if el_steps[after] > s else after
        s0, s1, v0, v1 = el_steps[before], el_steps[after], el_values[before], el_values[after]
        seconds.append(float(v0 if s1 == s0 else v0 + (v1 - v0) * (s - s0) / (s1 - s0)))
    return tuple(steps), tuple(round(v, 1) for v in seconds), tuple(values)


def _settings_words(train: dict) -> str:
    budget = (f"{train['max_steps']:,} steps" if train.get("max_steps")
              else f"{train.get('max_minutes', 0):g} min" if train.get("max_minutes") else "")
    parts = [f"batch {train.get('batch_size')}", f"lr {train.get('lr'):g}" if train.get("lr") else "",
             train.get("lr_schedule", ""), budget]
    return ", ".join(p for p in parts if p)


def shipped_curves(path: Path = SHIPPED_CURVES) -> list[dict]:
    """The recorded curves shipped with the app (``curve_of_run`` entries); [] if none are readable."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return []
    return [c for c in data.get("curves", []) if isinstance(c, dict) and c.get("test_bpd")]


def curve_of_run(store, run_id: int, name: str, note: str = "") -> dict:
    """A finished run's test curve as a ``curves.json`` entry (to ship as a reference)."""
    run = store.get_run(run_id)
    points = _points(store.metrics(run_id, keys=["test_bpd", "elapsed_s"]))
    if run is None or points is None:
        raise ValueError(f"run {run_id} has no test curve to record")
    steps, seconds, values = points
    return {"name": name, "note": note, "preset": run.get("preset"), "dataset": run.get("dataset"),
            "config": run["config"], "train": run["train"], "step": list(steps), "elapsed_s": list(seconds),
            "test_bpd": [round(v, 5) for v in values]}


def reference_curves(store, run: dict, limit: int = 3, shipped_path: Path = SHIPPED_CURVES) -> list[ReferenceCurve]:
    """Up to ``limit`` references for a run (a store dict): earlier finished runs with the same
    curve settings, newest first; without any, the shipped curves of its preset and dataset."""
    out = []
    for other in store.list_runs():
        if len(out) >= limit:
            break
        if other["id"] == run["id"] or other.get("status") != "finished" or not same_curve_settings(run, other):
            continue
        points = _points(store.metrics(other["id"], keys=["test_bpd", "elapsed_s"]))
        if points is not None:
            out.append(ReferenceCurve(f"expected: earlier run {other['id']} '{other['name']}', same settings",
                                      "earlier run", *points))
    if out:
        return out
    # the shipped curves of this preset and dataset; of those, only the closest kind: the same
    # curve settings, else the same model, else any (their settings then in the label)
    ranked = []
    for c in shipped_curves(shipped_path):
        if c.get("dataset") != run.get("dataset") or c.get("preset") != run.get("preset"):
            continue
        rank = 0 if same_curve_settings(run, c) else 1 if c.get("config") == run.get("config") else 2
        ranked.append((rank, c))
    best = min((rank for rank, _ in ranked), default=None)
    for rank, c in ranked:
        if rank != best or len(out) >= limit:
            continue
        words = "same settings" if rank == 0 else f"{c.get('note') or _settings_words(c.get('train') or {})}"
        out.append(ReferenceCurve(f"expected: {c.get('name', 'a shipped run')}, {words}", "shipped",
                                  tuple(c["step"]), tuple(c.get("elapsed_s") or [0.0] * len(c["step"])),
                                  tuple(c["test_bpd"])))
    return out
