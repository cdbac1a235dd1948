"""Move parameters between the looped layout (`layer_{i}`) and the scanned one (stacked `layers_scan`).

With `compute.scan_layers` every uni-modal layer that runs (all the text layers, and as many vision
blocks) lives in one stacked tree per tower with a leading layer axis; everything else (and every
converter) uses one subtree per layer. Vision blocks deeper than the text tower never run and stay
looped.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from bridgetower_jax.models.config import BridgeTowerConfig

# (tower, per-layer prefix, stacked name)
_STACKS = (("text_model", "layer_", "layers_scan"), ("vision_model", "block_", "blocks_scan"))


def _core(params: dict) -> dict:
    return params["bridgetower"] if "bridgetower" in params else params


def _with_core(params: dict, core: dict) -> dict:
    return {**params, "bridgetower": core} if "bridgetower" in params else core


def stack_scanned_layers(config: BridgeTowerConfig, params: dict) -> dict:
    """Looped layout -> the layout `compute.scan_layers=True` expects."""
    core = dict(_core(params))
    depth = config.text.num_hidden_layers
    for tower, prefix, stacked in _STACKS:
        sub = dict(core[tower])
        layers = [sub.pop(f"{prefix}{i}") for i in range(depth)]
        if layers:
            sub[stacked] = jax.tree.map(lambda *xs: jnp.stack(xs), *layers)
        core[tower] = sub
    return _with_core(params, core)


def unstack_scanned_layers(config: BridgeTowerConfig, params: dict) -> dict:
    """Inverse of `stack_scanned_layers`; a no-op on trees that hold no stacked layers."""
    core = dict(_core(params))
    for tower, prefix, stacked in _STACKS:
        sub = dict(core[tower])
        if stacked not in sub:
            continue
        tree = sub.pop(stacked)
        count = jax.tree.leaves(tree)[0].shape[0]
        for i in range(count):
            sub[f"{prefix}{i}"] = jax.tree.map(lambda x, i=i: x[i], tree)
        core[tower] = sub
    return _with_core(params, core)
