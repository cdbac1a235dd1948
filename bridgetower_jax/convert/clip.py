"""CLIP vision weights -> our `vision_model` (the paper initialises the vision tower from CLIP).

Two sources: a transformers `CLIPModel` / `CLIPVisionModel` directory, and an OpenAI CLIP state
dict (`visual.*` keys: the `.pt` TorchScript archive or a plain torch/safetensors state dict).
Both are renamed into transformers-BridgeTower names (`vision_model.visual.*`), whose vision
tower is OpenAI's layout, so `state_dict.core_links` does the array work. The position table is
resized from CLIP's grid to the configured image size as the original does (bicubic).
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

from bridgetower_jax.convert.import_report import Imported, check_unmatched
from bridgetower_jax.convert.partial_links import apply_available_links, core_part_links
from bridgetower_jax.convert.position_resize import position_grid_size, resize_position_table
from bridgetower_jax.convert.pytorch import load_hf_directory
from bridgetower_jax.convert.torch_files import numpy_state_dict, read_weights_file
from bridgetower_jax.models.config import BridgeTowerConfig

BT_VISUAL = "vision_model.visual."          # transformers-BridgeTower prefix of the vision tower
CLIP_MODEL_TYPES = ("clip", "clip_vision_model")
POSITION_KEY = BT_VISUAL + "embeddings.position_embedding.weight"

# OpenAI `visual.` names -> transformers-BridgeTower names (after `vision_model.visual.`).
_OPENAI_RENAMES = {"class_embedding": "embeddings.class_embedding",
                   "conv1.weight": "embeddings.patch_embedding.weight",
                   "positional_embedding": "embeddings.position_embedding.weight"}
_OPENAI_SAME = re.compile(r"(ln_pre|ln_post|ln_separate\.\d+)\.(weight|bias)$|transformer\.resblocks\.\d+\."
                          r"(attn\.in_proj_(weight|bias)|attn\.out_proj\.(weight|bias)|ln_[12]\.(weight|bias)"
                          r"|mlp\.c_(fc|proj)\.(weight|bias))$")
# transformers CLIP names (after the optional `vision_model.`) -> transformers-BridgeTower names.
_HF_RENAMES = ((re.compile(r"embeddings\.(class_embedding|patch_embedding\.weight|position_embedding\.weight)$"),
                r"embeddings.\1"),
               (re.compile(r"pre_layrnorm\.(weight|bias)$"), r"ln_pre.\1"),
               (re.compile(r"post_layernorm\.(weight|bias)$"), r"ln_post.\1"),
               (re.compile(r"encoder\.layers\.(\d+)\.self_attn\.out_proj\.(weight|bias)$"),
                r"transformer.resblocks.\1.attn.out_proj.\2"),
               (re.compile(r"encoder\.layers\.(\d+)\.layer_norm([12])\.(weight|bias)$"),
                r"transformer.resblocks.\1.ln_\2.\3"),
               (re.compile(r"encoder\.layers\.(\d+)\.mlp\.fc1\.(weight|bias)$"), r"transformer.resblocks.\1.mlp.c_fc.\2"),
               (re.compile(r"encoder\.layers\.(\d+)\.mlp\.fc2\.(weight|bias)$"), r"transformer.resblocks.\1.mlp.c_proj.\2"))
_HF_QKV = re.compile(r"encoder\.layers\.(\d+)\.self_attn\.([qkv])_proj\.(weight|bias)$")

# Parts of a CLIP file BridgeTower does not use, by reason.
IGNORED_CLIP_TEXT = "CLIP text tower and contrastive projections (BridgeTower keeps only the image tower)"
IGNORED_CLIP_PROJ = "CLIP image projection visual.proj (BridgeTower reads the token states, not the embedding)"
IGNORED_METADATA = "archive metadata (input_resolution, context_length, vocab_size) or position-id buffers"
_OPENAI_TEXT = re.compile(r"(positional_embedding|text_projection|logit_scale|token_embedding\.weight|"
                          r"ln_final\.(weight|bias)|transformer\.resblocks\..*)$")
_METADATA = re.compile(r"(input_resolution|context_length|vocab_size|.*position_ids)$")


def translate_openai_visual(state_dict: dict[str, np.ndarray], prefix: str) -> tuple[dict, set[str]]:
    """`{prefix}*` OpenAI visual keys -> transformers-BridgeTower names; returns (renamed, keys used)."""
    out, used = {}, set()
    for key, value in state_dict.items():
        if not key.startswith(prefix):
            continue
        name = key[len(prefix):]
        if name in _OPENAI_RENAMES:
            out[BT_VISUAL + _OPENAI_RENAMES[name]] = value
        elif _OPENAI_SAME.match(name):
            out[BT_VISUAL + name] = value
        else:
            continue
        used.add(key)
    return out, used


def _translate_hf_clip(state_dict: dict[str, np.ndarray]) -> tuple[dict, set[str]]:
    """transformers CLIP vision keys -> transformers-BridgeTower names; q/k/v are packed into in_proj as
    nn.MultiheadAttention stores them (rows q | k | v)."""
    out, used, qkv = {}, set(), {}
    for key, value in state_dict.items():
        name = key.removeprefix("vision_model.")
        if (m := _HF_QKV.match(name)):
            qkv.setdefault((m.group(1), m.group(3)), {})[m.group(2)] = value
            used.add(key)
            continue
        for pattern, target in _HF_RENAMES:
            if pattern.match(name):
                out[BT_VISUAL + pattern.sub(target, name)] = value
                used.add(key)
                break
    for (layer, kind), parts in qkv.items():
        if set(parts) == {"q", "k", "v"}:
            out[f"{BT_VISUAL}transformer.resblocks.{layer}.attn.in_proj_{kind}"] = np.concatenate(
                [parts["q"], parts["k"], parts["v"]], axis=0)
    return out, used


def _classify_leftovers(keys: list[str], openai_prefix: str | None) -> tuple[dict[str, list[str]], list[str]]:
    """Split the keys a translation did not use into known-unused parts and unmatched keys."""
    ignored: dict[str, list[str]] = {}
    unmatched = []
    for key in sorted(keys):
        if _METADATA.match(key):
            ignored.setdefault(IGNORED_METADATA, []).append(key)
        elif openai_prefix is not None and key == f"{openai_prefix}proj":
            ignored.setdefault(IGNORED_CLIP_PROJ, []).append(key)
        elif (openai_prefix is not None and _OPENAI_TEXT.match(key)) or key.startswith(
                ("text_model.", "text_projection", "visual_projection", "logit_scale")):
            ignored.setdefault(IGNORED_CLIP_TEXT, []).append(key)
        else:
            unmatched.append(key)
    return ignored, unmatched


def check_vision_geometry(vision_sd: dict[str, np.ndarray], config: BridgeTowerConfig, source: str) -> None:
    """The CLIP tower must have the configured width, depth, patch size and channels (the image size may
    differ: positions are resized)."""
    v = config.vision
    needed = (BT_VISUAL + "embeddings.class_embedding", BT_VISUAL + "embeddings.patch_embedding.weight", POSITION_KEY)
    absent = [k for k in needed if k not in vision_sd]
    if absent:
        raise ValueError(f"{source} has no CLIP vision embeddings ({absent[0]} missing): not a CLIP vision checkpoint")
    patch = vision_sd[needed[1]]
    blocks = {int(m.group(1)) for k in vision_sd if (m := re.match(re.escape(BT_VISUAL) + r"transformer\.resblocks\.(\d+)\.", k))}
    found = {"hidden_size": vision_sd[needed[0]].shape[0], "patch_size": patch.shape[-1],
             "num_channels": patch.shape[1], "num_hidden_layers": len(blocks)}
    wrong = [f"{k}: checkpoint has {found[k]}, config has {getattr(v, k)}" for k in found if found[k] != getattr(v, k)]
    if wrong:
        raise ValueError(f"{source} does not fit config.vision:\n  " + "\n  ".join(wrong))
    position_grid_size(vision_sd[POSITION_KEY])


def resize_vision_positions(vision_sd: dict[str, np.ndarray], config: BridgeTowerConfig) -> list[str]:
    """Resize the position table in place to the configured grid; returns a note when it changed."""
    table = vision_sd[POSITION_KEY]
    old, new = position_grid_size(table), config.vision.image_size // config.vision.patch_size
    if old == new:
        return []
    vision_sd[POSITION_KEY] = resize_position_table(table, new)
    p = config.vision.patch_size
    return [f"vision position table resized {old}x{old} -> {new}x{new} patches ({old * p} -> {new * p} px, "
            "bicubic a=-0.75 like the original's adapt_position_encoding; class row kept)"]


def _check_hf_clip_config(hf_config: dict, config: BridgeTowerConfig, source: str) -> None:
    """Refuse a CLIP whose blocks compute something else than BridgeTower's (activation, eps, heads)."""
    vision = hf_config.get("vision_config", hf_config) if hf_config.get("model_type") == "clip" else hf_config
    act = vision.get("hidden_act", "quick_gelu")
    problems = []
    if act != "quick_gelu":
        problems.append(f"hidden_act={act!r}: BridgeTower's vision tower is CLIP's QuickGELU")
    eps = vision.get("layer_norm_eps", 1e-5)
    if eps != config.vision.layer_norm_eps:
        problems.append(f"layer_norm_eps={eps}, config.vision.layer_norm_eps={config.vision.layer_norm_eps}")
    heads, hidden = vision.get("num_attention_heads"), vision.get("hidden_size", config.vision.hidden_size)
    if heads is not None and heads != hidden // 64:
        problems.append(f"num_attention_heads={heads}: BridgeTower's CLIP uses hidden_size // 64 = {hidden // 64}")
    if problems:
        raise ValueError(f"{source}: this CLIP cannot be imported exactly:\n  " + "\n  ".join(problems))


def import_clip_vision(path: str | os.PathLike, config: BridgeTowerConfig, strict: bool = True) -> Imported:
    """CLIP vision weights -> `{"vision_model": ...}` for `config`, with the position table resized.

    `path`: a transformers CLIP directory (config.json + weights), or an OpenAI CLIP file with
    `visual.*` keys. With `strict`, keys that are neither used nor known CLIP parts are an error.
    """
    path = Path(path)
    if path.is_dir():
        hf_config, state_dict = load_hf_directory(path, CLIP_MODEL_TYPES)
        source = f"{path / 'config.json'} ({hf_config.get('model_type')})"
        _check_hf_clip_config(hf_config, config, source)
        vision_sd, used = _translate_hf_clip(state_dict)
        openai_prefix, label = None, f"transformers CLIP {path}"
    else:
        state_dict = numpy_state_dict(read_weights_file(path), path)
        source, openai_prefix, label = str(path), "visual.", f"OpenAI CLIP {path}"
        vision_sd, used = translate_openai_visual(state_dict, openai_prefix)
    ignored, unmatched = _classify_leftovers([k for k in state_dict if k not in used], openai_prefix)
    check_vision_geometry(vision_sd, config, source)
    check_unmatched(unmatched, source, strict, ignored)
    notes = resize_vision_positions(vision_sd, config)
    params, _ = apply_available_links(core_part_links(config, ("vision_model",)), vision_sd, source)
    return Imported(params=params, sources={"vision_model": label}, ignored=ignored, notes=notes)
