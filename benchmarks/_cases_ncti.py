"""Benchmark case for NCTI (used by bench_metrics.py).

``ours(features, labels)``: ``transrate_jax.ncti`` of one candidate, ``seli + ncc - vc``.
``naive(features_np, labels_np)``: NumPy / SciPy / scikit-learn written the way the public code
(``BUserName/NCTI`` ``metrics.py`` ``NCTI_Score``) computes the same three terms:
``sklearn.decomposition.PCA(n_components=64)`` with its default solver (randomised at this size;
``random_state=0`` here so that runs repeat), the shrinkage ``max(exp(-sum of the top-32
variances), 1e-10)``, then scikit-learn's ``LinearDiscriminantAnalysis`` steps as of the
scikit-learn the paper ran (< 1.9: ``solver='svd'`` scales the within-class data by
``1 / (n - C)``), written out with ``scipy.linalg.svd`` / ``scipy.linalg.eigh`` as scikit-learn
does: ``fit_transform``, ``predict_proba``, the nuclear norm of the centred projection and of each
class's ``[n_c, C]`` posterior rows by ``np.linalg.norm(..., 'nuc')``.

Ours takes the exact top-64 principal components (the published randomised PCA approximates
them), so the two values agree only to the accuracy of the randomised PCA: ``rtol = 1e-2``.
"""

from __future__ import annotations

import numpy as np
import scipy.linalg
import scipy.special
from sklearn.decomposition import PCA

from transrate_jax._src.ncti import ncti

_TOL = 1e-4  # LinearDiscriminantAnalysis(tol=1e-4)


def _lda_svd(x, y, classes, priors):  # LinearDiscriminantAnalysis._solve_svd (scikit-learn < 1.9)
  n, c = x.shape[0], len(classes)
  means = np.stack([x[y == g].mean(axis=0) for g in classes])
  xc = np.concatenate([x[y == g] - means[i] for i, g in enumerate(classes)], axis=0)
  xbar = priors @ means
  std = xc.std(axis=0)
  std[std == 0] = 1.0
  _, s, vt = scipy.linalg.svd(np.sqrt(1.0 / (n - c)) * (xc / std), full_matrices=False)
  rank = np.sum(s > _TOL)
  scalings = (vt[:rank] / std).T / s[:rank]
  between = (np.sqrt(n * priors / (c - 1)) * (means - xbar).T).T @ scalings
  _, s, vt = scipy.linalg.svd(between, full_matrices=False)
  rank = np.sum(s > _TOL * s[0])
  scalings = scalings @ vt.T[:, :rank]
  coef = (means - xbar) @ scalings
  intercept = -0.5 * np.sum(coef ** 2, axis=1) + np.log(priors)
  coef_ = coef @ scalings.T
  intercept -= xbar @ coef_.T
  low = ((x - xbar) @ scalings)[:, :min(c - 1, x.shape[1])]
  return low, x @ coef_.T + intercept


def _shrunk_cov(x, shrinkage):  # shrunk_covariance(empirical_covariance(x), shrinkage)
  emp = np.cov(x.T, bias=1)
  d = emp.shape[0]
  out = (1.0 - shrinkage) * emp
  out.flat[::d + 1] += shrinkage * np.trace(emp) / d
  return out


def _lda_eigen(x, y, classes, priors, shrinkage):  # LinearDiscriminantAnalysis._solve_eigen
  means = np.stack([x[y == g].mean(axis=0) for g in classes])
  sw = sum(p * _shrunk_cov(x[y == g], shrinkage) for p, g in zip(priors, classes))
  sb = _shrunk_cov(x, shrinkage) - sw
  evals, evecs = scipy.linalg.eigh(sb, sw)
  evecs = evecs[:, np.argsort(evals)[::-1]]
  coef = means @ evecs @ evecs.T
  intercept = -0.5 * np.diag(means @ coef.T) + np.log(priors)
  low = (x @ evecs)[:, :min(len(classes) - 1, x.shape[1])]
  return low, x @ coef.T + intercept


def _naive_ncti(features, labels):
  y = np.asarray(labels)
  pca = PCA(n_components=64, random_state=0)
  x = pca.fit_transform(features, y)
  temp = max(np.exp(-pca.explained_variance_[:32].sum()), 1e-10)
  classes = np.unique(y)
  priors = np.bincount(np.unique(y, return_inverse=True)[1]) / float(len(y))
  if temp == 1e-10:
    low, decision = _lda_svd(x, y, classes, priors)
  else:
    low, decision = _lda_eigen(x, y, classes, priors, float(temp))
  if len(classes) == 2:
    p1 = scipy.special.expit(decision[:, 1] - decision[:, 0])
    prob = np.stack([1 - p1, p1], axis=1)
  else:
    prob = scipy.special.softmax(decision, axis=1)
  low = low - low.mean(axis=0, keepdims=True)
  seli = np.linalg.norm(low, ord="nuc")
  ncc = np.sum(prob[np.arange(x.shape[0]), y]) / x.shape[0]
  nuc = sum(np.linalg.norm(prob[y == c], ord="nuc") for c in range(len(classes)))
  return float(seli + ncc - np.log(nuc))


def _floor_ncti(features, labels):
  """The exact top-64 PCA (Z^T Z, top-64 eigh, projection) and the nuclear norms of the C
  per-class [n_c, C] posterior blocks (singular values); the LDA in 64 dimensions is not counted."""
  from _cases_peers_b import _pca_floor  # pylint: disable=g-import-not-at-top
  stages, _ = _pca_floor(features, k=min(64, *features.shape))
  c = int(labels.max()) + 1
  rng = np.random.default_rng(0)
  blocks = [rng.dirichlet(np.ones(c), size=int(np.sum(labels == k))).astype(np.float32)
            for k in range(c) if np.any(labels == k)]
  return stages + [("svdvals", [(b,) for b in blocks])]


CASES = [
    # Randomised PCA in the public code: agreement is only approximate.
    {"metric": "NCTI", "paper": "Wang et al., ICCV 2023", "function": "transrate_jax.ncti",
     "ours": ncti, "naive": _naive_ncti, "rtol": 1e-2,
     "floor": _floor_ncti,
     "floor_what": "Z^T Z, top-64 eigh, projection, C per-class [n_c, C] singular values"},
]
