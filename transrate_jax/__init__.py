"""transrate_jax: transferability estimation in JAX.

Which pre-trained model, and which layer of it, will transfer best to a target task? TransRate
(Huang et al., ICML 2022) and its peers answer before any fine-tuning, batched and jit-compiled
on CPU, GPU or TPU.
"""

# Core TransRate.
from transrate_jax._src.transrate import coding_rate
from transrate_jax._src.transrate import transrate

__version__ = "0.1.0"

__all__ = (
    "coding_rate",
    "transrate",
)
