"""Image-text retrieval evaluation: Recall@K and BridgeTower's ITC-shortlist + ITM re-rank.

    rows_by_index(rows, indices, example_mask=None, num_rows=None) -> rows in index order
    similarity_matrix(image_embeds, text_embeds) -> [N_images, N_texts] ITC scores
    itc_then_itm_scores(image_embeds, text_embeds, itm_score_fn, k_test, *, chunk_size=256,
                        texts_per_image=1, ...)
        -> [N_images, N_texts] re-ranked scores (the original `compute_irtr_itm_itc_recall`)
    cheapest_texts_per_image(pairs_per_image, chunk_size, image_cost, images_multiple_of=1) -> P
    recall_at_k(scores, text_to_image, ks=(1, 5, 10)) -> {"tr_r1", ..., "ir_r10", "tr_mean",
        "ir_mean", "r_mean", "rsum"} as fractions in [0, 1] (the original logs x100)

Every score matrix is [N_images, N_texts]; `text_to_image[t]` is the index of text t's image.
Ties are broken towards the lower index everywhere (as a stable sort would), so results never
depend on the backend.
"""
from __future__ import annotations

import collections
import functools
import math
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

# The original's value for pairs that were not re-ranked: below any ITM logit seen in practice.
NOT_RERANKED = -100.0

# itm_score_fn(image_ids int32 [C / P], text_ids int32 [C], valid bool [C]) -> positive-class ITM
# logits [C] (the original's `itm_score(...)[:, 1]`) of the pairs (image_ids[r // P], text_ids[r]):
# each image serves P = texts_per_image consecutive rows, so the vision tower can run once per image
# and not once per pair. Entries where `valid` is False are padding.
ItmScoreFn = Callable[[np.ndarray, np.ndarray, np.ndarray], "np.ndarray | jax.Array"]


# ---- assembling features from padded evaluation batches ------------------------------------------

def rows_by_index(rows, indices, example_mask=None, num_rows: int | None = None) -> np.ndarray:
    """Put the rows of concatenated eval batches at their dataset index, dropping padding rows.

    `rows` [M, ...] (e.g. image embeddings, or the texts' `image_index`), `indices` [M] (the
    stream's `image_index` / `text_index`), `example_mask` [M]. Padding rows point at real
    records, so they must be masked out; every index in [0, num_rows) must then appear exactly
    once, otherwise a shard was lost or duplicated and the recalls would silently be wrong.
    """
    rows, indices = np.asarray(rows), np.asarray(indices).reshape(-1)
    keep = np.ones(len(indices), bool) if example_mask is None else np.asarray(example_mask).reshape(-1) != 0
    rows, indices = rows[keep], indices[keep]
    if num_rows is None:
        num_rows = int(indices.max()) + 1 if indices.size else 0
    counts = np.bincount(indices, minlength=num_rows) if indices.size else np.zeros(num_rows, np.int64)
    if len(counts) > num_rows or (counts != 1).any():
        missing = np.flatnonzero(counts[:num_rows] == 0)[:5].tolist()
        repeated = np.flatnonzero(counts > 1)[:5].tolist()
        raise ValueError(f"indices must cover 0..{num_rows - 1} once each; missing e.g. {missing}, "
                         f"repeated e.g. {repeated}, out of range: {len(counts) > num_rows}")
    out = np.empty((num_rows,) + rows.shape[1:], rows.dtype)
    out[indices] = rows
    return out


# ---- Recall@K -----------------------------------------------------------------------------------

# Rows (or columns) ranked per block, so a COCO-sized matrix needs a few hundred MB of temporaries.
_RANK_BLOCK = 1024


def _text_retrieval_ranks(scores: np.ndarray, text_to_image: np.ndarray) -> np.ndarray:
    """Per image, the 0-based rank of its best-ranked own text (inf when it has none)."""
    columns = np.arange(scores.shape[1])
    ranks = []
    for start in range(0, scores.shape[0], _RANK_BLOCK):
        block = scores[start:start + _RANK_BLOCK]
        own = text_to_image[None, :] == np.arange(start, start + len(block))[:, None]
        own_scores = np.where(own, block, -np.inf)
        best = own_scores.argmax(axis=1)  # first maximum: the own text a stable sort ranks highest
        best_score = own_scores[np.arange(len(best)), best][:, None]
        rank = (block > best_score).sum(1) + ((block == best_score) & (columns < best[:, None])).sum(1)
        ranks.append(np.where(own.any(axis=1), rank, np.inf))
    return np.concatenate(ranks) if ranks else np.zeros(0)


def _image_retrieval_ranks(scores: np.ndarray, text_to_image: np.ndarray) -> np.ndarray:
    """Per text, the 0-based rank of its image among all images."""
    rows = np.arange(scores.shape[0])[:, None]
    ranks = []
    for start in range(0, scores.shape[1], _RANK_BLOCK):
        block = scores[:, start:start + _RANK_BLOCK]
        own_image = text_to_image[start:start + _RANK_BLOCK]
        own_score = block[own_image, np.arange(block.shape[1])][None, :]
        ranks.append((block > own_score).sum(0) + ((block == own_score) & (rows < own_image[None, :])).sum(0))
    return np.concatenate(ranks) if ranks else np.zeros(0)


def recall_at_k(scores, text_to_image, ks: Sequence[int] = (1, 5, 10)) -> dict[str, float]:
    """TR@k (per image: one of its texts in its top k) and IR@k (per text: its image in its top k).

    `tr_mean` / `ir_mean` average over `ks`, `r_mean` is their mean (the original's `the_metric`
    for re-ranked retrieval) and `rsum` the sum of all recalls (the paper's RSUM / 100). An image
    without any text counts as a miss.
    """
    scores = np.asarray(scores)
    text_to_image = np.asarray(text_to_image).reshape(-1).astype(np.int64)
    num_images, num_texts = scores.shape
    if len(text_to_image) != num_texts:
        raise ValueError(f"scores have {num_texts} texts, text_to_image {len(text_to_image)}")
    if num_texts and (text_to_image.min() < 0 or text_to_image.max() >= num_images):
        raise ValueError("text_to_image holds an index outside [0, N_images)")
    if np.isnan(scores).any():
        raise ValueError("scores contain NaN")
    tr_ranks = _text_retrieval_ranks(scores, text_to_image)
    ir_ranks = _image_retrieval_ranks(scores, text_to_image)
    out = {}
    for k in ks:
        out[f"tr_r{k}"] = float((tr_ranks < k).mean())
        out[f"ir_r{k}"] = float((ir_ranks < k).mean())
    out["tr_mean"] = float(np.mean([out[f"tr_r{k}"] for k in ks]))
    out["ir_mean"] = float(np.mean([out[f"ir_r{k}"] for k in ks]))
    out["r_mean"] = (out["tr_mean"] + out["ir_mean"]) / 2
    out["rsum"] = float(sum(out[f"tr_r{k}"] + out[f"ir_r{k}"] for k in ks))
    return out


# ---- ITC shortlist + ITM re-rank --------------------------------------------------------------------

@jax.jit
def _similarities(image_embeds, text_embeds):
    return jnp.dot(image_embeds, text_embeds.T, precision=jax.lax.Precision.HIGHEST)


@functools.partial(jax.jit, static_argnames=("k_texts", "k_images"))
def _shortlists(image_embeds, text_embeds, k_texts: int, k_images: int):
    sims = _similarities(image_embeds, text_embeds)
    # lax.top_k puts the lower index first among equal values: the same tie rule as recall_at_k.
    _, shortlisted_texts = jax.lax.top_k(sims, k_texts)
    _, shortlisted_images = jax.lax.top_k(sims.T, k_images)
    return shortlisted_texts, shortlisted_images


def similarity_matrix(image_embeds, text_embeds) -> np.ndarray:
    """ITC scores [N_images, N_texts]: dot products of the (already L2-normalised) embeddings."""
    return np.asarray(_similarities(jnp.asarray(image_embeds, jnp.float32),
                                    jnp.asarray(text_embeds, jnp.float32)))


def _segments(image_ids: np.ndarray, texts_per_image: int) -> tuple[np.ndarray, np.ndarray]:
    """Image of each pair, sorted -> (row of each pair, image of each segment): each image's pairs fill
    segments of `texts_per_image` rows, its last segment padded."""
    images, first, counts = np.unique(image_ids, return_index=True, return_counts=True)
    per_image = -(-counts // texts_per_image)
    segment_start = np.concatenate([[0], np.cumsum(per_image)[:-1]])
    offset = np.arange(len(image_ids)) - np.repeat(first, counts)
    rows = np.repeat(segment_start, counts) * texts_per_image + offset
    return rows, np.repeat(images, per_image)


def score_pairs(image_ids: np.ndarray, text_ids: np.ndarray, itm_score_fn: ItmScoreFn, chunk_size: int,
                progress: Callable[[int, int], None] | None = None, texts_per_image: int = 1) -> np.ndarray:
    """ITM logits of the pairs (image_ids[p], text_ids[p]), in fixed-size chunks.

    Every call gets `chunk_size` rows (padding rows: pair (0, 0), `valid` False), so a jitted
    `itm_score_fn` compiles once; make `chunk_size` a multiple of the number of devices the function
    shards the chunk over, and, with `texts_per_image` P > 1, of P (the chunk's C / P images are
    sharded too): each image's pairs fill segments of P rows sharing that image. Two chunks stay in
    flight so that a function returning un-fetched jax arrays keeps the device busy while the host
    waits.
    """
    if chunk_size < 1 or texts_per_image < 1 or chunk_size % texts_per_image:
        raise ValueError(f"chunk_size={chunk_size} must be a positive multiple of texts_per_image={texts_per_image}")
    by_image = np.argsort(np.asarray(image_ids), kind="stable")     # segments need each image's pairs together
    image_ids, text_ids = np.asarray(image_ids)[by_image], np.asarray(text_ids)[by_image]
    rows, segment_images = _segments(image_ids, texts_per_image) if len(image_ids) else (np.zeros(0, np.int64),) * 2
    total_rows = len(segment_images) * texts_per_image
    row_texts = np.zeros(total_rows, np.int32)
    row_valid = np.zeros(total_rows, bool)
    row_texts[rows], row_valid[rows] = text_ids, True
    row_logits = np.empty(total_rows, np.float32)
    images_per_chunk = chunk_size // texts_per_image
    pending: collections.deque = collections.deque()

    def collect():
        start, count, result = pending.popleft()
        result = np.asarray(result, np.float32).reshape(-1)
        if result.shape != (chunk_size,):
            raise ValueError(f"itm_score_fn returned shape {result.shape}, expected ({chunk_size},)")
        row_logits[start:start + count] = result[:count]
        if progress is not None:
            progress(start + count, total_rows)

    for start in range(0, total_rows, chunk_size):
        count = min(chunk_size, total_rows - start)
        images = np.zeros(images_per_chunk, np.int32)
        texts = np.zeros(chunk_size, np.int32)
        valid = np.zeros(chunk_size, bool)
        first_segment = start // texts_per_image
        images[:count // texts_per_image] = segment_images[first_segment:first_segment + count // texts_per_image]
        texts[:count], valid[:count] = row_texts[start:start + count], row_valid[start:start + count]
        pending.append((start, count, itm_score_fn(images, texts, valid)))
        if len(pending) > 2:
            collect()
    while pending:
        collect()
    logits = np.empty(len(rows), np.float32)
    logits[by_image] = row_logits[rows]
    return logits


def cheapest_texts_per_image(pairs_per_image: np.ndarray, chunk_size: int, image_cost: float,
                             images_multiple_of: int = 1) -> int:
    """The segment length P for `score_pairs` that minimises the work: rows (padding included) cost 1
    each (text tower + fusion of a pair), segments `image_cost` each (one vision pass, in units of a
    row). P divides `chunk_size` and leaves chunk_size / P images, a multiple of `images_multiple_of`
    (the devices the images are sharded over)."""
    counts = np.asarray(pairs_per_image, np.int64)
    counts = counts[counts > 0]
    best, best_cost = 1, math.inf
    for p in range(1, chunk_size + 1):
        if chunk_size % p or (chunk_size // p) % images_multiple_of:
            continue
        segments = int(np.sum(-(-counts // p)))
        cost = segments * p + image_cost * segments
        if cost < best_cost:
            best, best_cost = p, cost
    return best


def itc_then_itm_scores(image_embeds, text_embeds, itm_score_fn: ItmScoreFn, k_test: int, *,
                        chunk_size: int = 256, fill_value: float = NOT_RERANKED,
                        progress: Callable[[int, int], None] | None = None,
                        texts_per_image: int | Callable[[np.ndarray], int] = 1) -> np.ndarray:
    """BridgeTower's retrieval scores: ITC shortlist, ITM re-rank, element-wise max of both directions.

    i2t: each image's `k_test` most ITC-similar texts get their ITM logit, every other entry
    `fill_value`; t2i: likewise each text's `k_test` most similar images. The result is
    max(i2t, t2i), which `recall_at_k` ranks in both directions (ITC similarities are not added).
    A pair short-listed in both directions is scored once. With `k_test` >= N_images and
    >= N_texts the result is exactly the full ITM matrix. `texts_per_image`: P for `score_pairs`,
    or a function of the number of pairs of every image that chooses it (`cheapest_texts_per_image`).

    Multi-host: every process must call this with the same full embeddings (host arrays, e.g.
    from `multihost_utils.process_allgather`), and `itm_score_fn` must return the whole chunk's
    logits on every process.
    """
    if k_test < 1:
        raise ValueError(f"k_test must be positive, got {k_test}")
    image_embeds = jnp.asarray(image_embeds, jnp.float32)
    text_embeds = jnp.asarray(text_embeds, jnp.float32)
    num_images, num_texts = image_embeds.shape[0], text_embeds.shape[0]
    shortlisted_texts, shortlisted_images = _shortlists(
        image_embeds, text_embeds, k_texts=min(k_test, num_texts), k_images=min(k_test, num_images))
    shortlisted_texts = np.asarray(shortlisted_texts, np.int64)
    shortlisted_images = np.asarray(shortlisted_images, np.int64)

    # Pairs as flat positions image * N_texts + text in the [N_images, N_texts] matrix.
    i2t = (np.arange(num_images)[:, None] * num_texts + shortlisted_texts).reshape(-1)
    t2i = (shortlisted_images * num_texts + np.arange(num_texts)[:, None]).reshape(-1)
    pairs = np.union1d(i2t, t2i)  # sorted by image, then text: neighbouring pairs share an image
    pair_images = (pairs // num_texts).astype(np.int32)
    if callable(texts_per_image):
        texts_per_image = texts_per_image(np.bincount(pair_images, minlength=num_images))
    logits = score_pairs(pair_images, (pairs % num_texts).astype(np.int32), itm_score_fn, chunk_size, progress,
                         texts_per_image)

    # max(i2t, t2i) entry by entry: a pair in one list only competes with the fill value there.
    in_both = np.isin(pairs, i2t, assume_unique=True) & np.isin(pairs, t2i, assume_unique=True)
    scores = np.full(num_images * num_texts, fill_value, np.float32)
    scores[pairs] = np.where(in_both, logits, np.maximum(logits, fill_value))
    return scores.reshape(num_images, num_texts)
