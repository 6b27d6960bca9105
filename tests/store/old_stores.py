"""Run stores as earlier versions of Flow Lab wrote them, built by hand for the migration tests.

``FIRST_TABLES`` is the layout of the first run store in this repository's history: runs,
metrics, events and samples, no layout version, application id 0. ``STUDY_TABLES`` were
added by the study code the first time a study was made. ``OLD_CONFIG`` / ``OLD_TRAIN`` are
a run's settings with only the fields the configs had then (later fields take defaults).
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

FIRST_TABLES = """
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    created REAL NOT NULL,
    dataset TEXT NOT NULL,
    preset TEXT,
    config TEXT NOT NULL,
    train TEXT NOT NULL,
    status TEXT NOT NULL,
    pid INTEGER,
    heartbeat REAL,
    step INTEGER NOT NULL DEFAULT 0,
    message TEXT NOT NULL DEFAULT '',
    owner TEXT,
    stop_requested INTEGER NOT NULL DEFAULT 0,
    started REAL,
    ended REAL,
    best_test_bpd REAL
);
CREATE TABLE IF NOT EXISTS metrics (run_id INTEGER NOT NULL, step INTEGER NOT NULL, wall REAL NOT NULL,
                                    key TEXT NOT NULL, value REAL);
CREATE INDEX IF NOT EXISTS metrics_run_key_step ON metrics (run_id, key, step);
CREATE TABLE IF NOT EXISTS events (id INTEGER PRIMARY KEY AUTOINCREMENT, run_id INTEGER NOT NULL, step INTEGER,
                                   wall REAL NOT NULL, kind TEXT NOT NULL, message TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS events_run ON events (run_id, id);
CREATE TABLE IF NOT EXISTS samples (id INTEGER PRIMARY KEY AUTOINCREMENT, run_id INTEGER NOT NULL,
                                    step INTEGER NOT NULL, wall REAL NOT NULL, path TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS samples_run ON samples (run_id, step);
"""

STUDY_TABLES = """
CREATE TABLE IF NOT EXISTS studies (id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT NOT NULL,
                                    created REAL NOT NULL, owner TEXT, spec TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS study_runs (study_id INTEGER NOT NULL, run_id INTEGER NOT NULL UNIQUE,
                                       arm TEXT NOT NULL, seed INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS study_runs_study ON study_runs (study_id);
"""

OLD_CONFIG = {"image_shape": [1, 28, 28], "levels": 2, "steps": 2, "hidden": 16, "coupling": "affine",
              "permutation": "reverse", "mask": "channel", "actnorm": True, "coupling_actnorm": False,
              "split_prior": "learned", "top_prior": "learned", "n_bits": 8, "affine_clamp": 2.0, "seed": 3}
OLD_TRAIN = {"dataset": "mnist", "dataset_options": {}, "batch_size": 32, "lr": 0.001, "warmup_steps": 10,
             "max_steps": 200, "max_minutes": None, "grad_clip": 50.0, "seed": 3, "log_every": 10,
             "eval_every": 100, "first_eval": 20, "eval_subset": 500, "epoch_size": None,
             "sample_temperatures": [0.7], "samples_per_temperature": 8, "checkpoint_every_minutes": 2.0,
             "nan_patience": 3, "lr_drop": 0.5, "device": "cpu", "bf16": False, "threads": None}


def write_store(root: Path, tables: str = FIRST_TABLES, wal: bool = True) -> Path:
    """A runs folder whose runs.sqlite has ``tables`` and one stopped run (id 1, 120 steps, a
    metric, an event and an absolute sample path); no version, application id 0."""
    root.mkdir(parents=True, exist_ok=True)
    db = root / "runs.sqlite"
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        if wal:
            conn.execute("PRAGMA journal_mode=WAL")
        conn.executescript(tables)
        conn.execute("INSERT INTO runs (name, created, dataset, preset, config, train, status, step, message)"
                     " VALUES ('old-run', 1700000000.0, 'mnist', 'mnist-fast', ?, ?, 'stopped', 120,"
                     " 'stopped at step 120')", (json.dumps(OLD_CONFIG), json.dumps(OLD_TRAIN)))
        conn.execute("INSERT INTO metrics (run_id, step, wall, key, value) VALUES (1, 100, 1700000050.0,"
                     " 'test_bpd', 1.75)")
        conn.execute("INSERT INTO events (run_id, step, wall, kind, message) VALUES (1, 120, 1700000060.0,"
                     " 'stop', 'stopped')")
        conn.execute("INSERT INTO samples (run_id, step, wall, path) VALUES (1, 100, 1700000055.0, ?)",
                     (str(root / "run-00001" / "samples_step0000100.png"),))
    finally:
        conn.close()
    return db
