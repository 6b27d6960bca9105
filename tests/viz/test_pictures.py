"""flowlib.viz: exact expectations for the pictures the exploration pages show."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from flowlib import PRESETS, FlowConfig, FlowModel
from flowlib.core.layers import Coupling
from flowlib.core.ops import squeeze2d, unsqueeze2d
from flowlib.viz.figures import actnorm_figure, actnorm_scales, bpd_budget_figure, matrix_heatmap
from flowlib.viz.images import diverging_rgb, image_grid, labelled_grid, latent_grid, png_bytes, tint, upscale
from flowlib.viz.latents import flow_journey, interpolate_latents, lerp, slerp, standardised_grey
from flowlib.viz.masks import (
    BLOCK_COLOURS,
    block_position_map,
    channel_mixing,
    coupling_x1_mask,
    mask_tiles_image,
    model_step_specs,
    multiscale_stages,
    squeeze_overlay,
    squeeze_source,
    squeeze_walk,
    squeezed_channel_tiles,
    trace_masks,
)
from flowlib.viz.uploads import UploadError, prepare_upload, synthetic_stroke

# -- squeeze -------------------------------------------------------------------------------

@pytest.mark.parametrize("c", [1, 3])
def test_squeeze_source_is_where_unsqueeze_puts_each_value(c):
    h, w = 3, 4  # the squeezed grid
    for k in range(4 * c):
        src_c, di, dj = squeeze_source(k)
        for i in range(h):
            for j in range(w):
                y = torch.zeros(1, 4 * c, h, w)
                y[0, k, i, j] = 1
                x = unsqueeze2d(y)[0]
                hit = torch.nonzero(x).tolist()
                assert hit == [[src_c, 2 * i + di, 2 * j + dj]]


def test_block_position_map_matches_squeeze_channels():
    x = torch.as_tensor(block_position_map(6, 8), dtype=torch.float32)[None, None]
    sq = squeeze2d(x)[0]
    for k in range(4):  # channel k of a 1-channel image holds only block position k
        assert torch.all(sq[k] == k)


def test_overlay_tint_of_each_pixel_equals_its_squeezed_channel_tile():
    """Pixel (2i+di, 2j+dj) has exactly the colour of channel 2di+dj at (i, j) after the squeeze."""
    img = (np.arange(8 * 10).reshape(1, 8, 10) * 3 % 256).astype(np.uint8)
    s = 3
    overlay = squeeze_overlay(img, scale=s, grid=False)
    tiles = squeezed_channel_tiles(img, scale=s)
    assert len(tiles) == 4
    for k, (label, tile) in enumerate(tiles):
        _, di, dj = squeeze_source(k)
        assert f"(2i+{di}, 2j+{dj})" in label
        assert tile.shape == (4 * s, 5 * s, 3)
        for i in range(4):
            for j in range(5):
                centre_tile = tile[i * s + 1, j * s + 1]
                p, q = 2 * i + di, 2 * j + dj
                centre_overlay = overlay[p * s + 1, q * s + 1]
                assert centre_tile.tolist() == centre_overlay.tolist()
                assert centre_tile.tolist() == tint(np.array([[img[0, p, q]]], np.uint8),
                                                         BLOCK_COLOURS[2 * di + dj], 0.6)[0, 0].tolist()


def test_block_colours_are_distinct():
    assert len({tuple(c) for c in BLOCK_COLOURS.tolist()}) == 4


@pytest.mark.parametrize("name", ["mnist-fast", "faces-fast", "realnvp", "glow"])
def test_multiscale_stages_agree_with_the_model(name):
    cfg = PRESETS[name]
    if name in ("realnvp", "glow"):
        cfg = cfg.replace(steps=1, hidden=4)
    model = FlowModel(cfg)
    stages = multiscale_stages(cfg.image_shape, cfg.levels)
    latents = [s["shape"] for s in stages if "split" in s["stage"] or "top latent" in s["stage"]]
    assert [tuple(s) for s in latents] == model.latent_shapes
    assert sum(int(np.prod(s)) for s in latents) == int(np.prod(cfg.image_shape))


def test_squeeze_walk_shapes_and_values():
    img = np.arange(16 * 16, dtype=np.int64).reshape(1, 16, 16) % 251
    walk = squeeze_walk(img.astype(np.uint8), 3)
    assert [w["shape"] for w in walk] == [[4, 8, 8], [8, 4, 4], [16, 2, 2]]
    assert walk[0]["kept"] == [0, 1] and walk[0]["left"] == [2, 3]
    assert walk[-1]["left"] == []
    expect = squeeze2d(torch.as_tensor(img, dtype=torch.float32)[None])[0]
    assert np.array_equal(walk[0]["tensor"], expect.numpy().astype(np.uint8))


# -- masks ---------------------------------------------------------------------------------

def test_channel_mask_is_first_half_and_checkerboard_follows_ops():
    m = coupling_x1_mask("channel", 5, 2, 3)
    assert m[:2].all() and not m[2:].any()
    cb = coupling_x1_mask("checkerboard", 2, 3, 3, parity=1)
    assert cb[0].tolist() == [[False, True, False], [True, False, True], [False, True, False]]
    assert np.array_equal(cb[0], cb[1])
    with pytest.raises(ValueError):
        coupling_x1_mask("diagonal", 2, 2, 2)


@pytest.mark.parametrize("mask", ["channel", "checkerboard"])
def test_x1_mask_is_exactly_what_a_coupling_leaves_unchanged(mask):
    torch.manual_seed(0)
    c, h, w = 4, 6, 6
    layer = Coupling(c, h, w, hidden=8, mask=mask, parity=1)
    with torch.no_grad():  # a fresh coupling is the identity: make it do something
        layer.net.conv_out.conv.weight.normal_(0, 0.5)
        layer.net.conv_out.conv.bias.normal_(0, 0.5)
    x = torch.randn(2, c, h, w)
    y, _ = layer(x)
    unchanged = (y == x).all(0).numpy()
    assert np.array_equal(unchanged, coupling_x1_mask(mask, c, h, w, parity=1))


def _specs(mix, mask="channel", k=4, c=4):
    out = []
    for step in range(k):
        m = None if mix is None else (np.arange(c)[::-1].copy() if mix == "reverse" else mix)
        out.append({"mix": m, "mask": mask, "parity": step % 2})
    return out


def test_channel_masks_without_permutation_transform_exactly_half_forever():
    trace = trace_masks([4, 5, 5], _specs(None))
    assert [t.covered_count for t in trace] == [50, 50, 50, 50]
    assert all(t.covered[2:].all() and not t.covered[:2].any() for t in trace)
    assert all(t.x1.sum() == 50 for t in trace)


def test_reversal_covers_everything_after_two_steps():
    trace = trace_masks([4, 5, 5], _specs("reverse"))
    assert [t.covered_fraction for t in trace] == [0.5, 1.0, 1.0, 1.0]
    assert trace[0].origin.tolist() == [3, 2, 1, 0]
    assert trace[1].origin.tolist() == [0, 1, 2, 3]
    assert trace[0].covered[:2].all() and not trace[0].covered[2:].any()  # originals 0,1 moved into x2


def test_alternating_checkerboards_cover_everything_after_two_steps():
    trace = trace_masks([1, 4, 4], _specs(None, mask="checkerboard", c=1))
    assert [t.covered_count for t in trace] == [8, 16, 16, 16]


def test_dense_conv_mixes_every_channel_into_x2():
    w = torch.linalg.qr(torch.randn(4, 4, generator=torch.Generator().manual_seed(0)))[0].numpy()
    trace = trace_masks([4, 3, 3], [{"mix": w, "mask": "channel", "parity": 0}])
    assert trace[0].mixing == "conv" and trace[0].origin is None
    assert trace[0].covered.all() and trace[0].influence.all()


def test_trace_rejects_a_bad_permutation():
    with pytest.raises(ValueError, match="not a permutation"):
        trace_masks([4, 2, 2], [{"mix": np.array([0, 0, 1, 2]), "mask": "channel"}])


def test_model_step_specs_reads_the_real_layers():
    cfg = FlowConfig(image_shape=(1, 16, 16), levels=2, steps=3, hidden=4, permutation="shuffle",
                     mask="realnvp", actnorm=False, split_prior="standard", top_prior="standard")
    model = FlowModel(cfg)
    shape, specs = model_step_specs(model, 0, "post")
    assert shape == [4, 8, 8]
    for spec, step in zip(specs, model.levels[0].steps):
        assert spec["mix"].tolist() == step.permutation.perm.tolist()
        assert spec["mask"] == "channel"
    shape, specs = model_step_specs(model, 1, "pre")
    assert shape == [2, 8, 8] and [s["mask"] for s in specs] == ["checkerboard"] * 3
    assert [s["parity"] for s in specs] == [0, 1, 0]


def test_mask_tiles_image_size():
    x1 = coupling_x1_mask("channel", 4, 7, 7)
    img = mask_tiles_image(x1, scale=10, gap=6)
    assert img.shape == (70, 4 * 70 + 3 * 6, 3)
    assert img[35, 35].tolist() != img[35, 3 * 76 + 35].tolist()  # x1 tile vs x2 tile colours differ


# -- parameters ----------------------------------------------------------------------------

def test_actnorm_scales_shape_and_values():
    model = FlowModel(PRESETS["mnist-fast"])
    with torch.no_grad():
        model.levels[1].steps[2].actnorm.log_scale.fill_(np.log(2.0))
    scales = actnorm_scales(model)
    assert [s.shape for s in scales] == [(4, 4), (4, 8)]
    assert np.allclose(scales[1][2], 2.0) and np.allclose(scales[0], 1.0)
    fig = actnorm_figure(scales[1], 1)
    assert np.allclose(np.asarray(fig.data[0].customdata), scales[1])


def test_matrix_heatmap_is_symmetric_around_zero():
    fig = matrix_heatmap(np.array([[1.0, -3.0], [0.5, 2.0]]), "W")
    assert (fig.data[0].zmin, fig.data[0].zmax) == (-3.0, 3.0)


# -- latents and budget --------------------------------------------------------------------

def test_diverging_colours():
    out = diverging_rgb(np.array([0.0, 3.0, -3.0, 10.0, -10.0]), limit=3.0)
    assert out[0].tolist() == [255, 255, 255]
    assert out[1].tolist() == out[3].tolist() == [178, 24, 43]
    assert out[2].tolist() == out[4].tolist() == [33, 102, 172]


def test_latent_grid_size():
    img, lim = latent_grid(np.zeros((8, 7, 7)) + 0.5, limit=None, ncol=4, scale=10, pad=3)
    assert img.shape == (2 * (70 + 3) + 3, 4 * (70 + 3) + 3, 3)
    assert lim == 0.5


@pytest.mark.parametrize("dequantization", ["uniform", "variational"])
def test_budget_figure_bars_add_up_to_the_model_total(dequantization):
    model = FlowModel(PRESETS["mnist-fast"].replace(dequantization=dequantization)).eval()
    x = torch.randint(0, 256, (1, 1, 28, 28), dtype=torch.uint8)
    model.initialize(model.preprocess(torch.randint(0, 256, (16, 1, 28, 28), dtype=torch.uint8)))
    with torch.no_grad():
        if model.dequantizer is not None:   # a trained dequantiser is not the identity
            model.dequantizer.table.add_(0.3)
        t = model.bits_per_dim_terms(x, noise=False)
    learned = model.dequantizer is not None
    fig = bpd_budget_figure(t.prior_levels[0].tolist(), float(t.logdet[0]), t.quantisation, float(t.total[0]),
                                dequant=float(t.dequant[0]) if learned else None)
    names, vals = list(fig.data[0].x), list(fig.data[0].y)
    assert names == ["prior z1", "prior z2", "log-det"] + (["dequantisation"] if learned else []) + [
        "quantisation", "total"]
    assert vals[-1] == pytest.approx(sum(vals[:-1]), abs=1e-4)
    if learned:
        assert abs(vals[3]) > 1e-3


# -- grids and PNG -------------------------------------------------------------------------

def test_image_grid_exact_size_and_placement():
    imgs = np.zeros((10, 1, 28, 28), np.uint8)
    imgs[5] = 77
    grid = image_grid(imgs, ncol=4, pad=2, scale=2)
    assert grid.shape == (3 * (56 + 2) + 2, 4 * (56 + 2) + 2, 3)
    r, q = divmod(5, 4)
    y, x = 2 + r * 58, 2 + q * 58
    assert (grid[y:y + 56, x:x + 56] == 77).all()
    assert (grid[y - 1, x:x + 56] == 255).all()
    assert (grid[2 + 2 * 58:, 2 + 2 * 58:] == 255).all()  # cells 10 and 11 are empty padding


def test_labelled_grid_and_png_round_trip():
    rows = [np.full((30, 100, 3), v, np.uint8) for v in (0, 128)]
    out = labelled_grid(rows, ["T = 0", "T = 1"], label_width=80)
    assert out.shape == (60, 180, 3)
    assert (out[:30, 80:] == 0).all() and (out[30:, 80:] == 128).all()
    back = np.asarray(Image.open(io.BytesIO(png_bytes(out))))
    assert np.array_equal(back, out)


def test_upscale_is_nearest_neighbour():
    a = np.array([[1, 2], [3, 4]], np.uint8)
    assert upscale(a, 2).tolist() == [[1, 1, 2, 2], [1, 1, 2, 2], [3, 3, 4, 4], [3, 3, 4, 4]]


# -- interpolation -------------------------------------------------------------------------

def test_slerp_endpoints_and_norm():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(1, 50, generator=g), 2 * torch.randn(1, 50, generator=g)
    assert torch.equal(slerp(a, b, 0.0), a)
    assert torch.equal(slerp(a, b, 1.0), b)
    mid = slerp(a, b, 0.5)
    assert float(mid.norm()) == pytest.approx(0.5 * float(a.norm() + b.norm()), rel=1e-5)
    assert float(lerp(a, b, 0.5).norm()) < float(mid.norm())


def test_slerp_of_parallel_vectors_is_linear():
    a = torch.ones(1, 4)
    assert torch.allclose(slerp(a, 3 * a, 0.5), 2 * a)


def test_interpolate_latents_shapes_and_endpoints():
    za = [torch.randn(1, 2, 4, 4), torch.randn(1, 8, 2, 2)]
    zb = [torch.randn(1, 2, 4, 4), torch.randn(1, 8, 2, 2)]
    for mode in ("linear", "spherical"):
        path = interpolate_latents(za, zb, [0.0, 0.3, 1.0], mode)
        assert [tuple(p.shape) for p in path] == [(3, 2, 4, 4), (3, 8, 2, 2)]
        assert torch.allclose(path[0][0], za[0][0]) and torch.allclose(path[1][-1], zb[1][0])


@pytest.mark.parametrize("transform", ["none", "logit"])
def test_flow_journey_runs_the_models_own_level_loops(transform, monkeypatch):
    from flowlib.core.ops import fold_to_image

    torch.manual_seed(0)
    model = FlowModel(FlowConfig(image_shape=(1, 8, 8), levels=3, steps=1, hidden=8, n_bits=5,
                                 input_transform=transform))
    pixels = (torch.rand(1, 8, 8) * 256).to(torch.uint8).numpy()
    model.initialize(model.dequantize(torch.from_numpy(pixels)[None].repeat(4, 1, 1, 1))[0])
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    model.eval()
    eps = model.sample_eps(1, torch.Generator().manual_seed(1))
    calls = []
    for name in ("encode_levels", "decode_levels"):
        real = getattr(FlowModel, name)
        monkeypatch.setattr(FlowModel, name, lambda self, *a, _real=real, _name=name, **kw:
                            calls.append(_name) or _real(self, *a, **kw))
    journey = flow_journey(model, pixels, eps, 0.8)
    assert calls.count("encode_levels") == 1 and calls.count("decode_levels") == 2  # + the round trip's decode
    with torch.no_grad():
        out = model.encode(model.dequantize(torch.from_numpy(pixels)[None], noise=False)[0])
        sample = model.decode([None] * 3, temperature=0.8, eps=eps)
    assert len(journey["forward"]) == len(journey["backward"]) == 4
    assert np.array_equal(journey["forward"][0].numpy(), pixels)
    assert torch.equal(journey["forward"][-1], standardised_grey(fold_to_image(None, out.eps)[0]))
    assert torch.equal(journey["backward"][0], standardised_grey(fold_to_image(None, [0.8 * e for e in eps])[0]))
    assert torch.equal(journey["backward"][-1], model.to_uint8(sample)[0])
    assert journey["round_trip"] < 1e-4


# -- uploads -------------------------------------------------------------------------------

def _png(img: Image.Image, fmt="PNG") -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


def test_upload_rgba_is_composited_on_white_and_made_grey():
    img = Image.new("RGBA", (40, 40), (255, 0, 0, 0))  # fully transparent red
    px, notes = prepare_upload(_png(img), (1, 28, 28))
    assert px.shape == (1, 28, 28) and px.dtype == np.uint8
    assert (px == 255).all()
    assert any("transparency" in n for n in notes) and any("resized" in n for n in notes)


def test_upload_16_bit_is_scaled_not_clipped():
    arr = np.full((28, 28), 65535, np.uint16)
    arr[:14] = 32768
    px, notes = prepare_upload(_png(Image.fromarray(arr)), (1, 28, 28))
    assert px[0, 20, 0] == 255 and px[0, 0, 0] == 128
    assert any("16-bit" in n for n in notes)


def test_upload_grey_to_colour_and_centre_crop():
    img = Image.new("L", (60, 30), 0)
    img.paste(200, (15, 0, 45, 30))  # the centre square is all 200
    px, notes = prepare_upload(_png(img), (3, 30, 30))
    assert px.shape == (3, 30, 30) and (px == 200).all()
    assert any("cropped" in n for n in notes) and any("grey to colour" in n for n in notes)


def test_upload_refusals_are_plain_sentences():
    with pytest.raises(UploadError, match="not a picture"):
        prepare_upload(b"hello, I am a text file" * 10, (1, 28, 28), name="notes.png")
    with pytest.raises(UploadError, match="empty"):
        prepare_upload(b"", (1, 28, 28))
    big = _png(Image.new("L", (300, 300)))
    with pytest.raises(UploadError, match="megapixels"):
        prepare_upload(big, (1, 28, 28), max_pixels=50_000)
    with pytest.raises(UploadError, match="MB"):
        prepare_upload(big, (1, 28, 28), max_bytes=100)
    with pytest.raises(UploadError, match="channels"):
        prepare_upload(big, (2, 28, 28))
    truncated = _png(Image.new("RGB", (64, 64), (10, 20, 30)))[:60]
    with pytest.raises(UploadError):
        prepare_upload(truncated, (1, 28, 28))


def test_synthetic_stroke():
    img = synthetic_stroke((1, 28, 28), "seven")
    assert img.shape == (1, 28, 28) and img.dtype == np.uint8
    assert img.max() == 255 and img[0, 0, 0] == 0
    inv = synthetic_stroke((1, 28, 28), "seven", invert=True)
    assert np.array_equal(inv, 255 - img)
    with pytest.raises(ValueError):
        synthetic_stroke((1, 28, 28), "eight")


# -- the package and the permutation protocol ----------------------------------------------

def test_the_picture_module_does_not_load_plotly():
    import subprocess
    import sys
    code = "import sys, flowlib.viz.images, flowlib.viz.latents; assert 'plotly' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("kind", ["reverse", "shuffle", "conv1x1", "conv1x1_lu"])
def test_channel_mixing_is_an_order_for_permutations_and_a_matrix_for_convolutions(kind):
    from flowlib.core.permutations import make_permutation
    layer = make_permutation(kind, 4, torch.Generator().manual_seed(0))
    mix = channel_mixing(layer)
    x = torch.randn(1, 4, 2, 2)
    y, _ = layer(x)
    if kind in ("reverse", "shuffle"):
        assert mix.shape == (4,) and torch.equal(y, x[:, torch.as_tensor(mix)])
    else:
        assert mix.shape == (4, 4)
        assert torch.allclose(torch.einsum("oc,bchw->bohw", torch.as_tensor(mix), x), y, atol=1e-6)
    trace = trace_masks([4, 2, 2], [{"mix": mix, "mask": "channel", "parity": 0}])
    assert trace[0].mixing == ("permutation" if kind in ("reverse", "shuffle") else "conv")


def _sideways(fmt: str) -> bytes:
    """A phone photo stored sideways: its top half white, the rest black, and EXIF orientation 6
    (turn 90° clockwise to show it), so upright its right half is white."""
    img = Image.new("L", (40, 40), 0)
    img.paste(255, (0, 0, 40, 20))
    exif = Image.Exif()
    exif[0x0112] = 6
    buf = io.BytesIO()
    img.save(buf, format=fmt, exif=exif, **({"quality": 95} if fmt == "JPEG" else {}))
    return buf.getvalue()


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_upload_with_exif_orientation_is_turned_upright(fmt):
    px, notes = prepare_upload(_sideways(fmt), (1, 40, 40))
    assert px[0, :, :18].mean() < 10 and px[0, :, 22:].mean() > 245  # right half white
    assert "turned upright as its EXIF orientation (6) says" in notes
