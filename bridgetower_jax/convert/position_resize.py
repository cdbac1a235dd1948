"""Resize a ViT position table to another patch grid, exactly as the original BridgeTower does.

The original (`adapt_position_encoding`, used both when CLIP is loaded and when a BridgeTower
checkpoint is loaded) keeps the class-token row and resizes the square g x g grid of the other
rows with `F.interpolate(mode="bicubic", align_corners=False)`. PyTorch's bicubic is Keys' cubic
convolution with a = -0.75 and out-of-range taps clamped to the edge; `jax.image.resize("cubic")`
uses a = -0.5 and renormalised edges, which differ by ~0.1 on real tables, so we build PyTorch's
interpolation weights ourselves and apply them as two small matrix products.
"""
from __future__ import annotations

import math

import numpy as np

_CUBIC_A = -0.75   # PyTorch's (and OpenCV's) bicubic constant


def _keys_cubic(distance: np.ndarray) -> np.ndarray:
    """Keys' cubic convolution kernel at |distance| (non-zero on [0, 2))."""
    x, a = np.abs(distance), _CUBIC_A
    near = ((a + 2) * x - (a + 3)) * x * x + 1
    far = ((a * x - 5 * a) * x + 8 * a) * x - 4 * a
    return np.where(x <= 1, near, np.where(x < 2, far, 0.0))


def bicubic_resize_matrix(in_size: int, out_size: int) -> np.ndarray:
    """[out_size, in_size] float64 weights: `W @ signal` is PyTorch's 1-D bicubic resize (align_corners=False)."""
    scale = in_size / out_size
    # Source coordinate of each output pixel centre (PyTorch does not clamp it for cubic).
    source = (np.arange(out_size) + 0.5) * scale - 0.5
    left = np.floor(source).astype(np.int64)
    frac = source - left
    weights = np.zeros((out_size, in_size))
    for tap in range(-1, 3):
        # Taps that fall outside the signal read the edge sample, so their weight piles up there.
        index = np.clip(left + tap, 0, in_size - 1)
        np.add.at(weights, (np.arange(out_size), index), _keys_cubic(frac - tap))
    return weights


def position_grid_size(table: np.ndarray) -> int:
    """g for a [1 + g*g, D] position table (class row first); ValueError when it is not square."""
    patches = table.shape[0] - 1
    grid = math.isqrt(max(patches, 0))
    if table.ndim != 2 or grid * grid != patches or grid == 0:
        raise ValueError(f"position table of shape {tuple(table.shape)} is not [1 + g*g, D] "
                         "(a class-token row and a square patch grid)")
    return grid


def resize_position_table(table: np.ndarray, grid: int) -> np.ndarray:
    """[1 + g*g, D] -> [1 + grid*grid, D]: class row kept, the patch grid resized bicubically.

    Returns the input unchanged when the grid already has that size. Computed in float64 and
    returned in the input's floating dtype (float16 CLIP archives come back as float32).
    """
    table = np.asarray(table)
    old = position_grid_size(table)
    if old == grid:
        return table
    out_dtype = np.promote_types(table.dtype, np.float32)
    weights = bicubic_resize_matrix(old, grid)
    patches = table[1:].astype(np.float64).reshape(old, old, -1)   # row-major (y, x), as the conv flattens
    resized = np.einsum("yi,xj,ijd->yxd", weights, weights, patches).reshape(grid * grid, -1)
    return np.concatenate([table[:1].astype(out_dtype), resized.astype(out_dtype)], axis=0)
