"""One process setting that makes PyTorch on the CPU faster: keep freed memory for reuse.

glibc's malloc gives every block above its mmap threshold (128 KiB, raised at run time up to
32 MiB) pages of its own and returns them to the kernel when the block is freed; the next
tensor of that size then pays a page fault per 4 KiB page and the kernel zeroes them. A
batched attack frees and allocates tens of MB of per-trial gradients per evaluation: an
evaluation of 64 LeNet trials took ~10,000 page faults and 35 ms on 2 CPU cores; with freed
memory kept, ~10 faults and 21 ms (tests/test_memory.py checks the faults). Raising the two
thresholds keeps the freed pages in the heap for the next tensor (what jemalloc or tcmalloc,
which PyTorch's CPU tuning guide recommends, do by themselves). The cost: the process keeps
its peak heap instead of shrinking after it.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters (malloc.h)
_applied: bool | None = None


def keep_freed_memory(limit: int = 1 << 30) -> bool:
    """Make glibc's malloc keep freed blocks of up to ``limit`` bytes for reuse (once per
    process). Returns whether the setting is in force: False off Linux/glibc or when the
    environment variable ``DLG_UTILS_KEEP_MEMORY=0`` turns it off."""
    global _applied
    if _applied is None:
        _applied = False
        if sys.platform.startswith("linux") and os.environ.get("DLG_UTILS_KEEP_MEMORY", "1") != "0":
            try:
                libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
                limit = min(int(limit), 2 ** 31 - 1)  # mallopt takes a C int
                _applied = bool(libc.mallopt(_M_MMAP_THRESHOLD, limit)) and bool(libc.mallopt(_M_TRIM_THRESHOLD, limit))
            except (OSError, AttributeError):  # not glibc (musl has no mallopt)
                _applied = False
    return _applied
