"""Reference lines on the pages' bits/dim charts: the 'expected' curve and published numbers.

    from pages.common import reference
    reference.add_expected(fig, store, run, axis)        # the live Train dashboard
    reference.offer_published(fig, runs)                 # the Runs overlay: a checkbox, then the lines

The curves come from ``flowlib.analysis.reference`` (earlier finished runs of the same settings
on this machine, else the curves shipped in ``checkpoints/curves.json``); here they become faint
plotly traces. Streamlit is used only to cache the store reads for half a minute, so a
dashboard that polls every 2 s does not query every earlier run each time.
"""

from __future__ import annotations

import json

import plotly.graph_objects as go
import streamlit as st

from flowlib.analysis.reference import published_numbers, reference_curves

__all__ = ["add_expected", "add_published", "offer_published", "expected_curves"]

FAINT = "rgba(120, 120, 120, 0.45)"


@st.cache_data(ttl=30, show_spinner=False, max_entries=64)
def expected_curves(_store, store_key: str, run_id: int, run_config: str, run_train: str) -> list:
    """reference_curves of a run, cached for 30 s per (store, run, settings)."""
    run = {"id": run_id, **json.loads(run_config), "train": json.loads(run_train)}
    return reference_curves(_store, run)


def add_expected(fig: go.Figure, store, run: dict, axis: str) -> None:
    """Faint dashed 'expected' test curves behind a run's own (nothing when none is known)."""
    head = {"config": run.get("config"), "dataset": run.get("dataset"), "preset": run.get("preset")}
    try:
        curves = expected_curves(store, str(store.root), int(run["id"]), json.dumps(head, sort_keys=True),
                                 json.dumps(run.get("train") or {}, sort_keys=True))
    except Exception:  # noqa: BLE001 - a reference is a nicety: never break the dashboard for it
        return
    train = run.get("train") or {}
    for k, c in enumerate(curves):
        # only as far as this run's budget goes, so the run's own curve keeps the chart's width
        keep = [i for i in range(len(c.step))
                if (not train.get("max_steps") or c.step[i] <= train["max_steps"])
                and (not train.get("max_minutes") or c.elapsed_s[i] <= 60 * train["max_minutes"])]
        if not keep:
            continue
        fig.add_trace(go.Scatter(x=[c.x(axis)[i] for i in keep], y=[c.test_bpd[i] for i in keep],
                                 mode="lines", name=c.label,
                                 line=dict(color=FAINT, width=4 if k == 0 else 2, dash="dash"),
                                 hovertemplate="expected %{y:.3f} bits/dim<extra></extra>",
                                 legendrank=2000))


def add_published(fig: go.Figure, runs: list[dict]) -> bool:
    """Labelled horizontal lines at the published test bits/dim of the runs' dataset (when all
    the runs share one that has them); whether any were drawn."""
    datasets = {r.get("dataset") for r in runs}
    if len(datasets) != 1:
        return False
    numbers = published_numbers(datasets.pop())
    for k, (label, value) in enumerate(numbers):
        fig.add_hline(y=value, line=dict(color="#555555", width=2, dash="dot"),
                      annotation_text=f"{label}: {value:.2f}", annotation_font_size=16,
                      annotation_position="bottom right" if k % 2 == 0 else "top right")
    return bool(numbers)


def offer_published(fig: go.Figure, runs: list[dict], key: str = "overlay_published") -> None:
    """A 'published numbers' checkbox (on by default) when the runs' dataset has any, and
    their lines on ``fig`` while it is ticked."""
    datasets = {r.get("dataset") for r in runs}
    numbers = published_numbers(next(iter(datasets))) if len(datasets) == 1 else []
    if not numbers:
        return
    words = ", ".join(f"{label.split(' (')[0]} {value:.2f}" for label, value in numbers)
    if st.checkbox(f"Show the published numbers ({words})", value=True, key=key,
                   help="Test bits/dim reported for far larger models trained for days on GPUs "
                        "(Glow: Kingma & Dhariwal 2018; RealNVP: Dinh et al. 2017; as tabled by "
                        "FFJORD, Grathwohl et al. 2019)."):
        add_published(fig, runs)
