"""What the AppTest files share: the shipped demo checkpoints, and the checks every page test
makes. The empty run store they run against is the ``runs_dir`` fixture in tests/conftest.py.

    from tests.app.kit import APP, DEMOS, needs_demos, assert_ok, widget, image_urls
"""

from __future__ import annotations

import pytest
from streamlit.testing.v1 import AppTest

from flowlib.env import REPO_ROOT

ROOT = REPO_ROOT
APP = str(ROOT / "app.py")
DEMOS = [ROOT / "checkpoints" / "mnist-fast.pt", ROOT / "checkpoints" / "faces-fast.pt"]
needs_demos = pytest.mark.skipif(not all(p.is_file() for p in DEMOS),
                                 reason="demo checkpoints are not in checkpoints/")


def assert_ok(at: AppTest) -> AppTest:
    """No exception and no error box on the page; returns ``at`` for chaining."""
    assert not at.exception, [e.message for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    return at


def widget(widgets, key):
    """The widget with this key among ``widgets`` (e.g. ``at.slider``)."""
    return next(w for w in widgets if w.key == key)


def image_urls(at: AppTest) -> list[str]:
    """The media URLs of every picture: they are content hashes, so equal URL = same picture."""
    return [img.url for el in at.get("image") for img in el.proto.imgs]
