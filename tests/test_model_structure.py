"""Model structure: parameter counts against transformers, scan layout, logical axis rules, configs."""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers
import flax.linen as nn

from bridgetower_jax import convert, sharding
from bridgetower_jax.models import (BridgeTowerConfig, BridgeTowerForMaskedLM, BridgeTowerForNLVR2,
                                    BridgeTowerForPreTraining, BridgeTowerForSNLIVE, BridgeTowerForVQA,
                                    BridgeTowerModel, preset)
from bridgetower_jax.models.bridgetower import abstract_params, dummy_inputs
from bridgetower_jax.models.scan_layout import stack_scanned_layers, unstack_scanned_layers


def _count(tree) -> int:
    return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


def _hf_count(config: BridgeTowerConfig, class_name: str) -> int:
    with torch.device("meta"):
        model = getattr(transformers, class_name)(convert.to_hf_config(config))
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name", ["base", "large"])
def test_presets_match_transformers_parameter_counts(name):
    config = preset(name).replace(vocab_pad_multiple=1)
    for cls, hf_name in ((BridgeTowerModel, "BridgeTowerModel"), (BridgeTowerForMaskedLM, "BridgeTowerForMaskedLM")):
        ours = _count(abstract_params(cls(config)))
        assert ours == _hf_count(config, hf_name), (name, cls.__name__)
    if name == "base":
        assert 325e6 < _count(abstract_params(BridgeTowerModel(config))) < 328e6


def test_vocab_padding_adds_only_padding_rows():
    config = preset("base")
    assert config.padded_vocab_size == 50304
    padded = abstract_params(BridgeTowerForMaskedLM(config))
    unpadded = abstract_params(BridgeTowerForMaskedLM(config.replace(vocab_pad_multiple=1)))
    extra = (50304 - 50265) * (768 * 2 + 1)     # word embedding rows, decoder columns, bias entries
    assert _count(padded) - _count(unpadded) == extra


def _rand_init(model, seed=0):
    ids, mask, pixels = dummy_inputs(model.config, batch_size=2, text_length=6,
                                     image_pairs=isinstance(model, BridgeTowerForNLVR2))
    params = nn.meta.unbox(model.init(jax.random.PRNGKey(seed), ids, mask, pixels))["params"]
    return params, (ids, mask, pixels)


@pytest.mark.parametrize("cross_layers", [1, 2, 4])   # bridges from the top layer, the top 2, every state
def test_scanned_layers_equal_looped_layers(cross_layers):
    config = preset("tiny").replace(num_hidden_layers=cross_layers)   # every tower scans its 3 layers
    looped = BridgeTowerForMaskedLM(config)
    params, _ = _rand_init(looped)
    rng = np.random.RandomState(0)
    ids = jnp.asarray(rng.randint(5, 99, (2, 6)))
    mask = jnp.asarray([[1] * 6, [1] * 4 + [0] * 2])
    pixels = jnp.asarray(rng.randn(2, 32, 32, 3), jnp.float32)
    ref = looped.apply({"params": params}, ids, mask, pixels).logits
    for remat in (False, True):
        scanned_cfg = config.with_compute(scan_layers=True, remat=remat)
        stacked = stack_scanned_layers(scanned_cfg, params)
        assert stacked["bridgetower"]["text_model"]["layers_scan"]["attention"]["attn"]["query"]["kernel"].shape[0] == 3
        assert jax.tree.structure(stacked) == jax.tree.structure(abstract_params(BridgeTowerForMaskedLM(scanned_cfg)))
        out = BridgeTowerForMaskedLM(scanned_cfg).apply({"params": stacked}, ids, mask, pixels).logits
        np.testing.assert_allclose(out, ref, atol=2e-5)
        back = unstack_scanned_layers(scanned_cfg, stacked)
        jax.tree.map(np.testing.assert_array_equal, back, params)


def test_scanned_parameters_carry_a_layers_axis_name():
    config = preset("tiny").with_compute(scan_layers=True)
    variables = jax.eval_shape(BridgeTowerModel(config).init, jax.random.PRNGKey(0), *dummy_inputs(config))
    spec = nn.get_partition_spec(variables)["params"]
    assert spec["text_model"]["layers_scan"]["attention"]["attn"]["query"]["kernel"] == \
        jax.sharding.PartitionSpec("layers", "embed", "heads", "kv")


@pytest.mark.parametrize("model_cls", [BridgeTowerForPreTraining, BridgeTowerForVQA, BridgeTowerForSNLIVE,
                                       BridgeTowerForNLVR2])
def test_every_logical_axis_name_has_a_rule(model_cls):
    config = preset("tiny").replace(num_token_types=3).with_compute(scan_layers=True)
    kwargs = {"with_itc": True} if model_cls is BridgeTowerForPreTraining else {}
    model = model_cls(config, **kwargs)
    inputs = dummy_inputs(config, image_pairs=model_cls is BridgeTowerForNLVR2)
    variables = jax.eval_shape(model.init, jax.random.PRNGKey(0), *inputs)
    names = {n for spec in jax.tree.leaves(nn.get_partition_spec(variables),
                                           is_leaf=lambda x: isinstance(x, jax.sharding.PartitionSpec))
             for n in spec if n is not None}
    ruled = {name for name, _ in sharding.DEFAULT_RULES}
    assert names - ruled == set(), f"logical names without a sharding rule: {names - ruled}"
    assert {"embed", "mlp", "heads", "layers", "norm"} <= names
    if model_cls is BridgeTowerForPreTraining:
        assert "vocab" in names          # the MLM decoder shards its padded vocabulary


def test_task_heads_shapes():
    config = preset("tiny").replace(num_token_types=3)
    for model, shape in ((BridgeTowerForVQA(config, num_answers=11), (2, 11)), (BridgeTowerForSNLIVE(config), (2, 3)),
                         (BridgeTowerForNLVR2(config), (2, 2))):
        params, inputs = _rand_init(model)
        assert model.apply({"params": params}, *inputs).logits.shape == shape
    pre = BridgeTowerForPreTraining(config, with_itc=True)
    params, inputs = _rand_init(pre)
    out = pre.apply({"params": params}, *inputs)
    assert out.mlm_logits.shape == (2, 6, 99) and out.itm_logits.shape == (2, 2)
    assert out.contrastive.logits.shape == (2, 3, 16)


def test_pretraining_forwards_share_the_vision_pass_exactly():
    """One vision pass over the true images (+ one over the negatives) gives the MLM features, the ITM
    logits and their gradients of two independent forwards, MLM on (masked text, own image) and ITM on
    (text, own image | negative image)."""
    model = BridgeTowerForPreTraining(preset("tiny"))
    params, _ = _rand_init(model)
    rng = np.random.RandomState(1)
    ids = jnp.asarray(rng.randint(5, 99, (4, 6)))
    mlm_ids = ids.at[:, 2].set(3)
    mask = jnp.asarray([[1] * 6, [1] * 4 + [0] * 2, [1] * 6, [1] * 5 + [0]])
    pixels = jnp.asarray(rng.randn(4, 32, 32, 3), jnp.float32)
    negatives = jnp.asarray(rng.randn(2, 32, 32, 3), jnp.float32)
    itm_pixels = pixels.at[1::2].set(negatives)

    def shared(p):
        return model.apply({"params": p}, mlm_ids, ids, mask, pixels, negatives,
                           method=BridgeTowerForPreTraining.pretraining_forwards)

    def separate(p):
        mlm = model.apply({"params": p}, mlm_ids, mask, pixels,
                          method=lambda m, *a: m.bridgetower(*a).text_features)
        return mlm, model.apply({"params": p}, ids, mask, itm_pixels, method=BridgeTowerForPreTraining.itm)

    mlm, itm, states = shared(params)
    for got, want in zip((mlm, itm), separate(params)):
        np.testing.assert_allclose(got, want, atol=2e-5)
    # The true images' states, which pre-training's ITC reads, are those of a vision pass of its own.
    own = model.apply({"params": params}, pixels, method=BridgeTowerForPreTraining.encode_images)
    jax.tree.map(lambda got, want: np.testing.assert_allclose(got, want, atol=2e-5), list(states), list(own))

    def scalar(forwards):
        return lambda p: sum(jnp.sum(jnp.sin(x)) for x in forwards(p)[:2])
    grads = jax.grad(scalar(shared))(params), jax.grad(scalar(separate))(params)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=2e-4, rtol=1e-4), *grads)


def test_retrieval_step_with_two_vision_passes_equals_four():
    """Retrieval fine-tuning encodes the batch's images once for ITC, the positive and the hard-negative-
    text pairs, and the hard-negative images once more: loss, metrics and gradients of the original's
    four passes (ITC, then ITM on concatenated pixels), with dropout off so that rows can move."""
    from bridgetower_jax import objectives as obj, tasks
    config = preset("tiny")
    config = config.replace(text=dataclasses.replace(config.text, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0))
    model = BridgeTowerForPreTraining(config, with_itc=True, with_mlm=False)
    params, _ = _rand_init(model)
    rng = np.random.RandomState(3)
    batch = {"input_ids": jnp.asarray(rng.randint(5, 99, (6, 6))), "attention_mask": jnp.asarray([[1] * 6, [1] * 4 + [0] * 2] * 3),
             "pixel_values": jnp.asarray(rng.randn(6, 32, 32, 3), jnp.float32),
             "image_index": jnp.asarray([0, 0, 1, 2, 2, 3])}
    rngs = list(jax.random.split(jax.random.PRNGKey(5), 4))

    def four_passes(p):
        ids, mask, pixels, group = batch["input_ids"], batch["attention_mask"], batch["pixel_values"], batch["image_index"]
        text, image, scale = tasks._contrastive_embeds(model, p, ids, mask, pixels, rngs[0])
        itc = obj.gathered_contrastive_loss(text, image, group, scale)
        positives = group[:, None] == group[None, :]
        sim = jax.lax.stop_gradient(text @ image.T * scale)
        neg_image = obj.sample_hard_negatives(sim, positives, rngs[1])
        neg_text = obj.sample_hard_negatives(sim.T, positives.T, rngs[2])
        logits = model.apply({"params": p}, jnp.concatenate([ids, ids, ids[neg_text]]),
                             jnp.concatenate([mask, mask, mask[neg_text]]),
                             jnp.concatenate([pixels, pixels[neg_image], pixels]), method=BridgeTowerForPreTraining.itm)
        labels = jnp.concatenate([jnp.ones(6, jnp.int32), jnp.zeros(12, jnp.int32)])
        itm = obj.cross_entropy(logits, labels)
        return itc + itm, {"itc_loss": itc, "itm_loss": itm, "itm_accuracy": jnp.mean(jnp.argmax(logits, -1) == labels)}

    def two_passes(p):
        return tasks._retrieval(model, p, batch, rngs)

    with jax.set_mesh(sharding.make_mesh(2, devices=jax.devices()[:2])):   # ITC gathers over the batch shards
        (want, want_metrics), want_grads = jax.jit(jax.value_and_grad(four_passes, has_aux=True))(params)
        (got, got_metrics), got_grads = jax.jit(jax.value_and_grad(two_passes, has_aux=True))(params)
    np.testing.assert_allclose(got, want, rtol=1e-5)
    for key, value in want_metrics.items():
        np.testing.assert_allclose(got_metrics[key], value, rtol=1e-5, atol=1e-6)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=2e-5, rtol=1e-4), got_grads, want_grads)


@pytest.mark.slow   # (the retrieval evaluation test compares the shared and per-pair paths end to end)
def test_itm_over_shared_images_equals_itm_over_repeated_images():
    """Retrieval's re-rank: 2 images x 3 texts each, the vision tower run on the 2 images, gives the
    ITM logits of the 6 pairs with every image repeated."""
    model = BridgeTowerForPreTraining(preset("tiny"))
    params, _ = _rand_init(model)
    rng = np.random.RandomState(2)
    ids = jnp.asarray(rng.randint(5, 99, (6, 6)))
    mask = jnp.asarray([[1] * 6, [1] * 3 + [0] * 3] * 3)
    pixels = jnp.asarray(rng.randn(2, 32, 32, 3), jnp.float32)
    shared = model.apply({"params": params}, ids, mask, pixels, method=BridgeTowerForPreTraining.itm_shared_images)
    repeated = model.apply({"params": params}, ids, mask, jnp.repeat(pixels, 3, axis=0),
                           method=BridgeTowerForPreTraining.itm)
    assert shared.shape == (6, 2)
    np.testing.assert_allclose(shared, repeated, atol=1e-5)
    with pytest.raises(ValueError, match="6 texts do not split evenly over 4 images"):
        model.apply({"params": params}, ids, mask, jnp.zeros((4, 32, 32, 3)),
                    method=BridgeTowerForPreTraining.itm_shared_images)


def test_pooled_only_computes_the_first_tokens_of_the_last_layer_exactly():
    model = BridgeTowerModel(preset("tiny"))
    params, (ids, mask, pixels) = _rand_init(model)
    mask = mask.at[1, 4:].set(0)
    full = model.apply({"params": params}, ids, mask, pixels)
    first = model.apply({"params": params}, ids, mask, pixels, pooled_only=True)
    assert first.text_features.shape[1] == first.image_features.shape[1] == 1
    np.testing.assert_allclose(first.pooler_output, full.pooler_output, atol=1e-5)
    np.testing.assert_allclose(first.text_features, full.text_features[:, :1], atol=1e-5)
    np.testing.assert_allclose(first.image_features, full.image_features[:, :1], atol=1e-5)


def test_dropout_is_active_only_when_not_deterministic():
    config = preset("tiny")
    model = BridgeTowerModel(config)
    params, inputs = _rand_init(model)
    a = model.apply({"params": params}, *inputs).text_features
    b = model.apply({"params": params}, *inputs, deterministic=False, rngs={"dropout": jax.random.PRNGKey(1)})
    c = model.apply({"params": params}, *inputs, deterministic=False, rngs={"dropout": jax.random.PRNGKey(2)})
    assert not np.allclose(a, b.text_features) and not np.allclose(b.text_features, c.text_features)


def test_attention_mask_none_equals_all_ones_and_pads_do_not_leak():
    config = preset("tiny")
    model = BridgeTowerModel(config)
    params, (_, _, pixels) = _rand_init(model)
    ids = jnp.asarray([[0, 7, 8, 9, 2]] * 2)
    a = model.apply({"params": params}, ids, None, pixels)
    b = model.apply({"params": params}, ids, jnp.ones_like(ids), pixels)
    np.testing.assert_array_equal(a.pooler_output, b.pooler_output)
    padded = jnp.concatenate([ids, jnp.ones((2, 3), ids.dtype)], axis=1)
    c = model.apply({"params": params}, padded, (padded != 1).astype(jnp.int32), pixels)
    np.testing.assert_allclose(c.pooler_output, a.pooler_output, atol=1e-5)
    np.testing.assert_allclose(c.image_features, a.image_features, atol=1e-5)


def test_fused_attention_path_matches_exact_path():
    config = preset("tiny")
    params, inputs = _rand_init(BridgeTowerModel(config))
    ids, _, pixels = inputs
    mask = jnp.asarray([[1] * 6, [1] * 3 + [0] * 3])
    exact = BridgeTowerModel(config).apply({"params": params}, ids, mask, pixels)
    fused = BridgeTowerModel(config.with_compute(attention_impl="fused")).apply({"params": params}, ids, mask, pixels)
    np.testing.assert_allclose(fused.pooler_output, exact.pooler_output, atol=1e-5)


def test_bfloat16_compute_keeps_float32_params():
    config = preset("tiny").with_compute(dtype="bfloat16")
    model = BridgeTowerForMaskedLM(config)
    params, inputs = _rand_init(model)
    assert {x.dtype for x in jax.tree.leaves(params)} == {jnp.dtype("float32")}
    logits = model.apply({"params": params}, *inputs).logits
    assert logits.dtype == jnp.bfloat16
    ref = BridgeTowerForMaskedLM(preset("tiny")).apply({"params": params}, *inputs).logits
    assert float(jnp.abs(logits.astype(jnp.float32) - ref).max()) < 0.1


@pytest.mark.parametrize("changes, message", [
    ({"hidden_size": 48}, "must equal text.hidden_size"),
    ({"num_hidden_layers": 9}, "num_hidden_layers=9"),
    ({"link_tower_type": "concat"}, "link_tower_type='concat'"),
    ({"vision": preset("tiny").vision.__class__(hidden_size=40)}, "multiple of 64"),
    ({"vision": preset("tiny").vision.__class__(hidden_size=64, image_size=30, patch_size=8)}, "not a multiple"),
])
def test_invalid_configs_are_named(changes, message):
    with pytest.raises(ValueError, match=message):
        preset("tiny").replace(**changes).validate()


def test_wrong_image_size_is_a_clear_error():
    config = preset("tiny")
    model = BridgeTowerModel(config)
    params, (ids, mask, _) = _rand_init(model)
    with pytest.raises(ValueError, match=r"\[B, 32, 32, 3\]"):
        model.apply({"params": params}, ids, mask, jnp.zeros((2, 3, 32, 32)))


def test_config_dict_round_trip_and_unknown_keys():
    config = preset("large").with_compute(scan_layers=True)
    assert BridgeTowerConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match="hiden_size"):
        BridgeTowerConfig.from_dict({**config.to_dict(), "hiden_size": 3})
