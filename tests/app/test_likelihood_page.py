"""AppTest of the "What the likelihood knows" page with the shipped demo checkpoints."""

from __future__ import annotations

import gzip
import json
import struct
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from tests.app.kit import ROOT, assert_ok, needs_demos, widget

PAGE = str(ROOT / "pages" / "likelihood.py")
pytestmark = [needs_demos, pytest.mark.usefixtures("runs_dir")]   # runs_dir: tests/conftest.py




def _run(**state) -> AppTest:
    at = AppTest.from_file(PAGE, default_timeout=240)
    at.session_state["lik_n"] = 250  # keep the test quick
    for k, v in state.items():
        at.session_state[k] = v
    at.run()
    assert_ok(at)
    return at


def _histogram_names(at: AppTest) -> list[str]:
    chart = at.get("plotly_chart")[0]
    spec = json.loads(chart.proto.spec)
    return [t["name"] for t in spec["data"] if t["type"] == "histogram"]


def _write_idx(path: Path, array: np.ndarray) -> None:
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


@pytest.mark.slow
def test_likelihood_page_scores_every_set_and_says_how_to_get_fashion_mnist(monkeypatch, tmp_path):
    """Without Fashion-MNIST the page works with what ships: the faces stand in as the other
    data set, and how to add Fashion-MNIST is a line in a closed box under the table, not a
    warning and an apt-get box at the top of the page."""
    from flowlib.data.sources import mnist as mnist_source
    monkeypatch.setattr(mnist_source, "FASHION_DEBIAN_DIR", tmp_path / "no-fashion-here")
    at = _run()
    names = _histogram_names(at)
    assert any("MNIST" in n and "own test set" in n for n in names)
    assert any("uniform noise" in n for n in names) and any("constant" in n for n in names)
    assert any("ORL faces" in n for n in names) and any("blurred" in n for n in names)
    assert not at.warning
    box = next(e for e in at.expander if "Fashion-MNIST" in e.label)
    assert not box.proto.expanded
    assert any("apt-get install dataset-fashion-mnist" in c.value for c in box.code)
    table = at.dataframe[0].value
    medians = dict(zip(table["data set"], table["median bits/dim"]))
    own = next(v for k, v in medians.items() if "own test set" in k)
    noise = next(v for k, v in medians.items() if "noise" in k)
    assert own < 2.0 < 8.0 < noise  # a trained MNIST model: ~1.1 on digits, ~9.7 on noise
    # The blank image beats most real digits: the page says so with numbers.
    assert any("blank image of grey level" in m.value for m in at.markdown)
    assert len(at.get("plotly_chart")) == 3  # histograms, the per-level budget, the pixel bins
    assert len(at.header) == 6 and len(at.expander) >= 6


@pytest.mark.slow
def test_likelihood_page_uses_fashion_mnist_when_installed(monkeypatch, tmp_path):
    from flowlib.data.sources import mnist as mnist_source
    folder = tmp_path / "fashion"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for split, n in (("train", 20), ("t10k", 300)):
        images = (rng.random((n, 28, 28)) < 0.3) * 200  # stand-in clothes: sparse speckle
        _write_idx(folder / f"{split}-images-idx3-ubyte.gz", images)
        _write_idx(folder / f"{split}-labels-idx1-ubyte.gz", np.zeros(n, np.uint8))
    monkeypatch.setattr(mnist_source, "FASHION_DEBIAN_DIR", folder)
    mnist_source._idx_dataset.cache_clear()
    import streamlit as st
    st.cache_data.clear()  # the page keys its data sets on the registry's availability check
    at = _run()
    assert not at.warning
    assert any("Fashion-MNIST" in n for n in _histogram_names(at))


@pytest.mark.slow
def test_likelihood_page_adds_kept_drawings_and_faces_model():
    from pages.common.canvas import DRAWINGS_KEY
    drawing = np.zeros((1, 28, 28), np.uint8)
    drawing[0, 6:22, 13:16] = 255  # a "1"
    at = _run(**{DRAWINGS_KEY: [((1, 28, 28), drawing.tobytes())]})
    table = at.dataframe[0].value
    assert "your drawings" in list(table["data set"])
    assert any("1 drawing(s) kept" in c.value for c in at.caption)
    widget(at.button, "lik_forget").click().run()
    assert_ok(at)
    assert "your drawings" not in list(at.dataframe[0].value["data set"])
    faces = next(label for label in at.selectbox[0].options if "Faces" in label)
    at.selectbox[0].set_value(faces).run()
    assert_ok(at)
    names = " ".join(at.dataframe[0].value["data set"])
    assert "ORL faces" in names and "MNIST digits (padded to fit)" in names
