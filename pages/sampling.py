"""Sampling: temperature, per-level temperature, and walks between two real images."""

from __future__ import annotations

import streamlit as st

from flowlib.viz.images import fit_factor, image_grid, labelled_grid
from pages.common import conditional, links, style, ui
from pages.common import explore as ec

ui.require_router()  # a bookmarked /page on a fresh server must still go through app.py

GLOW_TEMPERATURES = ec.GLOW_TEMPERATURES

st.title("Sampling")
st.markdown(
    "To make a new image, draw latent noise ε ~ N(0, 1), scale it by a **temperature** T and run "
    "the flow backwards. The noise below is fixed by a seed, so when you move the slider you see "
    "the *same* samples change: low T gives smooth, typical, rather bland images; T = 1 gives "
    "the full variety, flaws included.")

loaded = ec.model_picker("sampling_model")
if loaded is None:
    st.stop()
if loaded.path in ec.DEMOS.values():
    st.caption("The demo models are small (at most 452k parameters, under an hour of training "
               "on a 2-core CPU), so expect some odd shapes; what to watch is how the samples "
               "change with the temperature.")
model = loaded.model
C, H, W = loaded.config.image_shape
L = loaded.config.levels
path, mtime = str(loaded.path), ec.file_version(loaded.path)

links.bind([links.number("T", "sampling_temp", 0.7, 0.0, 1.2, step=0.05),
            links.integer("seed", "sampling_seed", 0, 0, 1_000_000),
            links.flag("perlevel", "sampling_per_level", False)])
if st.session_state.get("sampling_per_level"):  # ?T1=0&T2=1: one temperature per level
    links.bind([links.number(f"T{k + 1}", f"sampling_temp_{k}", st.session_state.get("sampling_temp", 0.7),
                             0.0, 1.2, step=0.05) for k in range(L)])
if "sampling_seed" not in st.session_state:
    st.session_state["sampling_seed"] = 0

# class-conditional models: a row of samples per class ("draw me a 3"); others: the demo that can
conditional.pick_a_class(loaded, "sampling_model")


# ------------------------------------------------------------------------------ temperature slider
st.header("1 · One temperature, 64 samples")
cols = st.columns([3, 1, 1])
per_level_on = bool(st.session_state.get("sampling_per_level", False))
temp = cols[0].slider("Temperature T", 0.0, 1.2, 0.7, 0.05, key="sampling_temp",
                      disabled=per_level_on,
                      help="z = μ + T·σ·ε for every level's latent."
                           + (" Switched off: the per-level temperatures below are in use."
                              if per_level_on else ""))
if per_level_on:
    cols[0].caption("Off while **Temperature per level** is ticked: each level's own slider "
                    "below sets its temperature. Untick it to use this one again.")
if cols[1].button("New seed", key="sampling_new_seed", icon=":material/casino:"):
    st.session_state["sampling_seed"] += 1
seed = int(st.session_state["sampling_seed"])
cols[2].metric("Seed", seed)

with st.expander("Temperature per level (finest first)", expanded=per_level_on):
    per_level = st.checkbox("Set each level's temperature separately", key="sampling_per_level")
    level_temps = []
    for k, shape in enumerate(model.latent_shapes):
        what = "finest detail" if k == 0 else ("coarsest layout" if k == L - 1 else "middle scale")
        level_temps.append(st.slider(f"z{k + 1} {list(shape)} — {what}", 0.0, 1.2, float(temp), 0.05,
                                     key=f"sampling_temp_{k}", disabled=not per_level))
    st.caption("Try T = 0 for the coarsest level and 1 for the finest: the same blurry layout "
               "with fresh fine texture. The reverse keeps the detail statistics and redraws the shape.")
# rounded: the browser's slider can send 0.7500000000000001, and the grids are cached by value
temps = tuple(round(float(t), 2) for t in level_temps) if per_level else (round(float(temp), 2),) * L
grid64 = ec.sample_grid(path, mtime, seed, temps)
scale = fit_factor(H, 84)
big = image_grid(grid64, ncol=8, pad=3, scale=scale)
st.session_state["sampling_last_grid"] = (temps, seed, grid64.sum().item())
label = ", ".join(f"{t:.2f}" for t in temps) if per_level else f"{temp:.2f}"
style.picture(big, caption=f"64 samples at T = {label} (seed {seed})",
              filename=f"samples-T{label.replace(', ', '_')}-seed{seed}", key="sampling_dl64")

# ------------------------------------------------------------------------------ Glow's temperature set
st.header("2 · The same 8 samples at Glow's temperatures")
n_cols = 8
rows = [ec.sample_grid(path, mtime, seed, (t,) * L, n_cols) for t in GLOW_TEMPERATURES]
s2 = fit_factor(H, 72)
table = labelled_grid([image_grid(r, ncol=n_cols, pad=3, scale=s2) for r in rows],
                          [f"T = {t:g}" for t in GLOW_TEMPERATURES], label_width=100, font_size=20)
t0_same = GLOW_TEMPERATURES[0] == 0 and bool((rows[0] == rows[0][:1]).all())
style.picture(table, caption="Each column uses the same noise ε; only T changes. "
                             + ("At T = 0 the noise is multiplied by 0, so every column decodes the "
                                "same point, the prior's mean: the top row is one image repeated, "
                                "the most 'typical' image this model knows." if t0_same else
                                "T = 0 decodes the prior's mean."),
              filename=f"temperatures-seed{seed}", key="sampling_dl_table")

# ------------------------------------------------------------------------------ interpolation
st.header("3 · Walking between two real images")
images = ec.test_images(loaded.dataset) if loaded.dataset else "no built-in test images for this model"
if isinstance(images, str):
    st.info(f"Interpolation needs test images: {images}")
else:
    n = int(images.shape[0])
    links.bind([links.integer("a", "sampling_ia", 0, 0, n - 1),
                links.integer("b", "sampling_ib", min(1, n - 1), 0, n - 1),
                links.choice("frames", "sampling_frames", 9, ec.INTERPOLATION_FRAMES)])
    cols = st.columns(3)
    ia = cols[0].number_input("First test image", 0, n - 1, 0, key="sampling_ia")
    ib = cols[1].number_input("Second test image", 0, n - 1, min(1, n - 1), key="sampling_ib")
    frames = cols[2].slider("Frames", 5, 13, 9, 2, key="sampling_frames")

    strips, ts = ec.interpolation_strips(path, mtime, int(ia), int(ib), int(frames), loaded.dataset)
    s3 = fit_factor(H, 84)
    strip = labelled_grid([image_grid(strips[m], ncol=frames, pad=3, scale=s3) for m in ("linear", "spherical")],
                              ["linear", "spherical"], label_width=120, font_size=20)
    style.picture(strip, caption=f"Left: test image #{ia}; right: #{ib}. Every frame decodes a point on "
                                 "the path between their latents (all levels together). The ends are exact "
                                 "reconstructions; the middle frames are images the model finds plausible.",
                  filename=f"interpolation-{ia}-{ib}", key="sampling_dl_interp")

with ec.explain():
    st.markdown("**Temperature.** Every latent is drawn from its Gaussian prior with the spread "
                "scaled by T:")
    st.latex(r"z_\ell = \mu_\ell + T\,\sigma_\ell\,\varepsilon_\ell,\qquad \varepsilon_\ell\sim\mathcal N(0, I),"
             r"\qquad x = f^{-1}(z_1,\dots,z_L)")
    st.markdown(
        "A flow is trained to cover *every* training image, so its Gaussian has to be wide, and "
        "the far-out parts of it decode to odd images. Shrinking T keeps the samples near the "
        "centre, where the model is most confident: smoother and cleaner, but also more alike "
        "and more average (at T = 0 no noise is left, so every sample is the same 'mean' image). Glow's paper shows "
        "T ≈ 0.7 as a good compromise.\n\n"
        "**Per level.** Each level's latent has its own temperature: the coarse levels decide the "
        "layout, the fine levels the texture.\n\n"
        "**Linear vs spherical.** A Gaussian latent of many dimensions almost always has a norm "
        "near √d. A straight line between two latents dips to a smaller norm in the middle — a "
        "region real latents never visit — so the middle frames can look washed out. Spherical "
        "interpolation (slerp) follows the arc and keeps the norm typical.")

# which class is a picture (conditional models), and latent arithmetic between classes (any model)
conditional.class_sections(loaded)
