"""A page's state in its URL, so a link reproduces the screen; and ``hide=`` for controls.

    from pages.common import links
    links.bind([links.number("T", "sampling_temp", 0.7, 0.0, 1.2, step=0.05),
                links.integer("seed", "sampling_seed", 0, 0, 10_000)])
    ... the widgets, keyed "sampling_temp" ...

``bind`` runs before the widgets. For each parameter it copies the URL's value (``?T=0.5``)
into the widget's session key when the URL holds something this tab did not write itself:
a link opened in a new tab, or a link from another page (``st.page_link(...,
query_params=...)``). A value that cannot be read (``T=hot``, ``T=9``) is left out and named in
one line on the page. After the page has run, app.py calls :func:`publish`, which writes
every bound value that differs from its default back into the URL (defaults are left out,
so links stay short). The URL is then always the screen's recipe: copy it, open it anywhere.

Each page's last URL is also remembered in the tab's session, so coming back to a page
through the sidebar finds it as it was left (Streamlit forgets a widget's value once a page
without it has run).

``hide=`` lists controls to leave off the screen, by their URL names (``hide=model,seed``),
plus ``sidebar`` and ``explain`` (the "What am I looking at?" boxes), or ``controls`` for
every bound control. A hidden control keeps its value from the URL: a teacher can hand out a
link that shows a figure and one slider, as TensorFlow Playground does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import streamlit as st

__all__ = ["Param", "number", "integer", "choice", "flag", "text", "bind", "publish",
           "begin_run", "hidden", "hide_css", "HIDE_PARAM", "link_to"]

HIDE_PARAM = "hide"
_RUN = "_links_run"            # the parameters bound in this run: {session key: Param}
_WRITTEN = "_links_written"    # {session key: the URL text this tab last wrote for it (None = left out)}
_MEMORY = "_links_memory"      # {page: {url name: text}}: each page's URL as it was left
_BAD = "_links_bad"            # URL names whose value could not be read in this run
_NAMES: set[str] = set()       # every URL name any page binds (the server's lifetime)


@dataclass(frozen=True)
class Param:
    """One piece of a page's state: its name in the URL, its session key, its default, and
    how it is read from and written to text. ``read`` raises ValueError on a bad value."""

    name: str
    key: str
    default: Any
    read: Callable[[str], Any]
    write: Callable[[Any], str] = str
    extra_keys: tuple[str, ...] = field(default=())   # more widget keys that ``hide`` hides

    def url_text(self, value) -> str | None:
        """The URL text of ``value``; None for the default (left out of the URL)."""
        if value is None or value == self.default:
            return None
        try:
            return self.write(value)
        except (TypeError, ValueError):
            return None


def _fmt_number(v: float) -> str:
    return f"{float(v):g}"


def number(name: str, key: str, default: float, lo: float, hi: float, step: float | None = None) -> Param:
    """A float in [lo, hi] (on the step grid from lo, when ``step`` is given)."""
    def read(text: str) -> float:
        v = float(text)
        if not math.isfinite(v) or not lo - 1e-9 <= v <= hi + 1e-9:
            raise ValueError(f"{v} is outside {lo:g}…{hi:g}")
        if step:
            v = lo + round((v - lo) / step) * step
        return round(min(max(v, lo), hi), 6)
    return Param(name, key, default, read, _fmt_number)


def integer(name: str, key: str, default: int, lo: int, hi: int) -> Param:
    def read(text: str) -> int:
        v = int(text)
        if not lo <= v <= hi:
            raise ValueError(f"{v} is outside {lo}…{hi}")
        return v
    return Param(name, key, default, read, lambda v: str(int(v)))


def choice(name: str, key: str, default, options: Sequence | dict) -> Param:
    """One of ``options``; a dict maps URL words to the widget's values (``{"test": "Test image"}``)."""
    words = dict(options) if isinstance(options, dict) else {str(o): o for o in options}
    back = {repr(v): w for w, v in words.items()}

    def read(text: str):
        if text not in words:
            raise ValueError(f"{text!r} is not one of {', '.join(words)}")
        return words[text]

    def write(value) -> str:
        return back[repr(value)]
    return Param(name, key, default, read, write)


def flag(name: str, key: str, default: bool) -> Param:
    def read(text: str) -> bool:
        low = text.strip().lower()
        if low in ("1", "true", "on", "yes"):
            return True
        if low in ("0", "false", "off", "no"):
            return False
        raise ValueError(f"{text!r} is not 1 or 0")
    return Param(name, key, default, read, lambda v: "1" if v else "0")


def text(name: str, key: str, default: str | None, read: Callable[[str], Any],
         write: Callable[[Any], str] = str) -> Param:
    """Any other value, with its own reader (e.g. a probe point "0.8,0.4")."""
    return Param(name, key, default, read, write)


# -- the run ---------------------------------------------------------------------------------
def _page() -> str:
    """The page this run shows (its script hash), so each page's URL is remembered apart."""
    try:
        from streamlit.runtime.scriptrunner import get_script_run_ctx
        ctx = get_script_run_ctx()
        return str(getattr(ctx, "page_script_hash", "") or "")
    except Exception:  # noqa: BLE001 - bare mode
        return ""


def begin_run() -> None:
    """Forget the previous run's parameters (app.py, before the page runs)."""
    st.session_state[_RUN] = {}
    st.session_state[_BAD] = []


def bind(params: Sequence[Param]) -> None:
    """Put the URL's values (or, for a page visited again, its remembered ones) into the
    session keys of ``params``, before their widgets are drawn. Call once per group of
    controls; a page may call it several times (e.g. once its model is known)."""
    written = st.session_state.setdefault(_WRITTEN, {})
    memory = st.session_state.setdefault(_MEMORY, {}).get(_page(), {})
    run = st.session_state.setdefault(_RUN, {})
    bad = st.session_state.setdefault(_BAD, [])
    url = st.query_params
    for p in params:
        _NAMES.add(p.name)
        run[p.key] = p
        raw = url.get(p.name)
        if raw is None:
            if p.key in st.session_state:
                continue                  # on the page already, at its default
            raw = memory.get(p.name)      # back on a page: as it was left
            if raw is None:
                continue
        elif written.get(p.key) == raw and p.key in st.session_state:
            continue                      # this tab wrote it: the widget's own value wins
        try:
            st.session_state[p.key] = p.read(raw)
        except (TypeError, ValueError):
            bad.append(p.name)
        written[p.key] = raw


def bad_names() -> list[str]:
    return list(st.session_state.get(_BAD, []))


def publish() -> None:
    """Write this run's bound values into the URL (defaults left out) and remember them as
    this page's URL; names that belong to other pages' parameters are removed."""
    params = list((st.session_state.get(_RUN) or {}).values())
    if not params:
        return
    written = st.session_state.setdefault(_WRITTEN, {})
    mine = {p.name for p in params}
    wanted: dict[str, str | None] = {}
    for p in params:
        if p.key not in st.session_state:
            continue
        wanted[p.name] = p.url_text(st.session_state[p.key])
        written[p.key] = wanted[p.name]
    url = st.query_params
    for name in _NAMES - mine:
        if name in url:
            del url[name]
    for name, value in wanted.items():
        if value is None:
            if name in url:
                del url[name]
        elif url.get(name) != value:
            url[name] = value
    st.session_state.setdefault(_MEMORY, {})[_page()] = {n: v for n, v in wanted.items() if v is not None}


def link_to(params: dict[str, Any], defaults: Sequence[Param]) -> dict[str, str]:
    """Query parameters for ``st.page_link`` that open another page with these values."""
    by_name = {p.name: p for p in defaults}
    out = {}
    for name, value in params.items():
        text_ = by_name[name].url_text(value) if name in by_name else str(value)
        if text_ is not None:
            out[name] = text_
    return out


# -- hide= -----------------------------------------------------------------------------------
def hidden() -> set[str]:
    """The names listed in ``?hide=`` (comma-separated, any case)."""
    raw = st.query_params.get(HIDE_PARAM) or ""
    return {w.strip().lower() for w in raw.split(",") if w.strip()}


def hide_css() -> str:
    """CSS rules that hide what ``?hide=`` names among this run's bound controls."""
    names = hidden()
    if not names:
        return ""
    rules = []
    for p in (st.session_state.get(_RUN) or {}).values():
        if p.name.lower() in names or "controls" in names:
            rules += [f".st-key-{k}" for k in (p.key, *p.extra_keys)]
    if "sidebar" in names:
        rules += ['[data-testid="stSidebar"]', '[data-testid="stSidebarCollapsedControl"]',
                  '[data-testid="stExpandSidebarButton"]']
    if "explain" in names:
        rules += ['[class*="st-key-explain"]']
    return (", ".join(rules) + " { display: none !important; }") if rules else ""
