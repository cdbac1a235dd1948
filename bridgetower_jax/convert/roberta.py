"""RoBERTa weights -> our `text_model` (and the MLM head), as the paper initialises the text tower.

Source: a transformers `RobertaModel` or `RobertaForMaskedLM` directory. Keys are renamed into
transformers-BridgeTower names (`text_model.*`, `mlm_score.*`) so the shared link table does the
array work, including padding the vocabulary to `config.padded_vocab_size`.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from bridgetower_jax.convert.import_report import Imported, check_unmatched
from bridgetower_jax.convert.partial_links import apply_available_links, core_part_links
from bridgetower_jax.convert.pytorch import load_hf_directory
from bridgetower_jax.convert.state_dict import head_links
from bridgetower_jax.models.config import BridgeTowerConfig

# RoBERTa's MLM head -> BridgeTower's `mlm_score` (same structure: dense, GELU, LayerNorm, decoder, bias).
_LM_HEAD_RENAMES = {"lm_head.dense.weight": "mlm_score.transform.dense.weight",
                    "lm_head.dense.bias": "mlm_score.transform.dense.bias",
                    "lm_head.layer_norm.weight": "mlm_score.transform.LayerNorm.weight",
                    "lm_head.layer_norm.bias": "mlm_score.transform.LayerNorm.bias",
                    "lm_head.decoder.weight": "mlm_score.decoder.weight",
                    "lm_head.bias": "mlm_score.bias"}
_CONFIG_FIELDS = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                  "max_position_embeddings", "type_vocab_size", "layer_norm_eps", "pad_token_id")
IGNORED_BUFFERS = "position-id / token-type-id buffers (recomputed at run time)"
IGNORED_TIED_BIAS = "lm_head.decoder.bias (the same tensor as lm_head.bias)"
IGNORED_MLM_HEAD = "RoBERTa's MLM head (the target model has no MLM head, or a fresh one was asked for)"


def _check_roberta_config(hf_config: dict, config: BridgeTowerConfig, source: str) -> None:
    problems = [f"{f}: checkpoint has {hf_config.get(f)}, config.text has {getattr(config.text, f)}"
                for f in _CONFIG_FIELDS if f in hf_config and hf_config[f] != getattr(config.text, f)]
    if hf_config.get("hidden_act", "gelu") != "gelu":
        problems.append(f"hidden_act={hf_config['hidden_act']!r}: BridgeTower's text tower uses erf GELU")
    if hf_config.get("position_embedding_type", "absolute") != "absolute":
        problems.append(f"position_embedding_type={hf_config['position_embedding_type']!r} (only 'absolute')")
    if problems:
        raise ValueError(f"{source} does not fit config.text:\n  " + "\n  ".join(problems))


def _translate(state_dict: dict[str, np.ndarray]) -> tuple[dict, dict[str, list[str]], list[str]]:
    """RoBERTa keys -> transformers-BridgeTower names; returns (renamed, ignored by reason, unmatched)."""
    out, ignored, unmatched = {}, {}, []
    for key, value in state_dict.items():
        name = key.removeprefix("roberta.")
        if name.endswith(("position_ids", "token_type_ids")):
            ignored.setdefault(IGNORED_BUFFERS, []).append(key)
        elif name.startswith(("embeddings.", "encoder.layer.", "pooler.")):
            out["text_model." + name] = value
        elif name in _LM_HEAD_RENAMES:
            out[_LM_HEAD_RENAMES[name]] = value
        elif name == "lm_head.decoder.bias":
            ignored.setdefault(IGNORED_TIED_BIAS, []).append(key)
        else:
            unmatched.append(key)
    return out, ignored, unmatched


def import_roberta(path: str | os.PathLike, config: BridgeTowerConfig, mlm_head: bool = True,
                   strict: bool = True) -> Imported:
    """RoBERTa -> `{"text_model": ...}`, plus `{"mlm_score": ...}` when `mlm_head` and the checkpoint
    has an MLM head. With `strict`, keys that belong nowhere are an error."""
    path = Path(path)
    hf_config, state_dict = load_hf_directory(path, ("roberta",))
    source = str(path / "config.json")
    _check_roberta_config(hf_config, config, source)
    text_sd, ignored, unmatched = _translate(state_dict)
    check_unmatched(unmatched, str(path), strict, ignored)
    notes = []
    params, _ = apply_available_links(core_part_links(config, ("text_model",)), text_sd, str(path))
    sources = {"text_model": f"RoBERTa {path}"}
    if "text_model" in params and "pooler" not in params["text_model"]:
        notes.append("RoBERTa checkpoint has no pooler (RobertaForMaskedLM): text_model/pooler freshly "
                     "initialised; BridgeTower never uses it")
    head_keys = [k for k in text_sd if k.startswith("mlm_score.")]
    if head_keys and mlm_head:
        if "mlm_score.decoder.weight" not in text_sd and hf_config.get("tie_word_embeddings", True):
            # save_pretrained drops the decoder because RoBERTa ties it to the word embeddings;
            # BridgeTower's decoder is untied, so it starts as a copy.
            text_sd["mlm_score.decoder.weight"] = text_sd["text_model.embeddings.word_embeddings.weight"]
            notes.append("mlm_score/decoder starts as a copy of RoBERTa's word embeddings (tied in RoBERTa, "
                         "untied in BridgeTower)")
        head, _ = apply_available_links(list(head_links(config, "mlm")), text_sd, str(path))
        params.update(head)
        sources["mlm_score"] = f"RoBERTa MLM head {path}"
    elif head_keys:
        ignored.setdefault(IGNORED_MLM_HEAD, []).extend(k for k in state_dict if k.startswith("lm_head."))
    return Imported(params=params, sources=sources, ignored=ignored, notes=notes)
