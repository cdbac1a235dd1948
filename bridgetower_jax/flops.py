"""Model FLOPs from the config (matmuls only: 2 FLOPs per multiply-add), the one place MFU comes from.

Training FLOPs are 3x the forward (forward + backward); rematerialisation is not counted, as MFU
conventionally measures useful work. `bench/` checks these numbers against XLA's cost analysis.
"""
from __future__ import annotations

import jax

from bridgetower_jax.data.text import mlm_prediction_slots
from bridgetower_jax.models.config import BridgeTowerConfig

# bf16 dense peak per chip (vendor figures). CPU has no meaningful entry: set peak_flops_per_device.
PEAK_FLOPS = {"TPU v4": 275e12, "TPU v5 lite": 197e12, "TPU v5e": 197e12, "TPU v5p": 459e12, "TPU v5": 459e12,
              "TPU v6 lite": 918e12, "TPU v6e": 918e12, "NVIDIA H100": 989e12, "NVIDIA H200": 989e12,
              "NVIDIA A100": 312e12}


def _attention(q_len: int, kv_len: int, width: int) -> float:
    """q/k/v/out projections and the two attention matmuls."""
    return 2 * (2 * q_len * width * width + 2 * kv_len * width * width + 2 * q_len * kv_len * width)


def text_tower_flops(c: BridgeTowerConfig, text_len: int) -> float:
    t = c.text
    per_layer = _attention(text_len, text_len, t.hidden_size) + 2 * 2 * text_len * t.hidden_size * t.intermediate_size
    return t.num_hidden_layers * per_layer


def vision_tower_flops(c: BridgeTowerConfig) -> float:
    v = c.vision
    n, d = v.num_positions, v.hidden_size
    patch = 2 * v.num_patches * v.patch_size ** 2 * v.num_channels * d
    per_block = _attention(n, n, d) + 2 * 2 * n * d * 4 * d
    return patch + c.text.num_hidden_layers * per_block      # blocks deeper than the text tower never run


def fusion_flops(c: BridgeTowerConfig, text_len: int, pooled_only: bool = False) -> float:
    """Transforms into the cross-modal width at every bridged layer, both co-attention stacks, poolers.
    pooled_only: the last layer computes the first token of each stream only (`BridgeTowerModel.fuse`)."""
    h, i, n_img = c.hidden_size, c.text.intermediate_size, c.vision.num_positions
    transforms = c.num_hidden_layers * 2 * (text_len * c.text.hidden_size * h + n_img * c.vision.hidden_size * h)

    def layer(queries_text: int, queries_image: int) -> float:
        def stream(own: int, other: int, queries: int) -> float:
            return _attention(queries, own, h) + _attention(queries, other, h) + 2 * 2 * queries * h * i
        return stream(text_len, n_img, queries_text) + stream(n_img, text_len, queries_image)
    last = layer(1, 1) if pooled_only else layer(text_len, n_img)
    layers = (c.num_hidden_layers - 1) * layer(text_len, n_img) + last
    return transforms + layers + 2 * 2 * h * h


def image_side_flops(c: BridgeTowerConfig) -> float:
    """The part of a pair's forward that depends on the image alone: the vision tower and the image
    transforms into the cross-modal width (what `itm_shared_images` computes once per image)."""
    return vision_tower_flops(c) + c.num_hidden_layers * 2 * c.vision.num_positions * c.vision.hidden_size * c.hidden_size


def forward_flops(c: BridgeTowerConfig, text_len: int, pooled_only: bool = False) -> float:
    """One image-text pair through BridgeTowerModel."""
    return text_tower_flops(c, text_len) + vision_tower_flops(c) + fusion_flops(c, text_len, pooled_only)


def mlm_head_flops(c: BridgeTowerConfig, text_len: int) -> float:
    return 2 * text_len * (c.hidden_size * c.hidden_size + c.hidden_size * c.padded_vocab_size)


def train_flops_per_example(c: BridgeTowerConfig, task: str, text_len: int, itc: bool = False,
                            mlm_prob: float = 0.15) -> float:
    """Forward + backward FLOPs for one training example of `task`, as the step computes it: in
    pre-training an MLM pass and an ITM pass that share the vision tower's pass over the true images
    (negatives are half the rows), and an MLM head over the predicted slots only; every head but MLM
    reads the poolers only (`pooled_only`)."""
    pair = forward_flops(c, text_len, pooled_only=True)
    if task == "pretrain":
        fwd = (forward_flops(c, text_len) + pair - vision_tower_flops(c) / 2
               + mlm_head_flops(c, mlm_prediction_slots(text_len, mlm_prob)))
        if itc:   # its image embeddings come from the MLM / ITM forwards' vision pass
            fwd += text_tower_flops(c, text_len)
    elif task == "retrieval":
        # ITC towers, then 3 ITM pairs that reuse the batch's vision pass, but for the negative images'
        fwd = text_tower_flops(c, text_len) + 2 * vision_tower_flops(c) + 3 * (pair - vision_tower_flops(c))
    elif task == "nlvr2":
        fwd = 2 * pair
    else:
        fwd = pair
    return 3 * fwd


def peak_flops_per_device(override: float = 0.0) -> float | None:
    """The accelerator's peak, or `override` when > 0; None when unknown (CPU)."""
    if override > 0:
        return override
    kind = jax.devices()[0].device_kind
    for name, peak in PEAK_FLOPS.items():
        if kind.startswith(name):
            return peak
    return None
