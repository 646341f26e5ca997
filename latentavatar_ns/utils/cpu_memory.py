"""Faster CPU runs: let glibc keep large freed buffers for reuse instead of unmapping them.

glibc serves every allocation above its mmap threshold (at most 32 MiB by default) with a fresh
``mmap`` and returns it with ``munmap`` when freed, so each step of a CPU run page-faults its large
activations in again (at the paper's size a hidden layer of the field is 134 MB). Raising the mmap
and trim thresholds serves them from the heap, which keeps freed memory for the next step. PyTorch's
CPU allocator does no caching of its own, and ``LD_PRELOAD``-ing jemalloc or tcmalloc, the usual cure,
cannot be done from inside an already started process such as ``ns-train``.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

# From glibc's <malloc.h>.
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3


def keep_freed_memory(threshold_mib: int) -> bool:
    """Serve allocations below ``threshold_mib`` from the heap and keep that much freed memory; True if applied.

    Process-wide. Does nothing (False) for 0, off Linux, or without glibc's ``mallopt``.
    """
    if threshold_mib >= 2048:  # mallopt takes a C int
        raise ValueError(f"the heap threshold must be below 2048 MiB, got {threshold_mib}")
    if threshold_mib <= 0 or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and others: no mallopt
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    value = threshold_mib << 20
    return mallopt(M_MMAP_THRESHOLD, value) == 1 and mallopt(M_TRIM_THRESHOLD, value) == 1
