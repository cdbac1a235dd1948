"""SNLI-VE fine-tuning (3-way entailment of a hypothesis by a Flickr30K image).

    python -m bridgetower_jax.train --config configs/snli_ve.py:base --workdir gs://BUCKET/bt_snli_base \
        --config.data.data_dir=gs://BUCKET/data --config.data.tokenizer_dir=/path/to/roberta-base \
        --config.init_from=/path/to/pretrained_params
    python -m bridgetower_jax.evaluate --config configs/snli_ve.py:base --workdir gs://BUCKET/bt_snli_base \
        --split snli_ve:test --step best ...

Evaluated on dev every epoch; the checkpoint with the best dev accuracy is kept for the test.

The original (scripts/ftfpt_base_snlive.sh): 384 px, batch 64, lr 3e-6 (x10 head, x5 cross-modal),
5 epochs (~41k steps), 6% warmup, weight decay 0.01, head scale 2.
"""
from configs.common import base_config, tiny_variant


def get_config(variant: str = "base"):
    if variant not in ("base", "large", "tiny"):
        raise ValueError(f"configs/snli_ve.py: unknown variant {variant!r} (base, large, tiny)")
    c = base_config("snli_ve", "large" if variant == "large" else "base")
    c.model.vision.image_size = 384 if variant != "large" else 378
    c.total_steps, c.epochs = 0, 5
    c.batch_size = 64
    c.optim.lr = 3e-6
    c.optim.lr_mult_head = 10.0
    c.optim.warmup = 0.06
    c.heads.head_hidden_scale = 2.0
    c.data.datasets = ("snli_ve:train",)
    c.eval.spec = "snli_ve:dev"
    c.eval_every, c.eval.keep_best = 0.2, "snli_ve_accuracy"    # every epoch of 5
    if variant == "tiny":
        tiny_variant(c, ("snli_ve:train",), eval_spec="snli_ve:dev")
    return c
