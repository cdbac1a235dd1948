"""CLIP ViT vision tower (pre-LN blocks, QuickGELU, class token, ln_pre, shared ln_post)."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import flax.linen as nn

from bridgetower_jax.models.config import BridgeTowerConfig, VisionConfig
from bridgetower_jax.models.layers import (Dense, Dtype, Embed, LayerNorm, MultiHeadAttention, constrain,
                                           layer_stack, maybe_remat, normal, quick_gelu)


class VisionEmbeddings(nn.Module):
    """Patchify (a bias-free conv with kernel = stride = patch) + class token + position table."""
    config: VisionConfig
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, pixel_values: jax.Array) -> jax.Array:
        c = self.config
        b, h, w, ch = pixel_values.shape
        if (h, w, ch) != (c.image_size, c.image_size, c.num_channels):
            raise ValueError(f"pixel_values has shape {pixel_values.shape} (NHWC) but the vision config expects "
                             f"[B, {c.image_size}, {c.image_size}, {c.num_channels}]")
        p, g = c.patch_size, c.image_size // c.patch_size
        # [B, gy, p, gx, p, C] -> [B, gy, gx, p, p, C]: a strided conv as one matmul over (p, p, C);
        # tokens come out row-major (y major, x minor) like the flattened conv output in PyTorch.
        patches = pixel_values.reshape(b, g, p, g, p, ch).transpose(0, 1, 3, 2, 4, 5)
        std = c.hidden_size ** -0.5
        x = Dense(c.hidden_size, (None, None, None, "embed"), contract_dims=3, use_bias=False,
                  kernel_init=normal(0.02), dtype=self.dtype, param_dtype=self.param_dtype,
                  name="patch_embedding")(patches).reshape(b, g * g, c.hidden_size)
        cls = self.param("class_embedding", nn.with_logical_partitioning(normal(std), ("embed",)),
                         (c.hidden_size,), self.param_dtype)
        cls = jnp.broadcast_to(cls.astype(self.dtype), (b, 1, c.hidden_size))
        positions = Embed(c.num_positions, c.hidden_size, embedding_init=normal(std), dtype=self.dtype,
                          param_dtype=self.param_dtype, name="position_embedding")(jnp.arange(c.num_positions))
        return jnp.concatenate([cls, x], axis=1) + positions[None]


class VisionBlock(nn.Module):
    """CLIP residual block: `x + attn(ln_1(x))`, then `x + c_proj(quick_gelu(c_fc(ln_2(x))))`."""
    config: VisionConfig
    num_blocks: int = 12   # CLIP's initialisation scales the residual projections by depth
    attention_impl: str = "xla"
    emit_hidden: bool = False
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x, key_mask=None):
        c = self.config
        d = c.hidden_size
        attn_std, proj_std, fc_std = d ** -0.5, d ** -0.5 * (2 * self.num_blocks) ** -0.5, (2 * d) ** -0.5
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        h = LayerNorm(c.layer_norm_eps, name="ln_1", **kw)(x)
        x = x + MultiHeadAttention(c.num_attention_heads, self.attention_impl, qkv_init=normal(attn_std),
                                   out_init=normal(proj_std), name="attn", **kw)(h, h, None)
        h = LayerNorm(c.layer_norm_eps, name="ln_2", **kw)(x)
        h = Dense(4 * d, ("embed", "mlp"), kernel_init=normal(fc_std), name="c_fc", **kw)(h)
        h = constrain(quick_gelu(h), ("act_batch", "act_len", "act_mlp"))
        x = x + Dense(d, ("mlp", "embed"), kernel_init=normal(proj_std), name="c_proj", **kw)(h)
        x = constrain(x)
        return x, (x if self.emit_hidden else None)


class VisionEncoder(nn.Module):
    """Embeddings, ln_pre and the blocks up to the text depth.

    Returns `ln_post` of each bridged block output (the `num_hidden_layers` that feed the cross-modal
    stack) and, when asked, the raw hidden states (ln_pre output first), as transformers'
    `hidden_states[1]` but batch-first.
    """
    config: BridgeTowerConfig

    @nn.compact
    def __call__(self, pixel_values, output_hidden_states: bool = False):
        cfg, v, comp = self.config, self.config.vision, self.config.compute
        dtype, param_dtype = jnp.dtype(comp.dtype), jnp.dtype(comp.param_dtype)
        kw = dict(dtype=dtype, param_dtype=param_dtype)
        x = VisionEmbeddings(v, name="embeddings", **kw)(pixel_values.astype(dtype))
        x = constrain(LayerNorm(v.layer_norm_eps, name="ln_pre", **kw)(x))
        ln_post = LayerNorm(v.layer_norm_eps, name="ln_post", **kw)
        hidden = [x]
        block_kw = dict(config=v, num_blocks=v.num_hidden_layers, attention_impl=comp.attention_impl,
                        **kw)
        depth = cfg.text.num_hidden_layers
        if comp.scan_layers:
            # One scan over every block that runs, emitting each output: the bridges read the top ones.
            x, states = layer_stack(VisionBlock, depth, x, None, name="blocks_scan", remat=comp.remat,
                                    **block_kw)
            hidden += states
        else:
            for i in range(depth):
                x, _ = maybe_remat(VisionBlock, comp.remat)(name=f"block_{i}", **block_kw)(x)
                hidden.append(x)
        # hidden[i] is the input of block i: the bridges take the outputs of blocks split-1 .. depth-1.
        bridges = [ln_post(h) for h in hidden[cfg.split_index:]]
        if self.is_initializing():
            # Blocks deeper than the text tower never run, and the per-layer `ln_separate` norms are
            # only used by transformers' standalone vision model; both are part of its state dict.
            for i in range(depth, v.num_hidden_layers):
                x, _ = VisionBlock(name=f"block_{i}", **block_kw)(x)
            if not v.share_layernorm:
                for i in range(v.num_hidden_layers):
                    LayerNorm(v.layer_norm_eps, name=f"ln_separate_{i}", **kw)(x)
        return bridges, (tuple(hidden) if output_hidden_states else None)
