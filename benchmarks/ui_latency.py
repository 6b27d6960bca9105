"""How long the app takes to answer in a real browser: first visits and look-inside controls.

    python -m benchmarks.ui_latency                       # quiet, then with an mnist-fast run training
    python -m benchmarks.ui_latency --scenarios quiet --repeats 5 --pages masks latents sampling

A fresh Streamlit server per scenario, started as `make run` starts it (`python app.py`: its
warm-up thread imports the libraries and loads the demo models, and the first visit is timed
once the server prints that it is ready, as a teacher opens the page after the ready line), or
with ``--no-warm-up`` as plain `streamlit run app.py` (cold: the first visit pays the imports);
headless Chromium at 1600×1000. The time of one interaction is from the
action in the browser to the server's ``script_finished`` message on the websocket (Streamlit's
own "this run is done" signal, read from the protobuf frames), so nothing depends on guessing
when the page looks settled. Controls are found on each page, not named here: the first
``--controls`` sliders (moved one notch with the arrow keys) and select boxes (the next option).
Each control is changed ``--repeats`` times; the table gives the median and the range.

"with a run training": an mnist-fast run (``python -m flowlib.train``) trains on the same
machine for the whole scenario, as in a class; it is stopped afterwards. The load average is
printed with each table because the machine's load changes everything here.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.browser.conftest import CHROMIUM, CHROMIUM_ARGS, VIEWPORT, StreamlitServer  # noqa: E402

PAGES = {"home": "", "train": "train", "runs": "runs", "flows2d": "flows2d", "masks": "masks",
         "latents": "latents", "sampling": "sampling"}
LOOK_INSIDE = ("masks", "latents", "sampling")
TIMEOUT_S = 120.0


class ScriptWatch:
    """Counts the server's script_finished messages on the page's websocket."""

    def __init__(self, page):
        from streamlit.proto.ForwardMsg_pb2 import ForwardMsg
        self._cls = ForwardMsg
        self.finished: list[float] = []
        page.on("websocket", lambda ws: ws.on("framereceived", self._frame))

    def _frame(self, payload) -> None:
        if isinstance(payload, str):
            return
        msg = self._cls()
        try:
            msg.ParseFromString(payload)
        except Exception:  # noqa: BLE001 - not a ForwardMsg: ignore
            return
        if msg.WhichOneof("type") == "script_finished":
            self.finished.append(time.perf_counter())

    def wait_after(self, count: int, page, timeout: float = TIMEOUT_S) -> float:
        """Wait for a script_finished beyond the first ``count``; its time."""
        deadline = time.perf_counter() + timeout
        while len(self.finished) <= count:
            if time.perf_counter() > deadline:
                raise TimeoutError("the app did not finish a run in time")
            page.wait_for_timeout(5)
        return self.finished[count]

    def settle(self, page, quiet_ms: int = 700) -> None:
        """Wait until no run has finished for ``quiet_ms`` (follow-up reruns are done)."""
        last = len(self.finished)
        while True:
            page.wait_for_timeout(quiet_ms)
            if len(self.finished) == last:
                return
            last = len(self.finished)


def _timed(watch: ScriptWatch, page, action) -> float:
    """Seconds from the action to the last script run it caused (a rerun it triggers counts)."""
    count = len(watch.finished)
    t0 = time.perf_counter()
    action()
    watch.wait_after(count, page)
    watch.settle(page)
    return watch.finished[-1] - t0


def _controls(page, limit: int) -> list[tuple[str, object]]:
    """(label, locator) of the first sliders and select boxes in the main area."""
    main = page.locator('[data-testid="stMain"]')
    found = []
    for kind, selector in (("slider", '[data-testid="stSlider"]'), ("select", '[data-testid="stSelectbox"]')):
        items = main.locator(selector)
        for i in range(items.count()):
            item = items.nth(i)
            if not item.is_visible():
                continue
            label = (item.locator("label").first.inner_text(timeout=2000) or kind).strip().splitlines()[0]
            found.append((f"{kind}: {label[:40]}", item))
    return found[:limit]


def _change(kind_label: str, item, page, step: int) -> None:
    if kind_label.startswith("slider"):
        thumb = item.locator('input[type="range"], [role="slider"]').first
        thumb.focus()
        page.keyboard.press("ArrowRight" if step % 2 == 0 else "ArrowLeft")
    else:   # the select's own input, by keyboard: open, move one option, choose
        box = item.locator("input").first
        box.focus()
        page.keyboard.press("ArrowDown")
        page.keyboard.press("ArrowDown" if step % 2 == 0 else "ArrowUp")
        page.keyboard.press("Enter")


def measure(url: str, pages: list[str], repeats: int, controls: int) -> list[dict]:
    from playwright.sync_api import sync_playwright

    rows = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport=VIEWPORT)
        watch = ScriptWatch(page)
        for name in pages:
            visit = _timed(watch, page, lambda n=name: page.goto(f"{url}/{PAGES[n]}"))
            rows.append({"page": name, "what": "first visit", "median_s": visit, "min_s": visit,
                         "max_s": visit, "n": 1})
            if name not in LOOK_INSIDE:
                continue
            for label, item in _controls(page, controls):
                times = []
                for r in range(repeats):
                    try:
                        times.append(_timed(watch, page, lambda i=item, lab=label, k=r: _change(lab, i, page, k)))
                    except Exception as exc:  # noqa: BLE001 - one control failing is a row, not a crash
                        print(f"  {name} {label}: {exc}", file=sys.stderr)
                        break
                if times:
                    rows.append({"page": name, "what": label, "median_s": statistics.median(times),
                                 "min_s": min(times), "max_s": max(times), "n": len(times)})
        browser.close()
    return rows


def _start_training(runs_dir: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "flowlib.train", "--preset", "mnist-fast", "--dataset", "mnist",
         "--steps", "100000", "--runs-dir", str(runs_dir), "--quiet", "--name", "latency-background"],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)


READY_LINE = "Flow Lab: libraries and demo models loaded"   # printed by pages/common/serve.py


def run_scenario(scenario: str, pages: list[str], repeats: int, controls: int,
                 warm_up: bool = True) -> tuple[list[dict], float]:
    with tempfile.TemporaryDirectory(prefix="flowlab-latency-") as tmp:
        runs_dir = Path(tmp) / "runs"
        runs_dir.mkdir()
        trainer = _start_training(runs_dir) if scenario == "training" else None
        server = StreamlitServer(runs_dir, Path(tmp) / "server.log", warm_up=warm_up)
        try:
            if trainer is not None:
                time.sleep(15)     # past start-up: the run is training when the server starts
            url = server.start()
            if warm_up and not server.wait_for_log(READY_LINE, timeout=120):
                print("warning: the server never printed its ready line; measuring anyway")
            rows = measure(url, pages, repeats, controls)
            load = os.getloadavg()[0]
        finally:
            server.stop()
            if trainer is not None:
                os.killpg(trainer.pid, signal.SIGINT)
                try:
                    trainer.wait(60)
                except subprocess.TimeoutExpired:
                    os.killpg(trainer.pid, signal.SIGKILL)
    return rows, load


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.ui_latency", description=__doc__.split("\n\n")[0])
    ap.add_argument("--scenarios", nargs="+", default=["quiet", "training"], choices=["quiet", "training"])
    ap.add_argument("--pages", nargs="+", default=list(PAGES), choices=list(PAGES))
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--controls", type=int, default=4, help="controls measured per look-inside page")
    ap.add_argument("--no-warm-up", dest="warm_up", action="store_false",
                    help="serve with plain `streamlit run app.py` instead of `python app.py` (which "
                         "loads the libraries and demo models before the first visit; the first "
                         "visit is then timed after the server prints that it is ready)")
    args = ap.parse_args(argv)
    print(f"machine: {os.cpu_count()} CPUs; load average before: {os.getloadavg()[0]:.1f}")
    for scenario in args.scenarios:
        rows, load = run_scenario(scenario, args.pages, args.repeats, args.controls, args.warm_up)
        title = "quiet" if scenario == "quiet" else "with an mnist-fast run training"
        print(f"\n### {title} (load average at the end {load:.1f})\n")
        print("| page | interaction | median s | range s | n |\n|---|---|---:|---:|---:|")
        for r in rows:
            print(f"| {r['page']} | {r['what']} | {r['median_s']:.2f} | {r['min_s']:.2f}–{r['max_s']:.2f} | {r['n']} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
