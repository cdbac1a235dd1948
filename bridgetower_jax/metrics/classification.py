"""Classification accuracy (NLVR2, SNLI-VE, ITM) with padding excluded, and a host-side running mean.

    correct_predictions(logits, labels) -> [B] float 0/1        jit-friendly
    accuracy(logits, labels, example_mask=None) -> scalar       masked mean over one batch
    MeanAccumulator                                             exact mean over many batches

Evaluation batches are padded to a fixed size; `example_mask` (1 real, 0 padding) weights every
example, so padding never counts in either the numerator or the denominator.
"""
from __future__ import annotations

import jax.numpy as jnp
import numpy as np


def correct_predictions(logits: jnp.ndarray, labels: jnp.ndarray) -> jnp.ndarray:
    """[B] 1.0 where the argmax class equals the label."""
    return (jnp.argmax(logits, axis=-1) == labels).astype(jnp.float32)


def masked_mean(values: jnp.ndarray, example_mask: jnp.ndarray | None = None) -> jnp.ndarray:
    """Mean of `values` [B] over the examples whose mask is non-zero (0 when there are none)."""
    if example_mask is None:
        return values.astype(jnp.float32).mean()
    mask = example_mask.astype(jnp.float32)
    return (values * mask).sum() / jnp.maximum(mask.sum(), 1.0)


def accuracy(logits: jnp.ndarray, labels: jnp.ndarray,
             example_mask: jnp.ndarray | None = None) -> jnp.ndarray:
    """Fraction of real (unmasked) examples whose argmax class is the label."""
    return masked_mean(correct_predictions(logits, labels), example_mask)


class MeanAccumulator:
    """Sum and count in float64 on the host, so a long evaluation averages exactly.

    `add` takes per-example values (e.g. `correct_predictions` or `vqa_score_per_example`) and
    the batch's `example_mask`; feed it fully addressable arrays (gather first on multi-host).
    """

    def __init__(self):
        self.total = 0.0
        self.count = 0.0

    def add(self, values, example_mask=None) -> None:
        values = np.asarray(values, np.float64).reshape(-1)
        mask = np.ones_like(values) if example_mask is None else np.asarray(example_mask, np.float64)
        mask = mask.reshape(-1)
        if mask.shape != values.shape:
            raise ValueError(f"example_mask shape {mask.shape} does not match values {values.shape}")
        self.total += float((values * mask).sum())
        self.count += float(mask.sum())

    def compute(self) -> float:
        """The mean so far; NaN before any real example (an empty evaluation is a bug, not 0%)."""
        return self.total / self.count if self.count else float("nan")
