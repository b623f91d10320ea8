"""Float64 NumPy oracle for LogME (classification and regression).

Written from the paper's formulas (see each function's docstring), deliberately by a different
route than the library: LogME solves the D x D system ``(a I + b F^T F) m = b F^T y`` and takes
``slogdet`` per column and per iteration (no shared eigendecomposition). Its test inputs are
``CASES`` and ``REGRESSION_CASES`` in ``tests/cases_peers.py``.
"""

from __future__ import annotations

import math

import numpy as np


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
