"""Process-wide control of glibc's allocator (one place, below every floor that needs it).

glibc's malloc hands large freed blocks (the activations of every forward/backward pass) straight back
to the operating system, so each step pays for fresh page faults. Raising the mmap and trim thresholds
keeps those blocks in the heap for reuse: EfficientNet-Lite0 at batch 33 on 2 cores went from about 16
to about 45 images/s forward+backward here (see README, benchmarks/overhead.py). Set
``PATTERNSCOPE_NO_MALLOC_TUNING=1`` to leave the allocator alone. Input-pipeline worker processes put
the defaults back (:func:`use_default_allocator`), and long evaluation streams trim the heap
(:func:`release_free_memory`).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import sys

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_GLIBC_DEFAULT_THRESHOLD = 128 * 1024
_done = False


def _libc() -> ctypes.CDLL | None:
    """The C library on Linux (None elsewhere or when it cannot be loaded)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None


def _set_thresholds(libc: ctypes.CDLL, threshold_bytes: int) -> bool:
    ok = libc.mallopt(_M_MMAP_THRESHOLD, threshold_bytes) == 1
    return libc.mallopt(_M_TRIM_THRESHOLD, threshold_bytes) == 1 and ok


def tune_cpu_allocator(threshold_bytes: int = 1 << 30) -> bool:
    """Keep large freed blocks in glibc's heap (Linux only; once per process). Returns True if applied."""
    global _done
    if _done:
        return True
    libc = None if os.environ.get("PATTERNSCOPE_NO_MALLOC_TUNING") else _libc()
    if libc is None:
        return False
    try:
        _done = _set_thresholds(libc, threshold_bytes)
    except AttributeError:  # not glibc (musl, ...): nothing to tune
        return False
    return _done


def use_default_allocator() -> None:
    """glibc's default thresholds again (in a process that inherited :func:`tune_cpu_allocator`'s, e.g. an
    input-pipeline worker: it decodes images of every size and would otherwise keep each freed block;
    measured: over 1 GB more after 20,000 JPEGs)."""
    global _done
    libc = _libc() if _done else None
    if libc is None:
        return
    with contextlib.suppress(AttributeError):
        _set_thresholds(libc, _GLIBC_DEFAULT_THRESHOLD)
    _done = False


def release_free_memory() -> None:
    """Hand the heap's free memory back to the operating system (glibc ``malloc_trim``; a no-op elsewhere).

    With :func:`tune_cpu_allocator`'s thresholds, a long stream of differently sized batches (evaluation
    over thousands of images) leaves freed blocks scattered over several arenas; trimming keeps the
    resident size flat (measured: 1.7 GB after 8,500 images without, see benchmarks/evaluate_scale.py).
    Evaluation trims after each forward pass and each SSIM batch, so the two do not stack up
    (benchmarks/memory_stages.py), at a cost of well under a millisecond each.
    """
    libc = _libc() if _done else None
    if libc is None:
        return
    with contextlib.suppress(AttributeError):
        libc.malloc_trim(0)
