"""Flow Lab: router only. Every page lives in pages/; the library in flowlib/.

Run with `python app.py` (what `make run` does): it serves the app like `streamlit run app.py`
(which also works, and takes the same flags) after starting to import torch and load the
demo models in the background, so the first visit does not wait for them
(pages/common/serve.py). The page list is explicit so the sidebar order is the teaching
order: start, train and compare, then look inside a trained flow.
"""

import sys

import streamlit as st
from streamlit import runtime

if __name__ == "__main__" and not runtime.exists():   # `python app.py`, not a page run
    from pages.common.serve import serve
    sys.exit(serve(__file__, sys.argv[1:]))

from pages.common import links, style, ui

st.set_page_config(page_title="Flow Lab", page_icon="🌊", layout="wide")

PAGES = {
    "Flow Lab": [
        st.Page("pages/home.py", title="Home", icon=":material/home:", default=True),
    ],
    "Train": [
        st.Page("pages/train.py", title="Train", icon=":material/model_training:"),
        st.Page("pages/runs.py", title="Runs", icon=":material/stacked_line_chart:"),
    ],
    "Look inside": [
        st.Page("pages/flows2d.py", title="Flows in 2-D", icon=":material/scatter_plot:"),
        st.Page("pages/masks.py", title="Masks & squeeze", icon=":material/grid_on:"),
        st.Page("pages/latents.py", title="Latents", icon=":material/layers:"),
        st.Page("pages/sampling.py", title="Sampling", icon=":material/auto_awesome:"),
        st.Page("pages/step_by_step.py", title="One image, step by step", icon=":material/timeline:"),
        st.Page("pages/likelihood.py", title="What the likelihood knows", icon=":material/query_stats:"),
    ],
}

navigation = st.navigation(PAGES)
ui.keep_media_files_a_while()  # a picture asked for by a rerun that was cut short still loads (no 404)
links.begin_run()
links.bind([style.PROJECTOR])  # ?projector=1 in a link
ui.page_style()
style.page_style()
ui.remember_visitor()   # who this browser is: a cookie, never the URL
with st.sidebar:
    style.projector_switch()
ui.render_sidebar_status(steps=navigation.url_path != "train")   # the Train page shows them fresher
try:
    ui.run_page(navigation)
finally:  # also after st.stop(): the URL holds the page's state, ?hide= hides its controls
    links.publish()
    style.hide_style()
