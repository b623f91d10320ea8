"""Label-Feature Correlation (LFC).

Deshpande, Achille, Ravichandran, Li, Zancato, Fowlkes, Bhotika, Soatto and Perona, "A linearized
framework and a new benchmark for model selection for fine-tuning", arXiv:2102.00084, 2021.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from transrate_jax._src import numerics
from transrate_jax._src import peer_numerics
from transrate_jax._src import registry
from transrate_jax._src import validation

HIGHEST = numerics.HIGHEST


@functools.partial(jax.jit, static_argnames=("num_classes",))
def _lfc_kernel(x, y, *, num_classes):
  n, d = x.shape
  xc, _ = peer_numerics.normalise(peer_numerics.centre(x))  # scale cancels in the ratio
  counts = jax.ops.segment_sum(jnp.ones((n,), x.dtype), y, num_segments=num_classes)
  class_sums = jax.ops.segment_sum(xc, y, num_segments=num_classes)  # [C, d] = E^T X_c
  numerator = jnp.sum(class_sums * class_sums)
  side = numerics.covariance(xc) if n >= d else numerics.gram(xc)  # same Frobenius norm
  feature_norm = jnp.sqrt(jnp.sum(side * side))
  # ||E_c^T E_c||_F with E_c^T E_c = diag(n_c) - n_c n_c^T / n, in O(C) and without
  # cancellation: n^2 [sum_c p_c^2 (1 - p_c)^2 + 2 sum_c p_c^2 sum_{c' < c} p_c'^2], p = n_c / n.
  p = counts / n
  a = p * p
  q = (n - counts) / n
  earlier = jnp.cumsum(a) - a
  label_norm = n * jnp.sqrt(jnp.sum(a * q * q) + 2.0 * jnp.sum(a * earlier))
  return numerator / (feature_norm * label_norm)


def lfc(features, labels, *, num_classes: int | None = None) -> jax.Array:
  """Label-Feature Correlation: centred kernel alignment of the feature and label kernels.

  Higher is better. With the linear kernel ``K = X X^T``, the label kernel ``L_ij = +1`` when
  ``y_i = y_j`` and ``-1`` otherwise, and ``H = I - 11^T / n``,

      LFC = <H K H, H L H>_F / (||H K H||_F ||H L H||_F)
          = ||X_c^T E||_F^2 / (||X_c^T X_c||_F ||E_c^T E_c||_F),

  where ``X_c = H X`` and ``E_c = H E`` (``E``: one-hot labels). The right-hand side is what is
  computed: a ``[d, d]`` (or ``[n, n]`` when ``n < d``) matrix and ``O(C)`` label sums, never
  ``n x n`` kernels. The value lies in ``[0, 1]``.

  Numerics: invariant to a common offset and to rescaling of the features, in float32 too (the
  features are centred with a shift and divided by a power of two near ``max |X_c|`` before any
  product, so ``||X_c^T X_c||_F`` cannot overflow at ``|X| ~ 1e9`` or underflow at ``1e-12``).

  Raises:
    ValueError: fewer than two classes present (the centred label kernel is 0) or constant
      features (the centred feature kernel is 0): LFC is 0/0 there. Under ``jit``/``vmap`` these
      cannot be checked and the value is NaN.

  Args:
    features: [n, d] float features.
    labels: [n] int class indices in ``0..C-1``.
    num_classes: static ``C``; needed under ``jit``/``vmap``, else ``max(labels) + 1``.

  Returns:
    Scalar LFC in the features' float dtype.

  Reference: Deshpande et al., "A linearized framework and a new benchmark for model selection
  for fine-tuning", 2021.
  """
  x = validation.check_features(features)
  y, c = validation.check_labels(labels, x.shape[0], num_classes=num_classes)
  validation.check_class_structure(labels, c, metric="LFC")
  validation.check_not_constant(x, metric="LFC")
  return _lfc_kernel(x, y, num_classes=c)


registry.register_metric(
    "lfc", lfc, differentiable=True, vmappable=True,
    description="LFC: agreement of the feature Gram matrix with the label Gram matrix "
                "(Deshpande et al., 2021)")
