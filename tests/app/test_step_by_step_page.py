"""AppTest of the "One image, step by step" page with the shipped demo checkpoints, and its
filmstrip frames for a model with fewer than 8 bits per pixel value."""

from __future__ import annotations

import pytest
from streamlit.testing.v1 import AppTest

from tests.app.kit import ROOT, assert_ok, image_urls, needs_demos, widget

PAGE = str(ROOT / "pages" / "step_by_step.py")
pytestmark = [needs_demos, pytest.mark.usefixtures("runs_dir")]   # runs_dir: tests/conftest.py


def _low_bit_model(n_bits: int):
    """A small MNIST-shaped model with n_bits per value whose latents decode to varied values."""
    import torch

    from flowlib import FlowModel, preset
    model = FlowModel(preset("mnist-fast", n_bits=n_bits, hidden=8, steps=2))
    model.initialize(torch.rand(8, 1, 28, 28, generator=torch.Generator().manual_seed(0)) - 0.5)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.02 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())))
    return model.eval()


def _bin_centres(n_bits: int) -> set[int]:
    step = 2 ** (8 - n_bits)
    return {k * step + step // 2 for k in range(2 ** n_bits)}


@pytest.mark.slow
def test_walk_frames_show_a_sub_8_bit_models_images_at_its_bin_centres():
    import numpy as np
    import torch

    from flowlib.analysis.walk import walk_backward, walk_forward
    from pages.common import explore as ec
    model = _low_bit_model(3)
    pixels = np.arange(28 * 28, dtype=np.int64).reshape(1, 28, 28) % 256
    pixels = pixels.astype(np.uint8)
    forward = walk_forward(model, ec.to_model_space(model, pixels))
    frames = ec.walk_frames(model, forward, forward.zs)
    assert len(frames) == len(forward.ops)
    # the input frame is the image as a 3-bit model sees it: each pixel at its bin's centre
    np.testing.assert_array_equal(frames[0], pixels // 32 * 32 + 16)
    back = walk_backward(model, forward.zs)
    np.testing.assert_array_equal(ec.walk_frames(model, back, forward.zs)[-1], pixels // 32 * 32 + 16)
    eps = model.sample_eps(1, torch.Generator().manual_seed(5))
    noise = walk_backward(model, [None] * len(model.levels), temperature=0.7, eps=eps)
    drawn = ec.walk_frames(model, noise, noise.zs)[-1]
    assert set(np.unique(drawn).tolist()) <= _bin_centres(3)
    assert len(np.unique(drawn)) > 2                       # a real picture, not one flat grey


@pytest.mark.slow
def test_walk_page_draws_a_5_bit_models_frames_at_its_bin_centres(runs_dir, monkeypatch):
    import numpy as np

    from flowlib.core.checkpoint import model_payload, save_checkpoint
    from pages.common import explore as ec
    path = runs_dir / "run-00001" / "five-bits.pt"
    save_checkpoint(path, model_payload(_low_bit_model(5)))
    drawn = []
    real = ec.walk_frames
    monkeypatch.setattr(ec, "walk_frames", lambda model, walk, zs: drawn.append(
        (model.config.n_bits, [op.kind for op in walk.ops], real(model, walk, zs))) or drawn[-1][2])
    at = AppTest.from_file(PAGE, default_timeout=180).run()
    drawn.clear()                                                     # the first run drew the MNIST demo
    at.selectbox[0].set_value(next(o for o in at.selectbox[0].options if "five-bits.pt" in o)).run()
    assert_ok(at)
    pixels = ec.test_images("mnist")[int(widget(at.slider, "walk_index").value)].numpy()
    n_bits, kinds, frames = next(d for d in drawn if d[1][0] == "input")
    assert n_bits == 5
    np.testing.assert_array_equal(frames[0], pixels // 8 * 8 + 4)      # the input, as 5 bits
    drawn.clear()
    widget(at.radio, "walk_back_mode").set_value("fresh noise").run()
    assert_ok(at)
    (n_bits, kinds, from_noise), = drawn                              # the walk from fresh noise
    assert n_bits == 5 and kinds[-1] == "output" and "input" not in kinds
    assert set(np.unique(from_noise[-1]).tolist()) <= _bin_centres(5)


def _metric(at: AppTest, start: str) -> str:
    return next(m.value for m in at.metric if m.label.startswith(start))


@pytest.mark.slow
def test_walk_page_renders_every_section():
    at = AppTest.from_file(PAGE, default_timeout=180).run()
    assert_ok(at)
    headers = [h.value for h in at.header]
    assert len(headers) == 6 and headers[0].startswith("1 ·") and headers[-1].startswith("6 ·")
    assert float(_metric(at, "Invertibility error")) < 1e-4
    assert float(_metric(at, "Fresh coupling: max |y − x|")) == 0.0
    assert _metric(at, "Fresh coupling: log-det").startswith("+0.00")
    assert any("equals its input, bit for bit" in s.value for s in at.success)
    assert len(at.expander) >= 6  # a "what am I looking at" per section
    assert len(at.latex) >= 5  # the formulas
    table = at.dataframe[0].value
    assert "log-det (nats)" in table.columns and "latent leaving" in table.columns
    # The per-op log-dets add up to the total shown on top.
    total = float(_metric(at, "Σ log-det of all operations").split()[0].replace(",", "").replace("+", ""))
    assert abs(table["log-det (nats)"].sum() - total) < 0.5
    assert table["latent leaving"].str.startswith("z").sum() == 2  # mnist-fast: 2 levels


@pytest.mark.slow
def test_walk_page_image_op_and_backward_controls():
    at = AppTest.from_file(PAGE, default_timeout=180).run()
    assert_ok(at)
    before = image_urls(at)
    widget(at.slider, "walk_index").set_value(3).run()
    assert_ok(at)
    assert image_urls(at)[0] != before[0]
    # every kind of operation can be inspected
    formulas = set()
    pieces = ("logit", r"\to [4C", "H\\cdot W\\cdot\\sum_c", r"\log|\det W|", "e^{s(x_1)}",
              r"\log p(z_\ell\mid h)")
    labels = widget(at.selectbox, "walk_op").options     # "#k · level 1 · step 2 · coupling", ...
    # the first operation of each kind (logit, squeeze, ActNorm, 1×1 conv, coupling, the split
    # of level 1 after K steps): one rerun each instead of one per operation
    firsts: dict[str, int] = {}
    for k, label in enumerate(labels, start=1):
        kind = label.split(" · ")[-1].split(":")[0].strip()   # "split: half the channels ..." -> split
        firsts.setdefault(kind, k)
    assert {"squeeze", "actnorm", "permutation", "coupling", "split"} <= set(firsts), labels
    for k in sorted(firsts.values()):
        widget(at.selectbox, "walk_op").set_value(k).run()
        assert_ok(at)
        formulas |= {el.value for el in at.latex}
    for piece in pieces:
        assert any(piece in f for f in formulas), piece
    widget(at.radio, "walk_back_mode").set_value("fresh noise").run()
    assert_ok(at)
    grid = image_urls(at)
    widget(at.button, "walk_reseed").click().run()
    assert_ok(at)
    assert image_urls(at) != grid


@pytest.mark.slow
def test_walk_page_faces_demo_and_a_later_coupling():
    at = AppTest.from_file(PAGE, default_timeout=180).run()
    faces = next(label for label in at.selectbox[0].options if "Faces" in label)
    at.selectbox[0].set_value(faces).run()
    assert_ok(at)
    pick = widget(at.selectbox, "walk_fresh_pick")
    pick.set_value(pick.options[-1]).run()  # the top level's last coupling
    assert_ok(at)
    assert float(_metric(at, "Fresh coupling: max |y − x|")) == 0.0
    table = at.dataframe[0].value
    assert table["latent leaving"].str.startswith("z").sum() == 3  # faces-fast: 3 levels


def test_walk_page_draw_by_hand_without_a_drawing_says_what_to_do():
    at = AppTest.from_file(PAGE, default_timeout=180).run()
    widget(at.radio, "walk_source").set_value("Draw by hand").run()
    assert_ok(at)
    assert any("Draw something" in i.value for i in at.info)


def test_walk_page_without_the_canvas_package_falls_back_to_slider_shapes(monkeypatch):
    from pages.common import canvas
    monkeypatch.setattr(canvas, "st_canvas", None)
    at = AppTest.from_file(PAGE, default_timeout=180).run()
    widget(at.radio, "walk_source").set_value("Draw by hand").run()
    assert_ok(at)
    assert any("pip install streamlit-drawable-canvas==0.13.0" in i.value for i in at.info)
    assert len(at.header) == 6  # the walk goes on with the slider-drawn shape
    assert float(_metric(at, "Invertibility error")) < 1e-4
