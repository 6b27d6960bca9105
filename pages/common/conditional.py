"""Classes on the Sampling page: pick a class, which class is it, and latent arithmetic.

    from pages.common import conditional
    conditional.pick_a_class(loaded)        # "draw me a 3": a row per class, the same noise
    conditional.class_sections(loaded)      # p(y | x) of a picture as bars; moving an image
                                            # from one class's mean latent towards another's

Pick a class and classify need a class-conditional model (``FlowConfig.condition``); for any
other the first offers the conditional demo in one click. Latent arithmetic works with every
model whose test images have labels (MNIST's digits, the faces' people), and with any two
groups of test images picked by number. The maths is in ``flowlib.analysis.classes``.
"""

from __future__ import annotations

import numpy as np
import streamlit as st
import torch

from flowlib.analysis.classes import (
    attribute_direction,
    class_rows,
    classify_images,
    generative_accuracy,
    group_mean_latents,
    move_along,
    swap_label,
)
from flowlib.core.checkpoint import class_names
from flowlib.viz.classes import class_probability_figure, class_rows_picture
from flowlib.viz.images import fit_factor, hstack_images, image_grid, png_bytes, to_rgb, upscale
from pages.common import explore as ec
from pages.common.ui import EXPLORE_KEY

__all__ = ["pick_a_class", "class_sections", "class_word", "COND_DEMO"]

COND_DEMO = ec.MNIST_COND_DEMO
WORDS = {"mnist": ("digit", "digits"), "faces": ("person", "people"), "fashion-mnist": ("garment", "garments")}
DATASET_WORDS = {"mnist": "MNIST", "faces": "ORL faces", "fashion-mnist": "Fashion-MNIST"}
GROUP_SIZE = 200            # test images per class whose mean latent makes a direction
ACCURACY_IMAGES = 500       # test images a page measures the generative accuracy on, when the file has none
STRIP_ALPHAS = (0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5)


def class_word(loaded, plural: bool = False) -> str:
    words = WORDS.get(loaded.dataset or "", ("class", "classes"))
    return words[1] if plural else words[0]


def _conditional(loaded) -> bool:
    return bool(getattr(loaded.model, "n_classes", 0))


@st.cache_resource(show_spinner=False, max_entries=4)
def test_labels(dataset: str):
    """int64 [N] labels of a dataset's test split (the order of ``explore.test_images``), or None."""
    from flowlib.data import load_images
    from flowlib.data.sources.common import DatasetError
    try:
        return load_images(dataset, "test").labels
    except (DatasetError, OSError):
        return None


def _names(loaded) -> list[str]:
    if _conditional(loaded):
        return class_names(loaded.model, loaded.ckpt)
    if loaded.dataset:
        from flowlib.data import class_names as dataset_classes
        try:
            return list(dataset_classes(loaded.dataset))
        except Exception:  # noqa: BLE001 - the dataset is not here: no class names
            return []
    return []


# -- pick a class ----------------------------------------------------------------------------
@st.cache_data(show_spinner=False, max_entries=64)
def class_grid(path: str, mtime: float, seed: int, temperature: float, classes: tuple, per_row: int) -> np.ndarray:
    """uint8 [len(classes) · per_row, C, H, W]: a row per class, the same noise in every row."""
    model, _, _ = ec.cached_model(path, mtime)
    with ec.compute():
        eps = model.sample_eps(per_row, torch.Generator().manual_seed(seed))
        return model.to_uint8(class_rows(model, classes, eps, temperature)).numpy()


def _offer_the_conditional_demo(key: str, loaded) -> None:
    faces = loaded.dataset == "faces"
    path = ec.DEMOS.get(ec.FACES_COND_DEMO if faces else COND_DEMO)
    if path is None or not path.is_file() or loaded.path == path:
        return
    left, right = st.columns([3, 1], vertical_alignment="center")
    if faces:
        left.info("**Pick a person** needs a *class-conditional* flow, one trained on the faces with "
                  "the person each photo shows. This model learnt p(x) only, so it cannot be asked for "
                  "person 12.", icon=":material/info:")
    else:
        left.info("**Pick a digit** needs a *class-conditional* flow, one trained on the digits with "
                  "their labels. This model learnt p(x) only, so it cannot be asked for a 3.",
                  icon=":material/info:")
    if right.button(f"Use the conditional {'faces' if faces else 'MNIST'} demo", key=f"{key}_use_cond",
                    type="primary", icon=":material/pin:"):
        st.session_state[EXPLORE_KEY] = str(path)     # the model picker selects it on the rerun
        st.rerun()


def pick_a_class(loaded, key: str = "sampling_model") -> None:
    """The Sampling page's first section for a conditional model: a row of samples per chosen
    class at a temperature, the same noise in every row. Other models: the demo in one click."""
    if not _conditional(loaded):
        _offer_the_conditional_demo(key, loaded)
        return
    names = _names(loaded)
    word, words = class_word(loaded), class_word(loaded, plural=True)
    st.header(f"Pick a {word}")
    st.markdown(f"This model learnt **p(x | y)**: each {word} y has its own prior for the top "
                f"latent. Choose the {words}; every row draws from one {word}'s prior with the "
                "**same noise ε** in each column, so the label is the only thing that changes "
                "down a column.")
    default = names[:10]
    cols = st.columns([4, 2, 1, 1], vertical_alignment="bottom")
    chosen = cols[0].multiselect(f"{words.capitalize()} to draw", names, default=default, key="cond_classes",
                                 help=f"One row per {word}, in this order.")
    temp = cols[1].slider("Temperature T", 0.0, 1.2, 0.7, 0.05, key="cond_temp",
                          help="z = μ_y + T·σ_y·ε at every level; 0.7 is Glow's usual choice.")
    per_row = cols[2].number_input("Per row", 1, 16, 8, key="cond_per_row")
    if cols[3].button("New noise", key="cond_new_seed", icon=":material/casino:"):
        st.session_state["cond_seed"] = int(st.session_state.get("cond_seed", 0)) + 1
    seed = int(st.session_state.get("cond_seed", 0))
    if not chosen:
        st.info(f"Choose at least one {word} above.")
        return
    classes = tuple(names.index(n) for n in chosen)
    grid = class_grid(str(loaded.path), ec.file_version(loaded.path), seed, round(float(temp), 2), classes,
                      int(per_row))
    H = loaded.config.image_shape[1]
    picture = class_rows_picture(grid, chosen, int(per_row), scale=fit_factor(H, 96))
    st.image(picture, output_format="PNG",
             caption=f"{len(chosen)} × {int(per_row)} samples at T = {temp:.2f} (noise {seed}). Down a column: "
                     f"the same ε, another {word}.")
    st.download_button("Download (PNG)", png_bytes(picture), file_name=f"pick-a-{word}-T{temp:.2f}.png",
                       mime="image/png", key="cond_dl")


# -- which class is it? ----------------------------------------------------------------------
@st.cache_data(show_spinner=False, max_entries=128)
def classify_picture(path: str, mtime: float, pixels_bytes: bytes, shape: tuple) -> dict:
    """p(y | x), bits/dim of x given each y and of the marginal, for one uint8 picture."""
    model, _, _ = ec.cached_model(path, mtime)
    pix = torch.from_numpy(np.frombuffer(pixels_bytes, np.uint8).reshape(shape).copy())[None]
    with ec.compute():
        probs = classify_images(model, pix)[0]
        x, log_q = model.dequantize(pix, noise=False)
        given = model.class_log_likelihoods(x)[0]
        dims = model.config.dims
        to_bpd = lambda log_p: float(-(log_p - (0 if log_q is None else log_q[0]) - dims * np.log(model.config.n_bins))
                                     / (dims * np.log(2)))
        marginal = to_bpd(torch.logsumexp(given, 0) - np.log(model.n_classes))
        return {"probs": probs.numpy(), "bpd_given": [to_bpd(v) for v in given], "bpd": marginal}


@st.cache_data(show_spinner=False, max_entries=8)
def measured_accuracy(path: str, mtime: float, dataset: str, n: int) -> float | None:
    """The share of the first ``n`` test images whose most likely class is their label."""
    model, _, _ = ec.cached_model(path, mtime)
    images, labels = ec.test_images(dataset), test_labels(dataset)
    if isinstance(images, str) or labels is None:
        return None
    with ec.compute():
        return generative_accuracy(model, images[:n], labels[:n])


def _accuracy_line(loaded) -> str:
    recorded = loaded.ckpt.get("class_accuracy")
    if isinstance(recorded, dict) and isinstance(recorded.get("accuracy"), (int, float)):
        return (f"On the {int(recorded.get('images', 0)):,} {DATASET_WORDS.get(loaded.dataset, loaded.dataset)} "
                f"test images it is right "
                f"**{recorded['accuracy']:.1%}** of the time.")
    if not loaded.dataset:
        return ""
    with st.spinner(f"Measuring on {ACCURACY_IMAGES} test images…"):
        acc = measured_accuracy(str(loaded.path), ec.file_version(loaded.path), loaded.dataset, ACCURACY_IMAGES)
    return "" if acc is None else f"On the first {ACCURACY_IMAGES} test images it is right **{acc:.1%}** of the time."


def which_class(loaded) -> None:
    """p(y | x) of a test image, an upload or a drawing, as bars: a generative classifier."""
    names, word = _names(loaded), class_word(loaded)
    st.header(f"Which {word} is it? Classify by likelihood")
    st.markdown(f"The model has no classifier in it. It scores the picture under each {word}'s "
                f"prior, p(x | y), and Bayes' rule turns the {len(names)} likelihoods round into "
                f"p(y | x). {_accuracy_line(loaded)}")
    picked = ec.image_source(loaded, "cond_cls", default_index=0)
    if picked is None:
        return
    pixels, where = picked
    res = classify_picture(str(loaded.path), ec.file_version(loaded.path), pixels.tobytes(), pixels.shape)
    probs = res["probs"]
    best = int(np.argmax(probs))
    true = None
    labels = test_labels(loaded.dataset) if loaded.dataset else None
    index = st.session_state.get("cond_cls_index")
    if where.endswith(f"#{index}") and labels is not None and index is not None:
        true = int(labels[int(index)])
    left, right = st.columns([1, 3], vertical_alignment="center")
    H = loaded.config.image_shape[1]
    left.image(upscale(to_rgb(pixels), fit_factor(H, 160)), caption=where, output_format="PNG")
    with right:
        st.markdown(f"### The model reads it as **{names[best]}** ({probs[best]:.0%})"
                    + (f" · label: {names[true]}" if true is not None else ""))
        st.plotly_chart(class_probability_figure(names, probs, true), width="stretch", key="cond_bars")
    st.caption(f"Bits/dim of this picture: **{res['bpd']:.3f}** for log p(x) = log Σ_y p(x | y) p(y), the "
               "number comparable with an unconditional model's; given its most likely "
               f"{word}, {res['bpd_given'][best]:.3f}.")


# -- latent arithmetic ---------------------------------------------------------------------------
@st.cache_data(show_spinner=False, max_entries=64)
def mean_latents(path: str, mtime: float, dataset: str, members: tuple) -> list[np.ndarray]:
    """Per level, the mean latent of some test images (by index)."""
    model, _, _ = ec.cached_model(path, mtime)
    images = ec.test_images(dataset)
    with ec.compute():
        return [m.numpy() for m in group_mean_latents(model, images[list(members)])]


@st.cache_data(show_spinner=False, max_entries=128)
def moved_images(path: str, mtime: float, pixels_bytes: bytes, shape: tuple, direction: tuple,
                 alphas: tuple, levels: tuple) -> np.ndarray:
    """uint8 [len(alphas), C, H, W]: the picture's latents moved by α · direction, decoded."""
    model, _, _ = ec.cached_model(path, mtime)
    pix = np.frombuffer(pixels_bytes, np.uint8).reshape(shape)
    d = [torch.from_numpy(np.frombuffer(b, np.float32).reshape(s).copy()) for b, s in direction]
    with ec.compute():
        zs = model.encode(ec.to_model_space(model, pix)).zs
        out = [model.decode(move_along(zs, d, float(a), levels)) for a in alphas]
        return model.to_uint8(torch.cat(out)).numpy()


@st.cache_data(show_spinner=False, max_entries=64)
def relabelled(path: str, mtime: float, pixels_bytes: bytes, shape: tuple, label_from: int, targets: tuple) -> np.ndarray:
    """uint8 [len(targets), C, H, W]: a conditional model's ε of the picture under one label, decoded under others."""
    model, _, _ = ec.cached_model(path, mtime)
    pix = np.frombuffer(pixels_bytes, np.uint8).reshape(shape)
    with ec.compute():
        x = ec.to_model_space(model, pix).expand(len(targets), *shape)
        out = swap_label(model, x, torch.full((len(targets),), label_from), torch.tensor(targets))
        return model.to_uint8(out).numpy()


def _indices(text: str, n: int) -> tuple[int, ...]:
    out = []
    for part in text.replace(";", ",").split(","):
        part = part.strip()
        if "-" in part[1:]:
            lo, hi = part.split("-", 1)
            if lo.strip().isdigit() and hi.strip().isdigit():
                out += range(int(lo), int(hi) + 1)
        elif part.isdigit():
            out.append(int(part))
    return tuple(sorted({i for i in out if 0 <= i < n}))


def _groups(loaded, names, images) -> tuple | None:
    """((members A, name A), (members B, name B)) chosen on the page, or None."""
    labels = test_labels(loaded.dataset)
    n = int(images.shape[0])
    by_class = labels is not None and len(names) >= 2
    mode = st.radio("Groups", (["two classes", "test images by number"] if by_class else ["test images by number"]),
                    horizontal=True, key="cond_arith_mode")
    if mode == "two classes":
        default_a, default_b = (7, 1) if loaded.dataset == "mnist" else (0, 1)
        cols = st.columns(2)
        a = cols[0].selectbox("From", names, index=default_a, key="cond_arith_from")
        b = cols[1].selectbox("Towards", names, index=default_b, key="cond_arith_to")
        ka, kb = names.index(a), names.index(b)
        members = [tuple(torch.nonzero(labels == k).flatten()[:GROUP_SIZE].tolist()) for k in (ka, kb)]
        return (members[0], a), (members[1], b)
    cols = st.columns(2)
    ta = cols[0].text_input("Group A: test image numbers", "0-9", key="cond_arith_a",
                            help="Numbers and ranges, e.g. 0, 4, 10-20.")
    tb = cols[1].text_input("Group B: test image numbers", "10-19", key="cond_arith_b")
    a, b = _indices(ta, n), _indices(tb, n)
    if not a or not b:
        st.info(f"Give each group at least one test image number (0..{n - 1}).")
        return None
    return (a, f"group A ({len(a)})"), (b, f"group B ({len(b)})")


def latent_arithmetic(loaded) -> None:
    """Glow's attribute manipulation: move a picture along the difference of two groups' mean latents."""
    st.header("Latent arithmetic: move an image towards another class")
    images = ec.test_images(loaded.dataset) if loaded.dataset else "this model's dataset is not built in"
    if isinstance(images, str):
        st.info(f"Latent arithmetic needs the model's test images: {images}.")
        return
    st.markdown("Encode every test image of one group and of another, take the **difference of "
                "their mean latents**, and add a multiple α of it to any image's latent before "
                "decoding. This is how Glow moved faces along *smile* or *glasses*; here the groups "
                "are two classes, or any test images you pick.")
    names = _names(loaded)
    groups = _groups(loaded, names, images)
    if groups is None:
        return
    (members_a, name_a), (members_b, name_b) = groups
    path, mtime = str(loaded.path), ec.file_version(loaded.path)
    mean_a = mean_latents(path, mtime, loaded.dataset, members_a)
    mean_b = mean_latents(path, mtime, loaded.dataset, members_b)
    direction = attribute_direction([torch.from_numpy(m) for m in mean_a], [torch.from_numpy(m) for m in mean_b])
    labels = test_labels(loaded.dataset)
    first_a = members_a[0] if members_a else 0
    picked = ec.image_source(loaded, "cond_arith", default_index=int(first_a))
    if picked is None:
        return
    pixels, where = picked
    L = loaded.config.levels
    cols = st.columns([3, 2])
    alpha = cols[0].slider("α: how far to move", -1.0, 2.0, 1.0, 0.05, key="cond_arith_alpha",
                           help="0 is the picture itself; 1 adds the whole difference of the means.")
    levels = tuple(cols[1].checkbox(f"move z{k + 1}" + (" (coarsest)" if k == L - 1 else " (finest)" if k == 0 else ""),
                                    value=True, key=f"cond_arith_level_{k}") for k in range(L))
    key_dir = tuple((d.numpy().astype(np.float32).tobytes(), tuple(d.shape)) for d in direction)
    alphas = (*STRIP_ALPHAS, round(float(alpha), 2))
    frames = moved_images(path, mtime, pixels.tobytes(), pixels.shape, key_dir, alphas, levels)
    H = loaded.config.image_shape[1]
    live = upscale(to_rgb(frames[-1]), fit_factor(H, 220))
    strip = image_grid(frames[:-1], ncol=len(STRIP_ALPHAS), pad=3, scale=fit_factor(H, 84))
    left, right = st.columns([1, 3], vertical_alignment="center")
    left.image(live, caption=f"α = {alpha:.2f}", output_format="PNG")
    right.image(strip, output_format="PNG",
                caption=f"{where}, moved from {name_a} towards {name_b}: α = "
                        + ", ".join(f"{a:g}" for a in STRIP_ALPHAS))
    if _conditional(loaded) and labels is not None and len(names) >= 2 and name_a in names and name_b in names:
        _relabel_row(loaded, pixels, where, names)
    with ec.explain("How does latent arithmetic work?"):
        st.latex(r"d_\ell = \overline{z_\ell}(\text{towards}) - \overline{z_\ell}(\text{from}),\qquad "
                 r"x' = f^{-1}\big(z_1 + \alpha d_1,\ \dots,\ z_L + \alpha d_L\big)")
        st.markdown(
            "Glow (Kingma & Dhariwal, 2018, section 5.3) encoded the CelebA faces *with* an attribute "
            "and those *without*, and moved any face along the difference of the two mean latents. "
            "It needs no labels in the model, only two groups of images, so it works with every flow "
            f"here. The means use up to {GROUP_SIZE} test images per group. Since a flow is exactly "
            "invertible, α = 0 gives back the picture itself; large α leaves the region where real "
            "latents live, and the picture breaks up. Untick levels to move only the coarse layout "
            "or only the fine detail.")


def _relabel_row(loaded, pixels, where: str, names: list[str]) -> None:
    """A conditional model's own way: keep the picture's ε under its most likely class, decode
    under every other class (the style stays, the class changes)."""
    path, mtime = str(loaded.path), ec.file_version(loaded.path)
    res = classify_picture(path, mtime, pixels.tobytes(), pixels.shape)
    source = int(np.argmax(res["probs"]))
    targets = tuple(range(min(len(names), 16)))
    frames = relabelled(path, mtime, pixels.tobytes(), pixels.shape, source, targets)
    H = loaded.config.image_shape[1]
    tiles = [upscale(to_rgb(f), fit_factor(H, 64)) for f in frames]
    st.image(hstack_images(tiles, gap=6, captions=[names[k] for k in targets], font_size=20), output_format="PNG",
             caption=f"The conditional model's own way: {where}'s noise ε under its most likely class "
                     f"({names[source]}), decoded under each class's prior. What ε stores (slant, "
                     "thickness, size) stays; what the label decides changes.")


def class_sections(loaded) -> None:
    """The Sampling page's class sections after its own: which class (conditional models) and
    latent arithmetic (every model with test images)."""
    if _conditional(loaded):
        which_class(loaded)
    latent_arithmetic(loaded)
