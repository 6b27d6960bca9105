"""One image, step by step: the tensor after every operation of a trained flow, and back again."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
import streamlit as st
import torch

from flowlib.analysis.walk import coupling_parts, fresh_model, walk_backward, walk_forward
from flowlib.viz.figures import matrix_heatmap
from flowlib.viz.images import fit_factor, hstack_images, labelled_grid, latent_grid, signed_factor, to_rgb, upscale
from flowlib.viz.masks import squeezed_channel_tiles
from pages.common import canvas, links, style, ui
from pages.common import explore as ec

ui.require_router()  # a bookmarked /page on a fresh server must still go through app.py

st.title("One image, step by step")
st.markdown(
    "Follow **one image** through every operation of a trained flow — squeeze, ActNorm, "
    "permutation, coupling, split — and see the tensor after each one, what each costs or "
    "earns in log-determinant, and where each latent leaves. Then walk the same way "
    "**backwards**, from noise to an image.")

loaded = ec.model_picker("walk_model")
if loaded is None:
    st.stop()
model = loaded.model
C, H, W = loaded.config.image_shape
L = loaded.config.levels
D = C * H * W
PATH, MTIME = str(loaded.path), ec.file_version(loaded.path)

KIND_COLOURS = {"input": "#495057", "logit": "#868e96", "squeeze": "#1098ad", "actnorm": "#2b8a3e",
                "permutation": "#ae3ec9", "coupling": "#e8590c", "split": "#3b5bdb", "top": "#3b5bdb",
                "merge": "#3b5bdb", "output": "#495057"}
KIND_WORDS = {"input": "input", "logit": "logit", "squeeze": "squeeze", "actnorm": "ActNorm",
              "permutation": "1x1 conv", "coupling": "coupling", "split": "split", "top": "top",
              "merge": "merge", "output": "image"}


# ------------------------------------------------------------------------------ the image
def pick_image() -> tuple[np.ndarray, str] | None:
    images = ec.test_images(loaded.dataset) if loaded.dataset else "this model's dataset is not built in"
    options = ["Test image", "Draw by hand"] if not isinstance(images, str) else ["Draw by hand"]
    n = 1 if isinstance(images, str) else int(images.shape[0])
    links.bind(ec.image_params("walk", n, 7, ("test", "draw") if n > 1 else ("draw",)))
    source = st.radio("Image", options, horizontal=True, key="walk_source")
    if source == "Test image":
        idx = st.slider("Test image number", 0, n - 1, min(7, n - 1), key="walk_index")
        return images[idx].numpy(), f"{loaded.dataset} test image #{idx}"
    pixels = canvas.draw_image("walk", (C, H, W), invert=loaded.dataset == "faces",
                               keep_label="Keep it for “What the likelihood knows”")
    if pixels is None:
        st.info("Draw something in the black square: the walk below follows your drawing.",
                icon=":material/draw:")
        return None
    return pixels, "your drawing"


picked = pick_image()
if picked is None:
    st.stop()
pixels, where = picked


@st.cache_resource(show_spinner="Walking the image through the flow…", max_entries=32)
def forward(path: str, mtime: float, pixels_bytes: bytes, shape: tuple):
    """The forward walk, its backward twin and this image's bits/dim (cached per model and image)."""
    model, _, _ = ec.cached_model(path, mtime)
    pix = np.frombuffer(pixels_bytes, np.uint8).reshape(shape)
    with ec.compute():
        x = ec.to_model_space(model, pix)
        walk = walk_forward(model, x)
        back = walk_backward(model, walk.zs)
        terms = model.bits_per_dim_terms(torch.as_tensor(pix.copy())[None], noise=False)
    return {"x": x, "walk": walk, "back": back, "bpd": float(terms.total[0]),
            "err": float((back.ops[-1].after - x).abs().max()),
            "recon": model.to_uint8(back.ops[-1].after)[0].numpy()}


@st.cache_resource(show_spinner=False, max_entries=8)
def fresh(path: str, mtime: float):
    model, _, _ = ec.cached_model(path, mtime)
    return fresh_model(model.config)


res = forward(PATH, MTIME, pixels.tobytes(), pixels.shape)
walk, back = res["walk"], res["back"]
ops = walk.ops

up = fit_factor(H, 170)
col_a, col_b, col_c, col_d = st.columns([1, 1, 1.3, 1.3])
col_a.image(upscale(to_rgb(pixels), up), caption=f"input: {where}", output_format="PNG", width=W * up)
col_b.image(upscale(to_rgb(res["recon"]), up), caption="the backward walk's image",
            output_format="PNG", width=W * up)
col_c.metric("This image's bits/dim", f"{res['bpd']:.3f}", help=ui.BPD_HELP)
col_c.metric("Invertibility error  max |x_back − x|", f"{res['err']:.1e}",
             help="In model units (pixels span −0.5…0.5): the backward walk lands on the input "
                  "up to float rounding.")
col_d.metric("Σ log-det of all operations", f"{float(walk.logdet[0]):+,.1f} nats",
             help="log |det ∂f/∂x|: how much the whole flow stretches volume around this image.")
col_d.metric("Σ log p(z) of the latents", f"{float(walk.log_pz[0]):+,.1f} nats",
             help="The latents' log-density under their (learned) Gaussian priors.")


def head(op) -> str:
    """A frame's first caption line: where in the flow and what (one short line)."""
    if op.level < 0:
        return KIND_WORDS[op.kind]
    if op.kind in ("split", "top", "merge"):
        return f"z{op.level + 1} " + ("joins" if op.kind == "merge" else "leaves")
    if op.step is None:
        return f"L{op.level + 1} {KIND_WORDS[op.kind]}"
    return f"L{op.level + 1}.{op.step + 1}{'c' if op.stage == 'pre' else ''} {KIND_WORDS[op.kind]}"


def short(op) -> str:
    """A two-line caption for a small frame: the operation, then its log-det in nats."""
    ld = float(op.logdet[0])
    return f"{head(op)}\n{ld:+.1f}" if abs(ld) > 0 else f"{head(op)}\n0"


STEP_KINDS = ("actnorm", "permutation", "coupling")


def op_keys(ops) -> list[tuple]:
    """What :func:`by_step` needs of each op (plain values, so a cached walk can return them)."""
    return [(op.kind, op.level, op.stage, op.step, float(op.logdet[0]), short(op)) for op in ops]


def by_step(frames, keys) -> tuple[list, list[str]]:
    """One frame per flow step (ActNorm, 1×1 conv and coupling together, the frame after the
    last of them, its log-dets summed) and one per other operation: a third of the frames.
    ``keys``: :func:`op_keys` of the walk's ops."""
    out_frames, captions, k = [], [], 0
    while k < len(keys):
        kind, level, stage, step, ld, caption = keys[k]
        if kind in STEP_KINDS and step is not None:
            j, total = k, 0.0
            while j < len(keys) and keys[j][0] in STEP_KINDS and keys[j][1:4] == (level, stage, step):
                total += keys[j][4]
                j += 1
            out_frames.append(frames[j - 1])
            captions.append(f"L{level + 1}.{step + 1}{'c' if stage == 'pre' else ''} step\n{total:+.1f}")
            k = j
        else:
            out_frames.append(frames[k])
            captions.append(caption)
            k += 1
    return out_frames, captions


FRAME_PX = 112        # a frame's side on screen: 4× a 28-pixel digit
STRIP_PX = 780        # the widest strip that is not shrunk in the page's column at 1280×720


def filmstrip(frames, captions, scale: int) -> np.ndarray:
    ncol = max(4, min(10, STRIP_PX // (frames[0].shape[-1] * scale + 8)))
    rows = []
    for r in range(0, len(frames), ncol):
        pics = [upscale(to_rgb(f), scale) for f in frames[r:r + ncol]]
        rows.append(hstack_images(pics, gap=8, captions=captions[r:r + ncol], font_size=18))
    width = max(r.shape[1] for r in rows)
    rows = [np.pad(r, ((0, 10), (0, width - r.shape[1]), (0, 0)), constant_values=255) for r in rows]
    return np.concatenate(rows)


@st.cache_data(show_spinner=False, max_entries=32)
def state_frames(path: str, mtime: float, pixels_bytes: bytes, shape: tuple, which: str):
    """Image-shaped pictures of the whole state after each op (forward or backward walk)."""
    res = forward(path, mtime, pixels_bytes, shape)
    model, _, _ = ec.cached_model(path, mtime)
    return ec.walk_frames(model, res[which], res["walk"].zs)


# ------------------------------------------------------------------------------ 1 · the walk
st.header("1 · The whole walk at a glance")
st.markdown(
    "Each frame is the flow's **whole state** after one operation, laid out in the image's shape "
    "(the latents that already left stay in their place). Under each frame: the operation and "
    "its log-determinant in nats. Watch the digit dissolve into noise while the books stay "
    "exact: the log-dets add up to the total above.")
st.latex(r"\log p(x) \;=\; \underbrace{\sum_{\ell=1}^{L}\log p(z_\ell \mid z_{>\ell})}_{\text{latents leave at each split}}"
         r"\;+\;\underbrace{\sum_{k}\log\left|\det \frac{\partial h_k}{\partial h_{k-1}}\right|}_{\text{one term per operation}}")
links.bind([links.choice("frames", "walk_frames", "step", {"step": "one per flow step",
                                                            "op": "one per operation"}),
            links.integer("op", "walk_op", next((k for k, op in enumerate(ops) if op.kind == "coupling"), 1),
                          1, len(ops) - 1),
            links.choice("coupling", "walk_fresh_pick", next(k for k, o in enumerate(ops) if o.kind == "coupling"),
                         [k for k, o in enumerate(ops) if o.kind == "coupling"]),
            links.choice("back", "walk_back_mode", "this image's latents",
                         {"latents": "this image's latents", "noise": "fresh noise"}),
            links.number("T", "walk_temp", 0.7, 0.0, 1.0, step=0.05),
            links.integer("seed", "walk_seed", 0, 0, 1_000_000)])
frames = state_frames(PATH, MTIME, pixels.tobytes(), pixels.shape, "walk")
scale = fit_factor(H, FRAME_PX)
per = st.radio("Frames", ["one per flow step", "one per operation"], horizontal=True, key="walk_frames",
               help="A flow step is ActNorm → 1×1 conv → coupling; one frame per step shows the state "
                    "after its coupling, with the three log-dets added up.")
shown, captions = (by_step(frames, op_keys(ops)) if per == "one per flow step"
                   else (frames, [short(op) for op in ops]))
strip = filmstrip(shown, captions, scale=scale)
style.picture(strip, width=strip.shape[1], filename=f"walk-forward-{'steps' if per == 'one per flow step' else 'ops'}",
              key="walk_strip",
              caption="Forward: image → latents. L1.2 = level 1, step 2; under it the log-det in nats. "
                      "Grey = each frame standardised on its own (median grey, ±3 robust spreads to "
                      "black/white)"
                      + ("; L1.2c = a checkerboard step before the squeeze." if loaded.config.mask == "realnvp"
                         else "."))

lds = [float(op.logdet[0]) for op in ops]
totals = [float(op.total[0]) for op in ops]
fig = go.Figure()
for kind in dict.fromkeys(op.kind for op in ops):   # one bar trace per kind: the legend names the colours
    idx = [k for k, op in enumerate(ops) if op.kind == kind]
    fig.add_bar(x=idx, y=[lds[k] for k in idx], name=KIND_WORDS[kind], marker_color=KIND_COLOURS[kind],
                hovertext=[ops[k].name for k in idx], legendgroup="kinds",
                hovertemplate="%{hovertext}<br>%{y:+.2f} nats<extra></extra>")
fig.add_scatter(x=list(range(len(ops))), y=totals, name="running total (right axis)", mode="lines+markers",
                line=dict(color="#212529", width=3, shape="hv"), hovertext=[op.name for op in ops],
                hovertemplate="%{hovertext}<br>total %{y:+.1f} nats<extra></extra>", yaxis="y2")
for op_index, op in enumerate(ops):
    if op.kind in ("split", "top"):
        fig.add_vline(x=op_index, line=dict(color="#3b5bdb", dash="dot", width=2))
        fig.add_annotation(x=op_index, y=1.0, yref="paper", text=f"z{op.level + 1} leaves",
                           showarrow=False, font=dict(size=16, color="#3b5bdb"), yanchor="bottom")
ui.base_layout(fig, x_title="operation number (bar colour = kind of operation, see the legend)",
               y_title="log-det (nats)", uirevision="walk", height=430)
fig.update_layout(barmode="overlay", hovermode="closest", margin=dict(t=70),
                  legend=dict(orientation="h", yanchor="bottom", y=1.08, x=0, title=dict(text="bars: ")))
fig.update_layout(yaxis2=dict(overlaying="y", side="right", title=dict(text="running total (nats)", font=dict(size=17)),
                              tickfont=dict(size=15), showgrid=False))
rest = [v for op, v in zip(ops, lds) if op.kind != "logit"]
if len(rest) < len(lds) and rest:
    # The logit's term is ~50x the others: clip the bars' axis so the steps stay readable.
    lo, hi = min(rest + [0.0]), max(rest + [0.0])
    pad = 0.15 * (hi - lo or 1.0)
    fig.update_layout(yaxis=dict(range=[lo - pad, hi + pad]))
    k = next(i for i, op in enumerate(ops) if op.kind == "logit")
    fig.add_annotation(x=k, y=hi + pad, text=f"logit {lds[k]:+,.0f} ↑", showarrow=False,
                       yanchor="top", xanchor="left", font=dict(size=15, color="#495057"))
style.chart(fig, key="walk_logdet_chart", filename="logdet-per-operation")

rows = []
for k, op in enumerate(ops):
    rows.append({"#": k, "operation": op.name, "shape out [C, H, W]": str(list(op.shape)),
                 "log-det (nats)": round(float(op.logdet[0]), 2),
                 "running total (nats)": round(float(op.total[0]), 2),
                 "latent leaving": (f"z{op.level + 1} {list(op.latent.shape[1:])}" if op.latent is not None else ""),
                 "its log p(z) (nats)": (f"{float(op.log_pz[0]):+.2f}" if op.log_pz is not None else "")})
st.dataframe(rows, hide_index=True, width="stretch", height=min(36 * (len(rows) + 1) + 4, 460))
with ec.explain():
    st.markdown(
        "**The state.** Between levels the flow holds one tensor that goes on, plus the latents "
        "that have already left. Unsqueezing them back into the image's layout gives one picture "
        "per operation, so you can see where in the image each number lives.\n\n"
        "**The log-determinant** of an operation measures how much it stretches (positive) or "
        "squeezes (negative) a small volume around this image. Squeeze, split and fixed "
        "permutations only move numbers: 0. ActNorm, the learned 1×1 convolutions and the "
        "couplings stretch, and their terms are the bars. "
        + ("This model's first operation is RealNVP's **logit**: it stretches near-black and "
           "near-white pixels enormously, so its bar dwarfs the rest. " if loaded.config.input_transform == "logit" else "")
        + "\n\n**Bits/dim** adds the latents' log p(z) to the running total and converts nats "
          "to bits per pixel value: bits/dim = −(log p(x) − D·log 256)/(D·ln 2) with D = "
          f"{D} (plus the dequantisation term for a model with learned noise).")


# ------------------------------------------------------------------------------ 2 · tiles
st.header("2 · Every operation as channel tiles")
st.markdown(
    "The same walk, now showing the tensor the way the layers see it: **one tile per channel**, "
    "with its shape. After a squeeze the image becomes four half-size copies (one per corner of "
    "each 2×2 block); every later operation acts *along these channels*, at every position alike.")


def tiles_of(t: torch.Tensor, target: int, limit: float | None = None) -> tuple[np.ndarray, float]:
    arr = t[0].float().numpy()
    if limit is None:
        limit = float(np.quantile(np.abs(arr), 0.99)) or 1.0
    return latent_grid(arr, limit=limit, ncol=min(arr.shape[0], 8), target=target)


@st.cache_data(show_spinner=False, max_entries=32)
def level_tiles(path: str, mtime: float, pixels_bytes: bytes, shape: tuple, which: str, level: int):
    res = forward(path, mtime, pixels_bytes, shape)
    rows, labels = [], []
    for op in res[which].ops:
        if op.level != level and not (level == 0 and op.level < 0):
            continue
        shown = op.latent if op.kind in ("split", "top") else op.after
        img, lim = tiles_of(shown, target=56 if shown.shape[-1] > 10 else 70)
        ld = float(op.logdet[0])
        name = op.name.split(" · ", 1)[-1] if op.level >= 0 else op.name.split(" (")[0]
        if op.kind in ("split", "top", "merge"):
            name = f"z{op.level + 1} " + ("leaves" if op.kind != "merge" else "joins")
        label = f"{name}\n{list(shown.shape[1:])}  log-det {ld:+.1f}"
        rows.append(_pad_row(img, 64))
        labels.append(label)
    return labelled_grid(rows, labels, label_width=380, font_size=20)


def _pad_row(img: np.ndarray, min_height: int) -> np.ndarray:
    """White space above and below a row of tiles, so its (two-line) label fits beside it."""
    extra = max(8, min_height - img.shape[0])
    return np.pad(img, ((extra // 2, extra - extra // 2), (0, 0), (0, 0)), constant_values=255)


tabs = st.tabs([f"Level {k + 1}" for k in range(L)])
for k, tab in enumerate(tabs):
    with tab:
        grid = level_tiles(PATH, MTIME, pixels.tobytes(), pixels.shape, "walk", k)
        style.picture(grid, caption="Colour: blue negative, white 0, red positive; each row scaled to its "
                                    "own ±limit (99th percentile of |value|). A split row shows the latent "
                                    "that leaves.", width=grid.shape[1], filename=f"walk-tiles-level{k + 1}",
                      key=f"walk_tiles_{k}")
with ec.explain():
    st.markdown(
        "A row is one operation's output, one tile per channel. **Squeeze** turns [C, H, W] into "
        "[4C, H/2, W/2]: no number changes, they only move, so its log-det is 0. **ActNorm** scales "
        "and shifts each channel (a tile gets uniformly lighter or darker). The **1×1 convolution** "
        "replaces each channel by a mix of all channels at the same position, so the tiles blend. "
        "The **coupling** leaves the first half of the channels untouched and rescales and shifts "
        "the second half by amounts computed from the first. At a **split**, half the channels "
        "leave as a latent and only the rest is squeezed again.")


# ------------------------------------------------------------------------------ 3 · one op
st.header("3 · One operation up close")
st.markdown("Pick an operation to see what went in, what came out, and where its log-determinant comes from.")
default = next((k for k, op in enumerate(ops) if op.kind == "coupling"), 1)
choice = st.selectbox("Operation", list(range(1, len(ops))), index=default - 1,
                      format_func=lambda k: f"#{k} · {ops[k].name}", key="walk_op")
op = ops[choice]
target = 80 if op.after.shape[-1] > 10 else 110
left, right = st.columns(2)
lim = None
if op.before is not None and op.kind not in ("logit",):
    before_img, lim = tiles_of(op.before, target)
    style.picture(before_img, caption=f"in: {list(op.before.shape[1:])} (±{lim:.2g})", width=before_img.shape[1],
                  filename=f"op{choice}-in", key="walk_op_in", container=left)
shown = op.latent if op.kind in ("split", "top") else op.after
after_img, lim_after = tiles_of(shown, target, lim if op.kind in ("permutation", "coupling", "actnorm") else None)
style.picture(after_img, caption=(f"the latent z{op.level + 1} that leaves: {list(shown.shape[1:])}"
                                  if op.kind in ("split", "top") else f"out: {list(shown.shape[1:])}")
              + f" (±{lim_after:.2g})", width=after_img.shape[1], filename=f"op{choice}-out", key="walk_op_out",
              container=right)
ld = float(op.logdet[0])
h_, w_ = op.after.shape[-2:]
layer = op.layer
if op.kind == "squeeze":
    st.latex(r"[C, H, W] \to [4C, \tfrac H2, \tfrac W2],\qquad \log|\det J| = 0")
    st.markdown("Only moves numbers: channel 4c + 2di + dj at (i, j) holds pixel (2i+di, 2j+dj) of channel c.")
elif op.kind == "actnorm":
    sum_log_s = float(layer.log_scale.detach().sum())
    st.latex(r"y = (x + b)\odot e^{\log s},\qquad \log|\det J| = H\cdot W\cdot\sum_c \log s_c"
             rf" = {h_}\cdot{w_}\cdot{signed_factor(sum_log_s)} = {ld:+.2f}\ \text{{nats}}")
    st.markdown("Per-channel scales: " + ", ".join(f"{v:.2f}" for v in torch.exp(layer.log_scale.detach()).flatten().tolist()))
elif op.kind == "permutation":
    log_det_w = float(layer.log_abs_det().detach())
    st.latex(r"y_{:,i,j} = W\,x_{:,i,j},\qquad \log|\det J| = H\cdot W\cdot\log|\det W|"
             rf" = {h_}\cdot{w_}\cdot{signed_factor(log_det_w)} = {ld:+.2f}\ \text{{nats}}")
    w_fig = matrix_heatmap(layer.as_matrix().detach(), f"W ({layer.label}), {layer.channels}×{layer.channels}",
                               height=320)
    style.chart(w_fig, key="walk_op_w", filename=f"op{choice}-W")
elif op.kind == "coupling":
    parts = coupling_parts(layer, op.before)
    st.latex(r"y_1 = x_1,\qquad y_2 = x_2\odot e^{s(x_1)} + t(x_1),\qquad \log|\det J| = \sum s"
             rf" = {ld:+.2f}\ \text{{nats}}")
    s_img, s_lim = tiles_of(parts["s"], target)
    t_img, t_lim = tiles_of(parts["t"], target)
    c1, c2 = st.columns(2)
    style.picture(s_img, caption=f"s(x1), the log-scales (±{s_lim:.2g}): red stretches, blue shrinks",
                  width=s_img.shape[1], filename=f"op{choice}-s", key="walk_op_s", container=c1)
    style.picture(t_img, caption=f"t(x1), the shifts (±{t_lim:.2g})", width=t_img.shape[1],
                  filename=f"op{choice}-t", key="walk_op_t", container=c2)
elif op.kind == "logit":
    st.latex(r"y = \operatorname{logit}\big(\alpha + (1-2\alpha)(x + \tfrac12)\big),\qquad"
             r"\log|\det J| = \sum_j \log\frac{1-2\alpha}{p_j(1-p_j)}" + rf" = {ld:+.1f}\ \text{{nats}}")
elif op.kind in ("split", "top"):
    st.latex(r"\log p(z_\ell\mid h) = \sum_j \log\mathcal N\big(z_j;\ \mu_j(h),\ \sigma_j(h)^2\big)"
             rf" = {float(op.log_pz[0]):+.1f}\ \text{{nats}}")
    st.markdown(f"The latent **z{op.level + 1}** {list(op.latent.shape[1:])} leaves the flow here"
                + (f"; the other {op.after.shape[1]} channels go on to level {op.level + 2}." if op.kind == "split"
                   else ": nothing is left to transform.") + " Its log-det is 0 (nothing is rescaled).")
with ec.explain():
    st.markdown(
        "Left: the tensor going in; right: coming out, one tile per channel. For ActNorm, the "
        "1×1 convolution and the coupling both sides share one colour scale, so you can see what "
        "changed. The formula shows where this operation's log-determinant, the number in the "
        "table above, comes from for this very image.")


# ------------------------------------------------------------------------------ 4 · squeeze + channels
st.header("4 · Convolutions act along channels after squeezing")
st.markdown(
    "A 1×1 convolution mixes the channels at one position. Right after a squeeze the four "
    "channels at position (i, j) are the four pixels of one 2×2 block, so a 1×1 convolution "
    "mixes **neighbouring pixels** — spatial mixing done as channel mixing.")
tiles = squeezed_channel_tiles(pixels, scale=fit_factor(H // 2, 120))
first_mix = next(op for op in ops if op.kind == "permutation" and op.stage != "pre")
c1, c2 = st.columns([1.4, 1])
sq_img = hstack_images([t[1] for t in tiles[:8]], captions=[t[0] for t in tiles[:8]], font_size=16)
style.picture(sq_img, width=sq_img.shape[1], filename="first-squeeze", key="walk_squeeze", container=c1,
              caption=f"The image after the first squeeze: "
                      f"{list(ops[next(k for k, o in enumerate(ops) if o.kind == 'squeeze')].shape)}, "
                      "each channel tinted by its corner of the 2×2 block.")
with c2:
    w_fig = matrix_heatmap(first_mix.layer.as_matrix().detach(),
                               f"W of {first_mix.name.split(' · ', 1)[1]}", height=320)
    style.chart(w_fig, key="walk_first_w", filename="first-1x1-conv-W")
st.latex(r"y_{c,i,j} = \sum_{c'} W_{c c'}\, x_{c',i,j}"
         r"\quad\Longrightarrow\quad\text{after a squeeze: mixes pixels } (2i{+}d_i,\,2j{+}d_j),\ d_i,d_j\in\{0,1\}")
with ec.explain():
    st.markdown(
        "Row c of W says how much of each input channel goes into output channel c. Because the "
        "squeeze put the four pixels of every 2×2 block into the four channels, one row of W is a "
        "recipe for combining four neighbouring pixels — the same recipe at every position. The "
        "coupling's 3×3 convolutions on the squeezed grid then see 6×6 original pixels at once.")


# ------------------------------------------------------------------------------ 5 · fresh step
st.header("5 · Every step starts as the identity")
st.markdown(
    "Training starts from a flow that does (almost) nothing: the last convolution of every "
    "coupling network is **initialised to zero**, so s = 0 and t = 0 and a fresh coupling "
    "returns its input unchanged. Below, the same input goes through the trained coupling and "
    "through a fresh one with the same configuration.")
st.latex(r"s(x_1) = 0,\ t(x_1) = 0 \;\Longrightarrow\; y_2 = x_2\odot e^{0} + 0 = x_2,\qquad \log|\det J| = 0")
couplings = [k for k, o in enumerate(ops) if o.kind == "coupling"]
pick = st.selectbox("Coupling", couplings, format_func=lambda k: ops[k].name, key="walk_fresh_pick")
cop = ops[pick]
fresh_net = fresh(PATH, MTIME)
fresh_level = fresh_net.levels[cop.level]
fresh_coupling = (fresh_level.pre_steps if cop.stage == "pre" else fresh_level.steps)[cop.step].coupling
with ec.compute():
    y_fresh, ld_fresh = fresh_coupling(cop.before)
    fresh_parts = coupling_parts(fresh_coupling, cop.before)
trained_diff = cop.after - cop.before
fresh_diff = y_fresh - cop.before
t_in = max(40, min(100, 480 // min(cop.after.shape[1], 8) - 6))  # fits the 2/3 column
_, x_lim = tiles_of(cop.before, t_in)
d_lim = float(trained_diff.abs().max()) or 1.0
rows_img, rows_lab = [], []
for label, t, lim_ in (("input x", cop.before, x_lim),
                       ("trained: output y", cop.after, x_lim),
                       ("trained: y - x", trained_diff, d_lim),
                       ("fresh: output y", y_fresh, x_lim),
                       ("fresh: y - x", fresh_diff, d_lim)):
    img, _ = tiles_of(t, t_in, lim_)
    rows_img.append(np.pad(img, ((4, 4), (0, 0), (0, 0)), constant_values=255))
    rows_lab.append(label)
c1, c2 = st.columns([2, 1])
fresh_grid = labelled_grid(rows_img, rows_lab, label_width=230, font_size=20)
style.picture(fresh_grid, width=fresh_grid.shape[1], filename="trained-vs-fresh-coupling", key="walk_fresh",
              container=c1,
              caption=f"{cop.name}: {list(cop.shape)}. x and y share one colour scale (±{x_lim:.2g}); "
                      f"both difference rows share another (±{d_lim:.2g}).")
c2.metric("Trained coupling: max |y − x|", f"{float(trained_diff.abs().max()):.3g}")
c2.metric("Trained coupling: log-det", f"{float(cop.logdet[0]):+.2f} nats")
c2.metric("Fresh coupling: max |y − x|", f"{float(fresh_diff.abs().max()):.3g}")
c2.metric("Fresh coupling: log-det", f"{float(ld_fresh[0]):+.2f} nats")
if torch.equal(y_fresh, cop.before):
    c2.success("The fresh coupling's output equals its input, bit for bit.", icon=":material/check_circle:")
with ec.explain():
    st.markdown(
        "The trained coupling changes only the second half of the channels (the first half is "
        "x1, passed through so the step can be undone), which is why the trained y − x row is "
        "white on its first channels. The fresh coupling's network ends in a zero convolution "
        f"(max |s| = {float(fresh_parts['s'].abs().max()):g}, max |t| = {float(fresh_parts['t'].abs().max()):g}), "
        "so it changes nothing and costs 0 nats: the whole flow starts near the identity and "
        "training moves each step away from it only as far as the data asks. A fresh ActNorm is "
        "the identity too until it sees its first batch; a fresh 1×1 convolution is a random "
        "rotation (|det W| = 1, log-det 0), which mixes channels but never stretches volume.")


# ------------------------------------------------------------------------------ 6 · backwards
st.header("6 · Backwards: from noise to image")
st.markdown(
    "Every operation has an exact inverse, applied in reverse order: start from the top latent, "
    "let the latents join back in at each level, undo every coupling, 1×1 convolution and ActNorm. "
    "Start from this image's latents to get it back; start from fresh noise to draw a new image.")
st.latex(r"x = f_1^{-1}\circ f_2^{-1}\circ\cdots\circ f_K^{-1}(z),\qquad"
         r"\log|\det J_{f^{-1}}(z)| = -\log|\det J_f(x)|")
mode = st.radio("Start from", ["this image's latents", "fresh noise"], horizontal=True, key="walk_back_mode")
if mode == "fresh noise":
    c1, c2 = st.columns([3, 1])
    temp = c1.slider("Temperature T (z = μ + T·σ·ε)", 0.0, 1.0, 0.7, 0.05, key="walk_temp")
    if c2.button("New noise", key="walk_reseed"):
        st.session_state["walk_seed"] = int(st.session_state.get("walk_seed", 0)) + 1
    seed = int(st.session_state.get("walk_seed", 0))


@st.cache_data(show_spinner=False, max_entries=32)
def noise_walk(path: str, mtime: float, temp: float, seed: int):
    model, _, _ = ec.cached_model(path, mtime)
    with ec.compute():
        eps = model.sample_eps(1, torch.Generator().manual_seed(500 + seed))
        w = walk_backward(model, [None] * len(model.levels), temperature=temp, eps=eps)
        frames = ec.walk_frames(model, w, w.zs)
        total = float(w.logdet[0])
    return frames, op_keys(w.ops), total


if mode == "fresh noise":
    b_frames, b_keys, b_total = noise_walk(PATH, MTIME, float(temp), seed)
    caption = (f"Backward from fresh noise at T = {temp:.2f}: each level's latent is drawn from its "
               "prior given the coarser ones, then the operations are undone in reverse order.")
else:
    b_frames = state_frames(PATH, MTIME, pixels.tobytes(), pixels.shape, "back")
    b_keys = op_keys(back.ops)
    b_total = float(back.logdet[0])
    caption = (f"Backward from this image's latents: the last frame is the image again "
               f"(max error {res['err']:.1e}). Each operation's inverse has minus its log-det.")
b_frames, b_caps = (by_step(b_frames, b_keys) if per == "one per flow step"
                    else (b_frames, [k[-1] for k in b_keys]))
strip = filmstrip(b_frames, b_caps, scale=scale)
style.picture(strip, caption=caption, width=strip.shape[1], key="walk_back_strip",
              filename="walk-backward-" + ("noise" if mode == "fresh noise" else "latents"))
st.metric("Σ log-det of the inverse operations", f"{b_total:+,.1f} nats",
          help="For this image's latents it is exactly minus the forward total.")
if mode != "fresh noise":
    with st.expander("The backward walk as channel tiles"):
        b_tabs = st.tabs([f"Level {k + 1}" for k in reversed(range(L))])
        for tab, k in zip(b_tabs, reversed(range(L))):
            with tab:
                grid = level_tiles(PATH, MTIME, pixels.tobytes(), pixels.shape, "back", k)
                style.picture(grid, width=grid.shape[1], filename=f"walk-back-tiles-level{k + 1}",
                              key=f"walk_back_tiles_{k}")
with ec.explain():
    st.markdown(
        "Read each frame as the forward filmstrip played backwards. A **merge** is where a latent "
        "that left at a split comes back; with fresh noise it is drawn from the prior the model "
        "predicts from the coarser levels, μ + T·σ·ε. Then each inverse operation is applied: "
        "the coupling's inverse x2 = (y2 − t(y1))·e^(−s(y1)) needs only y1, which the coupling "
        "left untouched — that is why a coupling is always invertible, whatever its network.")
