"""Train: pick the data and a model, press Start, watch it learn live.

The page never trains in-process: Start asks ``flowlib.worker`` to launch a separate
process, and the dashboard below only reads the run store (an ``st.fragment`` that polls
every 2 s while the run is active and stops polling when it is not).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import plotly.graph_objects as go
import streamlit as st

from flowlib.config import (APP_TRAIN_DEFAULTS, PRESET_LR, PRESET_NOTES, PRESETS, ConfigError, FlowConfig,
                            TrainConfig, field_errors, form_fields, max_levels, settings_of)
from flowlib.data import DatasetError, list_datasets, load_images, store_upload
from flowlib.device import bf16_is_fast, pick_device
from flowlib.estimate import SpeedEstimator, SpeedRequest, parameter_count
from pages.common import ui
from pages.common import settings_form

ui.require_router()


# -- the form -------------------------------------------------------------------------------
# Labels, help, choices and checks of the model and training settings come from
# flowlib.config; only the page's own widgets (data, budget switch, run name) are worded here.
BUDGET_HELP = "When the run stops by itself: after a number of steps, or minutes of training."
NAME_HELP = "A label for the Runs page; left empty, one is made from the dataset and preset."
MODEL_FIELDS = form_fields(FlowConfig)
TRAIN_FIELDS = form_fields(TrainConfig)
TRAIN_SETTINGS = dict(settings_of(TrainConfig))
# Every setting of the form that survives a visit to another page (buttons and uploads don't).
FORM_FIELDS = ("dataset", "preset", "budget_kind", "max_steps", "max_minutes", "name", "path",
               "size", "channels", *MODEL_FIELDS, *TRAIN_FIELDS)
FORM_KEY = "tr_"  # prefix of the form's widget keys in st.session_state
FORM_OPEN_KEY = "train_form_open"  # whether this tab shows the set-up form expanded
# Where a field's error is shown when the field has no widget of its own.
ERROR_SLOT_OF = {"max_steps": "budget", "max_minutes": "budget", "image_shape": "levels"}
CLASSROOM_DATASETS = ("mnist", "faces", "folder")
PATH_DATASETS = ("celeba", "cifar10", "folder", "fashion-mnist")   # datasets that read a path


@st.cache_resource
def fast_bf16_here() -> bool:
    """Whether this machine's training device does bf16 natively (checked once per server)."""
    return bf16_is_fast(pick_device("auto"))


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


@st.cache_resource(show_spinner=False)
def speed_estimator(cache_dir: str) -> SpeedEstimator:
    """One per runs folder, so this server watches its measuring processes in one place."""
    return SpeedEstimator(cache_dir)


def speed_estimate(store, cfg: FlowConfig, tc: TrainConfig) -> dict | None:
    """Images/s of this config from earlier runs, the cache, or a measuring process started
    now (None until it answers). Never builds the model or trains in this server."""
    request = SpeedRequest.for_run(cfg, tc)
    return speed_estimator(str(store.root / "speed-estimates")).estimate(request, store)


def estimate_words(speed: dict | None, tc: TrainConfig, n_test: int, busy: bool) -> str:
    """'≈ 480 images/s here → about 4 min 10 s for 2,000 steps …', or why there is none yet."""
    if speed is None:
        return "timing a few training steps in a separate process…"
    if "error" in speed:
        return f"no speed estimate: {speed['error']}."
    ips = speed["images_per_s"]
    if speed.get("source") == "history":
        runs = speed.get("runs", 1)
        how = f" (the median of {runs} earlier run{'s' if runs != 1 else ''} of these settings)"
    else:
        how = " (measured while another run trains, so slower than it will be)" if busy else ""
    steps_s = ips / tc.batch_size
    if tc.max_steps is not None:
        evals = tc.max_steps // tc.eval_every + 1
        eval_s = (evals * min(tc.eval_subset, n_test) + n_test) / (3 * ips)
        total = tc.max_steps / steps_s + eval_s + 8
        return (f"≈ **{ips:,.0f} images/s** here → about **{ui.fmt_duration(total)}** for "
                f"{tc.max_steps:,} steps, tests and start-up included{how}.")
    return (f"≈ **{ips:,.0f} images/s** here → about **{tc.max_minutes * 60 * steps_s:,.0f} "
            f"steps** in {tc.max_minutes:g} minutes{how}.")


def estimate_line(cfg: FlowConfig, tc: TrainConfig, n_test: int, busy: bool, polling: bool) -> None:
    """Parameters (arithmetic) and the speed estimate; in a polling fragment until it is known."""
    speed = speed_estimate(store, cfg, tc)
    if polling and speed is not None:
        st.rerun(scope="app")   # known now: draw it once more without the timer
    st.markdown(f"**{parameter_count(cfg):,} parameters** · {estimate_words(speed, tc, n_test, busy)}")


# -- helpers ---------------------------------------------------------------------------------
def load_preset_into_widgets(name: str, shape) -> None:
    """Copy a preset's model settings into the widgets, fitting levels to the image size."""
    cfg = PRESETS[name]
    for f in MODEL_FIELDS:
        st.session_state[FORM_KEY + f] = getattr(cfg, f)
    st.session_state[FORM_KEY + "lr"] = PRESET_LR.get(name, APP_TRAIN_DEFAULTS.lr)
    top = max_levels(shape[1], shape[2])
    if cfg.levels > top:
        st.session_state[FORM_KEY + "levels"] = top
        st.session_state[FORM_KEY + "levels_note"] = (
            f"The {name} preset uses L={cfg.levels}; {shape[1]}×{shape[2]} images allow at most "
            f"L={top}, so L is set to {top}.")
    else:
        st.session_state.pop(FORM_KEY + "levels_note", None)
    st.session_state[FORM_KEY + "loaded_preset"] = (name, tuple(shape))


def friendly(message: str) -> str:
    return message[:1].upper() + message[1:] + ("" if message.endswith(".") else ".")


def error_slot(field: str | None) -> str:
    """The form slot that shows an error about ``field`` (a limit's plain ValueError: the budget)."""
    return ERROR_SLOT_OF.get(field, field or "budget")


def validate(dataset: str, shape, preset_name: str, values: dict, train_values: dict, limits) -> tuple:
    """(FlowConfig | None, TrainConfig | None, {form slot: message}) for the form's values.

    Every value that is wrong on its own is reported at once; the rules that tie fields
    together (levels vs image size, a budget) once each field is fine.
    """
    errors = {error_slot(f): m for f, m in field_errors(FlowConfig, values).items()}
    cfg = None
    if not errors:
        try:  # the preset's other fields (not on the form) come along
            cfg = PRESETS[preset_name].replace(image_shape=tuple(shape), **values)
        except ConfigError as exc:
            errors[error_slot(exc.field)] = str(exc)
    train_errors = {error_slot(f): m for f, m in field_errors(TrainConfig, train_values).items()}
    tc = None
    if not train_errors:
        try:
            tc = APP_TRAIN_DEFAULTS.replace(dataset=dataset, **train_values)
            limits.check_train(tc.to_dict())
        except ValueError as exc:
            train_errors[error_slot(getattr(exc, "field", None))] = str(exc)
            tc = None
    for slot, message in train_errors.items():
        errors.setdefault(slot, message)
    return cfg, tc, errors


def show_error(errors: dict, field: str) -> None:
    if field in errors:
        st.error(friendly(errors[field]), icon=":material/block:")


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
    from flowlib.store import RunLimitError

    label = name.strip() or f"{tc.dataset}-{preset_name}"
    try:
        run_id = worker.submit(store, label, tc.dataset, cfg.to_dict(), tc.to_dict(),
                               owner=ui.visitor_id(), preset=preset_name)
    except RunLimitError:  # every slot taken (a race: Start is disabled while blocked)
        others = [r for r in store.list_runs() if r["status"] in ui.ACTIVE_STATUSES]
        st.session_state["train_flash"] = ("error", busy_words(others, store.limits.max_concurrent)
                                           + " Stop it first, or wait until it finishes.")
        return
    except (ValueError, OSError) as exc:
        st.session_state["train_flash"] = ("error", friendly(str(exc)))
        return
    st.session_state["train_run"] = run_id
    st.session_state[FORM_OPEN_KEY] = False   # the dashboard is what matters now
    st.query_params["run"] = str(run_id)
    st.session_state["train_flash"] = ("success", f"Started run {run_id} '{store.get_run(run_id)['name']}'. "
                                                  + first_points_words(store, cfg, tc))


# Measured here: a worker process needs ~6-10 s on 2 cores (torch import, the data from disk,
# the model, ActNorm's start) before its first step; longer while the machine is busy.
STARTUP_S = (6, 15)


def first_points_words(store, cfg: FlowConfig, tc: TrainConfig) -> str:
    """When the first chart point is due, honestly: start-up plus ``log_every`` steps at the
    estimated speed (a range, since the machine's load moves it)."""
    speed = speed_estimate(store, cfg, tc)
    ips = speed.get("images_per_s") if speed else None
    test = (f"; the first test point at step {tc.first_eval:,}" if tc.first_eval
            else f"; the first test point at step {tc.eval_every:,}")
    if not ips:
        return (f"The first training point comes at step {tc.log_every} once the process has loaded the "
                f"data and built the model (usually {STARTUP_S[0]}–{STARTUP_S[1]} s here){test}.")
    step_s = tc.batch_size / ips
    low = STARTUP_S[0] + tc.log_every * step_s
    high = STARTUP_S[1] + 2 * tc.log_every * step_s     # a busy machine: twice as slow
    return (f"The first training point is due at step {tc.log_every}, in about {low:.0f}–{high:.0f} s "
            f"(start-up, then {step_s * 1000:.0f} ms per step at the estimated speed){test}.")


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
arrived_with_qp = any(qp) and st.session_state.get(FORM_KEY + "applied_qp") != qp
if arrived_with_qp:
    st.session_state[FORM_KEY + "applied_qp"] = qp
    if qp[0]:
        st.session_state[FORM_KEY + "dataset"] = qp[0]
    if qp[1] in PRESETS:
        st.session_state[FORM_KEY + "preset"] = qp[1]

# Streamlit drops a page's widget values whenever another page is shown, so a visit to Runs
# used to bring the form back with zeros in it. The form keeps its own copy (saved at the end
# of every run of this page) and puts back whatever was dropped; defaults fill the rest.
for key, value in st.session_state.get(FORM_KEY + "saved_form", {}).items():
    if key not in st.session_state:
        st.session_state[key] = value
form_defaults = {f: getattr(APP_TRAIN_DEFAULTS, f) for f in ("max_steps", "max_minutes", *TRAIN_FIELDS)}
form_defaults.update(  # this server's caps, and bf16 only where it is fast
    max_steps=min(APP_TRAIN_DEFAULTS.max_steps, store.limits.max_steps or APP_TRAIN_DEFAULTS.max_steps),
    batch_size=min(ui.default_batch(), store.limits.max_batch or ui.default_batch()),
    bf16=fast_bf16_here())
for field, value in form_defaults.items():
    st.session_state.setdefault(FORM_KEY + field, value)

registry = {d["name"]: d for d in list_datasets()}
names = [n for n in registry if not ui.classroom_mode() or n in CLASSROOM_DATASETS]
if st.session_state.get(FORM_KEY + "dataset") not in names:
    st.session_state[FORM_KEY + "dataset"] = "mnist" if "mnist" in names else names[0]
if st.session_state.get(FORM_KEY + "preset") not in PRESETS:
    st.session_state[FORM_KEY + "preset"] = "mnist-fast"

# Whether the set-up form is open is this tab's choice, kept in session state. It used to be
# `expanded=not active`, so pressing Stop flipped it open and pushed the dashboard below the
# fold. Open on a tab's first visit with no runs, or when Home's "Train MNIST now" sent us;
# closed once a run is started; Stop leaves it as it is.
if FORM_OPEN_KEY not in st.session_state:
    st.session_state[FORM_OPEN_KEY] = run_id is None
if arrived_with_qp:
    st.session_state[FORM_OPEN_KEY] = True
with st.expander("**Set up a new run**: data, model, budget",
                 expanded=bool(st.session_state[FORM_OPEN_KEY]) and not active,
                 icon=":material/tune:"):
    data_col, preset_col, budget_col = st.columns([1.2, 1.2, 1], gap="large")
    with data_col:
        dataset = st.selectbox(
            "Dataset", names, key=FORM_KEY + "dataset",
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
                                      key=FORM_KEY + "upload")
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
                    "…or a folder or zip on this computer", key=FORM_KEY + "path",
                    placeholder="~/pictures/faces.zip",
                    help="A folder of .png/.jpg pictures, a zip of them, or the dataset's own folder.")
                if typed.strip() and "path" not in options:
                    options["path"] = typed.strip()
                if dataset == "cifar10":
                    if st.checkbox("Download CIFAR-10 (170 MB) if it is not here", key=FORM_KEY + "download"):
                        options["download"] = True
            if dataset == "folder":
                size_col, colour_col = st.columns(2)
                options["size"] = size_col.selectbox("Resize to", [32, 28, 64], key=FORM_KEY + "size",
                                               format_func=lambda s: f"{s}×{s}")
                options["channels"] = colour_col.selectbox("Colour", [1, 3], key=FORM_KEY + "channels",
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

    with preset_col:
        preset_name = st.selectbox("Preset", list(PRESETS), key=FORM_KEY + "preset",
                                   help="A starting point; every setting below can be changed.")
        st.caption(PRESET_NOTES[preset_name])
        loaded = st.session_state.get(FORM_KEY + "loaded_preset")
        if loaded is None or loaded[0] != preset_name:
            load_preset_into_widgets(preset_name, shape)
        elif loaded[1] != tuple(shape):  # new image size: keep the user's edits, refit L only
            top = max_levels(shape[1], shape[2])
            if isinstance(st.session_state.get(FORM_KEY + "levels"), int) and st.session_state[FORM_KEY + "levels"] > top:
                st.session_state[FORM_KEY + "levels"] = top
                st.session_state[FORM_KEY + "levels_note"] = (
                    f"{shape[1]}×{shape[2]} images allow at most L={top}, so L is set to {top}.")
            st.session_state[FORM_KEY + "loaded_preset"] = (preset_name, tuple(shape))
        if st.session_state.get(FORM_KEY + "levels_note"):
            st.caption(st.session_state[FORM_KEY + "levels_note"])
    with budget_col:
        steps_only = ui.classroom_mode()
        kind = st.radio("Budget: stop after", ["steps", "minutes"] if not steps_only else ["steps"],
                        horizontal=True, key=FORM_KEY + "budget_kind", help=BUDGET_HELP)
        if kind == "steps":
            cap = store.limits.max_steps
            budget = st.number_input(TRAIN_SETTINGS["max_steps"].label, step=500,
                                     key=FORM_KEY + "max_steps",
                                     help=f"This server allows at most {cap:,} steps per run." if cap else None)
        else:
            budget = st.number_input(TRAIN_SETTINGS["max_minutes"].label, step=1.0, format="%.1f",
                                     key=FORM_KEY + "max_minutes")
        budget_error_slot = st.empty()
        name = st.text_input("Run name (optional)", key=FORM_KEY + "name", max_chars=80, help=NAME_HELP)

    st.markdown("##### Model")
    slots = settings_form.render_settings(FlowConfig, MODEL_FIELDS, FORM_KEY, columns=4)
    st.markdown("##### Training")
    batch_cap = store.limits.max_batch
    slots |= settings_form.render_settings(   # the learning rate comes with the preset (PRESET_LR)
        TrainConfig, TRAIN_FIELDS, FORM_KEY, columns=4,
        extra_help={"batch_size": f"This server allows at most {batch_cap}." if batch_cap else ""})
    slots["budget"] = budget_error_slot

    values = settings_form.form_values(FlowConfig, FORM_KEY, MODEL_FIELDS)
    train_values = settings_form.form_values(TrainConfig, FORM_KEY, TRAIN_FIELDS)
    if kind == "steps":
        train_values.update(max_steps=budget, max_minutes=None)
    else:
        train_values.update(max_steps=None, max_minutes=budget)
    train_values["first_eval"] = min(50, max(1, int(train_values["eval_every"]) // 2)) \
        if isinstance(train_values["eval_every"], int) else 50
    train_values["dataset_options"] = options
    cfg, tc, errors = validate(dataset, shape, preset_name, values, train_values, store.limits)
    for field in errors:
        if field in slots:
            with slots[field]:
                show_error(errors, field)
        else:
            show_error(errors, field)

    # parameter count and an honest time estimate (never measured in this server)
    st.divider()
    e1, e2 = st.columns([3, 1], gap="large")
    can_start = cfg is not None and tc is not None and info is not None
    with e1:
        if can_start:
            # Arithmetic and a separate process: the page never waits for a measurement.
            pending = speed_estimate(store, cfg, tc) is None
            st.fragment(estimate_line, run_every=1.0 if pending else None)(
                cfg, tc, info["test"], bool(active), pending)
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
                     disabled=not can_start or blocked, key=FORM_KEY + "start"):
            start_new_run(store, cfg, tc, name, preset_name)
            st.rerun()


st.session_state[FORM_KEY + "saved_form"] = {
    FORM_KEY + f: st.session_state[FORM_KEY + f] for f in FORM_FIELDS
    if FORM_KEY + f in st.session_state}


# -- page: the live dashboard ----------------------------------------------------------------
def bpd_figure(m: dict, events: list, axis: str, run_id: int):
    el = m.get("elapsed_s")
    fig = go.Figure()
    hover = "%{y:.3f} bits/dim"
    if "train_bpd" in m:
        c = m["train_bpd"]
        fig.add_trace(go.Scatter(x=ui.x_values(c, el, axis), y=c["value"], mode=ui.line_mode(c["value"]),
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
    ui.add_bpd_help(fig)
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
            fig.add_trace(go.Scatter(x=ui.x_values(c, el, axis), y=c["value"], mode=ui.line_mode(c["value"]),
                                     name=f"prior of level {i + 1} latent" + (f" ({what})" if what else ""),
                                     line=dict(width=3, color=ui.PALETTE[i % len(ui.PALETTE)]),
                                     hovertemplate="%{y:.3f} bits/dim"))
    c = m.get("bpd_logdet")
    if c:
        fig.add_trace(go.Scatter(x=ui.x_values(c, el, axis), y=c["value"], mode=ui.line_mode(c["value"]),
                                 name="log-det term", line=dict(width=3, color="#c92a2a", dash="dash"),
                                 hovertemplate="%{y:.3f} bits/dim"))
        xs = ui.x_values(c, el, axis)
        fig.add_trace(go.Scatter(x=[xs[0], xs[-1]], y=[n_bits, n_bits], mode="lines",
                                 name=f"quantisation (+{n_bits})", hoverinfo="skip",
                                 line=dict(width=2, color="#868e96", dash="dot")))
    d = m.get("bpd_dequant")   # learned dequantisation only
    if d:
        fig.add_trace(go.Scatter(x=ui.x_values(d, el, axis), y=d["value"], mode=ui.line_mode(d["value"]),
                                 name="dequantisation noise log q", hovertemplate="%{y:.3f} bits/dim",
                                 line=dict(width=3, color="#2b8a3e", dash="dashdot")))
    ui.base_layout(fig, x_title=ui.X_TITLES[axis], y_title="bits/dim",
                   uirevision=f"dec-{run_id}-{axis}", height=380)
    fig.add_hline(y=0, line=dict(color="#495057", width=1))
    return fig


def simple_figure(c: dict, el, axis: str, y_title: str, name: str, colour: str, key: str,
                  fmt: str = ".3g"):
    fig = go.Figure(go.Scatter(x=ui.x_values(c, el, axis), y=c["value"], mode=ui.line_mode(c["value"]), name=name,
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
    # The step comes from the heartbeat (every second); the other numbers from the last logged
    # row, which can be several steps older: each says which step it belongs to.
    words = [f"Step {step:,}{of}{budget}"]
    bpd = m.get("train_bpd") or {}
    if bpd.get("value"):
        text = f"{bpd['value'][-1]:.3f} bits/dim at step {bpd['step'][-1]:,}"
        test = m.get("test_bpd") or {}
        if test.get("value"):
            text += f" (test {test['value'][-1]:.3f} at step {test['step'][-1]:,})"
        words.append(text)
    el = m.get("elapsed_s") or {}
    if el.get("value"):
        words.append(f"{ui.fmt_duration(elapsed)} of training by step {el['step'][-1]:,}")
    return frac, " · ".join(words) + eta


def busy_words(others: list[dict], limit: int) -> str:
    """'Run 2 'mnist-b' is training (step 340), and this server trains one run at a time.'"""
    names = ", ".join(f"run {o['id']} '{o['name']}' (step {o['step'] or 0:,})" for o in others[:3])
    names = names[:1].upper() + names[1:]
    verb = "is" if len(others) == 1 else "are"
    at_a_time = "one run" if limit == 1 else f"{limit} runs"
    return f"{names} {verb} training, and this server trains {at_a_time} at a time."


def other_runs_bar(store, run: dict) -> None:
    """While this page shows a run that is not training, say which other run is, and offer to
    show it, or to stop it so that this one can be resumed (issue 18, item 7)."""
    from flowlib import worker

    others = [r for r in store.list_runs()
              if r["status"] in ui.ACTIVE_STATUSES and r["id"] != run["id"]]
    if not others or run["status"] in ui.ACTIVE_STATUSES:
        return
    limit = store.limits.max_concurrent
    full = len(others) >= limit
    other = others[0]
    text = busy_words(others, limit)
    if full and run["status"] in ("stopped", "failed", "lost", "finished"):
        text += (f" To continue run {run['id']}, stop run {other['id']} first, or wait until "
                 "it finishes.")
    st.info(text, icon=":material/model_training:")
    c1, c2, _ = st.columns([1.3, 1.3, 2.4])
    if c1.button(f"Show run {other['id']}", icon=":material/monitoring:",
                 key=f"show_other_{run['id']}_{other['id']}", width="stretch"):
        st.session_state["train_run"] = other["id"]
        st.query_params["run"] = str(other["id"])
        st.rerun(scope="app")
    if full and c2.button(f"Stop run {other['id']}", icon=":material/stop:",
                          key=f"stop_other_{run['id']}_{other['id']}", width="stretch",
                          help="Finishes its current step, saves a checkpoint and stops; it can "
                               "be resumed later."):
        try:
            worker.stop_run(store, other["id"], owner=ui.control_owner())
        except (PermissionError, KeyError, ValueError) as exc:
            st.error(friendly(str(exc)), icon=":material/block:")
        else:
            st.rerun(scope="app")


def fitting_batch(store, run: dict) -> int | None:
    """The batch size that fitted after this failed run ran out of memory (the trainer tried
    it and recorded it), when it is smaller than the run's own; else None."""
    if run["status"] != "failed":
        return None
    values = store.metrics(run["id"], keys=["oom_fitting_batch"]).get("oom_fitting_batch", {}).get("value")
    fits = int(values[-1]) if values else None
    return fits if fits is not None and fits < run["train"].get("batch_size", 0) else None


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
            fits = fitting_batch(store, run)
            if fits is not None:
                # out of memory: resuming with the same batch would fail again at once
                if b1.button(f"Resume with batch {fits}", icon=":material/play_arrow:", type="primary",
                             key=f"resume_{rid}", width="stretch",
                             help=f"Continue from the last checkpoint with batch size {fits}, which "
                                  "fitted in memory when it was tried; every other setting stays."):
                    worker.resume_run(store, rid, owner=ui.control_owner(), batch_size=fits)
                    st.session_state["train_run"] = rid
                    st.rerun(scope="app")
            elif b1.button("Resume", icon=":material/play_arrow:", type="primary", key=f"resume_{rid}",
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
    except RunLimitError:
        # The store's message ends "…or raise FLOWLAB_MAX_CONCURRENT": a server setting a
        # teacher at a projector cannot act on. Say it in words, naming the run in the way.
        others = [r for r in store.list_runs() if r["status"] in ui.ACTIVE_STATUSES and r["id"] != rid]
        st.error(busy_words(others, store.limits.max_concurrent) + " Stop it first (the button "
                 "above), or wait until it finishes; then press Resume again."
                 if others else "Every training slot is taken; wait until a run finishes.",
                 icon=":material/block:")
    except (RunStateError, PermissionError, ValueError, KeyError) as exc:
        st.error(friendly(str(exc)), icon=":material/block:")
    if b2.button("Compare in Runs", icon=":material/stacked_line_chart:", key=f"compare_{rid}",
                 width="stretch"):
        st.switch_page("pages/runs.py", query_params={"compare": str(rid)})
    ckpt = store.checkpoint_path(rid)
    if status in ("stopped", "finished", "failed", "lost") and ckpt.is_file():
        if b3.button("Look inside this model", icon=":material/layers:", key=f"explore_{rid}",
                     width="stretch"):
            st.session_state[ui.EXPLORE_KEY] = str(ckpt)
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
    other_runs_bar(store, run)
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
        st.info("Waiting for the first measurements: the training process is loading the data and "
                f"building the model, then logs its first point at step {run['train'].get('log_every', 10)}.",
                icon=":material/hourglass_top:")
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
            temperatures = run["train"].get("sample_temperatures") or TrainConfig.sample_temperatures
            st.caption(f"Step {latest['step']:,}. {ui.sample_caption(temperatures)}")
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
