"""Benchmark cases for LogME, H-score and regularized H-score (read by bench_metrics.py).

Each case: ``ours(features, labels)`` runs the library (JAX, input dtype), ``naive(features_np,
labels_np)`` is a plain NumPy float64 version written here the way the public reference code
computes it (thuml/LogME ``LogME.fit``: truncated SVD then a Python loop over classes with a
per-class fixed point; tllib ``h_score`` / ``regularized_h_score``: ``np.cov`` of the features
and of the class-mean matrix, ``np.linalg.pinv``, sklearn's Ledoit-Wolf). ``rtol`` is the
agreement required between the two before timing. ``floor`` lists the products and
factorisations an exact method must do (timed by benchmarks/_cases_floor.py).
"""

from __future__ import annotations

import numpy as np

from _cases_floor import centred, spd
import transrate_jax._src.hscore as _hscore
import transrate_jax._src.logme as _logme


def naive_logme(features, labels):
  """thuml/LogME-style LogME: SVD of F^T F, then an 11-step fixed point per class in a loop."""
  f = np.asarray(features, np.float64)
  n, d = f.shape
  if n > d:
    _, s2, vh = np.linalg.svd(f.T @ f)
    s = np.sqrt(s2)
    k = int(np.sum(s > 1e-10))
    u = (f @ vh.T)[:, :k] / s[:k]
    sigma = s2[:k]
  else:
    u, s, _ = np.linalg.svd(f, full_matrices=False)
    sigma = s ** 2
  evidences = []
  for c in range(int(labels.max()) + 1):
    y = (labels == c).astype(np.float64)
    x2 = (u.T @ y) ** 2
    res_x2 = y @ y - x2.sum()
    alpha, beta = 1.0, 1.0
    for _ in range(11):
      t = alpha / beta
      gamma = np.sum(sigma / (sigma + t))
      m2 = np.sum(sigma * x2 / (t + sigma) ** 2)
      res2 = np.sum(x2 / (1 + sigma / t) ** 2) + res_x2
      alpha, beta = gamma / (m2 + 1e-5), (n - gamma) / (res2 + 1e-5)
      if abs(alpha / beta - t) / t <= 1e-3:
        break
    evidence = (d / 2 * np.log(alpha) + n / 2 * np.log(beta)
                - 0.5 * np.sum(np.log(alpha + beta * sigma))
                - beta / 2 * res2 - alpha / 2 * m2 - n / 2 * np.log(2 * np.pi))
    evidences.append(evidence / n)
  return float(np.mean(evidences))


def _class_mean_matrix(f, labels):
  g = np.zeros_like(f)
  for c in range(int(labels.max()) + 1):
    g[labels == c] = f[labels == c].mean(axis=0)
  return g


def naive_hscore(features, labels):
  """tllib-style H-score: np.cov of f and of E[f|y], pinv, trace of the product."""
  f = np.asarray(features, np.float64)
  covf = np.cov(f, rowvar=False)
  covg = np.cov(_class_mean_matrix(f, labels), rowvar=False)
  return float(np.trace(np.dot(np.linalg.pinv(covf, rcond=1e-15), covg)))


def naive_regularized_hscore(features, labels):
  """tllib-style regularized H-score (sklearn LedoitWolf), rescaled by (n-1)/n to our convention."""
  from sklearn.covariance import LedoitWolf  # pylint: disable=g-import-not-at-top
  f = np.asarray(features, np.float64)
  n = f.shape[0]
  f = f - f.mean(axis=0, keepdims=True)
  lw = LedoitWolf(assume_centered=False).fit(f)
  covg = np.cov(_class_mean_matrix(f, labels), rowvar=False)
  score = np.trace(np.dot(np.linalg.pinv(lw.covariance_, rcond=1e-15), (1 - lw.shrinkage_) * covg))
  return float(score) * (n - 1) / n


def _spectral_floor(z, labels):
  """Z^T Z (or Z Z^T) of ``z``, its eigenvalues, the class sums and their coordinates in its
  eigenbasis: LogME's evidence and H-score's pseudo-inverse both need the eigenvectors only to
  project the labels (``V^T Z^T Y`` [d, C], or ``U^T Y`` [n, C] on the Gram side)."""
  n, d = z.shape
  c = int(labels.max()) + 1
  s = z.T @ z if n >= d else z @ z.T
  onehot = np.eye(c, dtype=z.dtype)[labels]
  if n >= d:
    return [("gram", [(z,)]), ("class_sums", [(z, labels, c)]),
            ("eigh_project", [(s, (onehot.T @ z).T.copy())])]
  return [("gram", [(z,)]), ("eigh_project", [(s, onehot)])]


def _floor_logme(features, labels):
  return _spectral_floor(np.asarray(features, np.float32), labels)  # no centring: no intercept


def _floor_hscore(features, labels):
  return _spectral_floor(centred(features), labels)


def _floor_regularized_hscore(features, labels):
  """S_a = (1 - a) S + a tr(S)/d I is positive definite (a > 0): one Cholesky and one triangular
  solve with the [d, C] class sums give tr(S_a^{-1} B) = |L^{-1} M^T|_F^2."""
  z = centred(features)
  n, d = z.shape
  if n < d:
    return _spectral_floor(z, labels)
  c = int(labels.max()) + 1
  s = z.T @ z
  chol = np.linalg.cholesky(spd(s))
  sums = np.eye(c, dtype=z.dtype)[labels].T @ z
  return [("gram", [(z,)]), ("class_sums", [(z, labels, c)]), ("cholesky", [(spd(s),)]),
          ("trsm", [(chol, sums.T.copy())])]


CASES = [
    {
        "metric": "LogME",
        "paper": "You et al., ICML 2021 / JMLR 2022",
        "function": "transrate_jax.logme",
        "ours": lambda f, y: _logme.logme(f, y),
        "naive": naive_logme,
        "rtol": 1e-4,
        "floor": _floor_logme,
        "floor_what": "F^T F, its eigenvalues and V^T F^T Y",
    },
    {
        "metric": "H-score",
        "paper": "Bao et al., ICIP 2019",
        "function": "transrate_jax.hscore",
        "ours": lambda f, y: _hscore.hscore(f, y),
        "naive": naive_hscore,
        "rtol": 1e-3,
        "floor": _floor_hscore,
        "floor_what": "Z^T Z, its eigenvalues (the pseudo-inverse) and V^T of the class sums",
    },
    {
        "metric": "Regularized H-score",
        "paper": "Ibrahim et al., ECML-PKDD 2022",
        "function": "transrate_jax.regularized_hscore",
        "ours": lambda f, y: _hscore.regularized_hscore(f, y),
        "naive": naive_regularized_hscore,
        "rtol": 1e-3,
        "floor": _floor_regularized_hscore,
        "floor_what": "Z^T Z, Cholesky of the shrunk S, one [d, d] x [d, C] triangular solve",
    },
]
