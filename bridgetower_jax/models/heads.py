"""Output heads: pre-training (MLM, ITM, ITC) and the fine-tuning classifiers of the original."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import flax.linen as nn

from bridgetower_jax.models.config import BridgeTowerConfig
from bridgetower_jax.models.layers import Dense, LayerNorm, add_bias, constrain, gelu_exact, normal


def _dtypes(config: BridgeTowerConfig) -> dict:
    return dict(dtype=jnp.dtype(config.compute.dtype), param_dtype=jnp.dtype(config.compute.param_dtype))


class MLMHead(nn.Module):
    """dense -> erf GELU -> LayerNorm -> untied decoder (+ separate bias); logits over the real vocabulary."""
    config: BridgeTowerConfig

    @nn.compact
    def __call__(self, text_features: jax.Array) -> jax.Array:
        c, kw = self.config, _dtypes(self.config)
        h = Dense(c.hidden_size, ("embed", "embed_out"), kernel_init=normal(c.initializer_range),
                  name="transform_dense", **kw)(text_features)
        h = LayerNorm(c.layer_norm_eps, name="transform_LayerNorm", **kw)(gelu_exact(h))
        logits = Dense(c.padded_vocab_size, ("embed", "vocab"), use_bias=False,
                       kernel_init=normal(c.initializer_range), name="decoder", **kw)(h)
        bias = self.param("bias", nn.with_logical_partitioning(nn.initializers.zeros, ("vocab",)),
                          (c.padded_vocab_size,), kw["param_dtype"])
        logits = constrain(add_bias(logits, bias.astype(kw["dtype"])), ("act_batch", "act_len", "act_vocab"))
        # Padding rows exist only so the vocabulary shards evenly; they are not tokens.
        return logits[..., :c.text.vocab_size]


class LinearHead(nn.Module):
    """A single projection named `fc` (the ITM, ITC and rank heads)."""
    features: int
    config: BridgeTowerConfig

    @nn.compact
    def __call__(self, x):
        return Dense(self.features, ("embed", "embed_out"), kernel_init=normal(self.config.initializer_range),
                     name="fc", **_dtypes(self.config))(x)


class TaskClassifier(nn.Module):
    """The original's two-layer task head: dense -> LayerNorm -> GELU -> dense."""
    hidden_features: int
    num_labels: int
    config: BridgeTowerConfig

    @nn.compact
    def __call__(self, x):
        c, kw = self.config, _dtypes(self.config)
        h = Dense(self.hidden_features, ("embed", "mlp"), kernel_init=normal(c.initializer_range),
                  name="dense_in", **kw)(x)
        h = gelu_exact(LayerNorm(1e-5, name="LayerNorm", **kw)(h))
        return Dense(self.num_labels, ("mlp", "embed_out"), kernel_init=normal(c.initializer_range),
                     name="dense_out", **kw)(h)


def l2_normalize(x: jax.Array, eps: float = 1e-12) -> jax.Array:
    """torch.nn.functional.normalize: x / max(||x||, eps)."""
    return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), eps)
