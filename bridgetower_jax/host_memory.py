"""Opt-in: keep freed large host blocks mapped for reuse, so that XLA:CPU's per-step temporaries are
not faulted in afresh. Set BRIDGETOWER_RETAIN_HOST_MEMORY=1 for models trained or benchmarked on CPU.

XLA:CPU allocates each step's temporaries with malloc (one block: 72 MB for the tiny benchmark model,
2.4 GB for BridgeTower-base at batch 2) and frees them when the step ends. glibc serves every block
above 32 MB with its own mmap and unmaps it on free, so each step faults in its temporaries page by
page, zero-filled by the kernel: 18 k faults in a 70 ms tiny step, 1.2 M in a base step
(`bench/profile_step.py` prints faults per step). glibc's own settings cannot keep such blocks without
putting every thread on one arena (a thread's arena maps anything above 64 MB), which serialises all
small allocations.

`native/large_block_cache.c` is a malloc interposer that takes only the large requests (16 MiB and
up): they come from one reserved address range in 2 MiB units, and a freed block stays mapped on a
free list for the next request. Everything else goes to glibc, which it tells to keep what it frees
too (a fixed 16 MiB mmap threshold, no trimming). It is built with the system C compiler on first
use (`library_path`, cached per source version) and loaded with LD_PRELOAD, which the dynamic loader
reads only at start-up: entry points call `retain_freed_memory()` first thing, which re-executes the
process with LD_PRELOAD set when the variable asks for it and the library is not loaded yet. The
cost: the process keeps the peak of its freed memory mapped (it never returns it to the OS).

Huge pages (the environment): BRIDGETOWER_LARGE_BLOCK_HUGE_PAGES=1 asks for transparent huge pages
(kernel THP mode "madvise") on the cache's range, and `GLIBC_TUNABLES=glibc.malloc.hugetlb=1` on what
glibc maps (`with_huge_pages` adds it to a child's tunables); both are read at start-up. Retained
blocks are then mapped once in 2 MB pages (`bench/vs_pytorch.py --huge_pages` sets both).
"""
from __future__ import annotations

import ctypes
import os
import sys

from bridgetower_jax import native

ENV = "BRIDGETOWER_RETAIN_HOST_MEMORY"
HUGE_PAGES_ENV = "BRIDGETOWER_LARGE_BLOCK_HUGE_PAGES"
SOURCE = native.SOURCE_DIR / "large_block_cache.c"
_STATS_SYMBOL = "bridgetower_large_block_stats"
# Set on the re-executed process: if the loader still did not load the library, say so once and go on.
_REEXECUTED = "BRIDGETOWER_LARGE_BLOCK_CACHE_REEXECUTED"


def library_path() -> str:
    """The built interposer (compiled from SOURCE with $CC, default cc, the first time it is asked for)."""
    out = native.cache_dir()
    if any(c in str(out) for c in " :"):     # LD_PRELOAD separates paths with both
        raise RuntimeError(f"the large-block cache's directory {out} has a space or colon, which LD_PRELOAD "
                           "cannot carry; set XDG_CACHE_HOME to a plain directory")
    return native.build_library(SOURCE, compiler_env="CC", default_compiler="cc", flags=["-O2"],
                                libs=("-lpthread", "-ldl"), purpose=f"{ENV}=1",
                                hint=f"install gcc, set CC, or unset {ENV}")


def with_large_block_cache(env: dict, on: bool = True) -> dict:
    """A copy of `env` (a child's environment) that preloads the interposer (on) or does not (off)."""
    preload = [p for p in env.get("LD_PRELOAD", "").replace(":", " ").split()
               if not os.path.basename(p).startswith("large_block_cache-")]
    if on:
        preload.insert(0, library_path())
    return {**env, ENV: "1" if on else "0", "LD_PRELOAD": " ".join(preload)}


def stats() -> dict | None:
    """The interposer's counters in this process, or None when it is not loaded."""
    try:
        read = getattr(ctypes.CDLL(None), _STATS_SYMBOL)
    except (AttributeError, OSError):
        return None
    out = (ctypes.c_size_t * 4)()
    read(out)
    return {"mapped_bytes": out[0], "live_bytes": out[1], "free_extents": out[2], "fallbacks": out[3]}


def retain_freed_memory() -> bool:
    """If BRIDGETOWER_RETAIN_HOST_MEMORY=1, make sure the interposer is loaded, re-executing this process
    with LD_PRELOAD set if it is not (call it before anything else). True if it is loaded."""
    if os.environ.get(ENV, "0") != "1":
        return False
    if stats() is not None:
        return True
    why = None
    if not sys.platform.startswith("linux"):
        why = f"it needs Linux (platform {sys.platform})"
    elif os.environ.get(_REEXECUTED) == "1":
        why = f"the dynamic loader did not load it (LD_PRELOAD={os.environ.get('LD_PRELOAD', '')!r})"
    elif sys.argv[0] in ("", "-"):
        why = "a program read from stdin or typed in cannot be restarted"
    else:
        try:
            env = {**with_large_block_cache(dict(os.environ)), _REEXECUTED: "1"}
        except RuntimeError as e:     # no compiler: the run itself can go on, only slower
            why = str(e)
    if why:
        print(f"warning: {ENV}=1 but the large-block cache is not loaded: {why}; freed host memory is not "
              "kept", file=sys.stderr, flush=True)
        return False
    print(f"{ENV}=1: restarting with the large-block cache preloaded ({env['LD_PRELOAD'].split()[0]})",
          file=sys.stderr, flush=True)
    sys.stdout.flush()
    os.execve(sys.executable, sys.orig_argv, env)


HUGE_PAGES_TUNABLE = "glibc.malloc.hugetlb=1"


def with_huge_pages(tunables: str) -> str:
    """`tunables` (a GLIBC_TUNABLES value, colon-separated) with malloc's transparent huge pages on."""
    kept = [t for t in tunables.split(":") if t and not t.startswith("glibc.malloc.hugetlb=")]
    return ":".join(kept + [HUGE_PAGES_TUNABLE])
