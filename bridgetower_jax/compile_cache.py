"""JAX's persistent compilation cache for the trainer and the evaluator.

Compiled programs are kept on disk, keyed by the program, the JAX version, the XLA flags and the
devices, so a resumed, restarted or repeated run loads its train and eval steps instead of compiling
them again (BridgeTower-base's train step: 70-90 s of compilation on CPU, ~3 min on an H200).

`compilation_cache_dir` in every experiment config:
  "auto" (default)   $JAX_COMPILATION_CACHE_DIR if set, else a directory per host CPU type under the
                     project's cache root (~/.cache/bridgetower_jax/jax_compilation/<cpu>/, or under
                     $XDG_CACHE_HOME): XLA:CPU programs are built for the CPU that compiled them
  ""                 off (JAX compiles every program in every run)
  a path or gs://... that directory (created if missing; gs:// needs `gcsfs`, as gs:// workdirs do)

The project's own directory keeps at most MAX_BYTES, evicting the least recently used programs
($JAX_COMPILATION_CACHE_MAX_SIZE overrides); any other directory has JAX's default, no limit.

JAX writes entries from process 0 only, and each process reads its own `compilation_cache_dir`: on a
multi-host run a location every host sees (a bucket, a shared file system) lets all of them load what
process 0 wrote; with a host-local directory only process 0 skips compilation. Programs compiled in
under a second are not kept. The cache is trusted code: never point it at a directory others can
write to.
"""
from __future__ import annotations

import hashlib
import os
import platform

import jax
from jax.experimental.compilation_cache import compilation_cache

from bridgetower_jax import native, paths

AUTO = "auto"
MAX_BYTES = 4 << 30

# What this process loaded and wrote, counted from JAX's monitoring events; `summary` reports the
# difference from the snapshot `enable` takes (a process may run several experiments, as the demo does).
_counts = {"loaded": 0, "written": 0, "saved_s": 0.0}
_since = dict(_counts)
_listening = False


def default_directory() -> str:
    """The project's own cache for this host's CPU type (what "auto" means without the environment)."""
    cpu = hashlib.sha256(native.cpu_identity().encode()).hexdigest()[:12]
    return str(native.cache_dir() / "jax_compilation" / f"{platform.machine()}-{cpu}")


def resolve(setting: str) -> str | None:
    """The directory `compilation_cache_dir = setting` stands for, or None for off."""
    if setting == AUTO:
        setting = os.environ.get("JAX_COMPILATION_CACHE_DIR") or default_directory()
    if not setting:
        return None
    return setting if "://" in setting else os.path.abspath(os.path.expanduser(setting))


def _on_event(event: str, **_) -> None:
    if event == "/jax/compilation_cache/cache_hits":
        _counts["loaded"] += 1
    elif event == "/jax/compilation_cache/cache_misses":     # JAX's name for "about to write an entry"
        _counts["written"] += 1


def _on_duration(event: str, seconds: float, **_) -> None:
    if event == "/jax/compilation_cache/compile_time_saved_sec":
        _counts["saved_s"] += seconds


def enable(setting: str) -> str | None:
    """Use the cache `setting` names (see the module docstring) from the next compilation on; returns
    its directory, or None when off. Call before the first jitted step."""
    global _listening, _since
    directory = resolve(setting)
    if directory is not None:
        # Now: JAX would only warn once and run uncached if it could not (e.g. gs:// without gcsfs).
        paths.make_directory(directory, "config.compilation_cache_dir",
                             fix='fix the path, or set it to "" to compile without a cache')
    if not _listening:
        jax.monitoring.register_event_listener(_on_event)
        jax.monitoring.register_event_duration_secs_listener(_on_duration)
        _listening = True
    if "JAX_COMPILATION_CACHE_MAX_SIZE" not in os.environ:
        # JAX's LRU eviction keeps a last-use file next to every entry and fails to write into a
        # directory holding entries without one, so the cap is only set where every writer sets it: the
        # project's own directory, which only this module's callers use. Elsewhere JAX's default: no cap.
        capped = directory == default_directory()
        jax.config.update("jax_compilation_cache_max_size", MAX_BYTES if capped else -1)
    if directory != jax.config.jax_compilation_cache_dir:
        compilation_cache.reset_cache()     # JAX opens its cache once per process; reopen it at the new place
        jax.config.update("jax_compilation_cache_dir", directory)
    _since = dict(_counts)
    return directory


def summary() -> str:
    """'compilation cache DIR: N programs loaded (S s of compilation saved), M written' since `enable`."""
    directory = jax.config.jax_compilation_cache_dir
    if not directory:
        return "compilation cache off"
    loaded, written = _counts["loaded"] - _since["loaded"], _counts["written"] - _since["written"]
    # JAX counts whole seconds of compile time against the load time, so this is approximate.
    saved = max(_counts["saved_s"] - _since["saved_s"], 0.0)
    return (f"compilation cache {directory}: {loaded} program(s) loaded ({saved:.0f} s of compilation saved), "
            f"{written} written")
