"""The store's layout version: a new store records it, an older store is migrated in place and
atomically, and a store from a newer Flow Lab is refused without a byte written."""

import sqlite3
import threading
from pathlib import Path

import pytest

from flowlib.cli import train as cli
from flowlib.config import FlowConfig, TrainConfig
from flowlib.jobs import worker
from flowlib.store import schema
from flowlib.store.dbfile import APPLICATION_ID, StoreUnavailableError
from flowlib.store.limits import Limits
from flowlib.store.request import RunRequest
from flowlib.store.runs import RunStore
from flowlib.store.studies import StudyStore
from tests.store.old_stores import OLD_CONFIG, OLD_TRAIN, STUDY_TABLES, write_store

ALL_TABLES = {"runs", "metrics", "events", "samples", "studies", "study_runs"}


def _header(db: Path) -> tuple[int, int]:
    """(user_version, application_id), read without writing anything."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return (conn.execute("PRAGMA user_version").fetchone()[0],
                conn.execute("PRAGMA application_id").fetchone()[0])
    finally:
        conn.close()


def _layout(db: Path) -> dict:
    """{table or index name: its columns (name, type, notnull, default, pk)}, our objects only."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        names = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE name NOT LIKE 'sqlite_%'")]
        return {n: [tuple(c)[1:6] for c in conn.execute(f"PRAGMA table_info({n})")]
                or [tuple(c) for c in conn.execute(f"PRAGMA index_info({n})")] for n in names}
    finally:
        conn.close()


def test_the_migrations_are_numbered_one_by_one_up_to_the_current_version():
    assert [m.version for m in schema.MIGRATIONS] == list(range(1, schema.SCHEMA_VERSION + 1))
    assert all(m.what for m in schema.MIGRATIONS)


def test_a_new_store_records_the_current_version_and_has_every_table(tmp_path):
    store = RunStore(tmp_path / "runs", Limits())
    assert _header(store.db_path) == (schema.SCHEMA_VERSION, APPLICATION_ID)
    assert ALL_TABLES <= set(_layout(store.db_path))


def test_the_first_layout_is_migrated_in_place_and_its_run_reads_as_before(tmp_path):
    root = tmp_path / "runs"
    db = write_store(root)
    assert _header(db) == (0, 0) and "studies" not in _layout(db)
    store = RunStore(root, Limits())
    assert _header(db) == (schema.SCHEMA_VERSION, APPLICATION_ID)
    assert _layout(db) == _layout(RunStore(tmp_path / "fresh", Limits()).db_path)   # as a new store's
    run = store.get_run(1)
    assert (run["name"], run["status"], run["step"], run["dataset"], run["preset"]) == (
        "old-run", "stopped", 120, "mnist", "mnist-fast")
    assert run["config"] == OLD_CONFIG and run["train"] == OLD_TRAIN and run["damaged"] is None
    assert run["owner"] is None and run["best_test_bpd"] is None
    request = store.stored_request(1)      # the fields added since then take their defaults
    assert request.config == FlowConfig.from_dict(OLD_CONFIG) and request.config.dequantization == "uniform"
    assert request.train == TrainConfig.from_dict(OLD_TRAIN) and request.train.augment == "none"
    assert store.metrics(1)["test_bpd"]["value"] == [1.75]
    assert [e["kind"] for e in store.events(1)] == ["stop"]
    assert store.latest_samples(1)["path"] == str(store.run_dir(1) / "samples_step0000100.png")
    assert StudyStore(store).list() == []                                 # the study tables are there
    new = store.create_run(RunRequest.from_dicts("new", OLD_CONFIG, OLD_TRAIN))
    assert new == 2 and store.get_run(2)["name"] == "new"
    assert RunStore(root, Limits()).get_run(1) == run                     # opened again: nothing to do


def test_an_unversioned_store_with_studies_keeps_them(tmp_path):
    from tests.store.old_stores import FIRST_TABLES
    root = tmp_path / "runs"
    db = write_store(root, FIRST_TABLES + STUDY_TABLES)
    with sqlite3.connect(db) as conn:
        conn.execute("INSERT INTO studies (name, created, owner, spec) VALUES ('old study', 1.0, NULL, '{}')")
        conn.execute("INSERT INTO study_runs (study_id, run_id, arm, seed) VALUES (1, 1, 'a', 0)")
    conn.close()
    store = RunStore(root, Limits())
    assert _header(db)[0] == schema.SCHEMA_VERSION
    (study,) = StudyStore(store).list()
    assert study["name"] == "old study" and [r["id"] for r in study["runs"]] == [1]


def test_columns_an_older_runs_table_lacks_are_added_with_their_defaults(tmp_path):
    root = tmp_path / "runs"
    db = write_store(root, """
        CREATE TABLE runs (id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT NOT NULL, created REAL NOT NULL,
                           dataset TEXT NOT NULL, preset TEXT, config TEXT NOT NULL, train TEXT NOT NULL,
                           status TEXT NOT NULL, step INTEGER NOT NULL DEFAULT 0,
                           message TEXT NOT NULL DEFAULT '');
        CREATE TABLE metrics (run_id INTEGER NOT NULL, step INTEGER NOT NULL, wall REAL NOT NULL,
                              key TEXT NOT NULL, value REAL);
        CREATE TABLE events (id INTEGER PRIMARY KEY AUTOINCREMENT, run_id INTEGER NOT NULL, step INTEGER,
                             wall REAL NOT NULL, kind TEXT NOT NULL, message TEXT NOT NULL);
        CREATE TABLE samples (id INTEGER PRIMARY KEY AUTOINCREMENT, run_id INTEGER NOT NULL,
                              step INTEGER NOT NULL, wall REAL NOT NULL, path TEXT NOT NULL);
    """)
    store = RunStore(root, Limits())
    columns = [c[0] for c in _layout(db)["runs"]]
    assert {"pid", "heartbeat", "owner", "stop_requested", "started", "ended", "best_test_bpd"} <= set(columns)
    run = store.get_run(1)
    assert run["owner"] is None and run["started"] is None and run["config"] == OLD_CONFIG
    store.set_best_test_bpd(1, 1.5)                                        # the new columns are writable
    assert store.get_run(1)["best_test_bpd"] == 1.5
    assert "metrics_run_key_step" in _layout(db)


def test_a_failed_migration_leaves_the_store_as_it_was(tmp_path, monkeypatch):
    root = tmp_path / "runs"
    db = write_store(root)
    before = _layout(db)

    def half_done(conn):
        conn.execute("CREATE TABLE half_done (x INTEGER)")
        raise RuntimeError("the migration broke half-way")

    monkeypatch.setattr(schema, "MIGRATIONS", (*schema.MIGRATIONS, schema.Migration(2, "breaks", half_done)))
    monkeypatch.setattr(schema, "SCHEMA_VERSION", 2)
    with pytest.raises(RuntimeError, match="half-way"):
        RunStore(root, Limits())
    assert _header(db) == (0, 0) and _layout(db) == before                  # no study tables, no half_done
    monkeypatch.undo()
    assert RunStore(root, Limits()).get_run(1)["name"] == "old-run"       # and it migrates later


def test_two_processes_opening_an_old_store_at_once_migrate_it_once(tmp_path):
    root = tmp_path / "runs"
    db = write_store(root)
    errors, barrier = [], threading.Barrier(4)

    def open_store():
        barrier.wait()
        try:
            RunStore(root, Limits())
        except Exception as exc:  # noqa: BLE001 - collected for the assertion
            errors.append(exc)

    threads = [threading.Thread(target=open_store) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and _header(db) == (schema.SCHEMA_VERSION, APPLICATION_ID)
    assert [r["id"] for r in RunStore(root, Limits()).list_runs()] == [1]


@pytest.fixture
def newer_store(tmp_path) -> Path:
    """A store written by a Flow Lab whose layout is one version newer than this code's (in
    the rollback journal, so every byte is in runs.sqlite)."""
    root = tmp_path / "runs"
    RunStore(root, Limits()).create_run(RunRequest.from_dicts("kept", {}, {"max_steps": 1}))
    with sqlite3.connect(root / "runs.sqlite") as conn:
        conn.execute("PRAGMA journal_mode=DELETE")
        conn.execute(f"PRAGMA user_version={schema.SCHEMA_VERSION + 1}")
    conn.close()
    return root


def _files(root: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in root.iterdir() if p.name.startswith("runs.sqlite")}


def test_a_store_from_a_newer_version_is_refused_in_one_sentence_and_left_untouched(newer_store):
    before = _files(newer_store)
    with pytest.raises(StoreUnavailableError) as info:
        RunStore(newer_store, Limits())
    text = str(info.value)
    assert info.value.reason == "newer" and "\n" not in text
    assert "written by a newer version of Flow Lab" in text and f"layout {schema.SCHEMA_VERSION + 1}" in text
    assert _files(newer_store) == before                                   # not migrated, not even WAL


def test_the_worker_and_the_cli_refuse_a_newer_store_in_words(newer_store, capsys):
    before = _files(newer_store)
    assert worker.main(["1", "--runs-dir", str(newer_store)]) == 1
    assert "newer version of Flow Lab" in capsys.readouterr().out
    rc = cli.main(["--runs-dir", str(newer_store), "--dataset", "faces", "--steps", "5", "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err and "newer version of Flow Lab" in err
    assert _files(newer_store) == before
