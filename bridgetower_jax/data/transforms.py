"""Image transforms: decode, resize/crop, the original's augmentations, CLIP normalisation.

Names follow BridgeTower's `src/transforms/transform.py` keys:
    clip               resize shorter side (bicubic) + center crop    pre-training, `clip` eval
    clip_randaug       ViLT RandAugment(2, 9), then `clip`
    blip               square resize (size, size), bicubic            fine-tuning eval
    blip_randaug       RandomResizedCrop(0.5-1) + flip + BLIP RandomAugment(2, 5)
    blip_randaug_wc    RandomResizedCrop(0.5-1) + flip + ViLT RandAugment(2, 7)   NLVR2, SNLI-VE, IRTR
    blip_randaug_wohf  RandomResizedCrop(0.5-1) + BLIP RandomAugment(2, 5)        VQA
Output: float32 [size, size, 3] (NHWC), CLIP-normalised. Random choices come from the Generator
Grain derives per element from the seed, so they do not depend on worker count or order.
"""
from __future__ import annotations

import dataclasses
import io
import math

import numpy as np
from PIL import Image

from bridgetower_jax.data import randaugment

CLIP_MEAN = np.array([0.48145466, 0.4578275, 0.40821073], np.float32)
CLIP_STD = np.array([0.26862954, 0.26130258, 0.27577711], np.float32)
# (x / 255 - mean) / std as one multiply-add.
_SCALE = (1.0 / (255.0 * CLIP_STD)).astype(np.float32)
_OFFSET = (-CLIP_MEAN / CLIP_STD).astype(np.float32)

TRANSFORM_NAMES = ("clip", "clip_randaug", "blip", "blip_randaug", "blip_randaug_wc", "blip_randaug_wohf")


def decode_rgb(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()  # decode now, so a corrupt file fails here and not somewhere lazy
    return image if image.mode == "RGB" else image.convert("RGB")


def resize_shorter_center_crop(image: Image.Image, size: int) -> Image.Image:
    """torchvision Resize(size, bicubic) + CenterCrop(size), resampling only the kept window.

    The crop is mapped back to source coordinates and passed as `box`, so PIL filters exactly
    the pixels torchvision would keep (same scale, same sample centres) without resizing the
    discarded margins.
    """
    width, height = image.size
    if width <= height:
        new_w, new_h = size, int(size * height / width)
    else:
        new_w, new_h = int(size * width / height), size
    left, top = int(round((new_w - size) / 2.0)), int(round((new_h - size) / 2.0))
    sx, sy = width / new_w, height / new_h
    box = (left * sx, top * sy, (left + size) * sx, (top + size) * sy)
    return image.resize((size, size), Image.BICUBIC, box=box)


def random_resized_crop(image: Image.Image, size: int, rng: np.random.Generator,
                        scale=(0.5, 1.0), ratio=(3 / 4, 4 / 3)) -> Image.Image:
    """torchvision RandomResizedCrop semantics (10 tries, then a center crop)."""
    width, height = image.size
    area = width * height
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target_area = area * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(*log_ratio))
        w = int(round(math.sqrt(target_area * aspect)))
        h = int(round(math.sqrt(target_area / aspect)))
        if 0 < w <= width and 0 < h <= height:
            top = int(rng.integers(0, height - h + 1))
            left = int(rng.integers(0, width - w + 1))
            return image.resize((size, size), Image.BICUBIC, box=(left, top, left + w, top + h))
    in_ratio = width / height
    if in_ratio < ratio[0]:
        w, h = width, int(round(width / ratio[0]))
    elif in_ratio > ratio[1]:
        h, w = height, int(round(height * ratio[1]))
    else:
        w, h = width, height
    left, top = (width - w) // 2, (height - h) // 2
    return image.resize((size, size), Image.BICUBIC, box=(left, top, left + w, top + h))


def normalize(image: Image.Image) -> np.ndarray:
    pixels = np.asarray(image, dtype=np.float32)
    pixels *= _SCALE
    pixels += _OFFSET
    return pixels


@dataclasses.dataclass(frozen=True)
class ImageTransform:
    """Encoded bytes -> normalised float32 [size, size, 3]. Picklable for Grain workers."""
    name: str
    size: int

    def __post_init__(self):
        if self.name not in TRANSFORM_NAMES:
            raise ValueError(f"unknown image transform {self.name!r}; known: {TRANSFORM_NAMES}")

    def __call__(self, data: bytes, rng: np.random.Generator | None = None) -> np.ndarray:
        return normalize(self.augment(decode_rgb(data), rng))

    def augment(self, image: Image.Image, rng: np.random.Generator | None) -> Image.Image:
        name, size = self.name, self.size
        if name == "clip":
            return resize_shorter_center_crop(image, size)
        if name == "blip":
            return image.resize((size, size), Image.BICUBIC)
        if rng is None:
            raise ValueError(f"transform {name!r} is random and needs a Generator")
        if name == "clip_randaug":
            return resize_shorter_center_crop(randaugment.vilt_randaugment(image, rng, 2, 9), size)
        image = random_resized_crop(image, size, rng)
        if name != "blip_randaug_wohf" and rng.random() < 0.5:
            image = image.transpose(Image.FLIP_LEFT_RIGHT)
        if name == "blip_randaug_wc":
            return randaugment.vilt_randaugment(image, rng, 2, 7)
        return randaugment.blip_random_augment(image, rng, 2, 5)
