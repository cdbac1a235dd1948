"""Losses as pure functions of model outputs and batch arrays.

Each mirrors the reference implementation's reduction exactly (see the docstrings), so that
gradients can be compared one to one with transformers / the original repository.
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

IGNORE_INDEX = -100


def label_logit(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """`logits[..., label]` (0 where the label is out of range, e.g. -100).

    A compare-and-sum over the vocabulary rather than `take_along_axis`: its gradient is an
    elementwise select that fuses into the softmax backward, where the gather's is a scatter into a
    materialised zero array of the logits' size (B x T x 50k for the MLM head).
    """
    hit = jax.lax.broadcasted_iota(labels.dtype, logits.shape, logits.ndim - 1) == labels[..., None]
    return jnp.sum(jnp.where(hit, logits, 0), axis=-1)


def masked_lm_loss(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Mean token cross-entropy over positions whose label is not -100 (torch CrossEntropyLoss)."""
    valid = labels != IGNORE_INDEX
    logits = logits.astype(jnp.promote_types(logits.dtype, jnp.float32))
    nll = jax.nn.logsumexp(logits, axis=-1) - label_logit(logits, labels)
    return jnp.sum(jnp.where(valid, nll, 0.0)) / jnp.maximum(valid.sum(), 1)


def masked_lm_loss_and_accuracy(head: Callable[[jax.Array], jax.Array], features: jax.Array, labels: jax.Array,
                                slots: int) -> tuple[jax.Array, jax.Array]:
    """`masked_lm_loss` and `masked_lm_accuracy` of `head(features)`, decoding only labelled positions.

    The vocabulary projection and its softmax dominate a small model's step and cost ~1.5 % of base's,
    yet only ~15 % of positions carry a label. Each row's first `slots` labelled positions are gathered
    (unlabelled ones fill the rest, with label -100) and only those are decoded: exact for rows with at
    most `slots` labels, which the pipeline guarantees (`data.text.mask_tokens`' max_predictions, from
    the same `mlm_prediction_slots`). features [B, T, H], labels [B, T] -> (loss, accuracy).
    """
    if slots < labels.shape[-1]:
        # A stable sort puts each row's labelled positions first, in order.
        positions = jnp.argsort(labels == IGNORE_INDEX, axis=-1, stable=True)[:, :slots]
        features = jnp.take_along_axis(features, positions[..., None], axis=1)
        labels = jnp.take_along_axis(labels, positions, axis=1)
    logits = head(features)
    return masked_lm_loss(logits, labels), masked_lm_accuracy(logits, labels)


def alternating_itm_labels(batch_size: int) -> jax.Array:
    """ITM labels of a pre-training batch: 1 (matched) on even rows, 0 on odd rows (see
    `BridgeTowerForPreTraining.pretraining_forwards`)."""
    return 1 - jnp.arange(batch_size, dtype=jnp.int32) % 2


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Mean cross-entropy over the batch for integer labels (ITM, NLVR2, SNLI-VE)."""
    logp = jax.nn.log_softmax(logits.astype(jnp.promote_types(logits.dtype, jnp.float32)), axis=-1)
    return -jnp.mean(jnp.take_along_axis(logp, labels[..., None], axis=-1))


def vqa_loss(logits: jax.Array, targets: jax.Array) -> jax.Array:
    """The original's VQA loss: binary cross-entropy with soft targets, mean over B x A, times A
    (a sum over answers and a mean over questions)."""
    logits = logits.astype(jnp.promote_types(logits.dtype, jnp.float32))
    per_entry = jnp.maximum(logits, 0) - logits * targets + jnp.log1p(jnp.exp(-jnp.abs(logits)))
    return jnp.mean(per_entry) * targets.shape[-1]


def masked_lm_accuracy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Share of labelled positions whose label has the top logit. Compared with the max rather than
    through `argmax` (a variadic value-and-index reduction, ~8x slower on XLA:CPU); the two differ only
    on exact ties."""
    valid = labels != IGNORE_INDEX
    hits = (label_logit(logits, labels) >= jnp.max(logits, axis=-1)) & valid
    return hits.sum() / jnp.maximum(valid.sum(), 1)


def gathered_contrastive_loss(text: jax.Array, image: jax.Array, group: jax.Array, logit_scale) -> jax.Array:
    """`soft_contrastive_loss` over the *global* batch, computed shard-locally.

    Inside `jax.shard_map` each batch shard gathers every shard's embeddings (all_gather over the
    data and fsdp axes), scores its own rows against all of them in both directions and averages;
    memory is O(local x global) rather than global x global. `group` [B] ids equal positives
    (the image index; arange for one caption per image). Must run under `jax.set_mesh(mesh)`.
    """
    from jax.sharding import PartitionSpec as P
    from bridgetower_jax.sharding import BATCH_AXES

    def local(t, i, g, scale):
        all_t = jax.lax.all_gather(t, BATCH_AXES, tiled=True)
        all_i = jax.lax.all_gather(i, BATCH_AXES, tiled=True)
        all_g = jax.lax.all_gather(g, BATCH_AXES, tiled=True)

        def soft_ce(queries, keys, q_group):
            logits = queries @ keys.T * scale
            pos = (q_group[:, None] == all_g[None, :]).astype(logits.dtype)
            return -jnp.sum(jnp.sum(jax.nn.log_softmax(logits, -1) * pos / pos.sum(-1, keepdims=True), -1))

        local_sum = soft_ce(t, all_i, g) + soft_ce(i, all_t, g)
        return jax.lax.psum(local_sum, BATCH_AXES) / (2 * all_g.shape[0])

    return jax.shard_map(local, in_specs=(P(BATCH_AXES), P(BATCH_AXES), P(BATCH_AXES), P()), out_specs=P(),
                         check_vma=False)(text, image, group, logit_scale)


def sample_hard_negatives(similarity: jax.Array, positives: jax.Array, rng: jax.Array) -> jax.Array:
    """For each row, one column drawn with probability softmax(similarity) over non-positives
    (ALBEF-style hard negatives, as the original's ITM with ITC-sampled negatives)."""
    logits = jnp.where(positives, -jnp.inf, jax.lax.stop_gradient(similarity))
    # A row with nothing but positives would have no valid draw; fall back to uniform over all.
    logits = jnp.where(jnp.all(positives, -1, keepdims=True), 0.0, logits)
    return jax.random.categorical(rng, logits, axis=-1)
