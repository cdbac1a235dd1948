"""`BridgeTowerConfig` <-> `transformers.BridgeTowerConfig`, refusing what the other side cannot express."""
from __future__ import annotations

from bridgetower_jax.models.config import BridgeTowerConfig, ComputeConfig, TextConfig, VisionConfig

_TEXT_FIELDS = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                "max_position_embeddings", "type_vocab_size", "layer_norm_eps", "pad_token_id", "bos_token_id",
                "eos_token_id", "hidden_dropout_prob", "attention_probs_dropout_prob")
_VISION_FIELDS = ("hidden_size", "num_hidden_layers", "patch_size", "image_size", "num_channels",
                  "layer_norm_eps", "share_layernorm")
_TOP_FIELDS = ("hidden_size", "num_hidden_layers", "link_tower_type", "share_cross_modal_transformer_layers",
               "layer_norm_eps", "contrastive_hidden_size", "logit_scale_init_value")


def hf_config_kwargs(config: BridgeTowerConfig) -> dict:
    """Keyword arguments for `transformers.BridgeTowerConfig`, including the contrastive fields it needs
    but does not declare. Raises ValueError for what transformers cannot express."""
    config.validate()
    if config.num_token_types != 2:
        raise ValueError(f"num_token_types={config.num_token_types}: transformers' BridgeTower has exactly 2 "
                         "token types (text, image); an NLVR2 model cannot be exported")
    text = {f: getattr(config.text, f) for f in _TEXT_FIELDS}
    text["hidden_act"] = "gelu"
    vision = {f: getattr(config.vision, f) for f in _VISION_FIELDS}
    top = {f: getattr(config, f) for f in _TOP_FIELDS}
    top.update(hidden_act="gelu", num_attention_heads=config.text.num_attention_heads,
               share_link_tower_layers=False, tie_word_embeddings=False, initializer_factor=1,
               text_config=text, vision_config=vision)
    return top


def to_hf_config(config: BridgeTowerConfig, architecture: str | None = None):
    from transformers import BridgeTowerConfig as HFBridgeTowerConfig
    hf = HFBridgeTowerConfig(**hf_config_kwargs(config))
    if architecture:
        hf.architectures = [architecture]
    return hf


def _get(obj, name, default=None):
    return obj.get(name, default) if isinstance(obj, dict) else getattr(obj, name, default)


def from_hf_config(hf, compute: ComputeConfig | None = None, vocab_pad_multiple: int = 128) -> BridgeTowerConfig:
    """Our config for a transformers config (object or config.json dict)."""
    text_cfg, vision_cfg = _get(hf, "text_config"), _get(hf, "vision_config")
    if text_cfg is None or vision_cfg is None:
        raise ValueError("not a BridgeTower config: it has no text_config / vision_config")
    unsupported = []
    for where, obj, field, expected in (
            ("", hf, "hidden_act", "gelu"), ("text_config.", text_cfg, "hidden_act", "gelu"),
            ("", hf, "share_link_tower_layers", False), ("", hf, "tie_word_embeddings", False),
            ("vision_config.", vision_cfg, "remove_last_layer", False)):
        value = _get(obj, field, expected)
        if value != expected:
            unsupported.append(f"{where}{field}={value!r} (only {expected!r} is supported)")
    if unsupported:
        raise ValueError("Unsupported BridgeTower config: " + "; ".join(unsupported))
    defaults = BridgeTowerConfig()
    text = TextConfig(**{f: _get(text_cfg, f, getattr(TextConfig(), f)) for f in _TEXT_FIELDS})
    vision = VisionConfig(**{f: _get(vision_cfg, f, getattr(VisionConfig(), f)) for f in _VISION_FIELDS})
    top = {f: _get(hf, f, getattr(defaults, f)) for f in _TOP_FIELDS}
    return BridgeTowerConfig(text=text, vision=vision, vocab_pad_multiple=vocab_pad_multiple,
                             compute=compute or ComputeConfig(), **top).validate()
