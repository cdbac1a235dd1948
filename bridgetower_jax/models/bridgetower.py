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
    text_features: jax.Array          # [B, T, H] last cross-modal text layer ([B, 1, H] if pooled_only)
    image_features: jax.Array         # [B, 1+P, H] last cross-modal image layer ([B, 1, H] if pooled_only)
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
    """Uni-modal towers, bridges and the co-attention stack (transformers' BridgeTowerModel).

    Besides `__call__`, the stages are separate methods so that retrieval can encode every text and
    every image once and fuse only the candidate pairs: `encode_text`, `encode_image`,
    `text_bridge_inputs`, `image_bridge_inputs`, `fuse`.
    """
    config: BridgeTowerConfig

    def setup(self):
        c = self.config
        kw = dict(dtype=jnp.dtype(c.compute.dtype), param_dtype=jnp.dtype(c.compute.param_dtype))
        self.text_model = TextEncoder(c)
        self.vision_model = VisionEncoder(c)

        def transform():
            return Dense(c.hidden_size, ("embed", "embed_out"), kernel_init=normal(c.initializer_range), **kw)

        # One projection into the cross-modal width shared by every layer, or one per layer
        # (setup names list entries `<attribute>_<j>`, matching transformers' `.<j>` keys).
        if c.share_cross_modal_transformer_layers:
            self.cross_modal_text_transform = transform()
            self.cross_modal_image_transform = transform()
        else:
            self.cross_modal_text_transform = [transform() for _ in range(c.num_hidden_layers)]
            self.cross_modal_image_transform = [transform() for _ in range(c.num_hidden_layers)]
        self.token_type_embeddings = Embed(c.num_token_types, c.hidden_size,
                                           embedding_init=normal(c.initializer_range), **kw)
        # The first cross-modal layer has no previous output to bridge with: a LayerNorm stands where
        # the link tower is.
        self.cross_modal_text_layernorm = LayerNorm(c.layer_norm_eps, **kw)
        self.cross_modal_image_layernorm = LayerNorm(c.layer_norm_eps, **kw)
        link = dict(link_tower_type=c.link_tower_type, layer_norm_eps=c.layer_norm_eps, **kw)
        self.cross_modal_text_link_tower = [LinkTower(**link) for _ in range(c.num_hidden_layers - 1)]
        self.cross_modal_image_link_tower = [LinkTower(**link) for _ in range(c.num_hidden_layers - 1)]
        layer = dict(config=c.text, attention_impl=c.compute.attention_impl, dropout_impl=c.compute.dropout_impl,
                     init_std=c.initializer_range, **kw)
        self.cross_modal_text_layers = [CrossModalLayer(**layer) for _ in range(c.num_hidden_layers)]
        self.cross_modal_image_layers = [CrossModalLayer(**layer) for _ in range(c.num_hidden_layers)]
        self.cross_modal_text_pooler = Pooler(c.initializer_range, **kw)
        self.cross_modal_image_pooler = Pooler(c.initializer_range, **kw)

    def _transform(self, kind: str, j: int) -> Dense:
        t = self.cross_modal_text_transform if kind == "text" else self.cross_modal_image_transform
        return t if self.config.share_cross_modal_transformer_layers else t[j]

    def encode_text(self, input_ids, attention_mask=None, deterministic=True, output_hidden_states=False):
        """-> (the text states feeding each cross-modal layer, all hidden states or None)."""
        return self.text_model(input_ids, _key_mask(attention_mask), deterministic, output_hidden_states)

    def encode_image(self, pixel_values, output_hidden_states=False):
        """-> (ln_post of the image states feeding each cross-modal layer, raw hidden states or None)."""
        return self.vision_model(pixel_values, output_hidden_states)

    def text_bridge_inputs(self, text_states):
        """Text states -> the per-layer text inputs of the cross-modal stack (projected + token type 0)."""
        text_type = self.token_type_embeddings(jnp.zeros((1, 1), jnp.int32))
        return [self._transform("text", j)(s) + text_type for j, s in enumerate(text_states)]

    def image_bridge_inputs(self, image_states, image_token_type_idx: int = 1):
        """Image states -> the per-layer image inputs of the cross-modal stack (projected + image token type)."""
        c = self.config
        if not 1 <= image_token_type_idx < c.num_token_types:
            raise ValueError(f"image_token_type_idx={image_token_type_idx} needs num_token_types > "
                             f"{image_token_type_idx} (have {c.num_token_types})")
        image_type = self.token_type_embeddings(jnp.full((1, 1), image_token_type_idx, jnp.int32))
        return [self._transform("image", j)(s) + image_type for j, s in enumerate(image_states)]

    def fuse(self, text_inputs, image_inputs, attention_mask=None, deterministic=True, pooled_only=False):
        """The co-attention stack over bridged inputs -> (text, image, pooled, per-layer pairs).

        pooled_only: the last layer computes only each stream's first token, all that the poolers read
        (its text and image outputs are then [B, 1, H]; keys and values still span both streams): the
        classification and matching heads skip the last layer's queries, outputs and FFN of every
        other token.
        """
        text_mask = _key_mask(attention_mask)
        xt = xi = None
        pairs = []
        last = len(text_inputs) - 1
        for j, (text_in, image_in) in enumerate(zip(text_inputs, image_inputs, strict=True)):
            if j == 0:
                at, ai = self.cross_modal_text_layernorm(text_in), self.cross_modal_image_layernorm(image_in)
            else:
                at = self.cross_modal_text_link_tower[j - 1](text_in, xt)
                ai = self.cross_modal_image_link_tower[j - 1](image_in, xi)
            # Both streams read the bridged inputs of the same layer, not each other's new output;
            # the image stream is never masked, text padding is masked wherever text is the key.
            first = pooled_only and j == last
            xt = self.cross_modal_text_layers[j](at, text_mask, ai, None, deterministic, first)
            xi = self.cross_modal_image_layers[j](ai, None, at, text_mask, deterministic, first)
            pairs.append((xt, xi))
        pooled = jnp.concatenate([self.cross_modal_text_pooler(xt), self.cross_modal_image_pooler(xi)], axis=-1)
        return xt, xi, pooled, tuple(pairs)

    def __call__(self, input_ids, attention_mask=None, pixel_values=None, *, image_token_type_idx: int = 1,
                 deterministic: bool = True, output_hidden_states: bool = False,
                 pooled_only: bool = False) -> BridgeTowerModelOutput:
        """pooled_only: see `fuse` (text_features and image_features then hold the first token only)."""
        image_states, image_hidden = self.encode_image(pixel_values, output_hidden_states)
        return self.over_image_states(input_ids, attention_mask, image_states, image_hidden,
                                      image_token_type_idx=image_token_type_idx, deterministic=deterministic,
                                      output_hidden_states=output_hidden_states, pooled_only=pooled_only)

    def over_image_states(self, input_ids, attention_mask, image_states, image_hidden=None, *,
                          image_token_type_idx: int = 1, deterministic: bool = True,
                          output_hidden_states: bool = False, pooled_only: bool = False) -> BridgeTowerModelOutput:
        """The forward after `encode_image`, so that one vision pass can serve several forwards
        (pre-training's MLM and ITM see the same true images)."""
        text_states, text_hidden = self.encode_text(input_ids, attention_mask, deterministic, output_hidden_states)
        text_in = self.text_bridge_inputs(text_states)
        image_in = self.image_bridge_inputs(image_states, image_token_type_idx)
        xt, xi, pooled, pairs = self.fuse(text_in, image_in, attention_mask, deterministic, pooled_only)
        hidden = (text_hidden, image_hidden, pairs) if output_hidden_states else None
        return BridgeTowerModelOutput(text_features=xt, image_features=xi, pooler_output=pooled,
                                      text_unimodal_cls=text_states[-1][:, 0], image_unimodal_cls=image_in[-1][:, 0],
                                      hidden_states=hidden)


def _key_mask(attention_mask):
    return None if attention_mask is None else attention_mask.astype(bool)


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
            output_hidden_states=output_hidden_states, pooled_only=not output_hidden_states)
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
                                                      output_hidden_states=output_hidden_states,
                                                      pooled_only=not output_hidden_states)
        size = c.contrastive_hidden_size
        return _contrastive(out, LinearHead(size, c, name="itc_text_head"),
                            LinearHead(size, c, name="itc_image_head"),
                            LinearHead(size, c, name="itc_cross_modal_head"), _log_scale_param(self))


class BridgeTowerForPreTraining(nn.Module):
    """One parameter tree for pre-training and retrieval: MLM, ITM and (with `with_itc`) ITC heads.

    The objectives run separate forwards (masked text for MLM, matched/mismatched pairs for ITM),
    so each head has its own method; `__call__` (used by `init`) runs them all on one batch.
    Retrieval fine-tuning uses `with_mlm=False, with_itc=True`.
    """
    config: BridgeTowerConfig
    with_itc: bool = False
    with_mlm: bool = True

    def setup(self):
        c = self.config
        self.bridgetower = BridgeTowerModel(c)
        if self.with_mlm:
            self.mlm_score = MLMHead(c)
        self.itm_score = LinearHead(2, c)
        if self.with_itc:
            self.itc_text_head = LinearHead(c.contrastive_hidden_size, c)
            self.itc_image_head = LinearHead(c.contrastive_hidden_size, c)
            self.itc_cross_modal_head = LinearHead(c.contrastive_hidden_size, c)
            self.logit_scale = _log_scale_param(self)

    def mlm(self, input_ids, attention_mask, pixel_values, deterministic=True) -> jax.Array:
        """MLM logits at every position [B, T, vocab]."""
        out = self.bridgetower(input_ids, attention_mask, pixel_values, deterministic=deterministic)
        return self.mlm_score(out.text_features)

    def mlm_head(self, features) -> jax.Array:
        """MLM logits of the last cross-modal text states (any leading shape)."""
        return self.mlm_score(features)

    def pretraining_forwards(self, mlm_input_ids, input_ids, attention_mask, pixel_values, negative_pixel_values,
                             *, mlm: bool = True, itm: bool = True, deterministic: bool = True):
        """The MLM and ITM forwards of a pre-training batch, sharing one vision pass.

        Rows pair up: row 2k is matched with its own image, row 2k+1 is mismatched with
        `negative_pixel_values[k]` ([B/2, H, W, 3]). MLM reads (mlm_input_ids, own image) on every row;
        ITM reads (input_ids, own image) on even rows and (input_ids, negative) on odd ones. The vision
        tower has no dropout, so the matched rows' image states are those of the MLM forward: the tower
        runs once, on 1.5 B images instead of 2 B, with the same result as two independent forwards.
        -> (MLM head input [B, T, H] or None, ITM logits [B, 2] or None, the true images' states as
        `encode_images` gives them, for ITC); the caller decodes only the labelled positions
        (`objectives.masked_lm_loss_and_accuracy`).
        """
        core = self.bridgetower
        mlm_features = itm_logits = None
        if itm:
            # One pass over each pair's two images and its negative ([B/2, 3] rows, pair-major so that
            # every device stacks its own pairs): one GEMM per layer over 1.5 B images, not two.
            pairs = pixel_values.reshape(negative_pixel_values.shape[0], 2, *pixel_values.shape[1:])
            stacked = jnp.concatenate([pairs, negative_pixel_values[:, None]], axis=1)
            states, _ = core.encode_image(stacked.reshape(-1, *pixel_values.shape[1:]))
            states = [s.reshape(pairs.shape[0], 3, *s.shape[1:]) for s in states]
            images = [s[:, :2].reshape(-1, *s.shape[2:]) for s in states]
            matched_and_negative = [s[:, 0::2].reshape(-1, *s.shape[2:]) for s in states]
        else:
            images, _ = core.encode_image(pixel_values)
        if mlm:
            mlm_features = core.over_image_states(mlm_input_ids, attention_mask, images,
                                                  deterministic=deterministic).text_features
        if itm:
            itm_logits = self.itm_score(core.over_image_states(
                input_ids, attention_mask, matched_and_negative, pooled_only=True,
                deterministic=deterministic).pooler_output)
        return mlm_features, itm_logits, images

    def encode_images(self, pixel_values) -> list:
        """The vision tower's states feeding the cross-modal layers (`BridgeTowerModel.encode_image`). The
        tower has no dropout, so one pass serves every head that reads the same images."""
        return self.bridgetower.encode_image(pixel_values)[0]

    def itm(self, input_ids, attention_mask, pixel_values, deterministic=True, image_states=None) -> jax.Array:
        """ITM logits [B, 2]; `image_states` (from `encode_images`) stand in for `pixel_values` (pass None)."""
        core = self.bridgetower
        if image_states is None:
            image_states = core.encode_image(pixel_values)[0]
        out = core.over_image_states(input_ids, attention_mask, image_states, pooled_only=True,
                                     deterministic=deterministic)
        return self.itm_score(out.pooler_output)

    def itm_shared_images(self, input_ids, attention_mask, pixel_values) -> jax.Array:
        """ITM logits [B, 2] of B pairs over G = len(pixel_values) images, row r pairing text r with
        image r // (B / G): retrieval's re-rank scores many texts per image, and the vision tower
        (with the bridge projections) runs once per image instead of once per pair."""
        core = self.bridgetower
        rows_per_image = input_ids.shape[0] // pixel_values.shape[0]
        if rows_per_image * pixel_values.shape[0] != input_ids.shape[0]:
            raise ValueError(f"{input_ids.shape[0]} texts do not split evenly over {pixel_values.shape[0]} images")
        image_states, _ = core.encode_image(pixel_values)
        image_in = [jnp.repeat(x, rows_per_image, axis=0) for x in core.image_bridge_inputs(image_states)]
        text_states, _ = core.encode_text(input_ids, attention_mask)
        _, _, pooled, _ = core.fuse(core.text_bridge_inputs(text_states), image_in, attention_mask, pooled_only=True)
        return self.itm_score(pooled)

    def itm_and_contrastive(self, input_ids, attention_mask, pixel_values, deterministic=True):
        out = self.bridgetower(input_ids, attention_mask, pixel_values, deterministic=deterministic,
                               pooled_only=True)
        return self.itm_score(out.pooler_output), _contrastive(
            out, self.itc_text_head, self.itc_image_head, self.itc_cross_modal_head, self.logit_scale)

    def text_contrastive_embeds(self, input_ids, attention_mask, deterministic=True) -> jax.Array:
        """L2-normalised ITC text embedding from the text tower alone (no image needed)."""
        states, _ = self.bridgetower.encode_text(input_ids, attention_mask, deterministic)
        return l2_normalize(self.itc_text_head(states[-1][:, 0]))

    def image_contrastive_embeds(self, pixel_values, image_states=None) -> jax.Array:
        """L2-normalised ITC image embedding from the vision tower alone (no text needed); `image_states`
        (from `encode_images`) stand in for `pixel_values`."""
        states = self.bridgetower.encode_image(pixel_values)[0] if image_states is None else image_states
        top = self.bridgetower.image_bridge_inputs(states[-1:])[0]
        return l2_normalize(self.itc_image_head(top[:, 0]))

    def contrastive_scale(self) -> jax.Array:
        return jnp.exp(self.logit_scale)

    def __call__(self, input_ids, attention_mask=None, pixel_values=None, *, deterministic=True):
        if self.with_itc:
            itm, itc = self.itm_and_contrastive(input_ids, attention_mask, pixel_values, deterministic)
        else:
            itm, itc = self.itm(input_ids, attention_mask, pixel_values, deterministic), None
        mlm = self.mlm(input_ids, attention_mask, pixel_values, deterministic) if self.with_mlm else None
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
                                                      deterministic=deterministic, pooled_only=True)
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
                                                      deterministic=deterministic, pooled_only=True)
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
                       deterministic=deterministic, pooled_only=True).pooler_output for k in range(2)]
        features = nn.Dropout(self.dropout_rate)(jnp.concatenate(pooled, axis=-1), deterministic=deterministic)
        hidden = int(2 * c.hidden_size * self.head_hidden_scale)
        return SequenceClassifierOutput(TaskClassifier(hidden, 2, c, name="nlvr2_classifier")(features))


class BridgeTowerForRetrievalRank(nn.Module):
    """Classic ViLT/METER retrieval: one score per (image, text) pair from `rank_output` on the pooled output."""
    config: BridgeTowerConfig

    @nn.compact
    def __call__(self, input_ids, attention_mask=None, pixel_values=None, *, deterministic=True):
        out = BridgeTowerModel(self.config, name="bridgetower")(input_ids, attention_mask, pixel_values,
                                                                deterministic=deterministic, pooled_only=True)
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
