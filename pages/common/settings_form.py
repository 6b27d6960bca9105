"""Settings widgets and the settings comparison, generated from ``flowlib.config``.

    from pages.common import settings_form as sf
    slots = sf.render_settings(FlowConfig, sf.form_fields(FlowConfig), "tr_", columns=4)
    values = sf.form_values(FlowConfig, "tr_")        # {field: widget value}
    table, differing = sf.settings_table(runs)        # the Runs page's side-by-side diff

Each widget's label, tooltip, choices (in words) and step come from the field's
:class:`flowlib.settings.Setting`, so a field declared there with ``form=True`` gets its
widget here without touching a page.
"""

from __future__ import annotations

from typing import Mapping

import pandas as pd
import streamlit as st

from flowlib.config import FlowConfig, TrainConfig, comparison_rows
from flowlib.settings import Setting, form_fields, settings_of

__all__ = ["render_settings", "form_values", "form_fields", "settings_table", "RUN_ROWS"]

# Comparison rows that are columns of the run itself rather than config fields.
RUN_ROWS = [("dataset", "run", "dataset"), ("preset", "run", "preset")]


def _widget(name: str, s: Setting, key: str, extra_help: str = "") -> None:
    text = s.tooltip() + (f" {extra_help}" if extra_help else "")
    if s.kind == "bool":
        st.checkbox(s.label, key=key, help=text)
    elif s.choices is not None and s.kind != "device":
        st.selectbox(s.label, list(s.choices), key=key, help=text, format_func=s.words)
    elif s.kind in ("int", "float"):
        step = s.form_step if s.form_step is not None else (1 if s.kind == "int" else None)
        if s.kind == "int" and step is not None:
            step = int(step)
        st.number_input(s.label, step=step, format=s.form_format, key=key, help=text)
    else:
        st.text_input(s.label, key=key, help=text)


def _cell_weight(s: Setting) -> float:
    """A widget's relative width in its row: its longest choice's words, within [16, 34]
    characters (a select needs about 4 characters more than its text for the arrow)."""
    longest = len(s.label)
    if s.choices is not None and s.kind != "device":
        longest = max([longest] + [len(s.words(c)) + 4 for c in s.choices])
    return float(min(34, max(16, longest)))


def render_settings(cls, names, key_prefix: str, columns: int = 4,
                    extra_help: Mapping[str, str] | None = None) -> dict:
    """Widgets for the fields ``names`` of ``cls``, row by row in a grid; {field: error slot}.

    Values live in ``st.session_state[key_prefix + field]`` (set them before the call); the
    slot under each widget is where the page shows that field's error.
    """
    meta = dict(settings_of(cls))
    names = list(names)
    slots = {}
    for row_start in range(0, len(names), columns):
        row = names[row_start:row_start + columns]
        weights = [_cell_weight(meta[name]) for name in row]
        weights += [sum(weights) / len(weights)] * (columns - len(row))
        # A select whose choices are long ("learned 1×1 conv, LU-factored") gets a wider cell,
        # so its closed box shows the whole choice instead of cutting it off.
        cells = st.columns(weights, vertical_alignment="bottom")  # checkboxes line up with inputs
        for cell, name in zip(cells, row):
            with cell:
                _widget(name, meta[name], key_prefix + name, (extra_help or {}).get(name, ""))
                slots[name] = st.empty()
    return slots


def form_values(cls, key_prefix: str, names=None) -> dict:
    """{field: the widget's current value} for the form fields of ``cls``."""
    return {name: st.session_state[key_prefix + name] for name in (names or form_fields(cls))}


def _shown(run: dict, where: str, key: str, s: Setting | None, defaults: dict):
    if where == "run":
        value = run.get(key)
        return "–" if value is None else value
    section = run.get(where) or {}
    if key not in section:
        # A model saved before the field existed was built with its default; a training
        # setting that is missing is shown as unknown (its default may have changed since).
        return defaults.get(key, "–") if where == "config" else "–"
    value = section[key]
    if value is None:
        return s.none_words if s is not None and s.none_words else "–"
    return value


def settings_table(runs: list[dict], flow_cls=FlowConfig, train_cls=TrainConfig) -> tuple[pd.DataFrame, list[str]]:
    """One column per run, one row per compared setting; and the labels of rows that differ."""
    rows = RUN_ROWS + comparison_rows(flow_cls, train_cls)
    meta = {"config": dict(settings_of(flow_cls)), "train": dict(settings_of(train_cls))}
    defaults = flow_cls().to_dict()
    data = {f"{r['id']} · {r['name']}": [str(_shown(r, where, key, meta.get(where, {}).get(key), defaults))
                                          for _, where, key in rows] for r in runs}
    df = pd.DataFrame(data, index=[label for label, _, _ in rows])
    differing = [idx for idx, row in df.iterrows() if len(set(row)) > 1]
    return df, differing
