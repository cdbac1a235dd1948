"""What each experiment trains: its model, its loss on a batch, and its evaluation sums.

A task is chosen by `config.task` ("pretrain", "vqa", "nlvr2", "snli_ve", "retrieval"); the
trainer only calls `build_model`, `loss_and_metrics` and `eval_sums`, so the training loop is
the same for every experiment. Batches follow the contract in `bridgetower_jax.data.pipeline`.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import flax.linen as nn

from bridgetower_jax import objectives as obj
from bridgetower_jax.data.text import mlm_prediction_slots
from bridgetower_jax.metrics import classification, vqa as vqa_metrics
from bridgetower_jax.models import (BridgeTowerConfig, BridgeTowerForNLVR2, BridgeTowerForPreTraining,
                                    BridgeTowerForSNLIVE, BridgeTowerForVQA)

TASKS = ("pretrain", "vqa", "nlvr2", "snli_ve", "retrieval")
# Each task's evaluation metrics where higher is better: what config.eval.keep_best may name.
SCORES = {"pretrain": ("mlm_accuracy", "itm_accuracy"), "vqa": ("vqa_score",), "nlvr2": ("nlvr2_accuracy",),
          "snli_ve": ("snli_ve_accuracy",),
          "retrieval": ("r_mean", "rsum", "tr_mean", "ir_mean", "tr_r1", "tr_r5", "tr_r10", "ir_r1", "ir_r5", "ir_r10")}


def model_config(cfg) -> BridgeTowerConfig:
    """The model's dataclass config from `cfg.model` (a dict of BridgeTowerConfig fields)."""
    model = BridgeTowerConfig.from_dict(cfg.model.to_dict() if hasattr(cfg.model, "to_dict") else dict(cfg.model))
    if cfg.task == "nlvr2":
        model = model.replace(num_token_types=3)
    return model.validate()


def build_model(cfg) -> nn.Module:
    config = model_config(cfg)
    task = cfg.task
    if task == "pretrain":
        return BridgeTowerForPreTraining(config, with_itc=cfg.objectives.itc > 0)
    if task == "retrieval":
        return BridgeTowerForPreTraining(config, with_itc=True, with_mlm=False)
    if task == "vqa":
        if cfg.heads.num_answers <= 0:
            raise ValueError("heads.num_answers must be set (the trainer fills it from the data's answer vocabulary)")
        return BridgeTowerForVQA(config, num_answers=cfg.heads.num_answers,
                                 head_hidden_scale=cfg.heads.head_hidden_scale)
    if task == "nlvr2":
        return BridgeTowerForNLVR2(config, head_hidden_scale=cfg.heads.head_hidden_scale,
                                   dropout_rate=cfg.heads.nlvr2_dropout)
    if task == "snli_ve":
        return BridgeTowerForSNLIVE(config, head_hidden_scale=cfg.heads.head_hidden_scale)
    raise ValueError(f"config.task={task!r} is not one of {TASKS}")


def rows_per_unit(task: str) -> int:
    """Batch rows that must stay together when a batch is split over devices or microbatches: a
    pre-training ITM pair (a matched and a mismatched row), else one example."""
    return 2 if task == "pretrain" else 1


def init_inputs(cfg, batch_size: int = 1) -> tuple:
    """Zero inputs shaped like a batch of this task (for init / eval_shape)."""
    config = model_config(cfg)
    size, length = config.vision.image_size, cfg.data.max_text_len
    pixels = (batch_size,) + ((2,) if cfg.task == "nlvr2" else ()) + (size, size, config.vision.num_channels)
    ids = jnp.zeros((batch_size, length), jnp.int32)
    return ids, jnp.ones_like(ids), jnp.zeros(pixels, jnp.float32)


def _apply(model, params, *args, rng=None, method=None, **kwargs):
    """Training-mode apply (dropout on when an rng is given)."""
    rngs = {"dropout": rng} if rng is not None else {}
    return model.apply({"params": params}, *args, rngs=rngs, method=method, deterministic=rng is None, **kwargs)


def loss_and_metrics(cfg, model: nn.Module, params, batch: dict, rng):
    """(scalar loss, dict of scalar metrics) for one (micro)batch. `rng=None` = no dropout."""
    task = cfg.task
    rngs = list(jax.random.split(rng, 4)) if rng is not None else [None] * 4
    ids, mask = batch["input_ids"], batch["attention_mask"]
    if task == "pretrain":
        return _pretrain(cfg, model, params, batch, rngs)
    if task == "retrieval":
        return _retrieval(model, params, batch, rngs)
    logits = _apply(model, params, ids, mask, batch["pixel_values"], rng=rngs[0]).logits
    if task == "vqa":
        loss = obj.vqa_loss(logits, batch["vqa_targets"])
        return loss, {"loss": loss, "vqa_loss": loss, "vqa_score": vqa_metrics.vqa_score(logits, batch["vqa_targets"])}
    loss = obj.cross_entropy(logits, batch["labels"])
    return loss, {"loss": loss, f"{task}_loss": loss, f"{task}_accuracy": classification.accuracy(logits, batch["labels"])}


def _pretrain(cfg, model, params, batch, rngs):
    """MLM on masked text with the true image + ITM on pairs (row 2k matched, 2k+1 with a negative image);
    optional ITC. The total is the weighted sum (the original uses weight 1 for every enabled loss)."""
    w = cfg.objectives
    ids, mask = batch["input_ids"], batch["attention_mask"]
    metrics, total, image_states = {}, 0.0, None
    if w.mlm > 0 or w.itm > 0:
        features, logits, image_states = _apply(model, params, batch["mlm_input_ids"], ids, mask, batch["pixel_values"],
                                  batch["itm_negative_pixel_values"], rng=rngs[0], mlm=w.mlm > 0, itm=w.itm > 0,
                                  method=BridgeTowerForPreTraining.pretraining_forwards)
    if w.mlm > 0:
        slots = mlm_prediction_slots(features.shape[1], cfg.data.mlm_prob)
        metrics["mlm_loss"], metrics["mlm_accuracy"] = obj.masked_lm_loss_and_accuracy(
            lambda f: model.apply({"params": params}, f, method=BridgeTowerForPreTraining.mlm_head),
            features, batch["mlm_labels"], slots)
        total = total + w.mlm * metrics["mlm_loss"]
    if w.itm > 0:
        labels = obj.alternating_itm_labels(ids.shape[0])
        metrics["itm_loss"] = obj.cross_entropy(logits, labels)
        metrics["itm_accuracy"] = classification.accuracy(logits, labels)
        total = total + w.itm * metrics["itm_loss"]
    if w.itc > 0:
        # The true images' vision pass of the MLM / ITM forwards serves ITC too (the tower has no dropout).
        text, image, scale = _contrastive_embeds(model, params, ids, mask, batch["pixel_values"], rngs[2],
                                                 image_states=image_states)
        metrics["itc_loss"] = obj.gathered_contrastive_loss(text, image, jnp.arange(ids.shape[0]), scale)
        total = total + w.itc * metrics["itc_loss"]
    metrics["loss"] = total
    return total, metrics


def _contrastive_embeds(model, params, ids, mask, pixels, rng, image_states=None):
    text = _apply(model, params, ids, mask, rng=rng, method=BridgeTowerForPreTraining.text_contrastive_embeds)
    image = model.apply({"params": params}, pixels, image_states=image_states,
                        method=BridgeTowerForPreTraining.image_contrastive_embeds)
    scale = model.apply({"params": params}, method=BridgeTowerForPreTraining.contrastive_scale)
    return text, image, scale


def _retrieval(model, params, batch, rngs):
    """The original's irtr_itm_itc: ITC over the global batch with same-image positives, then ITM on
    the positives plus one ITC-sampled hard negative image per text and hard negative text per image.

    Two vision passes, not four: the batch's images are encoded once for ITC, the positive pairs and
    the hard-negative-text pairs (the vision tower has no dropout, so this is exact), and the hard
    negative images once more. The 3B ITM rows are example-major (example b's positive, negative
    image, negative text at rows 3b, 3b+1, 3b+2), so that every device fuses the image states it
    already holds."""
    ids, mask, pixels, group = batch["input_ids"], batch["attention_mask"], batch["pixel_values"], batch["image_index"]
    own = model.apply({"params": params}, pixels, method=BridgeTowerForPreTraining.encode_images)
    text, image, scale = _contrastive_embeds(model, params, ids, mask, None, rngs[0], image_states=own)
    itc = obj.gathered_contrastive_loss(text, image, group, scale)
    positives = group[:, None] == group[None, :]
    sim = jax.lax.stop_gradient(text @ image.T * scale)
    neg_image = obj.sample_hard_negatives(sim, positives, rngs[1])        # per text
    neg_text = obj.sample_hard_negatives(sim.T, positives.T, rngs[2])      # per image
    negative = model.apply({"params": params}, pixels[neg_image], method=BridgeTowerForPreTraining.encode_images)

    def example_major(own_rows, negative_image_rows, negative_text_rows):
        stacked = jnp.stack([own_rows, negative_image_rows, negative_text_rows], axis=1)
        return stacked.reshape(-1, *stacked.shape[2:])
    pair_ids = example_major(ids, ids, ids[neg_text])
    pair_mask = example_major(mask, mask, mask[neg_text])
    pair_states = [example_major(s, n, s) for s, n in zip(own, negative)]
    labels = jnp.tile(jnp.asarray([1, 0, 0], group.dtype), group.shape[0])
    logits = _apply(model, params, pair_ids, pair_mask, None, image_states=pair_states, rng=rngs[3],
                    method=BridgeTowerForPreTraining.itm)
    itm = obj.cross_entropy(logits, labels)
    loss = itc + itm
    return loss, {"loss": loss, "itc_loss": itc, "itm_loss": itm, "itm_accuracy": classification.accuracy(logits, labels)}


PREDICTION = "prediction"


def eval_sums(cfg, model: nn.Module, params, batch: dict) -> dict:
    """Sums over the real (example_mask = 1) examples of a batch; the caller adds them up and divides
    by `count`. Classification tasks also give PREDICTION [B], each example's argmax (VQA: answer
    index; NLVR2 / SNLI-VE: label), from the same forward. Retrieval's recall needs the whole split
    and is computed by `evaluate`."""
    task = cfg.task
    valid = batch["example_mask"].astype(jnp.float32)
    sums = {"count": valid.sum()}
    if task == "pretrain":
        _, metrics = _pretrain(cfg, model, params, batch, [None] * 4)
        return {**sums, **{k: v * valid.sum() for k, v in metrics.items()}}
    logits = _apply(model, params, batch["input_ids"], batch["attention_mask"], batch["pixel_values"]).logits
    if task == "vqa":
        sums["vqa_score"] = jnp.sum(vqa_metrics.vqa_score_per_example(logits, batch["vqa_targets"]) * valid)
    else:
        sums[f"{task}_accuracy"] = jnp.sum(classification.correct_predictions(logits, batch["labels"]) * valid)
    return {**sums, PREDICTION: jnp.argmax(logits, -1)}
