"""AppTest for the app shell, Home, Train and Runs.

``run_every`` timers never fire inside AppTest: the tests poll the store themselves and call
``at.run()``. Plotly charts come back as UnknownElement; their data is ``json.loads(el.proto.spec)``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

APP = str(Path(__file__).resolve().parents[1] / "app.py")


@pytest.fixture
def runs_dir(tmp_path, monkeypatch):
    path = tmp_path / "runs"
    path.mkdir()
    monkeypatch.setenv("FLOWLAB_RUNS_DIR", str(path))
    monkeypatch.delenv("FLOWLAB_CLASSROOM", raising=False)
    return path


def app(page: str | None = None, **query) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=60)
    for key, value in query.items():
        at.query_params[key] = value
    if page:
        at.switch_page(page)
    return at


def test_home_explains_and_offers_quick_paths(runs_dir):
    at = app()
    at.run()
    assert not at.exception
    text = " ".join(m.value for m in at.markdown)
    assert "normalizing flow" in text and "bits per dimension" in text
    labels = [b.label for b in at.button]
    assert "Train MNIST now" in labels and "Explore a trained model" in labels
    assert "Device" in text
    # the visitor id goes into the URL so a refresh keeps ownership in classroom mode
    assert at.query_params.get("visitor")
