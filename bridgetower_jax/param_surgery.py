"""Start a model from another model's parameters (`init_from`): take every tensor that fits, adapt
the ones whose shape changed for a known reason, keep fresh values for the rest, and report which.

Known reasons: a new image size (the vision position table is resized with PyTorch-style bicubic
interpolation, as the original does at load), NLVR2's third token type (copied from the image
row), and a vocabulary padded to another multiple. The merge and the report are the importers'
(`convert.import_report`); this module only decides what fits.
"""
from __future__ import annotations

import numpy as np

from bridgetower_jax.convert.import_report import flatten_params, merge_into_fresh, unflatten_params
from bridgetower_jax.convert.position_resize import resize_position_table
from bridgetower_jax.models.config import BridgeTowerConfig

SHAPE_MISMATCH = "kept fresh: the shape does not fit this model"
NOT_IN_MODEL = "not a parameter of this model (e.g. another task's head)"


def _as_head_tree(tree: dict) -> dict:
    """Bare core trees are placed under 'bridgetower', as in every task model."""
    return tree if "bridgetower" in tree else {"bridgetower": tree}


def _adapt(path: tuple, old: np.ndarray, new_shape: tuple, config: BridgeTowerConfig) -> tuple[np.ndarray | None, str]:
    name = "/".join(path)
    if path[-2:] == ("position_embedding", "embedding") and "vision_model" in path:
        grid = int(round((new_shape[0] - 1) ** 0.5))
        return resize_position_table(old, grid), f"resized {name} {old.shape} -> {new_shape} (bicubic)"
    if path[-2:] == ("token_type_embeddings", "embedding") and old.shape[0] == 2 and new_shape[0] == 3:
        return np.concatenate([old, old[1:2]]), f"{name}: added a third token type copied from the image row"
    vocab_param = "word_embeddings" in path or "mlm_score" in path
    differing = [i for i, (a, b) in enumerate(zip(old.shape, new_shape)) if a != b]
    if vocab_param and old.ndim == len(new_shape) and len(differing) == 1:
        axis, real = differing[0], config.text.vocab_size
        if min(old.shape[axis], new_shape[axis]) >= real:
            pad = [(0, 0)] * old.ndim
            pad[axis] = (0, new_shape[axis] - real)
            return np.pad(np.take(old, np.arange(real), axis=axis), pad), \
                f"re-padded the vocabulary of {name} {old.shape} -> {new_shape}"
    return None, ""


def merge(fresh: dict, loaded: dict, config: BridgeTowerConfig, task: str = "init_from") -> tuple[dict, list[str]]:
    """Fresh params with every fitting tensor of `loaded` (a bare core or a head tree) copied in.
    Returns the merged tree (in `fresh`'s layout) and the report's lines."""
    bare = "bridgetower" not in fresh
    fresh_leaves = flatten_params(_as_head_tree(fresh))
    taken, ignored, notes = {}, {}, []
    for path, value in flatten_params(_as_head_tree(loaded)).items():
        target = fresh_leaves.get(path)
        value = np.asarray(value)
        if target is None:
            ignored.setdefault(NOT_IN_MODEL, []).append("/".join(path))
        elif value.shape == np.shape(target):
            taken[path] = value
        else:
            adapted, note = _adapt(path, value, np.shape(target), config)
            if adapted is None:
                ignored.setdefault(SHAPE_MISMATCH, []).append(f"{'/'.join(path)} {value.shape}")
            else:
                taken[path], notes = adapted, notes + [note]
    merged, report = merge_into_fresh(_as_head_tree(fresh), unflatten_params(taken), task, ignored=ignored, notes=notes)
    return (merged["bridgetower"] if bare else merged), report.format().splitlines()
