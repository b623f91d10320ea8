"""Label-Feature Correlation (LFC).

Deshpande, Achille, Ravichandran, Li, Zancato, Fowlkes, Bhotika, Soatto and Perona, "A linearized
framework and a new benchmark for model selection for fine-tuning", arXiv:2102.00084, 2021.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from transrate_jax._src import numerics
from transrate_jax._src import validation

HIGHEST = numerics.HIGHEST


@functools.partial(jax.jit, static_argnames=("num_classes",))
def _lfc_kernel(x, y, *, num_classes):
  n, d = x.shape
  xc = x - jnp.mean(x, axis=0)
  onehot = jax.nn.one_hot(y, num_classes, dtype=x.dtype)
  counts = jnp.sum(onehot, axis=0)
  class_sums = jnp.matmul(onehot.T, xc, precision=HIGHEST)  # [C, d] = E^T X_c
  numerator = jnp.sum(class_sums * class_sums)
  side = numerics.covariance(xc) if n >= d else numerics.gram(xc)  # same Frobenius norm
  feature_norm = jnp.sqrt(jnp.sum(side * side))
  label_side = jnp.diag(counts) - jnp.outer(counts, counts) / n  # E_c^T E_c: [C, C]
  label_norm = jnp.sqrt(jnp.sum(label_side * label_side))
  return numerator / (feature_norm * label_norm)


def lfc(features, labels, *, num_classes: int | None = None) -> jax.Array:
  """Label-Feature Correlation: centred kernel alignment of the feature and label kernels.

  Higher is better. With the linear kernel ``K = X X^T``, the label kernel ``L_ij = +1`` when
  ``y_i = y_j`` and ``-1`` otherwise, and ``H = I - 11^T / n``,

      LFC = <H K H, H L H>_F / (||H K H||_F ||H L H||_F)
          = ||X_c^T E||_F^2 / (||X_c^T X_c||_F ||E_c^T E_c||_F),

  where ``X_c = H X`` and ``E_c = H E`` (``E``: one-hot labels). The right-hand side is what is
  computed: ``[d, d]`` (or ``[n, n]`` when ``n < d``) and ``[C, C]`` matrices, never ``n x n``
  kernels. The value lies in ``[0, 1]``; it is undefined (NaN) when all labels are equal or the
  features are constant.

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
  return _lfc_kernel(x, y, num_classes=c)
