"""A small zoo of Flax NNX models pretrained on scikit-learn's digits, with the data shipped.

Importing this module does not import Flax; :func:`load` does.
"""

from transrate_jax._src.zoo import info
from transrate_jax._src.zoo import list_models
from transrate_jax._src.zoo import load
from transrate_jax._src.zoo import load_digits
from transrate_jax._src.zoo import load_source_task
from transrate_jax._src.zoo import load_target_task
from transrate_jax._src.zoo import manifest

__all__ = (
    "info",
    "list_models",
    "load",
    "load_digits",
    "load_source_task",
    "load_target_task",
    "manifest",
)
