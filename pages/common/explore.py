"""Shared pieces of the five "Look inside" pages that open a trained model (Masks, Latents,
Sampling, One image step by step, What the likelihood knows), Home's picture and the server's
warm-up: model picker, cached loading, image sources, and the cached pictures the warm-up
draws before the first visit.

Models are loaded once per (path, file version) with ``st.cache_resource``: a page keys its
own caches on ``file_version(path)`` and reads the model with ``cached_model(path, version)``,
so a retrained file reloads. A checkpoint that cannot be loaded gives one ``st.error`` naming
the file and the reason, and the page falls back to a demo model so it keeps working. The
pictures themselves come from ``flowlib.viz``; this module turns widgets into arrays and
caches what the pages draw.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import streamlit as st
import torch

from flowlib import env
from flowlib.analysis.walk import state_image
from flowlib.core.checkpoint import CheckpointError, load_model
from flowlib.viz.images import fit_factor
from flowlib.viz.latents import flow_journey, interpolate_latents, journey_strip, standardised_grey
from flowlib.viz.uploads import UploadError, prepare_upload
from pages.common import links
from pages.common.ui import EXPLORE_KEY

ROOT = Path(__file__).resolve().parents[2]   # the repository (this file is pages/common/explore.py)
DEMO_DIR = ROOT / "checkpoints"
MNIST_DEMO = "MNIST digits demo (Glow, L=2, K=8, width 128)"
FACES_DEMO = "Faces demo (Glow, L=3, K=4, width 64)"
MNIST_COND_DEMO = "MNIST conditional demo: pick a digit (Glow, L=2, K=8, width 128)"
FACES_COND_DEMO = "Faces conditional demo: pick a person (Glow, L=3, K=4, width 64)"
DEMOS = {  # label -> file: the pretrained models that ship with the app (checkpoints/README.md)
    MNIST_DEMO: DEMO_DIR / "mnist-fast.pt",
    FACES_DEMO: DEMO_DIR / "faces-fast.pt",
}
if (DEMO_DIR / "mnist-cond.pt").is_file():   # class-conditional: Sampling's "pick a digit"
    DEMOS[MNIST_COND_DEMO] = DEMO_DIR / "mnist-cond.pt"
if (DEMO_DIR / "faces-cond.pt").is_file():   # class-conditional: Sampling's "pick a person"
    DEMOS[FACES_COND_DEMO] = DEMO_DIR / "faces-cond.pt"
# Torch threads for the pages' maths. One thread is the robust choice: these small models
# decode 64 samples in ~0.1 s on one core, and on a busy 2-core machine (a trainer running
# beside the app) two OpenMP threads were measured 5-9x slower than one.
VIEW_THREADS = env.read("FLOWLAB_VIEW_THREADS")


@dataclass
class Loaded:
    label: str
    path: Path
    model: object
    ckpt: dict

    @property
    def config(self):
        return self.model.config

    @property
    def dataset(self) -> str | None:
        """The dataset the model was trained on, when the page can show its test images."""
        name = self.ckpt.get("dataset")
        if isinstance(name, dict):
            name = name.get("name")
        if name in ("mnist", "faces", "fashion-mnist"):
            return name
        shape = tuple(self.config.image_shape)
        return {(1, 28, 28): "mnist", (1, 32, 32): "faces"}.get(shape)

    @property
    def held_out_bpd(self) -> float | None:
        """The checkpoint's test bits/dim: the final full-test score, else the best evaluation."""
        bpd = self.ckpt.get("final_test_bpd", self.ckpt.get("best_test_bpd"))
        return float(bpd) if isinstance(bpd, (int, float)) else None

    def describe(self) -> str:
        parts = [self.config.summary(), f"{self.model.num_parameters():,} parameters"]
        if self.held_out_bpd is not None:
            parts.append(f"held-out {self.held_out_bpd:.2f} bits/dim")
        step = self.ckpt.get("step")
        if isinstance(step, int):
            parts.append(f"{step:,} training steps")
        return " · ".join(parts)


def _store_runs() -> list[tuple[str, Path]] | None:
    """Runs from the run store, newest first, or None when the store cannot be read."""
    try:
        from flowlib.store.runs import RunStore
    except Exception:  # noqa: BLE001 - the store module may be missing or broken
        return None
    root = env.runs_root()
    if not (root / "runs.sqlite").exists():
        return None
    try:
        store = RunStore(root)
        runs = store.list_runs()
    except Exception:  # noqa: BLE001
        return None
    out = []
    for run in runs:
        path = store.checkpoint_path(run["id"])
        if path.exists():
            name = run.get("name") or f"run {run['id']}"
            out.append((f"Run {run['id']}: {name} ({run.get('dataset', '?')}, {run.get('status', '?')})", path))
    return out


def checkpoint_choices() -> list[tuple[str, Path]]:
    """(label, path) for the demos, then the user's runs from the store, then any other *.pt
    under the runs folder (a file listed once, by its first label)."""
    choices = [(label, path) for label, path in DEMOS.items()]
    runs = _store_runs()
    known = {p.resolve() for _, p in choices}
    if runs is not None:
        for label, path in runs:
            if path.resolve() not in known:
                choices.append((label, path))
                known.add(path.resolve())
    root = env.runs_root()
    if root.is_dir():
        for path in sorted(root.rglob("*.pt")):
            if path.resolve() not in known and not path.name.startswith("."):
                choices.append((f"{path.relative_to(root)}", path))
                known.add(path.resolve())
    return choices


def file_version(path: Path) -> float:
    """The file's modification time (-1 when it cannot be read): the key of every cache that
    holds something computed from a checkpoint, so a retrained file is read again."""
    try:
        return Path(path).stat().st_mtime
    except OSError:
        return -1.0


@st.cache_resource(show_spinner="Loading the model…", max_entries=16)
def cached_model(path: str, version: float):
    """(model, ckpt, None) or (None, None, reason), loaded once per ``(path, version)``;
    ``version`` is :func:`file_version` of the path, so a retrained file reloads. ``ckpt``
    holds the checkpoint's records without its weights and optimizer state."""
    try:
        model, ckpt = load_model(path)
    except CheckpointError as exc:
        return None, None, str(exc)
    except Exception as exc:  # noqa: BLE001 - anything else a hostile file can cause
        return None, None, f"{env.shown_path(path)}: {type(exc).__name__}: {env.shown_error(exc)}"
    ckpt = {k: v for k, v in ckpt.items() if k not in ("model", "optimizer", "rng")}
    return model, ckpt, None


def load(path: Path):
    """:func:`cached_model` of the file as it is now: (model, ckpt, None) or (None, None, reason)."""
    return cached_model(str(path), file_version(path))


SHARED_MODEL = "look_model"   # the model last chosen on any look-inside page (its label)
MODEL_PARAM = "model"         # ?model=mnist-demo, faces-demo, run-12 or a path under the runs folder
DEMO_IDS = {MNIST_DEMO: "mnist-demo", FACES_DEMO: "faces-demo"}


def model_id(label: str, path: Path) -> str:
    """A model's short name in a link: the demos by name, a stored run by its number
    (``run-12``), any other file by its path under the runs folder."""
    if label in DEMO_IDS:
        return DEMO_IDS[label]
    if label.startswith("Run ") and ":" in label and label[4:label.index(":")].isdigit():
        return f"run-{label[4:label.index(':')]}"
    try:
        return str(Path(path).resolve().relative_to(env.runs_root().resolve()))
    except ValueError:
        return Path(path).name


def model_param(key: str, choices: list[tuple[str, Path]]):
    """The URL parameter of a page's model picker (widget ``key``): ?model=<model_id>."""
    ids = {model_id(label, path): label for label, path in choices}
    return links.choice(MODEL_PARAM, key, choices[0][0] if choices else None, ids)


def model_picker(key: str) -> Loaded | None:
    """A select box of checkpoints; returns the loaded choice (or another checkpoint that loads,
    demos first, if it fails; None when none does).

    The choice is shared by the look-inside pages (the last model chosen on one is selected on
    the next) and lives in the URL as ``?model=``. A path left at ``EXPLORE_KEY`` by the Runs
    page or a run's dashboard is selected once and wins over both."""
    choices = checkpoint_choices()
    labels = [c[0] for c in choices]
    shared = st.session_state.get(SHARED_MODEL)
    if key not in st.session_state and shared in labels:
        st.session_state[key] = shared       # chosen on another page: before this page's memory
    links.bind([model_param(key, choices)])  # a link's ?model= wins over both
    wanted = st.session_state.pop(EXPLORE_KEY, None)
    if wanted:
        for label, path in choices:
            if str(path) == str(wanted):
                st.session_state[key] = label
    if st.session_state.get(key) not in labels:
        st.session_state.pop(key, None)
    label = st.selectbox("Model", labels, key=key,
                         help="The demos ship with the app; your own training runs appear below them. "
                              "The choice carries over to the other look-inside pages.")
    st.session_state[SHARED_MODEL] = label
    path = dict(choices)[label]
    model, ckpt, error = load(path)
    if error is not None:
        st.error(f"Could not load {path.name}: {error}", icon=":material/error:")
        for other_label, other in choices:
            if other != path:
                model, ckpt, err2 = load(other)
                if err2 is None:
                    st.info(f"Showing **{other_label}** instead.")
                    label, path = other_label, other
                    break
        else:
            st.warning("No checkpoint could be loaded. Train a model on the Train page, or "
                       "restore checkpoints/mnist-fast.pt and checkpoints/faces-fast.pt.")
            return None
    loaded = Loaded(label, path, model, ckpt)
    st.caption(loaded.describe())
    return loaded


# -- images ----------------------------------------------------------------------------------
@st.cache_resource(show_spinner="Loading test images…", max_entries=4)
def test_images(name: str):
    """uint8 [N, C, H, W] test split of a dataset, or a string saying why it is missing."""
    from flowlib.data import load_images
    from flowlib.data.sources.common import DatasetError
    try:
        return load_images(name, "test").images
    except (DatasetError, OSError) as exc:
        return str(exc)


SOURCES = {"test": "Test image", "upload": "Upload a picture", "draw": "Draw by hand"}


def image_params(key: str, n_images: int, default_index: int, sources=tuple(SOURCES)):
    """The URL parameters of an image picker: ?src=test|upload|draw and ?image=<test image number>."""
    words = {w: SOURCES[w] for w in sources}
    return [links.choice("src", f"{key}_source", words[sources[0]], words),
            links.integer("image", f"{key}_index", min(default_index, max(n_images - 1, 0)), 0,
                          max(n_images - 1, 0))]


def image_source(loaded: Loaded, key: str, default_index: int = 0) -> tuple[np.ndarray, str] | None:
    """Let the user pick an image for the model: a test image, an upload or a drawn shape.

    Returns (uint8 [C, H, W], description) or None with a message on screen. The source and
    the test image's number are in the URL (?src=, ?image=).
    """
    shape = tuple(loaded.config.image_shape)
    images = test_images(loaded.dataset) if loaded.dataset else "this model's dataset is not built in"
    sources = ["Test image", "Upload a picture", "Draw by hand"]
    if isinstance(images, str):
        sources = sources[1:]
    words = tuple(w for w, label in SOURCES.items() if label in sources)
    n = 1 if isinstance(images, str) else int(images.shape[0])
    links.bind(image_params(key, n, default_index, words))
    source = st.radio("Image", sources, horizontal=True, key=f"{key}_source")
    if source == "Test image":
        idx = st.slider("Test image number", 0, n - 1, min(default_index, n - 1), key=f"{key}_index")
        return images[idx].numpy(), f"{loaded.dataset} test image #{idx}"
    if source == "Upload a picture":
        up = st.file_uploader("PNG or JPEG (converted to the model's size and channels)",
                              type=["png", "jpg", "jpeg", "bmp", "gif", "tif", "tiff", "webp", "pgm"],
                              key=f"{key}_upload")
        if up is None:
            st.info("Choose a picture file to see it go through the flow.")
            return None
        try:
            pixels, notes = prepare_upload(up.getvalue(), shape, name=up.name)
        except UploadError as exc:
            st.error(str(exc), icon=":material/error:")
            return None
        if notes:
            st.caption("Converted: " + "; ".join(notes) + ".")
        if loaded.dataset == "mnist" and pixels.mean() > 127:
            if st.checkbox("Invert (MNIST digits are white on black)", value=True, key=f"{key}_invert"):
                pixels = 255 - pixels
        return pixels, f"upload {up.name}"
    # A canvas (streamlit-drawable-canvas); without the package, a pen stroke from sliders.
    from pages.common import canvas
    pixels = canvas.draw_image(f"{key}_draw", shape, invert=loaded.dataset == "faces")
    if pixels is None:
        st.info("Draw something in the black square: a digit, a letter, a face, a scribble.",
                icon=":material/draw:")
        return None
    return pixels, "your drawing"


def costly_image_note(bits_per_dim: float, loaded: Loaded) -> str | None:
    """Why an image costs far more than the model's typical test image (one bit/dim or more
    above its held-out score), in words; None for an ordinary image or an unknown score.

    A drawn "seven" on the faces model scores about 53.7 bits/dim, far above the 8 bits/dim of
    raw pixels, which without a word of explanation reads like a broken model."""
    typical = loaded.held_out_bpd
    if typical is None or not bits_per_dim > typical + 1.0:
        return None
    n_bits = loaded.config.n_bits
    dims = int(np.prod(loaded.config.image_shape))
    beyond_raw = (f" That is more than the {n_bits} bits/dim that storing the raw pixel values "
                  "costs with no model at all: the model is not merely unsure about this image, it "
                  "is confident the pixels should be something else." if bits_per_dim > n_bits else "")
    return (f"**Why this image costs so much.** It costs {bits_per_dim:.2f} bits/dim, against "
            f"{typical:.2f} for a typical held-out image of the data the model learnt from. A flow "
            "spends all of its probability on what it was trained on, so every pixel value it does "
            "not expect (another background, thicker strokes, a shape its data never had) lands "
            f"where its density is thin, and the cost adds up over all {dims:,} values.{beyond_raw} "
            "Section 2 below shows which level pays.")


# -- Sampling's grids ---------------------------------------------------------------------------
# Here rather than in pages/sampling.py so the server can draw the demo models' grids for the
# default seed at every slider temperature before the first visit (pages/common/serve.py):
# one 64-sample grid of the MNIST demo costs 0.12 s on one thread.
SAMPLING_TEMPERATURES = tuple(round(0.05 * k, 2) for k in range(25))   # the slider's 0.00 … 1.20
GLOW_TEMPERATURES = (0.0, 0.25, 0.5, 0.7, 0.8, 0.9, 1.0)  # the set shown in the Glow paper


@st.cache_resource(show_spinner=False, max_entries=8)
def sampling_noise(path: str, mtime: float, seed: int, n: int):
    """The fixed latent noise ε for a model and seed (shared by every temperature)."""
    model, _, _ = cached_model(path, mtime)
    return model.sample_eps(n, torch.Generator().manual_seed(seed))


@st.cache_data(show_spinner=False, max_entries=256)
def sample_grid(path: str, mtime: float, seed: int, temps: tuple, n: int = 64) -> np.ndarray:
    """uint8 [n, C, H, W] samples at one temperature per level (finest first)."""
    model, _, _ = cached_model(path, mtime)
    with compute():
        eps = [e[:n] for e in sampling_noise(path, mtime, seed, 64)]
        x = model.sample(n, temperature=list(temps), eps=eps)
        return model.to_uint8(x).numpy()


INTERPOLATION_FRAMES = (5, 7, 9, 11, 13)   # the Frames slider's values


@st.cache_data(show_spinner=False, max_entries=64)
def interpolation_strips(path: str, mtime: float, ia: int, ib: int, frames: int, dataset: str):
    """Decoded frames on the linear and the spherical path between two test images' latents:
    ({"linear": uint8 [frames, C, H, W], "spherical": ...}, the path positions)."""
    model, _, _ = cached_model(path, mtime)
    imgs = test_images(dataset)
    ts = np.linspace(0, 1, frames).tolist()
    out = {}
    with compute():
        za = model.encode(to_model_space(model, imgs[ia].numpy())).zs
        zb = model.encode(to_model_space(model, imgs[ib].numpy())).zs
        for mode in ("linear", "spherical"):
            path_z = interpolate_latents(za, zb, ts, mode)
            out[mode] = model.to_uint8(model.decode(path_z)).numpy()
    return out, ts


# -- Home's picture ----------------------------------------------------------------------------
JOURNEY_SEED = 3          # the fresh noise of the picture's second row
JOURNEY_TEMPERATURE = 0.8  # Sampling's usual setting: fewer odd strokes than T = 1


@st.cache_data(show_spinner="Running the demo flow once…", max_entries=4)
def journey_picture(path: str, mtime: float, dataset: str, index: int = 0):
    """Home's picture: a test image to noise and fresh noise to an image, through a shipped
    demo checkpoint, level by level. Cached per checkpoint file, so the page stays instant;
    kept here rather than in pages/home.py so the server can draw it before the first visit
    (pages/common/serve.py). Returns (RGB picture, round-trip error) or (None, why)."""
    model, _, error = cached_model(path, mtime)
    if error is not None:
        return None, error
    images = test_images(dataset)
    if isinstance(images, str):
        return None, images
    with compute():
        eps = model.sample_eps(1, torch.Generator().manual_seed(JOURNEY_SEED))
        journey = flow_journey(model, images[index].numpy(), eps, JOURNEY_TEMPERATURE)
    scale = fit_factor(model.config.image_shape[1], 112)
    return journey_strip(journey, scale, font_size=18), journey["round_trip"]


@contextlib.contextmanager
def compute():
    """inference_mode with VIEW_THREADS torch threads, restored afterwards."""
    old = torch.get_num_threads()
    if old != VIEW_THREADS:
        torch.set_num_threads(VIEW_THREADS)
    try:
        with torch.inference_mode():
            yield
    finally:
        if old != VIEW_THREADS:
            torch.set_num_threads(old)


def to_model_space(model, pixels: np.ndarray) -> torch.Tensor:
    """uint8 [C, H, W] -> model input [1, C, H, W] in [-0.5, 0.5], without random noise: bin
    centres, or the median of the learned noise for a model with variational dequantisation
    (the same point its bits/dim budget is computed at)."""
    x = torch.from_numpy(np.array(pixels, dtype=np.uint8, copy=True))[None]
    with torch.no_grad():
        return model.dequantize(x, noise=False)[0]


def walk_frames(model, walk, zs) -> list[np.ndarray]:
    """One uint8 picture [C, H, W] per operation of a walk (``flowlib.analysis.walk``): the
    image itself for the input and output, as the model's pixels (``model.to_uint8``: each
    value at the centre of its n_bits bin, like every other image the app decodes); for
    every other operation the flow's whole state folded into the image's shape
    (``state_image``, with ``zs`` the walk's latents), standardised grey."""
    frames = []
    for op in walk.ops:
        if op.kind in ("input", "output"):
            frames.append(model.to_uint8(op.after)[0].numpy())
        else:
            frames.append(standardised_grey(state_image(op, zs)[0]).numpy())
    return frames


def explain(title: str = "What am I looking at?"):
    return st.expander(title, expanded=False)
