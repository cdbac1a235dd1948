"""Losses as pure functions of model outputs and batch arrays.

Each mirrors the reference implementation's reduction exactly (see the docstrings), so that
gradients can be compared one to one with transformers / the original repository.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

IGNORE_INDEX = -100


def masked_lm_loss(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Mean token cross-entropy over positions whose label is not -100 (torch CrossEntropyLoss)."""
    valid = labels != IGNORE_INDEX
    safe = jnp.where(valid, labels, 0)
    logp = jax.nn.log_softmax(logits.astype(jnp.promote_types(logits.dtype, jnp.float32)), axis=-1)
    nll = -jnp.take_along_axis(logp, safe[..., None], axis=-1)[..., 0]
    return jnp.sum(jnp.where(valid, nll, 0.0)) / jnp.maximum(valid.sum(), 1)


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Mean cross-entropy over the batch for integer labels (ITM, NLVR2, SNLI-VE)."""
    logp = jax.nn.log_softmax(logits.astype(jnp.promote_types(logits.dtype, jnp.float32)), axis=-1)
    return -jnp.mean(jnp.take_along_axis(logp, labels[..., None], axis=-1))


def contrastive_loss(text: jax.Array, image: jax.Array, cross: jax.Array, logit_scale: jax.Array) -> jax.Array:
    """transformers' BridgeTowerForContrastiveLearning loss: the mean of three row-wise InfoNCE terms
    (text->image, text->cross, image->cross) over normalised embeddings, labels = arange(B)."""
    labels = jnp.arange(text.shape[0])
    terms = [cross_entropy(a @ b.T * logit_scale, labels) for a, b in ((text, image), (text, cross), (image, cross))]
    return sum(terms) / 3.0
