"""Home: what a normalizing flow is, what each page shows, and the two quickest paths."""

import streamlit as st

from pages.common import ui

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
    st.caption("Opens **Train** with the MNIST digits and the small Glow preset picked. Press "
               "**Start**: by the first logged step bits/dim is already about 3 (8 would be "
               "random noise; the easy part, that most pixels are black, is learnt at once), "
               "then it keeps falling as the shapes of the digits are learnt: this preset "
               "reaches about 1.13 in 10 minutes on 2 CPU cores, and the shipped demo, twice as "
               "wide and deep, 1.07 in 54 minutes.")
    if st.button("Explore a trained model", icon=":material/auto_awesome:", width="stretch",
                 key="home_explore"):
        st.switch_page("pages/sampling.py")
    st.caption("Sample new digits at several temperatures and see what each scale of the "
               "latent holds.")
    st.markdown(f"**Training on:** {ui.device_line()}")

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
