"""A run's records in the store: metric curves, events and sample grids (a mixin of RunStore).

    store.append_metrics(run_id, [(step, wall, "train_bpd", 2.31), ...])   # one transaction
    store.metrics(run_id, keys=["train_bpd", "test_bpd"])   # {key: {"step": [...], "wall": [...], "value": [...]}}
    store.events(run_id)                     # start / resume / nan_skip / rollback / eval / checkpoint / ...
    store.latest_samples(run_id)             # {"step", "path", "wall"} of the newest sample grid, or None
    delta, cursor = store.metrics_since(run_id, cursor)     # only the rows written since (a page's poll)
    follower = CurveFollower(run_id); follower.refresh(store)   # what metrics() reads, kept up to date

Kept apart from :mod:`flowlib.store.runs` (runs, their status and the concurrency slots) because
these are append-mostly rows that only the trainer writes and the pages read. Sample grid
paths are stored relative to the run folder, so a copied runs folder shows its own grids.

A worker writes these with its fencing token (``token=``, passed by
:class:`flowlib.store.lease.RunLease`): a write whose token is no longer the run's raises
FencedOutError and writes nothing (:mod:`flowlib.store.liveness`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

__all__ = ["RunRecords", "CurveFollower", "EVENT_KINDS"]

EVENT_KINDS = ("start", "resume", "nan_skip", "rollback", "lr_drop", "eval", "checkpoint",
               "samples", "warning", "error", "stop", "finish", "lost", "early_stop", "precision")


class RunRecords:
    """Metrics, events and samples, through RunStore's ``transaction``, ``read``, ``run_dir``,
    ``clock`` and ``fence``."""

    # -- metrics ------------------------------------------------------------------------
    def append_metrics(self, run_id: int, rows: Iterable[tuple[int, float, str, float]],
                       token: str | None = None) -> int:
        """Insert (step, wall, key, value) rows in one transaction; returns how many."""
        rows = [(int(run_id), int(s), float(w), str(k), None if v is None else float(v))
                for s, w, k, v in rows]

        def insert(conn):
            self.fence(conn, run_id, token)
            conn.executemany("INSERT INTO metrics (run_id, step, wall, key, value) VALUES (?, ?, ?, ?, ?)", rows)
        if rows:
            self.transaction(insert)
        return len(rows)

    def metrics(self, run_id: int, keys: Iterable[str] | None = None,
                after_step: int | None = None) -> dict[str, dict[str, list]]:
        """Curves for charts: ``{key: {"step": [...], "wall": [...], "value": [...]}}``, step order.

        ``after_step`` returns only newer points (for incremental polling).
        """
        sql = "SELECT key, step, wall, value FROM metrics WHERE run_id=?"
        params: list = [int(run_id)]
        if keys is not None:
            keys = list(keys)
            if not keys:
                return {}
            sql += f" AND key IN ({','.join('?' * len(keys))})"
            params += keys
        if after_step is not None:
            sql += " AND step > ?"
            params.append(int(after_step))
        sql += " ORDER BY key, step, rowid"   # rowid: rows of one step in the order written
        out: dict[str, dict[str, list]] = {}
        for key, step, wall, value in self.read(lambda c: c.execute(sql, params).fetchall()):
            curve = out.get(key)
            if curve is None:
                curve = out[key] = {"step": [], "wall": [], "value": []}
            curve["step"].append(step)
            curve["wall"].append(wall)
            curve["value"].append(value)
        return out

    def metrics_since(self, run_id: int, cursor: tuple | None = None) -> tuple[dict | None, tuple]:
        """The metric rows written since ``cursor`` (None: all of them), and the cursor to pass
        next time: ``(curves, cursor)``, curves shaped like :meth:`metrics` and meant to be
        appended to the ones read before. ``curves`` is None when rows were dropped since
        (a resume or a rollback re-trains from a checkpoint): read everything again with
        ``metrics_since(run_id)``. A cursor is ``(curve revision, last row id)``.

        The revision and the rows are read in one transaction (one snapshot), so a truncation
        committed between them cannot slip in unseen."""
        def read(conn):
            conn.execute("BEGIN")
            try:
                return snapshot(conn)
            finally:
                conn.execute("COMMIT")

        def snapshot(conn):
            row = conn.execute("SELECT curve_rev FROM runs WHERE id=?", (int(run_id),)).fetchone()
            rev = row[0] if row is not None else 0
            if cursor is not None and cursor[0] != rev:
                return None, cursor
            if cursor is None:
                after = 0
                rows = conn.execute("SELECT rowid, key, step, wall, value FROM metrics WHERE run_id=? "
                                    "ORDER BY key, step, rowid", (int(run_id),)).fetchall()
            else:   # the rows after the cursor, found by row id: the cost does not grow with the run
                after = cursor[1]
                rows = conn.execute("SELECT rowid, key, step, wall, value FROM metrics NOT INDEXED "
                                    "WHERE rowid>? AND run_id=? ORDER BY key, step, rowid",
                                    (after, int(run_id))).fetchall()
            last = max((r[0] for r in rows), default=after)
            return rows, (rev, last)
        rows, new_cursor = self.read(read)
        if rows is None:
            return None, new_cursor
        out: dict[str, dict[str, list]] = {}
        for _rowid, key, step, wall, value in rows:
            curve = out.setdefault(key, {"step": [], "wall": [], "value": []})
            curve["step"].append(step)
            curve["wall"].append(wall)
            curve["value"].append(value)
        return out, new_cursor

    def latest_metrics(self, run_id: int) -> dict[str, tuple[int, float]]:
        """The newest value of each key: ``{key: (step, value)}`` (one indexed query)."""
        rows = self.read(lambda c: c.execute(
            "SELECT key, MAX(step) AS step, value FROM metrics WHERE run_id=? GROUP BY key",
            (int(run_id),)).fetchall())
        return {r["key"]: (r["step"], r["value"]) for r in rows}

    def truncate_after(self, run_id: int, step: int, token: str | None = None) -> int:
        """Forget metrics and sample grids after ``step`` (before re-training from a checkpoint
        there); the run's curve revision goes up, so a page reading increments reads afresh."""
        def trunc(conn):
            self.fence(conn, run_id, token)
            conn.execute("UPDATE runs SET curve_rev=curve_rev+1 WHERE id=?", (int(run_id),))
            paths = [r[0] for r in conn.execute("SELECT path FROM samples WHERE run_id=? AND step>?",
                                                (int(run_id), int(step)))]
            n = conn.execute("DELETE FROM metrics WHERE run_id=? AND step>?", (int(run_id), int(step))).rowcount
            conn.execute("DELETE FROM samples WHERE run_id=? AND step>?", (int(run_id), int(step)))
            return n, paths
        n, paths = self.transaction(trunc)
        for p in paths:
            path = Path(self._sample_path(run_id, p))
            if path.parent == self.run_dir(run_id):
                path.unlink(missing_ok=True)
        return n

    # -- events and samples ---------------------------------------------------------------
    def add_event(self, run_id: int, kind: str, message: str, step: int | None = None,
                  token: str | None = None) -> None:
        if kind not in EVENT_KINDS:
            raise ValueError(f"event kind must be one of {', '.join(EVENT_KINDS)}; got {kind!r}")

        def insert(conn):
            self.fence(conn, run_id, token)
            conn.execute("INSERT INTO events (run_id, step, wall, kind, message) VALUES (?, ?, ?, ?, ?)",
                         (int(run_id), step, self.clock.wall(), kind, str(message)))
        self.transaction(insert, last_words=kind in ("error", "stop", "finish", "lost"))

    def events(self, run_id: int, kinds: Iterable[str] | None = None, after_id: int | None = None) -> list[dict]:
        """Events in order: dicts with id, step, wall, kind, message."""
        sql = "SELECT id, step, wall, kind, message FROM events WHERE run_id=?"
        params: list = [int(run_id)]
        if kinds is not None:
            kinds = list(kinds)
            sql += f" AND kind IN ({','.join('?' * len(kinds))})"
            params += kinds
        if after_id is not None:
            sql += " AND id > ?"
            params.append(int(after_id))
        sql += " ORDER BY id"
        return [dict(r) for r in self.read(lambda c: c.execute(sql, params).fetchall())]

    def add_samples(self, run_id: int, step: int, path: str | os.PathLike, token: str | None = None) -> None:
        """Record a sample grid. A file in the run's folder is stored by its name relative to
        the folder, so a copied or moved runs folder shows its own grids."""
        stored = self._stored_path(run_id, path)

        def insert(conn):
            self.fence(conn, run_id, token)
            conn.execute("INSERT INTO samples (run_id, step, wall, path) VALUES (?, ?, ?, ?)",
                         (int(run_id), int(step), self.clock.wall(), stored))
        self.transaction(insert)

    def _stored_path(self, run_id: int, path: str | os.PathLike) -> str:
        folder, p = self.run_dir(run_id), Path(path)
        if not p.is_absolute():
            return p.as_posix()
        for base in (folder, folder.resolve()):
            try:
                return p.relative_to(base).as_posix()
            except ValueError:
                continue
        return str(p)

    def _sample_path(self, run_id: int, stored: str) -> str:
        """An absolute path for a stored one: relative rows are under the run's folder; an
        absolute row written by an older version whose folder is named like this run's is read
        from this store's folder when the file is there (a copied runs folder)."""
        p = Path(stored)
        folder = self.run_dir(run_id)
        if not p.is_absolute():
            return str(folder / p)
        if p.parent.name == folder.name and p.parent != folder:
            here = folder / p.name
            if here.is_file() or not p.is_file():
                return str(here)
        return str(p)

    def samples(self, run_id: int) -> list[dict]:
        """Every sample grid of a run, oldest first: dicts with step, wall, path (absolute)."""
        rows = self.read(lambda c: c.execute(
            "SELECT step, wall, path FROM samples WHERE run_id=? ORDER BY step, id", (int(run_id),)).fetchall())
        return [{**dict(r), "path": self._sample_path(run_id, r["path"])} for r in rows]

    def latest_samples(self, run_id: int) -> dict | None:
        """The newest sample grid: {"step", "wall", "path"} (path absolute), or None."""
        row = self.read(lambda c: c.execute(
            "SELECT step, wall, path FROM samples WHERE run_id=? ORDER BY step DESC, id DESC LIMIT 1",
            (int(run_id),)).fetchone())
        return None if row is None else {**dict(row), "path": self._sample_path(run_id, row["path"])}


class CurveFollower:
    """One run's curves as :meth:`RunRecords.metrics` reads them, kept up to date by reading
    only the rows written since the last refresh (a page polling a live run keeps one per tab).

        follower = CurveFollower(run_id)
        curves = follower.refresh(store)     # the first time: every row; then only the new ones

    ``refresh`` returns exactly what ``store.metrics(run_id)`` would return now: when rows
    were dropped (a resume or a rollback raises the run's curve revision), or when a new row
    of a curve lies before the curve's last step, it reads the run afresh instead of appending.
    Its cost per refresh follows the rows written since the last one, not the run's length.
    """

    def __init__(self, run_id: int):
        self.run_id = int(run_id)
        self.cursor: tuple | None = None
        self.curves: dict[str, dict[str, list]] = {}
        self.full_reads = 0        # how many refreshes read everything (tests and benchmarks look)

    def refresh(self, store) -> dict[str, dict[str, list]]:
        delta, cursor = store.metrics_since(self.run_id, self.cursor)
        if self.cursor is not None and delta is not None and self._extend(delta):
            self.cursor = cursor
            return self.curves
        if self.cursor is not None:        # rows were dropped, or one came out of order: read afresh
            delta, cursor = store.metrics_since(self.run_id)
        self.curves, self.cursor = delta, cursor
        self.full_reads += 1
        return self.curves

    def _extend(self, delta: dict[str, dict[str, list]]) -> bool:
        """Append the new rows; False (nothing changed) when one would go before its curve's end."""
        for key, new in delta.items():
            held = self.curves.get(key)
            if held is not None and held["step"] and new["step"][0] < held["step"][-1]:
                return False
        for key, new in delta.items():
            held = self.curves.get(key)
            if held is None:
                self.curves[key] = new
            else:
                for column in ("step", "wall", "value"):
                    held[column].extend(new[column])
        return True
