"""Pre-training with MLM + ITM (ITC optional) on COCO, VG, SBU and CC (the paper's 4M images).

    python -m bridgetower_jax.train --config configs/pretrain.py:base --workdir gs://BUCKET/bt_pretrain_base \
        --config.data.data_dir=gs://BUCKET/data --config.data.tokenizer_dir=/path/to/roberta-base \
        --config.init_from=/path/to/clip_roberta_params

Variants: base (ViT-B/16 288 px + RoBERTa-base), large (ViT-L/14 294 px + RoBERTa-large),
tiny (a seconds-long CPU run for tests), demo (the README's demo). The original: 100k steps,
batch 4096, lr 1e-5 (x5 for cross-modal and heads), 10% warmup, weight decay 0.01.
"""
from configs.common import base_config, tiny_variant


def get_config(variant: str = "base"):
    if variant not in ("base", "large", "tiny", "demo"):
        raise ValueError(f"configs/pretrain.py: unknown variant {variant!r} (base, large, tiny, demo)")
    c = base_config("pretrain", "large" if variant == "large" else "base")
    c.total_steps = 100_000
    c.batch_size = 4096
    c.eval.spec = "coco_karpathy:val"
    if variant == "large":
        c.model.vision.image_size = 294
    if variant in ("tiny", "demo"):
        tiny_variant(c, ("coco_karpathy:train",), eval_spec="")
        c.optim.warmup = 0.05
    if variant == "demo":
        c.total_steps = 300
        c.batch_size = 32
        c.log_every = 25
        c.checkpoint_every = 150
    return c
