"""Forward and gradient parity with transformers' BridgeTower, on padded batches, random weights."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from bridgetower_jax import convert, objectives
from bridgetower_jax.models import ComputeConfig
from hf_reference import batch, hf_config, nhwc, random_hf_model

F64 = ComputeConfig(dtype="float64", param_dtype="float64")


@pytest.fixture
def x64():
    jax.config.update("jax_enable_x64", True)
    yield
    jax.config.update("jax_enable_x64", False)


def _run_both(class_name, hf_cfg, precision):
    torch_dtype = torch.float64 if precision == "f64" else torch.float32
    model = random_hf_model(class_name, hf_cfg, dtype=torch_dtype)
    config, params = convert.from_pytorch(model, compute=F64 if precision == "f64" else None)
    ids, mask, pixels = batch()
    with torch.no_grad():
        ref = model(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask),
                    pixel_values=torch.tensor(pixels, dtype=torch_dtype), output_hidden_states=True)
    flax_model = convert.flax_model_for(config, convert.detect_heads(params))
    out = flax_model.apply({"params": params}, jnp.asarray(ids), jnp.asarray(mask),
                           jnp.asarray(nhwc(pixels), dtype=jnp.dtype(config.compute.dtype)),
                           output_hidden_states=True)
    return ref, out


def _pairs(class_name, ref, out):
    """(name, ours, theirs) for every output the class has."""
    if class_name == "BridgeTowerModel":
        text_h, image_h, cross_h = out.hidden_states
        ref_text, ref_image, ref_cross = ref.hidden_states
        pairs = [("text_features", out.text_features, ref.text_features),
                 ("image_features", out.image_features, ref.image_features),
                 ("pooler_output", out.pooler_output, ref.pooler_output)]
        pairs += [(f"text_hidden_{i}", a, b) for i, (a, b) in enumerate(zip(text_h, ref_text, strict=True))]
        # transformers keeps vision hidden states sequence-first [L, B, D]
        pairs += [(f"image_hidden_{i}", a, b.permute(1, 0, 2)) for i, (a, b) in
                  enumerate(zip(image_h, ref_image, strict=True))]
        for j, ((at, ai), (bt, bi)) in enumerate(zip(cross_h, ref_cross, strict=True)):
            pairs += [(f"cross_text_{j}", at, bt), (f"cross_image_{j}", ai, bi)]
        return pairs
    if class_name == "BridgeTowerForContrastiveLearning":
        return [("logits", out.logits, ref.logits), ("text_embeds", out.text_embeds, ref.text_embeds),
                ("image_embeds", out.image_embeds, ref.image_embeds),
                ("cross_embeds", out.cross_embeds, ref.cross_embeds)]
    return [("logits", out.logits, ref.logits)]


def _max_diff(class_name, ref, out):
    return {name: float(np.abs(np.asarray(a) - b.detach().numpy()).max()) for name, a, b in _pairs(class_name, ref, out)}


CLASSES = ["BridgeTowerModel", "BridgeTowerForMaskedLM", "BridgeTowerForImageAndTextRetrieval",
           "BridgeTowerForContrastiveLearning"]
VARIANTS = {
    "add": {}, "scaled_add": {"link_tower_type": "scaled_add"}, "interpolate": {"link_tower_type": "interpolate"},
    "unshared_transforms": {"share_cross_modal_transformer_layers": False},
    "split0": {"num_hidden_layers": 4},        # cross layers = text layers + 1: cross 0 reads the embeddings
    "split3": {"num_hidden_layers": 1},        # a single cross layer on top of the last uni-modal layer
}


@pytest.mark.parametrize("class_name", CLASSES)
@pytest.mark.parametrize("link", ["add", "scaled_add", "interpolate"])
@pytest.mark.parametrize("precision", ["f32", "f64"])
def test_forward_parity_every_class_and_link_type(class_name, link, precision, request):
    if precision == "f64":
        request.getfixturevalue("x64")
    cfg = hf_config(contrastive=class_name == "BridgeTowerForContrastiveLearning", **VARIANTS[link])
    ref, out = _run_both(class_name, cfg, precision)
    diffs = _max_diff(class_name, ref, out)
    tol = 1e-9 if precision == "f64" else 1e-4
    assert max(diffs.values()) <= tol, diffs


@pytest.mark.parametrize("variant", ["unshared_transforms", "split0", "split3"])
@pytest.mark.parametrize("precision", ["f32", "f64"])
def test_forward_parity_structural_variants(variant, precision, request):
    if precision == "f64":
        request.getfixturevalue("x64")
    for class_name in ("BridgeTowerModel", "BridgeTowerForMaskedLM"):
        ref, out = _run_both(class_name, hf_config(**VARIANTS[variant]), precision)
        diffs = _max_diff(class_name, ref, out)
        assert max(diffs.values()) <= (1e-9 if precision == "f64" else 1e-4), (class_name, diffs)


def _torch_grads_in_flax_layout(model, config, heads):
    """transformers gradients, moved through the converter's table into the Flax tree layout."""
    from bridgetower_jax.convert.state_dict import state_dict_to_params
    grads = {k: (p.grad if p.grad is not None else torch.zeros_like(p)).detach().numpy()
             for k, p in model.named_parameters()}
    return state_dict_to_params(config, grads, heads)


@pytest.mark.parametrize("head", ["mlm", "itm"])
def test_gradient_parity_float64(head, x64):
    class_name = {"mlm": "BridgeTowerForMaskedLM", "itm": "BridgeTowerForImageAndTextRetrieval"}[head]
    model = random_hf_model(class_name, hf_config(), dtype=torch.float64)
    config, params = convert.from_pytorch(model, compute=F64)
    ids, mask, pixels = batch()
    rng = np.random.RandomState(1)
    if head == "mlm":
        labels = np.where((rng.rand(*ids.shape) < 0.5) & (mask == 1), ids, -100)
        labels[0, 1] = ids[0, 1]
    else:
        labels = np.array([1, 0, 1])
    out = model(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask),
                pixel_values=torch.tensor(pixels, dtype=torch.float64), labels=torch.tensor(labels))
    out.loss.backward()
    ref_grads = _torch_grads_in_flax_layout(model, config, (head,))

    flax_model = convert.flax_model_for(config, (head,))
    loss_fn = objectives.masked_lm_loss if head == "mlm" else objectives.cross_entropy

    def loss(p):
        logits = flax_model.apply({"params": p}, jnp.asarray(ids), jnp.asarray(mask),
                                  jnp.asarray(nhwc(pixels))).logits
        return loss_fn(logits, jnp.asarray(labels))

    value, grads = jax.value_and_grad(loss)(params)
    assert abs(float(value) - out.loss.item()) < 1e-12
    flat_ours = dict(jax.tree_util.tree_flatten_with_path(grads)[0])
    flat_ref = dict(jax.tree_util.tree_flatten_with_path(ref_grads)[0])
    assert flat_ours.keys() == flat_ref.keys()
    worst = max(float(np.abs(np.asarray(flat_ours[k]) - flat_ref[k]).max()) for k in flat_ours)
    assert worst <= 1e-9, worst
    # The padding rows get no gradient, as with nn.Embedding(padding_idx=1).
    emb = grads["bridgetower"]["text_model"]["embeddings"]
    assert not np.any(np.asarray(emb["word_embeddings"]["embedding"][1]))
    assert not np.any(np.asarray(emb["position_embeddings"]["embedding"][1]))
