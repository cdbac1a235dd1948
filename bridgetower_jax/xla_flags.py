"""XLA flags measured to help this model, per platform, applied before JAX starts its backend.

CPU: XLA's YNNPACK library fusions also take over reductions, and a reduction over the leading axis
(every bias / LayerNorm gradient, the MLM bias gradient over 2 x 40 x 50304 values, the gradient norm)
runs ~30x slower there than in XLA's own loop emitter (50 ms vs 1.6 ms for the MLM bias gradient on
the 2-core development VM). Dots stay with YNNPACK, which is faster than the Eigen path for them.
"""
from __future__ import annotations

import os

RECOMMENDED = {
    "cpu": ("--xla_cpu_experimental_ynn_fusion_type=-LIBRARY_FUSION_TYPE_REDUCE",),
}


def recommended_xla_flags(platform: str) -> str:
    return " ".join(RECOMMENDED.get(platform, ()))


def apply_recommended_xla_flags(platform: str = "cpu") -> str:
    """Append the recommended flags to XLA_FLAGS (a flag the user already set wins). Call before the
    first JAX computation: XLA reads the variable once, when the backend starts. Returns XLA_FLAGS."""
    current = os.environ.get("XLA_FLAGS", "")
    names = {f.split("=", 1)[0] for f in current.split()}
    extra = [f for f in RECOMMENDED.get(platform, ()) if f.split("=", 1)[0] not in names]
    os.environ["XLA_FLAGS"] = " ".join([current, *extra]).strip()
    return os.environ["XLA_FLAGS"]
