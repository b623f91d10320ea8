"""Float64 NumPy oracle for LFC (label-feature correlation).

Follows the published formula with explicit ``n x n`` kernels, independently of the JAX code. Its
test inputs are ``FEATURE_CASES`` in ``tests/cases_peers.py``.
"""

from __future__ import annotations

import numpy as np


def lfc(x, labels):
  """Centred kernel alignment of X X^T and the +-1 label kernel, with n x n matrices."""
  x = np.asarray(x, np.float64)
  n = x.shape[0]
  h = np.eye(n) - 1.0 / n
  k = h @ (x @ x.T) @ h
  lab = np.where(labels[:, None] == labels[None, :], 1.0, -1.0)
  lab = h @ lab @ h
  return float(np.sum(k * lab) / (np.linalg.norm(k) * np.linalg.norm(lab)))
