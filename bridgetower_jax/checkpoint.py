"""Checkpoint I/O (Orbax).

A *params directory* is what the converters write and `init_from` reads:
`DIR/config.json` (the model config, plus which heads the tree holds) and `DIR/params/`
(an Orbax PyTree checkpoint, restorable onto any mesh).
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath

from bridgetower_jax import paths
from bridgetower_jax.models.config import BridgeTowerConfig

CONFIG_FILE = "config.json"


def _absolute(path) -> epath.Path:
    """Local paths made absolute (Orbax requires it); gs:// and other URIs kept as they are."""
    p = epath.Path(path)
    return p if "://" in str(path) else epath.Path(os.path.abspath(str(path)))
PARAMS_DIR = "params"


def save_params(directory: str | Path, config: BridgeTowerConfig, params: dict, heads: tuple[str, ...]) -> Path:
    """Write a params directory; the config is written last so a half-written directory never loads."""
    directory = _absolute(directory)
    directory.mkdir(parents=True, exist_ok=True)
    if (directory / PARAMS_DIR).exists():
        raise FileExistsError(f"{directory / PARAMS_DIR} already exists; choose an empty output directory")
    with ocp.StandardCheckpointer() as ckptr:
        ckptr.save(directory / PARAMS_DIR, params)
        ckptr.wait_until_finished()
    meta = {"model": config.to_dict(), "heads": list(heads)}
    paths.write_text(str(directory / CONFIG_FILE), json.dumps(meta, indent=2))
    return directory


def load_params(directory: str | Path, target: dict | None = None) -> tuple[BridgeTowerConfig, dict, tuple[str, ...]]:
    """Read a params directory -> (config, params, heads). `target` (a tree of ShapeDtypeStructs with
    shardings) restores straight onto a mesh; without it arrays come back on the host."""
    directory = _absolute(directory)
    config_file = directory / CONFIG_FILE
    if not config_file.exists() or not (directory / PARAMS_DIR).exists():
        raise FileNotFoundError(f"{directory} is not a params directory (needs {CONFIG_FILE} and {PARAMS_DIR}/)")
    meta = json.loads(config_file.read_text())
    config = BridgeTowerConfig.from_dict(meta["model"])
    with ocp.StandardCheckpointer() as ckptr:
        params = ckptr.restore(directory / PARAMS_DIR, target) if target is not None else \
            ckptr.restore(directory / PARAMS_DIR)
    if target is None:
        params = jax.tree.map(np.asarray, params)
    return config, params, tuple(meta.get("heads", ()))


# ---------------------------------------------------------------------------------------------
# Training checkpoints: WORKDIR/checkpoints/<step>/{state, data_iter, config}
# ---------------------------------------------------------------------------------------------
class TrainCheckpointer:
    """Orbax CheckpointManager holding the train state, the Grain iterator state and the config.

    Saves are asynchronous; a step directory only counts once Orbax has committed it, so an
    interrupted write is never restored (the newest *complete* step is). With `best_metric` (an
    evaluation metric, higher is better) the step that scored best is kept besides the newest
    `max_to_keep`: saves carry the evaluation's metrics (empty where none ran), and `best_step`
    finds it, also after a restart.
    """

    def __init__(self, workdir: str | Path, max_to_keep: int = 3, asynchronous: bool = True, best_metric: str = "",
                 read_only: bool = False):
        import grain  # noqa: F401  (registers Grain's checkpoint handler with Orbax)
        self.directory = _absolute(workdir) / "checkpoints"
        # Writes that never committed (the process died mid-save); Orbax never lists them and
        # cleanup_tmp_directories removes them. Kept here so the trainer can say so.
        self.interrupted_writes = sorted(str(p) for p in self.directory.glob("*.orbax-checkpoint-tmp*")) \
            if self.directory.exists() else []
        self.best_metric = best_metric
        keep = dict(max_to_keep=max_to_keep)
        if best_metric:
            from orbax.checkpoint.checkpoint_managers import preservation_policy as policies
            keep = dict(best_fn=self._score, best_mode="max", preservation_policy=policies.AnyPreservationPolicy([
                policies.LatestN(max_to_keep),
                policies.BestN(get_metric_fn=self._score, n=1, keep_checkpoints_without_metrics=False)]))
        # read_only (evaluation): nothing is created or cleaned up (the caller never saves), so a run that
        # is still training in the same workdir keeps its checkpoint in flight.
        options = ocp.CheckpointManagerOptions(create=not read_only, enable_async_checkpointing=asynchronous,
                                               cleanup_tmp_directories=not read_only, **keep)
        self.read_only = read_only
        self.manager = ocp.CheckpointManager(self.directory, options=options)

    def _score(self, metrics) -> float:
        value = (metrics or {}).get(self.best_metric)
        return -np.inf if value is None else float(value)

    def best_step(self) -> int | None:
        """The kept step whose evaluation scored highest on `best_metric` (the later one on a tie); None
        if no kept step was evaluated."""
        if not self.best_metric:
            raise ValueError("best_step needs the checkpointer's best_metric (config.eval.keep_best)")
        step = self.manager.best_step()
        return step if step is not None and np.isfinite(self._score(self.manager.metrics(step))) else None

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def all_steps(self) -> list[int]:
        return list(self.manager.all_steps())

    def save(self, step: int, state, data_iter, config: dict, force: bool = False, metrics: dict | None = None) -> bool:
        """Start an asynchronous save of `step`; refuses (NonFiniteHalt) a state holding NaN or inf.
        `metrics`: the evaluation at this step, if one ran (kept with it for `best_step`)."""
        if self.read_only:
            raise ValueError(f"{self.directory} was opened read-only (for evaluation)")
        import grain
        from bridgetower_jax import faults, nonfinite
        nonfinite.assert_finite(state, f"the checkpoint of step {step}")
        args = {"state": ocp.args.StandardSave(state), "config": ocp.args.JsonSave(config)}
        if data_iter is not None:
            args["data_iter"] = grain.checkpoint.CheckpointSave(data_iter)
        saved = self.manager.save(step, args=ocp.args.Composite(**args), force=force,
                                  metrics=(metrics or {}) if self.best_metric else None)
        faults.in_save(step, self.directory)
        return saved

    def restore(self, step: int, state_target, data_iter=None):
        """Restore the state onto `state_target`'s shardings (any mesh); `data_iter` is restored in place."""
        import grain
        args = {"state": ocp.args.StandardRestore(state_target)}
        if data_iter is not None:
            args["data_iter"] = grain.checkpoint.CheckpointRestore(data_iter)
        return self.manager.restore(step, args=ocp.args.Composite(**args)).state

    def restore_config(self, step: int) -> dict:
        return self.manager.restore(step, args=ocp.args.Composite(config=ocp.args.JsonRestore())).config

    def state_metadata(self, step: int):
        """The saved state's tree of array metadata (shapes, dtypes), read without reading arrays."""
        with ocp.StandardCheckpointer() as reader:
            metadata = reader.metadata(self.directory / str(step) / "state").item_metadata
        if metadata is None:   # Orbax logs the reason and returns None
            raise FileNotFoundError(f"{self.directory / str(step) / 'state'} has no readable array metadata")
        return metadata

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.close()
