"""The Runs page's studies: start one (one click, custom or a search), list them, read the answer.

    from pages.common import studies
    studies.launcher(store)                  # the "Start a study" form with its time estimate
    rows, problem = studies.study_rows(store)  # the studies of FLOWLAB_STUDY_STORAGE and the older ones
    studies.section(store, rows)             # the studies table, the selected study's answer and actions

The library does the work (``flowlib.study.api``: start, answer, stop, resume, overview); this
module only lays it out. A study lives in the study storage the server is pointed at
(``FLOWLAB_STUDY_STORAGE``, default ``studies.sqlite`` in the runs folder), so trials trained
on other machines show here too (their machine, state, and curves from the evaluations they
reported). Its trials train in worker processes started beside the server (never in it), so
they keep going with no page open.
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid

import pandas as pd
import streamlit as st

from flowlib.config import PRESETS, FlowConfig, TrainConfig
from flowlib.jobs.estimate import SpeedEstimator, SpeedRequest
from flowlib.settings import ConfigError, settings_of
from flowlib.store.runs import RunLimitError
from flowlib.store.studies import StudyStore
from flowlib.study import api
from flowlib.study.answer import answer_csv, fmt_bpd
from flowlib.study.estimate import runs_at_once, study_seconds
from flowlib.study.spec import MAX_SEEDS, MAX_TRIALS, NOT_VARIABLE, STUDY_PRESETS, StudySpec, plan
from flowlib.study.storage import StorageError
from flowlib.viz.study_figures import importance_figure, search_progress_figure, study_curves_figure
from pages.common import ui

__all__ = ["launcher", "section", "study_of_runs", "study_rows"]

CUSTOM, SEARCH = "custom", "search"
DATASET_MODELS = {"mnist": "mnist-fast", "faces": "faces-fast"}
DEFAULT_STEPS = 1000
STATUS_WORDS = {"waiting": "waiting for a worker", "running": "training", "stopped": "stopped",
                "finished": "finished", "failed": "ended with failed trials", "empty": "no runs left"}
# Settings a custom study may vary: those with a handful of choices, and a few numbers.
_VARIABLE = [(name, s) for cls in (FlowConfig, TrainConfig) for name, s in settings_of(cls)
             if name not in NOT_VARIABLE and (s.choices is not None or s.kind == "bool" or s.form)]
_SEARCH_EXAMPLES = {"lr": "1e-4:1e-2:log", "hidden": "32,64,128", "warmup_steps": "0:200",
                    "batch_size": "32,64", "coupling": "additive,affine"}


@st.cache_data(show_spinner=False, max_entries=8)
def _shape(dataset: str) -> tuple[int, int, int]:
    from flowlib.study.spec import dataset_shape
    return dataset_shape(dataset)


@st.cache_resource(show_spinner=False)
def _estimator(cache_dir: str) -> SpeedEstimator:
    return SpeedEstimator(cache_dir)


def study_of_runs(store) -> dict[int, int]:
    """{run id: study id}: the Runs table marks study runs and keeps them whole."""
    return StudyStore(store).run_ids()


def study_rows(store) -> tuple[list[dict], str | None]:
    return api.overview(store)


# -- starting ----------------------------------------------------------------------------------
def _custom_vary(prefix: str) -> tuple:
    settings = dict(_VARIABLE)
    vary = []
    cols = st.columns(2)
    for i, col in enumerate(cols):
        with col:
            options = ([] if i == 0 else ["(none)"]) + list(settings)
            name = st.selectbox(f"Setting {i + 1} to vary", options, key=f"{prefix}name{i}",
                                format_func=lambda n: n if n == "(none)" else settings[n].label,
                                index=options.index("permutation") if i == 0 else 0)
            if name == "(none)":
                continue
            s = settings[name]
            if s.kind == "bool":
                values = st.multiselect("Values", [False, True], default=[False, True], key=f"{prefix}vals{i}_{name}",
                                        format_func=lambda v: "on" if v else "off")
            elif s.choices is not None:
                values = st.multiselect("Values", list(s.choices), default=list(s.choices)[:2],
                                        key=f"{prefix}vals{i}_{name}", format_func=s.words)
            else:
                text = st.text_input("Values, comma-separated", key=f"{prefix}vals{i}_{name}",
                                     placeholder="e.g. 32, 64", help=s.tooltip())
                values = [v.strip() for v in text.split(",") if v.strip()]
            vary.append((name, tuple(values)))
    return tuple(vary)


def _search_form(prefix: str) -> tuple[tuple, int, bool]:
    settings = dict(_VARIABLE)
    ranges = []
    cols = st.columns(3)
    for i, col in enumerate(cols):
        with col:
            options = ([] if i == 0 else ["(none)"]) + list(settings)
            default = ("lr", "hidden", "(none)")[i]
            name = st.selectbox(f"Setting {i + 1} to search", options, key=f"{prefix}name{i}",
                                index=options.index(default),
                                format_func=lambda n: n if n == "(none)" else settings[n].label)
            if name == "(none)":
                continue
            text = st.text_input("Range", value=_SEARCH_EXAMPLES.get(name, ""), key=f"{prefix}range{i}_{name}",
                                 help="LOW:HIGH, LOW:HIGH:log (rates, widths) or a list V1,V2,...")
            ranges.append((name, text))
    c1, c2 = st.columns(2)
    trials = c1.number_input("Configurations to try", 2, MAX_TRIALS, 8, key=f"{prefix}trials",
                             help="Optuna's TPE sampler draws each one from the ranges, learning from the "
                                  "earlier ones; each is trained with every seed.")
    prune = c2.toggle("Prune losing configurations", value=True, key=f"{prefix}prune",
                      help="Optuna's MedianPruner cuts a configuration's first-seed run when its validation "
                           "bits/dim is worse than the median of the other configurations' first-seed runs at the "
                           "same step (same seed: a paired comparison), from a third of the budget on.")
    return tuple(ranges), int(trials), bool(prune)


def _estimate_text(store, p) -> tuple[str, bool]:
    """(words, still measuring) for the whole study on this device."""
    estimator = _estimator(str(store.root / "speed-estimates"))
    speeds, pending, errors = {}, False, []
    for arm in p.arms:
        got = estimator.estimate(SpeedRequest.for_run(arm.config, arm.train), store)
        if got is None:
            pending = True
        elif "error" in got:
            errors.append(f"{arm.name}: {got['error']}")
        else:
            speeds[arm.name] = got["images_per_s"]
    if errors:
        return "Time estimate unavailable: " + "; ".join(errors), False
    if pending:
        return "Measuring this device's speed for each arm (a few seconds each) …", True
    workers = runs_at_once(p, store.limits.max_concurrent)
    seconds = study_seconds(p, speeds, workers)
    slowest = min(speeds.values())
    up_to = "up to " if p.kind == "search" else ""
    return (f"**About {ui.fmt_duration(seconds)}** for {up_to}all {p.n_runs} runs on this device "
            f"({workers} at a time; training at {slowest:,.0f}–{max(speeds.values()):,.0f} images/s, plus each "
            "run's evaluations and start-up, and the machine's current load). Corrected as runs finish.", False)


def _spec_from_form(store) -> StudySpec | None:
    kinds = list(STUDY_PRESETS) + [CUSTOM, SEARCH]
    c1, c2, c3, c4 = st.columns([3, 1.3, 1, 1.2])
    kind = c1.selectbox("Study", kinds, key="study_kind",
                        format_func=lambda k: {CUSTOM: "Custom: choose what to vary",
                                               SEARCH: "Search: find good settings in ranges"}.get(k)
                        or STUDY_PRESETS[k].title)
    dataset = c2.selectbox("Dataset", list(DATASET_MODELS), key="study_dataset",
                           format_func=lambda d: {"mnist": "MNIST digits", "faces": "32×32 faces"}[d])
    seeds = c3.number_input("Seeds", 1, MAX_SEEDS, 3, key="study_seeds",
                            help="Runs per arm, paired: seed s of every arm starts from the same initial "
                                 "weights (where shapes agree), sees the same batches and the same noise.")
    cap = store.limits.max_steps
    steps = c4.number_input("Steps per run", 10, cap or 100_000, min(DEFAULT_STEPS, cap or DEFAULT_STEPS),
                            step=250, key="study_steps",
                            help="One budget for every run." + (f" This server allows at most {cap:,}." if cap else ""))
    common = dict(dataset=dataset, model_preset=DATASET_MODELS[dataset], seeds=int(seeds), steps=int(steps))
    if kind == CUSTOM:
        vary = _custom_vary("study_custom_")
        return StudySpec(vary=vary, name="study-" + "-".join(n for n, _ in vary), **common)
    if kind == SEARCH:
        ranges, trials, prune = _search_form("study_search_")
        return StudySpec(search=ranges, trials=trials, prune=prune,
                         name="search-" + "-".join(n for n, _ in ranges), **common)
    st.caption(f"What the paper says: {STUDY_PRESETS[kind].source}.")
    return StudySpec.from_preset(kind, **common)


def launcher(store) -> None:
    """The form that starts a study: a one-click preset, a custom comparison or a search."""
    spec = _spec_from_form(store)
    try:
        p = plan(spec, _shape(spec.dataset))
        api.check_caps(store, p)
    except (ConfigError, ValueError) as exc:
        field = getattr(exc, "field", None)
        st.error(f"{exc}" + (f" (setting: {field})" if field else ""), icon=":material/error:")
        return
    tc = p.arms[0].train
    if p.kind == "search":
        what = (f"**{spec.trials} configurations × {len(p.seeds)} seeds (up to {p.n_runs} runs)** of {tc.max_steps:,} "
                f"steps of {PRESETS[spec.model_preset].summary()} — ranges: "
                f"{'; '.join(r.words() for r in p.ranges)}; pruning {'on' if spec.pruning else 'off'}. ")
    else:
        what = (f"**{len(p.arms)} arms × {len(p.seeds)} seeds = {p.n_runs} runs** of {tc.max_steps:,} steps of "
                f"{PRESETS[spec.model_preset].summary()} — arms: {', '.join(a.name for a in p.arms)}; "
                f"baseline **{p.baseline}**. ")
    st.markdown(what + f"Training as on the Train page: learning rate {tc.lr:g}, {tc.lr_schedule} schedule, "
                f"warm-up {tc.warmup_steps} steps (10 % of the budget at most), batch {tc.batch_size}, "
                f"{tc.threads} thread(s) per run; validation bits/dim every {tc.eval_every} steps on "
                f"{tc.validation_images} images held out from training, and the full test set once at the end.")

    def estimate_line():
        text, pending = _estimate_text(store, p)
        st.markdown(text)
        if not pending and st.session_state.get("study_estimate_pending"):
            st.session_state["study_estimate_pending"] = False
            st.rerun(scope="app")
        st.session_state["study_estimate_pending"] = pending
    st.fragment(estimate_line, run_every=1.5 if st.session_state.get("study_estimate_pending", True) else None)()
    for w in p.warnings:
        st.warning(w, icon=":material/warning:")
    # The study's name carries a digest of this tab's nonce and the filled-in form: a second press
    # of the same form (0.3 s later, or after a rerun) finds the study the first one made instead of
    # making another; any change to the form is a new study.
    nonce = st.session_state.setdefault("study_nonce", uuid.uuid4().hex)
    token = hashlib.sha1((nonce + json.dumps(spec.to_dict(), sort_keys=True)).encode()).hexdigest()[:6]
    if st.button(f"Start the study ({'up to ' if p.kind == 'search' else ''}{p.n_runs} runs)", type="primary",
                 icon=":material/play_arrow:", key="study_start"):
        named = spec.replace(name=f"{spec.name}-{token}")
        try:
            ref = api.start(store, named, _shape(spec.dataset), owner=ui.visitor_id())
            st.session_state["runs_flash"] = ("success", f"Study {ref.local_id} '{ref.name}' started: its trials "
                                              "train in worker processes here (and on any machine running "
                                              "`python -m flowlib.study work` on the same storage); the answer "
                                              "fills in below as they finish.")
            st.session_state["study_selected"] = ref.local_id
        except (ConfigError, ValueError, PermissionError, RunLimitError, StorageError) as exc:
            st.session_state["runs_flash"] = ("error", str(exc))
        st.rerun(scope="app")


# -- reading the answer -------------------------------------------------------------------------
def results_table(result: dict) -> pd.DataFrame:
    rows = []
    for a in result["arms"]:
        low, high = a["ci95"] or (None, None)
        notes = "; ".join(f"s{r['seed']}: {', '.join(r['flags'])}" for r in a["runs"] if r["flags"])
        rows.append({
            "arm": a["name"] + (" (baseline)" if a["name"] == result["baseline"] else ""),
            "seeds": f"{a['n']} of {len(a['runs'])}",
            "test bits/dim": fmt_bpd(a["mean"]),
            "95 % interval": ("too wide to mean anything" if a.get("too_wide") else
                              "–" if low is None else f"{fmt_bpd(low)} to {fmt_bpd(high)}"),
            "per seed": ", ".join(f"s{r['seed']}: {fmt_bpd(r['final_test_bpd'])}" if r["final_test_bpd"] is not None
                                  else f"s{r['seed']}: {r['status']}" for r in a["runs"]),
            "named runs": notes or "–",
            "images/s": "–" if a["images_per_s"] is None else f"{a['images_per_s']:,.0f}",
        })
    return pd.DataFrame(rows)


def differences_table(result: dict) -> pd.DataFrame:
    rows = []
    for d in result.get("pairs", []):
        low, high = d["ci95"] or (None, None)
        rows.append({"pair (first − second)": f"{d['arm']} − {d['vs']}", "paired seeds": d["n"],
                     "difference (bits/dim)": fmt_bpd(d["mean"], sign=True),
                     "95 % interval": "–" if low is None else f"{fmt_bpd(low, sign=True)} to {fmt_bpd(high, sign=True)}",
                     "Holm-adjusted p": "–" if d.get("holm_p") is None else f"{d['holm_p']:.3g}",
                     "resolved": "yes" if d["resolved"] else "no" if low is not None else "no interval"})
    return pd.DataFrame(rows)


def trials_table(result: dict) -> pd.DataFrame:
    rows = []
    for a in result["arms"]:
        for r in a["runs"]:
            rows.append({"trial": r.get("trial"), "arm": a["name"], "seed": r["seed"], "state": r["status"],
                         "machine": r.get("machine") or "this one", "worker": r.get("worker") or "–",
                         "run": r.get("run_id"),
                         "steps": f"{r.get('steps_trained') or 0:,} / {r.get('budget_steps') or '–'}",
                         "validation bits/dim": fmt_bpd(r.get("valid_bpd")),
                         "test bits/dim": fmt_bpd(r.get("final_test_bpd"))})
    return pd.DataFrame(rows)


def _search_pictures(result: dict, sid) -> None:
    c1, c2 = st.columns([3, 2])
    with c1:
        st.markdown("**Progress**: each configuration's first-seed run; the line is the best so far")
        st.plotly_chart(search_progress_figure(result), key=f"study_progress_{sid}")
        st.caption(f"{len(result.get('pruned', []))} configuration(s) pruned.")
    with c2:
        st.markdown("**Importance** of each searched setting")
        if result.get("importance"):
            st.plotly_chart(importance_figure(result["importance"]), key=f"study_importance_{sid}")
        else:
            st.caption("Needs at least two finished configurations.")


def show_answer(store, ref) -> None:
    result = api.answer(store, ref)
    s = result["study"]
    runs = [r for a in result["arms"] for r in a["runs"]]
    done = sum(1 for r in runs if r["status"] not in ("waiting", "running"))
    st.markdown(f"#### Study {s['id'] if s['id'] is not None else ''} · {s['name']} — "
                f"{STATUS_WORDS.get(s['status'], s['status'])} ({done} of {len(runs)} runs ended)")
    budget = f"{s['steps']:,} steps" if s["steps"] else f"{s['minutes']:g} minutes"
    st.caption(f"{s['kind']}: {s['model_preset']} on {s['dataset']}, {budget} per run, {s['seeds']} seed(s). "
               + (f"Paper: {s['source']}." if s["source"] else ""))
    with st.container(border=True):
        lines = result["verdict"] or ["No run has finished yet."]
        st.markdown(f"**{lines[0]}**")
        st.caption("Lower bits/dim is better. Numbers: each run's final test bits/dim on the full test set; "
                   "± is a 95 % interval over paired seeds.")
        if len(lines) > 1:
            with st.expander("Expert detail: every pair, the correction, named runs"):
                for line in lines[1:]:
                    st.markdown(f"- {line}")
    for w in result["warnings"]:
        st.caption(f":material/info: {w}")
    if s["kind"] == "search":
        _search_pictures(result, s["name"])
    key = f"{s['name']}-{s['id']}"
    axis = st.segmented_control("x-axis", ["step", "time"], default="step", key=f"study_axis_{key}",
                                format_func=lambda a: "training step" if a == "step" else "training time",
                                required=True) or "step"
    if any((r.get("curve") or {}).get("step") for r in runs):
        st.plotly_chart(study_curves_figure(result, axis), key=f"study_chart_{key}",
                        config={"displaylogo": False,
                                "toImageButtonOptions": {"format": "png", "filename": f"flowlab-{s['name']}",
                                                         "scale": 2}})
        st.caption("Lines: the mean over seeds of the validation bits/dim (images held out from training); bands: "
                   "the lowest and highest seed.")
    else:
        st.caption("The curves appear after each run's first evaluation.")
    st.dataframe(results_table(result), hide_index=True, width="stretch")
    if result.get("pairs"):
        st.dataframe(differences_table(result), hide_index=True, width="stretch")
    with st.expander(f"Trials ({len(runs)}), on every machine"):
        st.dataframe(trials_table(result), hide_index=True, width="stretch")
    if s.get("dashboard"):
        st.caption("Open the same study in optuna-dashboard (on a machine that can reach the storage):")
        st.code(s["dashboard"], language="bash")
    st.download_button("Download the table (CSV)", data=answer_csv(result), mime="text/csv",
                       file_name=f"flowlab-{s['name']}.csv", icon=":material/download:",
                       key=f"study_csv_{key}")


def _actions(store, row: dict) -> None:
    sid = row["local_id"]
    key = sid if sid is not None else row["name"]
    ref = sid if row["storage"] is None or sid is not None else row["name"]
    active = row["status"] in ("running", "waiting")
    allowed = ui.may_control({"owner": row["owner"]})
    owner = ui.control_owner({"owner": row["owner"]})
    a1, a2, a3 = st.columns(3, vertical_alignment="bottom")
    if a1.button("Stop", icon=":material/stop:", key=f"study_stop_{key}", width="stretch",
                 disabled=not allowed or not active,
                 help="No new run starts; the training ones save a checkpoint. Finished runs keep their results."):
        try:
            st.session_state["runs_flash"] = ("success", f"Study {row['name']}: "
                                              f"{api.stop(store, ref, owner=owner)}.")
        except (PermissionError, KeyError, ValueError) as exc:
            st.session_state["runs_flash"] = ("error", str(exc))
        st.rerun(scope="app")
    if row["storage"] is not None and a2.button("Resume", icon=":material/play_arrow:", key=f"study_resume_{key}",
                                                width="stretch", disabled=not allowed or row["status"] != "stopped"):
        try:
            queued = api.resume(store, ref, owner=owner)
            st.session_state["runs_flash"] = ("success", f"Study {row['name']} resumed: {queued} run(s) queued again.")
        except (PermissionError, KeyError, ValueError) as exc:
            st.session_state["runs_flash"] = ("error", str(exc))
        st.rerun(scope="app")
    if row["storage"] is None and sid is not None:
        _delete_older(store, row, a3, allowed, owner)


def _delete_older(store, row: dict, col, allowed: bool, owner: str | None) -> None:
    """An older study (all in the run store) is deleted as one unit, after one confirmation."""
    studies, sid = StudyStore(store), row["local_id"]
    if col.button("Delete…", icon=":material/delete:", key=f"study_delete_{sid}", width="stretch",
                  disabled=not allowed or row["status"] == "running",
                  help="Stop the study first." if row["status"] == "running" else "Asks once, then removes the "
                                                                                  "study and all its runs."):
        st.session_state["study_confirm_delete"] = sid
    if st.session_state.get("study_confirm_delete") == sid and allowed:
        def delete() -> str:
            count = studies.delete(sid, owner)
            st.session_state.pop("study_selected", None)
            return f"Deleted study {sid} and its {count} runs."

        ui.confirm_delete("study_confirm_delete",
                          f"Delete study **{sid} · {row['name']}** and its runs? Their curves, samples and "
                          "checkpoints are removed for good.",
                          f"Yes, delete study {sid}", f"study_confirm_{sid}", f"study_keep_{sid}", delete)


def section(store, rows: list[dict]) -> None:
    """The studies table; the selected (default: newest) study's answer and its actions."""
    table = [{"study": r["local_id"], "name": r["name"], "kind": r["kind"],
              "status": STATUS_WORDS.get(r["status"], r["status"]), "runs": r["trials"],
              "machines": ", ".join(r["machines"]) or "–",
              "compares": " · ".join(r["arms"]) or "–",
              "started": time.strftime("%d %b %H:%M", time.localtime(r["created"] or 0))} for r in rows]
    keys = [(r["local_id"], r["name"]) for r in rows]
    selected = st.session_state.get("study_selected")
    index = next((i for i, k in enumerate(keys) if selected in k), 0)
    event = st.dataframe(pd.DataFrame(table), hide_index=True, on_select="rerun", selection_mode="single-row",
                         key=f"studies_table_{len(keys)}", width="stretch",
                         selection_default={"selection": {"rows": [index], "columns": []}})
    if event and event.selection.rows:
        index = event.selection.rows[0]
        st.session_state["study_selected"] = keys[index][0] if keys[index][0] is not None else keys[index][1]
    row = rows[index]
    ref = row["local_id"] if row["local_id"] is not None else row["name"]
    show_answer(store, ref)
    _actions(store, row)
