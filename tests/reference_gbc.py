"""Float64 NumPy oracle for GBC (Gaussian Bhattacharyya coefficient).

Follows the published formula step by step (a loop over class pairs, exact PCA above ``pca_dim``),
independently of the JAX code. Its test inputs are ``FEATURE_CASES`` in ``tests/cases_peers.py``.
"""

from __future__ import annotations

import numpy as np

from reference_pca import pca_full


def gbc(x, labels, *, gaussian="spherical", pca_dim=64):
  """GBC from the formula, looping over class pairs (stable_transfer conventions)."""
  x = np.asarray(x, np.float64)
  if x.shape[1] > pca_dim:
    x = pca_full(x, pca_dim)
  classes = np.unique(labels)
  stats = {}
  for c in classes:
    xc = x[labels == c]
    var = np.maximum(xc.var(axis=0), 1e-4)
    stats[c] = (xc.mean(axis=0), np.array([var.mean()]) if gaussian == "spherical" else var)
  total = 0.0
  for c1 in classes:
    for c2 in classes:
      if c1 == c2:
        continue
      (m1, s1), (m2, s2) = stats[c1], stats[c2]
      s = (s1 + s2) / 2
      db = np.sum((m1 - m2) ** 2 / s) / 8 + 0.5 * (
          np.sum(np.log(s)) - 0.5 * np.sum(np.log(s1)) - 0.5 * np.sum(np.log(s2)))
      total += np.exp(-db)
  return float(-total)
