"""Draw by hand: a 280×280 canvas whose drawing comes back at the model's size.

    from pages.common import canvas
    pixels = canvas.draw_image("walk", (1, 28, 28))      # uint8 [C, H, W] or None
    canvas.remember(pixels)                              # keep it for the likelihood page
    canvas.drawings((1, 28, 28))                         # the drawings kept in this tab

The canvas is ``streamlit-drawable-canvas`` (a Fabric.js component, 0.13.0, Streamlit's
components v2). Without it the helper says how to install it and offers the slider-drawn
shapes of ``flowlib.viz.uploads.synthetic_stroke`` instead, so a page never breaks.

MNIST digits are white strokes on black, about 20×20 pixels inside the 28×28 frame, centred
on their centre of mass. A hand drawing on a big canvas is rarely like that, so by default it
is cropped, scaled and centred the same way (``mnist_like``) before the model sees it.
"""

from __future__ import annotations

import numpy as np
import streamlit as st
from PIL import Image

try:
    from streamlit_drawable_canvas import st_canvas
except Exception:  # noqa: BLE001 - not installed, or built for another Streamlit
    st_canvas = None

SIZE = 280
INSTALL = "pip install streamlit-drawable-canvas==0.13.0"
DRAWINGS_KEY = "canvas_drawings"   # this tab's drawings: list of (shape, bytes)
MAX_DRAWINGS = 50


def available() -> bool:
    return st_canvas is not None


def mnist_like(gray: np.ndarray, size: int, box: int | None = None) -> np.ndarray:
    """A big grey drawing (white on black) -> [size, size] uint8 framed like an MNIST digit.

    Crop to the strokes, scale the longer side to ``box`` (20 of 28), paste so the centre of
    mass sits in the middle. An empty drawing gives an empty (black) image.
    """
    box = box or max(1, round(size * 20 / 28))
    ys, xs = np.nonzero(gray > 20)
    if len(ys) == 0:
        return np.zeros((size, size), np.uint8)
    crop = gray[ys.min():ys.max() + 1, xs.min():xs.max() + 1]
    h, w = crop.shape
    scale = box / max(h, w)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    small = np.asarray(Image.fromarray(crop).resize((nw, nh), Image.Resampling.LANCZOS), dtype=np.float32)
    small = np.clip(small, 0, 255)
    mass = small.sum()
    cy = (small.sum(1) * np.arange(nh)).sum() / mass if mass else nh / 2
    cx = (small.sum(0) * np.arange(nw)).sum() / mass if mass else nw / 2
    top = int(round(size / 2 - cy))
    left = int(round(size / 2 - cx))
    top, left = min(max(top, 0), size - nh), min(max(left, 0), size - nw)
    out = np.zeros((size, size), np.float32)
    out[top:top + nh, left:left + nw] = small
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def to_model_pixels(rgba: np.ndarray, shape, *, invert: bool = False, centre: bool = True) -> np.ndarray | None:
    """The canvas's RGBA picture (white strokes on black) -> uint8 [C, H, W], or None if blank."""
    rgba = np.asarray(rgba)
    if rgba.ndim != 3 or rgba.shape[-1] < 3:
        return None
    rgb = rgba[..., :3].astype(np.float32)
    if rgba.shape[-1] == 4:  # transparent pixels are background (black)
        rgb = rgb * (rgba[..., 3:4].astype(np.float32) / 255.0)
    gray = np.clip(rgb.mean(-1), 0, 255).astype(np.uint8)
    if gray.max() < 20:
        return None
    c, h, w = (int(v) for v in shape)
    if centre:
        small = mnist_like(gray, min(h, w))
        if (h, w) != small.shape:
            small = np.asarray(Image.fromarray(small).resize((w, h), Image.Resampling.BILINEAR))
    else:
        small = np.asarray(Image.fromarray(gray).resize((w, h), Image.Resampling.BOX), dtype=np.uint8)
    if invert:
        small = 255 - small
    return np.repeat(small[None], c, axis=0).astype(np.uint8)


def draw_image(key: str, shape, *, invert: bool = False, stroke: int = 22,
               keep_label: str | None = None) -> np.ndarray | None:
    """A drawing canvas with a Clear button; the drawing at the model's size, or None.

    ``invert``: the model wants dark strokes on a light ground (e.g. faces); the canvas is
    always drawn white on black and flipped afterwards. ``keep_label``: also offer a button
    that keeps the drawing in this tab's list (:func:`remember`), for the likelihood page.
    """
    if st_canvas is None:
        return _fallback(key, shape, invert)
    gen_key = f"{key}_canvas_gen"
    gen = int(st.session_state.get(gen_key, 0))
    left, right = st.columns([3, 2], vertical_alignment="top")
    with left:
        # Room above the canvas: its floating toolbar would otherwise cover the widget above.
        st.markdown(f"**Your drawing** · 280×280, reduced to {shape[-2]}×{shape[-1]} for the model")
        result = st_canvas(stroke_width=stroke, stroke_color="#FFFFFF", background_color="#000000",
                           height=SIZE, width=SIZE, drawing_mode="freedraw",
                           return_image_data=True, key=f"{key}_canvas_{gen}")
    with right:
        st.markdown("**Draw with the mouse** (or a finger) in the black square.")
        centre = st.checkbox("Centre and scale like MNIST", value=True, key=f"{key}_centre",
                             help="Crop to the strokes, fit them into 20×20 of the 28×28 frame and "
                                  "centre them on their centre of mass, as MNIST's digits were prepared.")
        if st.button("Clear the drawing", key=f"{key}_clear", icon=":material/ink_eraser:"):
            st.session_state[gen_key] = gen + 1
            st.rerun()
    try:
        data = result.image_data
    except Exception:  # noqa: BLE001 - no picture yet
        data = None
    if data is None:
        return None
    pixels = to_model_pixels(data, shape, invert=invert, centre=centre)
    if pixels is not None and keep_label:
        with right:
            if st.button(keep_label, key=f"{key}_keep", icon=":material/add_chart:"):
                st.session_state[f"{key}_kept_note"] = remember(pixels)
                st.rerun()  # so what the page drew above (e.g. histograms) includes it
            note = st.session_state.pop(f"{key}_kept_note", None)
            if note is not None:
                st.success("Kept: it shows on the likelihood page's histograms." if note
                           else "This drawing is already kept.", icon=":material/check_circle:")
    return pixels


def _fallback(key: str, shape, invert: bool) -> np.ndarray:
    from flowlib.viz.uploads import synthetic_stroke
    st.info("The drawing canvas needs the package **streamlit-drawable-canvas**, which is not "
            f"installed on this server: `{INSTALL}`. Meanwhile, draw a shape with sliders.",
            icon=":material/draw:")
    cols = st.columns(4)
    kind = cols[0].selectbox("Shape", ("seven", "one", "zero", "four", "cross", "bar"), key=f"{key}_shape")
    thick = cols[1].slider("Pen width", 0.05, 0.3, 0.13, 0.01, key=f"{key}_thick")
    angle = cols[2].slider("Tilt (degrees)", -45, 45, 0, 5, key=f"{key}_angle")
    size = cols[3].slider("Size", 0.4, 1.0, 0.75, 0.05, key=f"{key}_size")
    return synthetic_stroke(shape, kind, thick, angle, size, invert=invert)


# -- this tab's drawings ---------------------------------------------------------------------
def remember(pixels: np.ndarray) -> bool:
    """Keep a drawing (uint8 [C, H, W]) in this tab's list; False if it is already there."""
    pixels = np.ascontiguousarray(pixels, dtype=np.uint8)
    kept = st.session_state.setdefault(DRAWINGS_KEY, [])
    entry = (tuple(pixels.shape), pixels.tobytes())
    if entry in kept:
        return False
    kept.append(entry)
    del kept[:-MAX_DRAWINGS]
    return True


def drawings(shape) -> np.ndarray:
    """This tab's kept drawings of one shape, uint8 [N, C, H, W] (N may be 0)."""
    shape = tuple(int(v) for v in shape)
    kept = [np.frombuffer(b, np.uint8).reshape(s) for s, b in st.session_state.get(DRAWINGS_KEY, [])
            if tuple(s) == shape]
    return np.stack(kept) if kept else np.zeros((0, *shape), np.uint8)


def forget() -> None:
    st.session_state.pop(DRAWINGS_KEY, None)
