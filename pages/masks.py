"""Masks & squeeze: how a flow reshapes an image and which values each coupling may change."""

from __future__ import annotations

import numpy as np
import streamlit as st
import torch

from flowlib.core.ops import squeeze2d, unsqueeze2d
from flowlib.core.permutations import make_permutation
from flowlib.viz.figures import actnorm_figure, actnorm_scales, matrix_heatmap
from flowlib.viz.images import fit_factor, hstack_images, signed_factor, signed_number
from flowlib.viz.masks import (
    BLOCK_COLOURS,
    BLOCK_NAMES,
    channel_mixing,
    channel_tiles_image,
    coupling_x1_mask,
    coverage_image,
    mask_overlay,
    mask_tiles_image,
    model_step_specs,
    multiscale_stages,
    squeeze_overlay,
    squeeze_walk,
    squeezed_channel_tiles,
    trace_masks,
)
from pages.common import explore as ec
from pages.common import links, style, ui

ui.require_router()  # a bookmarked /page on a fresh server must still go through app.py

st.title("Masks & squeeze")
st.markdown(
    "A coupling layer keeps one part of its input fixed (**x1**, blue) and changes the other "
    "part (**x2**, orange) using a network that only looks at x1. *Squeeze* folds every 2×2 "
    "block of pixels into four channels, so that splitting by channel still mixes neighbours. "
    "Below: the squeeze, the two kinds of mask, and why a permutation must sit between couplings.")

loaded = ec.model_picker("masks_model")
if loaded is None:
    st.stop()
model = loaded.model
C, H, W = loaded.config.image_shape
L = loaded.config.levels

picked = ec.image_source(loaded, "masks", default_index=0)
if picked is None:
    st.stop()
pixels, where = picked

# ------------------------------------------------------------------------------ squeeze
st.header("1 · Squeeze: 2×2 blocks become channels")
legend = " ".join(
    f"<span style='background:rgb{tuple(int(v) for v in col)};color:white;padding:2px 8px;"
    f"border-radius:4px;font-weight:600'>{name} → channel {k}</span>"
    for k, (name, col) in enumerate(zip(BLOCK_NAMES, BLOCK_COLOURS)))
st.markdown(legend, unsafe_allow_html=True)

links.bind([links.integer("level", "masks_level", 1, 1, L), links.choice("parity", "masks_parity", 0, [0, 1]),
            links.choice("show", "masks_trace_mode", "Try a mask and a permutation",
                         {"try": "Try a mask and a permutation", "model": "The chosen model"}),
            links.choice("mask", "masks_try_mask", "channel", ["channel", "checkerboard"]),
            links.choice("perm", "masks_try_perm", "reverse", ["none", "reverse", "shuffle", "conv1x1"]),
            links.integer("K", "masks_try_k", 4, 1, 6),
            links.integer("step", "masks_param_step", 0, 0, len(model.flow_steps()) - 1)])
level = st.slider("Level: how many squeezes (the flow squeezes once per level, then sends half the channels out)",
                  1, L, 1, key="masks_level")
walk = squeeze_walk(pixels, L)
before = pixels if level == 1 else walk[level - 2]["tensor"][walk[level - 2]["kept"]]
after = walk[level - 1]
c_in, h_in, w_in = before.shape
col_a, col_b = st.columns([1, 2.4])
with col_a:
    if level == 1:
        style.picture(squeeze_overlay(pixels, scale=fit_factor(H, 280)), filename="squeeze-input",
                      key="masks_squeeze_in",
                      caption=f"{where}: shape [{C}, {H}, {W}]; each pixel tinted by its place in its 2×2 block")
    else:
        tiles = [squeeze_overlay(before[k], scale=fit_factor(h_in, 150)) for k in range(c_in)]
        style.picture(hstack_images(tiles, captions=[f"ch {k}" for k in range(c_in)]) if c_in <= 2
                      else channel_tiles_image(tiles, ncol=2), filename=f"squeeze-input-level{level}",
                      key="masks_squeeze_in",
                      caption=f"what goes on into level {level}: shape [{c_in}, {h_in}, {w_in}]")
with col_b:
    sq_tiles = squeezed_channel_tiles(before, scale=fit_factor(h_in // 2, 130 if c_in > 1 else 170))
    labels = [t[0] for t in sq_tiles]
    ncol = 4
    rows = [hstack_images([t[1] for t in sq_tiles[r:r + ncol]], captions=labels[r:r + ncol], font_size=16)
            for r in range(0, len(sq_tiles), ncol)]
    style.picture(np.concatenate([np.pad(r, ((0, 6), (0, max(x.shape[1] for x in rows) - r.shape[1]), (0, 0)),
                                         constant_values=255) for r in rows]),
                  filename=f"squeeze-output-level{level}", key="masks_squeeze_out",
                  caption=f"after squeeze: shape {after['shape']}. Channel 4c+2di+dj at (i, j) holds pixel "
                          f"(2i+di, 2j+dj) of channel c.")
x_t = torch.as_tensor(before, dtype=torch.float32)[None]
err = (unsqueeze2d(squeeze2d(x_t)) - x_t).abs().max().item()
st.caption(f"Round trip: unsqueeze(squeeze(x)) differs from x by {err:g}: the squeeze only "
           "moves numbers, so it is exactly invertible and its log-determinant is 0.")
with st.expander("Tensor shapes through the whole model"):
    stages = multiscale_stages((C, H, W), L)
    st.table([{"stage": s["stage"], "shape [C, H, W]": str(s["shape"]), "what happens": s["note"]}
              for s in stages])
    st.caption(f"The model's latents: {', '.join(f'z{k + 1} {list(s)}' for k, s in enumerate(model.latent_shapes))} "
               f"— together exactly {C * H * W} numbers, one per pixel.")

# ------------------------------------------------------------------------------ masks on the image
st.header("2 · Checkerboard vs channel masks")
sq1 = walk[0]["tensor"]
c1, h1, w1 = sq1.shape
col_a, col_b = st.columns([1, 2.4])
with col_a:
    parity = st.radio("Checkerboard parity", [0, 1], horizontal=True, key="masks_parity")
    cb = coupling_x1_mask("checkerboard", 1, H, W, parity)[0]
    style.picture(mask_overlay(pixels, cb, scale=fit_factor(H, 280)), filename=f"checkerboard-mask-parity{parity}",
                  key="masks_checkerboard",
                  caption="Checkerboard (RealNVP): x1 = blue pixels, x2 = orange. Every x2 pixel has "
                          "x1 neighbours on all four sides to predict it from.")
with col_b:
    ch = coupling_x1_mask("channel", c1, h1, w1)
    style.picture(mask_tiles_image(ch, sq1, scale=fit_factor(h1, 130),
                                   labels=[f"ch {k}: {'x1' if ch[k, 0, 0] else 'x2'}" for k in range(c1)],
                                   font_size=17),
                  filename="channel-mask", key="masks_channel",
                  caption=f"Channel mask (Glow) on the squeezed tensor [{c1}, {h1}, {w1}]: the first "
                          f"{c1 // 2} channels are x1, the other {c1 - c1 // 2} are x2. After a squeeze each "
                          "channel is a quarter of the pixels, so x1 still sees every neighbourhood.")

# ------------------------------------------------------------------------------ masks through steps
# A fragment: moving this section's controls (mask, permutation, steps K) reruns only this
# section, not the squeeze walk above or the trained parameters below (rerunning the whole
# page costs 0.43 s per move of the steps-K slider).
@st.fragment
def masks_through_steps() -> None:
    st.header("3 · Which values get transformed, step by step")
    st.markdown("One coupling leaves x1 untouched. The next coupling must condition on *different* "
                "values, or half the numbers would never change. Follow the colours through K steps.")
    mode = st.radio("Show", ["Try a mask and a permutation", "The chosen model"], horizontal=True,
                    key="masks_trace_mode")
    if mode == "The chosen model":
        stages = [(lv, "pre") for lv in range(L) if len(model.levels[lv].pre_steps)]
        stages += [(lv, "post") for lv in range(L)]
        names = {s: f"level {s[0] + 1}" + (" (checkerboard steps before the squeeze)" if s[1] == "pre" else "")
                 for s in stages}
        stage = st.selectbox("Steps of", stages, format_func=names.get, key="masks_trace_stage")
        shape, specs = model_step_specs(model, *stage)
        perm_kind = loaded.config.permutation
    else:
        cols = st.columns(3)
        mask_kind = cols[0].radio("Mask", ["channel", "checkerboard"], key="masks_try_mask")
        perm_kind = cols[1].radio("Between couplings", ["none", "reverse", "shuffle", "conv1x1"],
                                  format_func={"none": "nothing (identity)", "reverse": "reverse channels",
                                               "shuffle": "random shuffle", "conv1x1": "1×1 conv"}.get,
                                  index=1, key="masks_try_perm")
        k_steps = cols[2].slider("Steps K", 1, 6, 4, key="masks_try_k")
        shape = [c1, h1, w1]

        def try_specs(perm: str) -> list[dict]:
            gen = torch.Generator().manual_seed(0)
            out = []
            for k in range(k_steps):
                mix = None
                if perm != "none":
                    mix = channel_mixing(make_permutation(perm, c1, gen))
                out.append({"mix": mix, "mask": mask_kind, "parity": k % 2})
            return out

        specs = try_specs(perm_kind)
        compare = {name: trace_masks(shape, try_specs(key))[-1].covered_fraction
                   for key, name in (("none", "nothing"), ("reverse", "reverse"), ("shuffle", "shuffle"),
                                     ("conv1x1", "1×1 conv"))}
        st.markdown(f"**Values transformed after {k_steps} {mask_kind}-mask steps:** "
                    + " · ".join(f"{name} **{100 * v:.0f} %**" for name, v in compare.items()))

    trace = trace_masks(shape, specs)
    cs, hs, ws = shape
    vals = sq1 if (cs, hs, ws) == (c1, h1, w1) else None
    if vals is None and (cs, hs, ws) == (C, H, W):
        vals = pixels
    scale = fit_factor(hs, max(40, min(110, 900 // max(cs, 1))))
    for t in trace:
        if t.origin is not None:
            shown = None if vals is None else vals[t.origin]
            if t.mask_type == "channel":
                labels = [f"{'x1' if t.x1[p].any() else 'x2'} = ch {o}" for p, o in enumerate(t.origin)]
            else:
                labels = [f"ch {o}" for o in t.origin]
        else:
            shown = None
            labels = [f"mix of {int(t.influence[p].sum())} ch" for p in range(cs)]
        total = t.covered.size
        left, right = st.columns([2.2, 1])
        with left:
            mixing = {"none": "no permutation", "permutation": "after the permutation",
                      "conv": "after the 1×1 conv (every position is a mix of channels)"}[t.mixing]
            style.picture(mask_tiles_image(t.x1, shown, scale=scale, labels=labels, font_size=16),
                          filename=f"mask-step{t.step}", key=f"masks_trace_{t.step}",
                          caption=f"Step {t.step} ({mixing}): {t.mask_type} mask"
                                  + (f", parity {t.parity}" if t.mask_type == "checkerboard" else "")
                                  + ". Blue = x1 (kept), orange = x2 (transformed).")
        with right:
            style.picture(coverage_image(t.covered, scale=max(3, scale // 2),
                                         labels=[f"ch {o}" for o in range(cs)], font_size=16),
                          filename=f"mask-coverage-step{t.step}", key=f"masks_cover_{t.step}",
                          caption=f"Original values transformed so far: {t.covered_count:,} of {total:,} "
                                  f"({100 * t.covered_fraction:.0f} %)")
    final = trace[-1].covered_fraction
    if final < 1:
        st.warning(f"After {len(trace)} steps only {100 * final:.0f} % of the values have ever been "
                   "transformed: the rest pass through the whole level unchanged. That is why flows "
                   "put a reversal, a shuffle or a 1×1 convolution between couplings.")
    else:
        first_full = next(t.step for t in trace if t.covered_fraction == 1)
        st.success(f"Every value has been transformed after {first_full} step(s).")
    links.publish()  # a rerun of this section alone: the URL follows its controls too


masks_through_steps()

# ------------------------------------------------------------------------------ trained parameters
st.header("4 · What the trained layers learned")
steps = model.flow_steps()
step_names, counters = [], {}
for lv_, kind_, _ in steps:
    counters[(lv_, kind_)] = counters.get((lv_, kind_), 0) + 1
    step_names.append(f"level {lv_ + 1}, {'pre-squeeze ' if kind_ == 'pre' else ''}step {counters[(lv_, kind_)]}")
pick = st.selectbox("Flow step", range(len(steps)), format_func=lambda i: step_names[i], key="masks_param_step")
lv, kind, step = steps[pick]
perm = step.permutation
hw = {"pre": 0, "post": 1}[kind] + lv
sp_h, sp_w = H // 2 ** hw, W // 2 ** hw
with ec.compute():
    w_mat = perm.as_matrix().detach().double()
    factors = {k: v.detach() for k, v in perm.factors().items()}
    if perm.learned:
        logdet = float(perm.log_abs_det())
        st.markdown(f"**{perm.label}** ({perm.channels}×{perm.channels}): every output "
                    f"channel is a weighted mix of all input channels at the same pixel. "
                    f"log|det W| = {signed_number(logdet, 4)}, so this layer adds "
                    f"H·W·log|det W| = {sp_h}·{sp_w}·{signed_factor(logdet)} = "
                    f"**{signed_number(sp_h * sp_w * logdet, 2)} nats** "
                    f"to every image's log-det.")
        if "L" in factors:
            cols = st.columns(2) + st.columns(2)   # 2 × 2: a title fits its chart at 1280×720
            figs = [matrix_heatmap(w_mat, "W = P·L·(U + diag(s))", height=300),
                    matrix_heatmap(factors["P"], "P (fixed permutation)", height=300),
                    matrix_heatmap(factors["L"], "L (unit lower triangle)", height=300),
                    matrix_heatmap(factors["U"], "U + diag(s): s on the diagonal", height=300)]
            for col, fig in zip(cols, figs):
                with col:
                    style.chart(fig, key=f"masks_fig_{fig.layout.title.text}",
                                filename="lu-" + fig.layout.title.text.split(" ")[0])
            st.latex(r"W = P\,L\,(U + \mathrm{diag}(s)),\qquad \log|\det W| = \sum_i \log|s_i|")
            st.caption("The LU form makes the determinant the product of U's diagonal: a sum of "
                       "C numbers instead of an O(C³) determinant.")
        else:
            style.chart(matrix_heatmap(w_mat, "W"), key="masks_fig_w", filename="conv1x1-W")
    else:
        order = channel_mixing(perm).tolist()
        st.markdown(f"**Permutation: {perm.label}**. Output channel i takes input channel "
                    f"{order}[i]. A permutation only moves values, so its log|det| is 0.")
        style.chart(matrix_heatmap(w_mat.numpy(), "permutation matrix", zmid=None, colorscale="Greys",
                                   height=300), width="content", key="masks_fig_perm", filename="permutation")
    scales = actnorm_scales(model)
    if any(s.size for s in scales):
        if scales[lv].size:
            style.chart(actnorm_figure(scales[lv], lv), key="masks_fig_actnorm",
                        filename=f"actnorm-scales-level{lv + 1}")
            st.caption("ActNorm multiplies each channel by one learned number. It starts as 1/std of "
                       "that channel on the first batch, so training begins with unit-variance "
                       "activations; blue = shrinks, red = stretches.")
    else:
        st.caption("This model has no ActNorm layers.")

with ec.explain():
    st.markdown("**The coupling split.** The input is cut into x1 and x2. The output is")
    st.latex(r"y_1 = x_1,\qquad y_2 = x_2 \odot e^{s(x_1)} + t(x_1)")
    st.markdown("Because y1 copies x1 and each value of y2 depends on its own x2 value (plus x1), "
                "the Jacobian is triangular: its determinant is the product of the diagonal, so")
    st.latex(r"\log\left|\det \frac{\partial y}{\partial x}\right| = \sum_j s_j(x_1)")
    st.markdown(
        "and s, t can be any network — it never has to be inverted, since x1 is available on the "
        "way back.\n\n"
        "**Why squeeze.** A channel split of a raw grey image has nothing to split. After a "
        "squeeze each 2×2 block sits in four channels, so splitting channels keeps neighbouring "
        "pixels on both sides and the convolutions can act along channels.\n\n"
        "**Why a permutation or 1×1 conv between couplings.** x1 passes through unchanged. With "
        "the same split every time, the same half would never be transformed (set *nothing* "
        "above and watch the coverage stop at 50 %). Reversing or shuffling moves other values "
        "into x2; a learned 1×1 convolution goes further and mixes all channels.\n\n"
        "**Why ActNorm starts from the data and the last conv from zero.** ActNorm's scale and "
        "shift are set so the first batch comes out with mean 0 and variance 1 per channel; "
        "each coupling's last convolution starts at zero, so s = t = 0 and every step begins "
        "as the identity. A deep flow therefore starts well-behaved and learns from there.")
