"""A toy metric, added the way a contributor adds one: this module and one registration.

``centroid_spread`` is the mean squared distance of the class centroids from the global mean,
divided by the mean within-class variance (a Fisher ratio; higher is better). The contract test
(tests/test_metric_contract.py) registers it, runs every contract check on it and removes it.
"""

import jax
import jax.numpy as jnp
import numpy as np

from transrate_jax._src import numerics
from transrate_jax._src import registry
from transrate_jax._src import validation

NAME = "toy_centroid_spread"


def centroid_spread(features, labels, *, num_classes=None, floor: float = 1e-12) -> jax.Array:
  """Fisher ratio of the class centroids, ``mean_c |mu_c - mu|^2 / mean_i |f_i - mu_y(i)|^2``."""
  f = validation.check_features(features)
  y, num_classes = validation.check_labels(labels, f.shape[0], num_classes=num_classes)
  z = numerics.center(f)
  onehot = jax.nn.one_hot(y, num_classes, dtype=z.dtype)
  counts = jnp.sum(onehot, axis=0)
  means = numerics.matmul_tn(onehot, z) / jnp.maximum(counts, 1.0)[:, None]
  present = counts > 0
  between = jnp.sum(jnp.where(present, jnp.sum(means * means, axis=1), 0.0)) / jnp.sum(present)
  resid = z - jnp.matmul(onehot, means, precision=numerics.HIGHEST)
  within = jnp.mean(jnp.sum(resid * resid, axis=1))
  return between / jnp.maximum(within, floor)


def oracle(features, labels) -> float:
  """The same ratio in float64 NumPy, written from the formula."""
  f = np.asarray(features, np.float64)
  y = np.asarray(labels)
  mu = f.mean(axis=0)
  classes = np.unique(y)
  means = {c: f[y == c].mean(axis=0) for c in classes}
  between = np.mean([np.sum((means[c] - mu) ** 2) for c in classes])
  within = np.mean([np.sum((f[i] - means[y[i]]) ** 2) for i in range(len(y))])
  return float(between / within)


def register():
  """The one registration (the test removes it again)."""
  return registry.register_metric(
      NAME, centroid_spread, vmappable=True, zero_pad_exact=True,
      description="toy: Fisher ratio of the class centroids (tests only)")
