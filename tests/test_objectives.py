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


def test_decoding_labelled_positions_only_equals_decoding_all():
    """Same loss, accuracy and head gradients as decoding every position when no row has more labels
    than slots; a row with more counts its first `slots` labels (the pipeline never makes one)."""
    rng = np.random.default_rng(3)
    feats = jnp.asarray(rng.standard_normal((3, 9, 4)), jnp.float32)
    w = jnp.asarray(rng.standard_normal((4, 23)), jnp.float32)
    labels = np.where(rng.random((3, 9)) < 0.3, rng.integers(0, 23, (3, 9)), objectives.IGNORE_INDEX)
    labels[0, :2] = [5, objectives.IGNORE_INDEX]
    labels[1] = objectives.IGNORE_INDEX                       # a row with nothing to predict
    crowded = labels.copy()
    crowded[2] = rng.integers(0, 23, 9)                       # more labels than slots
    first_four = crowded.copy()
    first_four[2, 4:] = objectives.IGNORE_INDEX
    assert (labels != objectives.IGNORE_INDEX).sum(-1).max() <= 4

    def dense(w, f, lab):
        logits = f @ w
        return objectives.masked_lm_loss(logits, lab), objectives.masked_lm_accuracy(logits, lab)

    def sparse(w, f, lab):
        return objectives.masked_lm_loss_and_accuracy(lambda x: x @ w, f, lab, slots=4)

    for given, counted in ((labels, labels), (crowded, first_four)):
        (want, want_acc), want_grad = jax.value_and_grad(dense, has_aux=True)(w, feats, jnp.asarray(counted))
        (got, got_acc), got_grad = jax.jit(jax.value_and_grad(sparse, has_aux=True))(w, feats, jnp.asarray(given))
        np.testing.assert_allclose(got, want, rtol=1e-6)
        assert float(got_acc) == float(want_acc)
        np.testing.assert_allclose(got_grad, want_grad, rtol=1e-5, atol=1e-7)
