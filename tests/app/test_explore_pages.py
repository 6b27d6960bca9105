"""AppTest of the three "Look inside" pages with the shipped demo checkpoints.

Each page must open without training anything, render its pictures, respond to its sliders,
and survive a broken checkpoint in the user's runs folder.
"""

from __future__ import annotations

import pytest
from streamlit.testing.v1 import AppTest

from tests.app.kit import DEMOS, ROOT, assert_ok, image_urls, needs_demos, widget

PAGES = {name: str(ROOT / "pages" / f"{name}.py") for name in ("masks", "latents", "sampling")}
pytestmark = [needs_demos, pytest.mark.usefixtures("runs_dir")]   # runs_dir: tests/conftest.py


def _run(name: str) -> AppTest:
    at = AppTest.from_file(PAGES[name], default_timeout=120).run()
    assert_ok(at)
    return at





def test_masks_page_renders_and_shows_the_no_permutation_contrast():
    at = _run("masks")
    assert len(image_urls(at)) >= 8
    assert any("Every value has been transformed" in s.value for s in at.success)
    before = image_urls(at)
    widget(at.slider, "masks_level").set_value(2).run()
    assert_ok(at)
    assert image_urls(at) != before  # the squeeze walk moved one level down
    widget(at.radio, "masks_trace_mode").set_value("Try a mask and a permutation").run()
    widget(at.radio, "masks_try_perm").set_value("none").run()
    assert_ok(at)
    assert any("only 50 %" in w.value for w in at.warning)
    widget(at.radio, "masks_try_perm").set_value("reverse").run()
    assert not at.warning and any("after 2 step" in s.value for s in at.success)


def test_masks_page_draw_by_hand_source_asks_for_a_drawing():
    at = _run("masks")
    widget(at.radio, "masks_source").set_value("Draw by hand").run()
    assert_ok(at)
    assert any("Draw something in the black square" in i.value for i in at.info)


@pytest.mark.slow
def test_draw_by_hand_without_the_canvas_package_falls_back_to_slider_shapes(monkeypatch):
    from pages.common import canvas
    monkeypatch.setattr(canvas, "st_canvas", None)
    at = _run("latents")
    widget(at.radio, "latents_source").set_value("Draw by hand").run()
    assert_ok(at)
    before = image_urls(at)
    widget(at.selectbox, "latents_draw_shape").set_value("zero").run()
    assert_ok(at)
    assert image_urls(at) != before


def test_latents_page_renders_levels_budget_and_resamples():
    at = _run("latents")
    images = image_urls(at)
    assert len(images) >= 2 + 2 * 2 + 1  # input, reconstruction, raw and ẑ per level, the scale grid
    charts = [el for el in at.get("plotly_chart")]
    assert charts, "the bits/dim budget chart is missing"
    assert any("max |decode(encode(x)) − x|" in m.label for m in at.metric)
    err = float(next(m.value for m in at.metric if "decode" in m.label))
    assert err < 1e-3
    before = image_urls(at)[-1]
    widget(at.slider, "latents_temp").set_value(0.3).run()
    assert_ok(at)
    assert image_urls(at)[-1] != before


def test_sampling_slider_and_seed_change_the_grid():
    at = _run("sampling")
    assert len(image_urls(at)) >= 3  # 64-grid, temperature table, interpolation strips (+ class sections)
    first = at.session_state["sampling_last_grid"]
    grid_before = image_urls(at)[0]
    widget(at.slider, "sampling_temp").set_value(1.0).run()
    assert_ok(at)
    assert at.session_state["sampling_last_grid"] != first
    assert image_urls(at)[0] != grid_before
    table_before = image_urls(at)[1]
    widget(at.button, "sampling_new_seed").click().run()
    assert_ok(at)
    assert at.session_state["sampling_seed"] == 1
    assert image_urls(at)[1] != table_before  # the Glow-temperature table follows the seed
    assert len(at.get("download_button")) >= 3


def test_sampling_per_level_temperature_and_faces_demo():
    at = _run("sampling")
    labels = at.selectbox[0].options
    faces = next(label for label in labels if "Faces" in label)
    at.selectbox[0].set_value(faces).run()
    assert_ok(at)
    assert "32×32" in at.caption[0].value or "1×32×32" in at.caption[0].value
    before = image_urls(at)[0]
    widget(at.checkbox, "sampling_per_level").check().run()
    widget(at.slider, "sampling_temp_2").set_value(0.0).run()
    assert_ok(at)
    assert image_urls(at)[0] != before


def test_a_broken_checkpoint_is_named_and_the_demo_still_renders(runs_dir):
    bad = runs_dir / "run-00009" / "broken.pt"
    bad.parent.mkdir()
    bad.write_bytes(b"this is not a checkpoint")
    for name in ("sampling", "latents", "masks"):
        at = AppTest.from_file(PAGES[name], default_timeout=120).run()
        assert_ok(at)
        options = at.selectbox[0].options
        assert any("broken.pt" in o for o in options)
        at.selectbox[0].set_value(next(o for o in options if "broken.pt" in o)).run()
        assert not at.exception
        assert len(at.error) == 1 and "broken.pt" in at.error[0].value
        assert "not a readable PyTorch checkpoint" in at.error[0].value or "truncated" in at.error[0].value
        assert len(image_urls(at)) >= 3  # fell back to a demo model and kept going


def test_pages_through_the_app_router():
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120).run()
    for page in ("pages/masks.py", "pages/latents.py", "pages/sampling.py"):
        at.switch_page(page).run()
        assert not at.exception, (page, [e.message for e in at.exception])
        assert image_urls(at), page


def test_a_checkpoint_handed_over_by_the_runs_page_is_preselected():
    at = AppTest.from_file(PAGES["latents"], default_timeout=120)
    at.session_state["explore_checkpoint"] = str(DEMOS[1])
    at.run()
    assert_ok(at)
    assert "Faces" in at.selectbox[0].value
    assert "1×32×32" in at.caption[0].value


@pytest.mark.parametrize("permutation,shown", [("shuffle", "Permutation: random channel shuffle"),
                                               ("conv1x1", "1×1 convolution")])
def test_masks_page_describes_each_permutation_kind_through_its_protocol(runs_dir, permutation, shown):
    from flowlib import FlowModel, preset
    from flowlib.core.checkpoint import model_payload, save_checkpoint
    model = FlowModel(preset("mnist-fast", permutation=permutation, hidden=8))
    path = runs_dir / "run-00001" / f"{permutation}.pt"
    save_checkpoint(path, model_payload(model))
    at = AppTest.from_file(PAGES["masks"], default_timeout=120).run()
    option = next(o for o in at.selectbox[0].options if f"{permutation}.pt" in o)
    at.selectbox[0].set_value(option).run()
    assert_ok(at)
    assert any(shown in m.value for m in at.markdown), [m.value for m in at.markdown if "log|det" in m.value]


def test_an_out_of_domain_image_gets_an_explanation_of_its_cost():
    from flowlib.core.checkpoint import load_model
    from pages.common import explore as ec
    model, ckpt = load_model(DEMOS[1])                        # faces
    loaded = ec.Loaded("faces demo", DEMOS[1], model, ckpt)
    typical = ckpt["final_test_bpd"]
    assert ec.costly_image_note(typical + 0.5, loaded) is None          # an ordinary image
    note = ec.costly_image_note(53.7, loaded)
    assert "53.70 bits/dim" in note and f"{typical:.2f}" in note and "more than the 8 bits/dim" in note
    assert "more than the 8" not in ec.costly_image_note(typical + 1.5, loaded)
    assert ec.costly_image_note(53.7, ec.Loaded("no score", DEMOS[1], model, {})) is None
