"""The Runs page's studies: start one (one click or custom), list them, read the answer.

    from pages.common import studies
    studies.launcher(store)                 # the "Start a study" form with its time estimate
    studies.section(store, studies_list)    # the studies table, the selected study's answer and actions

The library does the work (``flowlib.study.spec``: plan, submit, answer; ``flowlib.store.studies``:
the study as one unit); this module only lays it out. A study's runs are queued through the
worker, so they keep training with no page open.
"""

from __future__ import annotations

import time

import pandas as pd
import streamlit as st

from flowlib.config import PRESETS, FlowConfig, TrainConfig
from flowlib.jobs.estimate import SpeedEstimator, SpeedRequest
from flowlib.settings import ConfigError, settings_of
from flowlib.store.studies import StudyStore
from flowlib.study.spec import (
    MAX_SEEDS,
    NOT_VARIABLE,
    STUDY_PRESETS,
    StudySpec,
    answer,
    answer_csv,
    estimate_seconds,
    plan,
    submit,
)
from flowlib.viz.study_figures import study_curves_figure
from pages.common import ui

__all__ = ["launcher", "section", "study_of_runs"]

CUSTOM = "custom"
DATASET_MODELS = {"mnist": "mnist-fast", "faces": "faces-fast"}
DEFAULT_STEPS = 1000
STATUS_WORDS = {"waiting": "waiting for a slot", "running": "training", "stopped": "stopped",
                "finished": "finished", "failed": "failed", "empty": "no runs left"}
# Settings a custom study may vary: those with a handful of choices, and a few numbers.
_VARIABLE = [(name, s) for cls in (FlowConfig, TrainConfig) for name, s in settings_of(cls)
             if name not in NOT_VARIABLE and (s.choices is not None or s.kind == "bool" or s.form)]


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
    seconds = estimate_seconds(p, speeds)
    slowest = min(speeds.values())
    return (f"**About {ui.fmt_duration(seconds)}** for all {p.n_runs} runs on this device, one after "
            f"another (training at {slowest:,.0f}–{max(speeds.values()):,.0f} images/s, plus each "
            "run's evaluations and start-up). Longer if the machine is busy.", False)


def launcher(store) -> None:
    """The form that starts a study: a one-click preset or a custom comparison."""
    kinds = list(STUDY_PRESETS) + [CUSTOM]
    c1, c2, c3, c4 = st.columns([3, 1.3, 1, 1.2])
    kind = c1.selectbox("Study", kinds, key="study_kind",
                        format_func=lambda k: "Custom: choose what to vary" if k == CUSTOM else STUDY_PRESETS[k].title)
    dataset = c2.selectbox("Dataset", list(DATASET_MODELS), key="study_dataset",
                           format_func=lambda d: {"mnist": "MNIST digits", "faces": "32×32 faces"}[d])
    seeds = c3.number_input("Seeds", 1, MAX_SEEDS, 3, key="study_seeds",
                            help="Runs per arm, paired: seed s of every arm starts from the same initial "
                                 "weights (where shapes agree), sees the same batches and the same noise.")
    cap = store.limits.max_steps
    steps = c4.number_input("Steps per run", 10, cap or 100_000, min(DEFAULT_STEPS, cap or DEFAULT_STEPS),
                            step=250, key="study_steps",
                            help="One budget for every run." + (f" This server allows at most {cap:,}." if cap else ""))
    if kind == CUSTOM:
        vary = _custom_vary("study_custom_")
        spec = StudySpec(vary=vary, name="study-" + "-".join(n for n, _ in vary), dataset=dataset,
                         model_preset=DATASET_MODELS[dataset], seeds=int(seeds), steps=int(steps))
    else:
        spec = StudySpec.from_preset(kind, dataset=dataset, model_preset=DATASET_MODELS[dataset],
                                     seeds=int(seeds), steps=int(steps))
        st.caption(f"What the paper says: {STUDY_PRESETS[kind].source}.")
    try:
        p = plan(spec, _shape(dataset))
        for arm in p.arms:
            store.limits.check_train(arm.train.to_dict())
    except (ConfigError, ValueError) as exc:
        field = getattr(exc, "field", None)
        st.error(f"{exc}" + (f" (setting: {field})" if field else ""), icon=":material/error:")
        return
    tc = p.arms[0].train
    st.markdown(
        f"**{len(p.arms)} arms × {len(p.seeds)} seeds = {p.n_runs} runs** of {tc.max_steps:,} steps of "
        f"{PRESETS[spec.model_preset].summary()} — arms: {', '.join(a.name for a in p.arms)}; "
        f"baseline **{p.baseline}**. Training as on the Train page: learning rate {tc.lr:g}, "
        f"{tc.lr_schedule} schedule, warm-up {tc.warmup_steps} steps (10 % of the budget at most), batch "
        f"{tc.batch_size}; test bits/dim every {tc.eval_every} steps and on the full test set at the end.")

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
    if st.button(f"Start the study ({p.n_runs} runs)", type="primary", icon=":material/play_arrow:",
                 key="study_start"):
        try:
            study_id = submit(store, spec, _shape(dataset), owner=ui.visitor_id())
            st.session_state["runs_flash"] = ("success", f"Study {study_id} queued: {p.n_runs} runs. They train one "
                                              "after another; the answer fills in below as they finish.")
            st.session_state["study_selected"] = study_id
        except (ConfigError, ValueError, PermissionError) as exc:
            st.session_state["runs_flash"] = ("error", str(exc))
        st.rerun(scope="app")


# -- reading the answer -------------------------------------------------------------------------
def _num(v, digits=4) -> str:
    return "–" if v is None else f"{v:.{digits}f}"


def results_table(result: dict) -> pd.DataFrame:
    rows = []
    for a in result["arms"]:
        low, high = a["ci95"] or (None, None)
        rows.append({
            "arm": a["name"] + (" (baseline)" if a["name"] == result["baseline"] else ""),
            "seeds": f"{a['n']} of {len(a['runs'])}",
            "test bits/dim": _num(a["mean"]),
            "95 % interval": "–" if low is None else f"{low:.4f} to {high:.4f}",
            "per seed": ", ".join(f"s{r['seed']}: {_num(r['final_test_bpd'])}" if r["final_test_bpd"] is not None
                                  else f"s{r['seed']}: {r['status']}" for r in a["runs"]),
            "images/s": "–" if a["images_per_s"] is None else f"{a['images_per_s']:,.0f}",
            "parameters": f"{a['parameters']:,}",
        })
    return pd.DataFrame(rows)


def differences_table(result: dict) -> pd.DataFrame:
    rows = []
    for d in result["differences"]:
        low, high = d["ci95"] or (None, None)
        rows.append({"arm − baseline": f"{d['arm']} − {d['vs']}", "paired seeds": d["n"],
                     "difference (bits/dim)": "–" if d["mean"] is None else f"{d['mean']:+.4f}",
                     "95 % interval": "–" if low is None else f"{low:+.4f} to {high:+.4f}",
                     "resolved": "yes" if d["resolved"] else "no (contains 0)" if low is not None else "no interval"})
    return pd.DataFrame(rows)


def show_answer(store, study_id: int) -> None:
    result = answer(store, study_id)
    s = result["study"]
    runs = [r for a in result["arms"] for r in a["runs"]]
    done = sum(1 for r in runs if r["status"] in ("finished", "failed", "lost", "stopped"))
    st.markdown(f"#### Study {s['id']} · {s['name']} — {STATUS_WORDS.get(s['status'], s['status'])} "
                f"({done} of {len(runs)} runs ended)")
    budget = f"{s['steps']:,} steps" if s["steps"] else f"{s['minutes']:g} minutes"
    st.caption(f"{s['model_preset']} on {s['dataset']}, {budget} per run, {s['seeds']} seed(s) per arm. "
               + (f"Paper: {s['source']}." if s["source"] else ""))
    with st.container(border=True):
        st.markdown("**Verdict** (lower bits/dim is better; intervals are 95 % Student-t over paired seeds)")
        for line in result["verdict"] or ["No run has finished yet."]:
            st.markdown(f"- {line}")
    for w in result["warnings"]:
        st.caption(f":material/info: {w}")
    axis = st.segmented_control("x-axis", ["step", "time"], default="step", key=f"study_axis_{study_id}",
                                format_func=lambda a: "training step" if a == "step" else "training time",
                                required=True) or "step"
    if any((r.get("curve") or {}).get("step") for r in runs):
        st.plotly_chart(study_curves_figure(result, axis), key=f"study_chart_{study_id}",
                        config={"displaylogo": False,
                                "toImageButtonOptions": {"format": "png", "filename": f"flowlab-study{study_id}",
                                                         "scale": 2}})
        st.caption("Lines: the mean over seeds of the test bits/dim; bands: the lowest and highest seed. "
                   "Save the figure as a PNG with the camera button at the chart's top right.")
    else:
        st.caption("The curves appear after each run's first evaluation.")
    st.dataframe(results_table(result), hide_index=True, width="stretch")
    if result["differences"]:
        st.dataframe(differences_table(result), hide_index=True, width="stretch")
    st.download_button("Download the table (CSV)", data=answer_csv(result), mime="text/csv",
                       file_name=f"flowlab-study{study_id}.csv", icon=":material/download:",
                       key=f"study_csv_{study_id}")


def _actions(store, study: dict) -> None:
    studies = StudyStore(store)
    sid, active = study["id"], study["status"] in ("running", "waiting")
    allowed = ui.may_modify(study)
    a1, a2, a3, a4 = st.columns([2, 1, 1, 1], vertical_alignment="bottom")
    new = a1.text_input("Study name", value=study["name"], key=f"study_rename_{sid}", max_chars=80,
                        disabled=not allowed)
    if a2.button("Rename", icon=":material/edit:", key=f"study_do_rename_{sid}", width="stretch",
                 disabled=not allowed):
        try:
            st.session_state["runs_flash"] = ("success", f"Renamed to '{studies.rename(sid, new, ui.control_owner())}'.")
        except (PermissionError, KeyError, ValueError) as exc:
            st.session_state["runs_flash"] = ("error", str(exc))
        st.rerun(scope="app")
    if a3.button("Stop", icon=":material/stop:", key=f"study_stop_{sid}", width="stretch",
                 disabled=not allowed or not active,
                 help="Cancels the waiting runs; the training one saves a checkpoint. Finished runs keep their results."):
        try:
            done = studies.stop(sid, ui.control_owner())
            st.session_state["runs_flash"] = ("success", f"Study {sid}: {done['cancelled']} waiting run(s) "
                                              f"cancelled, {done['stopping']} stopping.")
        except (PermissionError, KeyError) as exc:
            st.session_state["runs_flash"] = ("error", str(exc))
        st.rerun(scope="app")
    if a4.button("Delete…", icon=":material/delete:", key=f"study_delete_{sid}", width="stretch",
                 disabled=not allowed or study["status"] == "running",
                 help="Stop the study first." if study["status"] == "running" else "Asks once, then removes the "
                                                                                    "study and all its runs."):
        st.session_state["study_confirm_delete"] = sid
    if st.session_state.get("study_confirm_delete") == sid and allowed:
        def delete() -> str:
            count = studies.delete(sid, ui.control_owner())
            st.session_state.pop("study_selected", None)
            return f"Deleted study {sid} and its {count} runs."

        ui.confirm_delete("study_confirm_delete",
                          f"Delete study **{sid} · {study['name']}** and its {len(study['runs'])} runs? "
                          "Their curves, samples and checkpoints are removed for good.",
                          f"Yes, delete study {sid}", f"study_confirm_{sid}", f"study_keep_{sid}", delete)


def section(store, studies_list: list[dict]) -> None:
    """The studies table; the selected (default: newest) study's answer and its actions."""
    rows = [{"study": s["id"], "name": s["name"], "status": STATUS_WORDS.get(s["status"], s["status"]),
             "runs": f"{sum(r['status'] == 'finished' for r in s['runs'])} of {len(s['runs'])} finished",
             "compares": " · ".join(a["name"] for a in s["spec"].get("arms", [])),
             "started": time.strftime("%d %b %H:%M", time.localtime(s["created"]))} for s in studies_list]
    ids = [s["id"] for s in studies_list]
    selected = st.session_state.get("study_selected")
    if selected not in ids:
        selected = ids[0]
    event = st.dataframe(pd.DataFrame(rows), hide_index=True, on_select="rerun", selection_mode="single-row",
                         key=f"studies_table_{len(ids)}", width="stretch",
                         selection_default={"selection": {"rows": [ids.index(selected)], "columns": []}})
    if event and event.selection.rows:
        selected = ids[event.selection.rows[0]]
        st.session_state["study_selected"] = selected
    study = next(s for s in studies_list if s["id"] == selected)
    show_answer(store, selected)
    _actions(store, study)
