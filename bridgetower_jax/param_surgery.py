"""Start a model from another model's parameters (`init_from`): take every tensor that fits, adapt
the ones whose shape changed for a known reason, keep fresh values for the rest, and say which.

Known reasons: a new image size (the vision position table is resized with PyTorch-style bicubic
interpolation, as the original does at load), NLVR2's third token type (copied from the image row),
and a vocabulary padded to another multiple.
"""
from __future__ import annotations

import numpy as np

from bridgetower_jax.models.config import BridgeTowerConfig


def _flatten(tree, prefix=()):
    for k, v in tree.items():
        if isinstance(v, dict):
            yield from _flatten(v, prefix + (k,))
        else:
            yield prefix + (k,), v


def _set(tree, path, value):
    for p in path[:-1]:
        tree = tree[p]
    tree[path[-1]] = value


def _core(tree):
    return tree["bridgetower"] if "bridgetower" in tree else tree


def _adapt(path: tuple, old: np.ndarray, new_shape: tuple, config: BridgeTowerConfig) -> tuple[np.ndarray | None, str]:
    name = "/".join(path)
    if path[-2:] == ("position_embedding", "embedding") and "vision_model" in path:
        from bridgetower_jax.convert.position_resize import resize_position_table
        grid = int(round((new_shape[0] - 1) ** 0.5))
        return resize_position_table(old, grid), f"resized {name} {old.shape} -> {new_shape}"
    if path[-2:] == ("token_type_embeddings", "embedding") and old.shape[0] == 2 and new_shape[0] == 3:
        return np.concatenate([old, old[1:2]]), f"{name}: added a third token type copied from the image row"
    if old.ndim == len(new_shape) and sum(a != b for a, b in zip(old.shape, new_shape)) == 1:
        axis = next(i for i, (a, b) in enumerate(zip(old.shape, new_shape)) if a != b)
        real = config.text.vocab_size
        if old.shape[axis] >= real and new_shape[axis] >= real and path[-1] in ("embedding", "kernel", "bias") \
                and ("word_embeddings" in path or "mlm_score" in path):
            kept = np.take(old, np.arange(real), axis=axis)
            pad = [(0, 0)] * old.ndim
            pad[axis] = (0, new_shape[axis] - real)
            return np.pad(kept, pad), f"re-padded the vocabulary of {name} {old.shape} -> {new_shape}"
    return None, f"kept fresh {name}: shape {old.shape} does not fit {new_shape}"


def merge(fresh: dict, loaded: dict, config: BridgeTowerConfig) -> tuple[dict, list[str]]:
    """Fresh params with every matching tensor of `loaded` (bare core or head tree) copied in.
    Returns the merged tree and report lines."""
    import copy
    merged = copy.deepcopy(fresh)
    src_core, dst_core = _core(loaded), _core(merged)
    src = dict(_flatten(src_core))
    src_heads = {p: v for p, v in _flatten(loaded) if p[0] != "bridgetower"} if "bridgetower" in loaded else {}
    lines, taken, fresh_paths, adapted = [], 0, [], 0
    for path, value in list(_flatten(dst_core)):
        if path not in src:
            fresh_paths.append("bridgetower/" + "/".join(path))
            continue
        old = np.asarray(src[path])
        if old.shape == value.shape:
            _set(dst_core, path, old.astype(value.dtype))
            taken += 1
        else:
            new, line = _adapt(path, old, value.shape, config)
            lines.append(line)
            if new is not None:
                _set(dst_core, path, new.astype(value.dtype))
                adapted += 1
    if "bridgetower" in merged:
        for path, value in list(_flatten({k: v for k, v in merged.items() if k != "bridgetower"})):
            old = src_heads.get(path)
            if old is not None and np.shape(old) == value.shape:
                _set(merged, path, np.asarray(old).astype(value.dtype))
                taken += 1
            else:
                fresh_paths.append("/".join(path))
    ignored = sorted({p[0] for p in src_heads} - {k for k in merged if k != "bridgetower"})
    lines.insert(0, f"init_from: loaded {taken} tensors, adapted {adapted}, "
                    f"{len(fresh_paths)} freshly initialised, ignored heads {ignored or 'none'}")
    if fresh_paths:
        heads = sorted({p.split("/")[0] for p in fresh_paths})
        lines.append(f"init_from: fresh parameters under {heads}")
    return merged, lines
