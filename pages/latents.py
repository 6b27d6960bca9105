"""Latents: what each scale of a multi-scale flow stores, and where an image's bits go."""

from __future__ import annotations

import numpy as np
import streamlit as st
import torch

from flowlib.analysis.priors import prior_view
from flowlib.core.checkpoint import class_names
from flowlib.viz.figures import bpd_budget_figure, prior_bits_figure
from flowlib.viz.images import fit_factor, hstack_images, image_grid, labelled_grid, latent_grid, to_rgb, upscale
from pages.common import explore as ec
from pages.common import links, style, ui
from pages.common.conditional import class_word

ui.require_router()  # a bookmarked /page on a fresh server must still go through app.py

st.title("Latents")
st.markdown(
    "The flow turns an image into latents **at several scales**: after each level half of the "
    "channels leave early as that level's latent z (fine detail first), and the rest go on to be "
    "squeezed further (coarse structure last). Each latent is scored by a Gaussian whose mean "
    "and spread are *predicted from the coarser latents* — the learned split prior.")

loaded = ec.model_picker("latents_model")
if loaded is None:
    st.stop()
model = loaded.model
C, H, W = loaded.config.image_shape
L = loaded.config.levels
picked = ec.image_source(loaded, "latents", default_index=3)
if picked is None:
    st.stop()
pixels, where = picked


@st.cache_data(show_spinner=False, max_entries=64)
def encode_image(path: str, mtime: float, pixels_bytes: bytes, shape: tuple):
    """Latents (raw, standardised), reconstruction error and the bits/dim terms of one image."""
    model, _, _ = ec.cached_model(path, mtime)
    pix = np.frombuffer(pixels_bytes, np.uint8).reshape(shape)
    with ec.compute():
        x = ec.to_model_space(model, pix)
        out = model.encode(x)
        back = model.decode(out.zs)
        terms = model.bits_per_dim_terms(torch.as_tensor(pix.copy())[None], noise=False)
    return {
        "zs": [z[0].numpy() for z in out.zs],
        "eps": [e[0].numpy() for e in out.eps],
        "err": float((back - x).abs().max()),
        "recon": model.to_uint8(back)[0].numpy(),
        "prior": terms.prior_levels[0].tolist(),
        "logdet": float(terms.logdet[0]),
        "quant": float(terms.quantisation),
        "dequant": float(terms.dequant[0]) if model.dequantizer is not None else None,
        "total": float(terms.total[0]),
    }


enc = encode_image(str(loaded.path), ec.file_version(loaded.path), pixels.tobytes(), pixels.shape)
up = fit_factor(H, 200)

# ------------------------------------------------------------------------------ image + round trip
col_a, col_b, col_c = st.columns([1, 1, 2])
# Both at the same explicit width: an upload and its reconstruction must be compared at one size.
col_a.image(upscale(to_rgb(pixels), up), caption=f"input: {where}", output_format="PNG",
            width=W * up)
col_b.image(upscale(to_rgb(enc["recon"]), up), caption="decode(encode(x))", output_format="PNG",
            width=W * up)
col_c.metric("Invertibility error  max |decode(encode(x)) − x|", f"{enc['err']:.1e}",
             help="In model units (pixels span −0.5…0.5). Only float rounding: the flow is exactly invertible.")
col_c.metric("This image's bits/dim", f"{enc['total']:.3f}",
             help="−log2 p(x) per pixel value: how many bits the model needs to store this image.")

note = ec.costly_image_note(enc["total"], loaded)
if note:
    st.info(note, icon=":material/help:")

# ------------------------------------------------------------------------------ per-level latents
st.header("1 · One latent per level")
st.caption("Finest first. Colour: blue negative, white 0, red positive. Left: the raw latent z; "
           "right: ẑ = (z − μ)/σ, standardised by the prior the model predicts for it from the "
           "coarser levels (clipped at ±3). Where the prior predicts well, ẑ looks like plain noise.")
for k in range(L):
    z, e = enc["zs"][k], enc["eps"][k]
    c, h, w = z.shape
    ncol = min(c, 8)
    target = 90 if c > 4 else 170
    raw_img, lim = latent_grid(z, limit=None, ncol=ncol, target=target)
    std_img, _ = latent_grid(e, limit=3.0, ncol=ncol, target=target)
    role = "finest: left after level 1" if k == 0 else ("coarsest: what is left at the top" if k == L - 1
                                                         else f"left after level {k + 1}")
    st.subheader(f"z{k + 1}  [{c}, {h}, {w}]  — {role}")
    left, right = st.columns(2)
    style.picture(raw_img, caption=f"raw z{k + 1} (colour scale ±{lim:.2f}); std {z.std():.2f}",
                  filename=f"latent-z{k + 1}-raw", key=f"latents_raw_{k}", container=left)
    style.picture(std_img, caption=f"ẑ{k + 1} = (z − μ)/σ (±3); std {e.std():.2f}",
                  filename=f"latent-z{k + 1}-standardised", key=f"latents_std_{k}", container=right)

# ------------------------------------------------------------------------------ bits budget
st.header("2 · The likelihood budget")
DEQUANT_TERM = (r"\;+\;\underbrace{\frac{\log q(u\mid x)}{D\ln 2}}_{\text{dequantisation}}"
                if enc["dequant"] is not None else "")
st.latex(r"\text{bits/dim} = \sum_{\ell}\underbrace{\frac{-\log p(z_\ell\mid z_{>\ell})}{D\ln 2}}_{\text{prior of level }\ell}"
         r"\;\underbrace{-\;\frac{\sum\log|\det J|}{D\ln 2}}_{\text{log-det}}" + DEQUANT_TERM
         + r"\;+\;\underbrace{n_\text{bits}}_{\text{quantisation}}")
left, right = st.columns([3, 2])
with left:
    fig = bpd_budget_figure(enc["prior"], enc["logdet"], enc["quant"], enc["total"],
                                dequant=enc["dequant"])
    style.chart(fig, key="latents_budget", filename="bits-per-dim-budget")
with right:
    st.markdown(
        f"D = {C}·{H}·{W} = {C * H * W} values.\n\n"
        "**Blue bars:** what each level's latent costs under its prior.\n\n"
        "**Orange bar (log-det):** usually **negative**. The flow stretches the narrow cloud "
        "of real images into a roomy Gaussian, and that stretching is credit."
        + (" This model's first layer is RealNVP's logit, which stretches near-black and "
           "near-white values enormously: most of this large credit is that stretch. Only "
           "the sum of the bars matters.\n\n"
           if loaded.config.input_transform == "logit" else "\n\n")
        + f"**Grey bar:** adds back the {loaded.config.n_bits} bits that turn a density into the "
        "probability of a whole pixel bin.\n\n"
        + ("**Green bar (dequantisation):** this model learned the noise inside each pixel's "
           "bin (Flow++) and packs it tightly where the flow puts its density; the bar, "
           "log q(u | x) / (D ln 2), pays for that, so the total stays an honest upper bound "
           "(noise at its median here).\n\n" if enc["dequant"] is not None else "")
        + "**Black bar:** the sum — this image's bits/dim.")

# ------------------------------------------------------------------------------ 3 · the learned prior, drawn
st.header("3 · The learned prior: μ and σ for this image")
st.markdown(
    "The half that leaves at a split is not charged as plain noise. A small convolution reads "
    "the half that **stays** and predicts, for every value that leaves, a mean **μ** and a "
    "scale **σ**. Below: this image's latent z at one level, the μ and σ the model predicts "
    "for it, and what is left once the prediction is taken out. Slide the prior from "
    "**N(0, I)** to **learned** and watch the bits.")


@st.cache_data(show_spinner=False, max_entries=64)
def priors_of(path: str, mtime: float, pixels_bytes: bytes, shape: tuple):
    model, _, _ = ec.cached_model(path, mtime)
    pix = np.frombuffer(pixels_bytes, np.uint8).reshape(shape)
    with ec.compute():
        x, log_q = model.dequantize(torch.as_tensor(pix.copy())[None], noise=False)
        dequant = 0.0 if log_q is None else float(log_q[0]) / (int(np.prod(shape)) * np.log(2))
        return prior_view(model, x, dequant_bits=dequant)


view = priors_of(str(loaded.path), ec.file_version(loaded.path), pixels.tobytes(), pixels.shape)
if view.label is not None:
    names = class_names(loaded.model, loaded.ckpt)
    st.caption(f"This model is class-conditional: its priors below are given the {class_word(loaded)} it "
               f"finds most likely for this image, **{names[view.label] if view.label < len(names) else view.label}**.")
STRENGTHS = (0.0, 0.25, 0.5, 0.75, 1.0)


def strength_words(s: float) -> str:
    return "standard N(0, I)" if s == 0 else ("learned μ, σ" if s == 1 else f"{s:.0%} of the way to learned")


links.bind([links.choice("level", "latents_prior_level", 0, list(range(L))),
            links.choice("prior", "latents_prior", 1.0, {"standard": 0.0, "0.25": 0.25, "0.5": 0.5,
                                                         "0.75": 0.75, "learned": 1.0})])
cols = st.columns([1, 2])
level = cols[0].radio("Level", list(range(L)), horizontal=True, key="latents_prior_level",
                      format_func=lambda k: f"z{k + 1}")
strength = cols[1].select_slider(
    "Prior (move by hand)", options=list(STRENGTHS), value=1.0, key="latents_prior",
    format_func=strength_words,
    help="μ_s = s·μ and log σ_s = s·log σ: at s = 0 every latent is scored by N(0, 1), at s = 1 "
         "by the Gaussian the model learned. Only the prior terms change; the flow's "
         "log-determinant stays the same.")
lp = view.levels[level]
ncol = min(lp.z.shape[0], 4)
target = 110 if lp.z.shape[0] > 2 else 160
z_lim = float(np.abs(lp.z).max()) or 1.0
panels = [latent_grid(lp.z, limit=z_lim, ncol=ncol, target=target)[0],
          latent_grid(strength * lp.mean, limit=z_lim, ncol=ncol, target=target)[0],
          latent_grid(strength * lp.log_scale, limit=max(1e-3, float(np.abs(lp.log_scale).max())),
                      ncol=ncol, target=target)[0],
          latent_grid(lp.standardised(strength), limit=3.0, ncol=ncol, target=target)[0]]
captions = [f"z{level + 1}: the latent", f"μ (±{z_lim:.2g}, z's scale)",
            "log σ: blue narrow, red wide", "(z − μ)/σ: what is left (±3)"]
prior_img = hstack_images(panels, gap=16, captions=captions, font_size=18)
style.picture(prior_img, filename=f"learned-prior-z{level + 1}-{strength:g}", key="latents_prior_img",
              caption=f"Level {level + 1}, prior: {strength_words(strength)}. "
                      + ("Where σ is blue the model is sure of z's value there and charges little for "
                         "it; μ already looks like z because the kept half tells the model what to "
                         "expect." if lp.learned else
                         "This level's prior is N(0, I) in the model itself: μ = 0, σ = 1 whatever "
                         "the slider says."))
learned_bits, standard_bits = view.bits(1.0), view.bits(0.0)
series = {"standard N(0, I)": (view.prior_bits(0.0), standard_bits),
          "learned": (view.prior_bits(1.0), learned_bits)}
if strength not in (0.0, 1.0):
    series[f"yours ({strength:.0%})"] = (view.prior_bits(strength), view.bits(strength))
left, right = st.columns([3, 2])
with left:
    style.chart(prior_bits_figure(series), key="latents_prior_bits", filename="learned-vs-standard-prior")
with right:
    st.metric(f"This image's bits/dim, prior: {strength_words(strength)}", f"{view.bits(strength):.3f}",
              delta=f"{view.bits(strength) - learned_bits:+.3f} against the learned prior",
              delta_color="inverse")
    saved = standard_bits - learned_bits
    st.markdown(
        f"With N(0, I) at every level this image would cost **{standard_bits:.3f}** bits/dim; the "
        f"learned prior brings it to **{learned_bits:.3f}**, a saving of **{saved:.3f}** bits per "
        f"value, **{saved * view.dims:,.0f} bits** for the whole image. The flow itself is the "
        "same in both: the saving is what the kept half knows about the half that leaves.")
with ec.explain():
    st.markdown(
        "For each level the model computes μ and log σ from the kept half h with a zero-initialised "
        "convolution, so training starts from N(0, I) and learns how far to move from it. The "
        "cost of a latent is its Gaussian negative log-density,")
    st.latex(r"-\log p(z\mid h) = \sum_j \Big[\tfrac12\Big(\frac{z_j-\mu_j(h)}{\sigma_j(h)}\Big)^2"
             r" + \log\sigma_j(h) + \tfrac12\log 2\pi\Big]")
    st.markdown(
        "so a value costs little when the prediction is close (small (z − μ)/σ) **and** the "
        "model dared to be sure (small σ). With μ = 0 and σ = 1 the same z is charged its full "
        "squared size. The slider scales μ and log σ together; its ends are the two priors.")

# ------------------------------------------------------------------------------ what each scale stores
st.header("4 · What each scale stores")
st.markdown("Keep some latents of this image and draw the others afresh from the prior at "
            "temperature T. Whatever survives the redraw was stored in the latents you kept.")
links.bind([links.number("T", "latents_temp", 0.7, 0.0, 1.0, step=0.05),
            links.integer("draws", "latents_draws", 6, 3, 10),
            links.integer("seed", "latents_seed", 0, 0, 1_000_000)])
cols = st.columns([2, 2, 1])
temp = cols[0].slider("Temperature T of the redrawn latents", 0.0, 1.0, 0.7, 0.05, key="latents_temp")
n_draw = cols[1].slider("Redraws per row", 3, 10, 6, key="latents_draws")
if cols[2].button("New draws", key="latents_reseed"):
    st.session_state["latents_seed"] = int(st.session_state.get("latents_seed", 0)) + 1
seed = int(st.session_state.get("latents_seed", 0))


@st.cache_data(show_spinner=False, max_entries=64)
def scale_rows(path: str, mtime: float, pixels_bytes: bytes, shape: tuple, temp: float, n: int, seed: int):
    model, _, _ = ec.cached_model(path, mtime)
    pix = np.frombuffer(pixels_bytes, np.uint8).reshape(shape)
    levels = model.config.levels
    rows, labels = [], []
    with ec.compute():
        zs = model.encode(ec.to_model_space(model, pix)).zs
        eps = model.sample_eps(n, torch.Generator().manual_seed(1000 + seed))
        def names(ks):
            return f"z{ks[0]}" if len(ks) == 1 else f"z{ks[0]}-z{ks[-1]}"

        plans = []
        for k in range(1, levels):  # keep the coarse levels k+1..L, redraw the finer 1..k
            plans.append(([None] * k + [z.expand(n, -1, -1, -1) for z in zs[k:]],
                          f"keep {names(range(k + 1, levels + 1))}, redraw {names(range(1, k + 1))}"))
        for k in range(levels - 1, 0, -1):  # keep the fine levels 1..k, redraw the coarser ones
            plans.append(([z.expand(n, -1, -1, -1) for z in zs[:k]] + [None] * (levels - k),
                          f"keep {names(range(1, k + 1))}, redraw {names(range(k + 1, levels + 1))}"))
        plans.append(([None] * levels, "redraw everything"))
        original = np.repeat(pix[None], 1, axis=0)
        decoded = [model.to_uint8(model.decode(plan, temperature=temp, eps=eps)).numpy()
                   for plan, _ in plans]
        # How much keeping a latent changed the redraws: the mean |pixel difference| to the
        # "redraw everything" row, which uses the same noise. Shown on screen, because a small
        # number (keeping only the finest latent) is invisible in the pictures.
        free = decoded[-1].astype(np.float32)
        diffs = [float(np.abs(d.astype(np.float32) - free).mean()) for d in decoded[:-1]]
        for k, ((_, label), imgs) in enumerate(zip(plans, decoded)):
            rows.append(np.concatenate([original, imgs]))
            labels.append(label + (f"\n{diffs[k]:.1f}/255 from the last row" if k < len(diffs) else ""))
    return rows, labels, dict(zip([label for _, label in plans[:-1]], diffs))


rows, labels, diffs = scale_rows(str(loaded.path), ec.file_version(loaded.path), pixels.tobytes(), pixels.shape,
                                 float(temp), int(n_draw), seed)
s = fit_factor(H, 84)
grid = labelled_grid([image_grid(r, ncol=len(r), pad=3, scale=s) for r in rows], labels,
                         label_width=270, font_size=18)
style.picture(grid, caption=f"First column: the input. Other columns: redraws at T = {temp:.2f}, the "
                            "same noise in every row. Keeping the coarse latents keeps the shape; only "
                            "strokes and texture change. Keeping only the fine latents barely constrains "
                            "the picture: the shape is redrawn.",
              filename=f"what-each-scale-stores-T{temp:g}-seed{seed}", key="latents_dl")
fine_label = next((label for label in diffs if label.startswith("keep z1,")), None)
coarse_label = next(iter(diffs), None)
if fine_label is not None and diffs[fine_label] < 8:  # under ~3 % of the pixel range: the eye cannot tell the rows apart
    st.info(f"**Why do “{fine_label}” and “redraw everything” look alike?** Measured: their "
            f"redraws differ by only **{diffs[fine_label]:.1f}/255** per pixel on average, against "
            f"**{diffs[coarse_label]:.1f}/255** for “{coarse_label}”. The finest latent holds "
            "little the eye can see: once the coarse latents are redrawn, the shape is new and the "
            "kept fine detail is re-predicted around it. That is the multi-scale idea at work, "
            "not a fault of the page."
            + (" On this demo the gap stays under 5/255 at every temperature from 0 to 1 "
               "(measured on the first test images)." if loaded.path in ec.DEMOS.values()
               and loaded.dataset == "mnist" else ""),
            icon=":material/info:")

with ec.explain():
    st.markdown(
        "**Multi-scale latents.** Sending half of the channels out after each level saves "
        "computation and gives every scale its own latent: z1 holds the finest detail, the top "
        "latent the coarsest layout. Together they have exactly as many numbers as the image.\n\n"
        "**The learned split prior.** The half that leaves is not scored against a fixed N(0, 1). "
        "A small convolution reads the half that stays and predicts a mean μ and a scale σ for "
        "every value that leaves:")
    st.latex(r"p(z_\ell \mid h_\ell) = \mathcal{N}\big(z_\ell;\ \mu(h_\ell),\ \sigma(h_\ell)^2\big),"
             r"\qquad \hat z_\ell = \frac{z_\ell - \mu(h_\ell)}{\sigma(h_\ell)}")
    st.markdown(
        "So the coarse structure tells the model what detail to expect, which costs fewer bits "
        "than treating each level as independent noise — a standard normal prior would charge "
        "every latent as if nothing about it were known. ẑ is what is left to encode after that "
        "prediction; with a good prior it looks like white noise.\n\n"
        "**Temperature.** A redrawn latent is z = μ + T·σ·ε with ε ~ N(0, 1): T = 0 takes the "
        "prior's most likely value, T = 1 a full-strength draw.")
