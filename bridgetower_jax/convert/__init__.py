"""Weight conversion: transformers BridgeTower both ways (and, later, CLIP / RoBERTa / original .ckpt)."""
from bridgetower_jax.convert.hf_config import from_hf_config, to_hf_config
from bridgetower_jax.convert.pytorch import HF_CLASS_NAMES, detect_heads, flax_model_for, from_pytorch, to_pytorch

__all__ = ["from_pytorch", "to_pytorch", "from_hf_config", "to_hf_config", "detect_heads", "flax_model_for",
           "HF_CLASS_NAMES"]
