"""Float64 NumPy oracle for leave-one-out k-NN accuracy, written from the formula.

Dense ``n x n`` distances: cosine ``1 - x_i . x_j / (|x_i| |x_j|)`` (0 similarity for a zero row),
euclidean ``sqrt(sum_t (x_it - x_jt)^2)`` from the differences (no norm expansion); the sample
itself is excluded; the ``k`` nearest by a stable sort (equal distances: lower index first); the
vote by counting (equal counts: smallest label).
"""

from __future__ import annotations

import numpy as np


def distances(x, metric):
  """[n, n] float64 distances, the diagonal set to +inf (leave-one-out)."""
  x = np.asarray(x, np.float64)
  n = x.shape[0]
  out = np.empty((n, n))
  norms = np.sqrt(np.sum(x * x, axis=1))
  for i in range(n):
    if metric == "cosine":
      denom = norms[i] * norms
      dots = x @ x[i]
      sim = np.where(denom > 0, dots / np.where(denom > 0, denom, 1.0), 0.0)
      out[i] = 1.0 - sim
    elif metric == "euclidean":
      diff = x - x[i]
      out[i] = np.sqrt(np.sum(diff * diff, axis=1))
    else:
      raise ValueError(metric)
    out[i, i] = np.inf
  return out


def neighbours(x, k, metric):
  """[n, k] indices of the k nearest other samples, nearest first, ties by lower index."""
  d = distances(x, metric)
  return np.stack([np.argsort(row, kind="stable")[:k] for row in d])


def predictions(x, labels, k, metric):
  """[n] majority label of the k nearest other samples (ties: smallest label)."""
  labels = np.asarray(labels)
  idx = neighbours(x, k, metric)
  pred = np.empty(len(labels), np.int64)
  for i in range(len(labels)):
    counts = np.bincount(labels[idx[i]], minlength=int(labels.max()) + 1)
    pred[i] = int(np.argmax(counts))  # the first maximum: the smallest label
  return pred


def knn_accuracy(x, labels, k=5, metric="cosine"):
  """Fraction of the samples whose k-NN majority label is their own label."""
  labels = np.asarray(labels)
  return float(np.mean(predictions(x, labels, k, metric) == labels))


def vote_ties(x, labels, k, metric):
  """Number of samples whose k-NN vote has two or more labels at the top count."""
  labels = np.asarray(labels)
  idx = neighbours(x, k, metric)
  ties = 0
  for i in range(len(labels)):
    counts = np.bincount(labels[idx[i]])
    ties += int(np.sum(counts == counts.max()) > 1)
  return ties


def kth_gap(x, k, metric):
  """Smallest relative gap, over the rows, between the k-th and (k+1)-th nearest distances."""
  d = np.sort(distances(x, metric), axis=1)
  return float(np.min((d[:, k] - d[:, k - 1]) / np.maximum(d[:, k], 1e-300)))
