"""Float64 NumPy oracle for ETran (classification), written from the formula with loops.

Energy term: ``E_i = log sum_j exp(x_ij)``, the mean of the ``max(1, int(10 p) * n // 1000)``
lowest. LDA term: ``logit_ic = x_i . mu_c - |mu_c|^2 / 2 + log(n_c / n)`` over the classes present,
the mean over samples of the softmax probability of the true class. ``etran = energy + lda``;
``etran_scores``: ``w_e minmax(energy) + w_l minmax(lda)`` over the candidates. Independent of the
JAX code; inputs in ``tests/cases_etran.py``.
"""

from __future__ import annotations

import math

import numpy as np


def energy(x, percent=0.5):
  x = np.asarray(x, np.float64)
  n = x.shape[0]
  e = []
  for i in range(n):
    m = max(x[i])
    e.append(m + math.log(sum(math.exp(v - m) for v in x[i])))
  k = max(1, int(percent * 10) * n // 1000)
  return float(np.mean(sorted(e)[:k]))


def lda(x, labels):
  x = np.asarray(x, np.float64)
  labels = np.asarray(labels)
  n = x.shape[0]
  classes = sorted(set(labels.tolist()))
  means = {c: x[labels == c].mean(axis=0) for c in classes}
  log_prior = {c: math.log(np.sum(labels == c) / n) for c in classes}
  total = 0.0
  for i in range(n):
    logits = {c: float(x[i] @ means[c]) - 0.5 * float(means[c] @ means[c]) + log_prior[c]
              for c in classes}
    top = max(logits.values())
    z = sum(math.exp(v - top) for v in logits.values())
    total += math.exp(logits[int(labels[i])] - top) / z
  return total / n


def etran(x, labels, percent=0.5):
  return energy(x, percent) + lda(x, labels)


def etran_scores(feats, labels, percent=0.5, energy_weight=0.15, lda_weight=0.85):
  def minmax(v):
    lo, hi = min(v), max(v)
    return [0.0 if hi == lo else (t - lo) / (hi - lo) for t in v]
  e = minmax([energy(f, percent) for f in feats])
  s = minmax([lda(f, labels) for f in feats])
  return [energy_weight * a + lda_weight * b for a, b in zip(e, s)]
