"""The original's two RandAugment variants on PIL images, driven by an explicit numpy Generator.

* `vilt_randaugment(n, m)` (BridgeTower `src/transforms/randaug.py`, the UDA/ViLT op set): n ops
  drawn with replacement from 14, every drawn op applied at magnitude m/30 of its range;
  geometric ops flip sign with p=0.5.
* `blip_random_augment(n, m)` (BridgeTower `src/transforms/randaugment.py`, BLIP's): n ops drawn
  with replacement from 10, each applied with p=0.5 at level m/10 (rotate 30 deg, shear 0.3,
  translate 10 px at level 10; brightness/sharpness factor 1.8*level+0.1, an identity at m=5).

Taking the Generator as an argument (instead of the global `random` module the originals use)
is what makes augmentation deterministic per example and independent of worker count.
"""
from __future__ import annotations

import numpy as np
from PIL import Image, ImageEnhance, ImageOps

_FILL = (128, 128, 128)


def _signed(value: float, rng: np.random.Generator) -> float:
    return -value if rng.random() < 0.5 else value


def _shear_x(img, v):
    return img.transform(img.size, Image.AFFINE, (1, v, 0, 0, 1, 0), fillcolor=_FILL)


def _shear_y(img, v):
    return img.transform(img.size, Image.AFFINE, (1, 0, 0, v, 1, 0), fillcolor=_FILL)


def _translate_x(img, v):
    return img.transform(img.size, Image.AFFINE, (1, 0, v, 0, 1, 0), fillcolor=_FILL)


def _translate_y(img, v):
    return img.transform(img.size, Image.AFFINE, (1, 0, 0, 0, 1, v), fillcolor=_FILL)


def _solarize_add(img, addition, threshold=128):
    pixels = np.asarray(img, np.int16)
    out = np.where(pixels < threshold, np.clip(pixels + int(addition), 0, 255), pixels)
    return Image.fromarray(out.astype(np.uint8))


# name -> (apply(img, value), min, max, signed)
_VILT_OPS = {
    "AutoContrast": (lambda img, v: ImageOps.autocontrast(img), 0, 1, False),
    "Equalize": (lambda img, v: ImageOps.equalize(img), 0, 1, False),
    "Rotate": (lambda img, v: img.rotate(v, fillcolor=_FILL), 0, 30, True),
    "Posterize": (lambda img, v: ImageOps.posterize(img, max(1, int(v))), 0, 4, False),
    "Solarize": (lambda img, v: ImageOps.solarize(img, v), 0, 256, False),
    "SolarizeAdd": (_solarize_add, 0, 110, False),
    "Color": (lambda img, v: ImageEnhance.Color(img).enhance(v), 0.1, 1.9, False),
    "Contrast": (lambda img, v: ImageEnhance.Contrast(img).enhance(v), 0.1, 1.9, False),
    "Brightness": (lambda img, v: ImageEnhance.Brightness(img).enhance(v), 0.1, 1.9, False),
    "Sharpness": (lambda img, v: ImageEnhance.Sharpness(img).enhance(v), 0.1, 1.9, False),
    "ShearX": (_shear_x, 0.0, 0.3, True),
    "ShearY": (_shear_y, 0.0, 0.3, True),
    "TranslateXabs": (_translate_x, 0.0, 100.0, True),
    "TranslateYabs": (_translate_y, 0.0, 100.0, True),
}


def vilt_randaugment(image: Image.Image, rng: np.random.Generator, n: int = 2, m: int = 9) -> Image.Image:
    names = list(_VILT_OPS)
    for index in rng.integers(len(names), size=n):
        apply, low, high, signed = _VILT_OPS[names[index]]
        value = m / 30 * (high - low) + low
        image = apply(image, _signed(value, rng) if signed else value)
    return image


_BLIP_AUGS = ("Identity", "AutoContrast", "Brightness", "Sharpness", "Equalize", "ShearX", "ShearY",
              "TranslateX", "TranslateY", "Rotate")


def _blip_op(image: Image.Image, name: str, level: float, rng: np.random.Generator) -> Image.Image:
    if name == "Identity":
        return image
    if name == "AutoContrast":
        return ImageOps.autocontrast(image)
    if name == "Equalize":
        return ImageOps.equalize(image)
    if name in ("Brightness", "Sharpness"):
        factor = level / 10 * 1.8 + 0.1
        return getattr(ImageEnhance, name)(image).enhance(factor)
    if name in ("ShearX", "ShearY"):
        shear = _signed(level / 10 * 0.3, rng)
        return (_shear_x if name == "ShearX" else _shear_y)(image, shear)
    if name in ("TranslateX", "TranslateY"):
        offset = _signed(level / 10 * 10, rng)
        return (_translate_x if name == "TranslateX" else _translate_y)(image, offset)
    return image.rotate(_signed(level / 10 * 30, rng), fillcolor=_FILL)


def blip_random_augment(image: Image.Image, rng: np.random.Generator, n: int = 2, m: int = 5) -> Image.Image:
    for index in rng.integers(len(_BLIP_AUGS), size=n):
        if rng.random() < 0.5:
            image = _blip_op(image, _BLIP_AUGS[index], m, rng)
    return image
