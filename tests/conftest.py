"""Fixtures every test file may use."""

from __future__ import annotations

import pytest

from flowlib.store.limits import Limits
from flowlib.store.runs import RunStore


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


@pytest.fixture
def store(tmp_path, request):
    """A RunStore of this test's own in ``tmp_path/runs``, with ``Limits()`` unless the test or
    its module is marked ``@pytest.mark.store_limits(stale_after_s=3.0, ...)``: the marker's
    keywords are the Limits fields that differ."""
    marker = request.node.get_closest_marker("store_limits")
    return RunStore(tmp_path / "runs", Limits(**(marker.kwargs if marker else {})))
