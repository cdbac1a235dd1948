"""compute.attention_impl="cpu_kernel": the native XLA:CPU attention (bridgetower_jax/native/attention_kernel.cc)
computes what the exact path computes, to float32 rounding, on every shape the model makes (and the
awkward ones: tails of the key and query blocks, every supported head width, masked keys, a row with
every key masked); its gradient is the exact path's; a model, sharded or not, gives the exact path's
outputs; and what it cannot run is refused by name."""
import dataclasses
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from bridgetower_jax.models import BridgeTowerForMaskedLM, layers, preset
from bridgetower_jax.native import attention as native_attention

pytestmark = pytest.mark.skipif(shutil.which("c++") is None, reason="the kernel is built with the host's C++ compiler")


def _qkv(seed, batch, q_len, k_len, heads, depth, spread=2.0):
    keys = jax.random.split(jax.random.PRNGKey(seed), 3)
    shapes = [(batch, q_len, heads, depth), (batch, k_len, heads, depth), (batch, k_len, heads, depth)]
    return [jax.random.normal(kk, s, jnp.float32) * spread for kk, s in zip(keys, shapes)]


@pytest.mark.parametrize("batch, q_len, k_len, heads, depth", [
    (2, 325, 325, 12, 64),    # a BridgeTower-base vision layer (per 2 images)
    (2, 40, 325, 12, 64),     # text queries over image keys (cross-modal)
    (2, 325, 40, 12, 64),     # image queries over text keys
    (3, 13, 7, 2, 16),        # the tiny preset's head width; tails of every block
    (1, 1, 1, 1, 32),
    (2, 33, 47, 3, 128),
    (1, 12, 32, 4, 64),       # exactly one query block and one key tile
    (2, 25, 48, 2, 32),       # keys a multiple of 16, not of the 32-key tile
])
@pytest.mark.parametrize("masked", [False, True])
def test_kernel_matches_the_exact_path(batch, q_len, k_len, heads, depth, masked):
    q, k, v = _qkv(0, batch, q_len, k_len, heads, depth)
    mask = None
    if masked:
        mask = jax.random.bernoulli(jax.random.PRNGKey(1), 0.7, (batch, k_len)).at[:, 0].set(True)
        mask = mask.at[-1].set(False)          # a row of keys all masked: transformers averages them all
    exact = jax.jit(lambda q, k, v, m: layers.dot_product_attention(q, k, v, m))(q, k, v, mask)
    kernel = jax.jit(lambda q, k, v, m: layers.dot_product_attention(q, k, v, m, impl="cpu_kernel"))(q, k, v, mask)
    assert kernel.shape == exact.shape and kernel.dtype == jnp.float32
    np.testing.assert_allclose(kernel, exact, rtol=2e-5, atol=2e-5)
    if masked:     # the masked keys' values do not leak into rows that attend anything
        changed = v + jnp.where(mask[:, :, None, None], 0.0, 100.0)
        again = jax.jit(lambda q, k, v, m: layers.dot_product_attention(q, k, v, m, impl="cpu_kernel"))(q, k, changed, mask)
        np.testing.assert_allclose(again[:-1], kernel[:-1], rtol=2e-5, atol=2e-5)


def test_no_keys_and_integer_masks():
    q, k, v = _qkv(10, 2, 5, 6, 2, 16)
    empty = layers.dot_product_attention(q, k[:, :0], v[:, :0], None, impl="cpu_kernel")
    np.testing.assert_array_equal(empty, layers.dot_product_attention(q, k[:, :0], v[:, :0], None))   # zeros
    mask = jnp.asarray([[1, 1, 0, 1, 0, 1], [1, 0, 0, 0, 0, 0]], jnp.int32)
    np.testing.assert_allclose(layers.dot_product_attention(q, k, v, mask, impl="cpu_kernel"),
                               layers.dot_product_attention(q, k, v, mask), rtol=2e-5, atol=2e-5)


def test_extreme_scores_stay_finite_and_nan_propagates():
    q, k, v = _qkv(2, 1, 5, 9, 1, 16, spread=30.0)    # scores in the thousands: exp underflows to 0
    exact = layers.dot_product_attention(q, k, v, None)
    kernel = layers.dot_product_attention(q, k, v, None, impl="cpu_kernel")
    assert np.isfinite(np.asarray(kernel)).all()
    np.testing.assert_allclose(kernel, exact, rtol=2e-5, atol=2e-4)
    poisoned = layers.dot_product_attention(q.at[0, 2, 0, 0].set(jnp.nan), k, v, None, impl="cpu_kernel")
    assert np.isnan(np.asarray(poisoned[0, 2])).all() and np.isfinite(np.asarray(poisoned[0, 3])).all()


@pytest.mark.parametrize("mask_dtype", [None, bool, jnp.int32, jnp.float32])
def test_gradient_is_the_exact_paths(mask_dtype):
    q, k, v = _qkv(3, 2, 9, 11, 2, 16)
    mask = None if mask_dtype is None else jnp.ones((2, 11), bool).at[1, 5:].set(False).astype(mask_dtype)
    w = jax.random.normal(jax.random.PRNGKey(4), q.shape)

    def loss(impl):
        return jax.jit(jax.grad(lambda q, k, v, m: jnp.sum(layers.dot_product_attention(q, k, v, m, impl=impl) * w),
                                argnums=(0, 1, 2)))
    for got, want in zip(loss("cpu_kernel")(q, k, v, mask), loss("xla")(q, k, v, mask)):
        np.testing.assert_array_equal(got, want)
    if mask_dtype is jnp.float32:     # a float mask is a differentiable input: its gradient is zero
        g = jax.grad(lambda m: jnp.sum(layers.dot_product_attention(q, k, v, m, impl="cpu_kernel") * w))(mask)
        np.testing.assert_array_equal(g, jnp.zeros_like(mask))


def test_concurrent_kernels_in_one_program():
    """Two independent attentions that XLA may run at once on its thread pool, which both use."""
    a, b = _qkv(5, 4, 325, 325, 12, 64), _qkv(6, 4, 40, 40, 12, 64)
    both = jax.jit(lambda a, b: [layers.dot_product_attention(*x, None, impl="cpu_kernel") for x in (a, b)])
    for _ in range(3):
        got = both(a, b)
    for x, out in zip((a, b), got):
        np.testing.assert_allclose(out, layers.dot_product_attention(*x, None), rtol=2e-5, atol=2e-5)


def test_sharded_calls_compute_their_own_shard():
    """Batch and heads split over a (4, 2) mesh: no gathers, the output keeps the inputs' sharding."""
    mesh = Mesh(np.array(jax.devices()[:8]).reshape(4, 2), ("data", "tensor"))
    q, k, v = _qkv(11, 8, 13, 13, 4, 16)
    mask = jnp.ones((8, 13), bool).at[1, 5:].set(False)
    tokens = NamedSharding(mesh, P("data", None, "tensor", None))
    args = [jax.device_put(x, tokens) for x in (q, k, v)] + [jax.device_put(mask, NamedSharding(mesh, P("data", None)))]
    f = jax.jit(lambda q, k, v, m: layers.dot_product_attention(q, k, v, m, impl="cpu_kernel"))
    hlo = f.lower(*args).compile().as_text()
    assert not any(op in hlo for op in ("all-gather", "all-to-all", "collective-permute", "all-reduce"))
    out = f(*args)
    assert out.sharding.spec == P("data", None, "tensor")
    np.testing.assert_allclose(out, layers.dot_product_attention(q, k, v, mask), rtol=2e-5, atol=2e-5)


def _tiny_mlm(attention_impl):
    return BridgeTowerForMaskedLM(preset("tiny").with_compute(attention_impl=attention_impl))


def test_model_outputs_match_sharded_or_not():
    exact_model, kernel_model = _tiny_mlm("xla"), _tiny_mlm("cpu_kernel")
    ids = jax.random.randint(jax.random.PRNGKey(0), (8, 7), 3, 90)
    mask = jnp.ones((8, 7), jnp.int32).at[::2, 5:].set(0)
    pixels = jax.random.normal(jax.random.PRNGKey(1), (8, 32, 32, 3))
    params = exact_model.init(jax.random.PRNGKey(2), ids, mask, pixels)["params"]
    exact = jax.jit(exact_model.apply)({"params": params}, ids, mask, pixels).logits
    kernel = jax.jit(kernel_model.apply)({"params": params}, ids, mask, pixels).logits
    np.testing.assert_allclose(kernel, exact, rtol=1e-4, atol=1e-4)
    # Batch-sharded over 8 devices: the same values.
    mesh = Mesh(np.array(jax.devices()[:8]), ("data",))
    shard = lambda x: jax.device_put(x, NamedSharding(mesh, P("data", *[None] * (x.ndim - 1))))
    sharded = jax.jit(kernel_model.apply)({"params": params}, shard(ids), shard(mask), shard(pixels)).logits
    np.testing.assert_allclose(sharded, kernel, rtol=1e-5, atol=1e-5)
    # Training mode: the same dropout masks (the text attentions' come from the exact path, which
    # runs where attention dropout is drawn; CLIP's attention has none and keeps the kernel).
    rngs = {"dropout": jax.random.PRNGKey(3)}
    train = [m.apply({"params": params}, ids, mask, pixels, deterministic=False, rngs=rngs).logits
             for m in (exact_model, kernel_model)]
    np.testing.assert_allclose(train[1], train[0], rtol=1e-4, atol=1e-4)
    assert not np.allclose(train[0], exact, atol=1e-3)     # dropout was on


def test_attention_dropout_runs_the_exact_path():
    q, k, v = _qkv(8, 2, 9, 9, 2, 16)
    kw = dict(dropout_rate=0.3, deterministic=False, dropout_rng=jax.random.PRNGKey(9))
    np.testing.assert_array_equal(layers.dot_product_attention(q, k, v, None, impl="cpu_kernel", **kw),
                                  layers.dot_product_attention(q, k, v, None, **kw))


def test_what_it_cannot_run_is_refused_by_name(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match='attention_impl="cpu_kernel" computes in float32 only'):
        preset("tiny").with_compute(attention_impl="cpu_kernel", dtype="bfloat16").validate()
    odd = preset("tiny")
    odd = odd.replace(text=dataclasses.replace(odd.text, num_attention_heads=4))     # head width 8
    with pytest.raises(ValueError, match=r"head width in \(16, 32, 64, 128\).*= 8"):
        odd.with_compute(attention_impl="cpu_kernel").validate()
    q, k, v = _qkv(7, 1, 3, 3, 1, 16)
    with pytest.raises(ValueError, match="float32"):
        native_attention.attention(q.astype(jnp.bfloat16), k, v, None, 0.25)
    with pytest.raises(ValueError, match="float32"):
        native_attention.attention(q, k, v.astype(jnp.float16), None, 0.25)
    # No compiler: the error names it, the config key and a way out; nothing half-built is left.
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setenv("CXX", "/nonexistent/c++")
    with pytest.raises(RuntimeError, match=r'attention_impl="cpu_kernel".*/nonexistent/c\+\+.*attention_impl="xla"'):
        native_attention.register.__wrapped__()
    assert list(tmp_path.rglob("*")) == [tmp_path / "bridgetower_jax"]
