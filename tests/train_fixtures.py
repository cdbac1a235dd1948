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


class ReferenceRuns:
    """Pre-training runs that several tests compare against, each trained once per session:
    4 steps of configs/pretrain.py:tiny with checkpoints at steps 2 and 4, on one device or on a
    (data=2, fsdp=2, tensor=2) mesh of 8 devices."""

    STEPS = {"total_steps": 4, "checkpoint_every": 2, "max_to_keep": 5}
    MESH_8 = {"mesh.num_devices": 8, "mesh.data": 2, "mesh.fsdp": 2, "mesh.tensor": 2}

    def __init__(self, data_dir: str, tok_dir: str, root: str):
        self.data_dir, self.tok_dir, self.root, self._done = data_dir, tok_dir, root, {}

    def config(self, devices: int):
        from configs import pretrain
        mesh = self.MESH_8 if devices == 8 else {}
        return tiny_config(pretrain, self.data_dir, self.tok_dir, **self.STEPS, **mesh)

    def workdir(self, devices: int) -> str:
        if devices not in self._done:
            from bridgetower_jax import train
            path = os.path.join(self.root, f"reference_{devices}_devices")
            train.train_and_evaluate(self.config(devices), path)
            self._done[devices] = path
        return self._done[devices]
