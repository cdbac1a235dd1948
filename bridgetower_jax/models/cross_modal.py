"""The co-attention layer of the cross-modal encoder and the link tower (the bridge)."""
from __future__ import annotations

import jax.numpy as jnp
import flax.linen as nn

from bridgetower_jax.models.config import TextConfig
from bridgetower_jax.models.layers import Dtype, LayerNorm, PostLNAttentionBlock, PostLNFeedForward, constrain


class CrossModalLayer(nn.Module):
    """Self-attention over the stream, cross-attention to the other stream, FFN; each post-LN.

    Built from the text config (heads, FFN size, eps, dropout), as transformers builds it.
    """
    config: TextConfig
    attention_impl: str = "xla"
    init_std: float = 0.02
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32
    dropout_impl: str = "threefry"

    @nn.compact
    def __call__(self, x, x_mask, other, other_mask, deterministic: bool = True, first_token_only: bool = False):
        """first_token_only: compute the first token's output only ([B, 1, H]; keys and values still
        span the stream), for a last layer whose output only feeds the pooler."""
        c = self.config
        attn = dict(num_heads=c.num_attention_heads, layer_norm_eps=c.layer_norm_eps,
                    hidden_dropout=c.hidden_dropout_prob, attention_dropout=c.attention_probs_dropout_prob,
                    attention_impl=self.attention_impl, deterministic=deterministic,
                    init_std=self.init_std, dtype=self.dtype, param_dtype=self.param_dtype,
                    dropout_impl=self.dropout_impl)
        x = PostLNAttentionBlock(name="attention", **attn)(x[:, :1] if first_token_only else x, x, x_mask)
        x = PostLNAttentionBlock(name="crossattention", **attn)(x, other, other_mask)
        x = PostLNFeedForward(c.intermediate_size, c.layer_norm_eps, c.hidden_dropout_prob, deterministic,
                              self.init_std, self.dtype, self.param_dtype, self.dropout_impl, name="ffn")(x)
        return constrain(x)


class LinkTower(nn.Module):
    """Bridge layer: merges a uni-modal feature `u` into the cross-modal stream `c`.

    add: LN(u + c); scaled_add: LN(u * s + c) with s learnt (init 1); interpolate:
    LN((1 - b) * u + b * c) with b learnt (init 0.5).
    """
    link_tower_type: str = "add"
    layer_norm_eps: float = 1e-5
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, unimodal, cross):
        if self.link_tower_type == "add":
            merged = unimodal + cross
        elif self.link_tower_type == "scaled_add":
            s = self.param("scaled_factor", nn.with_logical_partitioning(nn.initializers.constant(1.0), ()),
                           (), self.param_dtype)
            merged = unimodal * s.astype(self.dtype) + cross
        elif self.link_tower_type == "interpolate":
            b = self.param("beta", nn.with_logical_partitioning(nn.initializers.constant(0.5), ()),
                           (), self.param_dtype).astype(self.dtype)
            merged = unimodal * (1 - b) + cross * b
        else:
            raise ValueError(f"link_tower_type={self.link_tower_type!r} is not add, scaled_add or interpolate")
        return LayerNorm(self.layer_norm_eps, self.dtype, self.param_dtype, name="LayerNorm")(merged)
