"""Which device trains, and how to say so in one line.

    from flowlib.machine.device import pick_device, describe_device, configure_threads
    device = pick_device("auto")        # CUDA if available, else Apple MPS, else CPU
    configure_threads(device)           # CPU: one torch thread per core unless told otherwise
    describe_device(device)             # "NVIDIA H100 80GB HBM3, 79.1 GiB" / "CPU, 2 threads"

``preference`` is one of ``auto``, ``cuda``, ``mps``, ``cpu`` (or ``cuda:N``). Asking for a
device that is not there is a ``ValueError`` that says what is available, never a silent
fallback: a researcher who typed ``--device cuda`` wants to know the GPU is missing.
"""

from __future__ import annotations

import os

import torch

from flowlib.config import DEVICE_CHOICES  # declared with the TrainConfig.device setting

__all__ = ["DEVICE_CHOICES", "pick_device", "describe_device", "configure_threads", "available_devices",
           "default_batch_size"]


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def available_devices() -> list[str]:
    """Device kinds usable right now, best first (always ends with "cpu")."""
    out = []
    if torch.cuda.is_available():
        out.append("cuda")
    if _mps_available():
        out.append("mps")
    return out + ["cpu"]


def pick_device(preference: str = "auto") -> torch.device:
    """The device to train on: ``auto`` picks CUDA, else MPS, else CPU."""
    if not isinstance(preference, str):
        raise ValueError(f"device must be one of {', '.join(DEVICE_CHOICES)}, got {preference!r}")
    pref = preference.strip().lower()
    have = available_devices()
    if pref == "auto":
        return torch.device(have[0])
    kind = pref.split(":", 1)[0]
    if kind not in DEVICE_CHOICES:
        raise ValueError(f"device must be one of {', '.join(DEVICE_CHOICES)}, got {preference!r}")
    if kind not in have:
        raise ValueError(f"device {preference!r} is not available on this machine; "
                         f"available: {', '.join(have)}")
    try:
        device = torch.device(pref)
    except RuntimeError as exc:
        raise ValueError(f"device {preference!r} is not a valid device name ({exc})") from None
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ValueError(f"device {preference!r}: only {torch.cuda.device_count()} CUDA device(s) here")
    return device


def configure_threads(device: torch.device | str, threads: int | None = None) -> int:
    """Set torch's intra-op threads for CPU training (default: every core); returns the count.

    Call it in a fresh process (the worker or the CLI) before the first torch op: changing
    thread counts after OpenMP started, or forking after it, is what hangs.
    """
    device = torch.device(device)
    if threads is None:
        threads = (os.cpu_count() or 1) if device.type == "cpu" else torch.get_num_threads()
    threads = max(1, int(threads))
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    return threads


# On a GPU a step of these small flows should be bound by kernel launches rather than by
# arithmetic, so a batch of 64 would leave most of it idle (expected, not yet measured: no GPU
# has been lent to this project; benchmarks/gpu_check.py measures it). On a CPU 64 is near the
# best images/s (benchmarks/RESULTS.md).
DEFAULT_BATCH = {"cuda": 256}


def default_batch_size(device: torch.device | str) -> int:
    """The batch size a new run gets when none is given: 256 on a CUDA GPU, else 64."""
    return DEFAULT_BATCH.get(torch.device(device).type, 64)


def describe_device(device: torch.device | str | None = None) -> str:
    """One line for the sidebar: GPU name and memory, or CPU thread count."""
    device = pick_device("auto") if device is None else torch.device(device)
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        props = torch.cuda.get_device_properties(index)
        return f"{props.name}, {props.total_memory / 1024**3:.1f} GiB"
    if device.type == "mps":
        return "Apple GPU (MPS)"
    threads = torch.get_num_threads()
    return f"CPU, {threads} thread{'s' if threads != 1 else ''}"


def bf16_is_fast(device: torch.device | str) -> bool:
    """Whether bf16 convolutions beat float32 here: a GPU with bf16 tensor cores (NVIDIA
    compute capability 8.0 or later: Ampere, Hopper, …; ROCm builds), or an x86 CPU with
    AVX-512 BF16 (oneDNN uses native bf16 dot products there; elsewhere it emulates bf16 and
    is slower than float32).

    Not ``torch.cuda.is_bf16_supported()``: by default it also says yes where bf16 is only
    emulated (a T4 or a V100: no bf16 tensor cores, so nothing to gain over float32; not
    measured here: no GPU was lent to this task).
    """
    device = torch.device(device)
    if device.type == "cuda":
        if torch.version.hip:
            return True
        index = device.index if device.index is not None else torch.cuda.current_device()
        return torch.cuda.get_device_properties(index).major >= 8
    if device.type == "cpu":
        try:
            with open("/proc/cpuinfo") as f:
                return any("avx512_bf16" in line for line in f if line.startswith("flags"))
        except OSError:
            return False
    return False


def fast_bf16_here() -> bool:
    """Whether the device training picks here (``pick_device("auto")``) does bf16 natively:
    where it does, the Train form, Home's run and a study's runs default to bf16 networks."""
    return bf16_is_fast(pick_device("auto"))
