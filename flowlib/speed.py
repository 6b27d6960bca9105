"""Process-level settings that make CPU training faster without touching the maths.

Measured here (2 cores, 1×32×32, L=3, K=6, width 512, batch 64): glibc hands every
activation tensor above its mmap threshold (at most 32 MB) straight back to the kernel
when it is freed, so the next step maps it again and takes ~1 million page faults per
step — the same churn that makes public Glow ports slower per image at larger batches.
Keeping freed memory inside the process removes the faults.

:func:`tune_for_training` is called by the worker, the CLI and the benchmarks, and also by
``FlowModel.encode`` the first time it runs a CPU training forward (training mode, autograd
on), so a script of one's own that trains a FlowModel gets it too. It is not called on
import, and the Streamlit server turns the automatic call off (:func:`disable_auto_tuning`):
it is a long-lived process that should give memory back.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

# glibc mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4

_tuned = False
_auto = True


def tune_for_training() -> bool:
    """Stop glibc from returning freed heap memory to the OS. Returns True if applied.

    A no-op (False) on other platforms or C libraries. Idempotent.
    """
    global _tuned
    if _tuned:
        return True
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False  # musl or another libc without mallopt
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    # Serve every allocation from the heap (no per-tensor mmap/munmap) and never trim it:
    # "M_TRIM_THRESHOLD = -1 disables trimming completely" (mallopt(3)).
    ok = mallopt(_M_MMAP_MAX, 0) == 1 and mallopt(_M_TRIM_THRESHOLD, -1) == 1
    _tuned = ok
    return ok


def disable_auto_tuning() -> None:
    """Make :func:`tune_for_training_automatically` a no-op in this process (the app server)."""
    global _auto
    _auto = False


def tune_for_training_automatically() -> None:
    """What ``FlowModel.encode`` calls before a CPU training forward; see the module docstring."""
    if _auto and not _tuned:
        tune_for_training()
