"""Classification accuracy with padding masks, and the host-side running mean."""
import math

import jax.numpy as jnp
import numpy as np
import pytest

from bridgetower_jax.metrics import classification

LOGITS = jnp.array([[2.0, 1.0, 0.0], [0.0, 3.0, 1.0], [0.0, 0.0, 1.0], [5.0, 0.0, 0.0]])
LABELS = jnp.array([0, 2, 2, 1])  # right, wrong, right, wrong


def test_accuracy_excludes_padding():
    np.testing.assert_array_equal(classification.correct_predictions(LOGITS, LABELS), [1, 0, 1, 0])
    assert float(classification.accuracy(LOGITS, LABELS)) == pytest.approx(0.5)
    # The wrong last example is padding: 2 right of 3.
    assert float(classification.accuracy(LOGITS, LABELS, jnp.array([1, 1, 1, 0]))) == pytest.approx(2 / 3)
    assert float(classification.accuracy(LOGITS, LABELS, jnp.zeros(4))) == 0.0


def test_mean_accumulator_weights_examples_not_batches():
    acc = classification.MeanAccumulator()
    assert math.isnan(acc.compute())
    acc.add([1, 1, 1, 1])                          # a full batch: 4 of 4
    acc.add([0, 1, 1, 1], example_mask=[1, 0, 0, 0])  # a padded batch with one real, wrong example
    assert acc.compute() == pytest.approx(4 / 5)   # not the batch-mean average (1 + 0) / 2
    with pytest.raises(ValueError, match="shape"):
        acc.add([1, 0], example_mask=[1])
