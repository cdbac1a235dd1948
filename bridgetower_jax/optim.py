"""The optimiser of the original: AdamW (0.9, 0.98, 1e-8), linear warmup then linear decay, per-group
learning-rate multipliers (cross-modal and head parameters learn faster), decay masks, optional clipping.

Groups are decided from parameter paths: any path through a task or pre-training head module is
"head"; any path through a `cross_modal_*` module is "cross_modal"; the rest (the two pre-trained
towers, the token-type table, rank_output) is "backbone". Biases, LayerNorm parameters and learnt
scalars are not decayed (the original's substring rule decays CLIP's LayerNorm scales by accident;
we do not reproduce that).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

HEAD_MODULES = ("mlm_score", "itm_score", "itc_text_head", "itc_image_head", "itc_cross_modal_head",
                "vqa_classifier", "nlvr2_classifier", "snli_classifier")
_NO_DECAY_LEAVES = ("bias", "scale", "logit_scale", "beta", "scaled_factor")


def _names(path) -> list[str]:
    return [str(getattr(k, "key", k)) for k in path]


def parameter_group(path) -> str:
    names = _names(path)
    if any(n in HEAD_MODULES for n in names):
        return "head"
    if any(n.startswith("cross_modal_") for n in names):
        return "cross_modal"
    return "backbone"


def decay_mask(params) -> dict:
    """True where weight decay applies: matrices and embeddings, not biases / norms / scalars."""
    def decays(path, leaf):
        names = _names(path)
        is_norm = any("LayerNorm" in n or n.startswith("ln_") or n.endswith("_layernorm") for n in names)
        return not (names[-1] in _NO_DECAY_LEAVES or is_norm or jnp.ndim(leaf) == 0)
    return jax.tree_util.tree_map_with_path(decays, params)


def learning_rate_schedule(lr: float, total_steps: int, warmup_steps: int, end_lr: float = 0.0) -> optax.Schedule:
    """0 -> lr linearly over `warmup_steps`, then linearly to `end_lr` at `total_steps`."""
    warmup_steps = max(0, min(warmup_steps, total_steps))
    return optax.join_schedules(
        [optax.linear_schedule(0.0, lr, max(warmup_steps, 1)),
         optax.linear_schedule(lr, end_lr, max(total_steps - warmup_steps, 1))], [warmup_steps])


def scale_by_group(multipliers: dict[str, float]) -> optax.GradientTransformation:
    """Multiply each parameter's update by its group's learning-rate multiplier."""
    def init(params):
        del params
        return optax.EmptyState()

    def update(updates, state, params=None):
        del params
        return jax.tree_util.tree_map_with_path(
            lambda path, u: u * multipliers.get(parameter_group(path), 1.0), updates), state
    return optax.GradientTransformation(init, update)


def make_optimizer(optim_cfg, total_steps: int) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """`optim_cfg` fields: lr, end_lr, warmup (fraction of total_steps if < 1, else steps), weight_decay,
    b1, b2, eps, lr_mult_cross_modal, lr_mult_head, grad_clip_norm (0 = off)."""
    warmup = optim_cfg.warmup
    warmup_steps = int(total_steps * warmup) if warmup < 1 else int(warmup)
    schedule = learning_rate_schedule(optim_cfg.lr, total_steps, warmup_steps, optim_cfg.end_lr)
    chain = []
    if optim_cfg.grad_clip_norm > 0:
        chain.append(optax.clip_by_global_norm(optim_cfg.grad_clip_norm))
    chain += [
        optax.scale_by_adam(b1=optim_cfg.b1, b2=optim_cfg.b2, eps=optim_cfg.eps),
        optax.add_decayed_weights(optim_cfg.weight_decay, mask=decay_mask),
        optax.scale_by_learning_rate(schedule),
        scale_by_group({"backbone": 1.0, "cross_modal": optim_cfg.lr_mult_cross_modal,
                        "head": optim_cfg.lr_mult_head}),
    ]
    return optax.chain(*chain), schedule
