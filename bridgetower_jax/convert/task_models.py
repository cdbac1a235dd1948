"""Which Flax model holds the heads of a task, and a fresh random parameter tree for it.

Importers build the whole tree of the target model at random first (as the original creates
the cross-modal stack and heads before loading anything) and overwrite what they import.
"""
from __future__ import annotations

import jax
import flax.linen as nn
import numpy as np

from bridgetower_jax.convert.pytorch import flax_model_for
from bridgetower_jax.models import bridgetower as bt
from bridgetower_jax.models.config import BridgeTowerConfig

# task -> the heads its params tree holds (the `heads` recorded in a params directory).
TASK_HEADS = {
    "model": (), "mlm": ("mlm",), "itm": ("itm",), "itc": ("itc",),
    "pretrain": ("mlm", "itm"), "pretrain-itc": ("mlm", "itm", "itc"),
    "vqa": ("vqa",), "snli": ("snli",), "nlvr2": ("nlvr2",), "rank": ("rank",),
}
TASKS = tuple(TASK_HEADS)
# Fine-tuning heads: Flax parameter name, and the class (with its fixed label count, if any).
CLASSIFIER_HEADS = {"vqa": ("vqa_classifier", bt.BridgeTowerForVQA, None),
                    "snli": ("snli_classifier", bt.BridgeTowerForSNLIVE, 3),
                    "nlvr2": ("nlvr2_classifier", bt.BridgeTowerForNLVR2, 2)}


def config_for_task(config: BridgeTowerConfig, task: str) -> BridgeTowerConfig:
    """NLVR2 needs a third token type (its second image); every other task uses the config as is."""
    if task not in TASK_HEADS:
        raise ValueError(f"unknown task {task!r}; choose one of {TASKS}")
    if task == "nlvr2" and config.num_token_types < 3:
        return config.replace(num_token_types=3)
    return config


def task_model_for(config: BridgeTowerConfig, task: str, num_labels: int | None = None,
                   head_hidden_scale: float | None = None) -> nn.Module:
    """The Flax module of `task`. `num_labels` / `head_hidden_scale` size a classifier head (VQA answers,
    hidden width 2H * scale); None keeps the model's default."""
    config = config_for_task(config, task)
    if task in CLASSIFIER_HEADS:
        _, cls, fixed_labels = CLASSIFIER_HEADS[task]
        kwargs = {} if head_hidden_scale is None else {"head_hidden_scale": head_hidden_scale}
        if num_labels is not None and fixed_labels is None:
            kwargs["num_answers"] = num_labels
        elif num_labels is not None and num_labels != fixed_labels:
            raise ValueError(f"task {task!r} has {fixed_labels} labels, not {num_labels}")
        return cls(config, **kwargs)
    if task == "rank":
        return bt.BridgeTowerForRetrievalRank(config)
    return flax_model_for(config, TASK_HEADS[task])


def init_params(model: nn.Module, seed: int = 0) -> dict:
    """A fresh parameter tree of `model` on the host (numpy), boxes removed."""
    inputs = bt.dummy_inputs(model.config, image_pairs=isinstance(model, bt.BridgeTowerForNLVR2))
    # Op by op rather than jitted: a one-off init would pay a whole-model compile, while eager ops
    # are compiled once per shape and reused by every later init in the process.
    variables = model.init(jax.random.PRNGKey(seed), *inputs)
    return jax.tree.map(np.asarray, nn.meta.unbox(variables)["params"])
