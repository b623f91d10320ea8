"""Float64 NumPy oracle for SFDA (self-challenging Fisher discriminant analysis).

Follows the published steps (scipy's generalised eigensolver), independently of the JAX code. Its
test inputs are ``feature_case`` in ``tests/cases_peers.py``.
"""

from __future__ import annotations

import numpy as np
import scipy.linalg


def _fisher_fit_predict(x, labels, shrinkage):
  classes = np.unique(labels)
  n, d = x.shape
  priors = np.array([np.mean(labels == c) for c in classes])
  means = np.stack([x[labels == c].mean(axis=0) for c in classes])
  sw = sum(p * np.cov(x[labels == c].T, bias=True) for p, c in zip(priors, classes))
  sw = np.atleast_2d(sw)
  if shrinkage is None:
    v = sw.sum(axis=1)  # three double steps of power iteration, as the reference
    for _ in range(3):
      u = sw @ v
      u /= np.linalg.norm(u)
      v = sw @ u
      v /= np.linalg.norm(v)
    shrinkage = max(np.exp(-5 * (v @ sw @ u)), 1e-10)
  st = (1 - shrinkage) * np.cov(x.T, bias=True) + shrinkage * np.trace(np.cov(x.T, bias=True)) / d * np.eye(d)
  sw_s = (1 - shrinkage) * sw + shrinkage * np.trace(sw) / d * np.eye(d)
  evals, evecs = scipy.linalg.eigh(st - sw_s, sw_s)
  evecs = evecs[:, np.argsort(evals)[::-1]]
  coef = means @ evecs @ evecs.T
  intercept = -0.5 * np.diag(means @ coef.T) + np.log(priors)
  scores = x @ coef.T + intercept
  scores -= scores.max(axis=1, keepdims=True)
  prob = np.exp(scores)
  return prob / prob.sum(axis=1, keepdims=True), shrinkage, means


def sfda(x, labels):
  """SFDA score following the published steps (labels must be 0..C-1, all present)."""
  x = np.array(x, np.float64)
  n = len(labels)
  c = len(np.unique(labels))
  prob, shrinkage, means = _fisher_fit_predict(x, labels, None)
  prob = np.exp(prob) / np.exp(prob).sum(axis=1, keepdims=True)
  outer = np.stack([(means.sum(axis=0) - means[k]) / (c - 1) for k in range(c)])
  for i in range(n):
    p = prob[i, labels[i]]
    x[i] = p * x[i] + (1 - p) * outer[labels[i]]
  prob, _, _ = _fisher_fit_predict(x, labels, shrinkage)
  return float(np.mean(prob[np.arange(n), labels]))
