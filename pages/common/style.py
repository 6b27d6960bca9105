"""How every page looks: legible charts and pictures with a PNG download, and projector mode.

    from pages.common import style
    style.chart(fig, key="walk_logdet", filename="logdet-per-operation")   # st.plotly_chart
    style.picture(img, caption="…", filename="forward-walk", key="walk_strip")  # st.image + PNG

Projector mode (the sidebar's switch, or ``?projector=1`` in a link) is for a teacher at a
projector: large type (no text under 16 px, chart ticks included), pictures and charts that
fit one screen, and the keyboard moves from one figure to the next (→ / PageDown / J next,
← / PageUp / K back; a clicker sends PageDown and PageUp).

Outside projector mode the pages keep Streamlit's sizes, with charts at 16 px and up, dark
tick labels, metrics and labels that wrap rather than end in "…", and a busy line at the top
of the screen for any rerun that takes more than a second.
"""

from __future__ import annotations

import streamlit as st

from flowlib.viz.chart_style import TOOL_STRIP_PX, legible, png_config, tool_strip
from flowlib.viz.images import png_bytes
from pages.common import links

PROJECTOR_KEY = "projector"
PROJECTOR = links.flag("projector", PROJECTOR_KEY, False)
CHART_MIN_PX = 16            # the smallest chart text outside projector mode
PROJECTOR_CHART_MIN_PX = 18  # and in it
PROJECTOR_ROOT_PX = 21       # projector mode's root font size: Streamlit's smallest text (0.75rem) ≈ 16 px
PROJECTOR_CHART_HEIGHT = 470  # the tallest chart in projector mode: one fits under a header at 1280×720


def projector() -> bool:
    return bool(st.session_state.get(PROJECTOR_KEY, False))


def projector_switch() -> None:
    """The sidebar's switch (app.py draws it on every page, so it holds across pages)."""
    st.toggle("Projector mode", key=PROJECTOR_KEY,
              help="Large type for a projector, one figure per screen; → / ← (or PageDown / "
                   "PageUp) step from figure to figure. Links keep it: ?projector=1.")
    if projector():
        st.caption("→ / PageDown: next figure · ← / PageUp: back")


# -- charts and pictures -------------------------------------------------------------------------
def chart_min_px() -> int:
    return PROJECTOR_CHART_MIN_PX if projector() else CHART_MIN_PX


def chart(fig, *, key: str, filename: str, tools: tuple[str, ...] = ("resetScale2d",), **kwargs):
    """``st.plotly_chart`` of a legible ``fig`` whose tool bar offers a PNG download
    (``filename``.png, twice the screen's resolution). ``kwargs`` go to st.plotly_chart."""
    legible(fig, chart_min_px())
    if projector() and (fig.layout.height or 0) > PROJECTOR_CHART_HEIGHT - TOOL_STRIP_PX:
        fig.update_layout(height=PROJECTOR_CHART_HEIGHT - TOOL_STRIP_PX)
    tool_strip(fig)  # the tool bar's own room at the top, never over the title
    kwargs.setdefault("width", "stretch")
    return st.plotly_chart(fig, key=key, config=png_config(filename, tools=tools), **kwargs)


def picture(img, *, filename: str, key: str, caption: str | None = None, width=None,
            container=None, download: bool = True) -> None:
    """``st.image`` (PNG) with a small "PNG" download button under it; the file is encoded
    only when the button is pressed. ``container``: where to draw (a column), default here."""
    where = container if container is not None else st
    kwargs = {} if width is None else {"width": width}
    where.image(img, caption=caption, output_format="PNG", **kwargs)
    if download:
        where.download_button("PNG", data=lambda: png_bytes(img), file_name=f"{filename}.png",
                              mime="image/png", key=f"dl_{key}", on_click="ignore", type="tertiary",
                              icon=":material/download:",
                              help="Download this picture as a PNG file (for a slide).")


# -- the page's style -----------------------------------------------------------------------------
BASE_CSS = """
/* Metrics and widget labels wrap instead of ending in "…" when a column is narrow (1280×720). */
[data-testid="stMetricValue"] > div, [data-testid="stMetricLabel"] p,
[data-testid="stMetricLabel"] > div, [data-testid="stWidgetLabel"] p,
.stCheckbox label p, [data-testid="stCheckbox"] label p,
[data-testid="stMain"] [data-testid="stPageLink-NavLink"] > span:last-child,
[data-testid="stMain"] [data-testid="stPageLink-NavLink"] p {
    white-space: normal !important; overflow: visible !important; text-overflow: clip !important;
    overflow-wrap: anywhere;
}
[data-testid="stMetricValue"] { font-size: 1.9rem; }
/* Plotly's tool bar sits in a strip at the top of the chart (chart_style.tool_strip), never over
   its title. */
[data-testid="stPlotlyChart"] .modebar { background: transparent !important; }
[data-testid="stPlotlyChart"] .modebar-btn path { fill: #495057 !important; }
/* A rerun that takes more than a second says so at the top of the screen. Streamlit marks the
   app root with its script's state (data-test-script-state); its own "Running…" status widget
   never showed in Chromium with this app's config (toolbarMode = "minimal"). */
@keyframes flowlab-busy { from { opacity: 0; } to { opacity: 1; } }
[data-testid="stApp"][data-test-script-state="running"]::after {
    content: "Working… the page updates when this is done";
    position: fixed; top: 0; left: 50%; transform: translateX(-50%); z-index: 1000000;
    padding: 6px 18px; border-radius: 0 0 10px 10px; background: #3b5bdb; color: white;
    font-size: 18px; font-weight: 600; pointer-events: none;
    opacity: 0; animation: flowlab-busy 0.2s ease-out 1s forwards;
}
/* Download buttons under pictures: small, close to their picture. */
[class*="st-key-dl_"] { margin-top: -0.6rem; }
"""

PROJECTOR_CSS = f"""
html {{ font-size: {PROJECTOR_ROOT_PX}px !important; }}
[data-testid="stMainBlockContainer"] {{ max-width: 100% !important; padding-left: 2rem; padding-right: 2rem; }}
[data-testid="stMarkdownContainer"] p, [data-testid="stMarkdownContainer"] li {{ font-size: 1rem; }}
[data-testid="stMain"] h1, [data-testid="stMain"] h2, [data-testid="stMain"] h3 {{ scroll-margin-top: 3.6rem; }}
/* KaTeX: big enough that a sub-subscript (0.5 of the formula's size) is still 16 px. */
.katex-display > .katex {{ font-size: 1.55em !important; }}
.katex {{ font-size: 1.25em; }}
/* One figure per screen: no picture taller than the window under a header. */
[data-testid="stImage"] img {{ max-height: calc(100vh - 9rem); width: auto !important;
                               max-width: 100% !important; object-fit: contain; }}
[data-testid="stImageCaption"], [data-testid="stCaptionContainer"] p {{ font-size: 0.9rem !important; }}
[data-testid="stTooltipIcon"] {{ transform: scale(1.2); }}
"""

# Next / previous figure with the keyboard (projector mode only: the script looks for the
# marker element before acting). A stop is every h1/h2 header, and every picture or chart
# more than half a screen below the stop before it.
KEYS_JS = """
<script>
(function () {
  if (window.__flowlabKeys) return;
  window.__flowlabKeys = true;
  function stops() {
    const main = document.querySelector('[data-testid="stMain"]');
    if (!main) return [];
    const sel = 'h1, h2, [data-testid="stImage"], [data-testid="stPlotlyChart"]';
    const els = [...main.querySelectorAll(sel)].filter(e => e.offsetParent !== null);
    const top = e => e.getBoundingClientRect().top;
    els.sort((a, b) => top(a) - top(b));
    const kept = [];
    const gap = window.innerHeight * 0.5;
    for (const e of els) {
      const last = kept[kept.length - 1];
      if (!last || /^H[12]$/.test(e.tagName) || top(e) - top(last) > gap) kept.push(e);
    }
    return kept;
  }
  document.addEventListener('keydown', function (ev) {
    if (!document.getElementById('flowlab-projector')) return;
    if (ev.altKey || ev.ctrlKey || ev.metaKey) return;
    const t = ev.target;
    if (t && t.closest && t.closest('input, textarea, select, [contenteditable="true"], [role="slider"], [role="combobox"], [role="listbox"], [role="radiogroup"]')) return;
    const next = ['ArrowRight', 'PageDown', 'j', 'J'].includes(ev.key);
    const prev = ['ArrowLeft', 'PageUp', 'k', 'K'].includes(ev.key);
    if (!next && !prev) return;
    const header = document.querySelector('[data-testid="stHeader"]');
    const edge = (header ? header.getBoundingClientRect().bottom : 0) + 12;
    const all = stops();
    let target = null;
    if (next) target = all.find(e => e.getBoundingClientRect().top > edge + 4);
    else target = [...all].reverse().find(e => e.getBoundingClientRect().top < edge - 30);
    if (!target) return;
    ev.preventDefault();
    target.scrollIntoView({block: 'start'});
    const scroller = target.closest('[data-testid="stMain"]') || document.scrollingElement;
    const shift = target.getBoundingClientRect().top - edge;
    if (Math.abs(shift) > 2 && scroller) scroller.scrollBy(0, shift);
  }, true);
})();
</script>
"""


def page_style() -> None:
    """The CSS of every page (and projector mode's), before the page runs (app.py); in
    projector mode also the keyboard's script, in the sidebar, where it takes no room."""
    st.html(f"<style>{BASE_CSS}{PROJECTOR_CSS if projector() else ''}</style>")
    if projector():
        with st.sidebar:
            st.html('<div id="flowlab-projector" style="display:none"></div>' + KEYS_JS,
                    unsafe_allow_javascript=True)


def hide_style() -> None:
    """The CSS that hides what ``?hide=`` names, after the page has bound its controls (app.py)."""
    css = links.hide_css()
    if css:
        st.html(f"<style>{css}</style>")
