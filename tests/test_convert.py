"""Weight conversion both ways, through real save_pretrained / from_pretrained directories."""
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers
import flax.linen as nn

from bridgetower_jax import checkpoint, convert
from bridgetower_jax.convert.__main__ import main as convert_cli
from bridgetower_jax.models import BridgeTowerForPreTraining, ComputeConfig, preset
from bridgetower_jax.models.bridgetower import dummy_inputs
from hf_reference import batch, hf_config, nhwc, random_hf_model

CLASS_FOR_HEAD = convert.HF_CLASS_NAMES


def _hf_forward(model, ids, mask, pixels):
    with torch.no_grad():
        return model(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask),
                     pixel_values=torch.tensor(pixels, dtype=torch.float32))


@pytest.mark.parametrize("head", ["model", "mlm", "itm", "itc"])
def test_transformers_to_flax_to_transformers_is_identical(head, tmp_path):
    cfg = hf_config(contrastive=head == "itc", link_tower_type="interpolate")
    model = random_hf_model(CLASS_FOR_HEAD[head], cfg)
    model.save_pretrained(tmp_path / "src")
    config, params = convert.from_pytorch(tmp_path / "src")
    convert.to_pytorch(config, params, tmp_path / "out", head=head)
    reloaded, info = getattr(transformers, CLASS_FOR_HEAD[head]).from_pretrained(
        tmp_path / "out", output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    original = model.state_dict()
    for key, value in reloaded.state_dict().items():
        assert torch.equal(value, original[key]), key


def test_scanned_import_exports_identically(tmp_path):
    model = random_hf_model("BridgeTowerForMaskedLM", hf_config(num_hidden_layers=1))
    config, params = convert.from_pytorch(model, compute=ComputeConfig(scan_layers=True))
    assert "layers_scan" in params["bridgetower"]["text_model"]
    convert.to_pytorch(config, params, tmp_path, head="mlm")
    reloaded = transformers.BridgeTowerForMaskedLM.from_pretrained(tmp_path)
    for key, value in reloaded.state_dict().items():
        assert torch.equal(value, model.state_dict()[key]), key


@pytest.mark.parametrize("head", ["mlm", "itm", "itc", "model"])
def test_flax_to_transformers_reproduces_flax_outputs(head, tmp_path):
    """A Flax pre-training model initialised here exports to each transformers class and matches."""
    config = preset("tiny").replace(hidden_size=64, text=preset("tiny").text.__class__(
        vocab_size=99, hidden_size=64, num_hidden_layers=3, num_attention_heads=2, intermediate_size=64,
        max_position_embeddings=64), link_tower_type="scaled_add")
    model = BridgeTowerForPreTraining(config, with_itc=True)
    params = nn.meta.unbox(model.init(jax.random.PRNGKey(3), *dummy_inputs(config, 2)))["params"]
    # Non-trivial LayerNorms and biases, so a transposed or swapped tensor cannot hide.
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.PRNGKey(4), len(leaves))
    params = jax.tree.unflatten(tree, [x + 0.05 * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys)])
    convert.to_pytorch(config, params, tmp_path, head=head)
    hf, info = getattr(transformers, CLASS_FOR_HEAD[head]).from_pretrained(tmp_path, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    hf.eval()
    ids, mask, pixels = batch()
    ref = _hf_forward(hf, ids, mask, pixels)
    args = (jnp.asarray(ids), jnp.asarray(mask), jnp.asarray(nhwc(pixels), jnp.float32))
    if head == "mlm":
        ours, theirs = model.apply({"params": params}, *args, method=BridgeTowerForPreTraining.mlm), ref.logits
    elif head == "itm":
        ours, theirs = model.apply({"params": params}, *args, method=BridgeTowerForPreTraining.itm), ref.logits
    elif head == "itc":
        _, itc = model.apply({"params": params}, *args, method=BridgeTowerForPreTraining.itm_and_contrastive)
        ours, theirs = itc.logits, ref.logits
    else:
        core = convert.flax_model_for(config, ())
        ours, theirs = core.apply({"params": params["bridgetower"]}, *args).pooler_output, ref.pooler_output
    assert float(np.abs(np.asarray(ours) - theirs.numpy()).max()) < 1e-4


def test_pytorch_model_bin_and_head_checkpoint_loading(tmp_path):
    model = random_hf_model("BridgeTowerForImageAndTextRetrieval", hf_config())
    # transformers 5 writes only safetensors; older checkpoints on disk are pickled state dicts.
    model.config.save_pretrained(tmp_path)
    torch.save(model.state_dict(), tmp_path / "pytorch_model.bin")
    config, params = convert.from_pytorch(tmp_path)
    assert convert.detect_heads(params) == ("itm",)
    np.testing.assert_array_equal(params["itm_score"]["fc"]["kernel"], model.itm_score.fc.weight.detach().numpy().T)


def test_cli_round_trip(tmp_path, capsys):
    model = random_hf_model("BridgeTowerForMaskedLM", hf_config())
    model.save_pretrained(tmp_path / "hf")
    assert convert_cli(["from-pytorch", "--hf", str(tmp_path / "hf"), "--out", str(tmp_path / "flax")]) == 0
    config, params, heads = checkpoint.load_params(tmp_path / "flax")
    assert heads == ("mlm",) and config.padded_vocab_size == 128
    assert convert_cli(["to-pytorch", "--params", str(tmp_path / "flax"), "--out", str(tmp_path / "back"),
                        "--head", "mlm"]) == 0
    assert "BridgeTowerForMaskedLM" in capsys.readouterr().out
    back = transformers.BridgeTowerForMaskedLM.from_pretrained(tmp_path / "back")
    for key, value in back.state_dict().items():
        assert torch.equal(value, model.state_dict()[key]), key


# ---- clear errors --------------------------------------------------------------------------
def test_directory_that_is_not_a_bridgetower_checkpoint(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        convert.from_pytorch(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(ValueError, match="model_type='bert'"):
        convert.from_pytorch(tmp_path)
    hf_config().save_pretrained(tmp_path)
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        convert.from_pytorch(tmp_path)


def test_truncated_weights_file_names_the_file(tmp_path):
    random_hf_model("BridgeTowerModel", hf_config()).save_pretrained(tmp_path)
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(ValueError, match="model.safetensors"):
        convert.from_pytorch(tmp_path)


def test_mismatched_shapes_name_the_parameter(tmp_path):
    random_hf_model("BridgeTowerModel", hf_config()).save_pretrained(tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    cfg["vision_config"]["image_size"] = 48              # a position table of the wrong length
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="position_embedding/embedding: expected shape"):
        convert.from_pytorch(tmp_path)
    cfg["vision_config"]["image_size"] = 32
    cfg["text_config"]["num_hidden_layers"] = 2           # fewer layers than the weights hold
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="do not belong to this config"):
        convert.from_pytorch(tmp_path)


def test_configs_the_reference_cannot_express(tmp_path):
    config = preset("tiny").replace(num_token_types=3)
    with pytest.raises(ValueError, match="num_token_types=3"):
        convert.to_pytorch(config, {}, tmp_path, head="model")
    with pytest.raises(ValueError, match="vision.hidden_size == hidden_size"):
        convert.to_pytorch(preset("tiny"), {}, tmp_path, head="itc")
    bad = hf_config(share_link_tower_layers=True)
    with pytest.raises(ValueError, match="share_link_tower_layers=True"):
        convert.from_hf_config(bad)


def test_exporting_a_head_the_params_lack(tmp_path):
    model = random_hf_model("BridgeTowerModel", hf_config())
    config, params = convert.from_pytorch(model)
    with pytest.raises(ValueError, match="head='mlm' needs"):
        convert.to_pytorch(config, params, tmp_path, head="mlm")
