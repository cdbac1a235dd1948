"""bridgetower_jax: BridgeTower (Xu et al., AAAI 2023) in JAX/Flax."""
__version__ = "0.1.0"
