"""Which devices train faster with bf16 coupling networks (``bf16_is_fast``)."""

from types import SimpleNamespace

import pytest
import torch

from flowlib.machine.device import bf16_is_fast


@pytest.mark.parametrize("major, name, fast", [(7, "Tesla T4 (Turing: bf16 only emulated)", False),
                                               (7, "Tesla V100 (Volta)", False),
                                               (8, "A100 (Ampere)", True),
                                               (9, "H100 (Hopper)", True)])
def test_bf16_counts_as_fast_on_gpus_with_bf16_tensor_cores_only(monkeypatch, major, name, fast):
    # A stand-in for the GPU's properties: this machine has no GPU. torch's own
    # is_bf16_supported() says yes on a T4 too (emulated), which would make bf16 the default
    # on a GPU without bf16 tensor cores.
    asked = []

    def properties(index):
        asked.append(index)
        return SimpleNamespace(major=major, minor=0, name=name)

    monkeypatch.setattr(torch.version, "hip", None)
    monkeypatch.setattr(torch.cuda, "get_device_properties", properties)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    assert bf16_is_fast("cuda:1") is fast and asked == [1]      # the device asked about, not the current one
    assert bf16_is_fast("cuda") is fast and asked == [1, 0]


def test_bf16_on_the_cpu_follows_avx512_bf16_in_cpuinfo():
    with open("/proc/cpuinfo") as f:
        native = any("avx512_bf16" in line for line in f if line.startswith("flags"))
    assert bf16_is_fast("cpu") is native
    assert bf16_is_fast("meta") is False
