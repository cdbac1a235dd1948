"""Keep freed host memory in the process, so that XLA:CPU's per-step buffers are not faulted in afresh.

XLA:CPU allocates each step's temporaries (several GB for BridgeTower-base) with malloc and frees them
at the end of the step. glibc serves every allocation above 32 MB with its own mmap and unmaps it on
free, so each step touches ~4.6 GB of brand-new pages: 1.2 M page faults, ~0.8 s of a 9.2 s base
train step on a 2-core CPU (`bench/profile_step.py` prints faults per step). With mmap off, trimming
off and one arena (threads' own arenas cannot grow past 64 MB and would fall back to mmap), freed
blocks go back to the heap and the next step reuses them already mapped: 0 faults, 8.4 s.

The cost is that the process never returns freed memory to the OS, which suits a training or
benchmark process. Entry points call `retain_freed_memory()` first thing, before any thread starts
(a thread attaches to an arena at its first allocation); set BRIDGETOWER_RETAIN_HOST_MEMORY=0 to skip.
"""
from __future__ import annotations

import ctypes
import os

# mallopt(3) parameters.
_M_TRIM_THRESHOLD, _M_MMAP_MAX, _M_ARENA_MAX = -1, -4, -8


def retain_freed_memory() -> bool:
    """Ask glibc to keep freed memory for reuse. True if applied (glibc present and not disabled)."""
    if os.environ.get("BRIDGETOWER_RETAIN_HOST_MEMORY", "1") == "0":
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:     # not glibc (macOS, musl): nothing to do
        return False
    # mallopt returns 1 on success. A trim threshold of -1 reads as the largest size_t: never trim.
    return all(libc.mallopt(param, value) == 1
               for param, value in ((_M_ARENA_MAX, 1), (_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, -1)))
