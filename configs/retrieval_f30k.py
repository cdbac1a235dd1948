"""Flickr30K image-text retrieval (ITC over the global batch + ITM on ITC-sampled hard negatives;
evaluated by ITC shortlist re-ranked with ITM).

    python -m bridgetower_jax.train --config configs/retrieval_f30k.py:base --workdir gs://BUCKET/bt_f30k_base \
        --config.data.data_dir=gs://BUCKET/data --config.data.tokenizer_dir=/path/to/roberta-base \
        --config.init_from=/path/to/pretrained_params
    python -m bridgetower_jax.evaluate --config configs/retrieval_f30k.py:base --workdir gs://BUCKET/bt_f30k_base \
        --step best ...

Evaluated every epoch, and the checkpoint with the best r_mean (the original's checkpoint metric) is
kept. As in the original, whose Flickr30K "val" split is the Karpathy test split, training reads
train+val and the scores come from the test split. A selection that never sees the test: train on
f30k_karpathy:train, evaluate f30k_karpathy:val, then `--split f30k_karpathy:test --step best`.

The original (scripts/ftfpt_base_irtr_itm_itc_flickr.sh): 384 px, batch 512, lr 5e-6 (x5 head and
cross-modal), 20 epochs (~5.7k steps), 5% warmup, weight decay 0.01, k_test 128.
"""
from configs.common import base_config, tiny_variant


def get_config(variant: str = "base"):
    if variant not in ("base", "large", "tiny"):
        raise ValueError(f"configs/retrieval_f30k.py: unknown variant {variant!r} (base, large, tiny)")
    c = base_config("retrieval", "large" if variant == "large" else "base")
    c.model.vision.image_size = 384 if variant != "large" else 378
    c.total_steps, c.epochs = 0, 20
    c.batch_size = 512
    c.optim.lr = 5e-6
    c.optim.warmup = 0.05
    c.data.datasets = ("f30k_karpathy:train+val",)
    c.eval.spec = "f30k_karpathy:test"
    c.eval_every, c.eval.keep_best = 0.05, "r_mean"             # every epoch of 20
    c.eval.k_test = 128
    if variant == "tiny":
        tiny_variant(c, ("f30k_karpathy:train",), eval_spec="f30k_karpathy:test")
        c.eval.k_test = 4
    return c
