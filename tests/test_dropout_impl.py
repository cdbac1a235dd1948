"""compute.dropout_impl: "threefry" is Flax's own dropout bit for bit; "hash" keeps the right rate."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bridgetower_jax.models.layers import Dropout, dropout_keep_mask


class _Flax(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.Dropout(0.1)(x, deterministic=False)


class _Ours(nn.Module):
    impl: str = "threefry"

    @nn.compact
    def __call__(self, x):
        return Dropout(0.1, self.impl)(x, deterministic=False)


def test_threefry_impl_is_flax_dropout_exactly():
    x, rngs = jnp.ones((3, 50, 16)), {"dropout": jax.random.PRNGKey(7)}
    np.testing.assert_array_equal(_Flax().apply({}, x, rngs=rngs), _Ours().apply({}, x, rngs=rngs))


def test_hash_masks_keep_the_rate_and_differ_per_key():
    shape = (2, 12, 65, 65)
    a = np.asarray(dropout_keep_mask(jax.random.PRNGKey(0), 0.9, shape, "hash"))
    b = np.asarray(dropout_keep_mask(jax.random.PRNGKey(1), 0.9, shape, "hash"))
    assert abs(a.mean() - 0.9) < 0.005 and abs(b.mean() - 0.9) < 0.005
    assert abs((a & b).mean() - 0.81) < 0.005            # independent masks for different keys
    again = np.asarray(dropout_keep_mask(jax.random.PRNGKey(0), 0.9, shape, "hash"))
    np.testing.assert_array_equal(a, again)


def test_hash_dropout_scales_kept_values():
    y = np.asarray(_Ours("hash").apply({}, jnp.ones((4, 40, 32)), rngs={"dropout": jax.random.PRNGKey(3)}))
    assert np.all((y == 0) | np.isclose(y, 1 / 0.9))
    assert 0.85 < (y != 0).mean() < 0.95


def test_unknown_impl_is_refused():
    with pytest.raises(ValueError, match="hash"):
        dropout_keep_mask(jax.random.PRNGKey(0), 0.9, (4,), "philox")
