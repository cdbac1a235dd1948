"""Per-worker image throughput of the data pipeline: decode + resize/crop (+ augment) + normalise.

    python -m bench.data_pipeline [--sizes 288,576] [--transforms clip,blip,blip_randaug_wc]
                                    [--seconds 3] [--json PATH]

One Grain worker runs exactly this per image, so images/s here is images/s per worker (the
worker's threads can add more where PIL releases the GIL). Input: a COCO-sized (640x480) JPEG.
"""
from __future__ import annotations

import argparse
import io
import json
import platform
import time

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from bridgetower_jax.data.transforms import ImageTransform


def coco_like_jpeg(seed: int = 0, size=(640, 480)) -> bytes:
    """Smooth noise with shapes: JPEG-compresses like a photo, not like a flat synthetic image."""
    rng = np.random.default_rng(seed)
    noise = rng.integers(0, 256, (size[1] // 8, size[0] // 8, 3), dtype=np.uint8)
    image = Image.fromarray(noise).resize(size, Image.BICUBIC).filter(ImageFilter.GaussianBlur(1))
    draw = ImageDraw.Draw(image)
    for _ in range(20):
        x, y = rng.integers(0, size[0]), rng.integers(0, size[1])
        draw.ellipse([x, y, x + rng.integers(10, 120), y + rng.integers(10, 120)],
                     fill=tuple(int(c) for c in rng.integers(0, 256, 3)))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def images_per_second(transform: ImageTransform, images: list[bytes], seconds: float) -> float:
    rng = np.random.default_rng(0)
    transform(images[0], rng)  # warm up
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        transform(images[count % len(images)], rng)
        count += 1
    return count / (time.perf_counter() - start)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="288,576")
    parser.add_argument("--transforms", default="clip,blip,blip_randaug_wc")
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args(argv)
    images = [coco_like_jpeg(seed) for seed in range(8)]
    results = []
    print(f"input: 640x480 JPEG ({np.mean([len(i) for i in images]) / 1024:.0f} KiB), one process, "
          f"{platform.processor() or platform.machine()}")
    print(f"{'transform':<18}{'size':>6}{'images/s/worker':>18}{'ms/image':>10}")
    for name in args.transforms.split(","):
        for size in (int(s) for s in args.sizes.split(",")):
            rate = images_per_second(ImageTransform(name, size), images, args.seconds)
            results.append({"transform": name, "size": size, "images_per_second_per_worker": round(rate, 1)})
            print(f"{name:<18}{size:>6}{rate:>18.1f}{1000 / rate:>10.2f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"input": "640x480 JPEG q90", "results": results}, f, indent=1)


if __name__ == "__main__":
    main()
