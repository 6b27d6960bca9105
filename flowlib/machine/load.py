"""How busy the machine is beside this process, and how long this process has been alive.

    from flowlib.machine.load import busy_beside, busy_lately, process_age_s
    busy_beside()        # e.g. 1.8: threads of other programs ready to run right now (mean of a few looks)
    busy_lately()        # the same, steady over the last ~4 s: a page's own render burst does not count
    process_age_s()      # seconds since this process started (the worker: since Start was pressed)

Torch-free, and cheap (a few small reads under /proc), so a page may call it on every
rerun and the trainer at every metrics row. ``busy_beside`` is what decides how much of the
cores a run will get: the 1-minute load average lags a run that started a few seconds
ago, the number of runnable threads does not. On systems without /proc both answer from
what is there (the load average; None for the age).
"""

from __future__ import annotations

import os
import threading
import time
from collections import deque

__all__ = ["busy_beside", "busy_lately", "process_age_s", "cores"]


def cores() -> int:
    return os.cpu_count() or 1


def _runnable_now() -> int | None:
    """Threads on the whole machine that are running or ready to run (4th field of /proc/loadavg)."""
    try:
        with open("/proc/loadavg") as f:
            return int(f.read().split()[3].split("/")[0])
    except (OSError, ValueError, IndexError):
        return None


def _own_runnable() -> int:
    """This process's threads that are running or ready to run (state R)."""
    count = 0
    try:
        tasks = os.listdir("/proc/self/task")
    except OSError:
        return 1
    for tid in tasks:
        try:
            with open(f"/proc/self/task/{tid}/stat") as f:
                text = f.read()
        except OSError:
            continue
        if text[text.rfind(")") + 2:].startswith("R"):
            count += 1
    return max(count, 1)   # the thread reading this is running


def busy_beside(looks: int = 5, gap_s: float = 0.002) -> float:
    """Threads of other programs ready to run, the mean of ``looks`` looks ``gap_s`` apart:
    0 on a quiet machine, about 2 beside a run that trains on 2 cores. Without /proc: the
    1-minute load average (which counts this process too)."""
    seen = []
    for i in range(max(1, looks)):
        total = _runnable_now()
        if total is None:
            break
        seen.append(max(0, total - _own_runnable()))
        if i + 1 < looks:
            time.sleep(gap_s)
    if seen:
        return sum(seen) / len(seen)
    try:
        return os.getloadavg()[0]
    except OSError:
        return 0.0


def process_age_s() -> float | None:
    """Seconds since this process started (None where /proc cannot say)."""
    try:
        with open("/proc/self/stat") as f:
            text = f.read()
        start_ticks = int(text[text.rfind(")") + 2:].split()[19])
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
        return max(0.0, uptime - start_ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return None


WATCH_EVERY_S = 0.25
WATCH_SPAN_S = 4.0
_watch_lock = threading.Lock()
_samples: deque = deque(maxlen=int(WATCH_SPAN_S / WATCH_EVERY_S))
_watcher: threading.Thread | None = None


def _watch() -> None:
    while True:
        _samples.append(busy_beside(looks=1))
        time.sleep(WATCH_EVERY_S)


def busy_lately(quantile: float = 0.25) -> float:
    """The load a run would train beside: the ``quantile`` of ``busy_beside`` looks taken every
    0.25 s over the last 4 s by a daemon thread of this process (started on the first call;
    until it holds 2 s of looks, a call takes 0.5 s of looks of its own). A run training
    beside keeps the low quantile up; the browser and server drawing the very page that asks
    (a burst of a few hundred ms) do not: read at once, they made a quiet machine look 3.8
    threads busy and the estimate 4× too low."""
    global _watcher
    with _watch_lock:
        if _watcher is None:
            _watcher = threading.Thread(target=_watch, name="flowlab-load-watch", daemon=True)
            _watcher.start()
        seen = sorted(_samples)
    if len(seen) < 8:   # the watcher has only just started: half a second of looks now
        seen = []
        for _ in range(25):
            seen.append(busy_beside(looks=1))
            time.sleep(0.02)
        seen.sort()
    return seen[min(len(seen) - 1, int(quantile * len(seen)))]
