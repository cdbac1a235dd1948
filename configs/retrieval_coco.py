"""COCO (Karpathy split) image-text retrieval: the Flickr30K recipe with the original's COCO settings.

    python -m bridgetower_jax.train --config configs/retrieval_coco.py:base --workdir gs://BUCKET/bt_coco_ret \
        --config.data.data_dir=gs://BUCKET/data --config.data.tokenizer_dir=/path/to/roberta-base \
        --config.init_from=/path/to/pretrained_params
    python -m bridgetower_jax.evaluate --config configs/retrieval_coco.py:base --workdir gs://BUCKET/bt_coco_ret \
        --split coco_karpathy:test --step best ...

The original (scripts/ftfpt_base_irtr_itm_itc_coco.sh): 384 px, batch 256, lr 4.5e-6, 30 epochs
(~66k steps), 10% warmup, k_test 256. Its COCO "val" split is the Karpathy test split; here the
Karpathy val split (5k images, not trained on) scores the epochs and the best is then tested.
"""
from configs import retrieval_f30k


def get_config(variant: str = "base"):
    c = retrieval_f30k.get_config(variant)
    if variant != "tiny":
        c.epochs = 30
        c.batch_size = 256
        c.optim.lr = 4.5e-6
        c.optim.warmup = 0.1
        c.data.datasets = ("coco_karpathy:train+restval",)
        c.eval.spec = "coco_karpathy:val"
        c.eval_every = 1 / 30                                    # every epoch of 30
        c.eval.k_test = 256
    else:
        c.data.datasets = ("coco_karpathy:train",)
        c.eval.spec = "coco_karpathy:test"
    return c
