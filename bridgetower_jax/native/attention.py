"""The CPU attention kernel (`attention_kernel.cc`) as a JAX function: `compute.attention_impl="cpu_kernel"`.

The kernel is compiled with the host's C++ compiler (-O3 -march=native, so the build is cached per CPU
as well as per source and JAX version) and registered with XLA's FFI the first time a model traces an
attention with it. It only computes; `models.layers.dot_product_attention` decides when it applies
(inference: no attention dropout, float32) and differentiates through the exact path.
"""
from __future__ import annotations

import ctypes
import functools
import importlib.metadata

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental.custom_partitioning import custom_partitioning
from jax.sharding import NamedSharding, PartitionSpec as P

from bridgetower_jax import native
from bridgetower_jax.models.config import CPU_KERNEL_HEAD_WIDTHS as HEAD_WIDTHS

SOURCE = native.SOURCE_DIR / "attention_kernel.cc"
TARGET = "bridgetower_attention"
_PURPOSE = 'compute.attention_impl="cpu_kernel"'


@functools.cache
def register() -> None:
    """Build (once per host and source) and register the kernel with XLA:CPU."""
    path = native.build_library(
        SOURCE, compiler_env="CXX", default_compiler="c++",
        flags=["-O3", "-march=native", "-std=c++17", "-fno-math-errno", f"-I{jax.ffi.include_dir()}"],
        purpose=_PURPOSE, hint='install g++, set CXX, or set compute.attention_impl="xla"',
        key=importlib.metadata.version("jaxlib") + native.cpu_identity())     # jaxlib ships the FFI headers
    library = ctypes.cdll.LoadLibrary(path)
    jax.ffi.register_ffi_target(TARGET, jax.ffi.pycapsule(library.BridgetowerAttention), platform="cpu")


def attention(q: jax.Array, k: jax.Array, v: jax.Array, key_mask: jax.Array | None, scale: float) -> jax.Array:
    """softmax(q k^T * scale, masked keys) v. q [B, Tq, N, D], k and v [B, Tk, N, D] float32,
    key_mask [B, Tk] (true = attend) or None; out [B, Tq, N, D]. Under a mesh each device computes its
    own (batch, head) shard."""
    if jax.default_backend() != "cpu":
        raise ValueError(f"{_PURPOSE} runs on CPU only, and this run's backend is {jax.default_backend()}; "
                         'use "fused" or "xla"')
    if {q.dtype, k.dtype, v.dtype} != {jnp.dtype(jnp.float32)} or q.shape[-1] not in HEAD_WIDTHS:
        raise ValueError(f"{_PURPOSE} needs float32 q, k, v and a head width in {HEAD_WIDTHS}; got "
                         f"{q.dtype}, {k.dtype}, {v.dtype}, head width {q.shape[-1]}")
    register()
    key_mask = jnp.ones(k.shape[:2], bool) if key_mask is None else key_mask.astype(bool)
    return _partitioned_call(q, k, v, key_mask, float(scale))


def _kernel_call(q, k, v, key_mask, scale: float):
    call = jax.ffi.ffi_call(TARGET, jax.ShapeDtypeStruct(q.shape, q.dtype), vmap_method="sequential")
    return call(q, k, v, key_mask, scale=np.float32(scale))


# Sharding: (batch, head) pairs are independent, so the kernel runs on each device's shard of the batch
# and head axes; the token and width axes must be whole. Without this rule GSPMD would gather q, k and
# v onto every device and compute the whole batch there.
@functools.partial(custom_partitioning, static_argnums=(4,))
def _partitioned_call(q, k, v, key_mask, scale):
    return _kernel_call(q, k, v, key_mask, scale)


def _shardings(mesh, q_sharding):
    """(q/k/v/out sharding, key-mask sharding): q's batch and head axes, nothing else."""
    spec = tuple(q_sharding.spec) if isinstance(q_sharding, NamedSharding) else ()
    batch, heads = (spec + (None,) * 4)[0], (spec + (None,) * 4)[2]
    return NamedSharding(mesh, P(batch, None, heads, None)), NamedSharding(mesh, P(batch, None))


def _infer_sharding(scale, mesh, arg_shapes, result_shape):
    return _shardings(mesh, arg_shapes[0].sharding)[0]


def _partition(scale, mesh, arg_shapes, result_shape):
    tokens, mask = _shardings(mesh, arg_shapes[0].sharding)
    return mesh, lambda q, k, v, m: _kernel_call(q, k, v, m, scale), tokens, (tokens, tokens, tokens, mask)


_partitioned_call.def_partition(partition=_partition, infer_sharding_from_operands=_infer_sharding,
                                sharding_rule="b q n d, b k n d, b k n d, b k -> b q n d",
                                need_replication_factors=("q", "d", "k"))   # in order of first use
