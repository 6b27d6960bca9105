"""Home: what a normalizing flow is, what each page shows, and the two quickest paths."""

import streamlit as st

from flowlib.env import REPO_ROOT
from pages.common import timeline_player, ui

ui.require_router()

def show_journey() -> None:
    from pages.common import explore as ec

    path = ec.DEMOS[ec.MNIST_DEMO]
    if not path.is_file():
        st.caption("(The picture of a flow at work needs the demo checkpoint "
                   "checkpoints/mnist-fast.pt.)")
        return
    picture, info = ec.journey_picture(str(path), ec.file_version(path), "mnist")
    if picture is None:
        st.caption(f"(The picture of a flow at work could not be drawn: {info})")
        return
    st.image(picture, output_format="PNG", width=500,
             caption="The shipped MNIST demo flow at work. Top: a test digit run forwards, level "
                     "by level, into noise. Bottom: fresh noise run backwards into a new digit. "
                     f"Backwards, the top row gives its digit back exactly (error {info:.0e}).")

TIMELINE = REPO_ROOT / "checkpoints" / "timeline-mnist"


@st.cache_resource(show_spinner=False)
def shipped_timeline(version: float):
    """The recorded lecture run shipped in checkpoints/timeline-mnist (None if it is missing)."""
    from flowlib.train.timeline import load_timeline
    try:
        return load_timeline(TIMELINE)
    except ValueError:
        return None


def timeline_version() -> float:
    try:
        return (TIMELINE / "timeline.json").stat().st_mtime
    except OSError:
        return 0.0


def promise_words() -> str:
    """What a run does in its first minutes, read from the recorded run (measured, not hoped)."""
    tl = shipped_timeline(timeline_version())
    if tl is None:
        return "Bits/dim falls from about 8 (noise) as the shapes of the digits are learnt."
    first = tl.value_at("first_point_s", 10**9)
    at_minute = tl.step_at_time(60.0)
    minute = tl.value_at("train_bpd", at_minute) if at_minute is not None else None
    full = tl.value_at("test_bpd_full", 10**9)
    minutes = tl.info.get("max_minutes")
    words = ["In the recorded run below:"]
    if first:
        start = tl.value_at("train_bpd", first[0])
        words.append(f" the first point {first[1]:.0f} s after Start"
                     + (f" (bits/dim {start[1]:.1f}; 8 is noise)" if start else ""))
    if minute:
        words.append(f", {minute[1]:.2f} after one minute")
    if full and minutes:
        words.append(f", {full[1]:.2f} on the whole test set after {minutes:g} minutes")
    machine = tl.info.get("machine")
    words.append(f" ({machine}, nothing else training)." if machine else ".")
    words.append(" Train estimates this machine's pace before you start.")
    return "".join(words)


st.title("Flow Lab")
st.markdown(
    "#### Train a normalizing flow on handwritten digits or faces, watch it learn live, "
    "and look inside it."
)

left, right = st.columns([3, 2], gap="large")
with left:
    st.markdown(
        """
A **normalizing flow** is a neural network that can be run **backwards exactly**. Forwards it
turns an image into a pile of Gaussian noise of the same size; backwards it turns fresh noise
into a new image. Every layer is invertible and we know how much it stretches space (its
*log-determinant*), so the model gives the **exact probability** of any image: that is the
number you will watch fall, measured in **bits per dimension** (8 = random noise, lower is
better). Glow and RealNVP build such networks from simple *coupling* layers: half of the
pixels decide how to shift and scale the other half.
"""
    )
    show_journey()
with right:
    st.markdown("##### Quickest paths")
    if st.button("Train MNIST now", icon=":material/play_circle:", type="primary",
                 width="stretch", key="home_train"):
        st.switch_page("pages/train.py", query_params={"dataset": "mnist", "preset": "mnist-fast"})
    st.caption("Opens **Train** with the MNIST digits and the small Glow preset picked; press "
               "**Start**. " + promise_words())
    if st.button("Explore a trained model", icon=":material/auto_awesome:", width="stretch",
                 key="home_explore"):
        st.switch_page("pages/sampling.py")
    st.caption("Sample new digits at several temperatures and see what each scale of the "
               "latent holds.")
    st.markdown(f"**Training on:** {ui.device_line()}")

st.divider()
st.markdown("##### A recorded run, to replay when there is no time to train",
            help="The curves and sample grids of a real training run of the MNIST preset, kept by the "
                 "trainer as it went (a grid every ~10 s of training). Drag the slider or press Play.")
recorded = shipped_timeline(timeline_version())
if recorded is None:
    st.caption("(The recorded run needs checkpoints/timeline-mnist.)")
else:
    st.caption(recorded.info.get("note", ""))
    timeline_player.render(recorded, key="home")

st.divider()
st.markdown("##### What each page shows")
PAGES = [  # (file, icon, name, what it shows): every page of app.py's navigation, in its order
    ("pages/train.py", ":material/model_training:", "Train",
     "Pick a dataset and a preset, change any knob, press Start. Loss, bits/dim, its split "
     "into each level's prior and the log-determinant, and a grid of samples update live."),
    ("pages/runs.py", ":material/stacked_line_chart:", "Runs",
     "Every run in one table. Tick several to lay their curves over each other and see which "
     "settings differ; one click starts the Glow paper's permutation study."),
    ("pages/flows2d.py", ":material/scatter_plot:", "Flows in 2-D",
     "Every idea on points you can see: train a flow on a 2-D target, follow a grid through "
     "each layer, probe one point through the formula."),
    ("pages/masks.py", ":material/grid_on:", "Masks & squeeze",
     "How a flow splits an image: squeeze, checkerboard and channel masks, permutations."),
    ("pages/latents.py", ":material/layers:", "Latents",
     "One image's latent at each scale, the learned prior's μ and σ, and where its bits go."),
    ("pages/sampling.py", ":material/auto_awesome:", "Sampling",
     "The same samples at temperatures 0 … 1, per-level temperatures, interpolations."),
    ("pages/step_by_step.py", ":material/timeline:", "One image, step by step",
     "One image through every operation and back, with each operation's log-determinant."),
    ("pages/likelihood.py", ":material/query_stats:", "What the likelihood knows",
     "Whole data sets scored by one model: why high likelihood is not 'looks like my data', "
     "and what dequantisation adds."),
]
PER_ROW = 4   # two rows of four: every card's words fit at 1280×720
for start in range(0, len(PAGES), PER_ROW):
    cols = st.columns(PER_ROW)
    for col, (file, icon, name, text) in zip(cols, PAGES[start:start + PER_ROW]):
        with col:
            with st.container(border=True, height="stretch"):
                st.page_link(file, label=f"**{name}**", icon=icon)
                st.markdown(text)
