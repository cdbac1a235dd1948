"""init_from: parameters of one model start another (new image size, NLVR2 token types, new heads)."""
import jax
import numpy as np
import flax.linen as nn

from bridgetower_jax import param_surgery
from bridgetower_jax.models import BridgeTowerForNLVR2, BridgeTowerForPreTraining, BridgeTowerForVQA, preset
from bridgetower_jax.models.bridgetower import dummy_inputs


def _init(model, seed):
    inputs = dummy_inputs(model.config, 2, 6, image_pairs=isinstance(model, BridgeTowerForNLVR2))
    return jax.device_get(nn.meta.unbox(model.init(jax.random.PRNGKey(seed), *inputs))["params"])


def test_pretrained_tree_starts_a_vqa_model_at_a_new_image_size():
    small = preset("tiny")
    big = small.replace(vision=small.vision.__class__(**{**small.vision.__dict__, "image_size": 48}))
    pretrained = _init(BridgeTowerForPreTraining(small), seed=1)
    fresh = _init(BridgeTowerForVQA(big, num_answers=7), seed=2)
    merged, report = param_surgery.merge(fresh, pretrained, big)
    core, src = merged["bridgetower"], pretrained["bridgetower"]
    np.testing.assert_array_equal(core["text_model"]["layer_0"]["ffn"]["output"]["kernel"],
                                  src["text_model"]["layer_0"]["ffn"]["output"]["kernel"])
    pos = core["vision_model"]["embeddings"]["position_embedding"]["embedding"]
    assert pos.shape == (37, 64)
    np.testing.assert_array_equal(pos[0], src["vision_model"]["embeddings"]["position_embedding"]["embedding"][0])
    np.testing.assert_array_equal(merged["vqa_classifier"]["dense_out"]["kernel"],
                                  fresh["vqa_classifier"]["dense_out"]["kernel"])   # a new head stays fresh
    text = "\n".join(report)
    assert "resized" in text and "vqa_classifier" in text and "mlm_score" in text   # resized, fresh, ignored


def test_nlvr2_gets_a_third_token_type_copied_from_the_image_row():
    config = preset("tiny")
    pretrained = _init(BridgeTowerForPreTraining(config), seed=1)
    fresh = _init(BridgeTowerForNLVR2(config.replace(num_token_types=3)), seed=2)
    merged, _ = param_surgery.merge(fresh, pretrained, config)
    table = merged["bridgetower"]["token_type_embeddings"]["embedding"]
    old = pretrained["bridgetower"]["token_type_embeddings"]["embedding"]
    np.testing.assert_array_equal(table, np.concatenate([old, old[1:2]]))
