"""Logical axis names -> mesh axes.

Models name every parameter and key activation with logical axes (`embed`, `mlp`, `heads`, ...);
these rules say which mesh axis ("data", "fsdp", "tensor") each one is split over. A logical
name without a rule is silently replicated by Flax, which is why tests check that every name the
model uses appears here. Repeated names act as fallbacks (the first whose mesh axis is free wins).
"""
from __future__ import annotations

MESH_AXES = ("data", "fsdp", "tensor")

PARAM_RULES: tuple[tuple[str, str | tuple[str, ...] | None], ...] = (
    ("embed", "fsdp"),
    ("mlp", "tensor"),
    ("heads", "tensor"),
    ("kv", None),
    ("embed_out", None),
    ("vocab", "tensor"),
    ("layers", None),
    ("norm", None),
)

ACTIVATION_RULES: tuple[tuple[str, str | tuple[str, ...] | None], ...] = (
    ("act_batch", ("data", "fsdp")),
    ("act_len", None),
    ("act_embed", None),
    ("act_mlp", "tensor"),
    ("act_heads", "tensor"),
    ("act_vocab", "tensor"),
)

DEFAULT_RULES = PARAM_RULES + ACTIVATION_RULES
