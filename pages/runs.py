"""Runs: every run in one table; overlay the curves of several; compare their settings.

Also studies (``flowlib.study``, on Optuna): the same model under two or more settings, or a
search over ranges, several paired seeds each, answered with 95 % intervals and a verdict in
words. The studies listed are those of the study storage this server is pointed at
(``FLOWLAB_STUDY_STORAGE``), trials trained on other machines included, then the older
studies of the run store. Their trials train in worker processes, with or without this page.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from pages.common import reference, studies, ui
from pages.common.settings_form import settings_table

ui.require_router()

CURVES = {
    "test_bpd": ("held-out bits/dim (validation images; test images in older runs)", "bits/dim (lower is better)"),
    "train_bpd": ("train bits/dim (training batches)", "bits/dim (lower is better)"),
    "loss_nats": ("training loss", "nats/image"),
    "images_per_s": ("speed", "images/s"),
}
# The table's short status words (ui.STATUS_WORDS has the long ones for sentences).
TABLE_STATUS = {"created": "not started", "waiting": "waiting", "queued": "starting", "running": "training",
                "stopping": "stopping", "stopped": "stopped", "finished": "finished", "failed": "failed",
                "lost": "lost"}


def _dash(value, fmt: str) -> str:
    return "–" if value is None else format(value, fmt)


def run_rows(store, runs: list[dict], study_of: dict[int, int]) -> pd.DataFrame:
    rows = []
    for r in runs:
        latest = store.latest_metrics(r["id"])
        train, cfg = r["train"], r["config"]
        elapsed = latest.get("elapsed_s", (None, None))[1]
        budget = (f"{train['max_steps']:,}" if train.get("max_steps")
                  else f"{train.get('max_minutes', 0):g} min")
        settings = ("damaged: unreadable" if r.get("damaged") else
                    f"L{cfg.get('levels')} K{cfg.get('steps')} h{cfg.get('hidden')} "
                    f"{cfg.get('coupling')} {cfg.get('permutation')} {cfg.get('mask')} · "
                    f"b{train.get('batch_size')} lr {train.get('lr'):g}")
        rows.append({
            "id": r["id"], "name": r["name"], "status": TABLE_STATUS.get(r["status"], r["status"]),
            "study": _dash(study_of.get(r["id"]), "d"),
            "dataset": r["dataset"],
            "preset": r.get("preset") or "custom",
            "settings": settings,
            "steps": f"{r['step'] or 0:,} / {budget}",
            "training time": ui.fmt_duration(elapsed) if elapsed is not None else "–",
            "best test bits/dim": _dash(r.get("best_test_bpd"), ".3f"),
            "images/s": _dash(latest.get("images_per_s", (None, None))[1], ",.0f"),
            "yours": r.get("owner") == ui.visitor_id(),   # started in this browser
        })
    return pd.DataFrame(rows)


def overlay_figure(store, runs: list[dict], key: str, axis: str):
    fig = go.Figure()
    for i, r in enumerate(runs):
        m = store.metrics(r["id"], keys=[key, "elapsed_s"])
        c = m.get(key)
        if not c:
            continue
        colour = ui.PALETTE[i % len(ui.PALETTE)]
        mode = "lines+markers" if key == "test_bpd" else ui.line_mode(c["value"])
        fig.add_trace(go.Scatter(x=ui.x_values(c, m.get("elapsed_s"), axis), y=c["value"], mode=mode,
                                 name=f"{r['id']} · {r['name']}", line=dict(color=colour, width=3),
                                 marker=dict(size=8),
                                 hovertemplate=f"{r['name']}: %{{y:.4g}}<extra></extra>"))
    ui.base_layout(fig, x_title=ui.X_TITLES[axis], y_title=CURVES[key][1],
                   uirevision=f"overlay-{key}-{axis}-{'-'.join(str(r['id']) for r in runs)}",
                   height=460)
    return fig


def single_run_actions(store, run: dict, study_id: int | None) -> None:
    rid = run["id"]
    st.markdown(f"##### Run {rid} · {run['name']}")
    allowed = ui.may_control(run)
    if not allowed:
        st.caption(ui.not_yours_words(run))
    owner = ui.control_owner(run)
    a1, a2, a3, a4 = st.columns([2, 1, 1, 1], vertical_alignment="bottom")
    with a1:
        new = st.text_input("New name", value=run["name"], key=f"rename_{rid}", max_chars=80,
                            disabled=not allowed)
    with a2:
        if st.button("Rename", icon=":material/edit:", key=f"do_rename_{rid}", width="stretch",
                     disabled=not allowed):
            try:
                final = store.rename_run(rid, new, owner=owner)
                st.session_state["runs_flash"] = ("success", f"Renamed to '{final}'.")
            except (PermissionError, ValueError, KeyError) as exc:
                st.session_state["runs_flash"] = ("error", str(exc))
            st.rerun()
    with a3:
        active = run["status"] in ui.ACTIVE_STATUSES
        why = ("Stop the run first." if active else
               f"Part of study {study_id}: delete the study as a whole (above), so its answer never "
               "silently loses a seed." if study_id is not None else "Asks for confirmation.")
        if st.button("Delete…", icon=":material/delete:", key=f"delete_{rid}", width="stretch",
                     disabled=not allowed or active or study_id is not None, help=why):
            st.session_state["runs_confirm_delete"] = rid
    ckpt = store.checkpoint_path(rid)
    with a4:
        if ckpt.is_file():
            st.download_button("Checkpoint", data=lambda p=ckpt: Path(p).read_bytes(),
                               file_name=f"flowlab-run{rid}-{run['name']}.pt",
                               mime="application/octet-stream", icon=":material/download:",
                               width="stretch", key=f"download_{rid}",
                               help="The model, optimizer state and settings (load with "
                                    "flowlib.core.checkpoint.load_model).")
        else:
            st.caption("No checkpoint yet.")
    if st.session_state.get("runs_confirm_delete") == rid and allowed:
        def delete() -> str:
            store.delete_run(rid, owner=owner)
            return f"Deleted run {rid} '{run['name']}'."

        ui.confirm_delete("runs_confirm_delete",
                          f"Delete run **{rid} · {run['name']}**? Its curves, samples and checkpoint "
                          "are removed for good.",
                          f"Yes, delete run {rid}", f"confirm_delete_{rid}", f"cancel_delete_{rid}", delete)
    b1, b2, b3, _ = st.columns([1, 1, 1, 1])
    if run["status"] in ("queued", "running") and allowed and b3.button(
            "Stop this run", icon=":material/stop:", key=f"stop_{rid}", width="stretch",
            help="Finishes the current step, saves a checkpoint and stops; Resume continues from it."):
        from flowlib.jobs import worker
        try:
            asked = worker.stop_run(store, rid, owner=owner, by=ui.stopped_by(run))
            st.session_state["runs_flash"] = ("success" if asked else "info",
                                              f"Run {rid} is stopping: it saves a checkpoint first." if asked
                                              else f"Run {rid} was already stopping.")
        except (PermissionError, KeyError) as exc:
            st.session_state["runs_flash"] = ("error", str(exc))
        st.rerun(scope="app")
    if b1.button("Open its live dashboard", icon=":material/monitoring:", key=f"open_{rid}",
                 width="stretch"):
        st.session_state["train_run"] = rid
        st.switch_page("pages/train.py", query_params={"run": str(rid)})
    if ckpt.is_file() and b2.button("Look inside this model", icon=":material/layers:",
                                    key=f"explore_{rid}", width="stretch",
                                    help="Opens the Latents page with this run's checkpoint."):
        st.session_state[ui.EXPLORE_KEY] = str(ckpt)
        st.switch_page("pages/latents.py")


# -- page ------------------------------------------------------------------------------------
st.title("Runs")
store = ui.get_store()
flash = st.session_state.pop("runs_flash", None)
if flash:
    getattr(st, flash[0])(flash[1])

study_list, study_problem = studies.study_rows(store)
with st.expander("**Start a study**: the same model under two or more settings, or a search over ranges, "
                 "several seeds each, answered with intervals", icon=":material/science:", expanded=not study_list):
    st.markdown(
        "One click runs a paper's comparison at this budget (the Glow paper's reverse vs shuffle vs 1×1 "
        "convolution, additive vs affine coupling, ...), choose what to vary, or search ranges of settings "
        "(Optuna's TPE sampler, losing configurations pruned). Every arm trains the same model with the "
        "same budget; seed *s* of every arm starts from the same weights and sees the same batches, so "
        "differences are measured seed by seed. The answer: each arm's final test bits/dim on the full "
        "test set with a 95 % interval, every pair of arms compared (Holm-corrected), and a verdict in "
        "words — including \"no difference this study can resolve\".")
    with ui.guard("planning the study"):
        studies.launcher(store)
if study_problem:
    st.warning(f"The study storage cannot be read: {study_problem}", icon=":material/warning:")


def studies_body() -> None:
    current, _problem = studies.study_rows(store)
    if current:
        st.subheader("Studies", anchor=False)
        studies.section(store, current)


if study_list:
    busy_study = any(s["status"] in ("running", "waiting") for s in study_list)
    with ui.guard("showing the studies"):
        st.fragment(studies_body, run_every=4.0 if busy_study else None)()
    st.subheader("Runs", anchor=False)


def runs_body(poll: bool) -> None:
    runs = store.list_runs()
    if poll and not any(r["status"] in ui.ACTIVE_STATUSES or r["status"] == ui.WAITING for r in runs):
        st.rerun(scope="app")
    if not runs:
        st.info("No runs yet. Start one on the Train page, or start a study above.",
                icon=":material/info:")
        return
    study_of = studies.study_of_runs(store)
    df = run_rows(store, runs, study_of)
    st.markdown(f"**{len(runs)} run{'s' if len(runs) != 1 else ''}.** Tick several to overlay their curves and compare their "
                "settings; tick one to rename, delete, download or explore it.")
    preselect = st.session_state.pop("runs_preselect", None)
    if preselect is None and st.session_state.get("runs_compare_applied") != st.query_params.get("compare"):
        # ?compare=3,4,5 in the URL: a comparison that can be bookmarked or shared
        raw = st.query_params.get("compare") or ""
        st.session_state["runs_compare_applied"] = raw
        preselect = [int(v) for v in raw.split(",") if v.strip().isdigit()] or None
    selection_default = None
    if preselect:
        rows = [i for i, rid in enumerate(df["id"]) if rid in preselect]
        selection_default = {"selection": {"rows": rows, "columns": []}}
    kwargs = {"selection_default": selection_default} if selection_default else {}
    event = st.dataframe(
        df, hide_index=True, on_select="rerun", selection_mode="multi-row", key="runs_table",
        column_config={
            "id": st.column_config.NumberColumn("run", width="small"),
            "study": st.column_config.NumberColumn("study", width="small",
                                                   help="The study this run belongs to, if any"),
            "name": st.column_config.TextColumn("name", width="medium"),
            "settings": st.column_config.TextColumn("key settings", width="medium"),
            "dataset": st.column_config.TextColumn("data", width="small"),
            "best test bits/dim": st.column_config.NumberColumn(
                "best held-out bits/dim", format="%.3f",
                help="The best periodic evaluation: on validation images held out from the training "
                     "split (runs with validation images, the default), on test images for older runs. "
                     "The test split's own number is the run's last evaluation, on the full test set. "
                     + ui.BPD_HELP),
            "images/s": st.column_config.NumberColumn(format="%.0f", help=ui.IMAGES_PER_S_HELP),
            "yours": st.column_config.CheckboxColumn("yours"),
        },
        **kwargs)
    picked = [int(df.iloc[i]["id"]) for i in event.selection.rows] if event else []
    if not picked and selection_default is not None:
        # The ticks just set from ?compare= reach the selection only on the next rerun; until
        # then show what the table already shows as ticked.
        picked = [int(df.iloc[i]["id"]) for i in selection_default["selection"]["rows"]]
    chosen = [r for r in runs if r["id"] in picked]
    if not chosen:
        st.caption("Nothing ticked yet.")
        return

    st.subheader("Curves", anchor=False)
    c1, c2 = st.columns([2, 1])
    key = c1.segmented_control("Curve", list(CURVES), default="test_bpd", key="overlay_key",
                               format_func=lambda k: CURVES[k][0], required=True) or "test_bpd"
    axis = c2.segmented_control("x-axis", ["step", "time"], default="step", key="overlay_axis",
                                format_func=lambda a: "training step" if a == "step" else "training time",
                                required=True) or "step"
    fig = overlay_figure(store, chosen, key, axis)
    if key.endswith("bpd") and fig.data:
        reference.offer_published(fig, chosen)   # Glow 1.05, RealNVP 1.06 on MNIST, as labelled lines
    if not fig.data:
        first = min((r["train"].get("first_eval") or r["train"].get("eval_every") or 0) for r in chosen)
        st.info(f"No {CURVES[key][0]} points yet for the ticked runs"
                + (f": the first evaluation is at step {first:,}." if key == "test_bpd" and first else ".")
                + " The chart fills in as they train.", icon=":material/hourglass_top:")
    else:
        st.plotly_chart(fig, key="overlay_chart", config={"displaylogo": False})
    if key.endswith("bpd"):
        st.caption(ui.BPD_HELP)

    if len(chosen) > 1:
        st.subheader("Settings side by side", anchor=False)
        table, differing = settings_table(chosen)
        if differing:
            st.markdown("Differing settings are highlighted: **" + "**, **".join(differing) + "**.")
        else:
            st.markdown("These runs have identical settings.")
        styled = table.style.apply(
            lambda row: ["background-color: #ffe8a3; font-weight: 600" if row.name in differing else ""
                         for _ in row], axis=1)
        st.dataframe(styled, height=min(36 * (len(table) + 1) + 4, 760))
    else:
        single_run_actions(store, chosen[0], study_of.get(chosen[0]["id"]))


runs_now = store.list_runs()
poll = any(r["status"] in ui.ACTIVE_STATUSES or r["status"] == ui.WAITING for r in runs_now)
with ui.guard("showing the runs"):
    st.fragment(runs_body, run_every=3.0 if poll else None)(poll)
