"""Flax parameter tree <-> transformers BridgeTower state dict, from one table of links.

Each `Link` ties some transformers keys to some Flax parameter paths with a pair of array
functions, so import and export are the same table read in opposite directions. The table
covers the looped layout; `models.scan_layout` converts scanned trees before and after.
All arrays here are numpy; transformers' layouts are: Linear [out, in], Conv2d [O, I, kh, kw],
Embedding [num, dim], LayerNorm weight/bias, scalars 0-d.
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Iterator

import numpy as np

from bridgetower_jax.models.config import BridgeTowerConfig

Path = tuple[str, ...]
HEADS = ("model", "mlm", "itm", "itc")


@dataclasses.dataclass(frozen=True)
class Link:
    hf_keys: tuple[str, ...]
    flax_paths: tuple[Path, ...]
    to_flax: Callable[..., tuple[np.ndarray, ...]]
    to_hf: Callable[..., tuple[np.ndarray, ...]]


def _contiguous(x: np.ndarray) -> np.ndarray:
    # np.ascontiguousarray would turn 0-d scalars (logit_scale, beta) into shape (1,)
    return np.asarray(x, order="C")


def _same(*xs):
    return xs


def _transpose(*xs):
    return tuple(_contiguous(x.T) for x in xs)


def _one(hf: str, fx: Path, to_flax=_same, to_hf=_same) -> Link:
    return Link((hf,), (fx,), to_flax, to_hf)


def _linear(hf: str, fx: Path) -> Iterator[Link]:
    yield _one(f"{hf}.weight", fx + ("kernel",), _transpose, _transpose)
    yield _one(f"{hf}.bias", fx + ("bias",))


def _layernorm(hf: str, fx: Path) -> Iterator[Link]:
    yield _one(f"{hf}.weight", fx + ("scale",))
    yield _one(f"{hf}.bias", fx + ("bias",))


def _heads_projection(hf: str, fx: Path, heads: int) -> Iterator[Link]:
    """Linear [H*D, in] <-> kernel [in, H, D] (query/key/value)."""
    yield _one(f"{hf}.weight", fx + ("kernel",),
               lambda w: (w.T.reshape(w.shape[1], heads, -1),),
               lambda k: (_contiguous(k.reshape(k.shape[0], -1).T),))
    yield _one(f"{hf}.bias", fx + ("bias",), lambda b: (b.reshape(heads, -1),), lambda b: (b.reshape(-1),))


def _heads_output(hf: str, fx: Path, heads: int) -> Iterator[Link]:
    """Linear [out, H*D] <-> kernel [H, D, out] (attention output projection)."""
    yield _one(f"{hf}.weight", fx + ("kernel",),
               lambda w: (w.T.reshape(heads, -1, w.shape[0]),),
               lambda k: (_contiguous(k.reshape(-1, k.shape[-1]).T),))
    yield _one(f"{hf}.bias", fx + ("bias",))


def _fused_in_proj(hf: str, fx: Path, heads: int) -> Iterator[Link]:
    """nn.MultiheadAttention's packed [q; k; v] in_proj <-> three (embed, heads, kv) projections."""
    names = ("query", "key", "value")

    def split_weight(w):
        return tuple(part.T.reshape(w.shape[1], heads, -1) for part in np.split(w, 3, axis=0))

    def join_weight(*ks):
        return (_contiguous(np.concatenate([k.reshape(k.shape[0], -1).T for k in ks], axis=0)),)

    yield Link((f"{hf}.in_proj_weight",), tuple(fx + (n, "kernel") for n in names), split_weight, join_weight)
    yield Link((f"{hf}.in_proj_bias",), tuple(fx + (n, "bias") for n in names),
               lambda b: tuple(p.reshape(heads, -1) for p in np.split(b, 3)),
               lambda *bs: (np.concatenate([b.reshape(-1) for b in bs]),))


def _attention_block(hf: str, fx: Path, heads: int) -> Iterator[Link]:
    """BERT attention sub-layer: `{hf}.self.*`, `{hf}.output.{dense,LayerNorm}`."""
    for n in ("query", "key", "value"):
        yield from _heads_projection(f"{hf}.self.{n}", fx + ("attn", n), heads)
    yield from _heads_output(f"{hf}.output.dense", fx + ("attn", "out"), heads)
    yield from _layernorm(f"{hf}.output.LayerNorm", fx + ("LayerNorm",))


def _ffn(hf: str, fx: Path) -> Iterator[Link]:
    yield from _linear(f"{hf}.intermediate.dense", fx + ("ffn", "intermediate"))
    yield from _linear(f"{hf}.output.dense", fx + ("ffn", "output"))
    yield from _layernorm(f"{hf}.output.LayerNorm", fx + ("ffn", "LayerNorm"))


def _vocab_link(hf: str, fx: Path, config: BridgeTowerConfig, transpose: bool = False) -> Link:
    vocab, padded = config.text.vocab_size, config.padded_vocab_size
    axis = 1 if transpose else 0   # the vocabulary axis on the Flax side

    def to_flax(w):
        w = w.T if transpose else w
        pad = [(0, 0)] * w.ndim
        pad[axis] = (0, padded - w.shape[axis])
        return (np.pad(w, pad),)

    def to_hf(w):
        w = np.take(w, np.arange(vocab), axis=axis)
        return (_contiguous(w.T if transpose else w),)

    return _one(hf, fx, to_flax, to_hf)


def core_links(config: BridgeTowerConfig) -> Iterator[Link]:
    """Links of `BridgeTowerModel` (no `bridgetower.` prefix on either side)."""
    t, v = config.text, config.vision
    th, vh = t.num_attention_heads, v.num_attention_heads
    # text tower
    te = ("text_model", "embeddings")
    yield _vocab_link("text_model.embeddings.word_embeddings.weight", te + ("word_embeddings", "embedding"), config)
    yield _one("text_model.embeddings.token_type_embeddings.weight", te + ("token_type_embeddings", "embedding"))
    yield _one("text_model.embeddings.position_embeddings.weight", te + ("position_embeddings", "embedding"))
    yield from _layernorm("text_model.embeddings.LayerNorm", te + ("LayerNorm",))
    for i in range(t.num_hidden_layers):
        hf, fx = f"text_model.encoder.layer.{i}", ("text_model", f"layer_{i}")
        yield from _attention_block(f"{hf}.attention", fx + ("attention",), th)
        yield from _ffn(hf, fx)
    yield from _linear("text_model.pooler.dense", ("text_model", "pooler", "dense"))
    # vision tower
    vis, vfx = "vision_model.visual", ("vision_model",)
    yield _one(f"{vis}.embeddings.class_embedding", vfx + ("embeddings", "class_embedding"))
    yield _one(f"{vis}.embeddings.patch_embedding.weight", vfx + ("embeddings", "patch_embedding", "kernel"),
               lambda w: (_contiguous(w.transpose(2, 3, 1, 0)),),
               lambda k: (_contiguous(k.transpose(3, 2, 0, 1)),))
    yield _one(f"{vis}.embeddings.position_embedding.weight", vfx + ("embeddings", "position_embedding", "embedding"))
    yield from _layernorm(f"{vis}.ln_pre", vfx + ("ln_pre",))
    yield from _layernorm(f"{vis}.ln_post", vfx + ("ln_post",))
    if not v.share_layernorm:
        for i in range(v.num_hidden_layers):
            yield from _layernorm(f"{vis}.ln_separate.{i}", vfx + (f"ln_separate_{i}",))
    for i in range(v.num_hidden_layers):
        hf, fx = f"{vis}.transformer.resblocks.{i}", vfx + (f"block_{i}",)
        yield from _fused_in_proj(f"{hf}.attn", fx + ("attn",), vh)
        yield from _heads_output(f"{hf}.attn.out_proj", fx + ("attn", "out"), vh)
        yield from _layernorm(f"{hf}.ln_1", fx + ("ln_1",))
        yield from _layernorm(f"{hf}.ln_2", fx + ("ln_2",))
        yield from _linear(f"{hf}.mlp.c_fc", fx + ("c_fc",))
        yield from _linear(f"{hf}.mlp.c_proj", fx + ("c_proj",))
    # cross-modal encoder
    yield _one("token_type_embeddings.weight", ("token_type_embeddings", "embedding"))
    for kind in ("text", "image"):
        name = f"cross_modal_{kind}_transform"
        if config.share_cross_modal_transformer_layers:
            yield from _linear(name, (name,))
        else:
            for j in range(config.num_hidden_layers):
                yield from _linear(f"{name}.{j}", (f"{name}_{j}",))
        yield from _layernorm(f"cross_modal_{kind}_layernorm", (f"cross_modal_{kind}_layernorm",))
        for k in range(config.num_hidden_layers - 1):
            hf, fx = f"cross_modal_{kind}_link_tower.{k}", (f"cross_modal_{kind}_link_tower_{k}",)
            yield from _layernorm(f"{hf}.LayerNorm", fx + ("LayerNorm",))
            if config.link_tower_type == "scaled_add":
                yield _one(f"{hf}.scaled_factor", fx + ("scaled_factor",))
            elif config.link_tower_type == "interpolate":
                yield _one(f"{hf}.beta", fx + ("beta",))
        for j in range(config.num_hidden_layers):
            hf, fx = f"cross_modal_{kind}_layers.{j}", (f"cross_modal_{kind}_layers_{j}",)
            yield from _attention_block(f"{hf}.attention", fx + ("attention",), th)
            yield from _attention_block(f"{hf}.crossattention", fx + ("crossattention",), th)
            yield from _ffn(hf, fx)
        yield from _linear(f"cross_modal_{kind}_pooler.dense", (f"cross_modal_{kind}_pooler", "dense"))


def head_links(config: BridgeTowerConfig, head: str) -> Iterator[Link]:
    """Links of one head's own parameters (top level on both sides)."""
    if head == "mlm":
        yield from _linear("mlm_score.transform.dense", ("mlm_score", "transform_dense"))
        yield from _layernorm("mlm_score.transform.LayerNorm", ("mlm_score", "transform_LayerNorm"))
        yield _vocab_link("mlm_score.decoder.weight", ("mlm_score", "decoder", "kernel"), config, transpose=True)
        yield _vocab_link("mlm_score.bias", ("mlm_score", "bias"), config)
    elif head == "itm":
        yield from _linear("itm_score.fc", ("itm_score", "fc"))
    elif head == "itc":
        for name in ("itc_text_head", "itc_image_head", "itc_cross_modal_head"):
            yield from _linear(f"{name}.fc", (name, "fc"))
        yield _one("logit_scale", ("logit_scale",))
    elif head != "model":
        raise ValueError(f"unknown head {head!r}; choose one of {HEADS}")


def all_links(config: BridgeTowerConfig, heads: tuple[str, ...]) -> list[Link]:
    """Every link of a model with these heads: the core is prefixed `bridgetower` when any head is present."""
    heads = tuple(h for h in heads if h != "model")
    if not heads:
        return list(core_links(config))
    links = [Link(tuple(f"bridgetower.{k}" for k in l.hf_keys), tuple(("bridgetower",) + p for p in l.flax_paths),
                  l.to_flax, l.to_hf) for l in core_links(config)]
    for head in heads:
        links += list(head_links(config, head))
    return links


def _get(tree: dict, path: Path):
    for p in path:
        tree = tree[p]
    return tree


def _set(tree: dict, path: Path, value) -> None:
    for p in path[:-1]:
        tree = tree.setdefault(p, {})
    tree[path[-1]] = value


def state_dict_to_params(config: BridgeTowerConfig, state_dict: dict[str, np.ndarray],
                         heads: tuple[str, ...]) -> dict:
    """transformers state dict -> Flax params (looped layout). Every expected key must be present."""
    links = all_links(config, heads)
    missing = [k for l in links for k in l.hf_keys if k not in state_dict]
    if missing:
        raise KeyError(f"{len(missing)} keys missing from the BridgeTower state dict, e.g. {missing[:5]}")
    return links_to_params(links, state_dict)


def links_to_params(links, state_dict: dict[str, np.ndarray]) -> dict:
    """Apply links whose keys are all in `state_dict` -> Flax params (nested dict of numpy arrays)."""
    params: dict = {}
    for link in links:
        arrays = link.to_flax(*(np.asarray(state_dict[k]) for k in link.hf_keys))
        for path, arr in zip(link.flax_paths, arrays):
            _set(params, path, arr)
    return params


def params_to_state_dict(config: BridgeTowerConfig, params: dict, heads: tuple[str, ...]) -> dict[str, np.ndarray]:
    """Flax params (looped layout) -> transformers state dict (float32 numpy, contiguous)."""
    out = {}
    for link in all_links(config, heads):
        try:
            arrays = [np.asarray(_get(params, p), dtype=np.float32) for p in link.flax_paths]
        except KeyError as e:
            raise KeyError(f"parameter {'/'.join(link.flax_paths[0])} is missing from the Flax tree "
                           f"(needed for {link.hf_keys[0]})") from e
        for key, arr in zip(link.hf_keys, link.to_hf(*arrays)):
            out[key] = np.asarray(arr, dtype=np.float32, order="C")
    return out


def unused_state_dict_keys(config: BridgeTowerConfig, state_dict: dict, heads: tuple[str, ...]) -> list[str]:
    """Keys of a state dict that the table does not consume (a sign of a mismatched config)."""
    used = {k for l in all_links(config, heads) for k in l.hf_keys}
    return sorted(k for k in state_dict if k not in used)
