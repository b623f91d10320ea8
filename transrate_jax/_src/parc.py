"""Pairwise Annotation Representation Comparison (PARC).

Bolya, Mittapalli and Hoffman, "Scalable Diverse Model Selection for Accessible Transfer
Learning", NeurIPS 2021. Reference code: dbolya/parc ``methods.py`` (class ``PARC``).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from transrate_jax._src import backend
from transrate_jax._src import numerics
from transrate_jax._src import peer_numerics
from transrate_jax._src import registry
from transrate_jax._src import validation

HIGHEST = numerics.HIGHEST


def _average_ranks_sorted(sorted_keys):
  """0-based average ranks (ties share the mean position) of an ascending array."""
  m = sorted_keys.shape[0]
  pos = jnp.arange(m, dtype=jnp.int32)
  new = jnp.concatenate([jnp.ones((1,), bool), sorted_keys[1:] != sorted_keys[:-1]])
  last = jnp.concatenate([sorted_keys[1:] != sorted_keys[:-1], jnp.ones((1,), bool)])
  start = jax.lax.cummax(jnp.where(new, pos, 0))
  end = jax.lax.cummin(jnp.where(last, pos, m), reverse=True)
  return start, end


def _spearman_device(corr, y, dtype):
  """Spearman of the upper triangle of ``-corr`` against "different labels", by one sort."""
  n = corr.shape[0]
  rows, cols = np.triu_indices(n, k=1)
  keys = -corr[rows, cols]
  different = (y[rows] != y[cols]).astype(jnp.int8)
  keys, different = jax.lax.sort((keys, different), num_keys=1)
  start, end = _average_ranks_sorted(keys)
  m = keys.shape[0]
  rank = (start.astype(dtype) + end.astype(dtype)) / (2.0 * m)
  b = different.astype(dtype)
  dr = rank - jnp.mean(rank)
  db = b - jnp.mean(b)
  return jnp.sum(dr * db) / jnp.sqrt(jnp.sum(dr * dr) * jnp.sum(db * db))


def _spearman_host(corr, y):
  """:func:`_spearman_device` in NumPy (float64 sums), without ranking every pair.

  With ``b`` the indicator of a same-label pair, Spearman(rank(k), different) = -Pearson(r, b)
  for the average ranks ``r`` of the keys ``k = -corr``: ``mean(r) = (m + 1) / 2`` whatever the
  ties, ``sum(r b)`` is the sum of the same-label pairs' average ranks (two binary searches each
  in the sorted keys) and ``var(r) = (m^2 - 1) / 12 - sum_ties (t^3 - t) / (12 m)`` (tie runs of
  the sorted keys).
  """
  corr = np.asarray(corr)
  y = np.asarray(y)
  n = corr.shape[0]
  keys = np.concatenate([-corr[i, i + 1:] for i in range(n - 1)])
  order = np.argsort(y, kind="stable")
  bounds = np.flatnonzero(np.diff(y[order])) + 1
  same = []
  for idx in np.split(order, bounds):  # the same-label pairs, class by class (i < j)
    idx = np.sort(idx)
    block = -corr[np.ix_(idx, idx)]
    same.append(block[np.triu_indices(len(idx), k=1)])
  same = np.concatenate(same)
  keys.sort()
  m, m_same = keys.shape[0], same.shape[0]
  left = np.searchsorted(keys, same, side="left").astype(np.float64)
  right = np.searchsorted(keys, same, side="right").astype(np.float64)
  rank_sum = float(np.sum((left + right + 1.0) / 2.0))  # 1-based average ranks
  edges = np.concatenate([[0], np.flatnonzero(keys[1:] != keys[:-1]) + 1, [m]])
  t = np.diff(edges).astype(np.float64)
  t = t[t > 1]
  var_r = (m * m - 1.0) / 12.0 - float(np.sum(t ** 3 - t)) / (12.0 * m)
  p = m_same / m
  cov = rank_sum / m - (m + 1.0) / 2.0 * p
  with np.errstate(invalid="ignore", divide="ignore"):
    return np.asarray(-cov / np.sqrt(var_r * p * (1.0 - p)), corr.dtype)


@functools.partial(jax.jit, static_argnames=("num_classes", "pca_dim"))
def _parc_kernel(x, y, *, num_classes, pca_dim):
  n, d = x.shape
  del num_classes  # the label RDM only depends on whether two labels are equal
  # PARC is invariant to offset and scale (standardised components): centre with a shift and
  # bring to unit size first, exactly (power of two), so the scatter cannot overflow.
  x, _ = peer_numerics.normalise(peer_numerics.centre(x))
  z = peer_numerics.pca_project(x, pca_dim)
  # StandardScaler (zero-variance columns keep scale 1).
  z = z - jnp.mean(z, axis=0)
  std = jnp.sqrt(jnp.mean(z * z, axis=0))
  z = z / jnp.where(std > 0, std, 1.0)
  # Row-wise Pearson correlation: rdm = 1 - corr.
  z = z - jnp.mean(z, axis=1, keepdims=True)
  norm = jnp.linalg.norm(z, axis=1, keepdims=True)
  z = z / jnp.where(norm > 0, norm, 1.0)  # a row at the mean correlates 0 with every row
  corr = numerics.gram(z)  # [n, n]
  if backend.policy().host_ranks and backend.host_callback(x.dtype):
    # XLA's CPU sort is ~50x slower than NumPy's: rank on the host (same ranks, ties averaged).
    spearman = jax.pure_callback(_spearman_host, jax.ShapeDtypeStruct((), x.dtype), corr, y,
                                 vmap_method="sequential")
  else:
    spearman = _spearman_device(corr, y, x.dtype)
  return 100.0 * spearman


def parc(features, labels, *, pca_dim: int = 32, num_classes: int | None = None) -> jax.Array:
  """PARC: Spearman correlation of feature and label dissimilarity matrices, times 100.

  Higher is better. A port of the reference ``PARC.forward`` / ``get_parc_correlation``:

  1. PCA to ``k = min(pca_dim, n, d)`` components (the reference uses a randomised PCA with one
     power iteration, an approximation of the exact PCA used here; scikit-learn >= 1.5 signs).
  2. Standardise each component (``StandardScaler``).
  3. ``RDM_f = 1 - corrcoef(rows)``, ``RDM_y = 1 - corrcoef(one_hot(labels))``; the latter is
     0 for pairs of the same class and ``C / (C - 1)`` otherwise.
  4. ``PARC = 100 * spearman(upper triangle of RDM_f, upper triangle of RDM_y)``, with average
     ranks for ties, as ``scipy.stats.spearmanr``.

  Forms ``n x n`` matrices and sorts ``n (n - 1)`` values: memory grows as ``n^2``.

  Args:
    features: [n, d] float features.
    labels: [n] int class indices in ``0..C-1`` (at least two classes present).
    pca_dim: number of principal components (32 in the reference; static).
    num_classes: static ``C``; needed under ``jit``/``vmap``, else ``max(labels) + 1``.

  Returns:
    Scalar PARC in ``[-100, 100]``.

  Raises:
    ValueError: fewer than two classes present or every class a single sample (the label RDM
      is constant), constant features, or fewer than two principal components (``min(pca_dim,
      n, d) < 2``: a one-component row has no correlation). Under ``jit``/``vmap`` the label
      and feature checks cannot run and the value is NaN.

  Offset and scale invariant (the components are standardised), in float32 too.

  Reference: Bolya et al., NeurIPS 2021.
  """
  features = registry.no_derivative(features, "parc")
  validation.check_positive_int(pca_dim, "pca_dim")
  x = validation.check_features(features)
  y, c = validation.check_labels(labels, x.shape[0], num_classes=num_classes)
  n, d = x.shape
  k = min(int(pca_dim), n, d)
  if k < 2:
    raise ValueError(
        f"PARC needs at least 2 principal components (min(pca_dim, n, d) = {k}): the row-wise "
        "correlation of a single component is undefined.")
  validation.check_class_structure(labels, c, metric="PARC", singletons_ok=False)
  validation.check_not_constant(x, metric="PARC")
  return _parc_kernel(x, y, num_classes=c, pca_dim=k)


registry.register_metric(
    "parc", parc, vmappable=True,
    description="PARC: Spearman correlation of the feature and label distance matrices "
                "(Bolya et al., NeurIPS 2021)")
