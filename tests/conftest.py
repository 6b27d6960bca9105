"""Fixtures every test file may use."""

from __future__ import annotations

import pytest


@pytest.fixture
def runs_dir(tmp_path, monkeypatch):
    """An empty run store of this test's own: FLOWLAB_RUNS_DIR points at it, and no server cap
    (classroom mode, concurrency) leaks in from the environment. A test file that needs more
    (a teardown, patched workers) extends it with a fixture of the same name."""
    path = tmp_path / "runs"
    path.mkdir()
    monkeypatch.setenv("FLOWLAB_RUNS_DIR", str(path))
    monkeypatch.delenv("FLOWLAB_CLASSROOM", raising=False)
    monkeypatch.delenv("FLOWLAB_MAX_CONCURRENT", raising=False)
    return path
