"""Flows in 2-D: every idea of an image flow on points you can see, one layer at a time.

The model here is tiny (about 27,000 parameters by default, under 50,000 at K = 10), so unlike the image
flows it trains inside the page, in short chunks from an ``st.fragment(run_every=...)``:
the rest of the page and other tabs stay responsive, and Stop takes effect within a chunk.
Its size is bounded by the widgets (K ≤ 10, hidden width fixed), so a visitor cannot make
the server build anything large.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace

import numpy as np
import streamlit as st
import torch

from flowlib.core import flows2d as f2d
from flowlib.core.layers import ActNorm
from flowlib.viz import flows2d as figs
from pages.common import links, style, ui

ui.require_router()  # a bookmarked /flows2d on a fresh server must still go through app.py

LO, HI = figs.VIEW
HEAT_N = 72          # heat-map resolution: 72² model evaluations, ~10 ms
N_DATA = 3000        # points drawn from the target for training
CHUNK_S = 0.6        # seconds of training per fragment run; Stop waits at most this long
TICK_S = 0.3         # shorter than a chunk plus drawing, so chunks follow back to back
FIRST_BATCH = 256    # ActNorm's data-dependent start uses this many points (the first batch)
USER_POINTS = "points"
# The first target: 8 tight clusters, where an additive flow (which cannot shrink areas
# locally) stays visibly behind an affine one. Measured, 600 steps of the default flow each
# (section 4's default): additive − affine = 0.155 nats per point here, 0.172 on the rings,
# 0.053 on the checkerboard, 0.044 on the spiral and 0.018 on the two moons.
DEFAULT_TARGET = "eight_gaussians"
PROBE = (0.8, 0.4)
DEFAULT_POINTS = ([[-1.0, 1.2], [1.0, 1.2]]
                  + [[round(2.0 * np.cos(a), 2), round(2.0 * np.sin(a) - 0.2, 2)]
                     for a in np.linspace(np.pi * 1.15, np.pi * 1.85, 9)])


def md(text: str) -> None:
    st.markdown(text)


def explain(text: str) -> None:
    with st.expander("What am I looking at?"):
        st.markdown(text)


# -- training jobs (one model + optimiser + loss history, per tab) -----------------------------
@dataclass
class Job:
    config: f2d.Flow2DConfig
    data_key: tuple
    data: torch.Tensor
    model: f2d.Flow2D
    opt: torch.optim.Optimizer
    max_steps: int
    losses: list = field(default_factory=list)
    running: bool = False
    train_s: float = 0.0
    generator: torch.Generator = field(default_factory=lambda: torch.Generator().manual_seed(0))

    def recent_loss(self) -> float | None:
        return float(np.mean(self.losses[-50:])) if self.losses else None


def make_job(config: f2d.Flow2DConfig, data: torch.Tensor, data_key: tuple, max_steps: int) -> Job:
    model = f2d.Flow2D(config)
    model.initialize(data[:FIRST_BATCH])  # ActNorm's start: the first batch's mean and spread
    return Job(config, data_key, data, model, f2d.make_optimizer(model), max_steps)


def job_for(key: str, config: f2d.Flow2DConfig, data: torch.Tensor, data_key: tuple, max_steps: int) -> Job:
    """This tab's job under ``key``; a new, untrained one when the settings or data changed."""
    job = st.session_state.get(key)
    if job is None or job.config != config or job.data_key != data_key:
        job = make_job(config, data, data_key, max_steps)
        st.session_state[key] = job
    return job


def live(job_keys: list[str], draw, stop_key: str) -> None:
    """Train the running jobs for one chunk, then draw them (the body of a fragment)."""
    with f2d.one_thread():
        jobs = [st.session_state[k] for k in job_keys]
        if any(j.running for j in jobs):
            if st.button("Stop", key=stop_key, icon=":material/stop_circle:", type="primary"):
                for j in jobs:
                    j.running = False
                st.rerun(scope="app")
            running = [j for j in jobs if j.running]
            for j in running:
                start = time.perf_counter()
                todo = j.max_steps - len(j.losses)
                j.losses += f2d.train_steps(j.model, j.opt, j.data, todo, generator=j.generator,
                                            start_step=len(j.losses),
                                            time_budget_s=CHUNK_S / len(running))
                j.train_s += time.perf_counter() - start
                j.running = len(j.losses) < j.max_steps
            if not any(j.running for j in jobs):
                st.rerun(scope="app")  # finished: redraw the whole page with the trained model
        draw(jobs)


def live_section(job_keys: list[str], draw, stop_key: str) -> None:
    busy = any(st.session_state[k].running for k in job_keys)
    st.fragment(live, run_every=TICK_S if busy else None)(job_keys, draw, stop_key)


# -- numbers the figures need ------------------------------------------------------------------
GRID = f2d.grid_points(LO, HI, HEAT_N)


def weights_key(model: f2d.Flow2D) -> tuple[float, float]:
    """A fingerprint of the model's weights and buffers (two sums: microseconds for a 2-D flow)."""
    with torch.no_grad():
        flat = torch.cat([t.detach().double().flatten() for t in list(model.parameters()) + list(model.buffers())])
        return float(flat.sum()), float((flat * torch.arange(len(flat), dtype=torch.float64)).sum())


def memo(model: f2d.Flow2D, name, make):
    """``make()`` once per state of ``model``'s weights (:func:`weights_key`): a rerun that
    did not train (a slider moved elsewhere on the page) reuses every grid the model drew."""
    version = weights_key(model)
    store = model.__dict__.setdefault("_page_memo", {})
    if store.get("_version") != version:
        store.clear()
        store["_version"] = version
    if name not in store:
        with torch.no_grad():
            store[name] = make()
    return store[name]


def model_density(model: f2d.Flow2D) -> np.ndarray:
    return memo(model, "density", lambda: model.log_prob(GRID).exp().reshape(HEAT_N, HEAT_N).numpy())


def grid_logdets(model: f2d.Flow2D) -> list[np.ndarray]:
    """Every layer's log|det J| at every grid point of data space."""
    return memo(model, "logdets", lambda: [ld.reshape(HEAT_N, HEAT_N).numpy() for ld in model.trace(GRID).logdets])


def step_logdets(model: f2d.Flow2D, only: str | None = None) -> list[np.ndarray]:
    """Per step, Σ of its layers' log|det J| (or only the layers whose name has ``only``),
    at every grid point of data space."""
    lds = grid_logdets(model)
    per = model.layers_per_step
    return [sum(lds[i] for i in range(k * per, (k + 1) * per) if only is None or only in model.names[i])
            for k in range(model.config.steps)]


@st.cache_data(show_spinner=False)
def target_points(name: str, n: int, seed: int) -> np.ndarray:
    return f2d.sample_target(name, n, seed).numpy()


@st.cache_data(show_spinner=False, max_entries=32)
def target_density(name: str) -> np.ndarray:
    """A built-in target's picture: a histogram of 20,000 of its points (the same for every visit)."""
    return figs.histogram_density(target_points(name, 20_000, 1), LO, HI, 48)


@st.cache_data(show_spinner=False, max_entries=32)
def untrained(config: f2d.Flow2DConfig, data: np.ndarray, cloud: np.ndarray, grid: np.ndarray):
    """An untrained flow of ``config`` started on ``data``'s first batch: where it puts the
    cloud and grid (the latent), how far its couplings move any point, and its loss on ``data``.
    Deterministic (the flow's weights come from its seed), so cached for every visit."""
    with torch.no_grad(), f2d.one_thread():
        model = f2d.Flow2D(config)
        data_t = torch.from_numpy(data)
        model.initialize(data_t[:FIRST_BATCH])
        walk0 = model.trace(torch.from_numpy(np.concatenate([cloud, grid])))
        moved = max(float((walk0.points[i + 1] - walk0.points[i]).abs().max())
                    for i, n in enumerate(model.names) if "coupling" in n)
        start_loss = float(-model.log_prob(data_t).mean())
    return walk0.points[-1].numpy(), moved, start_loss


def fmt(v: float) -> str:
    return f"{v:+.3f}".replace("+", "") if v >= 0 else f"{v:.3f}"


def clamp_probe(v: float) -> float:
    return round(float(min(max(v, LO), HI)), 2)


def url_params() -> list:
    """The page's controls in its URL (?target=rings&K=4&px=0.8&py=0.4 …)."""
    targets = list(f2d.TARGETS) + [USER_POINTS]
    return [
        links.choice("target", "f2d_target", DEFAULT_TARGET, targets),
        links.integer("K", "f2d_steps", 6, 1, 10),
        links.choice("coupling", "f2d_coupling", "affine", list(f2d.COUPLINGS)),
        links.choice("mixing", "f2d_mixing", "lu", list(f2d.MIXINGS)),
        links.flag("actnorm", "f2d_actnorm", True),
        links.choice("init", "f2d_zero_init", True, {"zero": True, "random": False}),
        links.integer("train", "f2d_max_steps", 400, 20, 10_000),
        links.choice("dir", "f2d_direction", "data → latent",
                     {"forward": "data → latent", "sampling": "latent → data (sampling)"}),
        links.number("px", "f2d_probe_x", PROBE[0], LO, HI),
        links.number("py", "f2d_probe_y", PROBE[1], LO, HI),
        links.integer("pair", "f2d_pair_steps", 600, 20, 5000),
        links.flag("animate", "f2d_animate", False),
    ]


# ==============================================================================================
# The page runs torch on one thread: see f2d.one_thread for the measurement.
with f2d.one_thread():
    st.title("Flows in 2-D")
    md("A flow is an invertible map *f* from data *x* to a latent *z* that should look like plain "
       "Gaussian noise. Because *f* can be undone exactly and we know how much it stretches space "
       "at every point, the density of the data follows from the density of the noise. In 2-D you "
       "can watch all of it: every layer, every stretch, every number.")
    st.latex(r"\log p(x) \;=\; \log \mathcal{N}\big(f(x);\,0,\,I\big) \;+\; \sum_{k} \log\big|\det J_k(x)\big|")

    # -- 1 · build and train -----------------------------------------------------------------------
    links.bind(url_params())
    st.header("1 · Pick a target, build a flow, train it")
    # Two rows of three: six controls in one row cut their labels short at 1280×720 ("Ac…").
    row = st.columns([1.3, 1.2, 1.2])
    target = row[0].selectbox("Target", list(f2d.TARGETS) + [USER_POINTS], key="f2d_target",
                              index=list(f2d.TARGETS).index(DEFAULT_TARGET),
                              format_func=lambda t: f2d.TARGETS.get(t, "Your points"))
    steps = row[1].slider("Steps K", 1, 10, 6, key="f2d_steps",
                          help="How many [ActNorm] → mixing → coupling steps the flow has.")
    coupling = row[2].radio("Coupling", list(f2d.COUPLINGS), key="f2d_coupling", horizontal=True,
                            help="Affine scales and shifts; additive only shifts, so it cannot change area.")
    row = st.columns([1.3, 1.2, 1.2])
    mixing = row[0].radio("Between couplings", list(f2d.MIXINGS), index=2, key="f2d_mixing",
                          format_func=f2d.MIXINGS.get)
    actnorm = row[1].toggle("ActNorm", value=True, key="f2d_actnorm",
                            help="Start each step with a per-coordinate scale and shift, set from the first batch.")
    zero_init = row[2].radio("Couplings start", [True, False], key="f2d_zero_init",
                             format_func={True: "as the identity (zero init)", False: "from random weights"}.get)
    config = f2d.Flow2DConfig(steps=steps, coupling=coupling, mixing=mixing, actnorm=actnorm, zero_init=zero_init)

    if target == USER_POINTS:
        left, right = st.columns([1.3, 1])
        points = st.session_state.setdefault("f2d_points", [list(p) for p in DEFAULT_POINTS])
        canvas_state = st.session_state.get("f2d_canvas")
        picked = []
        if canvas_state is not None:
            picked = [[round(p["x"], 2), round(p["y"], 2)] for p in canvas_state["selection"]["points"]
                      if p.get("curve_number", 0) == 0]
        if picked and picked != st.session_state.get("f2d_last_pick"):  # each selection adds once
            points.extend(picked)
            st.session_state["f2d_last_pick"] = picked
        with left:
            style.chart(figs.point_canvas(points, -3.0, 3.0), key="f2d_canvas", on_select="rerun",
                        selection_mode=("points", "box", "lasso"), filename="your-points",
                        tools=("lasso2d", "select2d", "resetScale2d"))
        with right:
            md("**Place points**: click a grey dot to add it. To add many at once, pick the box or "
               "lasso tool at the chart's top right and drag around the dots: the lasso draws a "
               "shape. The flow learns each point blurred into a small Gaussian.")
            spread = st.slider("Blur around each point", 0.05, 0.6, 0.2, 0.05, key="f2d_spread")
            b1, b2 = st.columns(2)
            if b1.button("Remove the last point", key="f2d_undo", disabled=len(points) == 0):
                points.pop()
                st.rerun()
            if b2.button("Clear", key="f2d_clear"):
                points.clear()
                st.rerun()
            md(f"{len(points)} points placed.")
        if not points:
            st.warning("Place at least one point to train on.")
            st.stop()
        data = f2d.points_dataset(points, N_DATA, spread=spread, seed=0)
        data_key = (USER_POINTS, tuple(map(tuple, points)), spread)
    else:
        data = torch.from_numpy(target_points(target, N_DATA, 0))
        data_key = (target,)
    # The target's picture is a histogram: it needs more points than training does.
    target_picture = (figs.histogram_density(f2d.points_dataset(points, 20_000, spread=spread, seed=1), LO, HI, 48)
                      if target == USER_POINTS else target_density(target))

    c1, c2, c3, c4 = st.columns([1.2, 1, 1, 3])
    max_steps = c1.number_input("Training steps", 20, 10_000, 400, 100, key="f2d_max_steps",
                                help="How many steps one press of Train runs (Adam, batch 512, "
                                     "learning rate 0.005). Press again to train further.")
    job = job_for("f2d_job", config, data, data_key, int(max_steps))
    if c2.button("Train", key="f2d_train", type="primary", icon=":material/play_arrow:",
                 disabled=job.running):
        job.max_steps, job.running = len(job.losses) + int(max_steps), True
    if c3.button("Reset", key="f2d_reset", icon=":material/restart_alt:"):
        st.session_state["f2d_job"] = job = make_job(config, data, data_key, int(max_steps))
    c4.markdown("Training runs in short bursts, so you can keep using the page (and **Stop** at "
                "any time). Change any setting above and the flow starts again, untrained.")


    def draw_main(jobs: list[Job]) -> None:
        j = jobs[0]
        status = (f"**Step {len(j.losses):,}** of {j.max_steps:,} · loss **{j.recent_loss():.3f}** nats "
                  f"per point · {j.train_s:.1f} s of training") if j.losses else "**Not trained yet.**"
        md(status)
        a, c = st.columns([1.1, 1])
        with a:
            style.chart(figs.loss_curve({"loss": j.losses}, height=360), key="f2d_loss_chart", filename="loss")
        with c:
            style.chart(figs.heatmap(model_density(j.model), LO, HI, title="Model density p(x)",
                                         height=360), key="f2d_model_heat", filename="model-density")


    # The target does not change while training, so it stays outside the fragment that redraws.
    target_col, live_col = st.columns([1, 2.1])
    with target_col:
        md("&nbsp;")
        style.chart(figs.heatmap(target_picture, LO, HI,
                                     title="Target (histogram of its points)", height=360),
                        key="f2d_target_heat", filename="target-density")
    with live_col:
        live_section(["f2d_job"], draw_main, "f2d_stop")
    explain("Left: the target, as a histogram of its points. Middle: the loss, the average of −log p(x) "
            "over a batch, in nats; it falls as the model puts more density where the points are "
            "(an early spike is one batch holding a point that the young flow flings far out; the "
            "update from it is clipped). "
            "Right: the model's density, computed exactly with the change-of-variables formula "
            "at every pixel. A trained flow's picture should look like the target's. Everything below "
            "shows the model as it is now; it refreshes when training stops.")

    model = job.model
    n_layers = len(model.layers)

    # -- 2 · layer by layer ------------------------------------------------------------------------
    st.header("2 · The push-forward, layer by layer")
    md("Each layer moves every point. Follow the data cloud and a square grid through the flow: "
       "the couplings bend the grid, the mixing layers turn it, and at the end the cloud should be a "
       "round Gaussian blob. Run it backwards from Gaussian noise and you get new samples.")
    direction = st.radio("Direction", ["data → latent", "latent → data (sampling)"], horizontal=True,
                         key="f2d_direction")
    labels = ["data x"] + model.names
    links.bind([links.integer("layer", "f2d_layer", n_layers, 0, n_layers)])
    position = st.select_slider("After layer", options=list(range(n_layers + 1)), value=n_layers,
                                format_func=lambda i: f"{i}: {labels[i]}", key="f2d_layer")
    # The grid covers where the targets live: further out there is no data, and a trained flow
    # flings that empty space anywhere, which buries the picture under stray lines.
    grid_lines = figs.grid_line_points(-2.5, 2.5, lines=11, per_line=figs.PER_LINE)
    cloud = data[:600]
    if direction == "data → latent":
        walk = memo(model, ("walk", data_key), lambda: model.trace(torch.cat([cloud, grid_lines])).points)
    else:
        noise = torch.randn(600, 2, generator=torch.Generator().manual_seed(1))
        walk = memo(model, "walk back", lambda: model.trace_inverse(torch.cat([noise, grid_lines])))
    clouds = [w[:len(cloud)] for w in walk]
    grids = [w[len(cloud):] for w in walk]
    view = figs.view_of(clouds)
    left, right = st.columns([1.15, 1])
    with left:
        style.chart(figs.cloud_and_grid(clouds[position], grids[position], view=view,
                                            title=f"{labels[position]}"), key="f2d_push", filename="push-forward")
    with right:
        if position == 0:
            md("Position 0 is the data itself, before any layer: nothing has stretched it yet.")
            shown = np.zeros((HEAT_N, HEAT_N))
            title = "log|det J| of no layer"
        else:
            shown = grid_logdets(model)[position - 1]
            title = f"log|det J| of {model.names[position - 1]}"
        style.chart(figs.heatmap(shown, LO, HI, title=title, colorscale="RdBu_r", zmid=0,
                                     colorbar_title="log|det J|", height=440), key="f2d_layer_logdet", filename="layer-logdet")
        md("Where a layer **stretches** space (red, log|det J| > 0), a small patch of x becomes a big "
           "patch further on, so the patch must have held more probability: p(x) is *multiplied* by "
           "the stretch. Where it **squeezes** (blue), p(x) is divided. Drawn over data space x.")
    if st.toggle("Animate all layers", key="f2d_animate"):
        style.chart(figs.animated_cloud_and_grid(clouds, grids, labels), key="f2d_animation", filename="push-forward-animation")
    explain("Orange lines: a square grid drawn in the space where the flow starts (data space for "
            "data → latent, latent space for sampling), carried along by the layers. Blue dots: "
            "training points (or Gaussian noise when sampling). The slider picks how many layers have "
            "been applied. Straight grid lines mean that layer is linear there; bent ones show where "
            "the coupling networks act.")

    md("**Every step's log|det J|**, the sum over its layers, at every point of data space:")
    panels = step_logdets(model)
    style.chart(figs.logdet_panels(panels, [f"step {k + 1}" for k in range(len(panels))], LO, HI),
                    key="f2d_step_logdets", filename="step-logdets")
    st.latex(r"\log|\det J_{\text{step}}| = \underbrace{\textstyle\sum_i \log s_i}_{\text{ActNorm}} "
             r"+ \underbrace{\log|\det W|}_{\text{mixing}} + \underbrace{s(x_1)}_{\text{affine coupling}}")
    explain("One panel per step, all on one colour scale centred on 0. ActNorm and the mixing layer "
            "contribute the same amount everywhere (they are linear), so all the structure comes from "
            "the coupling's s(x₁): it varies along the coordinate the coupling conditions on.")

    # -- 3 · probe ---------------------------------------------------------------------------------
    st.header("3 · A probe: one point through the formula")
    md("Pick a point. It travels through every layer to its latent z; its log-density is the "
       "Gaussian's log-density at z plus one log|det J| per layer. Here is that sum with this "
       "point's own numbers.")
    # A click (or the end of a drag) on the chart below moves the probe: the chart's selection
    # from the last run is read here, before the two number boxes are drawn.
    picked = figs.point_from_selection(st.session_state.get("f2d_probe_path"))
    if picked is None:   # nothing picked (a second click on a dot unselects it): the next pick counts
        st.session_state.pop("f2d_probe_last_pick", None)
    elif picked != st.session_state.get("f2d_probe_last_pick"):   # new, not the one already applied
        st.session_state["f2d_probe_last_pick"] = picked
        st.session_state["f2d_probe_x"], st.session_state["f2d_probe_y"] = map(clamp_probe, picked)
    pc = st.columns([1, 1, 3])
    px = pc[0].number_input("Probe x₁", LO, HI, PROBE[0], 0.1, key="f2d_probe_x")
    py = pc[1].number_input("Probe x₂", LO, HI, PROBE[1], 0.1, key="f2d_probe_y")
    pc[2].markdown("**Click** anywhere on the chart to move the probe there. To **drag** it, pick "
                   "the lasso at the chart's top right: the probe lands where you let go. The boxes "
                   "take exact values.")
    exact = model.double_copy()
    with torch.no_grad():
        probe = exact.trace(torch.tensor([[px, py]], dtype=torch.float64))
    terms = [float(ld) for ld in probe.logdets]
    log_nz = float(f2d.standard_normal_log_prob(probe.z))
    total = log_nz + sum(terms)
    path = torch.cat(probe.points).numpy()
    left, right = st.columns([1, 1.15])
    with left:
        style.chart(figs.probe_path(path, model.names, model_density(model), LO, HI), key="f2d_probe_path",
                    filename="probe-path", on_select="rerun", selection_mode=("points", "lasso", "box"),
                    tools=("pan2d", "lasso2d", "resetScale2d"))
    with right:
        lines = [r"\log p(x) &= \log\mathcal{N}(z;0,I) + \textstyle\sum_k \log|\det J_k| \\",
                 rf"&= \underbrace{{{fmt(log_nz)}}}_{{\log\mathcal{{N}}(z;\,0,\,I)}} \\"]
        per = model.layers_per_step
        for k in range(model.config.steps):
            step_terms = " + ".join(f"({fmt(t)})" for t in terms[k * per:(k + 1) * per])
            lines.append(rf"&\quad + \underbrace{{{step_terms}}}_{{\text{{step {k + 1}}}}} \\")
        lines.append(rf"&= {fmt(total)} \text{{ nats}}")
        st.latex(r"\begin{aligned}" + "\n".join(lines) + r"\end{aligned}")
        z = probe.z[0].tolist()
        md(f"z = ({z[0]:.3f}, {z[1]:.3f}), so p(x) = e^({fmt(total)}) = **{figs.sci(np.exp(total))}**. "
           f"Each step's bracket holds {'ActNorm, ' if actnorm else ''}the mixing layer, then the "
           "coupling.")
    explain("The path joins the probe's position after every layer (hover for the layer). The first "
            "term is how likely its latent z is under the standard Gaussian; every other term is one "
            "layer's log|det J| at the place the point had reached. Their sum is exactly the model's "
            "log p(x), the number the heat map in section 1 shows at this point.")

    md("**One layer's Jacobian at the probe**: a coupling's is triangular, so its determinant is "
       "the product of its diagonal.")
    couplings = [i for i, n in enumerate(model.names) if "coupling" in n]
    links.bind([links.integer("jac", "f2d_jac_layer", couplings[0], 0, n_layers - 1)])
    which = st.selectbox("Layer", list(range(n_layers)), index=couplings[0], key="f2d_jac_layer",
                         format_func=lambda i: model.names[i])
    jac, at_u = exact.jacobian([px, py], which)
    a11, a12, a21, a22 = (float(v) for v in jac.flatten())


    def entry(v: float) -> str:
        return r"\color{#c92a2a}{0}" if v == 0.0 else f"{v:.3f}"


    left, right = st.columns([1, 1.4])
    with left:
        st.latex(r"J = \frac{\partial y}{\partial u} = \begin{bmatrix}" + f"{entry(a11)} & {entry(a12)} \\\\ "
                 f"{entry(a21)} & {entry(a22)}" + r"\end{bmatrix}")
        md(f"at u = ({float(at_u[0]):.3f}, {float(at_u[1]):.3f}), where the probe enters this layer.")
    with right:
        layer_ld = terms[which]
        if "coupling" in model.names[which]:
            st.latex(r"y_1 = x_1,\quad y_2 = " + (r"x_2 \cdot e^{s(x_1)} + t(x_1)" if coupling == "affine"
                                                   else r"x_2 + t(x_1)"))
            st.latex(r"\begin{aligned}\log|\det J| &= \log|J_{11}| + \log|J_{22}| = "
                     rf"\log {a11:.3f} + \log {a22:.3f} \\ &= {fmt(np.log(abs(a11)))} + "
                     rf"({fmt(np.log(abs(a22)))}) = {fmt(layer_ld)}\end{{aligned}}")
            md("The red **0**: y₁ = x₁ does not depend on x₂, so J is lower-triangular and its "
               "determinant is just the diagonal's product, no matter what the network computed.")
        else:
            st.latex(rf"\log|\det J| = \log|J_{{11}}J_{{22}} - J_{{12}}J_{{21}}| = {fmt(layer_ld)}")
            md("This layer is linear, so its Jacobian is the same 2×2 matrix at every point." +
               (" In LU form, W = P·L·U and log|det W| = Σ log|sᵢ|, the diagonal of U."
                if "LU" in model.names[which] else ""))
    check = float(torch.linalg.slogdet(jac)[1])
    md(f"Autograd's log|det J| of this layer: {check:.6f}; the layer's own log-det: {layer_ld:.6f}.")

    # -- 4 · additive vs affine --------------------------------------------------------------------
    st.header("4 · Additive vs affine coupling")
    md("An additive coupling only shifts, y₂ = x₂ + t(x₁): its Jacobian's diagonal is all ones, so "
       "log|det J| = 0 everywhere and it keeps every area. On its own it can move probability "
       "around but never pile it up in one place; the affine coupling can. Train both on the same target and compare.")
    steps_col, button_col, _ = st.columns([1.2, 1.8, 2.4])   # the button's words fit at 1280×720
    pair_steps = steps_col.number_input("Steps for each", 20, 5000, 600, 100, key="f2d_pair_steps")
    pair = {kind: f"f2d_cmp_{kind}" for kind in f2d.COUPLINGS}
    for kind, key in pair.items():
        job_for(key, replace(config, coupling=kind), data, data_key, int(pair_steps))
    button_col.markdown("&nbsp;")  # lines the button up with the number box
    if button_col.button("Train both side by side", key="f2d_cmp_train", icon=":material/play_arrow:",
                 disabled=any(st.session_state[k].running for k in pair.values())):
        for key in pair.values():
            st.session_state[key].max_steps = len(st.session_state[key].losses) + int(pair_steps)
            st.session_state[key].running = True


    def draw_pair(jobs: list[Job]) -> None:
        lds = {j.config.coupling: sum(step_logdets(j.model, only="coupling")) for j in jobs}
        bound = max(1e-3, max(float(np.abs(v).max()) for v in lds.values()))
        cols = st.columns(3)
        for col, j in zip(cols, jobs):
            with col:
                loss = j.recent_loss()
                md(f"**{j.config.coupling}** · step {len(j.losses):,} · loss "
                   f"{'–' if loss is None else f'{loss:.3f}'} nats")
                style.chart(figs.heatmap(model_density(j.model), LO, HI, title="density p(x)", height=300),
                                key=f"f2d_cmp_density_{j.config.coupling}", filename=f"density-{j.config.coupling}")
                style.chart(figs.heatmap(lds[j.config.coupling], LO, HI, title="Σ couplings' log|det J|",
                                             colorscale="RdBu_r", zmid=0, zmax=bound, height=300),
                                key=f"f2d_cmp_logdet_{j.config.coupling}", filename=f"coupling-logdet-{j.config.coupling}")
        with cols[2]:
            style.chart(figs.loss_curve({j.config.coupling: j.losses for j in jobs}, height=300),
                            key="f2d_cmp_loss", filename="additive-vs-affine-loss")
            losses = {j.config.coupling: j.recent_loss() for j in jobs}
            if None not in losses.values():
                md(f"Keeping volume costs **{losses['additive'] - losses['affine']:+.3f} nats per point** "
                   "here (additive minus affine loss).")


    live_section(list(pair.values()), draw_pair, "f2d_cmp_stop")
    explain("Two flows with the same settings except the coupling. The lower heat maps add up the "
            "couplings' log|det J|: flat white for additive (exactly 0 everywhere), coloured for affine. "
            "With ActNorm or the LU matrix the additive flow can still scale space, but only by the same "
            "factor everywhere; it must bend the data into a Gaussian by shearing alone.")

    # -- 5 · ActNorm -------------------------------------------------------------------------------
    st.header("5 · ActNorm's start: set from the first batch")
    md("ActNorm scales and shifts each coordinate: y = (x + b)·s, with the scale stored as log s so "
       "that s = exp(log s) stays positive. Its first batch decides where it starts: b = −mean and "
       "log s = −log std, so that batch comes out with zero mean and unit variance. After that, b "
       "and log s are ordinary parameters.")
    st.latex(r"y = (x + b)\odot e^{\log s},\qquad \log|\det J| = \log s_1 + \log s_2")
    first = data[:FIRST_BATCH]
    fresh = f2d.PointwiseLayer(ActNorm(2))
    with torch.no_grad():
        normalised, an_logdet = fresh(first)
    bias = fresh.image_layer.bias.flatten().tolist()
    log_s = fresh.image_layer.log_scale.flatten().tolist()
    left, right = st.columns([1.6, 1])
    with left:
        style.chart(figs.scatter_pair(first, normalised, ("first batch, before", "after ActNorm's start")),
                        key="f2d_actnorm_pair", filename="actnorm-start")
    with right:
        # Short lines, not one wide formula: the column is about 300 px wide at 1280×720.
        m0, s0 = first.mean(0).tolist(), first.std(0, unbiased=False).tolist()
        m1, s1 = normalised.mean(0).tolist(), normalised.std(0, unbiased=False).tolist()
        md(f"**b** = ({bias[0]:.3f}, {bias[1]:.3f})  \n**log s** = ({log_s[0]:.3f}, {log_s[1]:.3f})  \n"
           f"**log|det J|** = log s₁ + log s₂ = **{fmt(float(an_logdet[0]))}**")
        md(f"Before: mean ({m0[0]:.2f}, {m0[1]:.2f}), std ({s0[0]:.2f}, {s0[1]:.2f}).  \n"
           f"After: mean ({m1[0]:.2f}, {m1[1]:.2f}), std ({s1[0]:.2f}, {s1[1]:.2f}).")
        md("Each later step's ActNorm starts the same way, from what the steps before it make of the "
           "first batch." if actnorm else "ActNorm is switched off in the flow above; this is what it "
           "would do to the first batch.")
    explain("Left: the first 256 training points. Right: the same points after an ActNorm that has "
            "just initialised itself from them (the red × marks the mean). Without it, the first "
            "coupling would see data at whatever scale it came in; with it, every step starts from "
            "well-scaled inputs, and the flow's first log-dets are already counted.")

    # -- 6 · zero init -----------------------------------------------------------------------------
    st.header("6 · Zero init: every step starts as the identity")
    md("The last layer of each coupling network starts at exactly zero, so s = t = 0 and every "
       "coupling is the identity before training: the untrained flow is only the linear "
       "ActNorm and mixing layers, and the grid stays straight. Start from random weights instead, "
       "and the untrained flow already bends space in arbitrary ways.")
    inits = {True: "f2d_init_zero", False: "f2d_init_random"}
    for flag, key in inits.items():
        job_for(key, replace(config, zero_init=flag), data, data_key, int(pair_steps))
    cols = st.columns(2)
    for col, (flag, key) in zip(cols, inits.items()):
        j = st.session_state[key]
        latent0, moved, start_loss = untrained(j.config, data.numpy(), cloud.numpy(), grid_lines.numpy())
        with col:
            md(f"**{'zero init' if flag else 'random init'}** · before training: loss {start_loss:.3f} nats; "
               f"the couplings move points by at most {moved:.3g}")
            style.chart(figs.cloud_and_grid(latent0[:len(cloud)], latent0[len(cloud):],
                                                title="the untrained flow's latent z", height=400),
                            key=f"f2d_init_grid_{int(flag)}", filename="untrained-latent-" + ("zero-init" if flag else "random-init"))
    if st.button("Train both side by side", key="f2d_init_train", icon=":material/play_arrow:",
                 disabled=any(st.session_state[k].running for k in inits.values())):
        for key in inits.values():
            st.session_state[key].max_steps = len(st.session_state[key].losses) + int(pair_steps)
            st.session_state[key].running = True


    def draw_inits(jobs: list[Job]) -> None:
        names = {True: "zero init", False: "random init"}
        style.chart(figs.loss_curve({names[j.config.zero_init]: j.losses for j in jobs}, height=300),
                        key="f2d_init_loss", filename="zero-vs-random-init-loss")
        if all(j.losses for j in jobs):
            md(" · ".join(f"{names[j.config.zero_init]}: {j.recent_loss():.3f} nats after {len(j.losses):,} steps"
                          for j in jobs))


    live_section(list(inits.values()), draw_inits, "f2d_init_stop")
    explain("Both panels: the training points and a square grid pushed through an untrained flow of "
            "your settings. With zero init the grid lines stay straight (only ActNorm and the mixing "
            "layers act, and they are linear), so training starts from a known map and every change "
            "to it is learned. With random init each coupling already applies a bend no one chose; "
            "compare the two starting losses, and train both to see whether the bend helps or "
            "hurts. It matters more as K grows: random bends compound, step after step, while "
            "identity steps cost nothing.")
