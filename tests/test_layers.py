"""The building blocks with hand-written gradients or reshaped GEMMs equal the plain formulas, values
and gradients, in float64 (the model-level parity tests compare against PyTorch; these name the block
that broke)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bridgetower_jax.models import layers


@pytest.fixture(autouse=True)
def float64():
    with jax.enable_x64(True):
        yield


def _grads(f, *args):
    """Value and gradients of sum(f(*args) * w) for a fixed random weighting w."""
    w = jax.random.normal(jax.random.PRNGKey(1), jnp.shape(f(*args)), jnp.float64)
    return jax.value_and_grad(lambda *a: jnp.sum(f(*a) * w), argnums=tuple(range(len(args))))(*args)


@pytest.mark.parametrize("custom, plain", [
    (layers.quick_gelu, lambda x: x * jax.nn.sigmoid(1.702 * x)),
    (layers.gelu_exact, lambda x: 0.5 * x * (1.0 + jax.lax.erf(x / jnp.sqrt(2.0)))),
])
def test_activations_with_input_only_residuals_have_exact_gradients(custom, plain):
    x = jnp.concatenate([jnp.linspace(-9.0, 9.0, 181), jax.random.normal(jax.random.PRNGKey(0), (64,)) * 3])
    (value, (grad,)), (ref_value, (ref_grad,)) = _grads(custom, x), _grads(plain, x)
    np.testing.assert_allclose(value, ref_value, rtol=1e-13)
    np.testing.assert_allclose(grad, ref_grad, rtol=1e-12, atol=1e-15)


def test_add_bias_gradient_is_the_cotangent_summed_over_leading_axes():
    y = jax.random.normal(jax.random.PRNGKey(0), (3, 5, 4, 2), jnp.float64)
    bias = jax.random.normal(jax.random.PRNGKey(1), (4, 2), jnp.float64)
    (_, (gy, gb)), (_, (ref_gy, ref_gb)) = _grads(layers.add_bias, y, bias), _grads(jnp.add, y, bias)
    np.testing.assert_allclose(gy, ref_gy, rtol=1e-13)
    np.testing.assert_allclose(gb, ref_gb, rtol=1e-12)


@pytest.mark.parametrize("features, contract_dims, in_shape", [
    (6, 1, (2, 3, 5)),               # feed-forward: [B, T, E] -> [B, T, F]
    ((2, 3), 1, (2, 3, 5)),          # q/k/v: [B, T, E] -> [B, T, heads, head_dim]
    (5, 2, (2, 3, 2, 3)),            # attention output: [B, T, heads, head_dim] -> [B, T, E]
])
def test_dense_as_one_2d_gemm_equals_the_einsum(features, contract_dims, in_shape):
    dense = layers.Dense(features, tuple("abcd"[:contract_dims + len(np.atleast_1d(features))]),
                         contract_dims=contract_dims, dtype=jnp.float64, param_dtype=jnp.float64)
    x = jax.random.normal(jax.random.PRNGKey(0), in_shape, jnp.float64)
    params = jax.tree_util.tree_map(lambda p: p + 0.1, dense.init(jax.random.PRNGKey(1), x)["params"])
    params = jax.tree_util.tree_map(lambda p: getattr(p, "value", p), params,
                                    is_leaf=lambda p: hasattr(p, "value"))

    def reference(x, kernel, bias):
        n = contract_dims
        out = jax.lax.dot_general(x, kernel, ((tuple(range(x.ndim - n, x.ndim)), tuple(range(n))), ((), ())))
        return out + bias

    (value, grads), (ref_value, ref_grads) = (
        _grads(lambda x, k, b: dense.apply({"params": {"kernel": k, "bias": b}}, x),
               x, params["kernel"], params["bias"]),
        _grads(reference, x, params["kernel"], params["bias"]))
    np.testing.assert_allclose(value, ref_value, rtol=1e-12)
    for got, want in zip(grads, ref_grads):
        np.testing.assert_allclose(got, want, rtol=1e-12)


def test_layer_norm_with_normalised_input_residual_has_exact_gradients():
    x = jax.random.normal(jax.random.PRNGKey(0), (3, 4, 6), jnp.float64) * 3 + 1
    scale, bias = (jax.random.normal(jax.random.PRNGKey(i), (6,), jnp.float64) for i in (1, 2))

    def plain(x, scale, bias):
        mean = x.mean(-1, keepdims=True)
        return (x - mean) / jnp.sqrt(jnp.square(x - mean).mean(-1, keepdims=True) + 1e-5) * scale + bias

    (value, grads), (ref_value, ref_grads) = (_grads(lambda *a: layers.layer_norm(*a, 1e-5), x, scale, bias),
                                              _grads(plain, x, scale, bias))
    np.testing.assert_allclose(value, ref_value, rtol=1e-13)
    for got, want in zip(grads, ref_grads):
        np.testing.assert_allclose(got, want, rtol=1e-11, atol=1e-14)


def test_layer_norm_keeps_dtypes_of_bfloat16_inputs_and_float32_parameters():
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 5, 8)).astype(jnp.bfloat16)
    scale, bias = jnp.ones(8, jnp.float32), jnp.zeros(8, jnp.float32)
    y, backward = jax.vjp(lambda *a: layers.layer_norm(*a, 1e-5), x, scale, bias)
    assert y.dtype == jnp.float32          # statistics and result in float32; the module casts
    dx, ds, db = backward(jnp.ones_like(y))
    assert (dx.dtype, ds.dtype, db.dtype) == (jnp.bfloat16, jnp.float32, jnp.float32)


def test_softmax_with_output_only_residual_has_the_exact_gradient():
    # Rows of scores with keys masked the way attention masks them (the dtype's most negative value).
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 3, 4, 7), jnp.float64) * 4
    x = x.at[..., 5:].set(jnp.finfo(jnp.float64).min)
    plain = lambda s: jnp.exp(s - s.max(-1, keepdims=True)) / jnp.exp(s - s.max(-1, keepdims=True)).sum(-1, keepdims=True)
    (value, (grad,)), (ref_value, (ref_grad,)) = _grads(layers.softmax_last_axis, x), _grads(plain, x)
    np.testing.assert_allclose(value, ref_value, rtol=1e-13)
    np.testing.assert_allclose(grad, ref_grad, rtol=1e-11, atol=1e-15)


def test_attention_backward_keeps_one_score_sized_array():
    """The probabilities are the only [B, N, Tq, Tk] residual (`jax.nn.softmax` keeps the exponentials
    too): ~0.4 GB less at the peak of a base pre-training step on CPU."""
    b, tq, tk, n, d = 2, 5, 9, 3, 4
    q = jax.random.normal(jax.random.PRNGKey(0), (b, tq, n, d))
    k, v = (jax.random.normal(jax.random.PRNGKey(i), (b, tk, n, d)) for i in (1, 2))
    backward = jax.jit(lambda q, k, v: jax.vjp(lambda *a: layers.dot_product_attention(*a, None), q, k, v)[1])(q, k, v)
    residual_shapes = [x.shape for x in jax.tree_util.tree_leaves(backward)]
    assert residual_shapes.count((b, n, tq, tk)) == 1, residual_shapes
