"""Checkpoint I/O (Orbax).

A *params directory* is what the converters write and `init_from` reads:
`DIR/config.json` (the model config, plus which heads the tree holds) and `DIR/params/`
(an Orbax PyTree checkpoint, restorable onto any mesh).
"""
from __future__ import annotations

import json
from pathlib import Path

import jax
import numpy as np
import orbax.checkpoint as ocp

from bridgetower_jax.models.config import BridgeTowerConfig

CONFIG_FILE = "config.json"
PARAMS_DIR = "params"


def save_params(directory: str | Path, config: BridgeTowerConfig, params: dict, heads: tuple[str, ...]) -> Path:
    """Write a params directory; the config is written last so a half-written directory never loads."""
    directory = Path(directory).absolute()
    directory.mkdir(parents=True, exist_ok=True)
    if (directory / PARAMS_DIR).exists():
        raise FileExistsError(f"{directory / PARAMS_DIR} already exists; choose an empty output directory")
    with ocp.StandardCheckpointer() as ckptr:
        ckptr.save(directory / PARAMS_DIR, params)
        ckptr.wait_until_finished()
    meta = {"model": config.to_dict(), "heads": list(heads)}
    tmp = directory / (CONFIG_FILE + ".tmp")
    tmp.write_text(json.dumps(meta, indent=2))
    tmp.replace(directory / CONFIG_FILE)
    return directory


def load_params(directory: str | Path, target: dict | None = None) -> tuple[BridgeTowerConfig, dict, tuple[str, ...]]:
    """Read a params directory -> (config, params, heads). `target` (a tree of ShapeDtypeStructs with
    shardings) restores straight onto a mesh; without it arrays come back on the host."""
    directory = Path(directory).absolute()
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
