"""retain_freed_memory: a freed large block is reused without faulting in fresh pages; with_huge_pages:
glibc maps it in 2 MB pages."""
import os
import subprocess
import sys

import pytest

PROBE = r"""
import ctypes
from bridgetower_jax import host_memory
applied = host_memory.retain_freed_memory()
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
SIZE = 512 << 20                      # as XLA:CPU's per-step temporaries: one block far above 32 MB

def faults():
    fields = open("/proc/self/stat").read().rsplit(")", 1)[1].split()
    return int(fields[7]) + int(fields[9])

def touch_and_free():
    block = libc.malloc(SIZE)
    ctypes.memset(block, 1, SIZE)
    libc.free(block)

first = faults()
touch_and_free()
before = faults()
touch_and_free()                      # the next step's allocation of the same size
print(int(applied), faults() - before, before - first)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc settings")
def test_second_large_allocation_reuses_mapped_pages():
    def run(retain: str) -> tuple[int, int]:
        env = {**os.environ, "BRIDGETOWER_RETAIN_HOST_MEMORY": retain}
        out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True)
        applied, faults, _ = map(int, out.stdout.split())
        return applied, faults
    applied, retained = run("1")
    skipped, default = run("0")
    assert applied == 1 and skipped == 0
    assert default > 100_000            # 512 MB of 4 kB pages, mapped afresh by glibc's mmap
    assert retained < 1_000             # served from the retained heap


def _transparent_huge_pages() -> str:
    try:
        with open("/sys/kernel/mm/transparent_hugepage/enabled") as f:
            return f.read().split("[", 1)[1].split("]", 1)[0]
    except (OSError, IndexError):
        return "unavailable"


@pytest.mark.skipif(_transparent_huge_pages() not in ("madvise", "always"),
                    reason="the kernel gives no transparent huge pages")
def test_huge_pages_tunable_maps_the_heap_in_2mb_pages():
    from bridgetower_jax import host_memory
    env = {**os.environ, "BRIDGETOWER_RETAIN_HOST_MEMORY": "1",
           "GLIBC_TUNABLES": host_memory.with_huge_pages(os.environ.get("GLIBC_TUNABLES", ""))}
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True)
    _, retained, first_touch = map(int, out.stdout.split())
    assert retained < 1_000
    assert first_touch < 20_000         # 512 MB: ~256 faults of 2 MB (131 k of 4 kB without the tunable)


def test_with_huge_pages_keeps_other_tunables():
    from bridgetower_jax import host_memory
    assert host_memory.with_huge_pages("") == "glibc.malloc.hugetlb=1"
    assert host_memory.with_huge_pages("glibc.malloc.hugetlb=0:glibc.malloc.tcache_count=9") == \
        "glibc.malloc.tcache_count=9:glibc.malloc.hugetlb=1"
