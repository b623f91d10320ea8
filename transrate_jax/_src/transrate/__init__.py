"""TransRate, in one package.

* :mod:`.kernel`: every layout that turns features into TransRate's log-determinant terms (class
  blocks, the dense traced layout, host moments, the stacked sweep) and the one function that
  turns class counts and those terms into the score, :func:`kernel.assemble`, which every path
  calls (streaming, sharding, regression and multi-label targets, the regularizer and the sweep
  included).
* :mod:`.api`: the public functions :func:`transrate` and :func:`coding_rate`.
"""

from transrate_jax._src.transrate.api import coding_rate
from transrate_jax._src.transrate.api import transrate

__all__ = ["coding_rate", "transrate"]
