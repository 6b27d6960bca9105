"""The Train page's live dashboard of one run: status, controls, progress, charts, samples.

    from pages.common import run_dashboard
    run_dashboard.render_dashboard(store, run_id, was_active)   # inside the page's polling fragment

The set-up form is in ``pages/train.py``; this module only reads the run store and asks
``flowlib.jobs.worker`` to stop or resume runs.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import plotly.graph_objects as go
import streamlit as st

from flowlib.config import TrainConfig
from flowlib.jobs.forecast import pace_so_far
from flowlib.store.records import CurveFollower
from pages.common import reference, ui

__all__ = ["render_dashboard", "busy_words", "friendly"]


def friendly(message: str) -> str:
    return message[:1].upper() + message[1:] + ("" if message.endswith(".") else ".")


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
    """A dotted line where each event of ``ui.EVENT_STYLE`` happened: NaN skips, rollbacks, LR
    drops, errors, resumes, stops, early stops, lost processes and warnings."""
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
    """(fraction done, words) from the budget, the step and the run's own pace so far."""
    train = run["train"]
    newest = [c["step"][-1] for c in m.values() if c.get("step")]
    step = max([run["step"] or 0, *newest])   # the heartbeat's step can lag the newest row by a second
    elapsed = (m.get("elapsed_s") or {}).get("value", [0.0])[-1] if m.get("elapsed_s") else 0.0
    fracs = []
    if train.get("max_steps"):
        fracs.append(step / train["max_steps"])
    if train.get("max_minutes"):
        fracs.append(elapsed / (train["max_minutes"] * 60))
    frac = min(1.0, max(fracs) if fracs else 0.0)
    eta = ""
    pace = pace_so_far(m, max(1, train.get("batch_size", 64)))   # evaluations and grids included
    if run["status"] in ("running",) and pace:
        steps_s = pace / max(1, train.get("batch_size", 64))
        left = []
        if train.get("max_steps"):
            left.append((train["max_steps"] - step) / max(steps_s, 1e-9))
        if train.get("max_minutes"):
            left.append(train["max_minutes"] * 60 - elapsed)
        if left:
            secs = max(0.0, min(left))
            eta = f" · about {ui.fmt_duration(secs)} left"
            if train.get("max_minutes") and (not train.get("max_steps") or
                                             step + secs * steps_s < train["max_steps"]):
                eta += f", about {step + secs * steps_s:,.0f} steps by the end at the pace so far"
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
    """'Run 2 'mnist-b' (step 340) is training, and this server trains one run at a time.'"""
    names = ", ".join(f"run {o['id']} '{o['name']}' (step {o['step'] or 0:,})" for o in others[:3])
    names = names[:1].upper() + names[1:]
    verb = "is" if len(others) == 1 else "are"
    at_a_time = "one run" if limit == 1 else f"{limit} runs"
    return f"{names} {verb} training, and this server trains {at_a_time} at a time."


def other_runs_bar(store, run: dict) -> None:
    """While this page shows a run that is not training, say which other run is, and offer to
    show it and, when every training slot is taken, to stop it so that this one can be resumed."""
    from flowlib.jobs import worker

    others = [r for r in store.list_runs()
              if r["status"] in ui.ACTIVE_STATUSES and r["id"] != run["id"]]
    if not others or run["status"] in ui.ACTIVE_STATUSES:
        return
    limit = store.limits.max_concurrent
    full = len(others) >= limit
    other = others[0]
    text = busy_words(others, limit)
    may_stop = ui.may_control(other)
    if full and run["status"] in ("stopped", "failed", "lost", "finished"):
        text += (f" To continue run {run['id']}, stop run {other['id']} first, or wait until "
                 "it finishes." if may_stop else
                 f" To continue run {run['id']}, wait until run {other['id']} finishes (it is "
                 "someone else's to stop).")
    st.info(text, icon=":material/model_training:")
    # One row of buttons as wide as their labels (fixed columns cut "Stop run 12" at 1280 px)
    c1 = c2 = st.container(horizontal=True, gap="small")
    if c1.button(f"Show run {other['id']}", icon=":material/monitoring:",
                 key=f"show_other_{run['id']}_{other['id']}", width="content"):
        st.session_state["train_run"] = other["id"]
        st.query_params["run"] = str(other["id"])
        st.rerun(scope="app")
    if full and may_stop and c2.button(f"Stop run {other['id']}", icon=":material/stop:",
                          key=f"stop_other_{run['id']}_{other['id']}", width="content",
                          help="Finishes its current step, saves a checkpoint and stops; it can "
                               "be resumed later."):
        try:
            worker.stop_run(store, other["id"], owner=ui.control_owner(other), by=ui.stopped_by(other))
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
    from flowlib.jobs import worker
    from flowlib.store.runs import RunLimitError, RunStateError

    status = run["status"]
    rid = run["id"]
    mine = ui.may_control(run)
    if not mine and status in ("queued", "running", "stopped", "failed", "lost", "finished"):
        st.caption(ui.not_yours_words(run))
    # One row, each button as wide as its label, wrapping onto a second line on a narrow screen:
    # fixed columns cut "Train 5 more minutes" and "Compare in Runs" at 1280×720.
    b1 = b2 = b3 = st.container(horizontal=True, gap="small")
    owner = ui.control_owner(run)
    try:
        if not mine:
            pass   # anyone may watch; only the owner (or the teacher) stops, resumes or extends
        elif status in ("queued", "running"):
            if b1.button("Stop", icon=":material/stop:", key=f"stop_{rid}", width="content",
                         help="Finishes the current step, saves a checkpoint, and stops. Resume continues."):
                worker.stop_run(store, rid, owner=owner, by=ui.stopped_by(run))
                st.rerun()
        elif status in ("stopped", "failed", "lost"):
            fits = fitting_batch(store, run)
            if fits is not None:
                # out of memory: resuming with the same batch would fail again at once
                if b1.button(f"Resume with batch {fits}", icon=":material/play_arrow:", type="primary",
                             key=f"resume_{rid}", width="content",
                             help=f"Continue from the last checkpoint with batch size {fits}, which "
                                  "fitted in memory when it was tried; every other setting stays."):
                    worker.resume_run(store, rid, owner=owner, batch_size=fits)
                    st.session_state["train_run"] = rid
                    st.rerun(scope="app")
            elif b1.button("Resume", icon=":material/play_arrow:", type="primary", key=f"resume_{rid}",
                           width="content", help="Continue from the last checkpoint with the same settings."):
                worker.resume_run(store, rid, owner=owner)
                st.session_state["train_run"] = rid
                st.rerun(scope="app")
        elif status == "finished":
            more = 1000 if run["train"].get("max_steps") else None
            label = "Train 1,000 more steps" if more else "Train 5 more minutes"
            if b1.button(label, icon=":material/add:", key=f"more_{rid}", width="content",
                         help="Raise the budget and continue from the final checkpoint."):
                if more:
                    worker.resume_run(store, rid, owner=owner,
                                      max_steps=run["train"]["max_steps"] + more)
                else:
                    worker.resume_run(store, rid, owner=owner,
                                      max_minutes=run["train"]["max_minutes"] + 5)
                st.rerun(scope="app")
    except RunLimitError:
        # The store's message ends "…or raise FLOWLAB_MAX_CONCURRENT": a server setting a
        # teacher at a projector cannot act on. Say it in words, naming the run in the way.
        others = [r for r in store.list_runs() if r["status"] in ui.ACTIVE_STATUSES and r["id"] != rid]
        st.error(busy_words(others, store.limits.max_concurrent)
                 + (" Stop it first (the button above), or wait until it finishes; then press Resume "
                    "again." if ui.may_control(others[0]) else " Wait until it finishes (it is someone "
                    "else's to stop); then press Resume again.")
                 if others else "Every training slot is taken; wait until a run finishes.",
                 icon=":material/block:")
    except (RunStateError, PermissionError, ValueError, KeyError) as exc:
        st.error(friendly(str(exc)), icon=":material/block:")
    if b2.button("Compare in Runs", icon=":material/stacked_line_chart:", key=f"compare_{rid}",
                 width="content"):
        st.switch_page("pages/runs.py", query_params={"compare": str(rid)})
    ckpt = store.checkpoint_path(rid)
    if status in ("stopped", "finished", "failed", "lost") and ckpt.is_file():
        if b3.button("Look inside this model", icon=":material/layers:", key=f"explore_{rid}",
                     width="content"):
            st.session_state[ui.EXPLORE_KEY] = str(ckpt)
            st.switch_page("pages/latents.py")


STATUS_ICONS = {"running": ":material/sync:", "queued": ":material/hourglass_top:",
                "stopping": ":material/pause_circle:", "stopped": ":material/pause_circle:",
                "finished": ":material/check_circle:", "failed": ":material/error:",
                "lost": ":material/warning:"}
STATUS_COLOURS = {"running": "green", "queued": "blue", "stopping": "orange", "stopped": "gray",
                  "finished": "green", "failed": "red", "lost": "orange"}


def header(run: dict, events: list = ()) -> None:
    """The run's title with its status badge, and its settings in one line (unless damaged),
    ending with the arithmetic its trainer last said it uses (``precision`` events; none
    before the trainer has started, nor in runs older than those events)."""
    status = run["status"]
    st.markdown(f"### Run {run['id']} · {run['name']} &nbsp; :{STATUS_COLOURS.get(status, 'gray')}-badge["
                f"{STATUS_ICONS.get(status, '')} {ui.STATUS_WORDS.get(status, status)}]")
    if run["damaged"]:   # its settings are unknown: no line of them can be written truthfully
        return
    cfgd = run["config"]
    precision = [e["message"] for e in events if e["kind"] == "precision"]
    st.caption(f"{run['dataset']} · preset {run.get('preset') or 'custom'} · "
               f"L={cfgd.get('levels')}, K={cfgd.get('steps')}, hidden {cfgd.get('hidden')}, "
               f"{cfgd.get('coupling')}, {cfgd.get('permutation')}, {cfgd.get('mask')} mask · "
               f"batch {run['train'].get('batch_size')}, lr {run['train'].get('lr'):g} "
               f"({run['train'].get('lr_schedule', 'constant')})"
               + (f" · {precision[-1]}" if precision else ""))


def status_note(run: dict) -> None:
    """The run's message in the colour of its status (nothing while it trains)."""
    status = run["status"]
    if status == "failed":
        st.error(f"**This run failed.** {run['message']}", icon=":material/error:")
    elif status == "lost":
        st.warning(run["message"], icon=":material/warning:")
    elif status == "finished":
        st.success(run["message"], icon=":material/check_circle:")
    elif status in ("queued", "stopping", "stopped"):
        st.info(friendly(run["message"]), icon=":material/info:")


def queue_note(store, run: dict) -> None:
    """A waiting run's place, from the store: '2nd in the queue, 1 run training: it starts by
    itself when a training slot frees up.'"""
    words = ui.queue_words(store, run)
    if words:
        st.info(f"{words}: it starts by itself when a training slot frees up.",
                icon=":material/hourglass_top:")


def run_images_per_s(m: dict, batch: int) -> float | None:
    """Steps × batch ÷ training time of the whole run so far (evaluations, grids and
    checkpoints included), from the newest ``elapsed_s`` row."""
    el = m.get("elapsed_s") or {}
    if not el.get("value") or el["value"][-1] <= 0:
        return None
    return el["step"][-1] * batch / el["value"][-1]


def test_words(run: dict, m: dict) -> str:
    """One line naming what each test number is: the evaluations on the held-out subset, the
    best of them with its step, and the final score on the whole test set."""
    test, full = m.get("test_bpd") or {}, m.get("test_bpd_full") or {}
    n = run["train"].get("eval_subset", TrainConfig.eval_subset)
    parts = []
    if test.get("value"):
        best = min(test["value"])
        at = test["step"][test["value"].index(best)]
        parts.append(f"**Test bits/dim** during training: {len(test['value'])} evaluation"
                     f"{'s' if len(test['value']) != 1 else ''} on the same {n:,} held-out test images; "
                     f"best **{best:.4f}** at step {at:,}")
    if full.get("value"):
        parts.append(f"final: **{full['value'][-1]:.4f}** on the whole test set at step {full['step'][-1]:,}")
    return " · ".join(parts)


def metric_cards(run: dict, m: dict) -> None:
    """Five cards, each the newest value of what it names: train and test bits/dim, loss,
    images/s of the whole run, learning rate; a line below names the test numbers."""
    last = {k: v["value"][-1] for k, v in m.items() if v["value"]}
    k1, k2, k3, k4, k5 = st.columns(5)
    k1.metric("Train bits/dim", f"{last['train_bpd']:.3f}" if "train_bpd" in last else "–",
              help=ui.BPD_HELP, border=True)
    # Short labels: at 1280 px five cards are ~145 px wide; which test and which step go under the value.
    test, full = m.get("test_bpd") or {}, m.get("test_bpd_full") or {}
    if full.get("value"):
        k2.metric("Test bits/dim", f"{full['value'][-1]:.4f}", delta="final",
                  delta_color="off", delta_arrow="off", border=True,
                  help="The finished model on the whole test set. " + ui.BPD_HELP)
    elif test.get("value"):
        k2.metric("Test bits/dim", f"{test['value'][-1]:.3f}", delta=f"at step {test['step'][-1]:,}",
                  delta_color="off", delta_arrow="off", border=True,
                  help="The same measure on held-out test images the model never trains on, at the "
                       "newest evaluation. " + ui.BPD_HELP)
    else:
        k2.metric("Test bits/dim", "–", border=True, help=ui.BPD_HELP)
    k3.metric("Loss (nats)", f"{last['loss_nats']:,.0f}" if "loss_nats" in last else "–",
              help=ui.LOSS_HELP, border=True)
    batch = int(run["train"].get("batch_size", 64))
    overall = run_images_per_s(m, batch)
    steps_alone = (f" The training steps alone ran at {last['images_per_s']:,.0f} images/s in the newest "
                   "window; the rest of the time went to evaluations, sample grids and checkpoints."
                   if "images_per_s" in last else "")
    # The unit sits in the label: "1,057 img/s" did not fit the card at 1600 px and got cut.
    k4.metric("Images/s", f"{overall:,.0f}" if overall else "–", border=True,
              help=f"Steps × batch ÷ training time of the whole run so far ({m['elapsed_s']['step'][-1]:,} × "
                   f"{batch} ÷ {m['elapsed_s']['value'][-1]:,.1f} s), everything included.{steps_alone}"
                   if overall else ui.IMAGES_PER_S_HELP)
    k5.metric("Learning rate", f"{last['lr']:.2g}" if "lr" in last else "–", help=ui.LR_HELP,
              delta=f"peak {run['train'].get('lr', 0):.2g}", delta_color="off", delta_arrow="off", border=True)
    words = test_words(run, m)
    if words:
        st.caption(words)


def latest_samples(store, run: dict) -> None:
    """The newest sample grid, enlarged, with its step and how fresh it is."""
    every = run["train"].get("grid_every_s", TrainConfig.grid_every_s)
    how = (f"Drawn from the current weights about every {every:g} s of training and at each "
           "evaluation, from the same latent noise each time" if every else
           "Drawn from the current weights at each evaluation, from the same latent noise each time")
    st.markdown("**Samples from the model**", help=how + "; temperature scales the noise (0 = the "
                "most likely image).")
    latest = store.latest_samples(run["id"])
    if latest and Path(latest["path"]).is_file():
        from PIL import Image
        img = Image.open(latest["path"])
        factor = max(1, 640 // max(1, img.width))
        if factor > 1:
            img = img.resize((img.width * factor, img.height * factor), Image.NEAREST)
        st.image(img, width="stretch")
        temperatures = run["train"].get("sample_temperatures") or TrainConfig.sample_temperatures
        fresh = ""
        if run["status"] in ui.ACTIVE_STATUSES and every:
            fresh = f" (drawn {ui.fmt_duration(max(0.0, time.time() - latest['wall']))} ago; a new one every ~{every:g} s)"
        st.caption(f"Step {latest['step']:,}{fresh}. {ui.sample_caption(temperatures)}")
    else:
        st.caption("The first sample grid appears as soon as the model is built (step 0: noise).")


def metric_chart(m: dict, metric: str, title: str, help_text: str, y_title: str, name: str,
                 colour: str, short: str, fmt: str, axis: str, run_id: int) -> None:
    """One metric's line chart under its title; nothing before its first logged row."""
    if metric in m:
        st.markdown(title, help=help_text)
        st.plotly_chart(simple_figure(m[metric], m.get("elapsed_s"), axis, y_title, name, colour,
                                      f"{short}-{run_id}-{axis}", fmt),
                        key=f"{short}_chart_{run_id}", config={"displaylogo": False})


SPEED_HELP = ("Two lines: the training steps alone (each window of steps), and everything included "
              "(steps × batch ÷ training time between logged rows, so evaluations, sample grids and "
              "checkpoints count). The Images / second card is the second for the whole run.")
LR_SCHEDULE_HELP = (". The warm-up ends by 10 % of the budget at the latest, so a short run reaches its "
                    "peak; a resume with a larger budget starts a new warm-up and cosine (a dotted line "
                    "marks each resume).")


def wall_pace(m: dict, batch: int) -> dict | None:
    """Images/s between logged rows, everything included: Δstep × batch ÷ Δ training time."""
    el = m.get("elapsed_s") or {}
    steps, secs = el.get("step") or [], el.get("value") or []
    xs, ys = [], []
    for i in range(1, len(steps)):
        dt, ds = secs[i] - secs[i - 1], steps[i] - steps[i - 1]
        if dt > 0 and ds > 0:
            xs.append(steps[i])
            ys.append(ds * batch / dt)
    return {"step": xs, "value": ys} if xs else None


def speed_figure(m: dict, batch: int, axis: str, run_id: int):
    el = m.get("elapsed_s")
    fig = go.Figure()
    c = m["images_per_s"]
    fig.add_trace(go.Scatter(x=ui.x_values(c, el, axis), y=c["value"], mode=ui.line_mode(c["value"]),
                             name="training steps alone", line=dict(color=ui.PALETTE[4], width=2, dash="dot"),
                             hovertemplate="%{y:,.0f} images/s"))
    wall = wall_pace(m, batch)
    if wall:
        fig.add_trace(go.Scatter(x=ui.x_values(wall, el, axis), y=wall["value"], mode=ui.line_mode(wall["value"]),
                                 name="everything included", line=dict(color=ui.PALETTE[4], width=3),
                                 hovertemplate="%{y:,.0f} images/s"))
    ui.base_layout(fig, x_title=ui.X_TITLES[axis], y_title="images/s", uirevision=f"ips-{run_id}-{axis}",
                   height=300)
    return fig


def add_resume_marks(fig, m: dict, events: list, axis: str) -> None:
    """A dotted line at each resume, its words on hover (a new budget's schedule says so there)."""
    resumes = [e for e in events if e["kind"] == "resume" and e.get("step") is not None]
    if not resumes or not m.get("lr"):
        return
    steps = [e["step"] for e in resumes]
    xs = ui.x_values({"step": steps}, m.get("elapsed_s"), axis)
    ys = np.interp(steps, m["lr"]["step"], m["lr"]["value"]).tolist()
    for x in xs:
        fig.add_vline(x=x, line=dict(color=ui.EVENT_STYLE["resume"][0], dash="dot", width=2))
    fig.add_trace(go.Scatter(x=xs, y=ys, mode="markers", name="resumed",
                             marker=dict(size=12, symbol="x", color=ui.EVENT_STYLE["resume"][0]),
                             text=[e["message"] for e in resumes], hovertemplate="%{text}<extra></extra>"))


def charts(store, run: dict, m: dict, events: list) -> None:
    """Bits/dim with the samples beside it, then the bits' split, the loss, speed and learning rate."""
    run_id = run["id"]
    left, right = st.columns([3, 2], gap="large")
    with left:
        t1, t2 = st.columns([3, 2], vertical_alignment="bottom")
        t1.markdown("**Bits per dimension**: train and test", help=ui.BPD_HELP)
        axis = t2.segmented_control(
            "x-axis of every chart", ["step", "time"], default="step", key=f"axis_{run_id}",
            format_func=lambda a: "by step" if a == "step" else "by training time",
            required=True, label_visibility="collapsed") or "step"
        fig = bpd_figure(m, events, axis, run_id)
        reference.add_expected(fig, store, run, axis)   # faint 'expected' curve (pages/common/reference.py)
        st.plotly_chart(fig, key=f"bpd_chart_{run_id}", config={"displaylogo": False})
    with right:
        latest_samples(store, run)

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
    with d2:
        metric_chart(m, "loss_nats", "**Training loss**: negative log-likelihood per image",
                     ui.LOSS_HELP, "nats/image", "loss", ui.PALETTE[3], "loss", ",.0f", axis, run_id)
    s1, s2 = st.columns(2, gap="large")
    batch = int(run["train"].get("batch_size", 64))
    with s1:
        if "images_per_s" in m:
            st.markdown("**Speed**: images per second", help=SPEED_HELP)
            st.plotly_chart(speed_figure(m, batch, axis, run_id), key=f"ips_chart_{run_id}",
                            config={"displaylogo": False})
    with s2:
        if "lr" in m:
            st.markdown("**Learning rate**", help=ui.LR_HELP + LR_SCHEDULE_HELP)
            fig = simple_figure(m["lr"], m.get("elapsed_s"), axis, "learning rate", "lr", ui.PALETTE[5],
                                f"lr-{run_id}-{axis}", ".2g")
            add_resume_marks(fig, m, events, axis)
            st.plotly_chart(fig, key=f"lr_chart_{run_id}", config={"displaylogo": False})


CURVES_KEY = "dashboard_curves"   # this tab's CurveFollower of the run on show


def run_curves(store, run_id: int) -> dict:
    """The run's curves, as ``store.metrics(run_id)`` reads them, for this tab: each poll reads
    only the rows written since the last one (a tab watching a long run costs what the run
    writes, not its whole curve, every 2 s). One follower per tab, of the run on show."""
    key = (str(store.root), int(run_id))
    held = st.session_state.get(CURVES_KEY)
    if held is None or held[0] != key:
        held = st.session_state[CURVES_KEY] = (key, CurveFollower(run_id))
    return held[1].refresh(store)


def render_dashboard(store, run_id: int, was_active: bool) -> None:
    """The whole dashboard of run ``run_id``; ``was_active``: whether the page polls it (when it
    has ended since, the app reruns once to update the buttons and stop the timer)."""
    run = store.get_run(run_id)
    if run is None:
        st.info("This run was deleted. Start a new one above, or pick one on the Runs page.")
        return
    if was_active and run["status"] not in ui.ACTIVE_STATUSES + (ui.WAITING,):
        st.rerun(scope="app")  # the run ended: update the buttons and switch the timer off
    events = store.events(run_id)
    header(run, events)
    if run["damaged"]:   # its settings are unknown: nothing below could be drawn truthfully
        st.error(friendly(run["damaged"]), icon=":material/error:")
        return
    other_runs_bar(store, run)
    controls(store, run)
    status_note(run)
    queue_note(store, run)

    m = run_curves(store, run_id)
    frac, words = progress(run, m)
    st.progress(frac, text=words)
    metric_cards(run, m)
    if not m:
        st.info("Waiting for the first measurements: the training process is loading the data and "
                f"building the model, then logs its first point at step {run['train'].get('log_every', 10)}.",
                icon=":material/hourglass_top:")
        return
    charts(store, run, m, events)
    shown = [e for e in events if e["kind"] not in ("samples", "checkpoint")]
    with st.expander(f"Events ({len(shown)})", icon=":material/list:"):
        for e in shown[-50:]:
            at = f"step {e['step']:,}" if e.get("step") is not None else ""
            st.markdown(f"- **{e['kind']}** {at}: {e['message']}")
