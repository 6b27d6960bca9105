"""What a training session writes to the run store: events, metric rows, the best score, grids.

    journal = Journal(store, run_id, dist)
    journal.event("eval", "step 10: test 3.21 bits/dim on 500 held-out images", step=10)
    journal.metrics(10, [("test_bpd", 3.21)])    # buffered ...
    journal.flush()                           # ... and written in one transaction

Only rank 0 writes (under torchrun the other ranks keep the same bookkeeping and write
nothing). An event, a best score or a grid's row that a locked database refuses is skipped,
and metric rows stay buffered for the next flush: none of these ends a run.

The store a session is given is its worker's lease (:class:`flowlib.store.lease.RunLease`):
every write here is fenced, and FencedOutError (another process holds the run) is never
swallowed: it ends the session. :meth:`Journal.write_file` installs a file in the run's
folder (a checkpoint, a sample grid) the same way.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from flowlib.store.runs import RunStore, StoreBusyError

from .distributed import Dist

__all__ = ["Journal"]

MAX_BUFFERED_ROWS = 100_000     # a day-long lock: then keep the newest half


class Journal:
    """A session's writes to the run store (see the module's docstring)."""

    def __init__(self, store: RunStore, run_id: int, dist: Dist):
        self.store, self.run_id, self.dist = store, run_id, dist
        self.rows: list[tuple] = []     # (step, wall time, key, value), not yet written

    def event(self, kind: str, message: str, step: int) -> None:
        if not self.dist.is_main:
            return
        try:
            self.store.add_event(self.run_id, kind, message, step)
        except StoreBusyError:
            pass  # an event lost to a locked database is better than a dead run

    def metrics(self, step: int, values: list[tuple[str, float]]) -> None:
        """Buffer one metrics row per ``(key, value)`` at ``step``, all stamped with the wall time now."""
        wall = time.time()
        self.rows += [(step, wall, key, value) for key, value in values]

    def flush(self) -> None:
        """Write the buffered rows in one transaction (rank 0; the other ranks drop theirs)."""
        if not self.rows or not self.dist.is_main:
            self.rows = [] if not self.dist.is_main else self.rows
            return
        try:
            self.store.append_metrics(self.run_id, self.rows)
            self.rows = []
        except StoreBusyError:
            if len(self.rows) > MAX_BUFFERED_ROWS:
                self.rows = self.rows[-MAX_BUFFERED_ROWS // 2:]

    def truncate_after(self, step: int) -> int:
        """Forget every metric row after ``step``, stored or buffered (before training from
        ``step`` again); the number of stored rows dropped."""
        dropped = self.store.truncate_after(self.run_id, step)
        self.rows = [r for r in self.rows if r[0] <= step]
        return dropped

    def best_score(self, bpd: float) -> None:
        try:
            self.store.set_best_test_bpd(self.run_id, bpd)
        except StoreBusyError:
            pass

    def write_file(self, path: Path, write: Callable[[Path], object], step: int | None = None) -> None:
        """``write(p)`` a file that ends up at ``path``: through the lease's fenced install when
        the store is a lease (FencedOutError once another process holds the run; ``step``, a
        checkpoint's, becomes the run's stored step with it), else at once."""
        install = getattr(self.store, "write_file", None)
        if install is None:
            write(path)
        else:
            install(self.run_id, path, write, step)

    def sample_grid(self, step: int, path: Path) -> None:
        try:
            self.store.add_samples(self.run_id, step, path)
        except StoreBusyError:
            pass
