"""A small demo corpus built once per test session through the real writers and builders."""
from __future__ import annotations

import os

from bridgetower_jax.data import build, demo, tokenizer

DATASETS = {"coco_karpathy": "coco", "vqav2": "coco", "f30k_karpathy": "flickr30k", "snli_ve": "flickr30k",
            "nlvr2": "nlvr2"}


def build_demo_data(root: str) -> tuple[str, str]:
    """-> (data_dir, tokenizer_dir) with every task's dataset built from the demo's raw files."""
    raw, data, tok = os.path.join(root, "raw"), os.path.join(root, "data"), os.path.join(root, "tok")
    demo.write_demo(raw, seed=0, coco_images=160, flickr_images=60, nlvr2_pairs=60, image_size=64)
    with open(os.path.join(raw, "corpus.txt")) as f:
        tokenizer.train_bpe_tokenizer(f.read().splitlines(), tok, vocab_size=1000)
    for dataset, folder in DATASETS.items():
        options = {"min_answer_count": 1} if dataset == "vqav2" else {}
        build.build(dataset, os.path.join(raw, folder), data, **options)
    return data, tok


def tiny_config(module, data_dir: str, tok_dir: str, **overrides):
    """`configs/<module>.py:tiny` pointed at the fixture data, on one device unless overridden."""
    cfg = module.get_config("tiny")
    cfg.data.data_dir, cfg.data.tokenizer_dir = data_dir, tok_dir
    cfg.mesh.num_devices = 1
    for dotted, value in overrides.items():
        node = cfg
        *parents, leaf = dotted.split(".")
        for p in parents:
            node = node[p]
        node[leaf] = value
    return cfg
