"""Float64 NumPy oracle for PARC (pairwise annotation representation comparison).

Follows the published steps (exact PCA, StandardScaler, ``np.corrcoef`` RDMs,
``scipy.stats.spearmanr``), independently of the JAX code. Its test inputs are ``feature_case`` in
``tests/cases_peers.py``.
"""

from __future__ import annotations

import numpy as np
import scipy.stats

from reference_pca import pca_full


def parc(x, labels, *, pca_dim=32):
  """PARC with exact PCA, StandardScaler, corrcoef RDMs and scipy's Spearman."""
  from sklearn.preprocessing import StandardScaler
  x = np.asarray(x, np.float64)
  k = min(pca_dim, x.shape[0], x.shape[1])
  z = StandardScaler().fit_transform(pca_full(x, k))
  c = int(labels.max()) + 1
  rdm1 = 1 - np.corrcoef(z)
  # 1 - corrcoef(one_hot rows), in exact arithmetic: 0 within a class, C/(C-1) across classes.
  rdm2 = np.where(labels[:, None] == labels[None, :], 0.0, c / (c - 1))
  iu = np.triu_indices(x.shape[0], 1)
  return float(scipy.stats.spearmanr(rdm1[iu], rdm2[iu])[0] * 100)
