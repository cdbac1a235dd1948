"""NLVR2 fine-tuning ("pair": one pass per image with token types 1 and 2, classifier on both).

    python -m bridgetower_jax.train --config configs/nlvr2.py:base --workdir gs://BUCKET/bt_nlvr2_base \
        --config.data.data_dir=gs://BUCKET/data --config.data.tokenizer_dir=/path/to/roberta-base \
        --config.init_from=/path/to/pretrained_params
    python -m bridgetower_jax.evaluate --config configs/nlvr2.py:base --workdir gs://BUCKET/bt_nlvr2_base \
        --split nlvr2:test1 --step best ...

Evaluated on dev every epoch; the checkpoint with the best dev accuracy is kept for the test (as the
original selects its checkpoint).

The original (scripts/ftfpt_base_nlvr2.sh): 384 px, batch 64, lr 5e-6 (x10 head, x5 cross-modal),
10 epochs (~13.5k steps), 10% warmup, weight decay 0.008, head scale 1.5, feature dropout 0.1.
"""
from configs.common import base_config, tiny_variant


def get_config(variant: str = "base"):
    if variant not in ("base", "large", "tiny"):
        raise ValueError(f"configs/nlvr2.py: unknown variant {variant!r} (base, large, tiny)")
    c = base_config("nlvr2", "large" if variant == "large" else "base")
    c.model.vision.image_size = 384 if variant != "large" else 378
    c.total_steps, c.epochs = 0, 10
    c.batch_size = 64
    c.optim.lr = 5e-6
    c.optim.lr_mult_head = 10.0
    c.optim.warmup = 0.1
    c.optim.weight_decay = 0.008
    c.heads.head_hidden_scale = 1.5
    c.data.datasets = ("nlvr2:train",)
    c.eval.spec = "nlvr2:dev"
    c.eval_every, c.eval.keep_best = 0.1, "nlvr2_accuracy"      # every epoch of 10
    if variant == "tiny":
        tiny_variant(c, ("nlvr2:train",), eval_spec="nlvr2:dev")
    return c
