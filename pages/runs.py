"""Runs: every run in one table; overlay the curves of several; compare their settings.

Also the one-click permutation study (the Glow paper's reverse vs shuffle vs 1×1 conv with
everything else equal). Runs that wait for a free training slot are ``waiting``; the worker
starts them, oldest first, whenever a run ends, with or without this page open
(``flowlib.worker.submit(..., queue=True)``).
"""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from flowlib.config import PRESETS, TrainConfig
from pages import ui
from pages.common.settings_form import settings_table

ui.require_router()

STUDY_PERMUTATIONS = ("reverse", "shuffle", "conv1x1")
CURVES = {
    "test_bpd": ("test bits/dim (held-out images)", "bits/dim (lower is better)"),
    "train_bpd": ("train bits/dim (training batches)", "bits/dim (lower is better)"),
    "loss_nats": ("training loss", "nats/image"),
    "images_per_s": ("speed", "images/s"),
}
def run_rows(store, runs: list[dict]) -> pd.DataFrame:
    rows = []
    for r in runs:
        latest = store.latest_metrics(r["id"])
        train, cfg = r["train"], r["config"]
        elapsed = latest.get("elapsed_s", (None, None))[1]
        budget = (f"{train['max_steps']:,}" if train.get("max_steps")
                  else f"{train.get('max_minutes', 0):g} min")
        rows.append({
            "id": r["id"], "name": r["name"], "status": r["status"], "dataset": r["dataset"],
            "preset": r.get("preset") or "custom",
            "settings": f"L{cfg.get('levels')} K{cfg.get('steps')} h{cfg.get('hidden')} "
                        f"{cfg.get('coupling')} {cfg.get('permutation')} {cfg.get('mask')} · "
                        f"b{train.get('batch_size')} lr {train.get('lr'):g}",
            "steps": f"{r['step'] or 0:,} / {budget}",
            "training time": ui.fmt_duration(elapsed) if elapsed is not None else "–",
            "best test bits/dim": r.get("best_test_bpd"),
            "images/s": latest.get("images_per_s", (None, None))[1],
            "yours": (r.get("owner") == ui.visitor_id()) if ui.classroom_mode() else None,
        })
    df = pd.DataFrame(rows)
    if not ui.classroom_mode() and not df.empty:
        df = df.drop(columns=["yours"])
    return df


def overlay_figure(store, runs: list[dict], key: str, axis: str):
    fig = go.Figure()
    for i, r in enumerate(runs):
        m = store.metrics(r["id"], keys=[key, "elapsed_s"])
        c = m.get(key)
        if not c:
            continue
        colour = ui.PALETTE[i % len(ui.PALETTE)]
        mode = "lines+markers" if key == "test_bpd" else "lines"
        fig.add_trace(go.Scatter(x=ui.x_values(c, m.get("elapsed_s"), axis), y=c["value"], mode=mode,
                                 name=f"{r['id']} · {r['name']}", line=dict(color=colour, width=3),
                                 marker=dict(size=8),
                                 hovertemplate=f"{r['name']}: %{{y:.4g}}<extra></extra>"))
    ui.base_layout(fig, x_title=ui.X_TITLES[axis], y_title=CURVES[key][1],
                   uirevision=f"overlay-{key}-{axis}-{'-'.join(str(r['id']) for r in runs)}",
                   height=460)
    return fig


def start_study(store, steps: int, dataset: str = "mnist") -> list[int]:
    """Queue the three runs (everything equal but the permutation); the worker starts each
    one when a training slot is free."""
    from flowlib import worker

    base = PRESETS["mnist-fast"]
    tc = TrainConfig(dataset=dataset, max_steps=int(steps), eval_every=max(50, int(steps) // 10))
    store.limits.check_train(tc.to_dict())   # all three or none: they share these settings
    stamp = time.strftime("%H%M")
    return [worker.submit(store, f"study-{stamp}-{perm}", dataset,
                          base.replace(permutation=perm).to_dict(), tc.to_dict(),
                          owner=ui.visitor_id(), preset="mnist-fast", queue=True)
            for perm in STUDY_PERMUTATIONS]


def single_run_actions(store, run: dict) -> None:
    rid = run["id"]
    st.markdown(f"##### Run {rid} · {run['name']}")
    allowed = ui.may_modify(run)
    if not allowed:
        st.caption("Someone else started this run: in classroom mode only they can rename or delete it.")
    a1, a2, a3, a4 = st.columns([2, 1, 1, 1], vertical_alignment="bottom")
    with a1:
        new = st.text_input("New name", value=run["name"], key=f"rename_{rid}", max_chars=80,
                            disabled=not allowed)
    with a2:
        if st.button("Rename", icon=":material/edit:", key=f"do_rename_{rid}", width="stretch",
                     disabled=not allowed):
            try:
                final = store.rename_run(rid, new, owner=ui.control_owner())
                st.session_state["runs_flash"] = ("success", f"Renamed to '{final}'.")
            except (PermissionError, ValueError, KeyError) as exc:
                st.session_state["runs_flash"] = ("error", str(exc))
            st.rerun()
    with a3:
        active = run["status"] in ui.ACTIVE_STATUSES
        if st.button("Delete…", icon=":material/delete:", key=f"delete_{rid}", width="stretch",
                     disabled=not allowed or active,
                     help="Stop the run first." if active else "Asks for confirmation."):
            st.session_state["runs_confirm_delete"] = rid
    ckpt = store.checkpoint_path(rid)
    with a4:
        if ckpt.is_file():
            st.download_button("Checkpoint", data=lambda p=ckpt: Path(p).read_bytes(),
                               file_name=f"flowlab-run{rid}-{run['name']}.pt",
                               mime="application/octet-stream", icon=":material/download:",
                               width="stretch", key=f"download_{rid}",
                               help="The model, optimizer state and settings (load with "
                                    "flowlib.checkpoint.load_model).")
        else:
            st.caption("No checkpoint yet.")
    if st.session_state.get("runs_confirm_delete") == rid and allowed:
        with st.container(border=True):
            st.warning(f"Delete run **{rid} · {run['name']}**? Its curves, samples and checkpoint "
                       "are removed for good.", icon=":material/delete:")
            y, n, _ = st.columns([1, 1, 2])
            if y.button(f"Yes, delete run {rid}", type="primary", key=f"confirm_delete_{rid}",
                        width="stretch"):
                st.session_state.pop("runs_confirm_delete", None)
                try:
                    store.delete_run(rid, owner=ui.control_owner())
                    st.session_state["runs_flash"] = ("success", f"Deleted run {rid} '{run['name']}'.")
                except (PermissionError, ValueError, KeyError) as exc:
                    st.session_state["runs_flash"] = ("error", str(exc))
                st.rerun(scope="app")
            if n.button("Keep it", key=f"cancel_delete_{rid}", width="stretch"):
                st.session_state.pop("runs_confirm_delete", None)
                st.rerun(scope="app")
    b1, b2, _ = st.columns([1, 1, 2])
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

with st.expander("**Permutation study**: reverse vs shuffle vs 1×1 convolution, one click",
                 icon=":material/science:", expanded=not store.list_runs()):
    st.markdown(
        "The Glow paper's comparison: three runs of the small MNIST Glow that differ **only** in "
        "how channels are mixed between couplings: reversing them (RealNVP), a fixed random "
        "shuffle, or a learned 1×1 convolution (Glow). Same data, seed, width, depth, batch, "
        "learning rate and budget. When this server trains one run at a time, they run one "
        "after another; their curves land on this page.")
    s1, s2 = st.columns([1, 2], vertical_alignment="bottom")
    cap = store.limits.max_steps
    steps = s1.number_input("Steps per run", value=min(1500, cap or 1500), step=250, key="study_steps",
                            help="The same step budget for all three." +
                                 (f" This server allows at most {cap:,}." if cap else ""))
    if s2.button("Start the permutation study", type="primary", icon=":material/play_arrow:",
                 key="study_start"):
        try:
            ids = start_study(store, int(steps))
            st.session_state["runs_flash"] = ("success", f"Created runs {', '.join(map(str, ids))}; "
                                              "tick them below to compare their curves.")
            st.session_state["runs_preselect"] = ids
        except ValueError as exc:
            st.session_state["runs_flash"] = ("error", str(exc))
        st.rerun()


def runs_body(poll: bool) -> None:
    runs = store.list_runs()
    if poll and not any(r["status"] in ui.ACTIVE_STATUSES or r["status"] == ui.WAITING for r in runs):
        st.rerun(scope="app")
    if not runs:
        st.info("No runs yet. Start one on the Train page, or start the permutation study above.",
                icon=":material/info:")
        return
    df = run_rows(store, runs)
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
            "name": st.column_config.TextColumn("name", width="medium"),
            "settings": st.column_config.TextColumn("key settings", width="medium"),
            "dataset": st.column_config.TextColumn("data", width="small"),
            "best test bits/dim": st.column_config.NumberColumn(format="%.3f", help=ui.BPD_HELP),
            "images/s": st.column_config.NumberColumn(format="%.0f", help=ui.IMAGES_PER_S_HELP),
            "yours": st.column_config.CheckboxColumn("yours"),
        },
        **kwargs)
    picked = [int(df.iloc[i]["id"]) for i in event.selection.rows] if event else []
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
    st.plotly_chart(overlay_figure(store, chosen, key, axis), key="overlay_chart",
                    config={"displaylogo": False})
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
        single_run_actions(store, chosen[0])


runs_now = store.list_runs()
poll = any(r["status"] in ui.ACTIVE_STATUSES or r["status"] == ui.WAITING for r in runs_now)
with ui.guard("showing the runs"):
    st.fragment(runs_body, run_every=3.0 if poll else None)(poll)
