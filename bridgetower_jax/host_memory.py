"""Opt-in: keep freed host memory in the process, so that XLA:CPU's per-step buffers are not faulted
in afresh. Set BRIDGETOWER_RETAIN_HOST_MEMORY=1 for large models trained or benchmarked on CPU.

XLA:CPU allocates each step's temporaries (several GB for BridgeTower-base) with malloc and frees them
at the end of the step. glibc serves every allocation above 32 MB with its own mmap and unmaps it on
free, so each step touches ~4.6 GB of brand-new pages: 1.2 M page faults, ~0.8 s of a 9.2 s base
train step on a 2-core CPU (`bench/profile_step.py` prints faults per step). With mmap off, trimming
off and one arena (a thread's own arena cannot grow past 64 MB and maps such blocks anyway), freed
blocks go back to the heap and the next step reuses them already mapped: 0 faults, 8.4 s.

Why not by default: one arena serialises every thread's malloc. The tiny benchmark model's step,
made of many small ops, slows from 0.08 s to 0.10 s; a host input pipeline decoding images on
threads would contend the same way; and the process never returns freed memory to the OS.
Entry points call `retain_freed_memory()` first thing, before any thread starts (a thread attaches
to an arena at its first allocation).

Huge pages (the environment, not this module): with `GLIBC_TUNABLES=glibc.malloc.hugetlb=1` set
before the process starts, glibc asks for transparent huge pages on the memory it maps (kernel THP mode
"madvise"). Together with retention the heap is mapped once in 2 MB pages: fewer TLB misses in every
GEMM and elementwise pass. `with_huge_pages` adds the setting to a child's GLIBC_TUNABLES
(`bench/vs_pytorch.py --huge_pages`); glibc reads it only at start-up, so a trainer takes it from the
shell. Without retention it is no help: every step's fresh temporaries then fault in 2 MB at a time,
and each such fault may first compact memory.
"""
from __future__ import annotations

import ctypes
import os

ENV = "BRIDGETOWER_RETAIN_HOST_MEMORY"
# mallopt(3) parameters.
_M_TRIM_THRESHOLD, _M_MMAP_MAX, _M_ARENA_MAX = -1, -4, -8


def retain_freed_memory() -> bool:
    """If BRIDGETOWER_RETAIN_HOST_MEMORY=1, ask glibc to keep freed memory for reuse. True if applied."""
    if os.environ.get(ENV, "0") != "1":
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:     # not glibc (macOS, musl): nothing to do
        return False
    # mallopt returns 1 on success. A trim threshold of -1 reads as the largest size_t: never trim.
    return all(libc.mallopt(param, value) == 1
               for param, value in ((_M_ARENA_MAX, 1), (_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, -1)))


HUGE_PAGES_TUNABLE = "glibc.malloc.hugetlb=1"


def with_huge_pages(tunables: str) -> str:
    """`tunables` (a GLIBC_TUNABLES value, colon-separated) with malloc's transparent huge pages on."""
    kept = [t for t in tunables.split(":") if t and not t.startswith("glibc.malloc.hugetlb=")]
    return ":".join(kept + [HUGE_PAGES_TUNABLE])
