"""Studies in the run store: a study is a named group of runs (arms × seeds) kept as one unit.

    from flowlib.store.studies import StudyStore
    studies = StudyStore(store)                     # store: a flowlib.store.runs.RunStore
    study_id = studies.create(name, spec_dict, [(arm, seed, run_request), ...], owner=visitor)  # all queued, or none
    studies.list()                                  # newest first, each with its runs
    studies.stop(study_id); studies.delete(study_id); studies.rename(study_id, "new name")

Two tables beside the run store's own, in the same ``runs.sqlite`` (made and migrated with
them by :mod:`flowlib.store.schema`)::

    studies     (id, name, created, owner, spec)        spec: the StudySpec as JSON
    study_runs  (study_id, run_id, arm, seed)           one row per run of the study

The runs themselves are ordinary runs (the worker trains them, the Runs page can open each
one); a study only remembers which arm and seed each one is, and its owner owns them all.
Creating a study is all or nothing: every run is first stored as ``created`` (which the
queue never starts), linked to the study, and only then are they all moved to ``waiting``
in one transaction. If anything fails on the way, what was made is deleted again.

Studies are Optuna studies now (``flowlib.study.engine``: the study, its trials and their
results live in the study storage, which many machines can share). This run store keeps a
*local record* of each such study that trained or was started here: a ``studies`` row whose
spec is ``{"engine": "optuna", "storage": KEY, "study": NAME, "planned_runs": N, ...}``, and a
``study_runs`` row for each trial trained on this machine, so the Runs table marks those runs
and a study's runs are deleted as a unit. Rows made before that (no ``engine`` key) are the
older studies, whose runs are all here; they still open and answer.

Admission (:meth:`StudyStore.admit`): a visitor's new study is counted against the caps in the
same ``BEGIN IMMEDIATE`` transaction that records it, with everything the visitor already has
pending (waiting and training runs, and the runs their open studies have yet to train), so two
studies submitted at once, or a button pressed twice, cannot both slip under the cap.
"""

from __future__ import annotations

import dataclasses
import json
import time
from typing import Any, Iterable

from .request import RunRequest
from .runs import ACTIVE_STATUSES, MAX_OWNER, WAITING, RunLimitError, RunStateError, RunStore, sanitize_name

__all__ = ["StudyStore", "PlannedRun", "study_status", "ENGINE"]

ENGINE = "optuna"

# (arm name, seed, the run's request)
PlannedRun = tuple[str, int, RunRequest]

_CANCELLED = "cancelled: its study was stopped before this run began"


def study_status(runs: Iterable[dict]) -> str:
    """One word for a study from its runs' statuses: waiting, running, stopped, finished, failed
    (empty for a study without runs)."""
    statuses = [r["status"] for r in runs]
    if not statuses:
        return "empty"
    if any(s in ACTIVE_STATUSES for s in statuses):
        return "running"
    if any(s == WAITING for s in statuses):
        return "waiting"
    if all(s == "finished" for s in statuses):
        return "finished"
    if any(s in ("stopped", "created") for s in statuses):
        return "stopped"
    if any(s == "finished" for s in statuses):
        return "finished"   # some runs failed or were lost: the answer says it has fewer seeds
    return "failed"


class StudyStore:
    """The studies of one run store."""

    def __init__(self, store: RunStore):
        self.store = store   # its tables are made with the run store's (flowlib.store.schema)

    # -- creating -------------------------------------------------------------------------
    def create(self, name: Any, spec: dict, planned: list[PlannedRun], owner: str | None = None) -> int:
        """Store the study and queue all its runs (``waiting``), or store nothing.

        Raises what the run store raises for one run (ValueError over a classroom cap,
        RunLimitError when the visitor's queue is full) before any run can start.
        """
        if not planned:
            raise ValueError("a study needs at least one run")
        self.store.check_queue_room(owner, len(planned))
        requests = [dataclasses.replace(request, owner=owner) for _arm, _seed, request in planned]
        for request in requests:   # every run or none, before anything is stored
            self.store.limits.check_run(request.config.to_dict(), request.train.to_dict())
        owner_text = None if owner is None else str(owner)[:200]
        study_name = sanitize_name(name, fallback="study")
        study_id = self.store.transaction(lambda c: c.execute(
            "INSERT INTO studies (name, created, owner, spec) VALUES (?, ?, ?, ?)",
            (study_name, time.time(), owner_text, json.dumps(spec))).lastrowid)
        made: list[int] = []
        try:
            for (arm, seed, _request), request in zip(planned, requests):
                run_id = self.store.create_run(request, status="created")
                made.append(run_id)
                self.store.transaction(lambda c, r=run_id, a=arm, s=seed: c.execute(
                    "INSERT INTO study_runs (study_id, run_id, arm, seed) VALUES (?, ?, ?, ?)",
                    (study_id, r, str(a), int(s))))

            def queue_all(conn):
                marks = ",".join("?" * len(made))
                conn.execute(f"UPDATE runs SET status=?, message=? WHERE id IN ({marks}) AND status='created'",
                             (WAITING, "waiting for a free training slot", *made))
            self.store.transaction(queue_all)
        except BaseException:
            self._remove(study_id, made)
            raise
        return study_id

    def _remove(self, study_id: int, run_ids: Iterable[int]) -> None:
        for run_id in run_ids:
            try:
                self.store.delete_run(run_id)
            except (KeyError, RunStateError):
                pass
        self.store.transaction(lambda c: (c.execute("DELETE FROM study_runs WHERE study_id=?", (study_id,)),
                                          c.execute("DELETE FROM studies WHERE id=?", (study_id,))))

    # -- studies kept in a study storage: this machine's record of them ------------------------
    def _pending(self, conn, owner: str) -> int:
        """Runs ``owner`` has waiting or training outside studies, plus the runs their open
        studies have yet to train (planned minus the ones that ended here)."""
        loose = conn.execute(
            "SELECT COUNT(*) FROM runs WHERE owner=? AND status IN ('waiting', 'queued', 'running', 'stopping') "
            "AND id NOT IN (SELECT run_id FROM study_runs)", (owner,)).fetchone()[0]
        total = loose
        for row in conn.execute("SELECT id, spec FROM studies WHERE owner=?", (owner,)).fetchall():
            try:
                spec = json.loads(row["spec"])
            except (TypeError, ValueError):
                continue
            if spec.get("closed"):
                continue
            counts = conn.execute(
                "SELECT COUNT(*), SUM(CASE WHEN r.status IN ('finished', 'failed', 'stopped', 'lost') THEN 1 ELSE 0 END) "
                "FROM study_runs s JOIN runs r ON r.id = s.run_id WHERE s.study_id=?", (row["id"],)).fetchone()
            linked, ended = counts[0] or 0, counts[1] or 0
            planned = spec.get("planned_runs", linked) if spec.get("engine") == ENGINE else linked
            total += max(0, int(planned) - int(ended))
        return total

    def admit(self, name: Any, storage_key: str, study_name: str, planned_runs: int, owner: str | None,
              extra: dict | None = None) -> int:
        """Record a new study of ``owner`` that will train ``planned_runs`` runs here, checked
        against the visitor's cap (FLOWLAB_MAX_WAITING_PER_VISITOR) in the same transaction;
        its local id. RunLimitError, naming the numbers, when it does not fit; nothing stored."""
        cap = self.store.limits.max_waiting_per_owner
        owner_text = None if owner is None else str(owner)[:MAX_OWNER]
        spec = {"engine": ENGINE, "storage": storage_key, "study": study_name, "planned_runs": int(planned_runs),
                **(extra or {})}

        def admit(conn):
            if owner_text is not None and cap is not None:
                have = self._pending(conn, owner_text)
                if have + int(planned_runs) > cap:
                    raise RunLimitError(
                        f"this study has {int(planned_runs)} runs and you already have {have} waiting or to "
                        f"come; the limit is {cap} per visitor (FLOWLAB_MAX_WAITING_PER_VISITOR). Wait for "
                        "some to finish, or stop some first")
            return conn.execute("INSERT INTO studies (name, created, owner, spec) VALUES (?, ?, ?, ?)",
                                (sanitize_name(name, fallback="study"), time.time(), owner_text,
                                 json.dumps(spec))).lastrowid
        return self.store.transaction(admit)

    def local_of(self, storage_key: str, study_name: str) -> dict | None:
        """This run store's record of the study ``study_name`` in the storage ``storage_key``."""
        for row in self.store.read(lambda c: c.execute("SELECT * FROM studies ORDER BY id").fetchall()):
            try:
                spec = json.loads(row["spec"])
            except (TypeError, ValueError):
                continue
            if spec.get("engine") == ENGINE and spec.get("storage") == storage_key and spec.get("study") == study_name:
                return {**dict(row), "spec": spec}
        return None

    def record(self, storage_key: str, study_name: str, owner: str | None = None, planned_runs: int = 0) -> int:
        """The local id of a study kept in a storage, made now if this machine has none (a
        worker training its first trial of a study started elsewhere; no cap applies)."""
        found = self.local_of(storage_key, study_name)
        if found is not None:
            return found["id"]
        return self.admit(study_name, storage_key, study_name, planned_runs, None,
                          {"closed": True} if not planned_runs else None)

    def link(self, study_id: int, run_id: int, arm: str, seed: int) -> None:
        self.store.transaction(lambda c: c.execute(
            "INSERT OR IGNORE INTO study_runs (study_id, run_id, arm, seed) VALUES (?, ?, ?, ?)",
            (int(study_id), int(run_id), str(arm), int(seed))))

    def close(self, study_id: int) -> None:
        """The study has nothing more to train here: its planned runs stop counting as pending."""
        def close(conn):
            row = conn.execute("SELECT spec FROM studies WHERE id=?", (int(study_id),)).fetchone()
            if row is None:
                return
            spec = json.loads(row["spec"])
            spec["closed"] = True
            conn.execute("UPDATE studies SET spec=? WHERE id=?", (json.dumps(spec), int(study_id)))
        self.store.transaction(close)

    def forget(self, study_id: int) -> None:
        """Remove a local record and its links (its runs stay); used when creating the study failed."""
        self.store.transaction(lambda c: (c.execute("DELETE FROM study_runs WHERE study_id=?", (int(study_id),)),
                                          c.execute("DELETE FROM studies WHERE id=?", (int(study_id),))))

    # -- reading --------------------------------------------------------------------------
    def _decode(self, row, links: list, runs_by_id: dict[int, dict] | None = None) -> dict:
        """``runs_by_id``: every run already read (list); else each linked run is read here."""
        study = dict(row)
        try:
            study["spec"] = json.loads(study["spec"])
        except (TypeError, ValueError):
            study["spec"] = {}
        runs = []
        for link in links:
            run = (runs_by_id.get(link["run_id"]) if runs_by_id is not None
                   else self.store.get_run(link["run_id"]))
            if run is not None:
                runs.append({**run, "arm": link["arm"], "seed": link["seed"]})
        study["runs"] = runs
        study["status"] = study_status(runs)
        return study

    def get(self, study_id: int) -> dict | None:
        """The study (spec decoded) with ``runs``: each run's store dict plus ``arm`` and ``seed``."""
        row = self.store.read(lambda c: c.execute("SELECT * FROM studies WHERE id=?",
                                                   (int(study_id),)).fetchone())
        if row is None:
            return None
        links = self.store.read(lambda c: c.execute(
            "SELECT run_id, arm, seed FROM study_runs WHERE study_id=? ORDER BY run_id",
            (int(study_id),)).fetchall())
        return self._decode(row, links)

    def list(self, owner: str | None = None, legacy_only: bool = False) -> list[dict]:
        """Every study (or one owner's), newest first, each with its runs; ``legacy_only``:
        only those made before studies lived in a study storage."""
        def read(c):
            if owner is None:
                return c.execute("SELECT * FROM studies ORDER BY id DESC").fetchall()
            return c.execute("SELECT * FROM studies WHERE owner=? ORDER BY id DESC", (owner,)).fetchall()
        rows = self.store.read(read)
        if not rows:
            return []
        # Three reads for the whole page, not two per study and one per run: the Runs page
        # calls this every few seconds while a study trains.
        runs_by_id = {r["id"]: r for r in self.store.list_runs()}
        links: dict[int, list] = {}
        for link in self.store.read(lambda c: c.execute(
                "SELECT study_id, run_id, arm, seed FROM study_runs ORDER BY run_id").fetchall()):
            links.setdefault(link["study_id"], []).append(link)
        out = [self._decode(row, links.get(row["id"], []), runs_by_id) for row in rows]
        return [s for s in out if s["spec"].get("engine") != ENGINE] if legacy_only else out

    def run_ids(self) -> dict[int, int]:
        """{run id: study id} for every run that belongs to a study."""
        rows = self.store.read(lambda c: c.execute("SELECT run_id, study_id FROM study_runs").fetchall())
        return {r["run_id"]: r["study_id"] for r in rows}

    # -- changing -------------------------------------------------------------------------
    def _owned_row(self, conn, study_id: int, owner: str | None, action: str):
        row = conn.execute("SELECT * FROM studies WHERE id=?", (int(study_id),)).fetchone()
        if row is None:
            raise KeyError(f"no study with id {study_id}")
        if owner is not None and row["owner"] is not None and str(owner) != row["owner"]:
            raise PermissionError(f"study {row['id']} '{row['name']}' belongs to someone else; "
                                  f"only its owner can {action} it")
        return row

    def rename(self, study_id: int, name: Any, owner: str | None = None) -> str:
        new = sanitize_name(name, fallback="study")

        def rename(conn):
            self._owned_row(conn, study_id, owner, "rename")
            conn.execute("UPDATE studies SET name=? WHERE id=?", (new, int(study_id)))
        self.store.transaction(rename)
        return new

    def stop(self, study_id: int, owner: str | None = None) -> dict:
        """Cancel the study's waiting runs and ask its training ones to stop.

        Returns ``{"cancelled": n, "stopping": m}``. Finished runs keep their results.
        """
        def cancel(conn):
            self._owned_row(conn, study_id, owner, "stop")
            ids = [r[0] for r in conn.execute("SELECT run_id FROM study_runs WHERE study_id=?",
                                              (int(study_id),))]
            if not ids:
                return 0, []
            marks = ",".join("?" * len(ids))
            cancelled = conn.execute(
                f"UPDATE runs SET status='stopped', message=?, ended=? WHERE status=? AND id IN ({marks})",
                (_CANCELLED, time.time(), WAITING, *ids)).rowcount
            active = [r[0] for r in conn.execute(
                f"SELECT id FROM runs WHERE status IN ('queued', 'running') AND id IN ({marks})", ids)]
            return cancelled, active
        cancelled, active = self.store.transaction(cancel)
        stopping = sum(1 for run_id in active if self.store.request_stop(run_id))
        return {"cancelled": cancelled, "stopping": stopping}

    def delete(self, study_id: int, owner: str | None = None) -> int:
        """Delete the study and all its runs (rows and folders); returns how many runs.

        Refuses (RunStateError) while one of its runs is training: stop the study first.
        Its waiting runs are cancelled in the same transaction as that check, so the
        queue cannot start one of them while it is being deleted.
        """
        def lock_down(conn):
            row = self._owned_row(conn, study_id, owner, "delete")
            ids = [r[0] for r in conn.execute("SELECT run_id FROM study_runs WHERE study_id=?",
                                              (int(study_id),))]
            if ids:
                marks = ",".join("?" * len(ids))
                active = conn.execute(f"SELECT COUNT(*) FROM runs WHERE status IN "
                                      f"('queued', 'running', 'stopping') AND id IN ({marks})", ids).fetchone()[0]
                if active:
                    raise RunStateError(f"study {row['id']} '{row['name']}' has {active} run(s) training; "
                                        "stop the study first, then delete it")
                conn.execute(f"UPDATE runs SET status='stopped', message=? WHERE status=? AND id IN ({marks})",
                             (_CANCELLED, WAITING, *ids))
            return ids
        ids = self.store.transaction(lock_down)
        self._remove(study_id, ids)
        return len(ids)

