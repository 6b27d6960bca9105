"""Train: pick the data and a model, press Start, watch it learn live.

The page never trains in-process: Start asks ``flowlib.jobs.worker`` to launch a separate
process, and the dashboard below (``pages.common.run_dashboard``) only reads the run store
(an ``st.fragment`` that polls every 2 s while the run is active or waiting in the queue, and
stops polling when it is neither).
"""

from __future__ import annotations

import hashlib
import json

import numpy as np
import streamlit as st

from flowlib.config import (
    APP_TRAIN_DEFAULTS,
    DATASET_TRAIN_DEFAULTS,
    PRESET_LR,
    PRESET_NOTES,
    PRESETS,
    FlowConfig,
    TrainConfig,
    max_levels,
)
from flowlib.data import list_datasets, load_images, resize_choices, store_upload
from flowlib.data.sources.common import DatasetError
from flowlib.jobs.estimate import SpeedEstimator, SpeedRequest
from flowlib.jobs.forecast import Forecast, forecast
from flowlib.machine.device import fast_bf16_here as device_fast_bf16_here
from flowlib.settings import ConfigError, field_errors, form_fields, settings_of
from flowlib.size import parameter_count
from pages.common import settings_form, ui
from pages.common.run_dashboard import busy_words, friendly, render_dashboard

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
ERROR_SLOT_OF = {"max_steps": "budget", "max_minutes": "budget", "image_shape": "levels", "n_classes": "condition"}
CLASSROOM_DATASETS = ("mnist", "faces", "folder")
PATH_DATASETS = ("celeba", "cifar10", "folder", "fashion-mnist")   # datasets that read a path


# Whether this machine's training device does bf16 natively, checked once per server.
fast_bf16_here = st.cache_resource(device_fast_bf16_here)


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
            "examples": examples, "classes": tuple(train.info.classes) if train.labels is not None else ()}


@st.cache_resource(show_spinner=False)
def speed_estimator(cache_dir: str) -> SpeedEstimator:
    """One per runs folder, so this server watches its measuring processes in one place."""
    return SpeedEstimator(cache_dir)


def speed_estimate(store, cfg: FlowConfig, tc: TrainConfig) -> dict | None:
    """Images/s of this config from earlier runs, the cache, or a measuring process started
    now (None until it answers). Never builds the model or trains in this server."""
    request = SpeedRequest.for_run(cfg, tc)
    return speed_estimator(str(store.root / "speed-estimates")).estimate(request, store)


def run_forecast(store, cfg: FlowConfig, tc: TrainConfig, speed: dict | None) -> Forecast | None:
    """This run's pace here now (flowlib.jobs.forecast): learned from the earlier runs in this
    store and the machine's load at this moment; None until something is known."""
    estimator = speed_estimator(str(store.root / "speed-estimates"))

    def measured_of(run: dict) -> float | None:
        try:
            known = estimator.cached(SpeedRequest.for_run(FlowConfig.from_dict(run["config"]),
                                                          TrainConfig.from_dict(run["train"])))
        except (ValueError, TypeError, KeyError):
            return None
        return (known or {}).get("images_per_s")

    return forecast(store, SpeedRequest.for_run(cfg, tc), tc, speed, measured_of=measured_of)


def estimate_words(speed: dict | None, fc: Forecast | None, tc: TrainConfig, n_test: int) -> str:
    """'about 2,300 steps in 3 minutes …', 'about 4 min 10 s for 2,000 steps …', or why there
    is no estimate yet."""
    if fc is None:
        if speed is not None and "error" in speed:
            return f"no speed estimate: {speed['error']}."
        return "timing a few training steps in a separate process…"
    pace = (f"≈ **{fc.images_per_s:,.0f} images/s** of training time here, tests and sample grids "
            f"included (from {fc.source})")
    first = f" The first point about **{fc.first_point_s:.0f} s** after Start."
    if tc.max_steps is not None and (tc.max_minutes is None or fc.seconds_for(tc.max_steps) < tc.max_minutes * 60):
        total = fc.seconds_for(tc.max_steps, n_test)
        return f"about **{ui.fmt_duration(total)}** for {tc.max_steps:,} steps, start-up and tests included; {pace}.{first}"
    return (f"about **{fc.steps_in(tc.max_minutes):,} steps** in {tc.max_minutes:g} minutes; {pace}.{first}")


def estimate_line(cfg: FlowConfig, tc: TrainConfig, n_test: int, polling: bool) -> None:
    """Parameters (arithmetic) and the estimate; in a polling fragment until it is known."""
    speed = speed_estimate(store, cfg, tc)
    fc = run_forecast(store, cfg, tc, speed)
    if polling and fc is not None:
        st.rerun(scope="app")   # known now: draw it once more without the timer
    st.markdown(f"**{parameter_count(cfg):,} parameters** · {estimate_words(speed, fc, tc, n_test)}")


# -- helpers ---------------------------------------------------------------------------------
def load_dataset_defaults() -> None:
    """On a change of dataset: the training settings proposed for it (augmentation for the
    360 faces), and back to the form's defaults for a dataset without any."""
    proposed = DATASET_TRAIN_DEFAULTS.get(st.session_state.get(FORM_KEY + "dataset"), {})
    for field in {f for d in DATASET_TRAIN_DEFAULTS.values() for f in d}:
        st.session_state[FORM_KEY + field] = proposed.get(field, getattr(APP_TRAIN_DEFAULTS, field))


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


def folder_sizes() -> list[int]:
    """The folder's "Resize to" choices that work for the form's levels (its widget, else the
    preset's); a kept choice that no longer works is dropped, so the first is shown."""
    levels = st.session_state.get(FORM_KEY + "levels")
    if not isinstance(levels, int):
        levels = PRESETS[st.session_state.get(FORM_KEY + "preset", "mnist-fast")].levels
    sizes = resize_choices(levels)
    if not sizes:  # the levels field says what is wrong with L; offer the side nearest to working
        st.warning(f"No picture side up to 128 can be halved {levels} times: lower Levels L.")
        sizes = resize_choices(0)[-1:]
    if st.session_state.get(FORM_KEY + "size") not in sizes:
        st.session_state.pop(FORM_KEY + "size", None)
    return sizes


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
    from flowlib.jobs import worker
    from flowlib.store.request import RunRequest
    from flowlib.store.runs import RunLimitError

    label = name.strip() or f"{tc.dataset}-{preset_name}"
    # The same name and settings while their run is still waiting or training: that run, not a
    # second one (a double click sends Start twice before the page can disable it).
    submit_key = hashlib.sha256(json.dumps([label, cfg.to_dict(), tc.to_dict(), preset_name],
                                           sort_keys=True, default=str).encode()).hexdigest()[:32]
    try:
        run_id = worker.submit(store, RunRequest(label, cfg, tc, owner=ui.visitor_id(), preset=preset_name),
                               submit_key=submit_key)
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


def first_points_words(store, cfg: FlowConfig, tc: TrainConfig) -> str:
    """When the first chart point and the first test point are due, from this device's
    earlier runs and its load now (flowlib.jobs.forecast)."""
    fc = run_forecast(store, cfg, tc, speed_estimate(store, cfg, tc))
    test = tc.first_eval or tc.eval_every
    if fc is None:
        return (f"The first training point comes at step {tc.log_every} once the process has loaded "
                f"the data and built the model; the first test point at step {test:,}.")
    test_s = fc.startup_s + test / fc.steps_per_s
    return (f"The first training point is due at step {tc.log_every}, about {fc.first_point_s:.0f} s "
            f"after Start; the first test point at step {test:,}, about {test_s:.0f} s after Start.")


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
        load_dataset_defaults()
    if qp[1] in PRESETS:
        st.session_state[FORM_KEY + "preset"] = qp[1]

# Streamlit drops a page's widget values whenever another page is shown, so a visit to Runs
# would bring the form back with zeros in it. The form keeps its own copy (saved at the end
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

# Whether the set-up form is open is this tab's choice, kept in session state, not
# `expanded=not active`: that would flip it open on Stop and push the dashboard below the
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
            "Dataset", names, key=FORM_KEY + "dataset", on_change=load_dataset_defaults,
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
                            in_use = store.dataset_paths_in_use()  # uploads queued runs still read
                            options["path"] = str(store_upload(up.name, up.getvalue(), in_use=in_use))
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
                sizes = folder_sizes()
                options["size"] = size_col.selectbox(
                    "Resize to", sizes, key=FORM_KEY + "size", format_func=lambda s: f"{s}×{s}",
                    help="Sides the model's levels can halve, each level halving the image.")
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
    if values.get("condition", "none") != "none":   # a conditional model: K from the dataset's labels
        values["n_classes"] = len(info["classes"]) if info else 0
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
            pending = run_forecast(store, cfg, tc, speed_estimate(store, cfg, tc)) is None
            st.fragment(estimate_line, run_every=1.0 if pending else None)(cfg, tc, info["test"], pending)
            st.caption(f"{cfg.summary()} · batch {tc.batch_size}, lr {tc.lr:g} ({tc.lr_schedule}), "
                       f"warm-up {tc.warmup_steps} steps or 10 % of the budget if shorter, test every "
                       f"{tc.eval_every} steps{' and every 1/8 of the minutes' if tc.max_minutes else ''}, a sample "
                       f"grid every ~{tc.grid_every_s:g} s · trains on "
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


st.divider()
if run_id is None:
    st.info("No runs yet. Pick a dataset and press **Start** above; the live curves appear here.",
            icon=":material/info:")
else:
    shown = next(r for r in runs if r["id"] == run_id)
    poll = shown["status"] in ui.ACTIVE_STATUSES or shown["status"] == ui.WAITING  # waiting: its place moves

    @st.fragment(run_every=2.0 if poll else None)
    def live_dashboard():
        with ui.guard("updating the live dashboard"):
            render_dashboard(store, run_id, poll)

    live_dashboard()
