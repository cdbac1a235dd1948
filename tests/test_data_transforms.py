"""Image transforms: torchvision-equivalent resize/crop, CLIP normalisation, seeded augmentation."""
import io

import numpy as np
import pytest
from PIL import Image, ImageFilter

from bridgetower_jax.data import randaugment, transforms


def _photo(width=120, height=80, seed=0):
    noise = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    return Image.fromarray(noise).filter(ImageFilter.GaussianBlur(2))


def _jpeg(image):
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG")
    return buffer.getvalue()


@pytest.mark.parametrize("size,shape", [(48, (120, 80)), (48, (80, 120)), (64, (50, 50))])
def test_resize_shorter_center_crop_matches_resize_then_crop(size, shape):
    image = _photo(*shape)
    got = np.asarray(transforms.resize_shorter_center_crop(image, size), np.float32)
    width, height = image.size
    if width <= height:
        new = (size, int(size * height / width))
    else:
        new = (int(size * width / height), size)
    full = image.resize(new, Image.BICUBIC)
    left, top = int(round((new[0] - size) / 2)), int(round((new[1] - size) / 2))
    want = np.asarray(full.crop((left, top, left + size, top + size)), np.float32)
    assert got.shape == (size, size, 3)
    # PIL rounds its intermediate (horizontal-pass) image to 8 bits, so a few values differ by one.
    assert np.abs(got - want).max() <= 1.0
    assert np.abs(got - want).mean() < 0.15


def test_clip_normalisation():
    white = Image.new("RGB", (8, 8), (255, 255, 255))
    out = transforms.normalize(white)
    np.testing.assert_allclose(out[0, 0], (1 - transforms.CLIP_MEAN) / transforms.CLIP_STD, rtol=1e-6)
    assert out.dtype == np.float32


@pytest.mark.parametrize("name", transforms.TRANSFORM_NAMES)
@pytest.mark.parametrize("size", [288, 384, 576])
def test_every_transform_is_deterministic_per_generator(name, size):
    data = _jpeg(_photo())
    transform = transforms.ImageTransform(name, size)
    a = transform(data, np.random.default_rng(7))
    b = transform(data, np.random.default_rng(7))
    assert a.shape == (size, size, 3) and a.dtype == np.float32
    assert np.array_equal(a, b)


def test_random_transforms_vary_with_the_generator():
    data = _jpeg(_photo())
    transform = transforms.ImageTransform("blip_randaug_wc", 32)
    outputs = {transform(data, np.random.default_rng(s)).tobytes() for s in range(6)}
    assert len(outputs) > 1


def test_every_randaugment_op_runs():
    image = _photo(40, 40)
    for name, (apply, low, high, _) in randaugment._VILT_OPS.items():
        out = apply(image, 7 / 30 * (high - low) + low)
        assert out.size == image.size and out.mode == "RGB", name
    rng = np.random.default_rng(0)
    for name in randaugment._BLIP_AUGS:
        assert randaugment._blip_op(image, name, 5, rng).size == image.size


def test_unknown_transform_name_is_rejected():
    with pytest.raises(ValueError, match="unknown image transform"):
        transforms.ImageTransform("imagenet", 224)
