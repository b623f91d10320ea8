"""Float64 NumPy oracles for the H-score and the regularized (Ledoit-Wolf shrunk) H-score.

Written from the papers' formulas (see each function's docstring), deliberately by a different route
than the library: the covariance matrices are formed with ``np.cov`` and inverted with
``np.linalg.pinv``. Their test inputs are ``CASES`` in ``tests/cases_peers.py``.
"""

from __future__ import annotations

import numpy as np


def _class_mean_matrix(f, labels):
  """g [n, d]: each row replaced by its class mean (E[f | y])."""
  g = np.zeros_like(f)
  for c in np.unique(labels):
    g[labels == c] = f[labels == c].mean(axis=0)
  return g


def _pinv(a):
  """Pseudo-inverse dropping singular values below ``10 * dim * eps * s_max`` (jnp's default)."""
  return np.linalg.pinv(a, rcond=10 * a.shape[0] * np.finfo(np.float64).eps)


def hscore(features, labels):
  """``tr(pinv(cov(f)) cov(E[f|y]))`` with ``np.cov`` (n - 1 normalisation)."""
  f = np.asarray(features, np.float64)
  labels = np.asarray(labels)
  cov_f = np.atleast_2d(np.cov(f, rowvar=False))
  cov_g = np.atleast_2d(np.cov(_class_mean_matrix(f, labels), rowvar=False))
  return float(np.trace(_pinv(cov_f) @ cov_g))


def ledoit_wolf_shrinkage(features):
  """Ledoit-Wolf shrinkage written from the closed form (sklearn's non-blocked formula)."""
  x = np.asarray(features, np.float64)
  n, d = x.shape
  if d == 1:
    return 0.0
  x = x - x.mean(axis=0)
  emp_cov = x.T @ x / n
  mu = np.trace(emp_cov) / d
  delta = np.sum((emp_cov - mu * np.eye(d)) ** 2) / d
  x2 = x ** 2
  beta = (np.sum(x2.T @ x2) / n - np.sum(emp_cov ** 2)) / (d * n)
  beta = min(beta, delta)
  return 0.0 if beta == 0 else float(beta / delta)


def regularized_hscore(features, labels):
  """``tr(pinv(S_a) (1 - a) cov(E[f|y]))``, ``S_a = (1-a) S + a tr(S)/d I``, S = np.cov."""
  f = np.asarray(features, np.float64)
  labels = np.asarray(labels)
  d = f.shape[1]
  a = ledoit_wolf_shrinkage(f)
  cov_f = np.atleast_2d(np.cov(f, rowvar=False))
  shrunk = (1 - a) * cov_f + a * np.trace(cov_f) / d * np.eye(d)
  cov_g = np.atleast_2d(np.cov(_class_mean_matrix(f, labels), rowvar=False))
  return float(np.trace(_pinv(shrunk) @ ((1 - a) * cov_g)))
