"""What surrounds a training session without being training: heartbeat, stop requests, signals.

    monitor = Monitor(store, run_id)     # a thread: heartbeat ~1/s, polls the store's stop flag
    monitor.start()
    with stop_signals(monitor.stop_event, enabled=True):   # Ctrl-C / SIGTERM: a clean stop
        ...                              # the loop only reads monitor.stop_event.is_set()
    monitor.close()

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

from flowlib.store.runs import RunStore, StoreBusyError

__all__ = ["Monitor", "stop_signals", "persist", "append_log", "HEARTBEAT_S", "STOP_POLL_S"]

HEARTBEAT_S = 1.0
STOP_POLL_S = 0.5


class Monitor(threading.Thread):
    """Heartbeat (every ~1 s, carrying the step) and stop-flag polling, off the training thread.

    ``step`` starts as None, so heartbeats during setup leave the run's stored step alone
    (a resume that fails while loading its checkpoint must not read step 0).

    The training loop only reads ``stop_event.is_set()``. A database that stays locked costs
    a skipped heartbeat, nothing more.
    """

    def __init__(self, store: RunStore, run_id: int):
        super().__init__(daemon=True, name=f"flowlab-monitor-{run_id}")
        self.store, self.run_id = store, run_id
        self.step: int | None = None   # None until the trainer knows it: the stored step stands
        self.stop_event = threading.Event()   # stop requested (store flag, signal, or orphaned)
        self.orphaned = False                 # the store no longer thinks we are running
        self._done = threading.Event()

    def run(self) -> None:
        last_beat = float("-inf")
        while not self._done.wait(STOP_POLL_S):
            now = time.monotonic()
            try:
                if now - last_beat >= HEARTBEAT_S - 0.05:
                    status, stop = self.store.heartbeat(self.run_id, self.step)
                    last_beat = now
                else:
                    status, stop = self.store.poll_stop(self.run_id)
            except Exception:  # locked, disk trouble: skip this beat, the next one may work
                continue
            if stop:
                self.stop_event.set()
            if status not in ("running", "stopping"):
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
