"""Building blocks shared by the three encoders.

Every parameter carries logical axis names (mapped to mesh axes by the rules in
`bridgetower_jax.sharding`) and every module takes `dtype` (compute) and `param_dtype`
(storage) explicitly: a Flax layer left at `dtype=None` silently promotes bf16
activations back to f32.
"""
from __future__ import annotations

import functools
import math
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import flax.linen as nn
import numpy as np

from bridgetower_jax.native import attention as native_attention

Dtype = jnp.dtype
Initializer = Callable

# Logical names of activations (see sharding.ACTIVATION_RULES).
ACT_BTE = ("act_batch", "act_len", "act_embed")


def normal(std: float) -> Initializer:
    return nn.initializers.normal(stddev=std)


def constrain(x: jax.Array, names: Sequence[str | None] = ACT_BTE) -> jax.Array:
    """Sharding hint for an activation; a no-op outside a mesh / rules context."""
    return nn.with_logical_constraint(x, tuple(names))


def compute_dtype(name: str) -> Dtype:
    return jnp.dtype(name)


@jax.custom_vjp
def add_bias(y: jax.Array, bias: jax.Array) -> jax.Array:
    """`y + bias`, bias over y's trailing axes. The bias gradient (the cotangent summed over the leading
    axes) is taken as a product with a ones vector: XLA:CPU reduces the columns of a wide cotangent
    ~40x slower (8.9 ms vs 0.2 ms for the MLM decoder's [36, 50304]) and narrow ones no faster."""
    return y + bias


def _add_bias_fwd(y, bias):
    return y + bias, bias


def _add_bias_bwd(bias, g):
    lead = g.ndim - bias.ndim
    ones = jnp.ones(g.shape[:lead], g.dtype)
    dims = ((tuple(range(lead)), tuple(range(lead))), ((), ()))
    accumulate = jnp.promote_types(g.dtype, jnp.float32)
    return g, jax.lax.dot_general(ones, g, dims, preferred_element_type=accumulate).astype(bias.dtype)


add_bias.defvjp(_add_bias_fwd, _add_bias_bwd)


class Dense(nn.Module):
    """`y = x . kernel + bias`, contracting the last `contract_dims` axes of x.

    `features` may be a tuple (e.g. `(heads, head_dim)` for attention projections). `axes` names
    every kernel dimension: the contracted input dims first, then the feature dims.
    """
    features: int | tuple[int, ...]
    axes: tuple[str | None, ...]
    contract_dims: int = 1
    use_bias: bool = True
    kernel_init: Initializer = normal(0.02)
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        features = self.features if isinstance(self.features, tuple) else (self.features,)
        n = self.contract_dims
        kernel_shape = tuple(x.shape[-n:]) + features
        if len(self.axes) != len(kernel_shape):
            raise ValueError(f"{self.name}: {len(self.axes)} axis names for a kernel of shape {kernel_shape}")
        kernel = self.param("kernel", nn.with_logical_partitioning(self.kernel_init, self.axes),
                            kernel_shape, self.param_dtype)
        # One 2-D GEMM, [rows, in] x [in, out]: with several leading or contracted axes the kernel's
        # gradient contracts two axes at once, and XLA:CPU then writes the whole cotangent transposed
        # before the GEMM (a strided copy as long as the GEMM itself). Both reshapes are free.
        lead, width = x.shape[:-n], math.prod(features)
        x2 = x.astype(self.dtype).reshape(math.prod(lead), math.prod(kernel_shape[:n]))
        y = x2 @ kernel.astype(self.dtype).reshape(x2.shape[1], width)
        if self.use_bias:
            bias = self.param("bias", nn.with_logical_partitioning(nn.initializers.zeros, self.axes[n:]),
                              features, self.param_dtype)
            y = add_bias(y, bias.astype(self.dtype).reshape(width))
        return y.reshape(lead + features)


class LayerNorm(nn.Module):
    """LayerNorm with biased variance, computed in at least float32 (eps 1e-5 in every BridgeTower LN).

    Flax's own LayerNorm defaults to eps 1e-6 and a fast variance formula; both differ from PyTorch.
    """
    epsilon: float = 1e-5
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        features = x.shape[-1]
        scale = self.param("scale", nn.with_logical_partitioning(nn.initializers.ones, ("norm",)),
                           (features,), self.param_dtype)
        bias = self.param("bias", nn.with_logical_partitioning(nn.initializers.zeros, ("norm",)),
                          (features,), self.param_dtype)
        return layer_norm(x, scale, bias, self.epsilon).astype(self.dtype)


def _normalize(x: jax.Array, epsilon: float) -> tuple[jax.Array, jax.Array]:
    """(x - mean) / sqrt(biased var + eps) over the last axis in >= float32, and that 1 / sqrt."""
    xf = x.astype(jnp.promote_types(x.dtype, jnp.float32))
    centred = xf - xf.mean(-1, keepdims=True)
    rstd = jax.lax.rsqrt(jnp.square(centred).mean(-1, keepdims=True) + epsilon)
    return centred * rstd, rstd


# Plain autodiff of the normalisation keeps two or three arrays of the input's size per LayerNorm (the
# centred input, the normalised one, twice the centred one for the square); its gradient needs only
# the normalised input and one scalar per row.
@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def layer_norm(x: jax.Array, scale: jax.Array, bias: jax.Array, epsilon: float) -> jax.Array:
    """LayerNorm over the last axis, in >= float32 (the result is in that dtype)."""
    return _layer_norm_fwd(x, scale, bias, epsilon)[0]


def _layer_norm_fwd(x, scale, bias, epsilon):
    x_hat, rstd = _normalize(x, epsilon)
    y = x_hat * scale.astype(x_hat.dtype) + bias.astype(x_hat.dtype)
    # The zero-size arrays carry the input and parameter dtypes to the backward pass.
    return y, (x_hat, rstd, scale, jnp.zeros((0,), x.dtype), jnp.zeros((0,), bias.dtype))


def _layer_norm_bwd(epsilon, residuals, g):
    x_hat, rstd, scale, x_like, bias_like = residuals
    g = g.astype(x_hat.dtype)
    leading = tuple(range(g.ndim - 1))
    d_scale = jnp.sum(g * x_hat, axis=leading).astype(scale.dtype)
    d_bias = jnp.sum(g, axis=leading).astype(bias_like.dtype)
    d_xhat = g * scale.astype(x_hat.dtype)
    d_x = rstd * (d_xhat - d_xhat.mean(-1, keepdims=True) - x_hat * (d_xhat * x_hat).mean(-1, keepdims=True))
    return d_x.astype(x_like.dtype), d_scale, d_bias


layer_norm.defvjp(_layer_norm_fwd, _layer_norm_bwd)


class Embed(nn.Module):
    """Lookup table. `frozen_id` reproduces `nn.Embedding(padding_idx=...)`: that row gets no gradient."""
    num_embeddings: int
    features: int
    axes: tuple[str | None, str | None] = (None, "embed")
    embedding_init: Initializer = normal(0.02)
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, ids: jax.Array, frozen_id: int | None = None) -> jax.Array:
        table = self.param("embedding", nn.with_logical_partitioning(self.embedding_init, self.axes),
                           (self.num_embeddings, self.features), self.param_dtype)
        out = jnp.take(table, ids, axis=0)
        if frozen_id is not None:
            out = jnp.where((ids == frozen_id)[..., None], jax.lax.stop_gradient(out), out)
        return out.astype(self.dtype)


# Both activations keep only their input for the backward pass and recompute the rest there (a few
# elementwise ops fused into the gradient's own pass). Plain autodiff keeps two or three intermediates
# of every [rows, 3072] activation, which costs memory and, under a layer scan, a copy each into the
# stacked residuals.
@jax.custom_vjp
def quick_gelu(x: jax.Array) -> jax.Array:
    """CLIP's activation: x * sigmoid(1.702 x)."""
    return x * jax.nn.sigmoid(1.702 * x)


def _quick_gelu_fwd(x):
    return quick_gelu(x), x


def _quick_gelu_bwd(x, g):
    s = jax.nn.sigmoid(1.702 * x)
    return (g * (s + 1.702 * x * s * (1.0 - s)),)


quick_gelu.defvjp(_quick_gelu_fwd, _quick_gelu_bwd)


@jax.custom_vjp
def gelu_exact(x: jax.Array) -> jax.Array:
    """transformers' "gelu": 0.5 x (1 + erf(x / sqrt 2)), as PyTorch computes it.

    Not `jax.nn.gelu(approximate=False)`, which goes through erfc: XLA expands erfc into two
    polynomial branches and a select, ~5x the time of erf on CPU. erf loses relative precision only
    where GELU is below ~1e-7 in absolute value, as PyTorch's kernel does.
    """
    return 0.5 * x * (1.0 + jax.lax.erf(x * 0.7071067811865476))   # Python floats keep x's dtype


def _gelu_exact_fwd(x):
    return gelu_exact(x), x


def _gelu_exact_bwd(x, g):
    cdf = 0.5 * (1.0 + jax.lax.erf(x * 0.7071067811865476))
    pdf = jnp.exp(-0.5 * x * x) * 0.3989422804014327        # 1 / sqrt(2 pi)
    return (g * (cdf + x * pdf),)


gelu_exact.defvjp(_gelu_exact_fwd, _gelu_exact_bwd)


# `jax.nn.softmax` is differentiated through `exp(x - max) / sum` unless the global flag
# `jax_softmax_custom_jvp` is set (off by default in this JAX): the backward pass then keeps both the
# exponentials and the probabilities of every [B, N, Tq, Tk] score array, and reads both again. Its
# gradient only needs the probabilities, so they are the one residual here.
@jax.custom_vjp
def softmax_last_axis(x: jax.Array) -> jax.Array:
    """`jax.nn.softmax(x, axis=-1)` (the same forward) whose backward pass keeps only the output."""
    return jax.nn.softmax(x, axis=-1)


def _softmax_last_axis_fwd(x):
    y = softmax_last_axis(x)
    return y, y


def _softmax_last_axis_bwd(y, g):
    return (y * (g - jnp.sum(g * y, axis=-1, keepdims=True)),)


softmax_last_axis.defvjp(_softmax_last_axis_fwd, _softmax_last_axis_bwd)


def _fmix32(x: jax.Array) -> jax.Array:
    """MurmurHash3's 32-bit finaliser: a bijection on uint32 with full avalanche."""
    x = x ^ (x >> 16)
    x = x * jnp.uint32(0x85EBCA6B)
    x = x ^ (x >> 13)
    x = x * jnp.uint32(0xC2B2AE35)
    return x ^ (x >> 16)


def dropout_keep_mask(rng: jax.Array, keep_prob: float, shape: tuple[int, ...], impl: str = "threefry") -> jax.Array:
    """Bernoulli(keep_prob) mask of `shape`.

    "threefry": `jax.random.bernoulli`, one Threefry evaluation per element. On CPU that costs ~40-80 ns
    per element and a large HLO (slow compiles); a base pre-training step draws ~60 M such bits.
    "hash": two rounds of a counter-based hash (murmur3's finaliser) of each element's flat index,
    keyed by two words drawn from `rng`: a handful of integer ops per element that XLA fuses into
    the consumer. Different keys give unrelated masks; the keep rate is exact to 2**-32.
    """
    if impl == "threefry":
        return jax.random.bernoulli(rng, keep_prob, shape)
    if impl != "hash":
        raise ValueError(f"dropout impl {impl!r} is not 'threefry' or 'hash'")
    k0, k1 = jax.random.bits(rng, (2,), jnp.uint32)
    index = jnp.zeros(shape, jnp.uint32)
    stride = 1
    for axis in reversed(range(len(shape))):
        index = index + jax.lax.broadcasted_iota(jnp.uint32, shape, axis) * jnp.uint32(stride & 0xFFFFFFFF)
        stride *= shape[axis]
    h = _fmix32(_fmix32(index * jnp.uint32(0x9E3779B9) + k0) ^ k1)
    return h < jnp.uint32(min(int(keep_prob * 2.0 ** 32), 2 ** 32 - 1))


class Dropout(nn.Module):
    """`nn.Dropout` with a choice of mask generator (see `dropout_keep_mask`). Named like Flax's class, so
    with impl "threefry" it draws the very same rng, and so the very same masks, as `nn.Dropout`."""
    rate: float
    impl: str = "threefry"

    @nn.compact
    def __call__(self, x: jax.Array, deterministic: bool) -> jax.Array:
        if deterministic or self.rate == 0.0:
            return x
        if self.rate == 1.0:
            return jnp.zeros_like(x)
        keep_prob = 1.0 - self.rate
        keep = dropout_keep_mask(self.make_rng("dropout"), keep_prob, x.shape, self.impl)
        return jax.lax.select(keep, x / keep_prob, jnp.zeros_like(x))


def dot_product_attention(q: jax.Array, k: jax.Array, v: jax.Array, key_mask: jax.Array | None, *,
                          impl: str = "xla", dropout_rate: float = 0.0, deterministic: bool = True,
                          dropout_rng: jax.Array | None = None, dropout_impl: str = "threefry") -> jax.Array:
    """Bidirectional multi-head attention, the single place every attention in the model goes through.

    q: [B, Tq, N, D]; k, v: [B, Tk, N, D]; key_mask: bool [B, Tk] (True = attend) or None.
    impl "xla" is the exact-parity einsum path (scores scaled by D**-0.5, masked keys set to the
    dtype's most negative value as transformers does, softmax in >= float32, dropout on the
    probabilities). impl "fused" calls `jax.nn.dot_product_attention`, which XLA lowers to cuDNN
    flash attention on GPU; it applies no attention-probability dropout. impl "cpu_kernel" computes
    what "xla" computes (to float32 rounding) with a hand-written XLA:CPU kernel
    (`bridgetower_jax.native.attention`), where it applies: when no attention dropout is drawn; its
    gradient is the "xla" path's, which the forward of a differentiated call also runs.
    """
    depth = q.shape[-1]
    if impl == "fused":
        mask = None if key_mask is None else key_mask[:, None, None, :]
        return jax.nn.dot_product_attention(q, k, v, mask=mask, scale=depth ** -0.5)
    if impl == "cpu_kernel" and (dropout_rate == 0.0 or deterministic):
        return _kernel_attention(q, k, v, key_mask)
    # The scale goes on q ([B, Tq, N, D]), not on the scores ([B, N, Tq, Tk], Tk/D times larger). For
    # head widths that are powers of four (64 in every BridgeTower) the scale is a power of two and
    # both orders round identically.
    # Heads go in front ([B, N, T, D]) before both products: each is then a plain batched GEMM (alone,
    # a b4 vision attention on XLA:CPU takes 18 ms this way, 25 ms as einsums over [B, T, N, D]).
    q, k, v = (x.transpose(0, 2, 1, 3) for x in (q, k, v))
    scores = jnp.einsum("bnqd,bnkd->bnqk", q * jnp.asarray(depth ** -0.5, q.dtype), k)
    scores = scores.astype(jnp.promote_types(scores.dtype, jnp.float32))
    if key_mask is not None:
        scores = jnp.where(key_mask[:, None, None, :], scores, jnp.finfo(scores.dtype).min)
    probs = softmax_last_axis(scores).astype(v.dtype)
    if dropout_rate > 0.0 and not deterministic:
        keep = dropout_keep_mask(dropout_rng, 1.0 - dropout_rate, probs.shape, dropout_impl)
        probs = jnp.where(keep, probs / (1.0 - dropout_rate), 0.0).astype(v.dtype)
    return jnp.einsum("bnqk,bnkd->bnqd", probs, v).transpose(0, 2, 1, 3)


@jax.custom_vjp
def _kernel_attention(q: jax.Array, k: jax.Array, v: jax.Array, key_mask: jax.Array | None) -> jax.Array:
    """impl "cpu_kernel": the native kernel for the value; differentiated through the "xla" path."""
    return native_attention.attention(q, k, v, key_mask, q.shape[-1] ** -0.5)


def _kernel_attention_fwd(q, k, v, key_mask):
    # Under differentiation the exact path runs instead: its VJP keeps what the backward pass needs
    # (the probabilities), which the kernel never materialises.
    out, vjp = jax.vjp(lambda q, k, v: dot_product_attention(q, k, v, key_mask), q, k, v)
    return out, (vjp, key_mask)


def _kernel_attention_bwd(residuals, g):
    vjp, key_mask = residuals
    # The mask selects keys; nothing flows back into it. JAX wants float0 zeros for bool and integer
    # masks and zeros of the mask's own dtype for a float one.
    if key_mask is None:
        mask_cotangent = None
    elif jnp.issubdtype(key_mask.dtype, jnp.inexact):
        mask_cotangent = jnp.zeros_like(key_mask)
    else:
        mask_cotangent = np.zeros(key_mask.shape, jax.dtypes.float0)
    return (*vjp(g), mask_cotangent)


_kernel_attention.defvjp(_kernel_attention_fwd, _kernel_attention_bwd)


class MultiHeadAttention(nn.Module):
    """Projections + `dot_product_attention` + output projection (query/key/value/out)."""
    num_heads: int
    attention_impl: str = "xla"
    dropout_rate: float = 0.0
    deterministic: bool = True
    qkv_init: Initializer = normal(0.02)
    out_init: Initializer = normal(0.02)
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32
    dropout_impl: str = "threefry"

    @nn.compact
    def __call__(self, x: jax.Array, context: jax.Array, context_mask: jax.Array | None) -> jax.Array:
        width = x.shape[-1]
        head_dim = width // self.num_heads

        def proj(name, inputs):
            y = Dense((self.num_heads, head_dim), ("embed", "heads", "kv"), kernel_init=self.qkv_init,
                      dtype=self.dtype, param_dtype=self.param_dtype, name=name)(inputs)
            return constrain(y, ("act_batch", "act_len", "act_heads", None))

        q, k, v = proj("query", x), proj("key", context), proj("value", context)
        dropout_rng = None
        if self.dropout_rate > 0.0 and not self.deterministic:
            dropout_rng = self.make_rng("dropout")
        out = dot_product_attention(q, k, v, context_mask, impl=self.attention_impl,
                                    dropout_rate=self.dropout_rate, deterministic=self.deterministic,
                                    dropout_rng=dropout_rng, dropout_impl=self.dropout_impl)
        return Dense(width, ("heads", "kv", "embed"), contract_dims=2, kernel_init=self.out_init,
                     dtype=self.dtype, param_dtype=self.param_dtype, name="out")(out)


class PostLNAttentionBlock(nn.Module):
    """BERT attention sub-layer: `LayerNorm(x + dropout(out(attn(x, context))))`."""
    num_heads: int
    layer_norm_eps: float
    hidden_dropout: float
    attention_dropout: float
    attention_impl: str = "xla"
    deterministic: bool = True
    init_std: float = 0.02
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32
    dropout_impl: str = "threefry"

    @nn.compact
    def __call__(self, x, context, context_mask):
        y = MultiHeadAttention(self.num_heads, self.attention_impl, self.attention_dropout, self.deterministic,
                               qkv_init=normal(self.init_std), out_init=normal(self.init_std),
                               dtype=self.dtype, param_dtype=self.param_dtype, dropout_impl=self.dropout_impl,
                               name="attn")(x, context, context_mask)
        y = Dropout(self.hidden_dropout, self.dropout_impl)(y, deterministic=self.deterministic)
        return LayerNorm(self.layer_norm_eps, self.dtype, self.param_dtype, name="LayerNorm")(y + x)


class PostLNFeedForward(nn.Module):
    """BERT FFN sub-layer: `LayerNorm(x + dropout(output(gelu(intermediate(x)))))`."""
    intermediate_size: int
    layer_norm_eps: float
    hidden_dropout: float
    deterministic: bool = True
    init_std: float = 0.02
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32
    dropout_impl: str = "threefry"

    @nn.compact
    def __call__(self, x):
        h = Dense(self.intermediate_size, ("embed", "mlp"), kernel_init=normal(self.init_std),
                  dtype=self.dtype, param_dtype=self.param_dtype, name="intermediate")(x)
        h = constrain(gelu_exact(h), ("act_batch", "act_len", "act_mlp"))
        h = Dense(x.shape[-1], ("mlp", "embed"), kernel_init=normal(self.init_std),
                  dtype=self.dtype, param_dtype=self.param_dtype, name="output")(h)
        h = Dropout(self.hidden_dropout, self.dropout_impl)(h, deterministic=self.deterministic)
        return LayerNorm(self.layer_norm_eps, self.dtype, self.param_dtype, name="LayerNorm")(h + x)


class Pooler(nn.Module):
    """`tanh(dense(x[:, 0]))` on the first token."""
    init_std: float = 0.02
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        width = x.shape[-1]
        return jnp.tanh(Dense(width, ("embed", "embed_out"), kernel_init=normal(self.init_std),
                              dtype=self.dtype, param_dtype=self.param_dtype, name="dense")(x[:, 0]))


def layer_stack(block: type[nn.Module], count: int, x: jax.Array, mask: jax.Array | None, *, name: str,
                remat: bool, **block_kwargs) -> tuple[jax.Array, list[jax.Array]]:
    """Run `count` identical layers as one `nn.scan` (parameters stacked on a leading "layers" axis).

    The block's call signature is `(x, mask) -> (x, x or None)`, asked for the second x with
    `emit_hidden`; `mask` is broadcast to every layer. Returns the final x and every layer's output.
    """
    if count == 0:
        return x, []
    cls = nn.remat(block, prevent_cse=False) if remat else block
    scanned = nn.scan(cls, variable_axes={"params": 0}, split_rngs={"params": True, "dropout": True},
                      in_axes=nn.broadcast, length=count,
                      metadata_params={nn.PARTITION_NAME: "layers"})
    x, ys = scanned(emit_hidden=True, name=name, **block_kwargs)(x, mask)
    return x, [ys[i] for i in range(count)]


def maybe_remat(block: type[nn.Module], remat: bool) -> type[nn.Module]:
    """The block class, rematerialised in the backward pass when `remat` is set."""
    return nn.remat(block) if remat else block
