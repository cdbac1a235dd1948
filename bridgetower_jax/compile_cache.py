"""JAX's persistent compilation cache for the trainer and the evaluator.

Compiled programs are kept on disk, keyed by the program, the JAX version, the XLA flags and the
devices, so a resumed, restarted or repeated run loads its train and eval steps instead of compiling
them again (BridgeTower-base's train step: 70-90 s of compilation on CPU, ~3 min on an H200).

`compilation_cache_dir` in every experiment config:
  "auto" (default)   $JAX_COMPILATION_CACHE_DIR if set, else `jax_compilation/` under the project's cache
                     root (~/.cache/bridgetower_jax, or $XDG_CACHE_HOME/bridgetower_jax)
  ""                 off (JAX compiles every program in every run)
  a path or gs://... that directory (created if missing)

JAX writes entries from process 0 only, and each process reads its own `compilation_cache_dir`: on
a multi-host run a location every host sees (a bucket, a shared file system) lets all of them load
what process 0 wrote; with a host-local directory only process 0 skips compilation. Programs
compiled in under a second are not kept. The cache is trusted code: never point it at a directory
others can write to.
"""
from __future__ import annotations

import os

import jax
from jax.experimental.compilation_cache import compilation_cache

from bridgetower_jax import native

AUTO = "auto"

# What this process loaded and wrote, counted from JAX's monitoring events.
_counts = {"loaded": 0, "written": 0, "saved_s": 0.0}
_listening = False


def resolve(setting: str) -> str | None:
    """The directory `compilation_cache_dir = setting` stands for, or None for off."""
    if setting == AUTO:
        return os.environ.get("JAX_COMPILATION_CACHE_DIR") or str(native.cache_dir() / "jax_compilation")
    if not setting:
        return None
    return setting if "://" in setting else os.path.abspath(os.path.expanduser(setting))


def _on_event(event: str, **_) -> None:
    if event == "/jax/compilation_cache/cache_hits":
        _counts["loaded"] += 1
    elif event == "/jax/compilation_cache/cache_misses":     # JAX's name for "written to the cache"
        _counts["written"] += 1


def _on_duration(event: str, seconds: float, **_) -> None:
    if event == "/jax/compilation_cache/compile_time_saved_sec":
        _counts["saved_s"] += seconds


def enable(setting: str) -> str | None:
    """Use the cache `setting` names (see the module docstring) from the next compilation on; returns
    its directory, or None when off. Call before the first jitted step."""
    global _listening
    directory = resolve(setting)
    if not _listening:
        jax.monitoring.register_event_listener(_on_event)
        jax.monitoring.register_event_duration_secs_listener(_on_duration)
        _listening = True
    if directory != jax.config.jax_compilation_cache_dir:
        compilation_cache.reset_cache()     # JAX opens its cache once per process; reopen it at the new place
        jax.config.update("jax_compilation_cache_dir", directory)
    return directory


def summary() -> str:
    """'compilation cache DIR: N programs loaded (S s of compilation saved), M written' for this process."""
    directory = jax.config.jax_compilation_cache_dir
    if not directory:
        return "compilation cache off"
    c = _counts
    saved = max(c["saved_s"], 0.0)     # JAX counts load time against whole seconds of compile time
    return (f"compilation cache {directory}: {c['loaded']} program(s) loaded ({saved:.0f} s of compilation saved), "
            f"{c['written']} written")
