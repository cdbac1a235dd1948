"""The whole model: towers -> bridges -> co-attention stack -> poolers, and the models with heads.

Class and output-field names follow transformers (`BridgeTowerModel`, `...ForMaskedLM`,
`...ForImageAndTextRetrieval`, `...ForContrastiveLearning`); the fine-tuning models follow the
original repository's heads. Losses are not computed here: see `bridgetower_jax.objectives`.

Inputs: `input_ids` int [B, T]; `attention_mask` [B, T] (1 = token, 0 = padding) or None;
`pixel_values` float [B, H, W, 3] (NHWC), already normalised.
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import flax.linen as nn
from flax import struct

from bridgetower_jax.models.config import BridgeTowerConfig
from bridgetower_jax.models.cross_modal import CrossModalLayer, LinkTower
from bridgetower_jax.models.heads import LinearHead, MLMHead, TaskClassifier, l2_normalize
from bridgetower_jax.models.layers import Dense, Embed, LayerNorm, Pooler, normal
from bridgetower_jax.models.text import TextEncoder
from bridgetower_jax.models.vision import VisionEncoder


@struct.dataclass
class BridgeTowerModelOutput:
    text_features: jax.Array          # [B, T, H] last cross-modal text layer
    image_features: jax.Array         # [B, 1+P, H] last cross-modal image layer
    pooler_output: jax.Array          # [B, 2H] tanh poolers of both streams' first token
    # Inputs of the contrastive heads: CLS of the top uni-modal text layer, and CLS of the top
    # vision layer after ln_post, the image transform and the image token type.
    text_unimodal_cls: jax.Array = None
    image_unimodal_cls: jax.Array = None
    # (text states, image states, cross-modal (text, image) pairs) when output_hidden_states.
    hidden_states: Any = None


@struct.dataclass
class MaskedLMOutput:
    logits: jax.Array                 # [B, T, vocab_size]
    hidden_states: Any = None


@struct.dataclass
class SequenceClassifierOutput:
    logits: jax.Array                 # [B, num_labels]
    hidden_states: Any = None


@struct.dataclass
class BridgeTowerContrastiveOutput:
    logits: jax.Array                 # [B, 3, C]: stacked (text, image, cross) embeddings, as transformers
    text_embeds: jax.Array            # [B, C], L2-normalised
    image_embeds: jax.Array
    cross_embeds: jax.Array
    logit_scale: jax.Array            # exp() of the learnt log-scale
    hidden_states: Any = None


@struct.dataclass
class PreTrainingOutput:
    mlm_logits: jax.Array = None
    itm_logits: jax.Array = None
    contrastive: BridgeTowerContrastiveOutput = None


class BridgeTowerModel(nn.Module):
    """Uni-modal towers, bridges and the co-attention stack (transformers' BridgeTowerModel)."""
    config: BridgeTowerConfig

    @nn.compact
    def __call__(self, input_ids, attention_mask=None, pixel_values=None, *, image_token_type_idx: int = 1,
                 deterministic: bool = True, output_hidden_states: bool = False) -> BridgeTowerModelOutput:
        c = self.config
        comp = c.compute
        dtype, param_dtype = jnp.dtype(comp.dtype), jnp.dtype(comp.param_dtype)
        kw = dict(dtype=dtype, param_dtype=param_dtype)
        if not 1 <= image_token_type_idx < c.num_token_types:
            raise ValueError(f"image_token_type_idx={image_token_type_idx} needs num_token_types > "
                             f"{image_token_type_idx} (have {c.num_token_types})")
        # Padding is masked only where text is a key: the image stream is never masked.
        text_mask = None if attention_mask is None else attention_mask.astype(bool)

        text_states, text_hidden = TextEncoder(c, deterministic, name="text_model")(
            input_ids, text_mask, output_hidden_states)
        image_states, image_hidden = VisionEncoder(c, deterministic, name="vision_model")(
            pixel_values, output_hidden_states)

        def transforms(kind: str) -> list[Dense]:
            """The projection into the cross-modal width for each cross-modal layer (one shared, or one each)."""
            def make(name):
                return Dense(c.hidden_size, ("embed", "embed_out"), kernel_init=normal(c.initializer_range),
                             name=name, **kw)
            name = f"cross_modal_{kind}_transform"
            if c.share_cross_modal_transformer_layers:
                return [make(name)] * c.num_hidden_layers
            return [make(f"{name}_{j}") for j in range(c.num_hidden_layers)]

        text_transforms, image_transforms = transforms("text"), transforms("image")
        token_types = Embed(c.num_token_types, c.hidden_size, embedding_init=normal(c.initializer_range),
                            name="token_type_embeddings", **kw)
        text_type = token_types(jnp.zeros((1, 1), jnp.int32))
        image_type = token_types(jnp.full((1, 1), image_token_type_idx, jnp.int32))

        layer_kw = dict(config=c.text, attention_impl=comp.attention_impl, deterministic=deterministic,
                        init_std=c.initializer_range, **kw)
        cross_pairs = []
        xt = xi = text_in = image_in = None
        for j in range(c.num_hidden_layers):
            text_in = text_transforms[j](text_states[j]) + text_type
            image_in = image_transforms[j](image_states[j]) + image_type
            if j == 0:
                # The first cross-modal layer has no previous output to bridge with: a LayerNorm
                # stands where the link tower is.
                at = LayerNorm(c.layer_norm_eps, name="cross_modal_text_layernorm", **kw)(text_in)
                ai = LayerNorm(c.layer_norm_eps, name="cross_modal_image_layernorm", **kw)(image_in)
            else:
                link = dict(link_tower_type=c.link_tower_type, layer_norm_eps=c.layer_norm_eps, **kw)
                at = LinkTower(name=f"cross_modal_text_link_tower_{j - 1}", **link)(text_in, xt)
                ai = LinkTower(name=f"cross_modal_image_link_tower_{j - 1}", **link)(image_in, xi)
            # Both streams read the bridged inputs of the same layer, not each other's new output.
            xt = CrossModalLayer(name=f"cross_modal_text_layers_{j}", **layer_kw)(at, text_mask, ai, None)
            xi = CrossModalLayer(name=f"cross_modal_image_layers_{j}", **layer_kw)(ai, None, at, text_mask)
            cross_pairs.append((xt, xi))

        pool_kw = dict(init_std=c.initializer_range, **kw)
        pooled = jnp.concatenate([Pooler(name="cross_modal_text_pooler", **pool_kw)(xt),
                                  Pooler(name="cross_modal_image_pooler", **pool_kw)(xi)], axis=-1)
        hidden = (text_hidden, image_hidden, tuple(cross_pairs)) if output_hidden_states else None
        return BridgeTowerModelOutput(text_features=xt, image_features=xi, pooler_output=pooled,
                                      text_unimodal_cls=text_states[-1][:, 0], image_unimodal_cls=image_in[:, 0],
                                      hidden_states=hidden)


def _contrastive(out: BridgeTowerModelOutput, text_head, image_head, cross_head,
                 log_scale: jax.Array) -> BridgeTowerContrastiveOutput:
    text = l2_normalize(text_head(out.text_unimodal_cls))
    image = l2_normalize(image_head(out.image_unimodal_cls))
    cross = l2_normalize(cross_head(out.pooler_output))
    return BridgeTowerContrastiveOutput(logits=jnp.stack([text, image, cross], axis=-2), text_embeds=text,
                                        image_embeds=image, cross_embeds=cross, logit_scale=jnp.exp(log_scale),
                                        hidden_states=out.hidden_states)


def _log_scale_param(module: nn.Module) -> jax.Array:
    c = module.config
    return module.param("logit_scale", nn.with_logical_partitioning(
        nn.initializers.constant(c.logit_scale_init_value), ()), (), jnp.dtype(c.compute.param_dtype))


class BridgeTowerForMaskedLM(nn.Module):
    config: BridgeTowerConfig

    @nn.compact
    def __call__(self, input_ids, attention_mask=None, pixel_values=None, *, deterministic=True,
                 output_hidden_states=False) -> MaskedLMOutput:
        out = BridgeTowerModel(self.config, name="bridgetower")(
            input_ids, attention_mask, pixel_values, deterministic=deterministic,
            output_hidden_states=output_hidden_states)
        return MaskedLMOutput(MLMHead(self.config, name="mlm_score")(out.text_features), out.hidden_states)


class BridgeTowerForImageAndTextRetrieval(nn.Module):
    """Image-text matching: logits [B, 2], column 1 = match."""
    config: BridgeTowerConfig

    @nn.compact
    def __call__(self, input_ids, attention_mask=None, pixel_values=None, *, deterministic=True,
                 output_hidden_states=False) -> SequenceClassifierOutput:
        out = BridgeTowerModel(self.config, name="bridgetower")(
            input_ids, attention_mask, pixel_values, deterministic=deterministic,
            output_hidden_states=output_hidden_states)
        return SequenceClassifierOutput(LinearHead(2, self.config, name="itm_score")(out.pooler_output),
                                        out.hidden_states)


class BridgeTowerForContrastiveLearning(nn.Module):
    """Three L2-normalised embeddings (uni-modal text, uni-modal image, cross-modal) and a learnt scale."""
    config: BridgeTowerConfig

    @nn.compact
    def __call__(self, input_ids, attention_mask=None, pixel_values=None, *, deterministic=True,
                 output_hidden_states=False) -> BridgeTowerContrastiveOutput:
        c = self.config
        out = BridgeTowerModel(c, name="bridgetower")(input_ids, attention_mask, pixel_values,
                                                      deterministic=deterministic,
                                                      output_hidden_states=output_hidden_states)
        size = c.contrastive_hidden_size
        return _contrastive(out, LinearHead(size, c, name="itc_text_head"),
                            LinearHead(size, c, name="itc_image_head"),
                            LinearHead(size, c, name="itc_cross_modal_head"), _log_scale_param(self))


class BridgeTowerForPreTraining(nn.Module):
    """One parameter tree for pre-training: MLM + ITM heads, and the ITC heads when `with_itc`.

    The objectives run separate forwards (masked text for MLM, matched/mismatched pairs for ITM),
    so each head has its own method; `__call__` (used by `init`) runs them all on one batch.
    """
    config: BridgeTowerConfig
    with_itc: bool = False

    def setup(self):
        c = self.config
        self.bridgetower = BridgeTowerModel(c)
        self.mlm_score = MLMHead(c)
        self.itm_score = LinearHead(2, c)
        if self.with_itc:
            self.itc_text_head = LinearHead(c.contrastive_hidden_size, c)
            self.itc_image_head = LinearHead(c.contrastive_hidden_size, c)
            self.itc_cross_modal_head = LinearHead(c.contrastive_hidden_size, c)
            self.logit_scale = _log_scale_param(self)

    def mlm(self, input_ids, attention_mask, pixel_values, deterministic=True) -> jax.Array:
        out = self.bridgetower(input_ids, attention_mask, pixel_values, deterministic=deterministic)
        return self.mlm_score(out.text_features)

    def itm(self, input_ids, attention_mask, pixel_values, deterministic=True) -> jax.Array:
        out = self.bridgetower(input_ids, attention_mask, pixel_values, deterministic=deterministic)
        return self.itm_score(out.pooler_output)

    def itm_and_contrastive(self, input_ids, attention_mask, pixel_values, deterministic=True):
        out = self.bridgetower(input_ids, attention_mask, pixel_values, deterministic=deterministic)
        return self.itm_score(out.pooler_output), _contrastive(
            out, self.itc_text_head, self.itc_image_head, self.itc_cross_modal_head, self.logit_scale)

    def __call__(self, input_ids, attention_mask=None, pixel_values=None, *, deterministic=True):
        if self.with_itc:
            itm, itc = self.itm_and_contrastive(input_ids, attention_mask, pixel_values, deterministic)
        else:
            itm, itc = self.itm(input_ids, attention_mask, pixel_values, deterministic), None
        mlm = self.mlm(input_ids, attention_mask, pixel_values, deterministic)
        return PreTrainingOutput(mlm_logits=mlm, itm_logits=itm, contrastive=itc)


class BridgeTowerForVQA(nn.Module):
    """VQAv2: a two-layer classifier over the pooled output, one logit per answer (sigmoid targets)."""
    config: BridgeTowerConfig
    num_answers: int = 3129
    head_hidden_scale: float = 2.0

    @nn.compact
    def __call__(self, input_ids, attention_mask=None, pixel_values=None, *, deterministic=True):
        c = self.config
        out = BridgeTowerModel(c, name="bridgetower")(input_ids, attention_mask, pixel_values,
                                                      deterministic=deterministic)
        hidden = int(2 * c.hidden_size * self.head_hidden_scale)
        return SequenceClassifierOutput(TaskClassifier(hidden, self.num_answers, c, name="vqa_classifier")(
            out.pooler_output))


class BridgeTowerForSNLIVE(nn.Module):
    """SNLI-VE: 3-way (contradiction, neutral, entailment) over the pooled output."""
    config: BridgeTowerConfig
    head_hidden_scale: float = 2.0

    @nn.compact
    def __call__(self, input_ids, attention_mask=None, pixel_values=None, *, deterministic=True):
        c = self.config
        out = BridgeTowerModel(c, name="bridgetower")(input_ids, attention_mask, pixel_values,
                                                      deterministic=deterministic)
        hidden = int(2 * c.hidden_size * self.head_hidden_scale)
        return SequenceClassifierOutput(TaskClassifier(hidden, 3, c, name="snli_classifier")(out.pooler_output))


class BridgeTowerForNLVR2(nn.Module):
    """NLVR2 "pair": one pass per image (token types 1 and 2), classifier on both pooled outputs.

    `pixel_values` is [B, 2, H, W, 3]; the config needs `num_token_types=3`.
    """
    config: BridgeTowerConfig
    head_hidden_scale: float = 1.5
    dropout_rate: float = 0.1

    @nn.compact
    def __call__(self, input_ids, attention_mask=None, pixel_values=None, *, deterministic=True):
        c = self.config
        if c.num_token_types < 3:
            raise ValueError("BridgeTowerForNLVR2 needs config.num_token_types=3 (one row per image)")
        core = BridgeTowerModel(c, name="bridgetower")
        pooled = [core(input_ids, attention_mask, pixel_values[:, k], image_token_type_idx=k + 1,
                       deterministic=deterministic).pooler_output for k in range(2)]
        features = nn.Dropout(self.dropout_rate)(jnp.concatenate(pooled, axis=-1), deterministic=deterministic)
        hidden = int(2 * c.hidden_size * self.head_hidden_scale)
        return SequenceClassifierOutput(TaskClassifier(hidden, 2, c, name="nlvr2_classifier")(features))


class BridgeTowerForRetrievalRank(nn.Module):
    """Classic ViLT/METER retrieval: one score per (image, text) pair from `rank_output` on the pooled output."""
    config: BridgeTowerConfig

    @nn.compact
    def __call__(self, input_ids, attention_mask=None, pixel_values=None, *, deterministic=True):
        out = BridgeTowerModel(self.config, name="bridgetower")(input_ids, attention_mask, pixel_values,
                                                                deterministic=deterministic)
        return SequenceClassifierOutput(LinearHead(1, self.config, name="rank_output")(out.pooler_output)[:, 0])


def dummy_inputs(config: BridgeTowerConfig, batch_size: int = 1, text_length: int = 8,
                 image_pairs: bool = False) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Zero inputs of the right shapes, for `init` and `jax.eval_shape`."""
    size = config.vision.image_size
    pixel_shape = (batch_size,) + ((2,) if image_pairs else ()) + (size, size, config.vision.num_channels)
    ids = jnp.zeros((batch_size, text_length), jnp.int32)
    return ids, jnp.ones_like(ids), jnp.zeros(pixel_shape, jnp.float32)


def abstract_params(model: nn.Module) -> dict:
    """Shapes and dtypes of `model`'s parameters (no memory allocated), boxes removed."""
    inputs = dummy_inputs(model.config, image_pairs=isinstance(model, BridgeTowerForNLVR2))
    variables = jax.eval_shape(model.init, jax.random.PRNGKey(0), *inputs)
    return nn.meta.unbox(variables)["params"]
