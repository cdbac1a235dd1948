"""Original BridgeTower (microsoft/BridgeTower) Lightning checkpoints -> Flax params, task heads included.

The .ckpt is `torch.save` of a dict whose "state_dict" uses the original module names:
`vit_model.visual.*` (OpenAI CLIP layout), `text_transformer.*` (a transformers RobertaModel),
the cross-modal names shared with transformers' BridgeTower, and the heads. We rename it into
transformers-BridgeTower names, let the shared link table convert the core and the MLM / ITM
heads, and convert the fine-tuning heads (`{vqa,snli,nlvr2}_classifier.{0,1,3}`, `rank_output`)
here. Like the original at load time, the position table is resized to the configured image
size, NLVR2 gets a third token-type row copied from row 1, and a retrieval `rank_output` missing
from the checkpoint starts from row 1 of `itm_score.fc`.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

from bridgetower_jax.convert.clip import (check_vision_geometry, resize_vision_positions,
                                          translate_openai_visual)
from bridgetower_jax.convert.import_report import ImportReport, check_unmatched, merge_into_fresh
from bridgetower_jax.convert.partial_links import apply_available_links
from bridgetower_jax.convert.state_dict import Link, _layernorm, _linear, core_links, head_links
from bridgetower_jax.convert.task_models import (CLASSIFIER_HEADS, TASK_HEADS, config_for_task, init_params,
                                                 task_model_for)
from bridgetower_jax.convert.torch_files import numpy_state_dict, read_weights_file
from bridgetower_jax.models.config import BridgeTowerConfig
from bridgetower_jax.models.scan_layout import stack_scanned_layers

# Head parameters of the original, by our task name.
HEAD_PREFIXES = {"mlm": "mlm_score.", "itm": "itm_score.", "vqa": "vqa_classifier.", "snli": "snli_classifier.",
                 "nlvr2": "nlvr2_classifier.", "rank": "rank_output."}
_CORE_NAMES = re.compile(r"(token_type_embeddings|cross_modal_(text|image)_(transform|layernorm|link_tower|layers|"
                         r"pooler))\.")
IGNORED_CLIP_TEXT = "unused CLIP text parts kept by the original's CLIP wrapper (vit_model.positional_embedding, ln_final)"
IGNORED_CLIP_PROJ = "CLIP image projection (unused by BridgeTower)"
IGNORED_BUFFERS = "position-id buffers (recomputed at run time)"
IGNORED_ITC = ("the original's ITC heads and temperature: they project the uni-modal CLS before the cross-modal "
               "transform, transformers' (ours) after it, so they are not the same function")
IGNORED_OTHER_HEADS = "heads of other tasks than the one imported"
IGNORED_LN_SEPARATE = ("per-block ln_separate norms (vision.share_layernorm=True: the original's main forward "
                       "uses the shared ln_post)")
EPS_NOTE = ("the original's co-attention and MLM-transform LayerNorms use eps 1e-12; this model uses "
            "transformers' 1e-5 (config.layer_norm_eps / text.layer_norm_eps): outputs differ by ~1e-6 relative")


def read_original_state_dict(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], list[str]]:
    """The state dict of an original .ckpt (or a bare state dict file), and notes on the container."""
    container = read_weights_file(path)
    notes = [f"read {path}"]
    if "state_dict" in container:
        for field in ("epoch", "global_step", "pytorch-lightning_version"):
            if field in container and isinstance(container[field], (int, str)):
                notes[0] += f", {field}={container[field]}"
        container = container["state_dict"]
    if not isinstance(container, dict) or not any(str(k).startswith("vit_model.") for k in container):
        raise ValueError(f"{path} is not an original BridgeTower checkpoint: no 'state_dict' with vit_model.* keys")
    return numpy_state_dict(container, path), notes


def detect_task(keys) -> str:
    """The task whose heads an original checkpoint carries (fine-tuning heads take precedence)."""
    keys = list(keys)
    has = {task: any(k.startswith(p) for k in keys) for task, p in HEAD_PREFIXES.items()}
    for task in ("vqa", "snli", "nlvr2", "rank"):
        if has[task]:
            return task
    return "pretrain" if has["mlm"] and has["itm"] else "mlm" if has["mlm"] else "itm" if has["itm"] else "model"


def _translate(state_dict: dict[str, np.ndarray]) -> tuple[dict, dict[str, list[str]], list[str]]:
    """Original names -> transformers-BridgeTower names (heads keep theirs); (renamed, ignored, unmatched)."""
    out, used = translate_openai_visual(state_dict, "vit_model.visual.")
    ignored: dict[str, list[str]] = {}
    unmatched = []
    for key, value in state_dict.items():
        if key in used:
            continue
        if key == "vit_model.visual.proj":
            ignored.setdefault(IGNORED_CLIP_PROJ, []).append(key)
        elif key.startswith("vit_model.") and not key.startswith("vit_model.visual."):
            ignored.setdefault(IGNORED_CLIP_TEXT, []).append(key)
        elif key.endswith("position_ids"):
            ignored.setdefault(IGNORED_BUFFERS, []).append(key)
        elif key.startswith("text_transformer."):
            out["text_model." + key.removeprefix("text_transformer.")] = value
        elif key.startswith(("itc_text_head.", "itc_image_head.")) or key == "temperature":
            ignored.setdefault(IGNORED_ITC, []).append(key)
        elif _CORE_NAMES.match(key) or key.startswith(tuple(HEAD_PREFIXES.values())):
            out[key] = value
        else:
            unmatched.append(key)
    return out, ignored, unmatched


def _classifier_links(name: str) -> list[Link]:
    """nn.Sequential(Linear, LayerNorm, GELU, Linear) -> TaskClassifier (indices 0, 1, 3 carry weights)."""
    return [*_linear(f"{name}.0", (name, "dense_in")), *_layernorm(f"{name}.1", (name, "LayerNorm")),
            *_linear(f"{name}.3", (name, "dense_out"))]


def _head_links(config: BridgeTowerConfig, task: str) -> list[Link]:
    """Links of the original heads the task's model holds (ITC never: see IGNORED_ITC)."""
    links = []
    for head in TASK_HEADS[task]:
        if head in ("mlm", "itm"):
            links += head_links(config, head)
        elif head in CLASSIFIER_HEADS:
            links += _classifier_links(CLASSIFIER_HEADS[head][0])
        elif head == "rank":
            links += _linear("rank_output", ("rank_output", "fc"))
    return links


def _classifier_size(sd: dict, task: str, config: BridgeTowerConfig, path) -> dict:
    """num_labels and head_hidden_scale of a fine-tuning head found in the checkpoint ({} if absent)."""
    if task not in CLASSIFIER_HEADS or f"{CLASSIFIER_HEADS[task][0]}.0.weight" not in sd:
        return {}
    name = CLASSIFIER_HEADS[task][0]
    if f"{name}.3.weight" not in sd:
        raise ValueError(f"{path}: {name} is a single Linear (task_head_layers=1); only the two-layer head "
                         "(Linear, LayerNorm, GELU, Linear) is supported")
    hidden, scale = sd[f"{name}.0.weight"].shape[0], sd[f"{name}.0.weight"].shape[0] / (2 * config.hidden_size)
    if int(2 * config.hidden_size * scale) != hidden:
        raise ValueError(f"{path}: {name} hidden width {hidden} is not 2 * hidden_size * a scale")
    return {"num_labels": sd[f"{name}.3.weight"].shape[0], "head_hidden_scale": scale}


def _prepare_rank_and_token_types(sd: dict, task: str, config: BridgeTowerConfig) -> tuple[BridgeTowerConfig, list]:
    """The original's fine-tuning set-up steps that change weights after loading."""
    notes = []
    rows = sd["token_type_embeddings.weight"].shape[0] if "token_type_embeddings.weight" in sd else None
    if rows == 3 and config.num_token_types < 3:
        config = config.replace(num_token_types=3)
        notes.append("checkpoint has 3 token types (NLVR2): config.num_token_types set to 3")
    elif rows == 2 and config.num_token_types == 3:
        table = sd["token_type_embeddings.weight"]
        sd["token_type_embeddings.weight"] = np.concatenate([table, table[1:2]], axis=0)
        notes.append("token_type_embeddings row 2 (NLVR2's second image) starts as a copy of row 1, as in the original")
    if task == "rank" and "rank_output.weight" not in sd and "itm_score.fc.weight" in sd:
        sd["rank_output.weight"], sd["rank_output.bias"] = sd["itm_score.fc.weight"][1:], sd["itm_score.fc.bias"][1:]
        notes.append("rank_output starts from row 1 (the 'match' logit) of itm_score.fc, as in the original")
    return config, notes


def from_original_checkpoint(path: str | os.PathLike, config: BridgeTowerConfig, task: str | None = None,
                             seed: int = 0, strict: bool = True) -> tuple[BridgeTowerConfig, dict, ImportReport]:
    """An original BridgeTower .ckpt -> (config, params of `task`'s model, report).

    `config` gives the sizes and the image size to run at (the position table is resized to it).
    `task` (see `task_models.TASKS`) defaults to the one whose heads the checkpoint holds; heads
    the task needs but the checkpoint lacks are freshly initialised, as when the original starts
    a fine-tuning from a pre-trained checkpoint.
    """
    path = Path(path)
    state_dict, notes = read_original_state_dict(path)
    task = task or detect_task(state_dict)
    if config.link_tower_type != "add" or not config.share_cross_modal_transformer_layers:
        raise ValueError("the original BridgeTower has only 'add' link towers and one shared cross-modal transform: "
                         "set link_tower_type='add', share_cross_modal_transformer_layers=True")
    sd, ignored, unmatched = _translate(state_dict)
    check_vision_geometry(sd, config, str(path))
    notes += resize_vision_positions(sd, config)
    config, prepared = _prepare_rank_and_token_types(sd, task, config_for_task(config.validate(), task))
    notes += prepared + [EPS_NOTE]
    looped = config.with_compute(scan_layers=False)
    core, used = apply_available_links(list(core_links(looped)), sd, str(path))
    heads, head_used = apply_available_links(_head_links(looped, task), sd, str(path), required=False)
    leftover = [k for k in sd if k not in used and k not in head_used]
    for reason, prefix in ((IGNORED_OTHER_HEADS, tuple(HEAD_PREFIXES.values())),
                           (IGNORED_LN_SEPARATE, "vision_model.visual.ln_separate.")):
        if (keys := [k for k in leftover if k.startswith(prefix)]):
            ignored[reason] = keys
            leftover = [k for k in leftover if k not in keys]
    check_unmatched(unmatched + leftover, str(path), strict, ignored)
    fresh = init_params(task_model_for(looped, task, **_classifier_size(sd, task, looped, path)), seed)
    loaded = {"bridgetower": core, **heads} if "bridgetower" in fresh else core
    params, report = merge_into_fresh(fresh, loaded, task, ignored=ignored, notes=notes)
    if config.compute.scan_layers:
        params = stack_scanned_layers(config, params)
    return config, params, report
