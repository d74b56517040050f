"""Process-wide runtime tuning for CPU pattern search.

glibc's malloc hands large freed blocks (the activations of every forward/backward pass) straight back
to the operating system, so each step pays for fresh page faults. Raising the mmap and trim thresholds
keeps those blocks in the heap for reuse: EfficientNet-Lite0 at batch 33 on 2 cores went from about 16
to about 45 images/s forward+backward here (see README, benchmarks/overhead.py). Set
``PATTERNSCOPE_NO_MALLOC_TUNING=1`` to leave the allocator alone.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import sys

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_done = False


def tune_cpu_allocator(threshold_bytes: int = 1 << 30) -> bool:
    """Keep large freed blocks in glibc's heap (Linux only; once per process). Returns True if applied."""
    global _done
    if _done:
        return True
    if not sys.platform.startswith("linux") or os.environ.get("PATTERNSCOPE_NO_MALLOC_TUNING"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        ok = libc.mallopt(_M_MMAP_THRESHOLD, threshold_bytes) == 1
        ok = libc.mallopt(_M_TRIM_THRESHOLD, threshold_bytes) == 1 and ok
    except (OSError, AttributeError):  # not glibc (musl, ...): nothing to tune
        return False
    _done = ok
    return ok


def release_free_memory() -> None:
    """Hand the heap's free memory back to the operating system (glibc ``malloc_trim``; a no-op elsewhere).

    With :func:`tune_cpu_allocator`'s thresholds, a long stream of differently sized batches (evaluation
    over thousands of images) leaves freed blocks scattered over several arenas; trimming every few
    dozen batches keeps the resident size flat (measured: 1.7 GB after 8,500 images without, see
    benchmarks/evaluate_scale.py) at a cost of well under a millisecond a batch.
    """
    if not _done:
        return
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim(0)
