"""Benchmark case for ETran (used by bench_metrics.py).

``ours(features, labels)``: ``transrate_jax`` ETran of one candidate (energy + LDA term).
``naive(features_np, labels_np)``: NumPy / SciPy written the way the public code
(``mgholamikn/ETran`` ``metrics.py``: ``Energy_Score(X, 0.5, 'bot')`` and ``LDA_Score(X, y)``)
computes it: per-class covariances, the power-iteration shrinkage, the shrunk total covariance,
``eigh(inv(S_w) S_b)`` over all ``d`` directions, ``coef = means V V^T``, the softmax. Our version
skips everything that cancels (``V V^T = I``): two ``[n, d] x [d, C]``-sized matmuls.
"""

from __future__ import annotations

import numpy as np
import scipy.special

from transrate_jax._src.etran import etran


def _naive_energy(features, percent=0.5):
  energy = scipy.special.logsumexp(features, axis=-1)  # torch.logsumexp(logits, dim=-1)
  chosen = np.argsort(energy)[0:int(percent * 10) * len(energy) // 1000]
  return energy[chosen].mean()


def _cov(x, shrinkage=-1.0):
  emp = np.cov(np.asarray(x).T, bias=1)
  if shrinkage < 0:
    return emp
  d = emp.shape[0]
  mu = np.trace(emp) / d
  out = (1.0 - shrinkage) * emp
  out.flat[::d + 1] += shrinkage * mu
  return out


def _largest_eigenvalue(a, iterations=3):  # LDA.iterative_A: power iteration from the row sums
  x = a.sum(axis=1)
  for _ in range(iterations):
    t = a @ x
    y = t / np.linalg.norm(t, 2)
    t = a @ y
    x = t / np.linalg.norm(t, 2)
  return x.T @ a @ y


def _naive_lda(x, labels):
  classes, y = np.unique(labels, return_inverse=True)
  priors = np.bincount(y) / float(len(y))
  cnt = np.bincount(y)
  means = np.zeros((len(classes), x.shape[1]))
  np.add.at(means, y, x)
  means /= cnt[:, None]
  sw = np.zeros((x.shape[1], x.shape[1]))
  for idx in range(len(classes)):
    sw += priors[idx] * np.atleast_2d(_cov(x[y == idx, :]))
  shrinkage = max(np.exp(-5 * _largest_eigenvalue(sw)), 1e-10)
  st = _cov(x, shrinkage)
  d = sw.shape[0]
  shrunk_sw = (1.0 - shrinkage) * sw
  shrunk_sw.flat[::d + 1] += shrinkage * np.trace(sw) / d
  sb = st - shrunk_sw
  evals, evecs = np.linalg.eigh(np.linalg.inv(shrunk_sw) @ sb)
  evecs = evecs[:, np.argsort(evals)[::-1]]
  coef = means @ evecs @ evecs.T
  intercept = -0.5 * np.diag(means @ coef.T) + np.log(priors)
  logits = x @ coef.T + intercept
  logits -= logits.max(axis=1, keepdims=True)
  prob = np.exp(logits)
  prob /= prob.sum(axis=1, keepdims=True)
  return np.sum(prob[np.arange(len(labels)), labels]) / len(labels)


def _naive_etran(features, labels):
  return float(_naive_energy(features) + _naive_lda(features, labels))


def _floor_etran(features, labels):
  """The energy (a logsumexp along each row) and the LDA term's two products: the class sums
  ([C, d]) and the logits x means^T ([n, d] x [d, C])."""
  x = np.asarray(features, np.float32)
  c = int(labels.max()) + 1
  means = np.eye(c, dtype=x.dtype)[labels].T @ x / np.bincount(labels, minlength=c)[:, None]
  return [("logsumexp", [(x,)]), ("class_sums", [(x, labels, c)]),
          ("matmul", [(x, means.T.copy())])]


CASES = [
    {"metric": "ETran", "paper": "Gholami et al., ICCV 2023", "function": "transrate_jax.etran",
     "ours": etran, "naive": _naive_etran, "rtol": 1e-4,
     "floor": _floor_etran, "floor_what": "row logsumexp, class sums, [n, d] x [d, C]"},
]
