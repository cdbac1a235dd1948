"""Weights between this project and transformers' BridgeTower (PyTorch), both ways.

`from_pytorch(dir_or_model) -> (config, params)` and `to_pytorch(config, params, out_dir, head)`.
A transformers directory is the `save_pretrained` layout: config.json plus model.safetensors
(or a sharded index, or pytorch_model.bin).
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import jax
import numpy as np

from bridgetower_jax.convert.hf_config import from_hf_config, to_hf_config
from bridgetower_jax.convert.state_dict import (HEADS, params_to_state_dict, state_dict_to_params,
                                                unused_state_dict_keys)
from bridgetower_jax.models import bridgetower as bt
from bridgetower_jax.models.config import BridgeTowerConfig, ComputeConfig
from bridgetower_jax.models.scan_layout import stack_scanned_layers, unstack_scanned_layers

HF_CLASS_NAMES = {"model": "BridgeTowerModel", "mlm": "BridgeTowerForMaskedLM",
                  "itm": "BridgeTowerForImageAndTextRetrieval", "itc": "BridgeTowerForContrastiveLearning"}
_HEAD_KEY_PREFIXES = {"mlm": "mlm_score.", "itm": "itm_score.", "itc": "itc_text_head."}
_FLAX_HEAD_PARAMS = {"mlm": "mlm_score", "itm": "itm_score", "itc": "itc_text_head"}


def detect_heads(keys) -> tuple[str, ...]:
    """Which transformers heads a state dict (or a Flax params tree) carries; () for the bare model."""
    keys = list(keys)
    return tuple(h for h, p in _HEAD_KEY_PREFIXES.items()
                 if any(k.startswith(p) or k == p.rstrip(".") for k in keys))


def flax_model_for(config: BridgeTowerConfig, heads: tuple[str, ...]):
    """The Flax module whose parameter tree holds exactly these heads."""
    heads = tuple(sorted(set(heads) - {"model"}))
    table = {(): bt.BridgeTowerModel, ("mlm",): bt.BridgeTowerForMaskedLM,
             ("itm",): bt.BridgeTowerForImageAndTextRetrieval, ("itc",): bt.BridgeTowerForContrastiveLearning}
    if heads in table:
        return table[heads](config)
    if heads in (("itm", "mlm"), ("itc", "itm", "mlm")):
        return bt.BridgeTowerForPreTraining(config, with_itc="itc" in heads)
    raise ValueError(f"no Flax model holds exactly the heads {heads}")


# ---------------------------------------------------------------------------------------------
# transformers -> Flax
# ---------------------------------------------------------------------------------------------
def tensor_to_numpy(t) -> np.ndarray:
    """float64 stays float64 (for exact-parity work); everything else becomes float32."""
    import torch
    t = t.detach().cpu()
    return t.numpy() if t.dtype == torch.float64 else t.float().numpy()


def read_state_dict(directory: Path) -> dict[str, np.ndarray]:
    single, index, pt_bin = (directory / "model.safetensors", directory / "model.safetensors.index.json",
                             directory / "pytorch_model.bin")
    if single.exists() or index.exists():
        from safetensors.numpy import load_file
        files = [single] if single.exists() else sorted(
            {directory / f for f in json.loads(index.read_text())["weight_map"].values()})
        out = {}
        for f in files:
            try:
                out.update(load_file(str(f)))
            except Exception as e:  # safetensors raises its own error types for truncated headers/data
                raise ValueError(f"cannot read weights file {f}: {e}") from e
        return out
    if pt_bin.exists():
        import torch
        try:
            sd = torch.load(str(pt_bin), map_location="cpu", weights_only=True)
        except Exception as e:
            raise ValueError(f"cannot read weights file {pt_bin}: {e}") from e
        return {k: tensor_to_numpy(v) for k, v in sd.items()}
    raise FileNotFoundError(f"{directory} has no model.safetensors, model.safetensors.index.json or "
                            "pytorch_model.bin: not a transformers checkpoint directory")


def load_hf_directory(path: str | os.PathLike,
                      model_types: tuple[str, ...] = ("bridgetower",)) -> tuple[dict, dict[str, np.ndarray]]:
    """A `save_pretrained` directory -> (config.json as a dict, state dict), checking its model_type."""
    directory = Path(path)
    config_file = directory / "config.json"
    if not config_file.exists():
        raise FileNotFoundError(f"{config_file} not found: {directory} is not a transformers "
                                f"{' / '.join(model_types)} directory")
    try:
        hf_config = json.loads(config_file.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{config_file} is not valid JSON: {e}") from e
    if hf_config.get("model_type") not in model_types:
        raise ValueError(f"{config_file} has model_type={hf_config.get('model_type')!r}, "
                         f"not {' or '.join(repr(t) for t in model_types)}")
    return hf_config, read_state_dict(directory)


def _check_shapes(expected: dict, got: dict, path=()) -> list[str]:
    problems = []
    for key, exp in expected.items():
        if key not in got:
            problems.append(f"{'/'.join(path + (key,))}: missing")
        elif isinstance(exp, dict):
            problems += _check_shapes(exp, got[key], path + (key,))
        elif tuple(exp.shape) != tuple(np.shape(got[key])):
            problems.append(f"{'/'.join(path + (key,))}: expected shape {tuple(exp.shape)}, "
                            f"got {tuple(np.shape(got[key]))}")
    for key in got:
        if key not in expected:
            problems.append(f"{'/'.join(path + (key,))}: unexpected")
    return problems


def from_pytorch(source, compute: ComputeConfig | None = None,
                 vocab_pad_multiple: int = 128) -> tuple[BridgeTowerConfig, dict]:
    """A transformers BridgeTower directory or live model -> (config, Flax params).

    The params tree matches `flax_model_for(config, detect_heads(...))`: the bare core for a
    `BridgeTowerModel` checkpoint, `{"bridgetower": ..., "<head>": ...}` otherwise. Arrays are numpy
    float32; with `compute.scan_layers` the bottom layers come stacked.
    """
    if isinstance(source, (str, os.PathLike)):
        hf_config, state_dict = load_hf_directory(source)
    else:  # a live transformers model
        hf_config = source.config
        state_dict = {k: tensor_to_numpy(v) for k, v in source.state_dict().items()}
    config = from_hf_config(hf_config, compute, vocab_pad_multiple)
    heads = detect_heads(state_dict)
    if not heads and any(k.startswith("bridgetower.") for k in state_dict):
        state_dict = {k.removeprefix("bridgetower."): v for k, v in state_dict.items()}
    params = state_dict_to_params(config, state_dict, heads or ("model",))
    unused = unused_state_dict_keys(config, state_dict, heads or ("model",))
    if unused:
        raise ValueError(f"{len(unused)} state-dict keys do not belong to this config "
                         f"(mismatched config.json?), e.g. {unused[:5]}")
    problems = _check_shapes(bt.abstract_params(flax_model_for(config.with_compute(scan_layers=False), heads)),
                             params)
    if problems:
        raise ValueError("weights do not fit the config:\n  " + "\n  ".join(problems[:20]))
    param_dtype = np.dtype(config.compute.param_dtype)
    params = jax.tree.map(lambda x: x.astype(param_dtype), params)
    if config.compute.scan_layers:
        params = stack_scanned_layers(config, params)
    return config, params


# ---------------------------------------------------------------------------------------------
# Flax -> transformers
# ---------------------------------------------------------------------------------------------
def _select_head_tree(params: dict, head: str) -> dict:
    if head not in HEADS:
        raise ValueError(f"head={head!r}: choose one of {HEADS}")
    if head == "model":
        return params["bridgetower"] if "bridgetower" in params else params
    needed = _FLAX_HEAD_PARAMS[head]
    if "bridgetower" not in params or needed not in params:
        have = sorted(k for k in params if k != "bridgetower")
        raise ValueError(f"head={head!r} needs a params tree with 'bridgetower' and {needed!r}; it has {have}")
    keep = ("itc_text_head", "itc_image_head", "itc_cross_modal_head", "logit_scale") if head == "itc" else (needed,)
    return {"bridgetower": params["bridgetower"], **{k: params[k] for k in keep}}


def _expected_hf_shapes(config: BridgeTowerConfig, head: str) -> dict[str, tuple]:
    """The state-dict keys and shapes of the transformers class, built on the meta device (no memory)."""
    import torch
    import transformers
    cls = getattr(transformers, HF_CLASS_NAMES[head])
    with torch.device("meta"):
        model = cls(to_hf_config(config))
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def to_pytorch(config: BridgeTowerConfig, params: dict, out_dir: str | os.PathLike, head: str = "model") -> Path:
    """Write `out_dir/{config.json, model.safetensors}` that `transformers.<class>.from_pretrained` loads
    with no missing and no unexpected keys. Returns the directory."""
    from safetensors.numpy import save_file
    if head == "itc" and not (config.share_cross_modal_transformer_layers
                              and config.vision.hidden_size == config.hidden_size):
        raise ValueError("head='itc': transformers' contrastive model only runs with "
                         "share_cross_modal_transformer_layers=True and vision.hidden_size == hidden_size")
    hf_config = to_hf_config(config, HF_CLASS_NAMES[head])
    params = jax.device_get(unstack_scanned_layers(config, params))
    state_dict = params_to_state_dict(config, _select_head_tree(params, head), (head,))
    expected = _expected_hf_shapes(config, head)
    got = {k: v.shape for k, v in state_dict.items()}
    if got != expected:
        diff = sorted(set(expected) ^ set(got)) or sorted(k for k in got if got[k] != expected[k])
        raise AssertionError(f"exported state dict does not match {HF_CLASS_NAMES[head]}: {diff[:10]}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    hf_config.save_pretrained(str(out))
    tmp = out / "model.safetensors.tmp"
    save_file(state_dict, str(tmp), metadata={"format": "pt"})
    os.replace(tmp, out / "model.safetensors")   # never leave a half-written weights file behind
    return out
