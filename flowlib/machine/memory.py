"""Process-level settings that make CPU training faster without touching the maths.

Measured here (2 cores, 1×32×32, L=3, K=6, width 512, batch 64): glibc hands every
activation tensor above its mmap threshold (at most 32 MB) straight back to the kernel
when it is freed, so the next step maps it again and takes ~1 million page faults per
step — the same churn that makes public Glow ports slower per image at larger batches.
Keeping freed memory inside the process removes the faults.

:func:`tune_for_training` belongs to the process that trains and to nothing else: the trainer
calls it when it sets a run up on the CPU (so the worker and the CLI get it), and the speed
measurement and the benchmarks call it in theirs. Nothing calls it on import or from the
model, so a long-lived process that only evaluates or samples (the Streamlit server, a
notebook) keeps glibc's default of giving freed memory back. A script of one's own that
trains on the CPU can call it once before its loop.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

# glibc mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4

_tuned = False


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
