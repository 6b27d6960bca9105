"""What the NVIDIA GPUs of this machine are doing, read through NVML, without torch.

    from flowlib.machine.gpu import gpu_status, default_concurrent_runs
    gpu_status()               # {"name": "NVIDIA H100 80GB HBM3", "used_gib": 12.3, "total_gib": 79.6,
                               #  "util_percent": 85} for the first visible GPU, or None
    default_concurrent_runs()  # 1 on a CPU; on a GPU one run per 16 GiB of its memory, 1..4

NVML (the ``nvidia-ml-py`` package, ``import pynvml``) asks the driver, as ``nvidia-smi``
does: it sees every process's memory and the GPU's utilisation, and unlike
``torch.cuda.mem_get_info`` it does not create a CUDA context (about 500 MB of GPU memory)
in the Streamlit server that only wants to show the numbers. Without an NVIDIA driver or
the package every function here answers "no GPU" (None, or the CPU default) at once.
"""

from __future__ import annotations

import os

__all__ = ["gpu_status", "default_concurrent_runs", "GIB_PER_RUN", "MAX_DEFAULT_RUNS"]

GIB_PER_RUN = 16        # GPU memory per concurrent run by default: the Glow preset (width 512) at
                        # batch 64 needs about 5.4 GiB of activations by flowlib.size.activation_mb
MAX_DEFAULT_RUNS = 4    # past this, runs of small models mostly wait on each other's kernels


def _first_visible_index() -> int:
    """NVML numbers every GPU; CUDA_VISIBLE_DEVICES may hide some: its first entry is CUDA's 0."""
    first = os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",")[0].strip()
    return int(first) if first.isdigit() else 0


def gpu_status(index: int | None = None) -> dict | None:
    """Name, memory in use (all processes) and utilisation of a GPU; None when NVML cannot be
    read (no NVIDIA driver, no ``nvidia-ml-py``, a hidden or absent index)."""
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) in ("", "-1"):
        return None
    try:
        import pynvml
        pynvml.nvmlInit()
    except Exception:  # noqa: BLE001 - no package, no driver, no GPU: all mean "none"
        return None
    try:
        handle = pynvml.nvmlDeviceGetHandleByIndex(_first_visible_index() if index is None else index)
        name = pynvml.nvmlDeviceGetName(handle)
        mem = pynvml.nvmlDeviceGetMemoryInfo(handle)
        try:
            util = int(pynvml.nvmlDeviceGetUtilizationRates(handle).gpu)
        except Exception:  # noqa: BLE001 - some virtual GPUs do not report it
            util = None
        return {"name": name.decode() if isinstance(name, bytes) else str(name),
                "used_gib": mem.used / 2**30, "total_gib": mem.total / 2**30, "util_percent": util}
    except Exception:  # noqa: BLE001
        return None
    finally:
        try:
            pynvml.nvmlShutdown()
        except Exception:  # noqa: BLE001
            pass


def default_concurrent_runs(status: dict | None = None) -> int:
    """How many runs train at once when FLOWLAB_MAX_CONCURRENT is not set: 1 on a CPU (two
    runs on the same cores each go at half speed and the pages slow down); on a GPU one per
    ``GIB_PER_RUN`` GiB of its memory, at least 1 and at most ``MAX_DEFAULT_RUNS``, because the
    small models taught here leave most of a large GPU idle when they train alone."""
    status = gpu_status() if status is None else status
    if not status:
        return 1
    return max(1, min(MAX_DEFAULT_RUNS, int(status["total_gib"] // GIB_PER_RUN)))
