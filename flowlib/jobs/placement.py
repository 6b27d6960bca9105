"""Every GPU used: concurrent runs (single runs and study trials) placed one per GPU, by free memory.

    from flowlib.jobs.placement import choose_gpu, gpu_indices, worker_env, place_run
    devices = list_gpus()                        # [{"index": 0, "free_gib": 70.1, "total_gib": 79.6}, ...] (NVML)
    choose_gpu(devices, busy={0})                # the index a new run should use, or None (no GPU)
    env = place_run(store, run_id)               # {"CUDA_VISIBLE_DEVICES": "1"} for the run's process, or {}
    gpu_indices("all")                           # [0, 1, ...] for `python -m flowlib.study work --gpus all`

A run's process sees exactly one GPU (``CUDA_VISIBLE_DEVICES``), so it trains on ``cuda:0`` of
its own view and never touches another run's memory. Which one: among the GPUs no active run
holds, the one with the most free memory (NVML, like nvidia-smi, without a CUDA context); when
every GPU holds a run, the one with the most free memory anyway (FLOWLAB_MAX_CONCURRENT decides
how many runs train at once, not this). The GPU a run holds is written in its folder (``gpu``)
under a file lock, so two runs launched at the same moment do not pick the same one. The CPU
keeps the thread governor (nothing here applies without a GPU).

The choice is a pure function of a device list, tested with a stand-in list.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

__all__ = ["list_gpus", "choose_gpu", "busy_gpus", "place_run", "gpu_indices", "worker_env", "GPU_FILE"]

GPU_FILE = "gpu"


def list_gpus() -> list[dict]:
    """Every NVIDIA GPU NVML sees: index, free and total GiB; [] without a driver or package."""
    try:
        import pynvml
        pynvml.nvmlInit()
    except Exception:  # noqa: BLE001 - no package, no driver: no GPU
        return []
    try:
        out = []
        for i in range(pynvml.nvmlDeviceGetCount()):
            mem = pynvml.nvmlDeviceGetMemoryInfo(pynvml.nvmlDeviceGetHandleByIndex(i))
            out.append({"index": i, "free_gib": mem.free / 2**30, "total_gib": mem.total / 2**30})
        return out
    except Exception:  # noqa: BLE001
        return []
    finally:
        with contextlib.suppress(Exception):
            pynvml.nvmlShutdown()


def choose_gpu(devices: list[dict], busy: set[int] | frozenset = frozenset()) -> int | None:
    """The GPU index for a new run: free of runs first, then the most free memory; None: no GPU."""
    if not devices:
        return None
    free = [d for d in devices if d["index"] not in busy]
    pool = free or devices
    return max(pool, key=lambda d: (d["free_gib"], -d["index"]))["index"]


def busy_gpus(store) -> set[int]:
    """The GPUs held by the store's active runs (their ``gpu`` files)."""
    out = set()
    for run in store.active_runs():
        path = store.run_dir(run["id"]) / GPU_FILE
        with contextlib.suppress(OSError, ValueError):
            out.add(int(path.read_text().strip()))
    return out


@contextlib.contextmanager
def _placement_lock(root: Path):
    root.mkdir(parents=True, exist_ok=True)
    with open(root / "gpu-placement.lock", "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def place_run(store, run_id: int, devices: list[dict] | None = None) -> dict:
    """Pick the run's GPU, record it in the run's folder, and return the environment its process
    needs ({} without a GPU, or when this process was itself given one GPU or none)."""
    if "CUDA_VISIBLE_DEVICES" in os.environ:     # a worker already pinned to its GPU (or to none)
        return {}
    with _placement_lock(store.root):
        devices = list_gpus() if devices is None else devices
        index = choose_gpu(devices, busy_gpus(store))
        if index is None:
            return {}
        store.run_dir(run_id).mkdir(parents=True, exist_ok=True)
        (store.run_dir(run_id) / GPU_FILE).write_text(str(index))
    return worker_env(index)


def worker_env(index: int) -> dict:
    return {"CUDA_VISIBLE_DEVICES": str(int(index))}


def gpu_indices(spec: str, devices: list[dict] | None = None) -> list[int]:
    """``all`` / ``auto``: every GPU (auto: [] without one), ``none``: [], ``0,2``: those."""
    text = (spec or "auto").strip().lower()
    if text == "none":
        return []
    if text in ("all", "auto"):
        devices = list_gpus() if devices is None else devices
        if not devices and text == "all" and "CUDA_VISIBLE_DEVICES" not in os.environ:
            return []
        return [d["index"] for d in devices]
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"--gpus {spec!r}: give all, auto, none or indices such as 0,1") from None
