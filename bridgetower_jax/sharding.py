"""Logical axis names -> mesh axes.

Models name every parameter and key activation with logical axes (`embed`, `mlp`, `heads`, ...);
these rules say which mesh axis ("data", "fsdp", "tensor") each one is split over. A logical
name without a rule is silently replicated by Flax, which is why tests check that every name the
model uses appears here. Repeated names act as fallbacks (the first whose mesh axis is free wins).
"""
from __future__ import annotations

import math

import jax
import numpy as np
import flax.linen as nn
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

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


# ---------------------------------------------------------------------------------------------
# Mesh
# ---------------------------------------------------------------------------------------------

BATCH_AXES = ("data", "fsdp")


def resolve_mesh_shape(data: int, fsdp: int, tensor: int, num_devices: int) -> tuple[int, int, int]:
    """Fill the one axis given as -1 so the product is `num_devices`; clear errors otherwise."""
    sizes = {"data": data, "fsdp": fsdp, "tensor": tensor}
    free = [k for k, v in sizes.items() if v == -1]
    if len(free) > 1:
        raise ValueError(f"mesh: at most one of mesh.data/fsdp/tensor may be -1, got {sizes}")
    bad = [k for k, v in sizes.items() if v == 0 or v < -1]
    if bad:
        raise ValueError(f"mesh: sizes must be positive or -1, got {sizes}")
    fixed = math.prod(v for v in sizes.values() if v != -1)
    if free:
        if num_devices % fixed:
            raise ValueError(f"mesh: {sizes} cannot fill {num_devices} devices "
                             f"({num_devices} is not divisible by {fixed})")
        sizes[free[0]] = num_devices // fixed
    if math.prod(sizes.values()) != num_devices:
        raise ValueError(f"mesh: mesh.data*mesh.fsdp*mesh.tensor = {math.prod(sizes.values())} {sizes} but "
                         f"there are {num_devices} devices")
    return sizes["data"], sizes["fsdp"], sizes["tensor"]


def make_mesh(data: int = -1, fsdp: int = 1, tensor: int = 1, num_slices: int = 1, devices=None) -> Mesh:
    """A ("data", "fsdp", "tensor") mesh with Auto axes (Explicit axes break logical constraints).

    With `num_slices > 1` (multi-slice TPU) the mesh is hybrid: `data` is split across slices
    (over DCN) and everything else stays inside a slice (over ICI).
    """
    devices = list(jax.devices() if devices is None else devices)
    shape = resolve_mesh_shape(data, fsdp, tensor, len(devices))
    axis_types = (AxisType.Auto,) * 3
    if num_slices > 1:
        from jax.experimental import mesh_utils
        if shape[0] % num_slices:
            raise ValueError(f"mesh: mesh.data={shape[0]} must be a multiple of mesh.num_slices={num_slices}")
        per_slice = (shape[0] // num_slices, shape[1], shape[2])
        grid = mesh_utils.create_hybrid_device_mesh(per_slice, (num_slices, 1, 1), devices)
        return Mesh(grid, MESH_AXES, axis_types=axis_types)
    return Mesh(np.asarray(devices).reshape(shape), MESH_AXES, axis_types=axis_types)


def batch_sharding(mesh: Mesh, ndim: int = 1) -> NamedSharding:
    """The global batch is split over data x fsdp; the other dimensions are replicated."""
    return NamedSharding(mesh, P(BATCH_AXES, *([None] * (ndim - 1))))


def batch_shards(mesh: Mesh) -> int:
    return mesh.shape["data"] * mesh.shape["fsdp"]


def logical_shardings(boxed_tree, mesh: Mesh, rules=DEFAULT_RULES):
    """NamedShardings for a tree of logically-partitioned (boxed) values, e.g. from jax.eval_shape(init)."""
    return nn.logical_to_mesh_sharding(nn.get_partition_spec(boxed_tree), mesh, rules)


def global_batch(local_batch: dict, mesh: Mesh) -> dict:
    """Host-local numpy batch -> global jax.Arrays split over the batch axes (multi-host safe)."""
    return {k: jax.make_array_from_process_local_data(batch_sharding(mesh, np.ndim(v)), np.asarray(v))
            for k, v in local_batch.items()}


def global_batch_from_whole(whole_batch: dict, mesh: Mesh) -> dict:
    """A batch every process holds whole (numpy) -> global jax.Arrays split over the batch axes: each
    device takes its own rows, whatever the order of devices and processes in the mesh."""
    return {k: jax.make_array_from_callback(np.shape(v), batch_sharding(mesh, np.ndim(v)),
                                            lambda index, v=v: np.asarray(v[index]))
            for k, v in whole_batch.items()}
