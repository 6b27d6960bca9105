"""Browser-test fixtures: the real Streamlit server and Debian's Chromium via PyPI playwright.

Never `playwright install`: the browser is /usr/bin/chromium (``apt-get install chromium``).
Locally a missing Chromium skips these tests; in CI (env CI set) it is a failure, because
CI must have it (`.ci/run` installs it).

Screenshots go to ``test-artifacts/`` at the repository root (ignored by git, kept by CI).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from flowlib.env import REPO_ROOT
from tests.runs_kit import stop_training

REPO = REPO_ROOT
ARTIFACTS = REPO / "test-artifacts"
CHROMIUM = os.environ.get("FLOWLAB_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
VIEWPORT = {"width": 1600, "height": 1000}  # a projector's 16:10


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/_stcore/health", timeout=2) as resp:
            return resp.status == 200
    except OSError:
        return False


class StreamlitServer:
    """`python app.py` (or, with ``warm_up=False``, plain `streamlit run app.py`) on 127.0.0.1
    in its own process group."""

    def __init__(self, runs_dir: Path, log_path: Path, env: dict | None = None, warm_up: bool = True):
        self.launcher = ["app.py"] if warm_up else ["-m", "streamlit", "run", "app.py"]
        self.runs_dir = runs_dir
        self.log_path = log_path
        self.extra_env = env or {}
        self.proc: subprocess.Popen | None = None
        self.url = ""

    def start(self, timeout: float = 60.0) -> str:
        port = _free_port()
        env = dict(os.environ, FLOWLAB_RUNS_DIR=str(self.runs_dir), **self.extra_env)
        env.setdefault("PYTHONUNBUFFERED", "1")
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            # `python app.py` is what `make run` serves: Streamlit plus the warm-up thread
            [sys.executable, *self.launcher, "--server.headless", "true",
             "--server.address", "127.0.0.1", "--server.port", str(port),
             "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none"],
            cwd=REPO, env=env, stdout=self._log, stderr=subprocess.STDOUT,
            start_new_session=True)
        self.url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"streamlit exited with {self.proc.returncode}; see {self.log_path}")
            if _healthy(self.url):
                return self.url
            time.sleep(0.3)
        self.stop()
        raise RuntimeError(f"streamlit did not become healthy in {timeout:.0f} s; see {self.log_path}")

    def wait_for_log(self, text: str, timeout: float = 60.0) -> bool:
        """Wait until the server's log holds ``text`` (e.g. the warm-up's ready line)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._log.flush()
            if text in self.log_path.read_text(errors="replace"):
                return True
            time.sleep(0.2)
        return False

    def stop(self) -> None:
        """Kill the server's process group (not the training workers: they run in their own)."""
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=10)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
        self.proc = None
        self._log.close()


@pytest.fixture(scope="session")
def artifacts_dir() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


@pytest.fixture
def runs_dir(runs_dir) -> Path:
    """tests/conftest.py's empty store; runs the browser started are stopped afterwards."""
    yield runs_dir
    stop_training(runs_dir)


@pytest.fixture
def streamlit_server(runs_dir, artifacts_dir, request):
    """Start the app on a free port; yields the StreamlitServer (``.url``)."""
    server = StreamlitServer(runs_dir, artifacts_dir / f"{request.node.name}-server.log")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def server_factory(runs_dir, artifacts_dir, request):
    """Make extra servers on the same runs folder (for the restart test); all stopped at the end."""
    made = []

    def make(tag: str) -> StreamlitServer:
        server = StreamlitServer(runs_dir, artifacts_dir / f"{request.node.name}-{tag}-server.log")
        made.append(server)
        return server

    yield make
    for server in made:
        server.stop()


@pytest.fixture(scope="session")
def chromium(tmp_path_factory):
    """A headless Debian Chromium driven by the PyPI playwright package."""
    if not Path(CHROMIUM).exists():
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM} is missing: CI must install it (apt-get install chromium)")
        pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        if os.environ.get("CI"):
            pytest.fail("the playwright package is missing (pip install -r requirements-dev.txt)")
        pytest.skip("the playwright package is missing (pip install -r requirements-dev.txt)")
    home = tmp_path_factory.mktemp("chromium-home")
    env = dict(os.environ, XDG_CONFIG_HOME=str(home / "config"), XDG_CACHE_HOME=str(home / "cache"),
               HOME=str(home))
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS,
                                     env=env)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def page(chromium):
    context = chromium.new_context(viewport=VIEWPORT, device_scale_factor=1)
    page = context.new_page()
    page.set_default_timeout(30_000)
    try:
        yield page
    finally:
        context.close()
