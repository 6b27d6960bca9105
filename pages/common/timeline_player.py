"""A player for a run's timeline: a slider over its sample grids by step, Play / Pause, and the
bits/dim curve drawn up to the step shown.

    from pages.common import timeline_player
    timeline_player.render(timeline, key="home")   # a flowlib.train.timeline.Timeline

Playing advances one frame per tick of a fragment's timer (only that part of the page reruns);
the slider scrubs by hand. Nothing trains: the frames are the PNGs the trainer drew.
"""

from __future__ import annotations

import plotly.graph_objects as go
import streamlit as st

from pages.common import ui

__all__ = ["render", "frame_words"]

TICK_S = 0.7    # seconds per frame while playing: a 3-minute run's ~25 frames in ~20 s


def frame_words(tl, step: int) -> str:
    """'Step 420 · 31 s of training · train 1.420 bits/dim · test 1.470 (step 250)'."""
    words = [f"Step {step:,}"]
    elapsed = tl.elapsed_at(step)
    if elapsed is not None:
        words.append(f"{ui.fmt_duration(elapsed)} of training")
    train = tl.value_at("train_bpd", step)
    if train:
        words.append(f"train {train[1]:.3f} bits/dim")
    test = tl.value_at("test_bpd", step)
    if test:
        words.append(f"test {test[1]:.3f} (step {test[0]:,})")
    full = tl.value_at("test_bpd_full", step)
    if full:
        words.append(f"final {full[1]:.4f} on the whole test set")
    return " · ".join(words)


def _figure(tl, step: int, key: str):
    fig = go.Figure()
    for name, k, colour, mode in (("train (batches)", "train_bpd", ui.PALETTE[0], "lines"),
                                  ("test (held-out images)", "test_bpd", ui.PALETTE[1], "lines+markers")):
        c = tl.curves.get(k)
        if not c or not c.get("step"):
            continue
        fig.add_trace(go.Scatter(x=c["step"], y=c["value"], mode=mode, name=f"{name}, whole run",
                                 line=dict(color=colour, width=1), opacity=0.25, hoverinfo="skip",
                                 showlegend=False))
        upto = [i for i, s in enumerate(c["step"]) if s <= step]
        fig.add_trace(go.Scatter(x=[c["step"][i] for i in upto], y=[c["value"][i] for i in upto], mode=mode,
                                 name=name, line=dict(color=colour, width=3), hovertemplate="%{y:.3f} bits/dim"))
    fig.add_vline(x=step, line=dict(color="#495057", dash="dot", width=2))
    ui.base_layout(fig, x_title=ui.X_TITLES["step"], y_title="bits/dim (lower is better)",
                   uirevision=f"timeline-{key}", height=340)
    return fig


def render(tl, key: str) -> None:
    """The player of timeline ``tl``; ``key`` keeps its widgets apart from another player's."""
    steps = tl.steps
    if not steps:
        st.info("This timeline has no sample grids to show.", icon=":material/info:")
        return
    slider_key, playing_key = f"{key}_tl_step", f"{key}_tl_playing"
    if st.session_state.get(slider_key) not in steps:
        st.session_state[slider_key] = steps[0]

    @st.fragment(run_every=TICK_S if st.session_state.get(playing_key) else None)
    def player():
        playing = bool(st.session_state.get(playing_key))
        if playing:   # one frame on per tick; at the end, stop there
            i = steps.index(st.session_state[slider_key])
            if i + 1 < len(steps):
                st.session_state[slider_key] = steps[i + 1]
            else:
                st.session_state[playing_key] = False
                st.rerun(scope="app")   # switch the timer off
        b1, b2 = st.columns([1, 5], vertical_alignment="bottom")
        label, icon = ("Pause", ":material/pause:") if playing else ("Play", ":material/play_arrow:")
        if b1.button(label, icon=icon, key=f"{key}_tl_button", width="stretch", type="primary"):
            if not playing and st.session_state[slider_key] == steps[-1]:
                st.session_state[slider_key] = steps[0]   # play again from the start
            st.session_state[playing_key] = not playing
            st.rerun(scope="app")
        b2.select_slider("Training step", options=steps, key=slider_key,
                         format_func=lambda s: f"step {s:,}", label_visibility="collapsed")
        step = st.session_state[slider_key]
        left, right = st.columns([3, 2], gap="large")
        with left:
            st.plotly_chart(_figure(tl, step, key), key=f"{key}_tl_chart", config={"displaylogo": False})
        with right:
            frame = tl.frame_at(step)
            if frame is not None:
                from PIL import Image
                img = Image.open(frame.path)
                factor = max(1, 560 // max(1, img.width))
                if factor > 1:
                    img = img.resize((img.width * factor, img.height * factor), Image.NEAREST)
                st.image(img, width="stretch")
            temperatures = tl.info.get("sample_temperatures")
            st.caption(ui.sample_caption(temperatures) if temperatures else "")
        st.markdown(f"**{frame_words(tl, step)}**")

    player()
