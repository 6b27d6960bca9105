"""`python app.py`: Streamlit plus a warm-up thread that loads the libraries and demo models
before the first visit (pages/common/serve.py)."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path


from pages.common import explore as ec
from pages.common import serve

ROOT = Path(__file__).resolve().parent.parent


def test_warm_up_loads_every_demo_its_test_images_and_homes_picture(monkeypatch):
    calls = []
    monkeypatch.setattr(ec, "load", lambda path: calls.append(("load", Path(path).name)))
    monkeypatch.setattr(ec, "test_images", lambda name: calls.append(("images", name)))
    monkeypatch.setattr(ec, "journey_picture", lambda path, mtime, dataset: calls.append(("home", dataset)))
    assert serve.warm_up() >= 0
    demos = {p.name for p in ec.DEMOS.values() if p.is_file()}
    assert {name for kind, name in calls if kind == "load"} == demos
    assert ("images", "mnist") in calls and ("images", "faces") in calls
    assert ("home", "mnist") in calls or "mnist-fast.pt" not in demos


def test_a_failing_warm_up_never_stops_the_server(monkeypatch, caplog):
    def broken(path):
        raise OSError("disk gone")
    monkeypatch.setattr(ec, "load", broken)
    assert serve.warm_up() >= 0                               # no exception
    assert "warm-up stopped early: OSError: disk gone" in caplog.text


def test_python_app_py_serves_the_app_and_says_when_it_is_ready(tmp_path):
    import socket
    import urllib.request
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = tmp_path / "server.log"
    env = dict(os.environ, FLOWLAB_RUNS_DIR=str(tmp_path / "runs"), PYTHONUNBUFFERED="1")
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "app.py", "--server.headless", "true", "--server.address",
                                 "127.0.0.1", "--server.port", str(port), "--browser.gatherUsageStats",
                                 "false"], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        deadline, healthy, ready = time.monotonic() + 120, False, False
        while time.monotonic() < deadline and not (healthy and ready):
            assert proc.poll() is None, log.read_text()
            try:
                healthy = urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2).read() == b"ok"
            except OSError:
                pass
            ready = "Flow Lab: libraries and demo models loaded in" in log.read_text()
            time.sleep(0.3)
        assert healthy and ready, log.read_text()
        assert "ScriptRunContext" not in log.read_text()      # the warm-up's expected warnings are filtered
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
