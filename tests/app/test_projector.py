"""What the class sees: what a teacher at a projector reads on each page.

AppTests of the pages with the shipped demo checkpoints (no training), and of the Train page
with runs written straight into a temporary store (no training process either).
"""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
from PIL import Image, ImageDraw
from streamlit.testing.v1 import AppTest

from flowlib.viz.images import _font, fit_factor, hstack_images, signed_factor, signed_number, wrap_text
from flowlib.viz.latents import flow_journey, journey_strip
from flowlib.viz.masks import squeezed_channel_tiles
from tests.app.kit import APP, DEMOS, needs_demos

pytestmark = pytest.mark.usefixtures("runs_dir")   # tests/conftest.py: an empty store each


def page(name: str, **query) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=120)
    for key, value in query.items():
        at.query_params[key] = value
    at.switch_page(f"pages/{name}.py")
    at.run()
    ok(at)
    return at


def ok(at: AppTest) -> None:
    assert not at.exception, [e.message for e in at.exception]
    assert not at.error, [e.value for e in at.error]


def by_key(widgets, key):
    return next(w for w in widgets if w.key == key)


def texts(at: AppTest, kind: str) -> list[str]:
    return [el.value for el in at.get(kind)]


def image_protos(at: AppTest):
    return [img for el in at.get("image") for img in el.proto.imgs]


# -- 14 · Masks §4 ---------------------------------------------------------------------------
def test_signed_numbers_read_as_products_not_subtractions():
    assert signed_factor(-0.39834) == "(\u22120.398)"
    assert signed_factor(0.5) == "0.500"
    assert signed_number(-0.3983, 4) == "\u22120.3983"
    assert signed_number(2.5, 2) == "+2.50"


@needs_demos
def test_masks_logdet_line_and_lu_titles():
    at = page("masks")
    line = next(t for t in texts(at, "markdown") if "H·W·log|det W|" in t)
    assert "·-" not in line and "·−" not in line, line   # no "14·14·-0.3983"
    factor = line.split("H·W·log|det W| = ")[1].split(" = ")[0]
    assert factor.count("·") == 2 and ("(\u2212" in factor or "-" not in factor), factor
    specs = [json.loads(el.proto.spec) for el in at.get("plotly_chart")]
    titles = [s["layout"].get("title", {}).get("text", "") for s in specs]
    assert "U + diag(s): s on the diagonal" in titles
    assert "W = P·L·(U + diag(s))" in titles
    assert not any(t == "U (diagonal = s)" for t in titles)


# -- 1 · squeezed-tile captions ----------------------------------------------------------------
@pytest.mark.parametrize("channels, side, target", [(2, 14, 130), (6, 8, 130), (1, 28, 170)])
def test_squeezed_tile_captions_fit_under_their_tiles(channels, side, target):
    """Level 2 (MNIST) / 3 (faces): narrow tiles; every caption line must fit its tile, so
    neighbouring captions can neither overlap nor run off the picture's edge."""
    before = np.random.default_rng(0).integers(0, 255, (channels, side, side), dtype=np.uint8)
    tiles = squeezed_channel_tiles(before, scale=fit_factor(side // 2, target))
    font = _font(15)
    draw = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    for label, tile in tiles:
        for line in wrap_text(label, tile.shape[1], font, draw):
            box = draw.textbbox((0, 0), line, font=font)
            assert box[2] - box[0] <= tile.shape[1], (label, line, tile.shape)
    row = hstack_images([t for _, t in tiles[:4]], captions=[lab for lab, _ in tiles[:4]],
                            font_size=15)
    assert row.shape[1] == sum(t.shape[1] for _, t in tiles[:4]) + 8 * 3  # nothing widened


def test_hstack_images_makes_room_for_a_caption_wider_than_its_picture():
    tiny = np.zeros((10, 10, 3), np.uint8)
    out = hstack_images([tiny, tiny], captions=["averyveryverylongword", "b"], font_size=15)
    assert out.shape[1] > 10 + 8 + 10  # the cell grew to the word instead of cutting it


# -- 9 · the chart's help link and the form's long choices --------------------------------------
def test_bpd_help_sits_inside_the_plot_not_on_the_legend_line():
    import plotly.graph_objects as go

    from pages.common import ui

    fig = go.Figure(go.Scatter(x=[0, 1], y=[3, 2], name="events"))
    ui.base_layout(fig, x_title="step", y_title="bits/dim", uirevision=1)
    ui.add_bpd_help(fig)
    legend = fig.layout.legend
    note = fig.layout.annotations[0]
    assert legend.yanchor == "bottom" and legend.y >= 1.0       # the legend: above the plot
    assert note.yanchor == "top" and note.y <= 1.0              # the link: inside it


def test_long_select_choices_get_wider_cells():
    from flowlib.config import FlowConfig, TrainConfig
    from flowlib.settings import settings_of
    from pages.common.settings_form import _cell_weight

    flow = dict(settings_of(FlowConfig))
    train = dict(settings_of(TrainConfig))
    assert _cell_weight(flow["permutation"]) > _cell_weight(flow["levels"])
    assert _cell_weight(flow["permutation"]) >= len("learned 1×1 conv, LU-factored")
    assert _cell_weight(train["lr_schedule"]) > _cell_weight(train["batch_size"])


# -- 10 · Sampling ----------------------------------------------------------------------------
@pytest.mark.slow
@needs_demos
def test_sampling_says_the_truth_about_t0_and_switches_the_main_slider_off():
    at = page("sampling")
    captions = [img.caption for img in image_protos(at)]
    table = next(c for c in captions if "only T changes" in c)
    assert "one smooth average image per column" not in table.replace("'", "")
    assert "every column decodes the same point" in table
    assert not by_key(at.slider, "sampling_temp").disabled
    by_key(at.checkbox, "sampling_per_level").check().run()
    ok(at)
    assert by_key(at.slider, "sampling_temp").disabled
    assert any("Temperature per level" in c for c in texts(at, "caption"))


# -- 12 · Home --------------------------------------------------------------------------------
@needs_demos
def test_home_shows_a_flow_at_work_and_makes_a_true_claim():
    at = page("home")
    imgs = image_protos(at)
    assert "fresh noise" in imgs[0].caption       # the journey first; the recorded run's frame below it
    words = " ".join(texts(at, "caption"))
    # Home's claim is read from the recorded run it plays (checkpoints/timeline-mnist): measured
    assert "starts near 8" not in words and "In the recorded run below" in words


def test_secondary_text_is_legible_at_a_projector():
    from pages.common import ui

    css = ui.PAGE_CSS
    assert "stCaptionContainer" in css and "font-size: 1rem" in css and "opacity: 1" in css


@pytest.mark.slow
@needs_demos
def test_flow_journey_round_trip_and_shapes():
    import torch

    from flowlib.core.checkpoint import load_model

    model, _ = load_model(DEMOS[0])
    pixels = np.zeros((1, 28, 28), np.uint8)
    pixels[0, 6:22, 12:16] = 255
    eps = model.sample_eps(1, torch.Generator().manual_seed(0))
    j = flow_journey(model, pixels, eps, 0.8)
    L = model.config.levels
    assert len(j["forward"]) == len(j["backward"]) == L + 1
    assert all(tuple(f.shape) == (1, 28, 28) for f in j["forward"] + j["backward"])
    assert j["round_trip"] < 1e-3
    assert journey_strip(j, 4).ndim == 3


# -- 11 · Latents -----------------------------------------------------------------------------
@needs_demos
def test_latents_measures_how_alike_the_fine_and_full_redraws_are(tmp_path):
    at = page("latents")
    grid = next(img for img in image_protos(at) if "redraws at T" in img.caption)
    assert grid
    info = " ".join(texts(at, "info"))
    assert "keep z1, redraw z2" in info and "/255" in info
    import re
    numbers = [float(v) for v in re.findall(r"\*\*(\d+(?:\.\d+)?)/255\*\*", info)]
    assert len(numbers) == 2 and numbers[0] < numbers[1]   # fine-only gap < coarse-kept gap


# -- 4, 5, 7, 8 · the Train page with runs in the store -----------------------------------------
def _store():
    from flowlib.store.runs import RunStore
    return RunStore()


def _run_dicts():
    from flowlib.config import APP_TRAIN_DEFAULTS, PRESETS
    cfg = PRESETS["mnist-fast"].replace(image_shape=(1, 28, 28)).to_dict()
    tc = APP_TRAIN_DEFAULTS.replace(dataset="mnist", max_steps=2000).to_dict()
    return cfg, tc


FAKE_PID = 4_000_000  # no process: these runs are only rows in the store


@pytest.fixture
def stopped_and_training():
    """Run 1 stopped at step 63 (last logged row: step 60); run 2 'training' (a row only)."""
    from flowlib.store.request import RunRequest
    store = _store()
    cfg, tc = _run_dicts()
    r1 = store.create_run(RunRequest.from_dicts("mnist-a", cfg, tc), status="queued")
    store.begin_run(r1, FAKE_PID)
    now = time.time()
    store.append_metrics(r1, [(50, now, "train_bpd", 2.9), (60, now, "train_bpd", 2.81),
                              (50, now, "test_bpd", 2.95), (60, now, "elapsed_s", 21.0)])
    store.heartbeat(r1, 63)
    store.finish_run(r1, "stopped", "Stopped at step 63; checkpoint saved. Resume to continue.", 63)
    store.checkpoint_path(r1).write_bytes(b"placeholder: resume is refused before it is read")
    r2 = store.create_run(RunRequest.from_dicts("mnist-b", cfg, tc), status="queued")
    store.begin_run(r2, FAKE_PID)
    store.heartbeat(r2, 340)
    yield r1, r2
    for rid in (r1, r2):
        if store.get_run(rid)["status"] in ("queued", "running", "stopping"):
            store.finish_run(rid, "stopped", "test over")


def test_progress_line_labels_each_number_with_its_step(stopped_and_training):
    r1, _ = stopped_and_training
    at = page("train", run=str(r1))
    line = at.get("progress")[0].proto.text
    assert line.startswith("Step 63 of 2,000"), line
    assert "2.810 bits/dim at step 60" in line and "test 2.950 at step 50" in line, line
    assert "of training by step 60" in line, line


def test_stored_step_is_shown_while_a_resumed_run_is_queued(stopped_and_training):
    r1, r2 = stopped_and_training
    store = _store()
    store.finish_run(r2, "stopped", "out of the way", 340)
    store.request_start(r1)            # what Resume does before the worker answers
    at = page("train", run=str(r1))
    line = at.get("progress")[0].proto.text
    assert line.startswith("Step 63 of 2,000"), line


def test_another_training_run_is_named_and_resume_answers_in_words(stopped_and_training):
    r1, r2 = stopped_and_training
    at = page("train", run=str(r1))
    info = " ".join(texts(at, "info"))
    assert f"Run {r2} 'mnist-b' (step 340) is training" in info, info
    assert f"stop run {r2} first, or wait" in info
    labels = [b.proto.label for b in at.button]
    assert f"Show run {r2}" in labels and f"Stop run {r2}" in labels
    by_key(at.button, f"resume_{r1}").click().run()
    assert not at.exception
    errors = " ".join(texts(at, "error"))
    assert "FLOWLAB_MAX_CONCURRENT" not in errors
    assert f"run {r2} 'mnist-b'" in errors.lower() and "wait until it finishes" in errors
    by_key(at.button, f"stop_other_{r1}_{r2}").click().run()
    assert not at.exception
    assert _store().get_run(r2)["status"] in ("stopping", "stopped")


def test_stop_does_not_reopen_the_setup_form(stopped_and_training):
    r1, r2 = stopped_and_training
    at = page("train", run=str(r2))           # watching the training run: form closed
    assert not at.expander[0].proto.expanded
    _store().finish_run(r2, "stopped", "Stopped at step 340.", 340)   # what Stop leads to
    at.run()
    assert not at.exception
    assert not at.expander[0].proto.expanded  # still closed: the dashboard stays in view


def test_home_quick_path_and_a_first_visit_open_the_form():
    at = page("train")                          # no runs at all
    assert at.expander[0].proto.expanded
    at = page("train", dataset="mnist", preset="mnist-fast")
    assert at.expander[0].proto.expanded


# -- 13 · media files of an interrupted run ---------------------------------------------------
def test_dropped_media_files_are_kept_for_a_grace_period(monkeypatch):
    """Streamlit deletes a run's pictures at the end of the next run; the browser may still
    fetch them (an interrupted run). ui.keep_media_files_a_while delays the deletion."""
    import types

    import streamlit.runtime as st_runtime

    from pages.common import ui

    deleted = []
    storage = types.SimpleNamespace(delete_file=deleted.append)
    manager = types.SimpleNamespace(_storage=storage, _file_metadata={})
    monkeypatch.setattr(st_runtime, "exists", lambda: True)
    monkeypatch.setattr(st_runtime, "get_instance",
                        lambda: types.SimpleNamespace(media_file_mgr=manager))
    clock = [1000.0]
    monkeypatch.setattr(time, "monotonic", lambda: clock[0])
    ui.keep_media_files_a_while(grace_s=60)
    ui.keep_media_files_a_while(grace_s=60)          # idempotent: wrapped once
    storage.delete_file("a")
    assert deleted == []                              # still served for a while
    clock[0] += 61
    manager._file_metadata["b"] = object()            # b is shown again before its time is up
    storage.delete_file("b")
    assert deleted == ["a"]                           # a's grace is over: gone now
    clock[0] += 61
    storage.delete_file("c")
    assert deleted == ["a"]                           # b is live again: never deleted
