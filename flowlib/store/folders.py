"""Where a run's files live, and whose they are: one folder per run, tied to the store that made it.

    folders.run_dir(3)                   # <root>/run-00003 (from the integer id only)
    note = store.claim_folder(3)         # the folder is this store's run 3's, or made so
    store.folder_is_ours(3)              # True when its mark names this store and run 3

Folder names come from the integer id only, and ids start again at 1 in a new database, so a
``run-00001/`` left by another database (``runs.sqlite`` moved away, replaced, restored from a
backup) would look like the new run 1's and hand it a stranger's checkpoint. Each store
therefore has an identity (a random id kept in its database, :mod:`flowlib.store.schema`),
and each run folder holds a mark, ``.flowlab-run.json``: ``{"store": <store id>, "run": <id>}``.
A folder without this store's mark for that run is never trained in: :meth:`claim_folder`
sets it aside, untouched, as ``run-00001.set-aside-<n>`` and makes a fresh one, and says so in
a sentence the caller records for the user. A folder with no mark and nothing in it is simply
taken.

When a store from before marks existed is opened, the folders of the runs it holds are
marked as its own (``RunStore()`` does it once, after migrating).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from flowlib.fileio import atomic_write

__all__ = ["RunFolders", "MARK_NAME", "CHECKPOINT_NAME", "LOG_NAME"]

CHECKPOINT_NAME = "checkpoint.pt"
LOG_NAME = "worker.log"
MARK_NAME = ".flowlab-run.json"


class RunFolders:
    """Where a run's files are under ``root``; with a ``store_id``, whose they are."""

    root: Path
    store_id: str | None = None

    def run_dir(self, run_id: int) -> Path:
        """The run's folder (named from its integer id only)."""
        return self.root / f"run-{int(run_id):05d}"

    def checkpoint_path(self, run_id: int) -> Path:
        return self.run_dir(run_id) / CHECKPOINT_NAME

    def log_path(self, run_id: int) -> Path:
        return self.run_dir(run_id) / LOG_NAME

    def _mark(self, run_id: int) -> dict:
        return {"store": self.store_id, "run": int(run_id)}

    def folder_mark(self, run_id: int) -> dict | None:
        """The folder's mark as written, or None (no folder, no mark, or an unreadable one)."""
        return _read_mark(self.run_dir(run_id))

    def folder_is_ours(self, run_id: int) -> bool:
        """True when the run's folder exists and its mark names this store and this run (a
        store without an identity, read from a damaged file, takes every folder as its own)."""
        if not self.run_dir(run_id).is_dir():
            return False
        return self.store_id is None or self.folder_mark(run_id) == self._mark(run_id)

    def write_mark(self, run_id: int) -> None:
        atomic_write(self.run_dir(run_id) / MARK_NAME, lambda f: f.write(json.dumps(self._mark(run_id)).encode()))

    def claim_folder(self, run_id: int) -> str | None:
        """Make sure the run's folder is this store's folder of this run; None when it was, or
        a sentence saying that a stranger's folder was set aside (untouched) for a fresh one.

        OSError when the folder cannot be made or moved (a read-only or full disk)."""
        folder = self.run_dir(run_id)
        note = None
        if folder.is_dir() and not self.folder_is_ours(run_id):
            if any(p.name != MARK_NAME for p in folder.iterdir()):
                mark = self.folder_mark(run_id)
                aside = _aside_name(folder)
                os.rename(folder, aside)
                if mark is None:
                    whose = "carries no mark of this run store"
                elif mark.get("store") != self.store_id:
                    whose = "was made by another run database"
                else:
                    whose = f"is marked as this store's run {mark.get('run')}"
                note = (f"A folder {folder.name} was already in the runs folder and {whose} (was "
                        "runs.sqlite moved away or replaced?). It was set aside untouched as "
                        f"{aside.name}, and run {int(run_id)} starts in a fresh folder instead of "
                        "continuing from a checkpoint that is not its own.")
            else:
                (folder / MARK_NAME).unlink(missing_ok=True)
        folder.mkdir(parents=True, exist_ok=True)
        if self.store_id is not None and not self.folder_is_ours(run_id):
            self.write_mark(run_id)
        return note



def _read_mark(folder: Path) -> dict | None:
    try:
        mark = json.loads((folder / MARK_NAME).read_text())
    except (OSError, ValueError):
        return None
    return mark if isinstance(mark, dict) else None


def _aside_name(folder: Path) -> Path:
    """``run-00001.set-aside-1`` (or -2, -3 ... when that one is taken)."""
    n = 1
    while True:
        aside = folder.with_name(f"{folder.name}.set-aside-{n}")
        if not aside.exists():
            return aside
        n += 1
