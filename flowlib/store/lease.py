"""One worker's hold on one run: the store as a training session sees it, every write fenced.

    token = new_token()
    if store.begin_run(run_id, os.getpid(), token) == "queued":
        lease = RunLease(store, run_id, token)
        lease.add_event(run_id, "start", "training ...", 0)     # FencedOutError once another worker has the run
        lease.write_file(run_id, store.checkpoint_path(run_id), lambda tmp: save_checkpoint(tmp, payload))

The training session (``flowlib.train.loop``) is handed a lease where it would take the
store: the same read methods, and the write methods with the same arguments, each passing
the worker's fencing token so the store checks it in the write's own transaction
(:mod:`flowlib.store.liveness`). Nothing else can be written through it: a store method not
listed here is an AttributeError, never an unfenced write.

Files: :meth:`RunLease.write_file` writes beside the target and, in a transaction that checks
the token, renames it into place; a fenced-out worker's file is removed, never installed. So
a checkpoint (or a sample grid) in the run's folder is always one its current worker wrote.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

__all__ = ["RunLease"]

_READS = ("root", "limits", "store_id", "clock", "run_dir", "checkpoint_path", "log_path", "get_run",
          "latest_metrics", "metrics", "events", "samples", "latest_samples", "stored_request", "poll_stop")


class RunLease:
    """The store as one worker of one run may use it (see the module's docstring)."""

    def __init__(self, store, run_id: int, token: str):
        self.store, self.run_id, self.token = store, int(run_id), token

    def __getattr__(self, name):
        if name in _READS:
            return getattr(self.store, name)
        raise AttributeError(f"a run's lease has no {name!r}: a worker writes only through the fenced "
                             "methods of flowlib.store.lease.RunLease")

    def __repr__(self) -> str:
        return f"RunLease({self.store!r}, run {self.run_id})"

    def _own(self, run_id: int) -> int:
        if int(run_id) != self.run_id:
            raise ValueError(f"this lease is for run {self.run_id}, not run {run_id}")
        return self.run_id

    # -- fenced writes: the store's methods, with this worker's token ------------------------
    def heartbeat(self, run_id: int, step: int | None = None) -> tuple[str | None, bool]:
        return self.store.heartbeat(self._own(run_id), step, token=self.token)

    def add_event(self, run_id: int, kind: str, message: str, step: int | None = None) -> None:
        self.store.add_event(self._own(run_id), kind, message, step, token=self.token)

    def append_metrics(self, run_id: int, rows) -> int:
        return self.store.append_metrics(self._own(run_id), rows, token=self.token)

    def truncate_after(self, run_id: int, step: int) -> int:
        return self.store.truncate_after(self._own(run_id), step, token=self.token)

    def set_best_test_bpd(self, run_id: int, value: float) -> None:
        self.store.set_best_test_bpd(self._own(run_id), value, token=self.token)

    def add_samples(self, run_id: int, step: int, path) -> None:
        self.store.add_samples(self._own(run_id), step, path, token=self.token)

    def finish_run(self, run_id: int, status: str, message: str, step: int | None = None) -> bool:
        return self.store.finish_run(self._own(run_id), status, message, step, token=self.token)

    def check(self) -> None:
        """FencedOutError unless this worker still holds the run."""
        self.store.read(lambda conn: self.store.fence(conn, self.run_id, self.token))

    def write_file(self, run_id: int, path: Path, write: Callable[[Path], object], step: int | None = None) -> None:
        """``write(tmp)`` beside ``path``, then, if this worker still holds the run, rename it
        to ``path`` inside a transaction that checked so (FencedOutError otherwise; the file
        written is removed either way it fails). ``step``: the file is the run's state at this
        step (a checkpoint), recorded as the run's step in the same transaction, so the stored
        step is never behind the checkpoint a resume continues from."""
        self._own(run_id)
        path = Path(path)
        tmp = path.with_name(f".{path.name}.{self.token[:12]}.tmp")   # removed by the next session if left
        try:
            write(tmp)

            def install(conn):
                self.store.fence(conn, self.run_id, self.token)
                if tmp.exists():
                    os.replace(tmp, path)
                if step is not None:
                    conn.execute("UPDATE runs SET step=? WHERE id=?", (int(step), self.run_id))
            self.store.transaction(install)
        finally:
            tmp.unlink(missing_ok=True)
