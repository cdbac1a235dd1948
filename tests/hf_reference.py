"""Random-weight transformers BridgeTower models and inputs for parity tests (all offline)."""
from __future__ import annotations

import numpy as np
import torch
import transformers

TEXT = dict(vocab_size=99, hidden_size=32, num_hidden_layers=3, num_attention_heads=2, intermediate_size=37,
            max_position_embeddings=64)
VISION = dict(hidden_size=64, num_hidden_layers=4, image_size=32, patch_size=8)
IMAGE_SIZE = 32


def hf_config(contrastive: bool = False, **overrides) -> transformers.BridgeTowerConfig:
    """Cross 2 < text 3 layers (split 2), vision deeper than text. The contrastive head needs the
    vision width to equal the cross-modal width, so that variant is 64 wide everywhere."""
    text, vision = dict(TEXT), dict(VISION)
    top = dict(hidden_size=32, num_hidden_layers=2, contrastive_hidden_size=16, logit_scale_init_value=2.6592)
    if contrastive:
        text.update(hidden_size=64, num_attention_heads=2)
        top.update(hidden_size=64)
    text.update(overrides.pop("text", {}))
    vision.update(overrides.pop("vision", {}))
    top.update(overrides)
    return transformers.BridgeTowerConfig(text_config=text, vision_config=vision, **top)


def random_hf_model(class_name: str, config, seed: int = 0, dtype=torch.float32):
    """Every parameter randomised (LayerNorm scales and biases too), eval mode."""
    torch.manual_seed(seed)
    model = getattr(transformers, class_name)(config).eval().to(dtype)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn_like(p) * 0.2)
    return model


def batch(seed: int = 0, batch_size: int = 3, length: int = 7):
    """A padded text batch (pads = 1) and NCHW pixels for torch; NHWC for JAX via `.transpose`."""
    rng = np.random.RandomState(seed)
    ids = rng.randint(5, TEXT["vocab_size"], size=(batch_size, length))
    ids[:, 0], lengths = 0, [length, length - 2, 3][:batch_size]
    for b, n in enumerate(lengths):
        ids[b, n - 1] = 2
        ids[b, n:] = 1
    mask = (ids != 1).astype(np.int64)
    pixels = rng.randn(batch_size, 3, IMAGE_SIZE, IMAGE_SIZE)
    return ids, mask, pixels


def nhwc(pixels: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(pixels.transpose(0, 2, 3, 1))
