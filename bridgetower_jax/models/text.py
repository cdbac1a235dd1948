"""RoBERTa text tower: post-LN BERT layers, erf GELU, padding-aware position ids."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import flax.linen as nn

from bridgetower_jax.models.config import BridgeTowerConfig, TextConfig
from bridgetower_jax.models.layers import (Dropout, Dtype, Embed, LayerNorm, Pooler, PostLNAttentionBlock,
                                           PostLNFeedForward, constrain, layer_stack, maybe_remat, normal)


def roberta_position_ids(input_ids: jax.Array, pad_token_id: int) -> jax.Array:
    """fairseq/RoBERTa positions: real tokens count up from pad+1, pad tokens sit at pad."""
    is_real = (input_ids != pad_token_id).astype(jnp.int32)
    return jnp.cumsum(is_real, axis=1) * is_real + pad_token_id


class TextEmbeddings(nn.Module):
    config: TextConfig
    padded_vocab_size: int
    init_std: float = 0.02
    deterministic: bool = True
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32
    dropout_impl: str = "threefry"

    @nn.compact
    def __call__(self, input_ids: jax.Array) -> jax.Array:
        c = self.config
        longest = input_ids.shape[1] + c.pad_token_id + 1
        if longest > c.max_position_embeddings:
            raise ValueError(f"text length {input_ids.shape[1]} needs {longest} position rows but "
                             f"text.max_position_embeddings={c.max_position_embeddings}")
        kw = dict(embedding_init=normal(self.init_std), dtype=self.dtype, param_dtype=self.param_dtype)
        pad = c.pad_token_id
        # nn.Embedding(padding_idx=pad) in the reference: the pad rows receive no gradient.
        # Only the hidden dimension is sharded: a gather from a vocabulary-sharded table makes XLA
        # replicate the table anyway (SPMD "involuntary full rematerialization").
        words = Embed(self.padded_vocab_size, c.hidden_size, (None, "embed"), name="word_embeddings", **kw)(
            input_ids, frozen_id=pad)
        types = Embed(c.type_vocab_size, c.hidden_size, name="token_type_embeddings", **kw)(
            jnp.zeros_like(input_ids))
        positions = Embed(c.max_position_embeddings, c.hidden_size, name="position_embeddings", **kw)(
            roberta_position_ids(input_ids, pad), frozen_id=pad)
        x = LayerNorm(c.layer_norm_eps, self.dtype, self.param_dtype, name="LayerNorm")(words + types + positions)
        return Dropout(c.hidden_dropout_prob, self.dropout_impl)(x, deterministic=self.deterministic)


class TextLayer(nn.Module):
    """One RoBERTa layer. Returns `(x, x or None)` so that it can also be the body of an nn.scan."""
    config: TextConfig
    attention_impl: str = "xla"
    deterministic: bool = True
    emit_hidden: bool = False
    init_std: float = 0.02
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32
    dropout_impl: str = "threefry"

    @nn.compact
    def __call__(self, x, key_mask):
        c = self.config
        x = PostLNAttentionBlock(c.num_attention_heads, c.layer_norm_eps, c.hidden_dropout_prob,
                                 c.attention_probs_dropout_prob, self.attention_impl, self.deterministic,
                                 self.init_std, self.dtype, self.param_dtype, self.dropout_impl,
                                 name="attention")(x, x, key_mask)
        x = PostLNFeedForward(c.intermediate_size, c.layer_norm_eps, c.hidden_dropout_prob, self.deterministic,
                              self.init_std, self.dtype, self.param_dtype, self.dropout_impl, name="ffn")(x)
        x = constrain(x)
        return x, (x if self.emit_hidden else None)


class TextEncoder(nn.Module):
    """Embeddings and all text layers.

    Returns the `num_hidden_layers` (cross-modal) outputs that feed the bridges -- the output of
    layer split-1 (the embeddings when split is 0) and of every layer above it -- and, when asked,
    every hidden state (embeddings first), as transformers' `hidden_states[0]`.
    """
    config: BridgeTowerConfig

    @nn.compact
    def __call__(self, input_ids, key_mask, deterministic: bool = True, output_hidden_states: bool = False):
        cfg, t, comp = self.config, self.config.text, self.config.compute
        dtype, param_dtype = jnp.dtype(comp.dtype), jnp.dtype(comp.param_dtype)
        x = TextEmbeddings(t, cfg.padded_vocab_size, cfg.initializer_range, deterministic, dtype, param_dtype,
                           comp.dropout_impl, name="embeddings")(input_ids)
        x = constrain(x)
        hidden = [x]
        kw = dict(config=t, attention_impl=comp.attention_impl, dropout_impl=comp.dropout_impl,
                  deterministic=deterministic,
                  init_std=cfg.initializer_range, dtype=dtype, param_dtype=param_dtype)
        if comp.scan_layers:
            # One scan over every layer, emitting each output: the bridges read the top ones.
            x, states = layer_stack(TextLayer, t.num_hidden_layers, x, key_mask, name="layers_scan",
                                    remat=comp.remat, **kw)
            hidden += states
        else:
            for i in range(t.num_hidden_layers):
                x, _ = maybe_remat(TextLayer, comp.remat)(name=f"layer_{i}", **kw)(x, key_mask)
                hidden.append(x)
        # hidden[i] is the input of layer i: the bridges take the outputs of layers split-1 .. top.
        bridges = hidden[cfg.split_index:]
        if self.is_initializing():
            # transformers keeps RoBERTa's pooler although BridgeTower never calls it; creating it at
            # init keeps the parameter set complete for a clean export.
            Pooler(cfg.initializer_range, dtype, param_dtype, name="pooler")(x)
        return bridges, (tuple(hidden) if output_hidden_states else None)
