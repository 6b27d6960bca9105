"""AppTest of the "Flows in 2-D" page: every section renders, training runs in chunks and
stops, and the numbers on screen are the model's own.

``run_every`` timers never fire inside AppTest: each ``at.run()`` runs the training fragment
once, i.e. one chunk. Plotly charts come back as UnknownElement; their data is
``json.loads(el.proto.spec)``.
"""

from __future__ import annotations

import base64
import json
import re

import numpy as np
import pytest
import torch
from streamlit.testing.v1 import AppTest

from flowlib.viz import flows2d as figs
from tests.app.kit import ROOT, assert_ok, widget

PAGE = str(ROOT / "pages" / "flows2d.py")
SECTIONS = ["1 · Pick a target", "2 · The push-forward", "3 · A probe", "4 · Additive vs affine",
            "5 · ActNorm", "6 · Zero init"]


pytestmark = pytest.mark.usefixtures("runs_dir")   # tests/conftest.py: an empty store each


def chart(at: AppTest, key: str) -> dict:
    for el in at.get("plotly_chart"):
        if el.proto.id.endswith(key) or f"-{key}" in el.proto.id:
            return json.loads(el.proto.spec)
    raise AssertionError(f"no chart {key!r} among {[el.proto.id for el in at.get('plotly_chart')]}")


def values(v) -> np.ndarray:
    """A plotly array as numpy: a plain list, or plotly's typed-array form {dtype, bdata, shape}."""
    if isinstance(v, dict) and "bdata" in v:
        out = np.frombuffer(base64.b64decode(v["bdata"]), dtype=np.dtype(v["dtype"]))
        shape = v.get("shape")
        if shape:
            out = out.reshape([int(n) for n in str(shape).split(",")])
        return out
    return np.array(v, dtype=float)


def text(at: AppTest) -> str:
    return " ".join(m.value for m in at.markdown)


def small_flow(at: AppTest, steps: int = 2, train_steps: int = 40) -> AppTest:
    widget(at.slider, "f2d_steps").set_value(steps)
    widget(at.number_input, "f2d_max_steps").set_value(train_steps)
    widget(at.number_input, "f2d_pair_steps").set_value(train_steps)
    return assert_ok(at.run())


@pytest.mark.slow
def test_the_page_is_in_the_navigation_and_every_section_explains_itself():
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
    at.switch_page("pages/flows2d.py")
    assert_ok(at.run())
    headers = [h.value for h in at.header]
    assert all(any(h.startswith(s) for h in headers) for s in SECTIONS), headers
    assert len(at.expander) >= 6  # a "What am I looking at?" per section
    latex = " ".join(x.value for x in at.latex)
    assert r"\log p(x)" in latex and r"\det J" in latex
    assert not at.main.caption  # grey captions are too small for a projector
    assert len(at.get("plotly_chart")) >= 12


@pytest.mark.slow
def test_train_in_chunks_until_done_then_stop_a_second_run():
    at = small_flow(assert_ok(AppTest.from_file(PAGE, default_timeout=120).run()))
    assert "Not trained yet" in text(at)
    before = values(chart(at, "f2d_model_heat")["data"][0]["z"])
    widget(at.button, "f2d_train").click()
    assert_ok(at.run())
    job = at.session_state["f2d_job"]
    for _ in range(60):  # the fragment's timer, by hand: one chunk per run
        if not job.running:
            break
        assert_ok(at.run())
    assert not job.running and len(job.losses) == 40
    assert "Step 40" in text(at)
    loss = values(chart(at, "f2d_loss_chart")["data"][0]["y"])
    assert len(loss) == 40
    after = values(chart(at, "f2d_model_heat")["data"][0]["z"])
    assert not np.allclose(before, after)  # the density on screen is the trained model's

    # a longer run: one chunk, then Stop
    widget(at.number_input, "f2d_max_steps").set_value(10_000)
    assert_ok(at.run())
    widget(at.button, "f2d_train").click()
    assert_ok(at.run())
    assert job.running and 40 < len(job.losses) < 10_000
    widget(at.button, "f2d_stop").click()
    assert_ok(at.run())
    stopped_at = len(job.losses)
    assert not job.running
    assert_ok(at.run())
    assert len(job.losses) == stopped_at  # no more training after Stop
    assert not widget(at.button, "f2d_train").disabled


@pytest.mark.slow
def test_probe_sum_and_jacobian_are_the_models_numbers():
    at = small_flow(assert_ok(AppTest.from_file(PAGE, default_timeout=120).run()))
    widget(at.radio, "f2d_zero_init").set_value(False)  # random couplings: non-trivial numbers
    assert_ok(at.run())
    model = at.session_state["f2d_job"].model.double_copy()
    with torch.no_grad():
        log_p = float(model.log_prob(torch.tensor([[0.8, 0.4]], dtype=torch.float64)))
    latex = " ".join(x.value for x in at.latex)
    assert f"= {log_p:.3f}" in latex or f"= {log_p:.3f}".replace("= ", "= -") in latex
    assert r"\text{step 2}" in latex
    # the coupling's Jacobian shows its exact zero in red; its log-det is the diagonal's logs
    assert r"\color{#c92a2a}{0}" in latex and r"\log|J_{11}| + \log|J_{22}|" in latex
    assert "Autograd's log|det J|" in text(at)
    widget(at.selectbox, "f2d_jac_layer").set_value(1)  # the LU matrix: linear, not triangular
    assert_ok(at.run())
    assert "Σ log|sᵢ|" in text(at)


@pytest.mark.slow
def test_additive_is_flat_and_zero_init_is_the_identity():
    at = small_flow(assert_ok(AppTest.from_file(PAGE, default_timeout=120).run()), train_steps=20)
    widget(at.button, "f2d_cmp_train").click()
    assert_ok(at.run())
    for _ in range(40):
        if not any(at.session_state[k].running for k in ("f2d_cmp_affine", "f2d_cmp_additive")):
            break
        assert_ok(at.run())
    additive = values(chart(at, "f2d_cmp_logdet_additive")["data"][0]["z"])
    affine = values(chart(at, "f2d_cmp_logdet_affine")["data"][0]["z"])
    assert np.all(additive == 0) and np.abs(affine).max() > 0
    assert "Keeping volume costs" in text(at)

    words = text(at)
    moved = dict(re.findall(r"\*\*(zero init|random init)\*\* · before training: loss [-\d.]+ nats; "
                            r"the couplings move points by at most ([-\d.e]+)", words))
    assert float(moved["zero init"]) == 0.0 and float(moved["random init"]) > 1e-3
    # ActNorm's start: the first batch comes out with zero mean and unit spread
    assert "std (1.00, 1.00)" in words


@pytest.mark.slow
def test_layer_slider_directions_and_user_points():
    at = small_flow(assert_ok(AppTest.from_file(PAGE, default_timeout=120).run()))
    widget(at.select_slider, "f2d_layer").set_value(0)
    assert_ok(at.run())
    assert "Position 0 is the data itself" in text(at)
    widget(at.radio, "f2d_direction").set_value("latent → data (sampling)")
    widget(at.toggle, "f2d_animate").set_value(True)
    assert_ok(at.run())
    frames = chart(at, "f2d_animation")["frames"]
    assert len(frames) == 1 + len(at.session_state["f2d_job"].model.layers)

    widget(at.selectbox, "f2d_target").set_value("points")
    assert_ok(at.run())
    assert chart(at, "f2d_canvas")
    placed = len(at.session_state["f2d_points"])
    widget(at.button, "f2d_undo").click()
    assert_ok(at.run())
    assert len(at.session_state["f2d_points"]) == placed - 1
    widget(at.button, "f2d_clear").click()
    at.run()
    assert any("at least one point" in w.value for w in at.warning)


def test_a_link_opens_the_default_target_and_a_probe_whose_density_reads_in_powers_of_ten():
    at = AppTest.from_file(PAGE, default_timeout=120)
    at.query_params["px"], at.query_params["py"] = "3.9", "-3.9"   # far out: a tiny density
    at = small_flow(assert_ok(at.run()))
    # 8 clusters: an additive flow stays visibly behind an affine one there, not on two moons
    assert widget(at.selectbox, "f2d_target").value == "eight_gaussians"
    assert (widget(at.number_input, "f2d_probe_x").value, widget(at.number_input, "f2d_probe_y").value) == (3.9, -3.9)
    model = at.session_state["f2d_job"].model.double_copy()
    with torch.no_grad():
        p = float(model.log_prob(torch.tensor([[3.9, -3.9]], dtype=torch.float64)).exp())
    assert p < 0.01
    words = text(at)
    assert "p(x) = e^(" in words and f"= **{figs.sci(p)}**" in words and "× 10⁻" in words
    # the probe's path, latent ★ included, lies inside the chart's axes
    spec = chart(at, "f2d_probe_path")
    path = next(t for t in spec["data"] if t.get("name") == "path")
    xs, ys = values(path["x"]), values(path["y"])
    for axis, v in (("xaxis", xs), ("yaxis", ys)):
        lo, hi = spec["layout"][axis]["range"]
        assert lo < v.min() and v.max() < hi
    assert spec["layout"]["dragmode"] == "pan"   # clicks count; the lasso tool is for a drag
