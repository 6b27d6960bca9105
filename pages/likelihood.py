"""What the likelihood knows: bits/dim of whole data sets, and why a high likelihood is not "in-distribution"."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
import streamlit as st
import torch

from flowlib.analysis.ood import (
    Scores,
    comparison_sets,
    gaussian_shell,
    likelihood_flags,
    score_images,
    typicality_flags,
)
from flowlib.data import DATASETS
from flowlib.viz.dequant import bin_of, bins_figure, dequant_pictures
from flowlib.viz.images import fit_factor, image_grid, labelled_grid, to_rgb, upscale
from pages.common import canvas, links, style, ui
from pages.common import explore as ec

ui.require_router()  # a bookmarked /page on a fresh server must still go through app.py

st.title("What the likelihood knows")
st.markdown(
    "A flow gives every image an exact likelihood, so it is tempting to use it as a detector: "
    "*low bits/dim = looks like my training data*. Here the model scores whole data sets — its "
    "own test set, the same images blurred, the other data set that ships with the app, pure "
    "noise, blank images and your drawings — and the histograms show where that reasoning "
    "holds and where it breaks.")

loaded = ec.model_picker("lik_model")
if loaded is None:
    st.stop()
model = loaded.model
C, H, W = loaded.config.image_shape
SHAPE = (C, H, W)
PATH, MTIME = str(loaded.path), ec.file_version(loaded.path)
links.bind([links.choice("n", "lik_n", 1000, [250, 500, 1000, 2000])])
n_per_set = st.select_slider("Images per data set (a seeded random subset)", [250, 500, 1000, 2000], value=1000,
                             key="lik_n", help="More images: smoother histograms, slower first answer "
                                               "(about 1.5 s per 1,000 MNIST images on one CPU core).")
COLOURS = {"test": "#2b8a3e", "blurred": "#0c8599", "other:mnist": "#e8590c", "other:faces": "#e8590c",
           "other:fashion-mnist": "#ae3ec9", "noise": "#868e96", "constant": "#3b5bdb", "drawings": "#c2255c"}


def short_label(label: str) -> str:
    return label.split(" (")[0]


@st.cache_data(show_spinner="Loading the data sets…", max_entries=8)
def load_sets(dataset: str | None, shape: tuple, n: int, available: tuple):
    """The comparison sets (key, label, images, why missing), cached; ``available`` (which data
    sets are installed) is only part of the key, so a data set installed later is picked up."""
    return [(s.key, s.label, s.images, s.missing) for s in comparison_sets(dataset, shape, n)]


@st.cache_data(show_spinner="Scoring…", max_entries=64)
def score(path: str, mtime: float, key: str, images_bytes: bytes, shape: tuple) -> Scores:
    model, _, _ = ec.cached_model(path, mtime)
    images = np.frombuffer(images_bytes, np.uint8).reshape(-1, *shape)
    with ec.compute():
        return score_images(model, images)


available = tuple(spec.available() for spec in DATASETS.values())
sets = load_sets(loaded.dataset, SHAPE, n_per_set, available)
results = {}   # key -> (label, Scores, images)
missing = []
for key, label, images, why in sets:
    if images is None:
        missing.append((key, label, why))
        continue
    results[key] = (label, score(PATH, MTIME, key, images.tobytes(), SHAPE), images)
drawn = canvas.drawings(SHAPE)
if len(drawn):
    results["drawings"] = ("your drawings", score(PATH, MTIME, "drawings", drawn.tobytes(), SHAPE), drawn)
ref = results.get("test", (None, None, None))[1]

# ------------------------------------------------------------------------------ 1 · histograms
st.header("1 · Bits/dim of whole data sets")
st.markdown(
    "Each histogram is one data set scored by the same model: **left = likely** (few bits per "
    "pixel value), **right = unlikely**. Uniform noise is the worst case; the interesting "
    "question is what lands *left* of the model's own test set.")
fig = go.Figure()
all_values = np.concatenate([r[1].total for r in results.values()]) if results else np.zeros(1)
# Noise can cost thousands of bits/dim under a small model: pile everything above a cap into
# the last bin, so the sets that matter keep a readable axis.
cap = float(loaded.config.n_bits + 2)
if ref is not None:
    cap = max(cap, 3 * float(np.quantile(ref.total, 0.995)))
lo = float(np.floor(min(all_values.min(), cap)))
hi = float(np.ceil(min(all_values.max(), cap)))
size = max((hi - lo) / 90, 0.02)
piled = []
for key, (label, sc, _) in results.items():
    if key == "drawings" and len(sc) < 5:
        continue
    over = float((sc.total > hi).mean())
    if over > 0:
        piled.append(f"{short_label(label)} {100 * over:.0f} %")
    fig.add_histogram(x=np.minimum(sc.total, hi), name=f"{label} (n = {len(sc):,})", histnorm="percent",
                      opacity=0.6, marker_color=COLOURS.get(key, "#e8590c"), xbins=dict(start=lo, end=hi + size, size=size),
                      hovertemplate="%{x:.2f} bits/dim: %{y:.1f} %<extra>" + label + "</extra>")
if "drawings" in results:
    for v in results["drawings"][1].total[:20]:
        fig.add_vline(x=float(min(v, hi)), line=dict(color=COLOURS["drawings"], width=3, dash="dash"))
    fig.add_annotation(x=float(min(results["drawings"][1].total[0], hi)), y=1.0, yref="paper",
                       text="your drawing(s)", showarrow=False, yanchor="bottom",
                       font=dict(size=16, color=COLOURS["drawings"]))
fig.update_layout(barmode="overlay")
ui.base_layout(fig, x_title="bits per dimension (lower = more likely under the model)",
               y_title="% of the data set", uirevision=f"lik-{PATH}", height=440)
fig.update_layout(hovermode="closest")
style.chart(fig, key="lik_hist", filename="bits-per-dim-of-data-sets")
if piled:
    st.caption(f"Piled into the last bin at {hi:g} bits/dim (they cost even more): " + ", ".join(piled)
               + ". The table has their real values.")

table = []
for key, (label, sc, _) in results.items():
    row = {"data set": label, "images": len(sc), "median bits/dim": round(float(np.median(sc.total)), 3),
           "5–95 % range": f"{np.quantile(sc.total, 0.05):.2f} – {np.quantile(sc.total, 0.95):.2f}",
           "lowest": round(float(sc.total.min()), 3)}
    if ref is not None:
        row["flagged: bits/dim too high"] = f"{100 * likelihood_flags(ref.total, sc.total).mean():.0f} %"
        row["flagged: outside the typical range"] = f"{100 * typicality_flags(ref.total, sc.total).mean():.0f} %"
    table.append(row)
st.dataframe(table, hide_index=True, width="stretch")
if missing:
    with st.expander("Data sets not on this server: " + ", ".join(short_label(m[1]) for m in missing)):
        for key, label, why in missing:
            st.markdown(f"**{label}** is left out: {why}")
        if any(key == "other:fashion-mnist" for key, _, _ in missing):
            st.markdown("To add Fashion-MNIST on Debian or Ubuntu, run on the server, then reload this page:")
            st.code("sudo apt-get install dataset-fashion-mnist", language="bash")


@st.cache_data(show_spinner=False, max_entries=16)
def examples(rows_bytes: tuple, labels: tuple, shape: tuple, scale: int):
    rows = []
    for b in rows_bytes:
        imgs = np.frombuffer(b, np.uint8).reshape(-1, *shape)
        rows.append(image_grid(imgs, ncol=len(imgs), pad=3, scale=scale, pad_value=150))
    return labelled_grid(rows, list(labels), label_width=330, font_size=19)


picks = []
for key, (label, sc, images) in results.items():
    order = np.argsort(sc.total)
    idx = order[np.linspace(0, len(order) - 1, min(8, len(order))).round().astype(int)]
    picks.append((images[idx].tobytes(), f"{short_label(label)}\n{sc.total[idx[0]]:.2f} to {sc.total[idx[-1]]:.2f}"))
ex = examples(tuple(p[0] for p in picks), tuple(p[1] for p in picks), SHAPE, fit_factor(H, 56))
style.picture(ex, width=ex.shape[1], filename="examples-by-bits-per-dim", key="lik_examples",
              caption="Examples from each set, from its most likely (left) to its least likely (right), "
                      "with their bits/dim.")
with ec.explain():
    st.markdown(
        "**Bits/dim** is −log₂ p(x) divided by the number of pixel values D: how many bits the "
        "model would need to store the image. Each set's histogram is in percent of that set, so "
        "sets of different sizes compare fairly. The scores use the same random dequantisation "
        "noise as training (seeded, so the page is repeatable).\n\n"
        "**The two flag columns** use the model's own test set as reference. *Too high*: above its "
        "99th percentile — the naive detector. *Outside the typical range*: below its 0.5th or above "
        "its 99.5th percentile — the typicality test of section 3.")

# ------------------------------------------------------------------------------ 2 · your drawing
st.header("2 · Score your own drawing")
st.markdown(
    "Draw something — a digit, a letter, a face, a scribble — and see how many bits the model "
    "needs for it. **Keep** a drawing to add it to the histograms above as a dashed line.")
pixels = canvas.draw_image("lik", SHAPE, invert=loaded.dataset == "faces", keep_label="Keep this drawing")
if pixels is not None:
    with ec.compute():
        x = ec.to_model_space(model, pixels)
        out = model.encode(x)
        back = model.decode(out.zs)
        bpd = float(score_images(model, pixels[None]).total[0])
    err = float((back - x).abs().max())
    c1, c2, c3 = st.columns([1, 1, 2])
    up = fit_factor(H, 150)
    c1.image(upscale(to_rgb(pixels), up), caption=f"what the model sees ({H}×{W})", width=W * up)
    c2.image(upscale(to_rgb(model.to_uint8(back)[0].numpy()), up), caption="decode(encode(x))",
             width=W * up)
    c3.metric("Your drawing's bits/dim", f"{bpd:.3f}", help=ui.BPD_HELP)
    c3.metric("Invertibility error  max |decode(encode(x)) − x|", f"{err:.1e}")
    if ref is not None:
        pct = 100 * float((ref.total < bpd).mean())
        c3.markdown(f"**{pct:.0f} %** of the model's own test images need fewer bits than this drawing.")
if len(drawn):
    st.caption(f"{len(drawn)} drawing(s) kept in this browser tab.")
    if st.button("Forget my drawings", key="lik_forget"):
        canvas.forget()
        st.rerun()
with ec.explain():
    st.markdown(
        "The canvas is 280×280 screen pixels; the drawing is cropped, scaled and centred like an "
        f"MNIST digit, then reduced to the model's {H}×{W}. Its bits/dim is scored exactly like "
        "the data sets above. The invertibility error shows the flow still undoes itself on "
        "whatever you draw — invertibility does not depend on the input being a digit.")

# ------------------------------------------------------------------------------ 3 · Nalisnick
st.header("3 · High likelihood ≠ in-distribution")
st.markdown(
    "Nalisnick et al. (2019, *Do deep generative models know what they don't know?*) found that "
    "flows trained on one data set often give **higher** likelihood to a different, simpler one — "
    "a Glow trained on Fashion-MNIST scores MNIST digits better than clothes, one trained on "
    "CIFAR-10 prefers SVHN's house numbers. Likelihood mostly measures how *smooth and simple* an "
    "image is (how predictable each pixel is from its neighbours), not whether it is *like the "
    "training data*.")
if ref is not None:
    own_median = float(np.median(ref.total))
    lines = [f"**Here:** the model's own test images have a median of **{own_median:.2f}** bits/dim."]
    winners = []
    for key, (label, sc, _) in results.items():
        if key not in ("blurred",) and not key.startswith("other:"):
            continue
        median = float(np.median(sc.total))
        share = 100 * float((sc.total < own_median).mean())
        better = median < own_median
        winners += [short_label(label)] if better else []
        lines.append(f"{short_label(label)} scores **{median:.2f}**: **{'better (lower)' if better else 'worse (higher)'}** "
                     f"than the model's own data; {share:.0f} % of them beat the median test image.")
    if "constant" in results:
        const_label, const_sc, const_images = results["constant"]
        k = int(np.argmin(const_sc.total))
        beaten = 100 * float((ref.total > const_sc.total[k]).mean())
        lines.append(f"The blank image of grey level **{int(const_images[k].flat[0])}** scores "
                     f"**{const_sc.total[k]:.2f}** bits/dim: more likely than **{beaten:.0f} %** of the "
                     "real test images, although nothing in the training set looked like it.")
    st.markdown("\n\n".join(lines))
    if winners:
        st.success(f"The surprise, on the data that ships with the app: **{', '.join(winners)}** "
                   "— never seen in training — get higher likelihood than the model's own test images.",
                   icon=":material/lightbulb:")
    elif loaded.dataset == "mnist" and ec.DEMOS[ec.FACES_DEMO].is_file():
        st.info("On MNIST every other picture costs more bits than a digit, except a blank one: "
                "digits are already about the simplest pictures there are. The faces demo shows the "
                "surprise with whole data sets: its **blurred** faces, and not its real ones, are what "
                "it finds most likely.", icon=":material/lightbulb:")
        st.button("Show this page with the faces demo", key="lik_to_faces", icon=":material/face:",
                  on_click=lambda: st.session_state.update(lik_model=ec.FACES_DEMO))
with ec.explain():
    st.markdown(
        "Why simple images win: a flow's log-likelihood is mostly earned by predicting each pixel "
        "from its neighbours, a skill that transfers to any smooth image. A flat image is the "
        "easiest of all, especially at 0 or 255, where the dequantisation box sits at the edge of "
        "the data range. Kirichenko, Izmailov & Wilson (2020) showed that flows learn such local "
        "pixel correlations rather than what the objects are.")

# ------------------------------------------------------------------------------ 4 · typical sets
st.header("4 · Typical sets: too likely is suspicious too")
st.markdown(
    "In many dimensions the **most likely point is not a typical one**. For a standard Gaussian in "
    "D dimensions the density is highest at z = 0, yet samples lie on a thin shell at radius ≈ √D "
    "and essentially never near the centre. A data set's images likewise lie in a band of bits/dim; "
    "an input far *below* that band is as out of place as one far above it.")
shell_mean, shell_sd = gaussian_shell(C * H * W)
st.latex(r"z\sim\mathcal N(0, I_D):\qquad \arg\max_z p(z) = 0,\qquad "
         r"\lVert z\rVert \approx \sqrt{D} \pm \tfrac{1}{\sqrt 2}"
         rf"\quad(D = {C * H * W}:\ \lVert z\rVert = {shell_mean:.2f} \pm {shell_sd:.2f})")
if ref is not None:
    lo_t, hi_t = np.quantile(ref.total, [0.005, 0.995])
    st.markdown(
        f"**The typicality test** (Nalisnick et al. 2019b): call an input unusual when its bits/dim "
        f"falls outside the band of the model's own test images, here **{lo_t:.2f} – {hi_t:.2f}**. "
        "Compare the two flag columns of the table: the naive threshold lets every image that is "
        "*too* likely through; the two-sided test catches those as well."
        + (f" The blank image of grey level {int(const_images[k].flat[0])} ({const_sc.total[k]:.2f} bits/dim) "
           f"{'passes' if not likelihood_flags(ref.total, const_sc.total[k:k + 1])[0] else 'fails'} the naive test "
           f"and {'is caught by' if typicality_flags(ref.total, const_sc.total[k:k + 1])[0] else 'passes'} "
           "the typicality test." if "constant" in results else ""))
with ec.explain():
    st.markdown(
        "A typical set holds almost all of a distribution's probability, and every member has about "
        "the same log-likelihood (the entropy). With D values per image, the log-likelihood of a "
        "real image fluctuates by only about √D around its mean, so real images sit in a narrow "
        "band of bits/dim. The mode — here, the blank image — is far more likely than any member of "
        "that band and still never occurs in the data. A test on a batch of inputs is more reliable "
        "than on one, which is what the original paper proposes.")

# ------------------------------------------------------------------------------ 5 · per-level budget
st.header("5 · Where the bits go, per level")
st.markdown(
    "The bits/dim is a sum over the model's levels (each latent's prior) plus the log-det. The "
    "averages below show which part of the budget tells the data sets apart — the same budget "
    "the **Latents** page draws for one image.")
if results:
    terms = list(next(iter(results.values()))[1].budget())
    bfig = go.Figure()
    for key, (label, sc, _) in results.items():
        b = sc.budget()
        bfig.add_bar(x=terms, y=[b.get(t, 0.0) for t in terms], name=short_label(label),
                     marker_color=COLOURS.get(key, "#e8590c"),
                     hovertemplate="%{x}: %{y:.2f} bits/dim<extra>" + label + "</extra>")
    bfig.update_layout(barmode="group")
    ui.base_layout(bfig, x_title="term of the bits/dim budget (mean over the set)", y_title="bits/dim",
                   uirevision=f"lik-budget-{PATH}", height=420)
    bfig.update_layout(hovermode="closest")
    style.chart(bfig, key="lik_budget", filename="bits-per-dim-budget-per-set")
    if ref is not None and len(results) > 1:
        rb = ref.budget()
        gaps = []
        for key, (label, sc, _) in results.items():
            if key == "test":
                continue
            b = sc.budget()
            t = max((t for t in terms if t != "quantisation"), key=lambda t: abs(b.get(t, 0) - rb.get(t, 0)))
            gaps.append(f"{short_label(label)}: **{t}** ({b[t] - rb[t]:+.2f} bits/dim)")
        st.markdown("Largest difference from the model's own test set — " + "; ".join(gaps) + ".")
with ec.explain():
    st.markdown(
        "Bars per term, one colour per data set: **zℓ prior** is what the ℓ-th latent costs under "
        "its Gaussian prior (z1 = finest detail), **log-det** is the (usually negative) credit for "
        "the flow's stretching, **quantisation** the constant n_bits. Schirrmeister et al. (2020) "
        "and Kirichenko et al. (2020) found the finest level and the local stretching dominate a "
        "flow's likelihood and are shared across data sets, while the coarse levels carry more "
        "of what an image *is*: comparing sets by the coarser terms alone is a better detector.")

# ------------------------------------------------------------------------------ 6 · dequantisation
st.header("6 · Pixels are whole numbers: bins and dequantisation")
st.markdown(
    "A flow has a **density** over continuous values, but a pixel is one of 256 whole numbers, "
    "and a density could pile up without limit on exactly those numbers. **Dequantisation** "
    "spreads each value over its **bin**, x̃ = (x + u)/256 with noise u ~ U[0, 1), so the model "
    "must spread its density over the whole bin. The probability of the pixel value is then the "
    "density times the bin's width, 1/256: that is the **+8 bits** every bits/dim adds back. "
    "Glow trained its CelebA-HQ model at **5 bits** (32 bins, each 8 values wide): fewer, wider "
    "bins leave less fine detail to model, and the bits/dim adds back 5 instead of 8.")
links.bind([links.integer("value", "lik_dq_value", 77, 0, 255),
            links.choice("bits", "lik_dq_bits", 8, [8, 7, 6, 5, 4, 3, 2, 1]),
            links.integer("draws", "lik_dq_draws", 12, 1, 64),
            links.integer("noise", "lik_dq_seed", 0, 0, 1_000_000)])
cols = st.columns([2, 2, 2, 1])
value = cols[0].slider("Pixel value x", 0, 255, 77, key="lik_dq_value")
n_bits = cols[1].select_slider("Bits per value", options=[8, 7, 6, 5, 4, 3, 2, 1], value=8, key="lik_dq_bits",
                               help="8: every value its own bin (256 bins). 5: Glow's trick for CelebA-HQ, "
                                    "32 bins of 8 values.")
draws = cols[2].slider("Noise draws u", 1, 64, 12, key="lik_dq_draws")
if cols[3].button("New noise", key="lik_dq_reseed", icon=":material/casino:"):
    st.session_state["lik_dq_seed"] = int(st.session_state.get("lik_dq_seed", 0)) + 1
noise_seed = int(st.session_state.get("lik_dq_seed", 0))
rng = np.random.default_rng(noise_seed)
u_draws = rng.random(draws)
k_bin, width = bin_of(value, n_bits)
style.chart(bins_figure(value, n_bits, u_draws), key="lik_dq_bins", filename=f"bins-{n_bits}bit-x{value}")
st.markdown(
    f"x = **{value}** falls in bin **{k_bin}** of {2 ** n_bits}, the values {k_bin * width}–{(k_bin + 1) * width - 1}. "
    f"Each orange dot is one draw of x̃: anywhere in the bin, never outside it, so "
    f"x̃ = (bin + u) / {2 ** n_bits} − 0.5 ∈ [{k_bin / 2 ** n_bits - 0.5:.4f}, {(k_bin + 1) / 2 ** n_bits - 0.5:.4f}) in the "
    "model's units. Two different pixel values never share a point, so the model's density over "
    "x̃ is a fair density over the pixels.")
images = ec.test_images(loaded.dataset) if loaded.dataset else None
if images is not None and not isinstance(images, str):
    picture = images[0].numpy()
    u_image = np.random.default_rng(noise_seed + 1).random(picture.shape)
    strip = dequant_pictures(picture, n_bits, u_image, scale=fit_factor(H, 150))
    style.picture(strip, filename=f"dequantisation-{n_bits}bit", key="lik_dq_strip", width=strip.shape[1],
                  caption=f"A test image, the same image kept at {n_bits} bits, one draw of the noise u "
                          "for every pixel value, and the dequantised image the flow actually sees. At 8 "
                          "bits the noise moves a value by less than one grey level; at 3 bits or fewer "
                          "you can see it fill each band.")
    with ec.compute():
        pix_t = torch.as_tensor(picture.copy())[None]
        terms = model.bits_per_dim_terms(pix_t, noise=True, generator=torch.Generator().manual_seed(noise_seed))
    density_bits = float(terms.total[0]) - float(terms.quantisation)
    c1, c2 = st.columns(2)
    c1.metric("−log₂ p(x̃) per value (the density's part)", f"{density_bits:.3f} bits",
              help="Negative: the density is higher than 1 on this small range, which it can be.")
    c2.metric(f"+ {model.config.n_bits} bits for the bin's width = bits/dim", f"{float(terms.total[0]):.3f}",
              help=ui.BPD_HELP)
    st.caption(f"This model keeps {model.config.n_bits} bits per value, so its bits/dim adds "
               f"{model.config.n_bits}. Bits/dim measured at different bit depths cannot be compared: "
               "a 5-bit model has less to encode.")
with ec.explain():
    st.markdown(
        "Why the +n_bits: the probability of a pixel value x is the density integrated over its "
        "bin, which for a narrow bin is about the density at x̃ times the bin's width,")
    st.latex(r"P(x) \;=\; \int_{\text{bin}(x)} p(\tilde x)\,d\tilde x \;\approx\; p(\tilde x)\cdot 2^{-n_\text{bits}}"
             r"\quad\Longrightarrow\quad -\log_2 P(x) \approx -\log_2 p(\tilde x) + n_\text{bits}")
    st.markdown(
        "per value; averaged over the D values of an image that is bits/dim. With uniform noise "
        "the dequantised log-likelihood is a lower bound on the log-probability of the whole "
        "numbers (Theis et al. 2016), and drawing fresh noise u at every step means the model "
        "cannot win by putting a spike on the integers. Flow++ learns the noise instead of drawing it "
        "uniformly (variational dequantisation), which the Latents page shows as a green bar for a "
        "model trained that way.")
