"""AppTest of the Sampling page's class sections: pick a digit, which digit is it, latent arithmetic."""

from __future__ import annotations

import json

import pytest
import torch
from streamlit.testing.v1 import AppTest

from flowlib import FlowModel, preset
from flowlib.core.checkpoint import model_payload, save_checkpoint
from tests.app.kit import ROOT, assert_ok, image_urls, needs_demos, widget

SAMPLING = str(ROOT / "pages" / "sampling.py")
pytestmark = [needs_demos, pytest.mark.usefixtures("runs_dir")]


def _tiny_conditional(runs_dir, name="cond.pt"):
    """A small conditional MNIST-shaped model with non-zero class tables, as a user's run."""
    model = FlowModel(preset("mnist-fast", steps=1, hidden=8, condition="top", n_classes=10))
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        model.initialize(torch.rand(64, 1, 28, 28, generator=gen) - 0.5)
        table = model.levels[-1].class_table.table
        table.add_(0.5 * torch.randn(table.shape, generator=gen))
    path = runs_dir / "run-00001" / name
    save_checkpoint(path, {**model_payload(model), "dataset": "mnist",
                           "class_names": [f"d{k}" for k in range(10)]})
    return path


def _open_with(path) -> AppTest:
    at = AppTest.from_file(SAMPLING, default_timeout=180)
    at.session_state["explore_checkpoint"] = str(path)
    at.run()
    assert_ok(at)
    return at


@pytest.mark.slow
def test_pick_a_class_draws_a_row_per_class_with_the_same_noise(runs_dir):
    at = _open_with(_tiny_conditional(runs_dir))
    assert any(h.value == "Pick a digit" for h in at.header)
    chosen = widget(at.multiselect, "cond_classes")
    assert chosen.value == [f"d{k}" for k in range(10)]
    first = image_urls(at)[0]
    chosen.set_value(["d3"]).run()
    assert_ok(at)
    assert image_urls(at)[0] != first
    one_row = image_urls(at)[0]
    widget(at.slider, "cond_temp").set_value(0.0).run()
    assert_ok(at)
    assert image_urls(at)[0] != one_row


@pytest.mark.slow
def test_which_class_shows_bars_of_p_y_given_x_and_the_accuracy(runs_dir):
    at = _open_with(_tiny_conditional(runs_dir))
    assert any("Classify by likelihood" in h.value for h in at.header)
    charts = [json.loads(el.proto.spec) for el in at.get("plotly_chart")]
    bars = [c for c in charts if c["data"] and c["data"][0].get("type") == "bar"]
    assert bars and len(bars[0]["data"][0]["x"]) == 10
    assert abs(sum(bars[0]["data"][0]["y"]) - 1) < 1e-5
    assert any("The model reads it as" in m.value for m in at.markdown)
    assert any("right" in m.value and "test images" in m.value for m in at.markdown)
    assert any("log p(x) = log Σ_y p(x | y) p(y)" in c.value for c in at.caption)
    widget(at.slider, "cond_cls_index").set_value(1).run()
    assert_ok(at)


@pytest.mark.slow
def test_latent_arithmetic_moves_an_image_and_its_slider_redraws_it(runs_dir):
    at = _open_with(_tiny_conditional(runs_dir))
    assert any("Latent arithmetic" in h.value for h in at.header)
    assert widget(at.selectbox, "cond_arith_from").value == "d7"
    before = image_urls(at)
    widget(at.slider, "cond_arith_alpha").set_value(0.0).run()
    assert_ok(at)
    assert image_urls(at) != before
    widget(at.radio, "cond_arith_mode").set_value("test images by number").run()
    assert_ok(at)
    widget(at.text_input, "cond_arith_b").set_value("nothing").run()
    assert any("at least one test image" in i.value for i in at.info)


@pytest.mark.slow
def test_an_unconditional_model_keeps_its_sections_and_gets_latent_arithmetic_by_class():
    at = AppTest.from_file(SAMPLING, default_timeout=180).run()
    assert_ok(at)
    assert not any(h.value == "Pick a digit" for h in at.header)
    assert not any("Classify by likelihood" in h.value for h in at.header)
    assert any("Latent arithmetic" in h.value for h in at.header)
    assert widget(at.selectbox, "cond_arith_to").value == "1"


@pytest.mark.slow
@pytest.mark.skipif(not (ROOT / "checkpoints" / "mnist-cond.pt").is_file(), reason="no conditional demo")
def test_the_conditional_demo_is_one_click_away_and_draws_the_digit_asked_for():
    at = AppTest.from_file(SAMPLING, default_timeout=180).run()
    widget(at.button, "sampling_model_use_cond").click().run()
    assert_ok(at)
    assert "conditional" in at.selectbox[0].value
    assert any(h.value == "Pick a digit" for h in at.header)
    assert widget(at.multiselect, "cond_classes").value == [str(k) for k in range(10)]


@pytest.mark.slow
def test_the_faces_demo_offers_the_conditional_faces_demo_and_it_draws_the_person_asked_for():
    at = AppTest.from_file(SAMPLING, default_timeout=180)
    at.session_state["explore_checkpoint"] = str(ROOT / "checkpoints" / "faces-fast.pt")
    at.run()
    assert_ok(at)
    assert any("Pick a person" in i.value for i in at.info)
    widget(at.button, "sampling_model_use_cond").click().run()
    assert_ok(at)
    assert "Faces conditional" in at.selectbox[0].value
    assert any(h.value == "Pick a person" for h in at.header)
    assert image_urls(at)


@pytest.mark.slow
def test_the_train_form_takes_the_number_of_classes_from_the_dataset():
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
    at.switch_page("pages/train.py").run()
    assert_ok(at)
    widget(at.selectbox, "tr_condition").set_value("top").run()
    assert_ok(at)
    assert any("conditioned on 10 classes (top)" in c.value for c in at.caption)
    widget(at.selectbox, "tr_dataset").set_value("faces").run()
    assert_ok(at)
    assert any("conditioned on 40 classes (top)" in c.value for c in at.caption)


@pytest.mark.slow
@pytest.mark.skipif(not (ROOT / "checkpoints" / "mnist-cond.pt").is_file(), reason="no conditional demo")
@pytest.mark.parametrize("page", ["masks", "latents", "step_by_step", "likelihood"])
def test_every_look_inside_page_opens_the_conditional_demo(page):
    at = AppTest.from_file(str(ROOT / "pages" / f"{page}.py"), default_timeout=180)
    at.session_state["explore_checkpoint"] = str(ROOT / "checkpoints" / "mnist-cond.pt")
    at.run()
    assert_ok(at)
    assert "conditional" in at.selectbox[0].value
    assert image_urls(at)
