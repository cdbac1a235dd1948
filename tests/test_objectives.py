"""The MLM loss and accuracy against their plain definitions (gather / argmax)."""
import jax
import jax.numpy as jnp
import numpy as np

from bridgetower_jax import objectives


def _logits_and_labels(seed=0, vocab=37):
    rng = np.random.default_rng(seed)
    logits = rng.standard_normal((3, 5, vocab)).astype(np.float32)
    labels = rng.integers(0, vocab, (3, 5)).astype(np.int32)
    labels[rng.random((3, 5)) < 0.4] = objectives.IGNORE_INDEX
    labels[0, 0] = np.argmax(logits[0, 0])          # at least one hit
    return logits, labels


def test_masked_lm_loss_is_the_mean_nll_over_labelled_positions():
    logits, labels = _logits_and_labels()
    valid = labels != objectives.IGNORE_INDEX
    logp = np.asarray(jax.nn.log_softmax(logits, -1))
    nll = -np.take_along_axis(logp, np.where(valid, labels, 0)[..., None], -1)[..., 0]
    np.testing.assert_allclose(float(objectives.masked_lm_loss(logits, labels)), nll[valid].mean(), rtol=1e-6)
    # Its gradient is softmax minus one-hot on labelled rows, zero elsewhere.
    grad = np.asarray(jax.grad(objectives.masked_lm_loss)(jnp.asarray(logits), jnp.asarray(labels)))
    want = (np.exp(logp) - np.eye(logits.shape[-1])[np.where(valid, labels, 0)]) * valid[..., None]
    np.testing.assert_allclose(grad, want / valid.sum(), atol=1e-6)


def test_masked_lm_accuracy_equals_argmax_accuracy():
    for seed in range(5):
        logits, labels = _logits_and_labels(seed)
        valid = labels != objectives.IGNORE_INDEX
        want = ((np.argmax(logits, -1) == labels) & valid).sum() / valid.sum()
        assert float(objectives.masked_lm_accuracy(logits, labels)) == np.float32(want)
    assert float(objectives.masked_lm_accuracy(logits, np.full_like(labels, objectives.IGNORE_INDEX))) == 0.0
