"""`python app.py`: serve Flow Lab with the heavy work done before the first visitor.

    python app.py                       # what `make run` does; any `streamlit run` flag works:
    python app.py --server.port 8502

Streamlit imports a page's modules and fills its caches on the first visit, so without a
warm-up the first person to open a fresh server (the teacher, at the projector) waits 3.3 s
for Home: about 1 s of that is importing torch, the rest loading the demo model and drawing
Home's picture.
Here a background thread does all of it while the server starts, in the server's own
process, where Streamlit's caches (``st.cache_data`` / ``st.cache_resource``, module-level)
and ``sys.modules`` are shared with every session. The server answers at once; a visitor
who comes before the warm-up ends waits only for the part still running.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time

log = logging.getLogger("flowlab.serve")

WARM_UP_THREAD = "flowlab-warm-up"
WARM_UP_NICE = 15     # of 19: the warm-up takes only CPU that no visitor wants
# Streamlit logs "missing ScriptRunContext" / "No runtime found" for cached calls made outside
# a page run: expected in the warm-up thread, and they would read like errors in the server
# log. A filter (not a level: Streamlit resets its loggers' levels as it starts) drops only
# that thread's records.
_QUIET = ("streamlit.runtime.caching", "streamlit.runtime.scriptrunner_utils.script_run_context")


def _not_from_warm_up(record: logging.LogRecord) -> bool:
    return record.threadName != WARM_UP_THREAD


def _lower_this_threads_priority() -> None:
    """Nice the calling thread (Linux threads are tasks of their own), so a visitor who comes
    while the warm-up still draws the Sampling grids gets the CPU first: measured with the
    warm-up at normal priority, the 2-D page trained 400 steps in 3.7–4.2 s instead of 2.9."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), WARM_UP_NICE)
    except (AttributeError, OSError):   # not Linux, or not allowed: the warm-up still runs
        pass


def warm_up() -> float:
    """Import the libraries, load the demo models and their test images, draw Home's picture
    and, for the default seed, the Sampling page's grids and walks; returns the seconds it
    took. Failures are logged, never raised: the pages say the same things in their own
    words when a visitor comes."""
    start = time.perf_counter()
    for name in _QUIET:
        logging.getLogger(name).addFilter(_not_from_warm_up)
    try:
        import plotly.graph_objects  # noqa: F401
        import torch  # noqa: F401

        from flowlib import viz  # noqa: F401
        from flowlib.core import flows2d
        from flowlib.store.runs import RunStore  # noqa: F401

        # The first optimizer of a process imports torch._dynamo (1.4 s of the 2-D page's
        # first visit, measured with py-spy), and plotly loads its validators on the first
        # figure: do both once here.
        flows2d.make_optimizer(flows2d.Flow2D(flows2d.Flow2DConfig()))
        plotly.graph_objects.Figure(plotly.graph_objects.Scatter(x=[0], y=[0])).update_layout(height=100)
        from pages.common import explore as ec

        # the cheap parts every page opens with first, then the Sampling page's many grids
        demos = [ec.Loaded(label, path, *ec.load(path)[:2]) for label, path in ec.DEMOS.items()
                 if path.is_file()]
        for dataset in ("mnist", "faces"):
            ec.test_images(dataset)
        home_demo = ec.DEMOS[ec.MNIST_DEMO]
        if home_demo.is_file():
            ec.journey_picture(str(home_demo), ec.file_version(home_demo), "mnist")
        for demo in demos:
            if demo.model is None:      # a broken file: its page says why when it is opened
                continue
            path, mtime, levels = str(demo.path), ec.file_version(demo.path), demo.config.levels
            for t in ec.SAMPLING_TEMPERATURES:     # the default seed at every slider temperature
                ec.sample_grid(path, mtime, 0, (t,) * levels)
            for t in ec.GLOW_TEMPERATURES:         # and Glow's table
                ec.sample_grid(path, mtime, 0, (t,) * levels, 8)
            for frames in ec.INTERPOLATION_FRAMES:  # test images 0 and 1, as the page opens
                ec.interpolation_strips(path, mtime, 0, 1, frames, demo.dataset)
    except Exception as exc:  # noqa: BLE001 - a warm-up must never stop the server
        log.warning("warm-up stopped early: %s: %s", type(exc).__name__, exc)
    return time.perf_counter() - start


def serve(app_path: str, args: list[str]) -> int:
    """Start the warm-up thread, then run ``streamlit run app_path *args`` in this process."""
    def warm() -> None:
        _lower_this_threads_priority()
        print(f"  Flow Lab: libraries and demo models loaded in {warm_up():.1f} s\n", flush=True)

    threading.Thread(target=warm, name=WARM_UP_THREAD, daemon=True).start()
    from streamlit.web import cli
    sys.argv = ["streamlit", "run", app_path, *args]
    return cli.main(prog_name="streamlit")
