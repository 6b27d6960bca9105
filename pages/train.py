"""Train: pick the data and a model, press Start, watch it learn live.

The page never trains in-process: Start asks ``flowlib.worker`` to launch a separate
process, and the dashboard below only reads the run store (an ``st.fragment`` that polls
every 2 s while the run is active and stops polling when it is not).
"""

from __future__ import annotations

import json
import logging
import re
import time
from pathlib import Path

import numpy as np
import plotly.graph_objects as go
import streamlit as st

from flowlib import PRESET_NOTES, PRESETS, FlowConfig
from flowlib.data import DatasetError, list_datasets, load_images, store_upload
from flowlib.device import bf16_is_fast, pick_device
from flowlib.model import COUPLINGS, DEQUANTIZATIONS, INPUT_TRANSFORMS, MASKS, PERMUTATIONS, PRIORS
from flowlib.train import LR_SCHEDULES, PRESET_LR, TrainConfig, make_optimizer
from pages import ui

ui.require_router()

log = logging.getLogger("flowlab.app")

# -- words for every knob ------------------------------------------------------------------
CHOICE_WORDS = {
    "affine": "affine (RealNVP, Glow)",
    "additive": "additive (NICE)",
    "reverse": "reverse the channel order (RealNVP)",
    "shuffle": "fixed random shuffle",
    "conv1x1": "learned 1×1 conv (Glow)",
    "conv1x1_lu": "learned 1×1 conv, LU-factored",
    "channel": "channel halves (Glow)",
    "checkerboard": "checkerboard pixels",
    "realnvp": "checkerboard then channel (RealNVP)",
    "learned": "learned Gaussian (Glow)",
    "standard": "standard normal N(0, I)",
    "uniform": "uniform noise (RealNVP, Glow)",
    "variational": "learned noise (Flow++)",
    "none": "none: pixel values as they are",
    "logit": "logit (RealNVP)",
    "constant": "constant after warm-up",
    "cosine": "cosine decay to 0 at the end of the budget",
}
HELP = {
    "levels": "L, the number of scales. Each level squeezes 2×2 pixels into channels; after each "
              "level but the last, half the channels leave as that scale's latent. The image side "
              "must divide by 2^L.",
    "steps": "K, flow steps per level (ActNorm → permutation → coupling). More steps: a more "
             "expressive flow, slower steps.",
    "hidden": "Channels of each coupling network; most of the parameters live here.",
    "coupling": "How one half of the values transforms the other half: affine y = x·exp(s) + t "
                "(RealNVP, Glow) or additive y = x + t (NICE, volume-preserving).",
    "permutation": "How channels are mixed between couplings so every value gets transformed.",
    "mask": "Which values a coupling keeps and which it transforms.",
    "split_prior": "Prior of each split-off latent: learned from the half that stays, or N(0, I).",
    "top_prior": "Prior of the last (coarsest) latent.",
    "actnorm": "Glow's per-channel scale and shift, initialised from the first batch.",
    "input_transform": "Logit (RealNVP): the flow's first layer stretches values near black and white "
                       "with logit(α + (1−2α)x), α = 1e-6, and counts that stretch in the log-det. "
                       "Helps a lot on MNIST, whose background is exactly black.",
    "dequantization": "Pixels are whole numbers; a flow models continuous values, so each pixel gets "
                      "noise inside its bin. Uniform noise is the article's choice. Learned noise "
                      "(Flow++) takes the shape the flow finds easiest and is scored with its own "
                      "density, so bits/dim stays an upper bound on the true cost; on MNIST it "
                      "reached a lower score in the same 10 minutes.",
    "n_bits": "Bits per pixel modelled: 8 = all 256 grey levels; 5 = 32 levels (Glow's "
              "CelebA-HQ trick). Valid: 1..8.",
    "batch_size": "Images per training step. Valid: 1..4096.",
    "lr": "Adam's peak learning rate. Valid: 0 < lr ≤ 1. Glow used 0.001, the default for the "
          "larger presets; the small demo presets start from the rate that learned fastest in "
          "a measured sweep (benchmarks/RESULTS.md).",
    "warmup_steps": "The learning rate rises linearly from 0 over these steps (stops early "
                    "NaNs). Valid: 0 or more.",
    "lr_schedule": "What the learning rate does after warm-up: stay at its peak, or fall along a "
                   "cosine to 0 as the budget (steps or minutes) runs out. With a fixed budget the "
                   "cosine ends at a lower test bits/dim (benchmarks/RESULTS.md).",
    "budget": "When the run stops by itself: after a number of steps, or minutes of training.",
    "eval_every": "Steps between evaluations on held-out test images, each with a new grid of "
                  "samples. Valid: 1 or more.",
    "name": "A label for the Runs page; left empty, one is made from the dataset and preset.",
    "bf16": "Run the coupling networks in bfloat16 (on by default where the processor or GPU "
            "does bf16 natively): 20-80 % faster training. Log-determinants, priors and every "
            "reported test bits/dim stay exact float32.",
}
MODEL_FIELDS = ("levels", "steps", "hidden", "coupling", "permutation", "mask", "split_prior",
                "top_prior", "actnorm", "n_bits", "dequantization", "input_transform")
TRAIN_FIELDS = ("batch_size", "lr", "warmup_steps", "eval_every", "bf16", "lr_schedule")
LR_SCHEDULE_DEFAULT = "cosine"
# Every setting of the form that survives a visit to another page (buttons and uploads don't).
FORM_FIELDS = ("dataset", "preset", "budget_kind", "max_steps", "max_minutes", "name", "path",
               "size", "channels", *MODEL_FIELDS, *TRAIN_FIELDS)
CLASSROOM_DATASETS = ("mnist", "faces", "folder")


@st.cache_resource
def fast_bf16_here() -> bool:
    """Whether this machine's training device does bf16 natively (checked once per server)."""
    return bf16_is_fast(pick_device("auto"))

FAST_PRESET = {"mnist": "mnist-fast", "fashion-mnist": "mnist-fast"}
PATH_DATASETS = ("celeba", "cifar10", "folder", "fashion-mnist")
K = "tr_"  # widget-key prefix


# -- cached measurements ---------------------------------------------------------------------
@st.cache_data(show_spinner=False, max_entries=32)
def dataset_info(name: str, options_json: str) -> dict:
    """Count, shape, source and licence of both splits, plus a few example images."""
    options = json.loads(options_json)
    train = load_images(name, "train", **options)
    test = load_images(name, "test", **options)
    examples = test.images[:10].numpy()
    return {"train": train.info.count, "test": test.info.count, "shape": tuple(train.info.shape),
            "source": train.info.source, "licence": train.info.licence, "notes": train.info.notes,
            "display": train.info.display_name, "skipped": train.info.skipped,
            "examples": examples}


@st.cache_data(show_spinner=False, max_entries=64)
def parameter_count(config_json: str) -> int:
    from flowlib import FlowModel
    return FlowModel(FlowConfig.from_dict(json.loads(config_json))).num_parameters()


@st.cache_data(show_spinner=False, max_entries=64)
def measure_speed(config_json: str, batch: int, device: str, bf16: bool = False) -> dict:
    """Images/s of a few real training steps of this config on this device (≤ ~2 s).

    A measurement, not training: random pixels, one or two untimed warm-up steps, then up
    to twelve timed steps or 1.2 s, whichever comes first; the fastest step counts.
    """
    import torch

    import contextlib

    from flowlib import FlowModel
    from flowlib.layers import low_precision_networks

    cfg = FlowConfig.from_dict(json.loads(config_json))
    dev = pick_device(device)
    b = max(1, min(batch, 64))
    gen = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (b, *cfg.image_shape), dtype=torch.uint8, generator=gen)
    model = FlowModel(cfg).to(dev)
    model.initialize(model.preprocess(x))
    opt = make_optimizer(model.parameters(), lr=1e-4)

    precision = (lambda: low_precision_networks(torch.bfloat16)) if bf16 else contextlib.nullcontext

    def step():
        with precision():
            loss = model.bits_per_dim_terms(x).total.mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)

    t0 = time.perf_counter()
    step()                      # cold: allocations, autograd and kernel set-up
    first = time.perf_counter() - t0
    if first < 0.5:
        step()                  # a second untimed step when it is cheap
    times: list[float] = []
    while not times or (len(times) < 12 and sum(times) < 1.2):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    # The fastest step, not the mean: this runs inside the server while the browser (often on
    # the same laptop) redraws the page, and a step that shared the cores with it says more
    # about the browser than about training.
    return {"images_per_s": b / min(times), "batch_measured": b, "steps": len(times)}


# -- helpers ---------------------------------------------------------------------------------
def _max_levels(shape) -> int:
    _, h, w = shape
    levels = 0
    while h % 2 == 0 and w % 2 == 0 and levels < 8:
        h, w, levels = h // 2, w // 2, levels + 1
    return levels


def load_preset_into_widgets(name: str, shape) -> None:
    """Copy a preset's model settings into the widgets, fitting levels to the image size."""
    cfg = PRESETS[name]
    for f in MODEL_FIELDS:
        st.session_state[K + f] = getattr(cfg, f)
    st.session_state[K + "lr"] = PRESET_LR.get(name, TrainConfig.lr)
    top = _max_levels(shape)
    if cfg.levels > top:
        st.session_state[K + "levels"] = top
        st.session_state[K + "levels_note"] = (
            f"The {name} preset uses L={cfg.levels}; {shape[1]}×{shape[2]} images allow at most "
            f"L={top}, so L is set to {top}.")
    else:
        st.session_state.pop(K + "levels_note", None)
    st.session_state[K + "loaded_preset"] = (name, tuple(shape))


def field_of(message: str, known) -> str | None:
    """The config field a ValueError message is about ('levels=3 needs…' -> 'levels')."""
    m = re.match(r"\s*([a-z_]+)", message)
    word = m.group(1) if m else ""
    if word == "image_shape":
        return "levels"
    if word in ("max_steps", "max_minutes") or message.startswith("a budget") or \
            message.startswith("a step budget"):
        return "budget"
    return word if word in known else None


def friendly(message: str) -> str:
    return message[:1].upper() + message[1:] + ("" if message.endswith(".") else ".")


def validate(dataset: str, shape, values: dict, train_values: dict, limits) -> tuple:
    """(FlowConfig | None, TrainConfig | None, {field: message}) for the form's values."""
    errors: dict[str, str] = {}
    base = PRESETS["mnist-fast"].replace(image_shape=tuple(shape), levels=1)
    for f in MODEL_FIELDS:
        try:
            base.replace(**{f: values[f]})
        except ValueError as exc:
            errors[f] = str(exc)
    cfg = None
    if not errors:
        try:
            cfg = base.replace(**values)
        except ValueError as exc:
            errors[field_of(str(exc), MODEL_FIELDS) or "levels"] = str(exc)
    tbase = TrainConfig(dataset=dataset)
    for f, v in train_values.items():
        if f in ("max_steps", "max_minutes"):
            continue
        try:
            tbase.replace(**{f: v})
        except ValueError as exc:
            errors[f] = str(exc)
    tc = None
    try:
        tc = tbase.replace(**train_values)
        limits.check_train(tc.to_dict())
    except ValueError as exc:
        key = field_of(str(exc), TRAIN_FIELDS) or "budget"
        errors.setdefault(key, str(exc))
        tc = None
    return cfg, tc, errors


def show_error(errors: dict, field: str) -> None:
    if field in errors:
        st.error(friendly(errors[field]), icon=":material/block:")


def eta_text(seconds: float) -> str:
    return ui.fmt_duration(seconds)


# -- the run shown on this page ------------------------------------------------------------
def shown_run_id(store, runs) -> int | None:
    """?run=ID in the URL, else this tab's last run, else the newest active run, else the newest."""
    ids = {r["id"] for r in runs}
    wanted = st.query_params.get("run")
    if wanted and str(wanted).isdigit() and int(wanted) in ids:
        return int(wanted)
    mine = st.session_state.get("train_run")
    if mine in ids:
        return mine
    for r in runs:
        if r["status"] in ui.ACTIVE_STATUSES:
            return r["id"]
    return runs[0]["id"] if runs else None


def start_new_run(store, cfg: FlowConfig, tc: TrainConfig, name: str, preset_name: str) -> None:
    from flowlib import worker
    from flowlib.store import RunLimitError, RunStateError

    label = name.strip() or f"{tc.dataset}-{preset_name}"
    run_id = store.create_run(label, tc.dataset, cfg.to_dict(), tc.to_dict(),
                              owner=ui.visitor_id(), preset=preset_name)
    try:
        worker.start_run(store, run_id, owner=ui.control_owner())
    except (RunLimitError, RunStateError, PermissionError, ValueError) as exc:
        store.delete_run(run_id)
        st.session_state["train_flash"] = ("error", friendly(str(exc)))
        return
    st.session_state["train_run"] = run_id
    st.query_params["run"] = str(run_id)
    st.session_state["train_flash"] = ("success", f"Started run {run_id} '{store.get_run(run_id)['name']}'. "
                                                  "The first points appear after a few seconds.")


# -- page: setup ---------------------------------------------------------------------------
st.title("Train a flow")
store = ui.get_store()
runs = store.list_runs()
active = [r for r in runs if r["status"] in ui.ACTIVE_STATUSES]
run_id = shown_run_id(store, runs)

flash = st.session_state.pop("train_flash", None)
if flash:
    getattr(st, flash[0])(flash[1])

# Arriving from Home's "Train MNIST now": ?dataset=mnist&preset=mnist-fast picks them once.
qp = (st.query_params.get("dataset"), st.query_params.get("preset"))
if any(qp) and st.session_state.get(K + "applied_qp") != qp:
    st.session_state[K + "applied_qp"] = qp
    if qp[0]:
        st.session_state[K + "dataset"] = qp[0]
    if qp[1] in PRESETS:
        st.session_state[K + "preset"] = qp[1]

# Streamlit drops a page's widget values whenever another page is shown, so a visit to Runs
# used to bring the form back with zeros in it. The form keeps its own copy (saved at the end
# of every run of this page) and puts back whatever was dropped; defaults fill the rest.
for key, value in st.session_state.get(K + "saved_form", {}).items():
    if key not in st.session_state:
        st.session_state[key] = value
for key, value in {
    K + "max_steps": min(2000, store.limits.max_steps or 2000), K + "max_minutes": 5.0,
    K + "batch_size": min(64, store.limits.max_batch or 64), K + "warmup_steps": 200,
    K + "eval_every": 250, K + "lr_schedule": LR_SCHEDULE_DEFAULT, K + "bf16": fast_bf16_here(),
}.items():
    st.session_state.setdefault(key, value)

registry = {d["name"]: d for d in list_datasets()}
names = [n for n in registry if not ui.classroom_mode() or n in CLASSROOM_DATASETS]
if st.session_state.get(K + "dataset") not in names:
    st.session_state[K + "dataset"] = "mnist" if "mnist" in names else names[0]
if st.session_state.get(K + "preset") not in PRESETS:
    st.session_state[K + "preset"] = "mnist-fast"

with st.expander("**Set up a new run**: data, model, budget", expanded=not active,
                 icon=":material/tune:"):
    c1, c2, c3 = st.columns([1.2, 1.2, 1], gap="large")
    with c1:
        dataset = st.selectbox(
            "Dataset", names, key=K + "dataset",
            format_func=lambda n: registry[n]["display_name"],
            help="Built-in datasets work offline; the others read your own files.")
        spec = registry[dataset]
        st.caption(spec["description"])
        options: dict = {}
        option_error = None
        if dataset in PATH_DATASETS:
            if ui.classroom_mode() or dataset == "folder":
                cap = ui.upload_cap_mb()
                up = st.file_uploader(f"Upload a .zip of pictures (at most {cap} MB)", type=["zip"],
                                      key=K + "upload")
                if up is not None:
                    if up.size > cap * 1024 * 1024:
                        option_error = (f"That zip is {up.size / 1024**2:.1f} MB; this server "
                                        f"accepts at most {cap} MB.")
                    else:
                        try:
                            options["path"] = str(store_upload(up.name, up.getvalue()))
                        except DatasetError as exc:
                            option_error = str(exc)
            if not ui.classroom_mode():
                typed = st.text_input(
                    "…or a folder or zip on this computer", key=K + "path",
                    placeholder="~/pictures/faces.zip",
                    help="A folder of .png/.jpg pictures, a zip of them, or the dataset's own folder.")
                if typed.strip() and "path" not in options:
                    options["path"] = typed.strip()
                if dataset == "cifar10":
                    if st.checkbox("Download CIFAR-10 (170 MB) if it is not here", key=K + "download"):
                        options["download"] = True
            if dataset == "folder":
                o1, o2 = st.columns(2)
                options["size"] = o1.selectbox("Resize to", [32, 28, 64], key=K + "size",
                                               format_func=lambda s: f"{s}×{s}")
                options["channels"] = o2.selectbox("Colour", [1, 3], key=K + "channels",
                                                   format_func=lambda c: "grayscale" if c == 1 else "RGB")
        info = None
        if option_error:
            st.error(option_error, icon=":material/block:")
        elif spec["needs"] and not any(k in options for k in spec["needs"]):
            st.info("Give the pictures' location above to use this dataset.")
        else:
            try:
                with st.spinner(f"Reading {spec['display_name']}…"):
                    info = dataset_info(dataset, json.dumps(options, sort_keys=True))
            except DatasetError as exc:
                st.error(str(exc), icon=":material/block:")
        if info:
            c, h, w = info["shape"]
            st.markdown(f"**{info['train']:,}** training / **{info['test']:,}** test images, "
                        f"**{c}×{h}×{w}**")
            source = info["source"].split(" (/")[0]  # no server paths on a projector
            st.caption(f"Source: {source}  \n{info['licence']}")
            strip = np.concatenate(list(info["examples"][:, 0] if c == 1 else
                                        info["examples"].transpose(0, 2, 3, 1)), axis=1)
            st.image(np.kron(strip, np.ones((2, 2), dtype=np.uint8)) if c == 1 else strip,
                     caption="the first test images", width="content")
    shape = info["shape"] if info else (1, 28, 28)

    with c2:
        preset_name = st.selectbox("Preset", list(PRESETS), key=K + "preset",
                                   help="A starting point; every setting below can be changed.")
        st.caption(PRESET_NOTES[preset_name])
        loaded = st.session_state.get(K + "loaded_preset")
        if loaded is None or loaded[0] != preset_name:
            load_preset_into_widgets(preset_name, shape)
        elif loaded[1] != tuple(shape):  # new image size: keep the user's edits, refit L only
            top = _max_levels(shape)
            if isinstance(st.session_state.get(K + "levels"), int) and st.session_state[K + "levels"] > top:
                st.session_state[K + "levels"] = top
                st.session_state[K + "levels_note"] = (
                    f"{shape[1]}×{shape[2]} images allow at most L={top}, so L is set to {top}.")
            st.session_state[K + "loaded_preset"] = (preset_name, tuple(shape))
        if st.session_state.get(K + "levels_note"):
            st.caption(st.session_state[K + "levels_note"])
    with c3:
        steps_only = ui.classroom_mode()
        kind = st.radio("Budget: stop after", ["steps", "minutes"] if not steps_only else ["steps"],
                        horizontal=True, key=K + "budget_kind", help=HELP["budget"])
        if kind == "steps":
            cap = store.limits.max_steps
            budget = st.number_input("Training steps", step=500,
                                     key=K + "max_steps",
                                     help=f"This server allows at most {cap:,} steps per run." if cap else None)
        else:
            budget = st.number_input("Minutes of training", step=1.0, format="%.1f",
                                     key=K + "max_minutes")
        budget_error_slot = st.empty()
        name = st.text_input("Run name (optional)", key=K + "name", max_chars=80, help=HELP["name"])

    st.markdown("##### Model")
    m1, m2, m3, m4, m5 = st.columns(5)
    with m1:
        st.number_input("Levels L", step=1, key=K + "levels", help=HELP["levels"])
        slot_levels = st.empty()
        st.number_input("Steps per level K", step=1, key=K + "steps", help=HELP["steps"])
        slot_steps = st.empty()
        st.number_input("Hidden width", step=16, key=K + "hidden", help=HELP["hidden"])
        slot_hidden = st.empty()
    with m2:  # how pixels become the flow's continuous input
        st.selectbox("Bits per pixel", list(range(8, 0, -1)), key=K + "n_bits", help=HELP["n_bits"])
        st.selectbox("Dequantisation", DEQUANTIZATIONS, key=K + "dequantization",
                     help=HELP["dequantization"], format_func=CHOICE_WORDS.get)
        st.selectbox("Input transform", INPUT_TRANSFORMS, key=K + "input_transform",
                     help=HELP["input_transform"], format_func=CHOICE_WORDS.get)
    with m3:
        st.selectbox("Coupling", COUPLINGS, key=K + "coupling", help=HELP["coupling"],
                     format_func=CHOICE_WORDS.get)
        st.selectbox("Permutation", PERMUTATIONS, key=K + "permutation",
                     help=HELP["permutation"], format_func=CHOICE_WORDS.get)
    with m4:
        st.selectbox("Mask", MASKS, key=K + "mask", help=HELP["mask"], format_func=CHOICE_WORDS.get)
        st.checkbox("ActNorm", key=K + "actnorm", help=HELP["actnorm"])
    with m5:
        st.selectbox("Prior of split-off latents", PRIORS, key=K + "split_prior",
                     help=HELP["split_prior"], format_func=CHOICE_WORDS.get)
        st.selectbox("Prior of the top latent", PRIORS, key=K + "top_prior",
                     help=HELP["top_prior"], format_func=CHOICE_WORDS.get)

    st.markdown("##### Training")
    t1, t2, t3, t4 = st.columns(4)
    with t1:
        bcap = store.limits.max_batch
        st.number_input("Batch size", step=16, key=K + "batch_size",
                        help=HELP["batch_size"] + (f" This server allows at most {bcap}." if bcap else ""))
        slot_batch = st.empty()
    with t2:
        st.number_input("Learning rate", step=1e-4, format="%.5f", key=K + "lr",
                        help=HELP["lr"])  # its value comes with the preset (PRESET_LR)
        slot_lr = st.empty()
    with t3:
        st.number_input("Warm-up steps", step=50, key=K + "warmup_steps",
                        help=HELP["warmup_steps"])
        slot_warmup = st.empty()
    with t4:
        st.number_input("Evaluate every (steps)", step=50, key=K + "eval_every",
                        help=HELP["eval_every"])
        slot_eval = st.empty()
    t5, t6 = st.columns(2)
    with t5:
        st.selectbox("Learning-rate schedule", LR_SCHEDULES, key=K + "lr_schedule",
                     help=HELP["lr_schedule"], format_func=CHOICE_WORDS.get)
    with t6:
        st.checkbox("Fast bf16 coupling networks", key=K + "bf16",
                    help=HELP["bf16"])

    values = {f: st.session_state[K + f] for f in MODEL_FIELDS}
    train_values = {f: st.session_state[K + f] for f in TRAIN_FIELDS}
    if kind == "steps":
        train_values.update(max_steps=budget, max_minutes=None)
    else:
        train_values.update(max_steps=None, max_minutes=budget)
    train_values["first_eval"] = min(50, max(1, int(train_values["eval_every"]) // 2)) \
        if isinstance(train_values["eval_every"], int) else 50
    train_values["dataset_options"] = options
    cfg, tc, errors = validate(dataset, shape, values, train_values, store.limits)
    for field, slot in (("levels", slot_levels), ("steps", slot_steps), ("hidden", slot_hidden),
                        ("batch_size", slot_batch), ("lr", slot_lr), ("warmup_steps", slot_warmup),
                        ("eval_every", slot_eval), ("budget", budget_error_slot)):
        if field in errors:
            with slot:
                show_error(errors, field)
    for field in set(errors) - {"levels", "steps", "hidden", "batch_size", "lr", "warmup_steps",
                                "eval_every", "budget"}:
        st.error(friendly(errors[field]), icon=":material/block:")

    # parameter count and an honest time estimate, measured here
    st.divider()
    e1, e2 = st.columns([3, 1], gap="large")
    can_start = cfg is not None and tc is not None and info is not None
    with e1:
        if can_start:
            n_params = parameter_count(cfg.to_json())
            busy = " (measured while another run trains, so slower than it will be)" if active else ""
            try:
                with st.spinner("Timing a few training steps on this device…"):
                    speed = measure_speed(cfg.to_json(), int(tc.batch_size), tc.device,
                                          tc.bf16 and fast_bf16_here())
                ips = speed["images_per_s"]
                steps_s = ips / tc.batch_size
                evals = (tc.max_steps or 0) // tc.eval_every + 1
                eval_s = (evals * min(tc.eval_subset, info["test"]) + info["test"]) / (3 * ips)
                if tc.max_steps is not None:
                    total = tc.max_steps / steps_s + eval_s + 8
                    estimate = (f"≈ **{ips:,.0f} images/s** here → about **{eta_text(total)}** for "
                                f"{tc.max_steps:,} steps, tests and start-up included{busy}.")
                else:
                    estimate = (f"≈ **{ips:,.0f} images/s** here → about **{tc.max_minutes * 60 * steps_s:,.0f} "
                                f"steps** in {tc.max_minutes:g} minutes{busy}.")
            except Exception as exc:  # noqa: BLE001 - an estimate must never block Start
                log.warning("speed measurement failed: %s", exc)
                estimate = "Could not time this configuration here; it may be too large for this device."
            st.markdown(f"**{n_params:,} parameters** · {estimate}")
            st.caption(f"{cfg.summary()} · batch {tc.batch_size}, lr {tc.lr:g} ({tc.lr_schedule}), "
                       f"warm-up {tc.warmup_steps} steps, test every {tc.eval_every} steps · trains on "
                       f"{ui.device_line()}")
        elif errors:
            st.warning("Fix the settings marked in red; nothing starts until they are valid.",
                       icon=":material/warning:")
    with e2:
        limit = store.limits.max_concurrent
        blocked = len(active) >= limit
        if blocked:
            st.caption(f"Run {active[0]['id']} '{active[0]['name']}' is training; this server "
                       f"trains {limit} at a time. Stop it first.")
        if st.button("Start", type="primary", icon=":material/play_arrow:", width="stretch",
                     disabled=not can_start or blocked, key=K + "start"):
            start_new_run(store, cfg, tc, name, preset_name)
            st.rerun()


st.session_state[K + "saved_form"] = {
    K + f: st.session_state[K + f] for f in FORM_FIELDS if K + f in st.session_state}


# -- page: the live dashboard ----------------------------------------------------------------
def bpd_figure(m: dict, events: list, axis: str, run_id: int):
    el = m.get("elapsed_s")
    fig = go.Figure()
    hover = "%{y:.3f} bits/dim"
    if "train_bpd" in m:
        c = m["train_bpd"]
        fig.add_trace(go.Scatter(x=ui.x_values(c, el, axis), y=c["value"], mode="lines",
                                 name="train (batches)", line=dict(color=ui.PALETTE[0], width=3),
                                 hovertemplate=hover))
    if "test_bpd" in m:
        c = m["test_bpd"]
        fig.add_trace(go.Scatter(x=ui.x_values(c, el, axis), y=c["value"], mode="lines+markers",
                                 name="test (held-out images)", marker=dict(size=9),
                                 line=dict(color=ui.PALETTE[1], width=3), hovertemplate=hover))
    if "test_bpd_full" in m:
        c = m["test_bpd_full"]
        fig.add_trace(go.Scatter(x=ui.x_values(c, el, axis), y=c["value"], mode="markers",
                                 name="test (full set, at the end)",
                                 marker=dict(size=16, symbol="star", color=ui.PALETTE[2]),
                                 hovertemplate=hover))
    add_event_marks(fig, m, events, axis)
    ui.base_layout(fig, x_title=ui.X_TITLES[axis], y_title="bits/dim (lower is better)",
                   uirevision=f"bpd-{run_id}-{axis}", height=420)
    fig.add_annotation(text="what is bits/dim? (hover)", hovertext=ui.BPD_HELP, showarrow=False, xref="paper",
                       yref="paper", x=1, y=1.0, xanchor="right", yanchor="bottom",
                       font=dict(size=14, color="#3b5bdb"))
    return fig


def add_event_marks(fig, m: dict, events: list, axis: str) -> None:
    """NaN skips, rollbacks, LR drops, errors and resumes: a dotted line where they happened."""
    marks = [e for e in events if e["kind"] in ui.EVENT_STYLE and e.get("step") is not None]
    if not marks:
        return
    el = m.get("elapsed_s")
    ref = m.get("train_bpd")
    steps = [e["step"] for e in marks]
    xs = ui.x_values({"step": steps}, el, axis)
    ys = (np.interp(steps, ref["step"], ref["value"]).tolist() if ref and ref["step"]
          else [None] * len(marks))
    for x, e in zip(xs, marks):
        fig.add_vline(x=x, line=dict(color=ui.EVENT_STYLE[e["kind"]][0], dash="dot", width=2))
    fig.add_trace(go.Scatter(
        x=xs, y=ys, mode="markers", name="events",
        marker=dict(size=14, symbol="x", color=[ui.EVENT_STYLE[e["kind"]][0] for e in marks]),
        text=[f"{ui.EVENT_STYLE[e['kind']][1]}: {e['message']}" for e in marks],
        hovertemplate="%{text}<extra></extra>"))


def decomposition_figure(m: dict, levels: int, n_bits: int, axis: str, run_id: int):
    el = m.get("elapsed_s")
    fig = go.Figure()
    for i in range(levels):
        c = m.get(f"bpd_prior_L{i}")
        if c:
            what = "finest" if i == 0 else ("coarsest" if i == levels - 1 else "")
            fig.add_trace(go.Scatter(x=ui.x_values(c, el, axis), y=c["value"], mode="lines",
                                     name=f"prior of level {i + 1} latent" + (f" ({what})" if what else ""),
                                     line=dict(width=3, color=ui.PALETTE[i % len(ui.PALETTE)]),
                                     hovertemplate="%{y:.3f} bits/dim"))
    c = m.get("bpd_logdet")
    if c:
        fig.add_trace(go.Scatter(x=ui.x_values(c, el, axis), y=c["value"], mode="lines",
                                 name="log-det term", line=dict(width=3, color="#c92a2a", dash="dash"),
                                 hovertemplate="%{y:.3f} bits/dim"))
        xs = ui.x_values(c, el, axis)
        fig.add_trace(go.Scatter(x=[xs[0], xs[-1]], y=[n_bits, n_bits], mode="lines",
                                 name=f"quantisation (+{n_bits})", hoverinfo="skip",
                                 line=dict(width=2, color="#868e96", dash="dot")))
    d = m.get("bpd_dequant")   # learned dequantisation only
    if d:
        fig.add_trace(go.Scatter(x=ui.x_values(d, el, axis), y=d["value"], mode="lines",
                                 name="dequantisation noise log q", hovertemplate="%{y:.3f} bits/dim",
                                 line=dict(width=3, color="#2b8a3e", dash="dashdot")))
    ui.base_layout(fig, x_title=ui.X_TITLES[axis], y_title="bits/dim",
                   uirevision=f"dec-{run_id}-{axis}", height=380)
    fig.add_hline(y=0, line=dict(color="#495057", width=1))
    return fig


def simple_figure(c: dict, el, axis: str, y_title: str, name: str, colour: str, key: str,
                  fmt: str = ".3g"):
    fig = go.Figure(go.Scatter(x=ui.x_values(c, el, axis), y=c["value"], mode="lines", name=name,
                               line=dict(color=colour, width=3),
                               hovertemplate=f"%{{y:{fmt}}} {y_title}<extra></extra>"))
    ui.base_layout(fig, x_title=ui.X_TITLES[axis], y_title=y_title, uirevision=key, height=300,
                   legend=False)
    return fig


def progress(run: dict, m: dict) -> tuple[float, str]:
    """(fraction done, words) from the budget, the step and the recent speed."""
    train = run["train"]
    step = run["step"] or 0
    elapsed = (m.get("elapsed_s") or {}).get("value", [0.0])[-1] if m.get("elapsed_s") else 0.0
    fracs = []
    if train.get("max_steps"):
        fracs.append(step / train["max_steps"])
    if train.get("max_minutes"):
        fracs.append(elapsed / (train["max_minutes"] * 60))
    frac = min(1.0, max(fracs) if fracs else 0.0)
    ips = m.get("images_per_s", {}).get("value", [])
    eta = ""
    if run["status"] in ("running",) and ips:
        steps_s = float(np.mean(ips[-5:])) / max(1, train.get("batch_size", 64))
        left = []
        if train.get("max_steps"):
            left.append((train["max_steps"] - step) / max(steps_s, 1e-9))
        if train.get("max_minutes"):
            left.append(train["max_minutes"] * 60 - elapsed)
        if left:
            eta = f" · about {ui.fmt_duration(max(0.0, min(left)))} left"
    of = f" of {train['max_steps']:,}" if train.get("max_steps") else ""
    budget = f" (budget {train['max_minutes']:g} min)" if train.get("max_minutes") else ""
    return frac, f"Step {step:,}{of}{budget} · {ui.fmt_duration(elapsed)} of training{eta}"


def controls(store, run: dict) -> None:
    from flowlib import worker
    from flowlib.store import RunLimitError, RunStateError

    status = run["status"]
    rid = run["id"]
    b1, b2, b3, _ = st.columns([1, 1, 1.3, 1.7])
    try:
        if status in ("queued", "running"):
            if b1.button("Stop", icon=":material/stop:", key=f"stop_{rid}", width="stretch",
                         help="Finishes the current step, saves a checkpoint, and stops. Resume continues."):
                worker.stop_run(store, rid, owner=ui.control_owner())
                st.rerun()
        elif status in ("stopped", "failed", "lost"):
            if b1.button("Resume", icon=":material/play_arrow:", type="primary", key=f"resume_{rid}",
                         width="stretch", help="Continue from the last checkpoint with the same settings."):
                worker.resume_run(store, rid, owner=ui.control_owner())
                st.session_state["train_run"] = rid
                st.rerun(scope="app")
        elif status == "finished":
            more = 1000 if run["train"].get("max_steps") else None
            label = "Train 1,000 more steps" if more else "Train 5 more minutes"
            if b1.button(label, icon=":material/add:", key=f"more_{rid}", width="stretch",
                         help="Raise the budget and continue from the final checkpoint."):
                if more:
                    worker.resume_run(store, rid, owner=ui.control_owner(),
                                      max_steps=run["train"]["max_steps"] + more)
                else:
                    worker.resume_run(store, rid, owner=ui.control_owner(),
                                      max_minutes=run["train"]["max_minutes"] + 5)
                st.rerun(scope="app")
    except (RunLimitError, RunStateError, PermissionError, ValueError, KeyError) as exc:
        st.error(friendly(str(exc)), icon=":material/block:")
    if b2.button("Compare in Runs", icon=":material/stacked_line_chart:", key=f"compare_{rid}",
                 width="stretch"):
        st.switch_page("pages/runs.py", query_params={"compare": str(rid)})
    ckpt = store.checkpoint_path(rid)
    if status in ("stopped", "finished", "failed", "lost") and ckpt.is_file():
        if b3.button("Look inside this model", icon=":material/layers:", key=f"explore_{rid}",
                     width="stretch"):
            st.session_state[ui.EXPLORE_KEY] = str(ckpt)
            st.session_state[ui.EXPLORE_RUN_KEY] = rid
            st.switch_page("pages/latents.py")


def render_dashboard(run_id: int, was_active: bool) -> None:
    run = store.get_run(run_id)
    if run is None:
        st.info("This run was deleted. Start a new one above, or pick one on the Runs page.")
        return
    status = run["status"]
    if was_active and status not in ui.ACTIVE_STATUSES:
        st.rerun(scope="app")  # the run ended: update the buttons and switch the timer off
    icon = {"running": ":material/sync:", "queued": ":material/hourglass_top:",
            "stopping": ":material/pause_circle:", "stopped": ":material/pause_circle:",
            "finished": ":material/check_circle:", "failed": ":material/error:",
            "lost": ":material/warning:"}.get(status, "")
    colour = {"running": "green", "queued": "blue", "stopping": "orange", "stopped": "gray",
              "finished": "green", "failed": "red", "lost": "orange"}.get(status, "gray")
    st.markdown(f"### Run {run['id']} · {run['name']} &nbsp; :{colour}-badge[{icon} "
                f"{ui.STATUS_WORDS.get(status, status)}]")
    cfgd = run["config"]
    st.caption(f"{run['dataset']} · preset {run.get('preset') or 'custom'} · "
               f"L={cfgd.get('levels')}, K={cfgd.get('steps')}, hidden {cfgd.get('hidden')}, "
               f"{cfgd.get('coupling')}, {cfgd.get('permutation')}, {cfgd.get('mask')} mask · "
               f"batch {run['train'].get('batch_size')}, lr {run['train'].get('lr'):g} "
               f"({run['train'].get('lr_schedule', 'constant')})")
    controls(store, run)

    if status == "failed":
        st.error(f"**This run failed.** {run['message']}", icon=":material/error:")
    elif status == "lost":
        st.warning(run["message"], icon=":material/warning:")
    elif status == "finished":
        st.success(run["message"], icon=":material/check_circle:")
    elif status in ("queued", "stopping", "stopped"):
        st.info(friendly(run["message"]), icon=":material/info:")

    m = store.metrics(run_id)
    events = store.events(run_id)
    frac, words = progress(run, m)
    last = {k: v["value"][-1] for k, v in m.items() if v["value"]}
    if "train_bpd" in last:
        test = f" (test {last['test_bpd']:.3f})" if "test_bpd" in last else ""
        words = words.replace(" · ", f" · {last['train_bpd']:.3f} bits/dim{test} · ", 1)
    st.progress(frac, text=words)

    last = {k: v["value"][-1] for k, v in m.items() if v["value"]}
    k1, k2, k3, k4, k5 = st.columns(5)
    k1.metric("Train bits/dim", f"{last['train_bpd']:.3f}" if "train_bpd" in last else "–",
              help=ui.BPD_HELP, border=True)
    k2.metric("Test bits/dim", f"{last['test_bpd']:.3f}" if "test_bpd" in last else "–",
              help="The same measure on held-out test images the model never trains on. "
                   + ui.BPD_HELP, border=True)
    k3.metric("Loss", f"{last['loss_nats']:,.0f} nats" if "loss_nats" in last else "–",
              help=ui.LOSS_HELP, border=True)
    # The unit sits in the label: "1,057 img/s" did not fit the card at 1600 px and got cut.
    k4.metric("Images / second", f"{last['images_per_s']:,.0f}" if "images_per_s" in last else "–",
              help=ui.IMAGES_PER_S_HELP, border=True)
    k5.metric("Learning rate", f"{last['lr']:.2g}" if "lr" in last else "–", help=ui.LR_HELP,
              border=True)
    if not m:
        st.info("Waiting for the first measurements: the training process is loading the data "
                "and building the model (a few seconds).", icon=":material/hourglass_top:")
        return

    left, right = st.columns([3, 2], gap="large")
    with left:
        t1, t2 = st.columns([3, 2], vertical_alignment="bottom")
        t1.markdown("**Bits per dimension**: train and test", help=ui.BPD_HELP)
        axis = t2.segmented_control(
            "x-axis of every chart", ["step", "time"], default="step", key=f"axis_{run_id}",
            format_func=lambda a: "by step" if a == "step" else "by training time",
            required=True, label_visibility="collapsed") or "step"
        st.plotly_chart(bpd_figure(m, events, axis, run_id), key=f"bpd_chart_{run_id}",
                        config={"displaylogo": False})
    with right:
        st.markdown("**Samples from the model**", help="Decoded from fixed latent noise at each "
                    "evaluation; temperature scales the noise (0 = the most likely image).")
        latest = store.latest_samples(run_id)
        if latest and Path(latest["path"]).is_file():
            from PIL import Image
            img = Image.open(latest["path"])
            factor = max(1, 640 // max(1, img.width))
            if factor > 1:
                img = img.resize((img.width * factor, img.height * factor), Image.NEAREST)
            st.image(img, width="stretch")
            st.caption(f"Step {latest['step']:,}. {ui.SAMPLE_CAPTION}")
        else:
            st.caption("The first sample grid appears at the first evaluation "
                       f"(step {run['train'].get('first_eval') or run['train'].get('eval_every')}).")

    levels = int(run["config"].get("levels", 1))
    n_bits = int(run["config"].get("n_bits", 8))
    d1, d2 = st.columns(2, gap="large")
    with d1:
        st.markdown("**Where the bits go**: train bits/dim split into its parts",
                    help="train bits/dim = Σ (each level's prior term) + log-det term + n_bits. The "
                         "prior terms: how unlikely each scale's latent is under its Gaussian. The "
                         "log-det term is negative when the flow spreads the data out; it pays for "
                         "squeezing the data into the Gaussians. With learned dequantisation noise "
                         "one more term, log q of that noise, is added (green).")
        st.plotly_chart(decomposition_figure(m, levels, n_bits, axis, run_id),
                        key=f"dec_chart_{run_id}", config={"displaylogo": False})
    def metric_chart(metric: str, title: str, help_text: str, y_title: str, name: str,
                     colour: str, short: str, fmt: str) -> None:
        """One metric's line chart under its title; nothing before its first logged row."""
        if metric in m:
            st.markdown(title, help=help_text)
            st.plotly_chart(simple_figure(m[metric], m.get("elapsed_s"), axis, y_title, name, colour,
                                          f"{short}-{run_id}-{axis}", fmt),
                            key=f"{short}_chart_{run_id}", config={"displaylogo": False})

    with d2:
        metric_chart("loss_nats", "**Training loss**: negative log-likelihood per image",
                     ui.LOSS_HELP, "nats/image", "loss", ui.PALETTE[3], "loss", ",.0f")
    s1, s2 = st.columns(2, gap="large")
    with s1:
        metric_chart("images_per_s", "**Speed**", ui.IMAGES_PER_S_HELP, "images/s", "images/s",
                     ui.PALETTE[4], "ips", ",.0f")
    with s2:
        metric_chart("lr", "**Learning rate**", ui.LR_HELP, "learning rate", "lr", ui.PALETTE[5],
                     "lr", ".2g")
    shown = [e for e in events if e["kind"] not in ("samples", "checkpoint")]
    with st.expander(f"Events ({len(shown)})", icon=":material/list:"):
        for e in shown[-50:]:
            at = f"step {e['step']:,}" if e.get("step") is not None else ""
            st.markdown(f"- **{e['kind']}** {at}: {e['message']}")


st.divider()
if run_id is None:
    st.info("No runs yet. Pick a dataset and press **Start** above; the live curves appear here.",
            icon=":material/info:")
else:
    shown = next(r for r in runs if r["id"] == run_id)
    poll = shown["status"] in ui.ACTIVE_STATUSES

    @st.fragment(run_every=2.0 if poll else None)
    def live_dashboard():
        with ui.guard("updating the live dashboard"):
            render_dashboard(run_id, poll)

    live_dashboard()
