"""From opening "Flows in 2-D" to a trained flow on two moons, in a real browser
(target: under 15 s on 2 cores).

    python -m benchmarks.flows2d_time              # 3 cold servers, median
    python -m benchmarks.flows2d_time --repeats 5 --screenshot /tmp/f2d.png

Each repeat starts a fresh server the way `make run` does (`python app.py`; the clock starts
once it prints that its warm-up is done, as a teacher opens the page after that line), opens
``/flows2d`` in headless Chromium at 1600×1000, presses **Train** with the page's defaults
(two moons, K = 6 affine couplings, LU mixing, ActNorm, 400 steps) and stops the clock when
the page shows "Step 400 of 400". The page's own "s of training" figure is printed too.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.browser.conftest import CHROMIUM, CHROMIUM_ARGS, VIEWPORT, StreamlitServer  # noqa: E402


def one_repeat(screenshot: str | None) -> tuple[float, float | None]:
    """(seconds from opening the page to a trained flow, the page's seconds of training)."""
    from playwright.sync_api import sync_playwright
    with tempfile.TemporaryDirectory(prefix="flowlab-f2d-") as tmp:
        runs = Path(tmp) / "runs"
        runs.mkdir()
        server = StreamlitServer(runs, Path(tmp) / "server.log")
        url = server.start()
        server.wait_for_log("Flow Lab: libraries and demo models loaded", timeout=120)
        try:
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
                page = browser.new_page(viewport=VIEWPORT)
                start = time.perf_counter()
                page.goto(url + "/flows2d")
                page.get_by_role("button", name="Train", exact=True).first.click(timeout=60_000)
                page.wait_for_function("() => document.body.innerText.includes('Step 400 of 400')",
                                       timeout=120_000)
                seconds = time.perf_counter() - start
                found = re.search(r"([\d.]+) s of training", page.evaluate("document.body.innerText"))
                if screenshot:
                    page.wait_for_timeout(1500)
                    page.screenshot(path=screenshot)
                browser.close()
        finally:
            server.stop()
    return seconds, float(found.group(1)) if found else None


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.flows2d_time", description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--screenshot", help="save the first repeat's trained page here")
    args = ap.parse_args(argv)
    print(f"machine: {os.cpu_count()} CPUs; load average before: {os.getloadavg()[0]:.1f}")
    results = [one_repeat(args.screenshot if i == 0 else None) for i in range(args.repeats)]
    totals = [r[0] for r in results]
    print("open -> trained, s:", [round(t, 1) for t in totals], f"median {statistics.median(totals):.1f}")
    print("of which training, s:", [r[1] for r in results])
    print(f"load average after: {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
