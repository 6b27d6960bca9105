"""What surrounds a training session without being training: heartbeat, stop requests, signals.

    monitor = Monitor(lease, run_id)     # a thread: heartbeat ~1/s, polls the store's stop flag
    monitor.start()
    with stop_signals(monitor.stop_event, enabled=True):   # Ctrl-C / SIGTERM: a clean stop
        with monitor.waiting_for_ranks():                  # torchrun: a collective that must not hang
            ...                          # the loop reads monitor.stop_event.is_set() and monitor.fenced
    monitor.close()

The monitor beats through the worker's :class:`~flowlib.store.lease.RunLease`, so every
heartbeat is fenced: once another worker holds the run, ``fenced`` turns True and the monitor
stops beating (the session then ends without writing). A run marked ``lost`` while this worker
still holds its token is not an orphan: the heartbeat brings it back, or, when its slot went
to another run meanwhile, ``overtaken`` turns True and the session stops with a checkpoint,
saying why. Its pace is the monotonic clock; the wall clock plays no part.

Under torchrun, rank 0 marks the collectives it waits in (:meth:`Monitor.waiting_for_ranks`).
Another rank that stops answering (SIGSTOP, a hang) leaves rank 0 blocked in one; after the
heartbeat window ``on_hung`` is called (``flowlib.train.loop`` records the failure in words
and ends the process): a heartbeat thread must not keep a run looking alive that makes no step.

``persist`` retries the store calls a run cannot do without (begin, finish) while the
database is locked; ``append_log`` adds to a run's worker.log and never raises.
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from pathlib import Path
from typing import Any, Callable

from flowlib.store.limits import HEARTBEAT_S
from flowlib.store.runs import FencedOutError, StoreBusyError

__all__ = ["Monitor", "stop_signals", "persist", "append_log", "HEARTBEAT_S", "STOP_POLL_S"]

STOP_POLL_S = 0.5


class Monitor(threading.Thread):
    """Heartbeat (every ~1 s, carrying the step) and stop-flag polling, off the training thread.

    ``store`` is the worker's lease (a plain RunStore beats unfenced). ``step`` starts as None,
    so heartbeats during setup leave the run's stored step alone (a resume that fails while
    loading its checkpoint must not read step 0).

    The training loop reads ``stop_event.is_set()`` and ``fenced``. A database that stays
    locked costs a skipped heartbeat, nothing more. ``hung_after_s`` (the heartbeat window):
    how long rank 0 may wait in a collective before ``on_hung(seconds)`` is called.
    """

    def __init__(self, store, run_id: int, hung_after_s: float | None = None,
                 on_hung: Callable[[float], None] | None = None, clock: Callable[[], float] = time.monotonic):
        super().__init__(daemon=True, name=f"flowlab-monitor-{run_id}")
        self.store, self.run_id = store, run_id
        self.step: int | None = None   # None until the trainer knows it: the stored step stands
        self.stop_event = threading.Event()   # stop requested (store flag, signal, orphaned, fenced)
        self.orphaned = False                 # the run is gone, or ended by someone else
        self.overtaken = False                # marked lost, and its slot went to another run meanwhile
        self.fenced = False                   # another worker holds the run: write nothing more
        self.hung_after_s, self.on_hung, self.clock = hung_after_s, on_hung, clock
        self._collective_since: float | None = None
        self._done = threading.Event()

    @contextlib.contextmanager
    def waiting_for_ranks(self):
        """Around rank 0's collectives in the training loop: how long it has been waiting."""
        self._collective_since = self.clock()
        try:
            yield
        finally:
            self._collective_since = None

    def run(self) -> None:
        last_beat = float("-inf")
        while not self._done.wait(STOP_POLL_S):
            now = self.clock()
            since = self._collective_since
            if self.on_hung is not None and since is not None and now - since > self.hung_after_s:
                self.on_hung(now - since)
                return
            try:
                if now - last_beat >= HEARTBEAT_S - 0.05:
                    status, stop = self.store.heartbeat(self.run_id, self.step)
                    last_beat = now
                else:
                    status, stop = self.store.poll_stop(self.run_id)
                    if status == "lost":         # only a heartbeat may say what that means for us
                        last_beat = float("-inf")
                        continue
            except FencedOutError:
                self.fenced = True
                self.stop_event.set()
                return
            except Exception:  # locked, disk trouble: skip this beat, the next one may work
                continue
            if stop:
                self.stop_event.set()
            if status == "lost":
                self.overtaken = True
                self.stop_event.set()
            elif status not in ("running", "stopping"):
                self.orphaned = True
                self.stop_event.set()

    def close(self) -> None:
        self._done.set()
        if self.is_alive():
            self.join(timeout=5)


@contextlib.contextmanager
def stop_signals(stop_event: threading.Event, enabled: bool):
    """SIGTERM / SIGINT ask for a clean stop; a second SIGINT interrupts for real."""
    if not enabled or threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}

    def handler(signum, frame):
        if signum == signal.SIGINT and stop_event.is_set():
            raise KeyboardInterrupt
        stop_event.set()

    for s in previous:
        signal.signal(s, handler)
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def append_log(path: Path, text: str) -> None:
    try:
        with open(path, "a", encoding="utf-8") as f:
            f.write(text)
    except OSError:
        pass


def persist(call: Callable[[], Any], patience_s: float = 300.0) -> Any:
    """Retry a store call the run cannot do without (begin, finish) while the DB is locked."""
    deadline = time.monotonic() + patience_s
    while True:
        try:
            return call()
        except StoreBusyError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)
