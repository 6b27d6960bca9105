"""The GPU seen through NVML (sidebar, concurrency default) and the GPU defaults, tested on any
machine with a stand-in for the ``pynvml`` module: no number here claims a real GPU."""

import sys
import types

import pytest
import torch

from flowlib.machine import gpu
from flowlib.machine.device import default_batch_size
from flowlib.store.limits import Limits


def _fake_nvml(monkeypatch, total_gib=79.6, used_gib=12.3, util=85, fail_init=False):
    calls = {"init": 0, "shutdown": 0, "index": None}
    mod = types.ModuleType("pynvml")

    def init():
        calls["init"] += 1
        if fail_init:
            raise RuntimeError("NVML Shared Library Not Found")

    def handle(index):
        calls["index"] = index
        return "h"

    mod.nvmlInit = init
    mod.nvmlShutdown = lambda: calls.__setitem__("shutdown", calls["shutdown"] + 1)
    mod.nvmlDeviceGetHandleByIndex = handle
    mod.nvmlDeviceGetName = lambda h: b"NVIDIA H100 80GB HBM3"
    mod.nvmlDeviceGetMemoryInfo = lambda h: types.SimpleNamespace(total=int(total_gib * 2**30),
                                                                 used=int(used_gib * 2**30))
    mod.nvmlDeviceGetUtilizationRates = lambda h: types.SimpleNamespace(gpu=util)
    monkeypatch.setitem(sys.modules, "pynvml", mod)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    return calls


def test_gpu_status_reads_name_memory_and_utilisation(monkeypatch):
    calls = _fake_nvml(monkeypatch)
    status = gpu.gpu_status()
    assert status["name"] == "NVIDIA H100 80GB HBM3" and status["util_percent"] == 85
    assert status["used_gib"] == pytest.approx(12.3) and status["total_gib"] == pytest.approx(79.6)
    assert calls["init"] == calls["shutdown"] == 1


def test_cuda_visible_devices_picks_the_nvml_index_or_hides_the_gpu(monkeypatch):
    calls = _fake_nvml(monkeypatch)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,1")
    gpu.gpu_status()
    assert calls["index"] == 3
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert gpu.gpu_status() is None


def test_no_driver_or_no_package_means_no_gpu(monkeypatch):
    _fake_nvml(monkeypatch, fail_init=True)
    assert gpu.gpu_status() is None and gpu.default_concurrent_runs() == 1
    monkeypatch.setitem(sys.modules, "pynvml", None)          # import fails
    assert gpu.gpu_status() is None


def test_concurrency_default_follows_the_gpu_memory(monkeypatch):
    assert gpu.default_concurrent_runs({"total_gib": 8.0}) == 1
    assert gpu.default_concurrent_runs({"total_gib": 40.0}) == 2
    assert gpu.default_concurrent_runs({"total_gib": 139.8}) == gpu.MAX_DEFAULT_RUNS == 4
    _fake_nvml(monkeypatch, total_gib=79.6)
    monkeypatch.delenv("FLOWLAB_MAX_CONCURRENT", raising=False)
    assert Limits.from_env().max_concurrent == 4
    monkeypatch.setenv("FLOWLAB_MAX_CONCURRENT", "2")           # an explicit value wins
    assert Limits.from_env().max_concurrent == 2


def test_batch_default_is_larger_on_a_gpu():
    assert default_batch_size("cpu") == 64
    assert default_batch_size(torch.device("cuda")) == default_batch_size("cuda:1") == 256


def test_the_sidebar_shows_gpu_memory_and_utilisation(monkeypatch, tmp_path):
    from streamlit.testing.v1 import AppTest

    from tests.app.kit import APP
    _fake_nvml(monkeypatch)
    monkeypatch.setenv("FLOWLAB_RUNS_DIR", str(tmp_path / "runs"))
    at = AppTest.from_file(APP, default_timeout=60)
    at.run()
    assert not at.exception, at.exception
    shown = " ".join(m.value for m in at.sidebar.markdown)
    assert "**GPU** · 12.3 of 79.6 GiB in use · 85 % busy" in shown
