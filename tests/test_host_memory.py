"""The large-block cache (bridgetower_jax/native/large_block_cache.c, preloaded): freed large blocks come
back without fresh page faults; calloc, realloc, aligned requests, threads and fork behave as glibc's;
small requests stay glibc's; a full range falls back to glibc; entry points re-execute themselves with
the library preloaded; XLA:CPU's per-step temporaries are reused."""
import json
import os
import shutil
import subprocess
import sys
import textwrap

import pytest

from bridgetower_jax import host_memory

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux") or shutil.which(os.environ.get("CC", "cc")) is None,
    reason="an LD_PRELOAD malloc interposer: Linux with a C compiler")

MB = 1 << 20

# Helpers every probe starts with: libc through ctypes, the process's page faults, the cache's counters.
PRELUDE = textwrap.dedent(r"""
    import ctypes, json, os, sys
    from bridgetower_jax import host_memory
    libc = ctypes.CDLL(None)               # the global scope: the preloaded interposer comes first
    for name, res, args in (("malloc", ctypes.c_void_p, [ctypes.c_size_t]),
                            ("calloc", ctypes.c_void_p, [ctypes.c_size_t, ctypes.c_size_t]),
                            ("realloc", ctypes.c_void_p, [ctypes.c_void_p, ctypes.c_size_t]),
                            ("free", None, [ctypes.c_void_p]),
                            ("malloc_usable_size", ctypes.c_size_t, [ctypes.c_void_p]),
                            ("posix_memalign", ctypes.c_int,
                             [ctypes.POINTER(ctypes.c_void_p), ctypes.c_size_t, ctypes.c_size_t])):
        fn = getattr(libc, name)
        fn.restype, fn.argtypes = res, args
    MB = 1 << 20

    def faults():
        fields = open("/proc/self/stat").read().rsplit(")", 1)[1].split()
        return int(fields[7]) + int(fields[9])

    def view(p, n):
        return (ctypes.c_ubyte * n).from_address(p)
""")


def run_probe(body: str, cache: bool = True, **env) -> dict:
    """Runs PRELUDE + body in a fresh interpreter (with the cache preloaded or not); body prints JSON."""
    full = {**host_memory.with_large_block_cache(dict(os.environ), on=cache), **env}
    out = subprocess.run([sys.executable, "-c", PRELUDE + textwrap.dedent(body)], env=full,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


REUSE = r"""
    SIZE = 512 * MB                       # as XLA:CPU's per-step temporaries: one block far above 32 MB
    first = libc.malloc(SIZE)
    ctypes.memset(first, 1, SIZE)
    libc.free(first)
    before = faults()
    second = libc.malloc(SIZE)            # the next step's request of the same size
    ctypes.memset(second, 1, SIZE)
    print(json.dumps({"same": first == second, "faults": faults() - before, "stats": host_memory.stats()}))
"""


def test_a_freed_large_block_comes_back_without_page_faults():
    cached = run_probe(REUSE)
    assert cached["same"] and cached["faults"] < 1_000
    assert cached["stats"]["mapped_bytes"] == 512 * MB and cached["stats"]["live_bytes"] == 512 * MB
    plain = run_probe(REUSE, cache=False)
    assert plain["stats"] is None
    assert plain["faults"] > 100_000      # glibc maps it afresh: 131 k pages of 4 kB


MEDIUM = r"""
    def round_trip():                     # as PyTorch's activations or XLA's buffers: many 8 MB blocks at once
        blocks = [libc.malloc(8 * MB) for _ in range(20)]
        for b in blocks:
            ctypes.memset(b, 1, 8 * MB)
        for b in blocks:
            libc.free(b)
    round_trip()
    before = faults()
    round_trip()
    print(json.dumps({"faults": faults() - before, "stats": host_memory.stats()}))
"""


def test_freed_blocks_below_the_threshold_stay_in_glibcs_heap():
    cached = run_probe(MEDIUM)
    assert cached["faults"] < 1_000 and cached["stats"]["mapped_bytes"] == 0   # glibc's, kept
    assert run_probe(MEDIUM, cache=False)["faults"] > 10_000    # trimmed and faulted in again: 40 k pages


def test_calloc_of_a_reused_block_is_zeroed_and_realloc_keeps_contents():
    out = run_probe(r"""
        a = libc.malloc(40 * MB)
        ctypes.memset(a, 0xAB, 40 * MB)
        libc.free(a)
        z = libc.calloc(4, 10 * MB)
        zeroed = z == a and bytes(view(z, 40 * MB)).count(0) == 40 * MB
        ctypes.memset(z, 7, 40 * MB)
        shrunk = libc.realloc(z, 20 * MB)           # still large: the same block
        grown = libc.realloc(shrunk, 100 * MB)      # moves, keeps the first 40 MB
        kept = bytes(view(grown, 40 * MB)).count(7) == 40 * MB
        small = libc.realloc(grown, 4096)           # back to glibc, keeps its first 4 kB
        kept_small = bytes(view(small, 4096)).count(7) == 4096
        libc.free(small)
        print(json.dumps({"zeroed": zeroed, "in_place": shrunk == z, "kept": kept, "kept_small": kept_small,
                          "stats": host_memory.stats()}))
    """)
    assert out["zeroed"] and out["in_place"] and out["kept"] and out["kept_small"]
    assert out["stats"]["live_bytes"] == 0


def test_free_neighbours_coalesce_and_the_best_fit_is_taken():
    out = run_probe(r"""
        a, b, c = libc.malloc(40 * MB), libc.malloc(40 * MB), libc.malloc(20 * MB)
        adjacent = b == a + 40 * MB and c == b + 40 * MB
        libc.free(a); libc.free(b)                  # one free extent of 80 MB below c
        big = libc.malloc(80 * MB)
        libc.free(c)
        fits = libc.malloc(18 * MB)                 # c's 20 MB, above big: nothing new mapped
        print(json.dumps({"adjacent": adjacent, "big_at_a": big == a, "fits_at_c": fits == c,
                          "stats": host_memory.stats()}))
    """)
    assert out["adjacent"] and out["big_at_a"] and out["fits_at_c"]
    assert out["stats"]["mapped_bytes"] == 100 * MB
    assert out["stats"]["free_extents"] == 1 and out["stats"]["live_bytes"] == 98 * MB   # c's last 2 MB unit


def test_aligned_and_small_requests():
    out = run_probe(r"""
        p = ctypes.c_void_p()
        rc = libc.posix_memalign(ctypes.byref(p), 4096, 24 * MB)
        large = host_memory.stats()["live_bytes"]
        small = libc.malloc(1000)
        small_size = libc.malloc_usable_size(small)
        after_small = host_memory.stats()["live_bytes"]
        print(json.dumps({"rc": rc, "aligned": p.value % (2 * MB) == 0, "live": large, "after_small": after_small,
                          "usable": libc.malloc_usable_size(p.value), "small_usable": small_size}))
    """)
    assert out["rc"] == 0 and out["aligned"]
    assert out["live"] == out["after_small"] == 24 * MB and out["usable"] == 24 * MB
    assert 1000 <= out["small_usable"] < 2000    # glibc's own chunk


def test_growing_at_the_top_takes_the_free_extent_there_and_calloc_zeroes_all_of_it():
    out = run_probe(r"""
        a, b = libc.malloc(20 * MB), libc.malloc(20 * MB)
        ctypes.memset(b, 0xAB, 20 * MB)
        libc.free(b)                                # a free extent that ends at the top of the range
        c = libc.calloc(1, 40 * MB)                 # fits nowhere: b's dirty units + 10 fresh ones
        stats = host_memory.stats()                 # (before the check's own 40 MB bytes object)
        zero = bytes(view(c, 40 * MB)).count(0) == 40 * MB
        print(json.dumps({"at_b": c == b, "zero": zero, "stats": stats}))
    """)
    assert out["at_b"] and out["zero"]
    assert out["stats"]["mapped_bytes"] == 60 * MB and out["stats"]["free_extents"] == 0


def test_impossible_sizes_are_refused_and_alignments_above_2mb_go_to_glibc():
    out = run_probe(r"""
        huge = ctypes.c_size_t(-1).value
        p = ctypes.c_void_p()
        libc.aligned_alloc.restype = libc.memalign.restype = ctypes.c_void_p
        libc.aligned_alloc.argtypes = libc.memalign.argtypes = [ctypes.c_size_t, ctypes.c_size_t]
        big = libc.realloc(None, 64 * MB)           # realloc(NULL, n) is malloc(n): from the range
        ctypes.memset(big, 5, 64 * MB)
        refused = [libc.malloc(huge), libc.calloc(1, huge), libc.realloc(big, huge), libc.malloc(huge - MB)]
        rc = libc.posix_memalign(ctypes.byref(p), 64, huge)
        intact = bytes(view(big, 64 * MB)).count(5) == 64 * MB
        live = host_memory.stats()["live_bytes"]
        a2, m4 = libc.aligned_alloc(2 * MB, 32 * MB), libc.memalign(4 * MB, 32 * MB)
        print(json.dumps({"refused": refused, "rc": rc, "intact": intact, "live": live,
                          "a2": a2 % (2 * MB), "m4": m4 % (4 * MB),
                          "live_after": host_memory.stats()["live_bytes"]}))
    """)
    assert out["refused"] == [None] * 4 and out["rc"] != 0 and out["intact"] and out["live"] == 64 * MB
    assert out["a2"] == 0 and out["m4"] == 0
    assert out["live_after"] == 96 * MB       # the 2 MiB-aligned one from the range, the 4 MiB one from glibc


def test_a_full_range_falls_back_to_glibc():
    out = run_probe(r"""
        a = libc.malloc(48 * MB)
        b = libc.malloc(48 * MB)                    # does not fit in the 64 MB range
        ctypes.memset(b, 3, 48 * MB)
        s = host_memory.stats()
        libc.free(b); libc.free(a)
        print(json.dumps({"b": bool(b), "stats": s, "after": host_memory.stats()}))
    """, BRIDGETOWER_LARGE_BLOCK_SPAN_BYTES=str(64 * MB))
    assert out["b"] and out["stats"]["fallbacks"] == 1 and out["stats"]["live_bytes"] == 48 * MB
    assert out["after"]["live_bytes"] == 0


def test_threads_and_fork():
    out = run_probe(r"""
        import random, threading
        errors = []

        def churn(seed):
            rng = random.Random(seed)
            for _ in range(150):
                blocks = []
                for _ in range(3):
                    n = rng.choice([rng.randrange(16 * MB, 64 * MB), rng.randrange(1, 1 << 16)])
                    p = libc.malloc(n)
                    view(p, n)[0] = view(p, n)[n - 1] = seed
                    blocks.append((p, n))
                for p, n in blocks:
                    if view(p, n)[0] != seed or view(p, n)[n - 1] != seed:
                        errors.append((seed, p))
                    libc.free(p)

        threads = [threading.Thread(target=churn, args=(s,)) for s in range(1, 5)]
        [t.start() for t in threads]
        [t.join() for t in threads]
        # Forks while another thread allocates: the child must not inherit the cache's lock held.
        held = libc.malloc(32 * MB)
        stop = threading.Event()

        def busy():
            while not stop.is_set():
                libc.free(libc.malloc(24 * MB))
        spinner = threading.Thread(target=busy)
        spinner.start()
        statuses = []
        for _ in range(100):
            pid = os.fork()
            if pid == 0:                            # the child allocates from its copy of the range
                q = libc.malloc(32 * MB)
                ctypes.memset(q, 1, 32 * MB)
                libc.free(q)
                os._exit(0 if q != held else 1)
            statuses.append(os.waitpid(pid, 0)[1])
        stop.set()
        spinner.join()
        libc.free(held)
        print(json.dumps({"errors": len(errors), "children": statuses, "stats": host_memory.stats()}))
    """)
    assert out["errors"] == 0 and out["children"] == [0] * 100
    assert out["stats"]["live_bytes"] == 0 and out["stats"]["fallbacks"] == 0


def test_entry_points_reexecute_with_the_library_preloaded():
    code = ("import os, sys; from bridgetower_jax import host_memory; applied = host_memory.retain_freed_memory(); "
            "print(applied, host_memory.stats() is not None, sys.argv[1:])")
    base = host_memory.with_large_block_cache(dict(os.environ), on=False)

    def run(flag: str) -> str:
        return subprocess.run([sys.executable, "-c", code, "--some_flag=1"], env={**base, host_memory.ENV: flag},
                              capture_output=True, text=True, check=True, timeout=120).stdout.strip()
    assert run("1") == "True True ['--some_flag=1']"     # re-executed, with the same arguments
    assert run("0") == "False False ['--some_flag=1']"


def test_a_program_from_stdin_is_not_restarted():
    script = "from bridgetower_jax import host_memory; print(host_memory.retain_freed_memory())"
    env = {**host_memory.with_large_block_cache(dict(os.environ), on=False), host_memory.ENV: "1"}
    out = subprocess.run([sys.executable, "-"], input=script, env=env, capture_output=True, text=True,
                         timeout=120, cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert out.stdout.strip() == "False" and "read from stdin" in out.stderr


def test_a_missing_compiler_is_named(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))     # nothing built there yet
    monkeypatch.setenv("CC", "/nonexistent/cc")
    with pytest.raises(RuntimeError, match="/nonexistent/cc"):
        host_memory.library_path()
    assert list(tmp_path.rglob("*")) == [tmp_path / "bridgetower_jax"]   # no partial file left behind
    # An entry point goes on without the cache, saying why.
    env = {**host_memory.with_large_block_cache(dict(os.environ), on=False), host_memory.ENV: "1"}
    out = subprocess.run([sys.executable, "-c", "from bridgetower_jax import host_memory; "
                          "print(host_memory.retain_freed_memory())"], env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.stdout.strip() == "False" and "/nonexistent/cc" in out.stderr


def test_xla_step_temporaries_are_reused():
    """A jitted step with a 64 MB temporary: the third call faults in (almost) nothing with the cache."""
    body = r"""
        import jax, jax.numpy as jnp
        f = jax.jit(lambda x: (jnp.tanh(x @ x.T) @ x).sum())   # a [4096, 4096] f32 temporary
        x = jnp.ones((4096, 256), jnp.float32) / 256
        f(x).block_until_ready(); f(x).block_until_ready()
        before = faults()
        value = float(f(x))
        print(json.dumps({"faults": faults() - before, "value": value, "stats": host_memory.stats()}))
    """
    cached, plain = run_probe(body, JAX_PLATFORMS="cpu"), run_probe(body, cache=False, JAX_PLATFORMS="cpu")
    assert cached["value"] == plain["value"]
    assert plain["faults"] > 10_000                 # 64 MB of 4 kB pages, mapped afresh every call
    assert cached["faults"] < 2_000
    assert cached["stats"]["mapped_bytes"] >= 64 * MB


def _transparent_huge_pages() -> str:
    try:
        with open("/sys/kernel/mm/transparent_hugepage/enabled") as f:
            return f.read().split("[", 1)[1].split("]", 1)[0]
    except (OSError, IndexError):
        return "unavailable"


@pytest.mark.skipif(_transparent_huge_pages() not in ("madvise", "always"),
                    reason="the kernel gives no transparent huge pages")
def test_huge_pages_map_the_range_in_2mb_pages():
    out = run_probe(r"""
        before = faults()
        block = libc.malloc(512 * MB)
        ctypes.memset(block, 1, 512 * MB)
        print(json.dumps({"faults": faults() - before}))
    """, **{host_memory.HUGE_PAGES_ENV: "1"})
    assert out["faults"] < 20_000     # ~256 faults of 2 MB (131 k of 4 kB without)


def test_with_huge_pages_keeps_other_tunables():
    assert host_memory.with_huge_pages("") == "glibc.malloc.hugetlb=1"
    assert host_memory.with_huge_pages("glibc.malloc.hugetlb=0:glibc.malloc.tcache_count=9") == \
        "glibc.malloc.tcache_count=9:glibc.malloc.hugetlb=1"
