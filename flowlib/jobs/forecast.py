"""What a run will do here, learned from this device's earlier runs and its load now.

    from flowlib.jobs.forecast import forecast, pace_so_far
    fc = forecast(store, SpeedRequest.for_run(cfg, tc), tc, speed)   # speed: SpeedEstimator's answer
    fc.first_point_s        # seconds from Start to the chart's first point
    fc.steps_in(3.0)        # steps a 3-minute budget will reach
    fc.seconds_for(2000)    # a 2,000-step run, start-up and the final test included
    pace_so_far(metrics, batch)     # a running run's own pace, which corrects all of it as it goes

Every run records its pace (``flowlib.train.loop``): ``startup_s`` (process start to first
step), ``first_point_s`` (to its first metrics row), ``elapsed_s`` by step (training time,
evaluations, grids and checkpoints included) and ``busy_beside`` (threads of other programs
ready to run, ``flowlib.machine.load``). A forecast reads them back:

1. the quiet pace of these settings: earlier runs of the same model, batch, device,
   precision and threads, each run's steps ÷ its training time scaled up by the share of the
   cores it had (below); without such runs, the speed measurement (the fastest of a few
   steps, ``flowlib.jobs.estimate``) times what this device's runs actually made of their own
   measurements (evaluations, grids, checkpoints, a slower average step), 0.85 before any;
2. the share of the cores now: ``1 / (1 + a · busy / cores)``, with ``busy`` the steady load of
   the last seconds (``flowlib.machine.load.busy_lately``, not the page's own render burst) and
   ``a`` learned from earlier runs that trained both quiet and busy (1 before any);
3. start-up: the median of earlier runs' (same dataset first), scaled the same way.

So the second identical run's estimate is the first run's outcome, and a busy machine's
estimate is the quiet one scaled by what busy runs here got. Torch-free: the page calls it.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass

from flowlib.machine.load import busy_lately, cores

__all__ = ["PastRun", "Forecast", "past_runs", "forecast", "pace_so_far", "share_of_cores",
           "DEFAULT_STARTUP_S", "DEFAULT_MEASURED_SHARE"]

HISTORY_RUNS = 30               # newest runs read
SAME_RUNS = 5                   # newest runs of the same settings whose pace counts
MIN_TRAINING_S = 15.0           # shorter runs say little about a pace (warm-up, a stop at once)
QUIET_BUSY = 0.5                # a run with fewer other threads ready than this trained quiet
DEFAULT_STARTUP_S = 3.0         # process start to first step, MNIST, quiet, 2 cores (2.6-3.4 s measured here)
DEFAULT_MEASURED_SHARE = 0.85   # a run's pace ÷ its fastest-step measurement before any history (mnist-fast here: 1,340 / 1,554)
DEFAULT_CONTENTION = 1.0        # a: share of the cores = 1 / (1 + a · busy / cores)


@dataclass(frozen=True)
class PastRun:
    """One earlier run's pace on this device."""

    run_id: int
    settings: str                   # its model, batch, precision and threads, as one key
    same: bool                      # same settings as the request (model, batch, device, precision, threads)
    dataset: str
    batch: int
    steps: int                      # its last logged step
    training_s: float               # its training time by then (elapsed_s)
    busy: float                     # mean threads of other programs ready to run while it trained
    startup_s: float | None         # process start to first step (its newest session)
    first_point_s: float | None     # process start to its first metrics row (same session)
    measured: float | None = None   # the speed measurement of its settings, images/s, if one is known

    @property
    def images_per_s(self) -> float:
        """Its pace: images per second of training time, everything included."""
        return self.steps * self.batch / self.training_s


def share_of_cores(busy: float, contention: float = DEFAULT_CONTENTION, n_cores: int | None = None) -> float:
    """The share of the cores a run gets beside ``busy`` other ready threads."""
    return 1.0 / (1.0 + contention * max(0.0, busy) / (n_cores or cores()))


def _settings_key(run: dict) -> str:
    train = run["train"]
    return json.dumps([run["config"], train.get("batch_size"), bool(train.get("bf16", False)), train.get("threads")],
                      sort_keys=True)


def _matches(run: dict, request) -> bool:
    train = run["train"]
    return (run["config"] == request.config and train.get("batch_size") == request.batch
            and train.get("device", "auto") == request.device
            and bool(train.get("bf16", False)) == bool(request.bf16) and train.get("threads") == request.threads)


def past_runs(store, request, measured_of=None, limit: int = HISTORY_RUNS) -> list[PastRun]:
    """Of the newest ``limit`` runs in ``store``, those on the request's device setting that
    recorded a pace, newest first. ``measured_of(run)``: the speed measurement of a run's settings
    (images/s) or None; without it, none is known."""
    found = []
    for run in store.list_runs()[:limit]:
        if run.get("damaged") or run["train"].get("device", "auto") != request.device:
            continue
        m = store.metrics(run["id"], keys=["elapsed_s", "startup_s", "first_point_s", "busy_beside"])
        elapsed = m.get("elapsed_s")
        if not elapsed or not elapsed["value"]:
            continue
        busy = [v for v in (m.get("busy_beside") or {}).get("value", []) if v is not None]
        startup = (m.get("startup_s") or {}).get("value") or [None]
        first = (m.get("first_point_s") or {}).get("value") or [None]
        found.append(PastRun(run["id"], _settings_key(run), _matches(run, request), run["dataset"], int(run["train"].get("batch_size", 1)),
                             int(elapsed["step"][-1]), float(elapsed["value"][-1]),
                             statistics.fmean(busy) if busy else 0.0, startup[-1], first[-1],
                             measured_of(run) if measured_of is not None else None))
    return found


def learned_contention(runs: list[PastRun], n_cores: int) -> float:
    """``a`` of :func:`share_of_cores` from runs of the same settings that trained both quiet
    and busy: how much slower the busy ones were for the threads beside them."""
    by_settings: dict[str, list[PastRun]] = {}
    for r in runs:
        if r.training_s >= MIN_TRAINING_S:
            by_settings.setdefault(r.settings, []).append(r)
    found = []
    for group in by_settings.values():
        quiet = [r.images_per_s for r in group if r.busy < QUIET_BUSY]
        if not quiet:
            continue
        base = statistics.median(quiet)
        for r in group:
            if r.busy >= QUIET_BUSY and r.images_per_s > 0:
                found.append((base / r.images_per_s - 1.0) * n_cores / r.busy)
    return min(4.0, max(0.2, statistics.median(found))) if found else DEFAULT_CONTENTION


@dataclass(frozen=True)
class Forecast:
    """A run's expected pace here now (see the module's docstring)."""

    images_per_s: float         # training time's pace under the load now, everything included
    startup_s: float            # Start to the first step
    first_point_s: float        # Start to the chart's first point
    busy_now: float             # other threads ready to run now
    share: float                # of the cores this run will get
    batch: int
    source: str                 # in words: what it was learned from

    @property
    def steps_per_s(self) -> float:
        return self.images_per_s / self.batch

    def steps_in(self, minutes: float) -> int:
        """Steps a budget of ``minutes`` of training reaches."""
        return int(minutes * 60 * self.steps_per_s)

    def seconds_for(self, steps: int, final_test_images: int = 0) -> float:
        """Start to finish of a ``steps``-step run: start-up, training (evaluations, grids and
        checkpoints included) and the final test of ``final_test_images`` images (a forward
        pass is about 3× a training step's images/s)."""
        return self.startup_s + steps / self.steps_per_s + final_test_images / (3 * self.images_per_s)


def forecast(store, request, tc, speed: dict | None, busy_now: float | None = None,
             measured_of=None, n_cores: int | None = None) -> Forecast | None:
    """The expected pace of a run of ``request`` (a SpeedRequest) and ``tc`` (its
    TrainConfig) in ``store``'s device history, under ``busy_now`` other ready threads
    (measured now when None). ``speed``: the SpeedEstimator's answer for the request (used
    when no earlier run has these settings). None when neither history nor a speed is known."""
    n_cores = n_cores or cores()
    busy_now = busy_lately() if busy_now is None else busy_now
    runs = past_runs(store, request, measured_of)
    contention = learned_contention(runs, n_cores)

    def quiet(r: PastRun) -> float:   # what a run would have made of the cores on its own
        return r.images_per_s / share_of_cores(r.busy, contention, n_cores)

    same = [r for r in runs if r.same and r.training_s >= MIN_TRAINING_S][:SAME_RUNS]
    measured = speed.get("images_per_s") if speed and "error" not in speed else None
    if same:
        quiet_ips = statistics.median(quiet(r) for r in same)
        source = f"{len(same)} earlier run{'s' if len(same) != 1 else ''} of these settings here"
    elif measured:
        ratios = [quiet(r) / r.measured for r in runs if r.measured and r.training_s >= MIN_TRAINING_S]
        ratio = statistics.median(ratios) if ratios else DEFAULT_MEASURED_SHARE
        quiet_ips = measured * ratio
        source = (f"a measurement of these settings × {ratio:.2f}, what {len(ratios)} earlier run"
                  f"{'s' if len(ratios) != 1 else ''} here made of theirs" if ratios else
                  f"a measurement of these settings × {DEFAULT_MEASURED_SHARE} (no earlier runs here yet)")
    else:
        return None
    share = share_of_cores(busy_now, contention, n_cores)
    ips = quiet_ips * share

    starts = [r for r in runs if r.startup_s is not None]
    near = [r for r in starts if r.dataset == tc.dataset] or starts
    if near:
        startup = statistics.median(r.startup_s * share_of_cores(r.busy, contention, n_cores) for r in near[:SAME_RUNS])
    else:
        startup = DEFAULT_STARTUP_S
    startup /= share
    # the first log_every steps: from runs of these settings, else at the pace (cold steps included)
    firsts = [(r.first_point_s - r.startup_s) * share_of_cores(r.busy, contention, n_cores)
              for r in same if r.first_point_s is not None and r.startup_s is not None]
    first_steps = statistics.median(firsts) / share if firsts else tc.log_every * tc.batch_size / ips
    if busy_now >= QUIET_BUSY:
        source += f"; {busy_now:.1f} threads of other programs are ready to run now, so this run gets about " \
                  f"{share:.0%} of the {n_cores} cores"
    return Forecast(ips, startup, startup + first_steps, busy_now, share, int(tc.batch_size), source)


def pace_so_far(metrics: dict, batch: int, window_s: float = 30.0) -> float | None:
    """A running run's own pace, images per second of training time over its last ``window_s``
    seconds (everything included: evaluations, grids, checkpoints): what the dashboard's
    remaining-time and steps-by-the-end words use once a run has one. ``metrics``: the store's
    curves (``elapsed_s`` needed)."""
    el = metrics.get("elapsed_s") or {}
    steps, secs = el.get("step") or [], el.get("value") or []
    if len(steps) < 2:
        return None
    last_s, last_step = secs[-1], steps[-1]
    i = len(secs) - 2
    while i > 0 and last_s - secs[i] < window_s:
        i -= 1
    if last_s - secs[i] <= 0 or last_step <= steps[i]:
        return None
    return (last_step - steps[i]) * batch / (last_s - secs[i])
