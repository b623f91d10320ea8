"""Flax activation capture: ``{layer name: [n, d] features}`` from Linen or NNX models.

Importing this module imports Flax; ``import transrate_jax`` alone does not.
"""

from transrate_jax._src.capture import intermediates
from transrate_jax._src.capture import pool
from transrate_jax._src.capture import POOL_MODES

__all__ = (
    "intermediates",
    "pool",
    "POOL_MODES",
)
