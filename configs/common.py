"""The fields every experiment config has, with the original repository's defaults.

Experiment files (`configs/pretrain.py`, `configs/vqa.py`, ...) start from `base_config` and
override what their task changes; each file's docstring carries the command that runs it.
"""
from __future__ import annotations

import ml_collections
from ml_collections import config_dict

from bridgetower_jax.models.config import preset


def base_config(task: str, model_preset: str) -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.task = task
    c.seed = 0
    # Length of the run: total_steps > 0, or total_steps = 0 and `epochs` passes over data.datasets
    # (total_steps = ceil(epochs x training examples / batch_size), computed from the built data when
    # the run starts). The fine-tuning recipes are given in epochs, so a changed batch size or dataset
    # keeps their length; pre-training is given in steps.
    c.total_steps = 100_000
    c.epochs = config_dict.placeholder(float)
    c.batch_size = 4096                # global, over all processes and accumulation steps
    c.log_every = 50
    c.checkpoint_every = 1000
    c.eval_every = 0.0                 # 0 = only at the end; < 1: a fraction of total_steps; >= 1: steps
    c.max_to_keep = 3
    # A step whose loss or gradients are NaN/inf is never applied (params and optimizer state stay as
    # they were) and never saved. "halt": stop (exit code 65) naming the step and its batch; "skip":
    # go on, log it and count it (metric nonfinite_steps, kept in the checkpoint).
    c.nonfinite = "halt"
    c.init_from = ""                   # a params directory (python -m bridgetower_jax.convert ...)
    c.peak_flops_per_device = 0.0      # for MFU where the device is not in flops.PEAK_FLOPS (e.g. CPU)
    # Compiled programs kept on disk, loaded by the next run instead of compiled again: "auto" =
    # $JAX_COMPILATION_CACHE_DIR or ~/.cache/bridgetower_jax/jax_compilation, "" = off, or a path /
    # gs:// URL (multi-host: one every host reads). See bridgetower_jax/compile_cache.py.
    c.compilation_cache_dir = "auto"

    c.model = ml_collections.ConfigDict(preset(model_preset).to_dict())

    c.heads = ml_collections.ConfigDict()
    c.heads.num_answers = -1           # VQA: filled from the data's answer vocabulary
    c.heads.head_hidden_scale = 2.0
    c.heads.nlvr2_dropout = 0.1

    c.objectives = ml_collections.ConfigDict(dict(mlm=1.0, itm=1.0, itc=0.0))

    c.data = ml_collections.ConfigDict()
    c.data.data_dir = ""
    c.data.tokenizer_dir = ""
    c.data.image_size = c.model.vision.get_ref("image_size")
    c.data.max_text_len = 40
    c.data.mlm_prob = 0.15
    c.data.num_workers = 0
    c.data.read_threads = 4
    c.data.worker_buffer_size = 2
    c.data.skip_bad_records = False
    c.data.datasets = config_dict.placeholder(tuple)
    c.data.dataset_weights = config_dict.placeholder(tuple)
    c.data.train_transform = config_dict.placeholder(str)
    c.data.eval_transform = config_dict.placeholder(str)

    c.optim = ml_collections.ConfigDict()
    c.optim.lr = 1e-5
    c.optim.end_lr = 0.0
    c.optim.warmup = 0.1               # < 1: fraction of total_steps; >= 1: steps
    c.optim.weight_decay = 0.01
    c.optim.b1 = 0.9
    c.optim.b2 = 0.98
    c.optim.eps = 1e-8
    c.optim.lr_mult_cross_modal = 5.0
    c.optim.lr_mult_head = 5.0
    c.optim.grad_clip_norm = 0.0       # the original does not clip
    c.optim.grad_accum_steps = 1

    # Sizes of the ("data", "fsdp", "tensor") mesh; -1 fills the rest. num_devices > 0 uses only the
    # first num_devices devices (tests, debugging); num_slices > 1 makes a multi-slice hybrid mesh.
    c.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1, tensor=1, num_slices=1, num_devices=0))

    c.eval = ml_collections.ConfigDict()
    c.eval.spec = ""                   # e.g. "vqav2:val"; empty = no evaluation during training
    c.eval.batch_size = 256
    c.eval.k_test = 128                # retrieval: ITC shortlist re-ranked by ITM
    # A score of the task's evaluation (tasks.SCORES, e.g. "nlvr2_accuracy"): the checkpoint that scored
    # best on eval.spec is kept besides the newest max_to_keep (`evaluate --step best` reads it).
    c.eval.keep_best = ""
    return c


def tiny_model(c: ml_collections.ConfigDict, vocab_size: int = 1000, image_size: int = 64) -> None:
    """Shrink the model to the test/demo size (a few hundred thousand parameters)."""
    t = preset("tiny")
    c.model = ml_collections.ConfigDict(t.replace(text=t.text.__class__(**{
        **t.text.__dict__, "vocab_size": vocab_size, "max_position_embeddings": 64}),
        # 128 wide = 2 heads of 64, so the heads axis can be split over tensor=2 as well.
        vision=t.vision.__class__(**{**t.vision.__dict__, "hidden_size": 128, "image_size": image_size,
                                     "patch_size": 16})).to_dict())
    c.data.image_size = c.model.vision.get_ref("image_size")


def tiny_variant(c: ml_collections.ConfigDict, datasets: tuple, eval_spec: str) -> None:
    """The `tiny` variant every experiment has: the tiny model on 64 px demo-sized data, a few steps
    of a few examples with a large learning rate (tests, smoke runs, the base of the demo)."""
    tiny_model(c, vocab_size=1000, image_size=64)
    c.data.datasets = datasets
    c.data.max_text_len = 16
    c.data.read_threads = 2
    c.data.train_transform = c.data.eval_transform = "clip"
    c.eval.spec = eval_spec
    c.eval.batch_size = 16
    c.optim.lr = 1e-3
    c.optim.lr_mult_cross_modal = c.optim.lr_mult_head = 1.0
    c.total_steps, c.batch_size, c.log_every, c.checkpoint_every = 4, 8, 1, 2
    c.epochs = None
    c.eval_every, c.eval.keep_best = 0.0, ""
