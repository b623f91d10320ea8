"""Float64 NumPy oracle for NCTI (Wang et al., ICCV 2023), written from the formulas.

Loops and plain NumPy only (no JAX, no scikit-learn). The LDA steps are written in their
generalised-eigenproblem form (``Sb v = lambda Sw v``, ``v^T Sw v = 1``), not as the SVD steps
scikit-learn's ``solver='svd'`` takes, so that agreement with the public numbers also checks that
the two forms are the same quantity.
"""

from __future__ import annotations

import numpy as np


def pca(x, k):
  """The first ``k`` principal components of ``x`` and the sample variances along them."""
  n = x.shape[0]
  xc = x - x.mean(axis=0)
  _, s, vt = np.linalg.svd(xc, full_matrices=False)
  return xc @ vt[:k].T, (s ** 2 / (n - 1))[:k]


def _generalised_top(sb, sw, r):
  """Eigenvectors of ``sb v = lambda sw v`` with the ``r`` largest ``lambda``, ``v^T sw v = 1``."""
  l = np.linalg.cholesky(sw)
  li = np.linalg.inv(l)
  a = li @ sb @ li.T
  lam, q = np.linalg.eigh(0.5 * (a + a.T))
  order = np.argsort(lam)[::-1][:r]
  return li.T @ q[:, order]


def terms(x, y, *, pca_dim=64, variance_dim=32):
  """``(seli, ncc, vc)`` of one candidate.

  PCA to ``k = min(pca_dim, n, d)`` components; shrinkage ``s = max(exp(-sum of the first
  variance_dim PCA variances), 1e-10)``. If ``s == 1e-10``: LDA with the unbiased pooled
  within-class covariance ``Sw = sum_c sum_{i in c} (z_i - m_c)(z_i - m_c)^T / (n - C)`` and no
  shrinkage; else
  the biased ``Sw = sum_c ... / n`` and total ``St`` shrunk to ``(1 - s) S + s tr(S)/k I``, and
  ``Sb = St - Sw``. The LDA features are ``z V`` with ``V`` the top ``min(C - 1, k)`` generalised
  eigenvectors of ``(Sb, Sw)``; the posteriors are ``p(c | z) ~ pi_c N(z; m_c, Sw)``.

      seli = || centred z V ||_*,  ncc = mean_i p(y_i | z_i),  vc = log sum_c || P_c ||_*.
  """
  x = np.asarray(x, np.float64)
  classes, y = np.unique(np.asarray(y), return_inverse=True)
  n, d = x.shape
  c = len(classes)
  k = min(pca_dim, n, d)
  z, var = pca(x, k)
  shrink = max(np.exp(-var[:variance_dim].sum()), 1e-10)
  counts = np.array([np.sum(y == j) for j in range(c)], np.float64)
  priors = counts / n
  means = np.stack([z[y == j].mean(axis=0) for j in range(c)])
  scatter_w = np.zeros((k, k))
  for j in range(c):
    r = z[y == j] - means[j]
    scatter_w += r.T @ r
  zc = z - z.mean(axis=0)
  scatter_t = zc.T @ zc
  if shrink == 1e-10:
    sw = scatter_w / (n - c)
    sb = scatter_t / n - scatter_w / n
  else:
    w, t = scatter_w / n, scatter_t / n
    sw = (1 - shrink) * w + shrink * np.trace(w) / k * np.eye(k)
    st = (1 - shrink) * t + shrink * np.trace(t) / k * np.eye(k)
    sb = st - sw
  v = _generalised_top(sb, sw, min(c - 1, k))
  low = zc @ v
  low = low - low.mean(axis=0)
  seli = np.linalg.svd(low, compute_uv=False).sum()
  sw_inv = np.linalg.inv(sw)
  logits = np.zeros((n, c))
  for i in range(n):
    for j in range(c):
      diff = z[i] - means[j]
      logits[i, j] = np.log(priors[j]) - 0.5 * diff @ sw_inv @ diff
  logits -= logits.max(axis=1, keepdims=True)
  prob = np.exp(logits)
  prob /= prob.sum(axis=1, keepdims=True)
  ncc = np.mean([prob[i, y[i]] for i in range(n)])
  nuc = sum(np.linalg.svd(prob[y == j], compute_uv=False).sum() for j in range(c))
  return float(seli), float(ncc), float(np.log(nuc))


def single(x, y, **kw):
  """The un-normalised single-candidate value ``seli + ncc - vc``."""
  seli, ncc, vc = terms(x, y, **kw)
  return seli + ncc - vc


def combined(features_list, y, **kw):
  """The published model-set score: each term min-max normalised over the candidates,
  ``ncc' + seli' - vc'`` (a term equal on every candidate contributes 0)."""
  t = np.array([terms(x, y, **kw) for x in features_list])  # [m, 3]: seli, ncc, vc
  span = t.max(axis=0) - t.min(axis=0)
  norm = np.where(span > 0, (t - t.min(axis=0)) / np.where(span > 0, span, 1.0), 0.0)
  return norm[:, 1] + norm[:, 0] - norm[:, 2]
