"""Pretrained weights in: CLIP and RoBERTa towers, the original BridgeTower .ckpt, position resizing.

Everything is built here from random-weight transformers models saved to tmp directories (offline).
"""
import dataclasses
import os

import jax
import numpy as np
import pytest
import torch
import torch.nn.functional as F
import transformers

from bridgetower_jax import checkpoint, convert
from bridgetower_jax.convert.__main__ import main as convert_cli
from bridgetower_jax.convert.import_report import UNMATCHED
from bridgetower_jax.convert.position_resize import resize_position_table
from bridgetower_jax.convert.torch_files import read_weights_file
from bridgetower_jax.models import BridgeTowerForMaskedLM, BridgeTowerForVQA, preset
from bridgetower_jax.models.heads import MLMHead
from bridgetower_jax.models.vision import VisionEncoder
from hf_reference import batch, hf_config, nhwc, random_hf_model

TINY = preset("tiny")   # text 32 wide x 3 layers, vision 64 wide x 3 blocks, patch 8, image 32, 2 cross layers


class LightningAttributeDict(dict):
    """Stands for the training objects a Lightning .ckpt pickles next to the weights."""


# ------------------------------------------------------------------------------------------------
# random-weight sources on disk
# ------------------------------------------------------------------------------------------------
def _randomise(model, seed):
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn_like(p) * 0.2)
    return model.eval()


def _clip_config(image_size=32, **overrides):
    v = TINY.vision
    return transformers.CLIPVisionConfig(hidden_size=v.hidden_size, intermediate_size=4 * v.hidden_size,
                                         num_hidden_layers=v.num_hidden_layers, num_attention_heads=1,
                                         image_size=image_size, patch_size=v.patch_size, **overrides)


def _roberta_config():
    t = TINY.text
    return transformers.RobertaConfig(vocab_size=t.vocab_size, hidden_size=t.hidden_size,
                                      num_hidden_layers=t.num_hidden_layers, num_attention_heads=t.num_attention_heads,
                                      intermediate_size=t.intermediate_size,
                                      max_position_embeddings=t.max_position_embeddings, type_vocab_size=1,
                                      pad_token_id=1, layer_norm_eps=1e-5)


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    """A CLIPModel (vision + text towers) at the tiny image size."""
    text = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, vocab_size=50,
                bos_token_id=0, eos_token_id=2, pad_token_id=1)
    cfg = transformers.CLIPConfig(text_config=text, vision_config=_clip_config().to_dict(), projection_dim=16)
    model = _randomise(transformers.CLIPModel(cfg), 1)
    path = tmp_path_factory.mktemp("clip")
    model.save_pretrained(path)
    return path, model.vision_model


@pytest.fixture(scope="module")
def roberta_dir(tmp_path_factory):
    model = _randomise(transformers.RobertaForMaskedLM(_roberta_config()), 2)
    path = tmp_path_factory.mktemp("roberta")
    model.save_pretrained(path)
    return path, model


def _openai_state_dict(vision_model) -> dict:
    """OpenAI CLIP names (`visual.*`, packed in_proj) for a transformers CLIP vision tower, plus the text
    tower leftovers and metadata an OpenAI archive carries."""
    sd = {k.removeprefix("vision_model."): v for k, v in vision_model.state_dict().items()}
    out = {"visual.class_embedding": sd["embeddings.class_embedding"],
           "visual.conv1.weight": sd["embeddings.patch_embedding.weight"],
           "visual.positional_embedding": sd["embeddings.position_embedding.weight"],
           "visual.ln_pre.weight": sd["pre_layrnorm.weight"], "visual.ln_pre.bias": sd["pre_layrnorm.bias"],
           "visual.ln_post.weight": sd["post_layernorm.weight"], "visual.ln_post.bias": sd["post_layernorm.bias"],
           "visual.proj": torch.randn(TINY.vision.hidden_size, 16),
           "positional_embedding": torch.randn(77, 32), "ln_final.weight": torch.ones(32),
           "logit_scale": torch.tensor(4.6), "input_resolution": torch.tensor(32)}
    for i in range(TINY.vision.num_hidden_layers):
        src, dst = f"encoder.layers.{i}.", f"visual.transformer.resblocks.{i}."
        for kind in ("weight", "bias"):
            out[f"{dst}attn.in_proj_{kind}"] = torch.cat([sd[f"{src}self_attn.{n}_proj.{kind}"] for n in "qkv"])
            for a, b in (("self_attn.out_proj", "attn.out_proj"), ("layer_norm1", "ln_1"), ("layer_norm2", "ln_2"),
                         ("mlp.fc1", "mlp.c_fc"), ("mlp.fc2", "mlp.c_proj")):
                out[f"{dst}{b}.{kind}"] = sd[f"{src}{a}.{kind}"]
    return {k: v.detach().clone().contiguous() for k, v in out.items()}


def _save_torchscript(state_dict: dict, path) -> None:
    """OpenAI distributes CLIP as a TorchScript archive: write one holding these tensors."""
    class Box(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x

    root = Box()
    for key, value in state_dict.items():
        *parents, leaf = key.split(".")
        node = root
        for name in parents:
            if not hasattr(node, name):
                node.add_module(name, Box())
            node = getattr(node, name)
        node.register_buffer(leaf, value)
    torch.jit.save(torch.jit.script(root), str(path))


def _leaves(tree, prefix=()):
    for k, v in tree.items():
        yield from (_leaves(v, prefix + (k,)) if isinstance(v, dict) else [(prefix + (k,), v)])


# ------------------------------------------------------------------------------------------------
# position-table resize
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("old, new", [(14, 18), (14, 24), (14, 36), (16, 21), (24, 14)])
def test_position_resize_equals_torch_bicubic(old, new):
    table = np.random.RandomState(old * new).randn(1 + old * old, 24).astype(np.float32)
    grid = torch.tensor(table[1:]).reshape(1, old, old, 24).permute(0, 3, 1, 2)
    expected = F.interpolate(grid, size=(new, new), mode="bicubic", align_corners=False)
    expected = expected[0].permute(1, 2, 0).reshape(new * new, 24).numpy()
    out = resize_position_table(table, new)
    assert out.shape == (1 + new * new, 24) and out.dtype == np.float32
    np.testing.assert_array_equal(out[0], table[0])
    np.testing.assert_allclose(out[1:], expected, atol=1e-5, rtol=0)
    # jax.image.resize's cubic (a = -0.5) is a different kernel: the test would catch it.
    jax_cubic = np.asarray(jax.image.resize(table[1:].reshape(old, old, 24), (new, new, 24), "cubic"))
    assert np.abs(jax_cubic.reshape(-1, 24) - expected).max() > 1e-3


@pytest.mark.parametrize("image_size, rows", [(288, 325), (384, 577), (576, 1297), (224, 197)])
def test_position_resize_shapes_for_the_papers_sizes_and_identity(image_size, rows):
    table = np.random.RandomState(0).randn(197, 8).astype(np.float32)   # CLIP ViT-B/16 at 224
    out = resize_position_table(table, image_size // 16)
    assert out.shape == (rows, 8)
    if image_size == 224:
        assert out is table   # unchanged grid: the very same table


def test_position_resize_rejects_a_table_without_a_square_grid():
    with pytest.raises(ValueError, match="not \\[1 \\+ g\\*g, D\\]"):
        resize_position_table(np.zeros((11, 4)), 4)


# ------------------------------------------------------------------------------------------------
# CLIP + RoBERTa -> towers
# ------------------------------------------------------------------------------------------------
def test_clip_and_roberta_towers_reproduce_transformers_hidden_states(clip_dir, roberta_dir):
    (clip_path, clip_vision), (roberta_path, roberta) = clip_dir, roberta_dir
    config, params, report = convert.init_from_pretrained(TINY, "mlm", clip=clip_path, roberta=roberta_path)
    ids, mask, pixels = batch()
    out = BridgeTowerForMaskedLM(config).apply({"params": params}, ids, mask, nhwc(pixels),
                                               output_hidden_states=True)
    text_hidden, image_hidden, _ = out.hidden_states
    with torch.no_grad():
        ref_text = roberta.roberta(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask),
                                   output_hidden_states=True).hidden_states
        ref_image = clip_vision(pixel_values=torch.tensor(pixels, dtype=torch.float32),
                                output_hidden_states=True).hidden_states
    assert len(text_hidden) == len(ref_text) == TINY.text.num_hidden_layers + 1
    for ours, ref in zip(text_hidden, ref_text):
        np.testing.assert_allclose(np.asarray(ours), ref.numpy(), atol=1e-5, rtol=0)
    assert len(image_hidden) == len(ref_image)
    for ours, ref in zip(image_hidden, ref_image):
        np.testing.assert_allclose(np.asarray(ours), ref.numpy(), atol=1e-5, rtol=0)
    # The bridged vision states are CLIP's post_layernorm of each bridged layer's output.
    bridges, _ = VisionEncoder(config).apply({"params": params["bridgetower"]["vision_model"]}, nhwc(pixels))
    split = config.split_index
    assert len(bridges) == config.num_hidden_layers
    with torch.no_grad():
        for j, ours in enumerate(bridges):
            ref = clip_vision.post_layernorm(ref_image[split + j])
            np.testing.assert_allclose(np.asarray(ours), ref.numpy(), atol=1e-5, rtol=0)
    # RoBERTa's LM head became our MLM head (decoder untied from the word embeddings).
    x = np.random.RandomState(5).randn(2, 4, config.hidden_size).astype(np.float32)
    ours = MLMHead(config).apply({"params": params["mlm_score"]}, x)
    with torch.no_grad():
        np.testing.assert_allclose(np.asarray(ours), roberta.lm_head(torch.tensor(x)).numpy(), atol=1e-5, rtol=0)
    # The report says what came from where.
    assert set(report.loaded) == {"vision_model", "text_model", "mlm_score"}
    assert {"cross_modal_text_layers", "cross_modal_image_link_tower", "token_type_embeddings",
            "text_model/pooler"} <= set(report.initialised)
    ignored = " ".join(report.ignored)
    assert "CLIP text tower" in ignored
    assert any(k.startswith("text_model.") for keys in report.ignored.values() for k in keys)


def test_fresh_parts_are_the_targets_own_initialisation(clip_dir, roberta_dir):
    """Everything not imported is exactly what the Flax model's init gives for that seed."""
    config, params, _ = convert.init_from_pretrained(TINY, "pretrain", clip=clip_dir[0], roberta=roberta_dir[0],
                                                     seed=7, roberta_mlm_head=False)
    model = convert.task_model_for(config, "pretrain")
    from bridgetower_jax.convert.task_models import init_params
    fresh = dict(_leaves(init_params(model, 7)))
    for path, value in _leaves(params):
        if path[1] not in ("vision_model", "text_model"):
            np.testing.assert_array_equal(value, fresh[path], err_msg="/".join(path))
    # the original starts the MLM head at random: asked for, it stays fresh
    np.testing.assert_array_equal(params["mlm_score"]["decoder"]["kernel"], fresh[("mlm_score", "decoder", "kernel")])


def test_openai_clip_archive_imports_like_the_transformers_directory(clip_dir, tmp_path):
    clip_path, clip_vision = clip_dir
    archive = tmp_path / "ViT-tiny.pt"
    _save_torchscript(_openai_state_dict(clip_vision), archive)
    plain = tmp_path / "visual_state_dict.pt"
    torch.save(_openai_state_dict(clip_vision), plain)
    from_hf = convert.import_clip_vision(clip_path, TINY).params
    for source in (archive, plain):
        imported = convert.import_clip_vision(source, TINY)
        assert list(_leaves(imported.params)) and len(dict(_leaves(imported.params))) == len(dict(_leaves(from_hf)))
        for path, value in _leaves(from_hf):
            np.testing.assert_array_equal(dict(_leaves(imported.params))[path], value, err_msg="/".join(path))
        ignored = {k for keys in imported.ignored.values() for k in keys}
        assert {"visual.proj", "positional_embedding", "ln_final.weight", "logit_scale",
                "input_resolution"} <= ignored


def test_clip_position_table_is_resized_to_the_configured_image_size(clip_dir):
    clip_path, clip_vision = clip_dir
    config = TINY.replace(vision=dataclasses.replace(TINY.vision, image_size=64))   # 4x4 -> 8x8 patches
    imported = convert.import_clip_vision(clip_path, config)
    table = imported.params["vision_model"]["embeddings"]["position_embedding"]["embedding"]
    source = clip_vision.embeddings.position_embedding.weight.detach().numpy()
    assert table.shape == (65, 64)
    np.testing.assert_array_equal(table, resize_position_table(source, 8))
    assert any("4x4 -> 8x8" in n for n in imported.notes)


# ------------------------------------------------------------------------------------------------
# original BridgeTower .ckpt
# ------------------------------------------------------------------------------------------------
def _tiny_hf_config():
    """transformers' BridgeTower at exactly the tiny preset's sizes."""
    return hf_config(text={"intermediate_size": TINY.text.intermediate_size},
                     vision={"num_hidden_layers": TINY.vision.num_hidden_layers})


def _original_state_dict(hf_model) -> dict:
    """The documented mapping transformers -> original names (vit_model / text_transformer), plus the
    unused parts an original checkpoint carries."""
    renames = {"vision_model.visual.embeddings.class_embedding": "vit_model.visual.class_embedding",
               "vision_model.visual.embeddings.patch_embedding.weight": "vit_model.visual.conv1.weight",
               "vision_model.visual.embeddings.position_embedding.weight": "vit_model.visual.positional_embedding"}
    out = {}
    for key, value in hf_model.state_dict().items():
        key = key.removeprefix("bridgetower.")
        key = renames.get(key, key)
        key = key.replace("vision_model.visual.", "vit_model.visual.").replace("text_model.", "text_transformer.")
        out[key] = value.detach().clone()
    out.update({"vit_model.positional_embedding": torch.randn(77, 32), "vit_model.ln_final.weight": torch.ones(32),
                "vit_model.ln_final.bias": torch.zeros(32), "temperature": torch.tensor(0.07),
                "text_transformer.embeddings.position_ids": torch.arange(64)[None],
                "itc_text_head.fc.weight": torch.randn(16, 32), "itc_text_head.fc.bias": torch.zeros(16)})
    return out


def _save_ckpt(state_dict, path):
    torch.save({"state_dict": state_dict, "epoch": 3, "global_step": 1200, "pytorch-lightning_version": "1.5.10",
                "hyper_parameters": LightningAttributeDict(config={"loss_names": {"mlm": 1}})}, path)


@pytest.fixture(scope="module")
def original_mlm(tmp_path_factory):
    model = random_hf_model("BridgeTowerForMaskedLM", _tiny_hf_config(), seed=3)
    path = tmp_path_factory.mktemp("orig") / "BridgeTower_pt_tiny.ckpt"
    _save_ckpt(_original_state_dict(model), path)
    return path, model


def test_original_checkpoint_imports_to_the_transformers_models_outputs(original_mlm):
    path, model = original_mlm
    config, params, report = convert.from_original_checkpoint(path, TINY)
    assert report.task == "mlm"
    _, reference = convert.from_pytorch(model)
    ours, ref = dict(_leaves(params)), dict(_leaves(reference))
    assert ours.keys() == ref.keys()
    for key, value in ref.items():
        np.testing.assert_array_equal(ours[key], value, err_msg="/".join(key))
    ids, mask, pixels = batch()
    logits = BridgeTowerForMaskedLM(config).apply({"params": params}, ids, mask, nhwc(pixels)).logits
    with torch.no_grad():
        expected = model(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask),
                         pixel_values=torch.tensor(pixels, dtype=torch.float32)).logits
    np.testing.assert_allclose(np.asarray(logits), expected.numpy(), atol=1e-5, rtol=0)
    ignored = {k for keys in report.ignored.values() for k in keys}
    assert {"vit_model.positional_embedding", "temperature", "itc_text_head.fc.weight",
            "text_transformer.embeddings.position_ids"} <= ignored
    assert "epoch=3" in report.notes[0] and not report.initialised


def test_original_vqa_head_and_position_resize(original_mlm, tmp_path):
    path, model = original_mlm
    sd = torch.load(path, weights_only=False)["state_dict"]
    torch.manual_seed(4)
    head = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.LayerNorm(128), torch.nn.GELU(),
                               torch.nn.Linear(128, 7)).eval()
    with torch.no_grad():
        for p in head.parameters():
            p.copy_(torch.randn_like(p) * 0.3)
    sd.update({f"vqa_classifier.{k}": v for k, v in head.state_dict().items()})
    _save_ckpt(sd, tmp_path / "vqa.ckpt")
    config, params, report = convert.from_original_checkpoint(tmp_path / "vqa.ckpt", TINY)
    assert report.task == "vqa" and "mlm_score" not in params
    assert any("mlm_score" in k for k in report.ignored["heads of other tasks than the one imported"])
    ids, mask, pixels = batch()
    logits = BridgeTowerForVQA(config, num_answers=7).apply({"params": params}, ids, mask, nhwc(pixels)).logits
    with torch.no_grad():
        pooled = model.bridgetower(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask),
                                   pixel_values=torch.tensor(pixels, dtype=torch.float32)).pooler_output
        np.testing.assert_allclose(np.asarray(logits), head(pooled).numpy(), atol=1e-5, rtol=0)
    # Fine-tuning at a larger image size: the original resizes the position table at load.
    big = TINY.replace(vision=dataclasses.replace(TINY.vision, image_size=48))
    _, params48, report48 = convert.from_original_checkpoint(tmp_path / "vqa.ckpt", big)
    table = params48["bridgetower"]["vision_model"]["embeddings"]["position_embedding"]["embedding"]
    source = sd["vit_model.visual.positional_embedding"].numpy()
    np.testing.assert_array_equal(table, resize_position_table(source, 6))
    assert any("4x4 -> 6x6" in n for n in report48.notes)


def test_original_fine_tuning_set_up_nlvr2_token_types_and_rank_from_itm(original_mlm, tmp_path):
    path, _ = original_mlm
    sd = torch.load(path, weights_only=False)["state_dict"]
    sd.update({"itm_score.fc.weight": torch.randn(2, 64), "itm_score.fc.bias": torch.randn(2)})
    _save_ckpt(sd, tmp_path / "pt.ckpt")
    config, params, report = convert.from_original_checkpoint(tmp_path / "pt.ckpt", TINY, task="nlvr2")
    table = params["bridgetower"]["token_type_embeddings"]["embedding"]
    assert config.num_token_types == 3 and table.shape == (3, 32)
    np.testing.assert_array_equal(table[2], sd["token_type_embeddings.weight"][1].numpy())
    assert "nlvr2_classifier" in report.initialised
    _, params, report = convert.from_original_checkpoint(tmp_path / "pt.ckpt", TINY, task="rank")
    np.testing.assert_array_equal(params["rank_output"]["fc"]["kernel"], sd["itm_score.fc.weight"][1:].numpy().T)
    np.testing.assert_array_equal(params["rank_output"]["fc"]["bias"], sd["itm_score.fc.bias"][1:].numpy())
    _, params, report = convert.from_original_checkpoint(tmp_path / "pt.ckpt", TINY)
    assert report.task == "pretrain" and {"mlm_score", "itm_score"} <= set(params)


# ------------------------------------------------------------------------------------------------
# wrong files, unmatched keys, refusals
# ------------------------------------------------------------------------------------------------
def test_truncated_files_are_named_in_the_error(clip_dir, original_mlm, tmp_path):
    clip_path, _ = clip_dir
    broken = tmp_path / "clip"
    broken.mkdir()
    (broken / "config.json").write_text((clip_path / "config.json").read_text())
    data = (clip_path / "model.safetensors").read_bytes()
    (broken / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="model.safetensors"):
        convert.import_clip_vision(broken, TINY)
    ckpt = tmp_path / "cut.ckpt"
    ckpt.write_bytes(original_mlm[0].read_bytes()[:5000])
    with pytest.raises(ValueError, match="cut.ckpt"):
        convert.from_original_checkpoint(ckpt, TINY)


class _RemovesAFileWhenUnpickled:
    def __init__(self, victim):
        self.victim = str(victim)

    def __reduce__(self):
        return os.remove, (self.victim,)


def test_checkpoint_objects_besides_tensors_are_never_executed(tmp_path):
    """A .ckpt pickles training objects too; reading one must not run what they reduce to."""
    victim = tmp_path / "victim.txt"
    victim.write_text("still here")
    weights = {"vit_model.visual.class_embedding": torch.randn(4)}
    torch.save({"state_dict": weights, "callbacks": _RemovesAFileWhenUnpickled(victim)}, tmp_path / "x.ckpt")
    container = read_weights_file(tmp_path / "x.ckpt")
    assert victim.exists()
    np.testing.assert_array_equal(container["state_dict"]["vit_model.visual.class_embedding"].numpy(),
                                  weights["vit_model.visual.class_embedding"].numpy())


def test_wrong_files_are_refused_clearly(clip_dir, roberta_dir, tmp_path):
    with pytest.raises(ValueError, match="model_type='roberta'"):
        convert.import_clip_vision(roberta_dir[0], TINY)
    with pytest.raises(ValueError, match="model_type='clip'"):
        convert.import_roberta(clip_dir[0], TINY)
    torch.save({"weight": torch.zeros(3)}, tmp_path / "not_clip.pt")
    with pytest.raises(ValueError, match="not_clip.pt has no CLIP vision embeddings"):
        convert.import_clip_vision(tmp_path / "not_clip.pt", TINY)
    with pytest.raises(ValueError, match="not_clip.pt is not an original BridgeTower checkpoint"):
        convert.from_original_checkpoint(tmp_path / "not_clip.pt", TINY)
    with pytest.raises(FileNotFoundError, match="missing.ckpt"):
        convert.from_original_checkpoint(tmp_path / "missing.ckpt", TINY)


def test_a_clip_that_computes_something_else_is_refused(tmp_path):
    _randomise(transformers.CLIPVisionModel(_clip_config(hidden_act="gelu")), 0).save_pretrained(tmp_path / "g")
    with pytest.raises(ValueError, match="hidden_act='gelu'.*QuickGELU"):
        convert.import_clip_vision(tmp_path / "g", TINY)
    deeper = TINY.replace(vision=dataclasses.replace(TINY.vision, num_hidden_layers=4))
    _randomise(transformers.CLIPVisionModel(_clip_config()), 0).save_pretrained(tmp_path / "c")
    with pytest.raises(ValueError, match="num_hidden_layers: checkpoint has 3, config has 4"):
        convert.import_clip_vision(tmp_path / "c", deeper)


def test_unmatched_keys_are_listed(clip_dir, original_mlm, tmp_path):
    sd = _openai_state_dict(clip_dir[1])
    sd.update({"visual.adapter.weight": torch.zeros(2), "mystery": torch.zeros(1)})
    torch.save(sd, tmp_path / "extra.pt")
    with pytest.raises(ValueError, match=r"2 keys match nothing.*'mystery', 'visual.adapter.weight'"):
        convert.import_clip_vision(tmp_path / "extra.pt", TINY)
    imported = convert.import_clip_vision(tmp_path / "extra.pt", TINY, strict=False)
    assert imported.ignored[UNMATCHED] == ["mystery", "visual.adapter.weight"]
    sd = torch.load(original_mlm[0], weights_only=False)["state_dict"]
    sd["cross_modal_text_layers.5.output.dense.weight"] = torch.zeros(2)   # a deeper cross-modal stack
    _save_ckpt(sd, tmp_path / "deeper.ckpt")
    with pytest.raises(ValueError, match="cross_modal_text_layers.5.output.dense.weight"):
        convert.from_original_checkpoint(tmp_path / "deeper.ckpt", TINY)


def test_cli_init_from_pretrained_and_from_original_write_params_directories(clip_dir, roberta_dir, original_mlm,
                                                                               tmp_path, capsys):
    assert convert_cli(["init-from-pretrained", "--clip", str(clip_dir[0]), "--roberta", str(roberta_dir[0]),
                        "--config-preset", "tiny", "--head", "pretrain", "--out", str(tmp_path / "init")]) == 0
    printed = capsys.readouterr().out
    assert "loaded:" in printed and "freshly initialised:" in printed and "ignored from the sources" in printed
    config, params, heads = checkpoint.load_params(tmp_path / "init")
    assert heads == ("mlm", "itm") and {"bridgetower", "mlm_score", "itm_score"} == set(params)
    assert convert_cli(["from-original", "--ckpt", str(original_mlm[0]), "--config-preset", "tiny",
                        "--image-size", "48", "--out", str(tmp_path / "orig")]) == 0
    config, params, heads = checkpoint.load_params(tmp_path / "orig")
    assert heads == ("mlm",) and config.vision.image_size == 48
    assert convert_cli(["from-original", "--ckpt", str(tmp_path / "nope.ckpt"), "--config-preset", "tiny",
                        "--out", str(tmp_path / "x")]) == 2
    assert "nope.ckpt" in capsys.readouterr().err
