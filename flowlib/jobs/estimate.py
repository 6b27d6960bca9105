"""What a run will cost, told without building or training a model in the caller's process.

    from flowlib.jobs.estimate import SpeedEstimator, SpeedRequest, parameter_count
    parameter_count(cfg)                       # arithmetic on a FlowConfig: no torch, no allocation
    estimator = SpeedEstimator(store.root / "speed-estimates")
    request = SpeedRequest(cfg.to_dict(), batch=64, device="auto", bf16=True, threads=None)
    estimator.estimate(request, store)         # a dict when known, else None while a process measures

Why: the Streamlit server is long-lived and shared. Building a visitor's model there to count
its parameters took 6 GB for width 2048 / K=64, and timing real training steps there took
19–21 s on a first visit under load. So the count is arithmetic, and the speed comes from

1. history: the ``images_per_s`` curve of earlier runs of the same config, batch, device and
   precision in the run store (the median, so warm-up and busy moments do not decide it);
2. a measurement cached on disk, keyed by config, measured batch, device, precision, threads
   and gradient clip (renewed after a day; a failure is retried after ten minutes);
3. otherwise a new measurement in its own process, ``python -m flowlib.jobs.estimate``, that sets
   a memory limit on itself (``resource.setrlimit``) and an alarm, times the trainer's own step
   (``flowlib.train.step.train_step`` with ``make_optimizer``'s Adam, bf16 networks where the
   trainer would use them) and writes its answer, or the reason it has none, to the cache.
   The caller polls.

This module imports no torch at module level (the measuring child does, in :func:`main`).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

from flowlib import env
from flowlib.fileio import atomic_write
from flowlib.size import parameter_count

from .launch import start_module

__all__ = ["parameter_count", "SpeedRequest", "SpeedEstimator", "history_images_per_s",
           "measure_training_speed", "main"]

MAX_MEASURED_BATCH = 64     # a measurement times batches of at most this many images
HISTORY_RUNS = 5            # newest matching runs whose speed curves count
HISTORY_MIN_POINTS = 3      # fewer logged points than this say little (warm-up, a short run)
MAX_PARALLEL = 2            # measuring processes at once per server; more requests wait their turn
RETRY_FAILED_AFTER_S = 600  # a failed measurement (e.g. timed out on a busy machine) is retried after this
REMEASURE_AFTER_S = 86400   # a measurement is one moment's load on a shared machine: renew it daily


# -- speed: the request, history and the cache ----------------------------------------------
@dataclass(frozen=True)
class SpeedRequest:
    """What decides a run's images/s: the model, the batch, where and how it trains."""

    config: dict                     # FlowConfig.to_dict()
    batch: int                       # the run's batch size (measured at most MAX_MEASURED_BATCH)
    device: str = "auto"             # TrainConfig.device
    bf16: bool = False               # TrainConfig.bf16 (the child decides whether it is fast here)
    threads: int | None = None       # TrainConfig.threads; None = every core, as the trainer does
    grad_clip: float | None = 50.0   # TrainConfig.grad_clip: the measured step clips at it (None: never)

    @classmethod
    def for_run(cls, config, train) -> "SpeedRequest":
        """The request for a run's FlowConfig and TrainConfig (what its training step depends on)."""
        return cls(config.to_dict(), int(train.batch_size), train.device, bool(train.bf16), train.threads,
                   train.grad_clip)

    @property
    def measured_batch(self) -> int:
        return max(1, min(int(self.batch), MAX_MEASURED_BATCH))

    def key(self) -> str:
        """Cache key: every input of the measurement, the thread count resolved as the trainer does."""
        threads = self.threads if self.threads is not None else (os.cpu_count() or 1)
        text = json.dumps({"config": self.config, "batch": self.measured_batch, "device": self.device,
                           "bf16": bool(self.bf16), "threads": threads, "grad_clip": self.grad_clip},
                          sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:24]


def history_images_per_s(store, request: SpeedRequest) -> dict | None:
    """The median logged images/s of the newest runs with this config, batch, device, bf16 and threads.

    None when fewer than HISTORY_MIN_POINTS points exist. ``store`` is a RunStore.
    """
    values, runs = [], 0
    for run in store.list_runs():                          # newest first
        train = run["train"]
        if (run["config"] != request.config or train.get("batch_size") != request.batch
                or train.get("device", "auto") != request.device
                or bool(train.get("bf16", False)) != bool(request.bf16)
                or train.get("threads") != request.threads):
            continue
        curve = store.metrics(run["id"], keys=["images_per_s"]).get("images_per_s")
        points = [v for v in (curve or {}).get("value", []) if v is not None and v > 0]
        if points:
            values += points
            runs += 1
        if runs >= HISTORY_RUNS:
            break
    if len(values) < HISTORY_MIN_POINTS:
        return None
    return {"images_per_s": statistics.median(values), "source": "history", "runs": runs,
            "points": len(values)}


_RUNNING: dict[str, subprocess.Popen] = {}     # result path -> measuring process (this server)
_RUNNING_LOCK = threading.Lock()


def _write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda f: f.write(json.dumps(data).encode()))   # never half a result


class SpeedEstimator:
    """Speed estimates for one server: from history, the disk cache, or a measuring process.

    ``load_per_core()``: the machine's load average per core now (None if unknown), which
    decides whether a figure measured on a busy machine is measured again; the real one
    unless a test passes another.
    """

    def __init__(self, cache_dir: str | os.PathLike, timeout_s: float | None = None,
                 memory_mb: int | None = None, load_per_core: Callable[[], float | None] | None = None):
        self.cache_dir = Path(cache_dir)
        self.load_per_core = load_per_core if load_per_core is not None else _load_per_core
        # FLOWLAB_ESTIMATE_TIMEOUT_S / FLOWLAB_ESTIMATE_MEMORY_MB: what one measurement may
        # take. The memory is on top of what torch itself maps at import (~0.6 GB here).
        self.timeout_s = timeout_s if timeout_s is not None else env.read("FLOWLAB_ESTIMATE_TIMEOUT_S")
        self.memory_mb = memory_mb if memory_mb is not None else env.read("FLOWLAB_ESTIMATE_MEMORY_MB")

    def path(self, request: SpeedRequest) -> Path:
        return self.cache_dir / f"{request.key()}.json"

    def cached(self, request: SpeedRequest) -> dict | None:
        """A finished measurement (or the recent reason it failed) for this request, or None."""
        path = self.path(request)
        try:
            known = json.loads(path.read_text())
            max_age = RETRY_FAILED_AFTER_S if "error" in known else REMEASURE_AFTER_S
            age = time.time() - path.stat().st_mtime
            if age > max_age:
                return None   # the machine may have been busy then, or the limits changed since
            if _measured_busy_now_quiet(known, self.load_per_core()) and age > RETRY_FAILED_AFTER_S / 10:
                return None   # a figure from a busy moment would stick for a day: measure again
            return known
        except (OSError, ValueError):
            return None

    def measuring(self, request: SpeedRequest) -> bool:
        with _RUNNING_LOCK:
            proc = _RUNNING.get(str(self.path(request)))
        return proc is not None and proc.poll() is None

    def known(self, request: SpeedRequest, store=None) -> dict | None:
        """What is known without measuring: earlier runs' speed here, else the disk cache."""
        if store is not None:
            found = history_images_per_s(store, request)
            if found is not None:
                return found
        return self.cached(request)

    def estimate(self, request: SpeedRequest, store=None) -> dict | None:
        """The estimate if known now; an ``{"error"}`` answer at once for a model whose state
        alone exceeds the measurement's memory; otherwise start measuring (at most MAX_PARALLEL
        at once) and return None: call again later. Never blocks for more than a file read and a query.

        Results: ``{"images_per_s", "source": "history" | "measured", ...}`` or ``{"error": words}``.
        """
        known = self.known(request, store)
        if known is not None:
            return known
        too_big = self._too_big_to_measure(request)
        if too_big is not None:
            return too_big
        self._start(request)
        return None

    def _too_big_to_measure(self, request: SpeedRequest) -> dict | None:
        """An answer without a process for a model whose weights, gradients and Adam's two
        moments (4 float32 copies) alone exceed the measurement's memory."""
        from flowlib.config import FlowConfig

        state_mb = 16 * parameter_count(FlowConfig.from_dict(request.config)) / 2**20
        if state_mb <= self.memory_mb:
            return None
        return {"error": f"this model's weights, gradients and optimizer state alone take "
                         f"{state_mb:,.0f} MB, more than the {self.memory_mb:,} MB a speed "
                         "measurement may use here"}

    def _start(self, request: SpeedRequest) -> None:
        out = self.path(request)
        with _RUNNING_LOCK:
            live = {k: p for k, p in _RUNNING.items() if p.poll() is None}
            if str(out) in live or len(live) >= MAX_PARALLEL:
                return
            out.parent.mkdir(parents=True, exist_ok=True)
            proc = start_module("flowlib.jobs.estimate", [
                "--request", json.dumps(asdict(request)), "--out", str(out),
                "--timeout", str(self.timeout_s), "--memory-mb", str(self.memory_mb)])
            _RUNNING[str(out)] = proc
        threading.Thread(target=self._watch, args=(out, proc), daemon=True,
                         name=f"flowlab-estimate-{proc.pid}").start()

    def _watch(self, out: Path, proc: subprocess.Popen) -> None:
        """Reap the child (no zombie); kill it past its time; record why if it left no answer."""
        grace = 10.0   # the child's own alarm fires first unless one torch op runs that long
        try:
            code = proc.wait(timeout=self.timeout_s + grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            code = proc.wait()
        with _RUNNING_LOCK:
            if _RUNNING.get(str(out)) is proc:
                del _RUNNING[str(out)]
        if not out.is_file():
            how = f"was killed by signal {-code}" if code < 0 else f"exited with code {code}"
            _write_json(out, {"error": f"the measuring process {how} without an answer "
                                       f"(a limit of {self.timeout_s:g} s and {self.memory_mb} MB)"})


# -- the measurement (in the child) -----------------------------------------------------------
def measure_training_speed(config: dict, batch: int, device: str = "auto", bf16: bool = False,
                           threads: int | None = None, grad_clip: float | None = 50.0,
                           budget_s: float = 1.2, max_steps: int = 12) -> dict:
    """Images/s of the trainer's own step (``flowlib.train.step.train_step``) on random pixels.
    Call it in a process of its own.

    The step is the trainer's function itself: forward (coupling networks in bf16 when asked
    and fast here), backward, gradient-norm clipping, the one host sync of the step's
    statistics, Adam. It clips at the fixed ``grad_clip`` (the run's absolute clip; None:
    never), where a run with ``grad_clip_relative`` lowers the threshold as it goes: clipping
    scales every gradient whatever the threshold, so the work timed is the same. The noise
    comes from one seeded generator. One or two untimed warm-up steps, then up to
    ``max_steps`` timed steps or ``budget_s`` seconds; the fastest step counts (a step that
    shared the cores with a browser or another run says more about them than about this model).
    """
    import torch

    from flowlib.config import FlowConfig
    from flowlib.core.model import FlowModel
    from flowlib.machine.device import bf16_is_fast, configure_threads, pick_device
    from flowlib.machine.memory import tune_for_training
    from flowlib.train.step import BitsPerDimLoss, make_optimizer, train_step

    dev = pick_device(device)
    used_threads = configure_threads(dev, threads)
    if dev.type == "cpu":
        tune_for_training()
    cfg = FlowConfig.from_dict(config)
    use_bf16 = bool(bf16) and bf16_is_fast(dev)
    b = max(1, min(int(batch), MAX_MEASURED_BATCH))
    gen = torch.Generator().manual_seed(0)
    x = torch.randint(0, cfg.n_bins, (b, *cfg.image_shape), dtype=torch.uint8, generator=gen).to(dev)
    model = FlowModel(cfg).to(dev)
    model.train()
    with torch.no_grad():
        model.initialize(model.preprocess(x))
    params = [p for p in model.parameters() if p.requires_grad]
    opt = make_optimizer(params, lr=1e-4)
    loss = BitsPerDimLoss(model)
    clip = grad_clip if grad_clip is not None else float("inf")

    def step():
        uniform = torch.rand(x.shape, generator=gen)
        train_step(loss, opt, params, x, uniform, clip, bf16=use_bf16)
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)

    t0 = time.perf_counter()
    step()                      # cold: allocations, autograd and kernel set-up
    if time.perf_counter() - t0 < 0.5:
        step()                  # a second untimed step when it is cheap
    times: list[float] = []
    while not times or (len(times) < max_steps and sum(times) < budget_s):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return {"images_per_s": b / min(times), "batch_measured": b, "steps": len(times),
            "device": dev.type, "bf16": use_bf16, "threads": used_threads, "source": "measured",
            "measured_at": time.time(), "load": _load_per_core()}


BUSY_LOAD_PER_CORE = 1.0       # load average per core above which the machine was busy
QUIET_LOAD_PER_CORE = 0.6


def _load_per_core() -> float | None:
    try:
        return os.getloadavg()[0] / (os.cpu_count() or 1)
    except OSError:
        return None


def _measured_busy_now_quiet(known: dict, now: float | None) -> bool:
    """True when a measurement was taken on a busy machine (load above one per core) and the
    machine is quiet now (``now``: its load per core): such a figure (the tour saw 17 images/s, and a wider model estimated
    faster than a narrower one) says more about that moment than about the model."""
    then = known.get("load")
    return then is not None and now is not None and then > BUSY_LOAD_PER_CORE and now < QUIET_LOAD_PER_CORE


def _virtual_memory_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")


def _limit_cpu_memory(device: str, memory_mb: int) -> None:
    """Cap this process's address space at what torch has mapped so far plus ``memory_mb``.

    CPU only: CUDA reserves far more address space than it uses, so a GPU measurement is
    bounded by the device's own memory (an out-of-memory there is caught like any other).
    """
    if not sys.platform.startswith("linux"):
        return
    import resource

    from flowlib.machine.device import pick_device  # imports torch: mapped before the cap, not counted in it
    if pick_device(device).type != "cpu":
        return
    limit = _virtual_memory_bytes() + memory_mb * 1024 * 1024
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m flowlib.jobs.estimate",
                                     description="Time a few training steps of one config; write JSON.")
    parser.add_argument("--request", required=True, help="SpeedRequest as JSON")
    parser.add_argument("--out", required=True, help="where to write the result (JSON)")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds before giving up")
    parser.add_argument("--memory-mb", type=int, default=3072,
                        help="memory this measurement may use beyond what torch maps at import")
    args = parser.parse_args(argv)
    out = Path(args.out)

    too_slow = f"the measurement took longer than {args.timeout:g} s"
    alarm_rang = []

    def out_of_time(signum, frame):
        alarm_rang.append(True)
        raise TimeoutError(too_slow)

    signal.signal(signal.SIGALRM, out_of_time)
    signal.alarm(max(1, int(round(args.timeout))))
    try:
        request = SpeedRequest(**json.loads(args.request))
        _limit_cpu_memory(request.device, args.memory_mb)
        result = measure_training_speed(request.config, request.batch, request.device, request.bf16,
                                        request.threads, request.grad_clip)
        if alarm_rang:   # some library caught the TimeoutError (an optional import): still too slow
            result = {"error": too_slow}
    except Exception as exc:  # noqa: BLE001 - the reason goes to the page, in words
        if alarm_rang:   # the TimeoutError may surface as another error (e.g. mid-import)
            result = {"error": too_slow}
        elif _allocation_failed(exc):
            result = {"error": f"this model needs more than the {args.memory_mb:,} MB a speed "
                               "measurement may use here"}
        else:
            first_line = (str(exc).strip().splitlines() or [""])[0][:200]
            result = {"error": f"{type(exc).__name__}: {first_line}"}
    finally:
        signal.alarm(0)
    _write_json(out, result)
    return 0 if "error" not in result else 1


def _allocation_failed(exc: BaseException) -> bool:
    from flowlib.train.oom import is_out_of_memory  # the trainer's own test, CPU allocator included

    return is_out_of_memory(exc)


if __name__ == "__main__":
    sys.exit(main())
