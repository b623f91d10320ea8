"""Float64 NumPy oracles for LogME, H-score and regularized H-score, and their test inputs.

Written from the papers' formulas (see each function's docstring), deliberately by a different route than the
library: LogME solves the D x D system ``(a I + b F^T F) m = b F^T y`` and takes ``slogdet`` per
column and per iteration (no shared eigendecomposition); H-scores form the covariance matrices with
``np.cov`` and invert with ``np.linalg.pinv``.

``CASES`` are deterministic inputs (only ``np.random.default_rng(seed)``): the numbers in
``tests/data/peers_a_reference.json`` were produced by the public reference code on exactly these
inputs (see ``tests/data/README.md``), so changing this file invalidates that JSON.
"""

from __future__ import annotations

import math

import numpy as np


# ----------------------------------------------------------------------------------------------
# Inputs.


def make_case(seed, counts, d, *, sep=1.0, zero_columns=0):
  """Class-structured features: offset + class mean + unit noise, labels in class order.

  Args:
    seed: seed of ``np.random.default_rng``.
    counts: samples per class.
    d: number of informative feature columns.
    sep: standard deviation of the class means.
    zero_columns: exactly-zero columns appended after shuffling the column order
      (dead units; makes ``F^T F`` singular with N > D).

  Returns:
    features [n, d + zero_columns] float64, labels [n] int64.
  """
  rng = np.random.default_rng(seed)
  counts = np.asarray(counts)
  labels = np.repeat(np.arange(len(counts)), counts)
  n = labels.shape[0]
  offset = 2.0 * rng.normal(size=(1, d))
  means = sep * rng.normal(size=(len(counts), d))
  features = offset + means[labels] + rng.normal(size=(n, d))
  if zero_columns:
    full = np.zeros((n, d + zero_columns))
    cols = np.sort(rng.permutation(d + zero_columns)[:d])
    full[:, cols] = features
    features = full
  perm = rng.permutation(n)
  return np.ascontiguousarray(features[perm]), labels[perm].astype(np.int64)


def make_regression(seed, n, d, k):
  """Features [n, d] and targets [n, k] = F W + noise (float64)."""
  rng = np.random.default_rng(seed)
  features = rng.normal(size=(n, d)) + 0.5
  weights = rng.normal(size=(d, k)) / math.sqrt(d)
  targets = features @ weights + 0.3 * rng.normal(size=(n, k))
  return features, targets


CASES = {
    "balanced": lambda: make_case(10, [50, 50, 50, 50], 16),
    "imbalanced": lambda: make_case(11, [150, 80, 40, 20, 10], 20),
    "n_lt_d": lambda: make_case(12, [14, 13, 13], 100),
    "many_classes": lambda: make_case(13, [30] * 20, 32, sep=0.5),
    "two_classes": lambda: make_case(14, [90, 60], 12),
    "dead_units": lambda: make_case(15, [50, 50, 50, 50], 14, zero_columns=10),
}

REGRESSION_CASES = {
    "reg_one": lambda: make_regression(20, 150, 12, 1),
    "reg_three": lambda: make_regression(21, 200, 24, 3),
    "reg_n_lt_d": lambda: make_regression(22, 30, 60, 2),
}


# ----------------------------------------------------------------------------------------------
# LogME.


def _columns(labels_or_targets, regression):
  if regression:
    y = np.asarray(labels_or_targets, np.float64)
    return y.reshape(y.shape[0], -1)
  labels = np.asarray(labels_or_targets)
  return (labels[:, None] == np.arange(labels.max() + 1)[None, :]).astype(np.float64)


def logme_column(f, y, *, variant="exact", max_iter=None, tol=None):
  """Evidence / N of one target column ``y`` ([N]) for features ``f`` ([N, D]).

  variant:
    "exact": iterate ``gamma = D - a tr(A^{-1})``, ``a = gamma/|m|^2``, ``b = (N-gamma)/|y-Fm|^2``
      until the relative change of a/b is <= 1e-13, evidence at the final (a, b) with
      ``slogdet(A)`` over all D dimensions.
    "thuml": thuml/LogME fixed point: <= 11 iterations, stop when rel. change <= 1e-3, 1e-5 added
      to |m|^2 and |y - Fm|^2 in the updates, |m|^2, |y - Fm|^2 of the last update in the evidence,
      logdet over the min(N, D) singular directions only (those with singular value > 1e-10 when
      N > D), i.e. ``slogdet(A) - (D - k) log a``.
    "tllib": the ICML iteration: <= 11 iterations, stop when rel. change < 1e-2, no stabiliser,
      stale |m|^2, |y - Fm|^2, logdet over all D.

  Returns:
    (evidence / N, alpha, beta, iterations).
  """
  n, d = f.shape
  ftf = f.T @ f
  fty = f.T @ y
  eye = np.eye(d)
  if variant == "exact":
    max_iter, tol, strict, stab = max_iter or 10000, 1e-13 if tol is None else tol, False, 0.0
  elif variant == "thuml":
    max_iter, tol, strict, stab = 11, 1e-3, False, 1e-5
  elif variant == "tllib":
    max_iter, tol, strict, stab = 11, 1e-2, True, 0.0
  else:
    raise ValueError(variant)
  alpha, beta = 1.0, 1.0
  it = 0
  for it in range(1, max_iter + 1):
    a_mat = alpha * eye + beta * ftf
    a_inv = np.linalg.inv(a_mat)
    m = beta * a_inv @ fty
    gamma = d - alpha * np.trace(a_inv)
    m2 = float(m @ m)
    res2 = float(np.sum((y - f @ m) ** 2))
    t = alpha / beta
    alpha, beta = gamma / (m2 + stab), (n - gamma) / (res2 + stab)
    rel = abs(alpha / beta - t) / t
    if (rel < tol) if strict else (rel <= tol):
      break
  if variant == "exact":
    a_mat = alpha * eye + beta * ftf
    m = beta * np.linalg.solve(a_mat, fty)
    m2 = float(m @ m)
    res2 = float(np.sum((y - f @ m) ** 2))
  logdet = np.linalg.slogdet(alpha * eye + beta * ftf)[1]
  if variant == "thuml":
    if n <= d:
      k = n
    else:
      k = int(np.sum(np.sqrt(np.clip(np.linalg.eigvalsh(ftf), 0, None)) > 1e-10))
    logdet -= (d - k) * math.log(alpha)
  evidence = (d / 2 * math.log(alpha) + n / 2 * math.log(beta) - 0.5 * logdet - beta / 2 * res2
              - alpha / 2 * m2 - n / 2 * math.log(2 * math.pi))
  return evidence / n, alpha, beta, it


def logme_profile(f, y, t):
  """Evidence / N at t = a / b with the best b = N / E(t), by slogdet and solve.

  ``E(t) = |y - F m|^2 + t |m|^2`` with ``m = (t I + F^T F)^{-1} F^T y``;
  ``L(t) / N = -logdet(I + F^T F / t) / (2N) + 1/2 log(N / E) - 1/2 - 1/2 log 2pi``.
  When N < D the N x N forms are used (``logdet(I_N + F F^T / t)`` and, by Woodbury,
  ``E = t y^T (t I_N + F F^T)^{-1} y``): the D x D ones lose accuracy for small t.
  """
  n, d = f.shape
  if n < d:
    g = f @ f.T
    logdet = np.linalg.slogdet(np.eye(n) + g / t)[1]
    energy = float(t * y @ np.linalg.solve(t * np.eye(n) + g, y))
  else:
    a_mat = t * np.eye(d) + f.T @ f
    m = np.linalg.solve(a_mat, f.T @ y)
    energy = float(np.sum((y - f @ m) ** 2) + t * m @ m)
    logdet = np.linalg.slogdet(np.eye(d) + f.T @ f / t)[1]
  return -logdet / (2 * n) + 0.5 * math.log(n / energy) - 0.5 - 0.5 * math.log(2 * math.pi)


def logme_exact_column(f, y):
  """Supremum over (a, b) of the evidence / N.

  The largest of: the profile :func:`logme_profile` at the end of the textbook fixed point
  (:func:`logme_column`, D x D inverses, up to 60 iterations), and the limits
  t -> inf (``1/2 log(N/|y|^2) - 1/2 - 1/2 log 2pi``) and, when N < D and ``F F^T`` is
  non-singular, t -> 0 (``-logdet(F F^T)/(2N) - 1/2 log(y^T (F F^T)^{-1} y / N)
  - 1/2 - 1/2 log 2pi``, by slogdet and solve of the N x N Gram matrix), where the fixed point
  runs off to the boundary.
  """
  n, d = f.shape
  _, alpha, beta, _ = logme_column(f, y, variant="exact", max_iter=60)
  best = logme_profile(f, y, alpha / beta)
  const = -0.5 - 0.5 * math.log(2 * math.pi)
  best = max(best, 0.5 * math.log(n / float(y @ y)) + const)
  if n < d:
    g = f @ f.T
    sign, logdet = np.linalg.slogdet(g)
    if sign > 0 and np.linalg.cond(g) < 1e12:
      best = max(best, -logdet / (2 * n) - 0.5 * math.log(float(y @ np.linalg.solve(g, y)) / n)
                 + const)
  return best


def logme(features, targets, *, regression=False, variant="exact"):
  """Mean over target columns of the evidence / N (classes with no sample are skipped).

  ``variant="exact"`` uses :func:`logme_exact_column`, the others :func:`logme_column`.
  """
  f = np.asarray(features, np.float64)
  y = _columns(targets, regression)
  cols = [y[:, j] for j in range(y.shape[1]) if regression or y[:, j].any()]
  if variant == "exact":
    return float(np.mean([logme_exact_column(f, c) for c in cols]))
  return float(np.mean([logme_column(f, c, variant=variant)[0] for c in cols]))


# ----------------------------------------------------------------------------------------------
# H-scores.


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
