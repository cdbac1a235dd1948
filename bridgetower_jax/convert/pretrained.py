"""The paper's starting point: uni-modal towers from CLIP and RoBERTa, everything else fresh.

The original builds the whole model (cross-modal stack, bridges, heads drawn from N(0, 0.02))
and then loads CLIP's image tower and RoBERTa's text tower into it; we do the same with the
target Flax model's own initialisers.
"""
from __future__ import annotations

import os

from bridgetower_jax.convert.clip import import_clip_vision
from bridgetower_jax.convert.import_report import ImportReport, merge_into_fresh
from bridgetower_jax.convert.roberta import import_roberta
from bridgetower_jax.convert.task_models import config_for_task, init_params, task_model_for
from bridgetower_jax.models.config import BridgeTowerConfig
from bridgetower_jax.models.scan_layout import stack_scanned_layers


def init_from_pretrained(config: BridgeTowerConfig, task: str = "model", clip: str | os.PathLike | None = None,
                         roberta: str | os.PathLike | None = None, seed: int = 0, roberta_mlm_head: bool = True,
                         strict: bool = True) -> tuple[BridgeTowerConfig, dict, ImportReport]:
    """A fresh `task` model of `config` with the vision tower from `clip` and the text tower from `roberta`.

    `roberta_mlm_head` also starts the MLM head (if the task has one) from RoBERTa's LM head; the
    original starts it at random. Returns (config, params, report); the config differs from the
    input only for NLVR2 (a third token type). Params follow `config.compute.scan_layers`.
    """
    if clip is None and roberta is None:
        raise ValueError("give at least one of clip= and roberta=")
    config = config_for_task(config.validate(), task)
    looped = config.with_compute(scan_layers=False)
    fresh = init_params(task_model_for(looped, task), seed)
    has_core_prefix, has_mlm = "bridgetower" in fresh, "mlm_score" in fresh
    core, heads, sources, ignored, notes = {}, {}, {}, {}, []
    imports = []
    if clip is not None:
        imports.append(import_clip_vision(clip, looped, strict))
    if roberta is not None:
        imports.append(import_roberta(roberta, looped, mlm_head=roberta_mlm_head and has_mlm, strict=strict))
    for imported in imports:
        for name, subtree in imported.params.items():
            (heads if name == "mlm_score" else core)[name] = subtree
        sources.update(imported.sources)
        for reason, keys in imported.ignored.items():
            ignored.setdefault(reason, []).extend(keys)
        notes += imported.notes
    loaded = {"bridgetower": core, **heads} if has_core_prefix else core
    params, report = merge_into_fresh(fresh, loaded, task, sources, ignored, notes)
    if config.compute.scan_layers:
        params = stack_scanned_layers(config, params)
    return config, params, report
