"""Exact PCA (scikit-learn, ``svd_solver='full'``), used by the float64 GBC, PARC and N-LEEP oracles
and tests."""

from __future__ import annotations

import numpy as np


def pca_full(x, n_components):
  """scikit-learn's exact PCA (``svd_solver='full'``), fit_transform."""
  from sklearn.decomposition import PCA
  return PCA(n_components=n_components, svd_solver="full").fit_transform(np.asarray(x, np.float64))
