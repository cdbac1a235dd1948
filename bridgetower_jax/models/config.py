"""Model hyper-parameters: frozen dataclasses, hashable so they can be Linen attributes.

Field names follow `transformers.BridgeTowerConfig` (and its text/vision sub-configs) so the
converter maps them one to one. Compute-only knobs (`dtype`, `scan_layers`, ...) live in
`ComputeConfig`: they change how the model runs, never which parameters it has.
"""
from __future__ import annotations

import dataclasses
from typing import Literal

LINK_TOWER_TYPES = ("add", "scaled_add", "interpolate")
ATTENTION_IMPLS = ("xla", "fused", "cpu_kernel")
CPU_KERNEL_HEAD_WIDTHS = (16, 32, 64, 128)    # what the "cpu_kernel" attention is compiled for
DROPOUT_IMPLS = ("threefry", "hash")


@dataclasses.dataclass(frozen=True)
class TextConfig:
    """RoBERTa encoder (post-LN, erf GELU, RoBERTa position ids)."""
    vocab_size: int = 50265
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    max_position_embeddings: int = 514
    type_vocab_size: int = 1
    layer_norm_eps: float = 1e-5
    pad_token_id: int = 1
    bos_token_id: int = 0
    eos_token_id: int = 2
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1


@dataclasses.dataclass(frozen=True)
class VisionConfig:
    """CLIP ViT (pre-LN, QuickGELU). Heads are hidden_size // 64 and the MLP is 4x, as in CLIP."""
    hidden_size: int = 768
    num_hidden_layers: int = 12
    patch_size: int = 16
    image_size: int = 288
    num_channels: int = 3
    layer_norm_eps: float = 1e-5
    share_layernorm: bool = True

    @property
    def num_attention_heads(self) -> int:
        return self.hidden_size // 64

    @property
    def num_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2

    @property
    def num_positions(self) -> int:
        return self.num_patches + 1


@dataclasses.dataclass(frozen=True)
class ComputeConfig:
    """How the model runs; never changes the parameter set (except the scanned layout)."""
    dtype: str = "float32"          # activations / matmul inputs ("bfloat16" on accelerators)
    param_dtype: str = "float32"    # stored parameters
    # "xla": the exact einsum path; "fused": jax.nn.dot_product_attention (cuDNN on GPU); "cpu_kernel": a
    # hand-written XLA:CPU kernel for inference (float32; built with the host's C++ compiler on first use).
    attention_impl: Literal["xla", "fused", "cpu_kernel"] = "xla"
    scan_layers: bool = False       # nn.scan the uni-modal layers below the bridges
    remat: bool = False             # rematerialise each uni-modal / cross-modal layer in backward
    # Dropout masks: "threefry" = jax.random.bernoulli; "hash" = a keyed hash of the element index,
    # fused into the consumer: much faster on CPU and quicker to compile (layers.dropout_keep_mask).
    dropout_impl: Literal["threefry", "hash"] = "threefry"


@dataclasses.dataclass(frozen=True)
class BridgeTowerConfig:
    """The whole model. `hidden_size` is the cross-modal width and must equal the text width."""
    text: TextConfig = TextConfig()
    vision: VisionConfig = VisionConfig()
    hidden_size: int = 768
    num_hidden_layers: int = 6               # cross-modal layers per stream
    link_tower_type: str = "add"
    share_cross_modal_transformer_layers: bool = True
    layer_norm_eps: float = 1e-5             # cross-modal first-layer LNs, link towers, MLM head
    # The original repository uses 1e-12 in the co-attention layers; transformers (and so every
    # converted checkpoint) builds them from text_config with 1e-5. We follow transformers.
    # Rows of the modality (token-type) table: 0 = text, 1 = image. NLVR2 adds a row for its
    # second image (the original copies row 1 into it); transformers only expresses 2.
    num_token_types: int = 2
    contrastive_hidden_size: int = 512
    logit_scale_init_value: float = 2.6592
    initializer_range: float = 0.02
    # Pad the vocabulary dimension to a multiple of this so it shards over the tensor axis.
    # The converter strips the padding on export; logits are sliced back to `text.vocab_size`.
    vocab_pad_multiple: int = 128
    compute: ComputeConfig = ComputeConfig()

    # ---- derived quantities -------------------------------------------------------------
    @property
    def split_index(self) -> int:
        """Uni-modal layers [0, split_index) run before the first cross-modal layer."""
        return self.text.num_hidden_layers - self.num_hidden_layers + 1

    @property
    def padded_vocab_size(self) -> int:
        m = max(1, self.vocab_pad_multiple)
        return -(-self.text.vocab_size // m) * m

    def replace(self, **changes) -> "BridgeTowerConfig":
        return dataclasses.replace(self, **changes)

    def with_compute(self, **changes) -> "BridgeTowerConfig":
        return dataclasses.replace(self, compute=dataclasses.replace(self.compute, **changes))

    # ---- validation -----------------------------------------------------------------------
    def validate(self) -> "BridgeTowerConfig":
        """Raise ValueError naming the field for any configuration the model cannot build."""
        t, v = self.text, self.vision
        problems = []
        if self.hidden_size != t.hidden_size:
            problems.append(f"hidden_size={self.hidden_size} must equal text.hidden_size={t.hidden_size} "
                            "(the cross-modal layers are built from the text config)")
        if t.hidden_size % t.num_attention_heads:
            problems.append(f"text.hidden_size={t.hidden_size} is not divisible by "
                            f"text.num_attention_heads={t.num_attention_heads}")
        if v.hidden_size < 64 or v.hidden_size % 64:
            problems.append(f"vision.hidden_size={v.hidden_size} must be a positive multiple of 64 "
                            "(CLIP uses hidden_size // 64 heads of size 64)")
        if not 1 <= self.num_hidden_layers <= t.num_hidden_layers + 1:
            problems.append(f"num_hidden_layers={self.num_hidden_layers} (cross-modal layers) must be in "
                            f"[1, text.num_hidden_layers + 1 = {t.num_hidden_layers + 1}]")
        if v.num_hidden_layers < t.num_hidden_layers:
            problems.append(f"vision.num_hidden_layers={v.num_hidden_layers} must be >= "
                            f"text.num_hidden_layers={t.num_hidden_layers} (both towers are bridged at the same depth)")
        if v.image_size % v.patch_size:
            problems.append(f"vision.image_size={v.image_size} is not a multiple of vision.patch_size={v.patch_size}")
        if self.link_tower_type not in LINK_TOWER_TYPES:
            problems.append(f"link_tower_type={self.link_tower_type!r} is not one of {LINK_TOWER_TYPES}")
        if self.compute.attention_impl not in ATTENTION_IMPLS:
            problems.append(f"compute.attention_impl={self.compute.attention_impl!r} is not one of {ATTENTION_IMPLS}")
        if self.compute.attention_impl == "cpu_kernel":
            if self.compute.dtype != "float32":
                problems.append(f'compute.attention_impl="cpu_kernel" computes in float32 only (compute.dtype='
                                f'{self.compute.dtype!r}); use "fused" or "xla"')
            text_width = t.hidden_size // max(t.num_attention_heads, 1)
            if text_width not in CPU_KERNEL_HEAD_WIDTHS:
                problems.append(f'compute.attention_impl="cpu_kernel" needs a head width in {CPU_KERNEL_HEAD_WIDTHS}; '
                                f"text.hidden_size / text.num_attention_heads = {text_width}")
        if t.pad_token_id >= t.max_position_embeddings - 1:
            problems.append(f"text.pad_token_id={t.pad_token_id} leaves no room in the position table "
                            f"(max_position_embeddings={t.max_position_embeddings}); RoBERTa positions start at pad+1")
        if self.compute.dropout_impl not in DROPOUT_IMPLS:
            problems.append(f"compute.dropout_impl={self.compute.dropout_impl!r} is not one of {DROPOUT_IMPLS}")
        if problems:
            raise ValueError("Invalid BridgeTowerConfig:\n  - " + "\n  - ".join(problems))
        return self

    # ---- (de)serialisation as plain dicts (checkpoints, ml_collections) -------------------
    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "BridgeTowerConfig":
        d = dict(d)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"Unknown BridgeTowerConfig keys: {unknown}")
        subs = {"text": TextConfig, "vision": VisionConfig, "compute": ComputeConfig}
        for key, sub_cls in subs.items():
            if key in d and isinstance(d[key], dict):
                sub_known = {f.name for f in dataclasses.fields(sub_cls)}
                bad = sorted(set(d[key]) - sub_known)
                if bad:
                    raise ValueError(f"Unknown {key} config keys: {bad}")
                d[key] = sub_cls(**d[key])
        return cls(**d)


def _preset_base() -> BridgeTowerConfig:
    """ViT-B/16 at 288 px + RoBERTa-base, 6 cross-modal layers (the paper's base model)."""
    return BridgeTowerConfig()


def _preset_large() -> BridgeTowerConfig:
    """ViT-L/14 at 294 px + RoBERTa-large, 6 cross-modal layers of width 1024."""
    return BridgeTowerConfig(
        text=TextConfig(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096),
        vision=VisionConfig(hidden_size=1024, num_hidden_layers=24, patch_size=14, image_size=294),
        hidden_size=1024,
    )


def _preset_tiny() -> BridgeTowerConfig:
    """A few hundred thousand parameters: for tests and the CPU demo."""
    return BridgeTowerConfig(
        text=TextConfig(vocab_size=99, hidden_size=32, num_hidden_layers=3, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=64),
        vision=VisionConfig(hidden_size=64, num_hidden_layers=3, patch_size=8, image_size=32),
        hidden_size=32, num_hidden_layers=2, contrastive_hidden_size=16,
    )


PRESETS = {"base": _preset_base, "large": _preset_large, "tiny": _preset_tiny}


def preset(name: str) -> BridgeTowerConfig:
    """A named model size: one of `PRESETS`."""
    if name not in PRESETS:
        raise ValueError(f"Unknown model preset {name!r}; choose one of {sorted(PRESETS)}")
    return PRESETS[name]()
