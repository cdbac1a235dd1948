"""Resume from the newest *complete* checkpoint of a workdir, or say exactly why one does not fit.

What "complete" means, layer by layer:
- Orbax writes a step into `<step>.orbax-checkpoint-tmp-<time>/` and renames it to `<step>/` only
  after every item has been written (on gs:// it writes `commit_success.txt` last instead), and
  it lists only committed steps. A write interrupted at any point (SIGKILL, a lost VM) is
  therefore never listed; `TrainCheckpointer` removes such leftovers when it opens the directory.
- A committed step can still be damaged later (files deleted, a partial copy between buckets).
  Steps are tried newest first; one whose metadata or arrays cannot be read is skipped with a
  logged message, and once an older step has been restored the damaged newer ones are moved
  aside to `<step>.incomplete-<time>/` (kept for inspection; Orbax would otherwise refuse to
  save those step numbers again). If no step can be restored, nothing is moved and the errors
  are raised: a systematic failure must not silently restart a run from scratch.
- A readable checkpoint of a *different architecture* (another config.model, task or heads) is
  a user error, not damage: `ArchitectureMismatch` names the config keys and the parameters
  that differ, before any array is read.
"""
from __future__ import annotations

import logging
import time
from typing import Any, Callable

import jax
import numpy as np

log = logging.getLogger("bridgetower_jax")

_SHOWN = 8   # differences listed per kind in an ArchitectureMismatch message


class ArchitectureMismatch(ValueError):
    """The workdir's checkpoint holds a model whose parameters differ from the configured one."""
    exit_code = 2   # a usage error, like a bad flag


class NoRestorableCheckpoint(RuntimeError):
    """Every committed step failed to restore; nothing was moved."""


# ---------------------------------------------------------------------------------------------
# Architecture comparison
# ---------------------------------------------------------------------------------------------
def _key_name(key) -> str:
    for attr in ("key", "name", "idx"):
        if hasattr(key, attr):
            return str(getattr(key, attr))
    return str(key)


def leaf_shapes(tree) -> dict[str, tuple]:
    """{'params/text/...': shape} for a tree of arrays, ShapeDtypeStructs or Orbax ArrayMetadata."""
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {"/".join(_key_name(k) for k in path): tuple(leaf.shape) for path, leaf in leaves
            if hasattr(leaf, "shape")}


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(d, dict):
        out = {}
        for k, v in d.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: d}


ARCHITECTURE_KEYS = ("task", "model", "heads", "objectives.itc")


def config_differences(stored: dict, current: dict) -> list[str]:
    """'config.<key>: checkpoint X, config Y' for the keys that decide the parameters."""
    old, new = _flatten(stored), _flatten(current)
    keys = sorted(k for k in set(old) | set(new)
                  if any(k == a or k.startswith(a + ".") for a in ARCHITECTURE_KEYS))
    return [f"config.{k}: checkpoint {old.get(k, '(absent)')!r}, config {new.get(k, '(absent)')!r}"
            for k in keys if old.get(k) != new.get(k)]


def parameter_differences(stored: dict[str, tuple], target: dict[str, tuple]) -> list[str]:
    missing = sorted(set(target) - set(stored))
    unexpected = sorted(set(stored) - set(target))
    reshaped = sorted(k for k in set(stored) & set(target) if stored[k] != target[k])
    lines = []
    for title, names, show in (("missing from the checkpoint", missing, lambda k: k),
                               ("only in the checkpoint", unexpected, lambda k: k),
                               ("shape differs", reshaped,
                                lambda k: f"{k}: checkpoint {stored[k]}, model {target[k]}")):
        # Parameters first: the optimizer state repeats them.
        names = sorted(names, key=lambda k: (not k.startswith("params/"), k))
        if names:
            more = f" (+{len(names) - _SHOWN} more)" if len(names) > _SHOWN else ""
            lines.append(f"{title} ({len(names)}): " + ", ".join(show(k) for k in names[:_SHOWN]) + more)
    return lines


def check_architecture(step_dir, stored_config: dict, stored_shapes: dict, target, config: dict) -> None:
    differences = parameter_differences(stored_shapes, leaf_shapes(target))
    if differences:
        raise ArchitectureMismatch(
            f"the checkpoint {step_dir} was written for another architecture than this config:\n  "
            + "\n  ".join(config_differences(stored_config, config) + differences)
            + "\nUse a new --workdir for this model, or config.init_from to start from other weights.")


# ---------------------------------------------------------------------------------------------
# Restore
# ---------------------------------------------------------------------------------------------
def all_processes_agree(ok: bool) -> bool:
    """`ok` held on every process (the same answer everywhere; one collective when there are several)."""
    if jax.process_count() == 1:
        return ok
    from jax.experimental import multihost_utils
    return bool(np.all(multihost_utils.process_allgather(np.asarray([ok], np.int32))))


def _move_aside(ckpt, steps: list[int], report: Callable[[str], None]) -> None:
    """Rename damaged committed steps to <step>.incomplete-<time> (process 0), then re-list."""
    if jax.process_index() == 0:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        for step in steps:
            source = ckpt.directory / str(step)
            target = ckpt.directory / f"{step}.incomplete-{stamp}"
            source.rename(target)
            report(f"moved the unreadable checkpoint {source} to {target}")
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils
        multihost_utils.sync_global_devices("bridgetower_jax:checkpoints_moved_aside")
    ckpt.manager.reload()


def restore_newest_complete(ckpt, target, data_iter, config: dict,
                            report: Callable[[str], None] = log.warning):
    """-> (step, state) from the newest restorable checkpoint, or (None, None) if there is none.

    `data_iter` is restored in place. Raises ArchitectureMismatch or NoRestorableCheckpoint."""
    for leftover in ckpt.interrupted_writes:
        report(f"ignoring the interrupted checkpoint write {leftover} (never committed; removed)")
    steps = sorted(ckpt.all_steps(), reverse=True)
    damaged, errors = [], []
    for step in steps:
        step_dir = ckpt.directory / str(step)
        try:
            stored_config, stored_shapes = ckpt.restore_config(step), leaf_shapes(ckpt.state_metadata(step))
        except Exception as e:  # noqa: BLE001  (any unreadable metadata = a damaged step)
            stored_config, error = None, e
        if stored_config is not None:
            check_architecture(step_dir, stored_config, stored_shapes, target, config)
            try:
                state, error = ckpt.restore(step, target, data_iter), None
            except Exception as e:  # noqa: BLE001  (any unreadable array = a damaged step)
                error = e
        ok = all_processes_agree(error is None)
        if ok:
            if damaged:
                _move_aside(ckpt, damaged, report)
            if stored_config.get("total_steps") != config.get("total_steps"):
                # E.g. a run given in epochs, resumed with another batch size or other data.
                report(f"config.total_steps={config.get('total_steps')} but the checkpoint's run had "
                       f"{stored_config.get('total_steps')}: the learning-rate schedule and the end of the run "
                       "follow the new value")
            return step, state
        report(f"skipping checkpoint {step_dir}: it cannot be restored ({type(error).__name__}: "
               f"{str(error)[:300]}); trying an older one")
        damaged.append(step)
        errors.append(f"{step_dir}: {type(error).__name__}: {error}")
    if errors:
        raise NoRestorableCheckpoint(
            f"no checkpoint in {ckpt.directory} could be restored (nothing was moved or deleted):\n  "
            + "\n  ".join(errors))
    return None, None
