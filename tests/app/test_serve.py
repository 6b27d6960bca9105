"""`python app.py`: Streamlit plus a warm-up thread that loads the libraries and demo models
before the first visit (pages/common/serve.py)."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from flowlib.env import REPO_ROOT
from pages.common import explore as ec
from pages.common import serve

ROOT = REPO_ROOT


def test_warm_up_loads_every_demo_and_draws_what_the_pages_open_with(monkeypatch):
    calls = []
    real_load = ec.load
    monkeypatch.setattr(ec, "load", lambda path: calls.append(("load", Path(path).name)) or real_load(path))
    monkeypatch.setattr(ec, "test_images", lambda name: calls.append(("images", name)))
    monkeypatch.setattr(ec, "journey_picture", lambda path, mtime, dataset: calls.append(("home", dataset)))
    monkeypatch.setattr(ec, "sample_grid", lambda path, mtime, seed, temps, n=64:
                        calls.append(("grid", Path(path).name, seed, temps, n)))
    monkeypatch.setattr(ec, "interpolation_strips", lambda path, mtime, ia, ib, frames, dataset:
                        calls.append(("walk", Path(path).name, ia, ib, frames, dataset)))
    assert serve.warm_up() >= 0
    demos = {p.name for p in ec.DEMOS.values() if p.is_file()}
    assert {c[1] for c in calls if c[0] == "load"} == demos
    assert ("images", "mnist") in calls and ("images", "faces") in calls
    assert ("home", "mnist") in calls or "mnist-fast.pt" not in demos
    if "mnist-fast.pt" in demos:   # every slider temperature of the default seed, L = 2 levels
        grids = {c[3][0] for c in calls if c[0] == "grid" and c[1] == "mnist-fast.pt" and c[4] == 64}
        assert grids == set(ec.SAMPLING_TEMPERATURES) and 0.75 in grids
        assert ("grid", "mnist-fast.pt", 0, (0.7, 0.7), 64) in calls
        assert ("walk", "mnist-fast.pt", 0, 1, 9, "mnist") in calls
    if "faces-fast.pt" in demos:
        assert ("walk", "faces-fast.pt", 0, 1, 13, "faces") in calls


def test_a_failing_warm_up_never_stops_the_server(monkeypatch, caplog):
    def broken(path):
        raise OSError("disk gone")
    monkeypatch.setattr(ec, "load", broken)
    assert serve.warm_up() >= 0                               # no exception
    assert "warm-up stopped early: OSError: disk gone" in caplog.text


@pytest.mark.slow
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
