"""Shared pieces of the Streamlit pages: sidebar status, error guard, classroom mode, store.

Everything a page needs from the outside world goes through here, so the pages stay short:

    from pages.common import ui
    with ui.guard("loading the runs"):      # an error becomes a sentence, not a stack trace
        store = ui.get_store()
    ui.visitor_id()                         # who "owns" the runs this browser starts (a cookie)
    ui.may_control(run)                     # may this browser stop/rename/delete it (anyone may watch)
    ui.control_owner(run)                   # the owner= the store checks that against
    ui.classroom_mode()                     # FLOWLAB_CLASSROOM=1: caps, no paths

Pages never train in-process: they ask ``flowlib.jobs.worker`` to start a separate process and
then only read the store.
"""

from __future__ import annotations

import contextlib
import hmac
import logging
import os
import secrets
import traceback

import streamlit as st

from flowlib import env
from flowlib.config import TrainConfig
from flowlib.store.runs import ACTIVE_STATUSES, TERMINAL_OWNER, WAITING

log = logging.getLogger("flowlab.app")

# One line per number the app shows, reused in tooltips and captions.
BPD_HELP = (
    "bits per dimension: the average number of bits needed to encode one pixel value under "
    "the model. 8 = no better than uniform noise for 8-bit images; lower is better. "
    "Glow reaches 1.05 on MNIST."
)
LOSS_HELP = ("training loss: the negative log-likelihood of a batch, −log p(x), in nats per "
             "image; bits/dim is the same number divided by (pixels · ln 2), minus the "
             "quantisation offset")
IMAGES_PER_S_HELP = "images per second: training throughput on this device (higher is faster)"
LR_HELP = ("learning rate: the Adam step size at this step (it warms up linearly, then stays, "
           "or with the cosine schedule falls to 0 as the budget runs out)")


def sample_caption(temperatures=TrainConfig.sample_temperatures) -> str:
    """The sample grid's caption: its rows are the run's ``TrainConfig.sample_temperatures``."""
    rows = ", ".join(f"{float(t):g}" for t in temperatures)
    return (f"Rows: temperature {rows} (top to bottom); the same latent noise every time, so you "
            "watch the same samples sharpen as the model learns.")


STATUS_WORDS = {
    "created": "not started", "waiting": "waiting for a free training slot",
    "queued": "waiting to start", "running": "training", "stopping": "stopping after this step",
    "stopped": "stopped (can be resumed)", "finished": "finished", "failed": "failed",
    "lost": "lost (its process stopped answering)",
}

VISITOR_PARAM = "visitor"   # the URL parameter old links carried: dropped, never adopted
VISITOR_COOKIE = "flowlab_visitor"
# A checkpoint path that the Runs page and a run's dashboard put here before switching to the
# Latents page; the model picker of the pages that open a model (pages/common/explore.py)
# selects it once and removes it.
EXPLORE_KEY = "explore_checkpoint"


# -- the router ----------------------------------------------------------------------------
def require_router() -> None:
    """Make sure this page runs inside app.py's st.navigation, not as a legacy MPA page.

    Streamlit decides per server whether ``pages/`` is an old-style pages folder *before* the
    first script run, and only forgets it once ``st.navigation`` has been called. So on a fresh
    server, the first visitor who opens a bookmarked /train (e.g. after a restart) would get
    pages/*.py run on their own: no router, a wrong sidebar, no wide layout. Calling this at
    the top of a page turns that off and reruns through app.py, which then picks the same page.
    """
    try:
        from streamlit.runtime.pages_manager import PagesManager
    except ImportError:  # a future Streamlit without it: nothing to fix
        return
    if st.session_state.get("_router_checked"):
        return  # only a session's first run can be a fresh load (a rerun here would drop a click)
    st.session_state["_router_checked"] = True
    if getattr(PagesManager, "uses_pages_directory", False):
        PagesManager.uses_pages_directory = False
        st.rerun()


# -- media files -----------------------------------------------------------------------------
MEDIA_GRACE_S = 120.0


def keep_media_files_a_while(grace_s: float = MEDIA_GRACE_S) -> None:
    """Delete a picture's media file only ``grace_s`` seconds after Streamlit lets go of it.

    Why: without it the browser console fills with 404 "Image source error" for
    /media/<hash>.png after quick slider moves and page switches. Streamlit registers each
    st.image's PNG for the current run and, at the end of the *next* run, deletes every file
    that run did not show again. When a run is interrupted (a second slider step, a click on
    another page) the browser may still be loading — or still displaying, as stale elements —
    the pictures of the run before, and asks for files that are already gone (twelve quick
    arrow-key steps on a page's slider are enough). Keeping dropped files for a while avoids
    it. A file shown again in the meantime is simply live again (same content hash).
    The pictures are tens of kB, so two minutes of them cost little memory.
    """
    import threading
    import time

    try:
        from streamlit import runtime
        if not runtime.exists():
            return  # AppTest and bare mode: no server, no browser to race with
        manager = runtime.get_instance().media_file_mgr
        storage = manager._storage
    except Exception:  # noqa: BLE001 - an internal that moved: keep Streamlit's behaviour
        return
    if getattr(storage, "_flowlab_grace", None) is not None:
        return
    delete_now = storage.delete_file
    pending: dict[str, float] = {}
    lock = threading.Lock()

    def delete_file(file_id: str) -> None:
        now = time.monotonic()
        with lock:
            pending[file_id] = now + grace_s
            due = [f for f, t in pending.items() if t <= now]
            for f in due:
                del pending[f]
        for f in due:
            if f not in getattr(manager, "_file_metadata", {}):  # not registered again since
                delete_now(f)

    storage.delete_file = delete_file
    storage._flowlab_grace = grace_s


# -- errors --------------------------------------------------------------------------------
BUSY_MESSAGE = ("The run store is busy (another process holds its write lock: perhaps a training process "
                "that is paused or stuck), so this was not done; try again in a moment. Reading runs still "
                "works meanwhile.")


@contextlib.contextmanager
def guard(what: str):
    """Turn an unexpected error into one sentence on screen and a traceback in the server log.

    Streamlit's own control flow (st.rerun, st.switch_page, st.stop) derives from
    BaseException and passes through untouched.
    """
    from flowlib.store.rows import StoreBusyError
    try:
        yield
    except StoreBusyError:
        log.warning("Flow Lab: the run store was busy while %s\n%s", what, traceback.format_exc())
        st.warning(BUSY_MESSAGE, icon=":material/hourglass_top:")
    except Exception as exc:  # noqa: BLE001 - this is the last line of defence on screen
        log.error("Flow Lab: error while %s\n%s", what, traceback.format_exc())
        message = str(exc).strip() or type(exc).__name__
        st.error(f"Something went wrong while {what}: {message}\n\n"
                 "The details are in the server's log; the rest of the app still works.",
                 icon=":material/error:")


def run_page(navigation) -> None:
    """Run the selected page inside :func:`guard` (used by app.py)."""
    with guard(f"showing the {navigation.title} page"):
        navigation.run()


# -- classroom mode ------------------------------------------------------------------------
def classroom_mode() -> bool:
    """FLOWLAB_CLASSROOM=1: one GPU served to a class (caps, no server paths, and the runs started
    from the terminal are the teacher's to control)."""
    return env.flag("FLOWLAB_CLASSROOM")


def upload_cap_mb() -> int:
    """Largest upload accepted, in MB: FLOWLAB_MAX_UPLOAD_MB, by default 50 (20 in classroom mode)."""
    return env.read("FLOWLAB_MAX_UPLOAD_MB", classroom=classroom_mode())


def visitor_id() -> str:
    """This browser's identity: a random id kept in session state and in a first-party cookie.

    The cookie (:data:`VISITOR_COOKIE`, set by :func:`remember_visitor`) is read back when a
    tab opens (``st.context.cookies``), so a refresh or a new tab of the same browser is the
    same visitor and still owns the runs it started; a private window or another browser is
    another visitor. The id is never in the URL: a ``?visitor=`` of an old link is ignored and
    dropped, never adopted, so sharing a link does not hand over who you are. A convenience,
    not a password: whoever holds the browser's cookies is the same visitor.
    """
    vid = st.session_state.get("visitor_id")
    if not _valid_visitor(vid):
        from_cookie = _visitor_cookie()
        vid = from_cookie if _valid_visitor(from_cookie) else secrets.token_hex(8)
        st.session_state["visitor_id"] = vid
    if VISITOR_PARAM in st.query_params:
        del st.query_params[VISITOR_PARAM]
    return vid


def _visitor_cookie() -> str | None:
    """The visitor cookie this tab's connection arrived with (None in AppTest or without one)."""
    try:
        return st.context.cookies.get(VISITOR_COOKIE)
    except Exception:  # noqa: BLE001 - no server behind this script run (bare mode, AppTest)
        return None


def remember_visitor() -> None:
    """Keep :func:`visitor_id` in the browser's cookie, until the tab's own connection shows it.

    A one-line script put into the page itself (``st.html`` with JavaScript allowed; the
    ``components.v1.html`` frame it replaces is deprecated) writes the cookie for a year,
    ``SameSite=Strict``. Streamlit reads cookies only when a tab connects, so the first tab of a
    browser writes it and the tabs opened after it read it. The script's element and its
    container's wrapper are taken out of the layout (no gap above the page's title).
    """
    vid = visitor_id()
    if _visitor_cookie() == vid:
        return
    # vid passed _valid_visitor (letters and digits only), so it cannot break out of the string
    script = f"<script>document.cookie = '{VISITOR_COOKIE}={vid}; path=/; max-age=31536000; SameSite=Strict';</script>"
    st.html("<style>div:has(> .st-key-flowlab_visitor_cookie), .st-key-flowlab_visitor_cookie "
            "{ position: absolute; width: 0; height: 0; overflow: hidden; }</style>")
    with st.container(key="flowlab_visitor_cookie"):
        st.html(script, unsafe_allow_javascript=True)


def _valid_visitor(value) -> bool:
    return isinstance(value, str) and 4 <= len(value) <= 32 and value.isalnum()


def is_teacher() -> bool:
    """The teacher's override: this session typed the key set in FLOWLAB_TEACHER_KEY.

    The key is typed into a password box in the sidebar and kept only in this tab's session,
    never in the URL, so it does not show on a projected screen.
    """
    key = env.read("FLOWLAB_TEACHER_KEY") or ""
    given = st.session_state.get("teacher_key", "")
    return bool(key) and isinstance(given, str) and hmac.compare_digest(given.encode(), key.encode())


def _ownerless(run) -> bool:
    """Started from the terminal (``TERMINAL_OWNER``) or with no recorded owner."""
    return _get(run, "owner") in (None, "", TERMINAL_OWNER)


def may_control(run) -> bool:
    """Whether this browser may stop, resume, rename, delete or extend ``run`` (anyone may
    watch it): the teacher always; a visitor the runs it started itself; and, outside
    classroom mode, the runs started from the terminal or with no owner (one person on their
    own machine stops a run they started in a terminal). In classroom mode those need the
    teacher's key."""
    if is_teacher():
        return True
    owner = _get(run, "owner")
    if _ownerless(run):
        return not classroom_mode()
    return owner == visitor_id()


def control_owner(run=None) -> str | None:
    """The owner passed to the store's start/stop/rename/delete of ``run``, which refuses a
    run of another owner (:func:`flowlib.store.rows.check_owner`): this visitor's id, or None
    (trusted) for the teacher and, outside classroom mode, for a run from the terminal or with
    no owner (see :func:`may_control`)."""
    if is_teacher():
        return None
    if run is not None and _ownerless(run) and not classroom_mode():
        return None
    return visitor_id()


def stopped_by(run) -> str | None:
    """Who asks to stop ``run``, in words for its owner, when it is not the owner: "the teacher"."""
    if is_teacher() and not _ownerless(run) and _get(run, "owner") != visitor_id():
        return "the teacher"
    return None


def not_yours_words(run) -> str:
    """Why the controls of ``run`` are not offered, in one sentence."""
    if _ownerless(run):
        return ("This run was started from the terminal: in classroom mode only the teacher can "
                "stop, resume, rename or delete it; you can watch it.")
    return ("Someone else started this run: you can watch it; only they (or the teacher) can "
            "stop, resume, rename or delete it.")


def ordinal(n: int) -> str:
    """1st, 2nd, 3rd, 4th, 11th, 12th, 21st, ..."""
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def queue_words(store, run) -> str | None:
    """'2nd in the queue, 1 run training' for a waiting run, from the store; else None."""
    if _get(run, "status") != WAITING:
        return None
    place = store.queue_position(_get(run, "id"))
    if place is None:
        return None
    training = sum(1 for r in store.list_runs() if r["status"] in ACTIVE_STATUSES)
    return (f"{ordinal(place)} in the queue, {training} run{'' if training == 1 else 's'} "
            "training")


def _get(run, name, default=None):
    if isinstance(run, dict):
        return run.get(name, default)
    return getattr(run, name, default)


# -- device --------------------------------------------------------------------------------
@st.cache_resource(show_spinner=False)
def device_line() -> str:
    """'NVIDIA H100 …, 79.1 GiB' or 'CPU, 2 threads' (computed once per server)."""
    try:
        from flowlib.machine.device import describe_device
        return describe_device()
    except Exception as exc:  # noqa: BLE001
        log.warning("describe_device failed: %s", exc)
        return f"CPU, {os.cpu_count() or 1} threads"


@st.cache_resource(show_spinner=False)
def default_batch() -> int:
    """The Train form's batch size: 256 on a CUDA GPU, else 64 (flowlib.machine.device.default_batch_size)."""
    try:
        from flowlib.machine.device import default_batch_size, pick_device
        return default_batch_size(pick_device("auto"))
    except Exception as exc:  # noqa: BLE001
        log.warning("default_batch failed: %s", exc)
        return 64


def gpu_line() -> str | None:
    """'12.3 of 79.6 GiB in use · 85 % busy' for the first GPU (all processes, from NVML), or None."""
    from flowlib.machine.gpu import gpu_status
    status = gpu_status()
    if status is None:
        return None
    busy = f" · {status['util_percent']} % busy" if status["util_percent"] is not None else ""
    return f"{status['used_gib']:.1f} of {status['total_gib']:.1f} GiB in use{busy}"


# -- asking once ---------------------------------------------------------------------------
def confirm_delete(state_key: str, warning: str, yes_label: str, yes_key: str, keep_key: str,
                   delete) -> None:
    """The box a Delete… button opens (it set ``st.session_state[state_key]``): the warning, a
    Yes button that calls ``delete()`` (returning the words for the Runs page's flash line; a
    PermissionError, KeyError or ValueError becomes its error line) and Keep it."""
    with st.container(border=True):
        st.warning(warning, icon=":material/delete:")
        yes, keep, _ = st.columns([1, 1, 2])
        if yes.button(yes_label, type="primary", key=yes_key, width="stretch"):
            st.session_state.pop(state_key, None)
            try:
                st.session_state["runs_flash"] = ("success", delete())
            except (PermissionError, KeyError, ValueError) as exc:
                st.session_state["runs_flash"] = ("error", str(exc))
            st.rerun(scope="app")
        if keep.button("Keep it", key=keep_key, width="stretch"):
            st.session_state.pop(state_key, None)
            st.rerun(scope="app")


# -- formatting ----------------------------------------------------------------------------
def fmt_duration(seconds) -> str:
    if seconds is None:
        return "–"
    seconds = max(0, int(round(float(seconds))))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {(seconds % 3600) // 60:02d} min"


# -- sidebar -------------------------------------------------------------------------------
PAGE_CSS = """
<style>
/* A projector has little height to spare: less empty space above each page's title. */
[data-testid="stMainBlockContainer"] { padding-top: 2.2rem; }
/* Secondary text must stay legible from the back of a room: Streamlit's captions are
   14 px at 60 % opacity; here they are 16 px and a dark grey (contrast about 10:1). */
[data-testid="stCaptionContainer"], [data-testid="stCaptionContainer"] p,
[data-testid="stImageCaption"] {
    font-size: 1rem !important; color: #3d4250 !important; opacity: 1 !important;
}
</style>
"""


def page_style() -> None:
    st.html(PAGE_CSS)


def render_sidebar_status(steps: bool = True) -> None:
    """Device in use, classroom mode, and the active run with a link to its dashboard.

    ``steps=False`` leaves out the active runs' step counts: app.py passes it on the Train page,
    whose dashboard shows the step fresher (every 2 s against the sidebar's 5 s), so the two
    never show a teacher different steps of the same run side by side."""
    with st.sidebar:
        st.markdown(f"**Device** · {device_line()}")
        mode = "Classroom mode · " if classroom_mode() else ""
        if is_teacher():
            st.caption(f"{mode}**teacher**: you can stop, rename or delete any run.")
        elif classroom_mode():
            st.caption("Classroom mode: runs are capped; you can stop, rename or delete only "
                       "the runs you started.")
        if env.read("FLOWLAB_TEACHER_KEY"):
            with st.expander("Teacher"):
                st.text_input("Teacher key", type="password", key="teacher_key",
                              help="The value of FLOWLAB_TEACHER_KEY on the server: lets "
                                   "this tab stop, rename and delete every run.")
        try:
            store = get_store()
            runs = store.list_runs()  # one SELECT
        except Exception as exc:  # noqa: BLE001 - the sidebar must never take a page down
            log.warning("sidebar: cannot read the run store: %s", exc)
            st.caption("The run store cannot be read right now.")
            return
        busy = any(r["status"] in ACTIVE_STATUSES or r["status"] == WAITING for r in runs)
        st.fragment(_sidebar_runs, run_every=5.0 if busy else None)(busy, steps)


def _sidebar_runs(was_busy: bool, steps: bool = True) -> None:
    """The active run(s), refreshed every 5 s while something trains."""
    store = get_store()
    try:
        runs = store.list_runs()
    except Exception as exc:  # noqa: BLE001
        log.warning("sidebar: cannot read the run store: %s", exc)
        return
    active = [r for r in runs if r["status"] in ACTIVE_STATUSES]
    waiting = [r for r in runs if r["status"] == WAITING]
    if was_busy and not active and not waiting:
        st.rerun(scope="app")  # nothing trains any more: switch this timer off
    gpu = gpu_line()
    if gpu:   # refreshed with this fragment: every 5 s while something trains
        st.markdown(f"**GPU** · {gpu}")
    if active:
        for r in active[:3]:
            st.markdown(f"**Training** · {STATUS_WORDS.get(r['status'], r['status'])}"
                        + (f", step {r['step'] or 0:,}" if steps else ""))
            st.page_link("pages/train.py", label=f"Run {r['id']} · {r['name']}",
                         icon=":material/monitoring:", query_params={"run": str(r["id"])})
    elif runs:
        r = runs[0]
        st.markdown(f"**Last run** · {STATUS_WORDS.get(r['status'], r['status'])}")
        st.page_link("pages/train.py", label=f"Run {r['id']} · {r['name']}",
                     icon=":material/monitoring:", query_params={"run": str(r["id"])})
    else:
        st.caption("No runs yet.")
    if waiting:
        st.caption(f"{len(waiting)} run{'s' if len(waiting) != 1 else ''} waiting for a free "
                   "training slot.")


# -- the run store -------------------------------------------------------------------------
@st.cache_resource(show_spinner=False)
def _store(root: str, env_key: tuple):
    from flowlib.jobs.worker import keep_queue_moving
    from flowlib.store.runs import RunStore, StoreBusyError
    store = RunStore(root)
    try:
        store.publish_limits()   # runs queued before a restart start under this server's caps
    except StoreBusyError:
        pass                     # locked for now: workers keep the caps they were launched with
    # A slot freed by a worker nobody here watches (kill -9 after a restart, a long SIGSTOP) goes
    # to the queue when a page's read reaps it, and every few seconds with no page open.
    keep_queue_moving(store, poll_s=5.0)
    return store


def get_store():
    """The server's RunStore (one per runs folder and limit settings).

    A run database that cannot be used (another program's file, a damaged or truncated one,
    a read-only folder, a full disk) stops the page with its one-sentence reason; the file
    is left untouched, and the next rerun tries again (a failure is not cached).
    """
    from flowlib.store.dbfile import StoreUnavailableError
    from flowlib.store.rows import StoreBusyError
    try:
        return _store(str(env.runs_root()), env.snapshot(env.LIMIT_VARIABLES))
    except StoreUnavailableError as exc:
        st.error(f"The run store cannot be used: {exc}", icon=":material/database:")
        st.stop()
    except StoreBusyError:
        st.warning(BUSY_MESSAGE, icon=":material/hourglass_top:")
        st.stop()


# -- charts --------------------------------------------------------------------------------
CHART_FONT = dict(size=16)
PALETTE = ["#3b5bdb", "#e8590c", "#2b8a3e", "#ae3ec9", "#1098ad", "#f08c00", "#c92a2a",
           "#5c940d", "#495057", "#d6336c"]
EVENT_STYLE = {  # kind -> (colour, words)
    "nan_skip": ("#f08c00", "non-finite step skipped"),
    "rollback": ("#c92a2a", "rolled back to the last checkpoint"),
    "lr_drop": ("#ae3ec9", "learning rate lowered"),
    "error": ("#c92a2a", "failed"),
    "resume": ("#2b8a3e", "resumed"),
    "stop": ("#495057", "stopped"),
    "early_stop": ("#2b8a3e", "stopped early (best weights kept)"),
    "lost": ("#c92a2a", "process lost"),
    "warning": ("#f08c00", "warning"),
}


def line_mode(values) -> str:
    """Plotly mode for a curve: a line alone draws nothing for one point, so short curves get markers."""
    return "lines" if len(values) >= 3 else "lines+markers"


def base_layout(fig, *, x_title: str, y_title: str, uirevision, height: int = 380,
                title: str | None = None, legend: bool = True) -> None:
    fig.update_layout(
        height=height, uirevision=str(uirevision), font=CHART_FONT,
        margin=dict(l=10, r=10, t=40 if title else 10, b=10),
        title=dict(text=title, font=dict(size=18)) if title else None,
        hovermode="x unified" if legend else "closest",
        legend=dict(orientation="h", yanchor="bottom", y=1.0, xanchor="left", x=0,
                    font=dict(size=15)),
        showlegend=legend,
    )
    fig.update_xaxes(title=dict(text=x_title, font=dict(size=17)), tickfont=dict(size=15),
                     showgrid=True)
    fig.update_yaxes(title=dict(text=y_title, font=dict(size=17)), tickfont=dict(size=15),
                     showgrid=True)


def add_bpd_help(fig) -> None:
    """'what is bits/dim? (hover)' in the plot's top-right corner, inside the axes.

    Not on the legend's line above the plot: with four legend entries, "events" last, the
    legend would run into it. A bits/dim curve falls, so the top-right corner of the plot is
    where no curve is.
    """
    fig.add_annotation(text="what is bits/dim? (hover)", hovertext=BPD_HELP, showarrow=False,
                       xref="paper", yref="paper", x=1, y=1.0, xanchor="right", yanchor="top",
                       bgcolor="rgba(255,255,255,0.85)", font=dict(size=14, color="#3b5bdb"))


def x_values(curve: dict, elapsed: dict | None, axis: str) -> list:
    """A curve's x: its steps, or training seconds (elapsed_s interpolated at those steps)."""
    if axis == "step" or not elapsed or not elapsed.get("step"):
        return list(curve["step"])
    import numpy as np
    return [round(float(v), 2) for v in np.interp(curve["step"], elapsed["step"], elapsed["value"])]


X_TITLES = {"step": "training step", "time": "training time (seconds)"}
