"""A run's timeline: its curves and sample grids by step, to scrub or play back later.

    from flowlib.train.timeline import timeline_of_run, save_timeline, load_timeline
    tl = timeline_of_run(store, run_id)          # straight from the run store (its grid files)
    save_timeline(tl, "checkpoints/timeline-mnist")   # timeline.json + frames/step-0000120.png
    tl = load_timeline("checkpoints/timeline-mnist")
    tl.frame_at(120), tl.value_at("train_bpd", 120), tl.elapsed_at(120)

The trainer already keeps what a timeline needs: a sample grid every ~10 s of training and
at each evaluation (``flowlib.train.samples.GridClock``), and the curves in the store. A saved
timeline is small (PNG frames of the grids and one JSON file of the curves, a few hundred
kilobytes for a 3-minute MNIST run), so one can ship with the app for a class that has no
time to train: ``python -m flowlib.train.timeline RUN --runs-dir DIR --out FOLDER``.
"""

from __future__ import annotations

import argparse
import bisect
import json
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from flowlib import env
from flowlib.fileio import atomic_write

__all__ = ["Frame", "Timeline", "timeline_of_run", "save_timeline", "load_timeline", "CURVE_KEYS", "main"]

# the curves a replay shows, and what the estimates and Home's numbers read
CURVE_KEYS = ("train_bpd", "test_bpd", "test_bpd_full", "lr", "elapsed_s", "images_per_s",
              "startup_s", "first_point_s")
FORMAT = "flowlab-timeline"
VERSION = 1


@dataclass(frozen=True)
class Frame:
    step: int
    path: Path          # the sample grid, a PNG


@dataclass
class Timeline:
    """Curves (``{key: {"step": [...], "value": [...]}}``) and sample-grid frames of one run, in
    step order, and ``info`` about it (name, dataset, model, budget, how it ended, the grid's
    temperatures, where and when it was recorded)."""

    info: dict
    curves: dict
    frames: list[Frame] = field(default_factory=list)

    @property
    def steps(self) -> list[int]:
        return [f.step for f in self.frames]

    def frame_at(self, step: int) -> Frame | None:
        """The newest frame at or before ``step`` (the first one before any)."""
        if not self.frames:
            return None
        i = bisect.bisect_right(self.steps, step) - 1
        return self.frames[max(i, 0)]

    def value_at(self, key: str, step: int) -> tuple[int, float] | None:
        """(step, value) of the newest point of curve ``key`` at or before ``step``, or None."""
        c = self.curves.get(key) or {}
        i = bisect.bisect_right(c.get("step", []), step) - 1
        return None if i < 0 else (c["step"][i], c["value"][i])

    def elapsed_at(self, step: int) -> float | None:
        """Training seconds at ``step`` (interpolated between logged rows; 0 at step 0)."""
        c = self.curves.get("elapsed_s") or {}
        steps, values = [0] + list(c.get("step", [])), [0.0] + list(c.get("value", []))
        if len(steps) < 2:
            return None
        i = bisect.bisect_right(steps, step) - 1
        if i >= len(steps) - 1:
            return values[-1]
        a, b = steps[i], steps[i + 1]
        return values[i] + (values[i + 1] - values[i]) * (step - a) / max(b - a, 1)

    def step_at_time(self, seconds: float) -> int | None:
        """The step reached after ``seconds`` of training (None past the end)."""
        c = self.curves.get("elapsed_s") or {}
        for step, value in zip(c.get("step", []), c.get("value", [])):
            if value >= seconds:
                return step
        return None


def timeline_of_run(store, run_id: int) -> Timeline:
    """The timeline of a run in ``store`` (KeyError if there is none): its grid files as they
    are in the run's folder."""
    run = store.get_run(run_id)
    if run is None:
        raise KeyError(f"no run with id {run_id}")
    metrics = store.metrics(run_id, keys=list(CURVE_KEYS))
    curves = {k: {"step": list(v["step"]), "value": [float(x) for x in v["value"]]} for k, v in metrics.items()}
    frames, seen = [], set()
    for s in store.samples(run_id):
        if s["step"] not in seen and Path(s["path"]).is_file():
            seen.add(s["step"])
            frames.append(Frame(int(s["step"]), Path(s["path"])))
    frames.sort(key=lambda f: f.step)
    train = run["train"]
    starts = [e["message"] for e in store.events(run_id, kinds=["start"])]
    machine = starts[0].split("; ")[0].rsplit(" on ", 1)[-1] if starts else None
    info = {"machine": machine, "name": run["name"], "dataset": run["dataset"], "preset": run.get("preset"), "config": run["config"],
            "batch_size": train.get("batch_size"), "lr": train.get("lr"), "max_steps": train.get("max_steps"),
            "max_minutes": train.get("max_minutes"), "status": run["status"], "message": run["message"],
            "step": run["step"], "sample_temperatures": list(train.get("sample_temperatures") or []),
            "recorded": time.strftime("%Y-%m-%d", time.localtime(run["created"]))}
    return Timeline(info, curves, frames)


def save_timeline(tl: Timeline, folder: str | Path, note: str = "") -> Path:
    """Write ``timeline.json`` and a ``frames/`` folder of PNGs into ``folder``; its path."""
    folder = Path(folder)
    (folder / "frames").mkdir(parents=True, exist_ok=True)
    for old in (folder / "frames").glob("step-*.png"):
        old.unlink()
    frames = []
    for f in tl.frames:
        name = f"frames/step-{f.step:07d}.png"
        shutil.copyfile(f.path, folder / name)
        frames.append({"step": f.step, "file": name})
    doc = {"format": FORMAT, "version": VERSION, "info": {**tl.info, **({"note": note} if note else {})},
           "curves": {k: {"step": v["step"], "value": [round(x, 6) for x in v["value"]]} for k, v in tl.curves.items()},
           "frames": frames}
    path = folder / "timeline.json"
    atomic_write(path, lambda out: out.write(json.dumps(doc, indent=1).encode()))
    return path


def load_timeline(folder: str | Path) -> Timeline:
    """A timeline written by :func:`save_timeline`; ValueError if ``folder`` holds none."""
    folder = Path(folder)
    try:
        doc = json.loads((folder / "timeline.json").read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"{env.shown_path(folder)} holds no readable timeline.json "
                         f"({env.shown_error(exc)})") from exc
    if doc.get("format") != FORMAT:
        raise ValueError(f"{env.shown_path(folder / 'timeline.json')} is not a Flow Lab timeline")
    frames = [Frame(int(f["step"]), folder / f["file"]) for f in doc.get("frames", [])
              if (folder / f["file"]).is_file()]
    return Timeline(doc.get("info", {}), doc.get("curves", {}), sorted(frames, key=lambda f: f.step))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m flowlib.train.timeline",
                                     description="Save a run's curves and sample grids as a timeline folder.")
    parser.add_argument("run", help="run id or name")
    parser.add_argument("--runs-dir", default=None, help="run store folder (default $FLOWLAB_RUNS_DIR)")
    parser.add_argument("--out", required=True, help="folder to write timeline.json and frames/ into")
    parser.add_argument("--note", default="", help="a line about how the run was made")
    args = parser.parse_args(argv)
    from flowlib.store.runs import RunStore
    store = RunStore(args.runs_dir)
    run = store.find_run(args.run)
    if run is None:
        print(f"no run {args.run!r} in {store.root}", file=sys.stderr)
        return 1
    tl = timeline_of_run(store, run["id"])
    path = save_timeline(tl, args.out, args.note)
    print(f"{len(tl.frames)} frames and {len(tl.curves)} curves -> {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
