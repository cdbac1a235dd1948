"""Apply part of the transformers-BridgeTower link table to a partial state dict.

The importers translate each source (CLIP, RoBERTa, the original .ckpt) into transformers'
BridgeTower key names and let `state_dict.core_links` / `head_links` do the array work, so every
layout transform lives in one table. Here: pick the links of one part, apply those whose keys
are present, and tell which required keys are missing.
"""
from __future__ import annotations

import re

import numpy as np

from bridgetower_jax.convert.state_dict import Link, core_links, links_to_params
from bridgetower_jax.models.config import BridgeTowerConfig

# Parameters a source may lack without being incomplete: RoBERTaForMaskedLM has no pooler (and
# BridgeTower never uses it); CLIP has no per-layer `ln_separate` norms (only transformers' standalone
# vision path uses them). They stay freshly initialised.
OPTIONAL_PARAMS = (re.compile(r"text_model/pooler/"), re.compile(r"vision_model/ln_separate_\d+/"))


def core_part_links(config: BridgeTowerConfig, top_level: tuple[str, ...]) -> list[Link]:
    """The core links whose Flax paths start with one of `top_level` (e.g. ("vision_model",))."""
    return [l for l in core_links(config) if l.flax_paths[0][0] in top_level]


def _optional(link: Link) -> bool:
    name = "/".join(link.flax_paths[0])
    return any(p.match(name) for p in OPTIONAL_PARAMS)


def apply_available_links(links: list[Link], state_dict: dict[str, np.ndarray],
                          source: str, required: bool = True) -> tuple[dict, set[str]]:
    """Flax params of the links whose keys are all present, and the state-dict keys they used.

    When `required`, a missing key of a non-optional link raises KeyError naming `source`.
    """
    present = [l for l in links if all(k in state_dict for k in l.hf_keys)]
    missing = [k for l in links if not _optional(l) for k in l.hf_keys if k not in state_dict]
    if required and missing:
        raise KeyError(f"{source} lacks {len(missing)} weights the model needs (named as in transformers' "
                       f"BridgeTower), e.g. {missing[:6]}")
    return links_to_params(present, state_dict), {k for l in present for k in l.hf_keys}
