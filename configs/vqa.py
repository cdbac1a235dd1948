"""VQAv2 fine-tuning (3,129-answer classifier on the pooled output, BCE with soft scores).

    python -m bridgetower_jax.train --config configs/vqa.py:base --workdir gs://BUCKET/bt_vqa_base \
        --config.data.data_dir=gs://BUCKET/data --config.data.tokenizer_dir=/path/to/roberta-base \
        --config.init_from=/path/to/pretrained_params
    python -m bridgetower_jax.evaluate --config configs/vqa.py:base --workdir gs://BUCKET/bt_vqa_base ...

The original (scripts/ftfpt_base_vqa.sh): 576 px, batch 512, lr 1e-5 with x50 for the head and x5
for the cross-modal layers, 10 epochs of train+val (~12.6k steps; here total_steps is derived
from `epochs` and the built data), 6% warmup, weight decay 0.05.

Opt-in Visual Genome QA (the original's "w/ VGQA" runs; build vgqa or vgqa_coco into the same
data_dir after vqav2, so that it shares vqav2's answer vocabulary), concatenated with VQAv2:
    --config.data.datasets="('vqav2:train+val', 'vgqa:train+val')"
"""
from configs.common import base_config, tiny_variant


def get_config(variant: str = "base"):
    if variant not in ("base", "large", "tiny", "demo"):
        raise ValueError(f"configs/vqa.py: unknown variant {variant!r} (base, large, tiny, demo)")
    c = base_config("vqa", "large" if variant == "large" else "base")
    c.model.vision.image_size = 574 if variant == "large" else 576
    c.total_steps, c.epochs = 0, 10
    c.batch_size = 512
    c.optim.lr = 4e-6 if variant == "large" else 1e-5
    c.optim.lr_mult_head = 50.0
    c.optim.lr_mult_cross_modal = 5.0
    c.optim.warmup = 0.06
    c.optim.weight_decay = 0.05
    c.heads.head_hidden_scale = 2.0
    c.data.datasets = ("vqav2:train+val",)
    c.eval.spec = "vqav2:test_dev"
    if variant in ("tiny", "demo"):
        tiny_variant(c, ("vqav2:train",), eval_spec="vqav2:val")
        c.optim.weight_decay = 0.01
    if variant == "demo":
        c.total_steps = 300
        c.batch_size = 32
        c.log_every = 25
        c.checkpoint_every = 150
        c.eval.batch_size = 64
    return c
