"""Fixed-length tokenisation and RoBERTa MLM masking in numpy (per example, explicit Generator).

Masking has `DataCollatorForLanguageModeling` semantics, as the original uses for RoBERTa
(no whole-word masking): each non-special, non-pad token is chosen with `mlm_prob`; of the chosen,
80% become `<mask>`, 10% a uniformly random token id, 10% stay; labels are -100 elsewhere.
"""
from __future__ import annotations

import math

import numpy as np

IGNORE_LABEL = -100


def encode_fixed_length(tokenizer, text: str, max_len: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(input_ids, attention_mask, special_tokens_mask), each int32 [max_len]."""
    encoded = tokenizer(text, padding="max_length", truncation=True, max_length=max_len,
                        return_special_tokens_mask=True)
    return (np.asarray(encoded["input_ids"], np.int32), np.asarray(encoded["attention_mask"], np.int32),
            np.asarray(encoded["special_tokens_mask"], np.int32))


def mlm_prediction_slots(text_len: int, mlm_prob: float, tail: float = 1e-6) -> int:
    """Most tokens predicted in one row: the smallest k with P(Binomial(n, mlm_prob) > k) < tail, where
    n = text_len - 2 (the start and end tokens are never chosen). 18 at 40 tokens and 15 %.

    `mask_tokens` never chooses more (a row that draws more keeps a random `k` of them, about once in a
    million rows), so the train step decodes only this many positions per row (BERT's
    max_predictions_per_seq, set where it changes nothing measurable).
    """
    if not 0.0 <= mlm_prob <= 1.0:
        raise ValueError(f"mlm_prob={mlm_prob} is not a probability")
    n = max(text_len - 2, 1)
    above = 1.0
    for k in range(n + 1):
        above -= math.comb(n, k) * mlm_prob ** k * (1.0 - mlm_prob) ** (n - k)
        if above < tail:
            return max(k, 1)
    return text_len


def mask_tokens(input_ids: np.ndarray, special_tokens_mask: np.ndarray, rng: np.random.Generator, *,
                mlm_prob: float, mask_token_id: int, vocab_size: int,
                max_predictions: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Returns (mlm_input_ids, mlm_labels), with at most `max_predictions` labels in the call (the
    pipeline masks one row per call)."""
    chosen = (rng.random(input_ids.shape) < mlm_prob) & (special_tokens_mask == 0)
    if max_predictions is not None and chosen.sum() > max_predictions:
        keep = rng.choice(np.flatnonzero(chosen), max_predictions, replace=False)
        chosen = np.zeros_like(chosen)
        chosen[keep] = True
    labels = np.where(chosen, input_ids, IGNORE_LABEL).astype(np.int32)
    draw = rng.random(input_ids.shape)
    to_mask = chosen & (draw < 0.8)
    to_random = chosen & (draw >= 0.8) & (draw < 0.9)
    masked = input_ids.copy()
    masked[to_mask] = mask_token_id
    masked[to_random] = rng.integers(0, vocab_size, size=int(to_random.sum()))
    return masked.astype(np.int32), labels
