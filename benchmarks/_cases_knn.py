"""Benchmark cases for k-NN accuracy (used by bench_metrics.py).

``ours`` is ``transrate_jax.knn_accuracy`` at its defaults (k = 5, cosine, blocks of 1024 query
rows). ``naive`` re-expresses flairNLP/transformer-ranker's ``NearestNeighbors.fit`` in NumPy:
the full ``n x n`` cosine distance matrix ``1 - x_i . x_j / (max(|x_i|, eps) max(|x_j|, eps))``
(one BLAS matmul instead of torch's broadcast elementwise product, which would need an
``[batch, n, d]`` tensor), the diagonal set to +inf, the ``k`` smallest per row by
``np.argpartition`` (``torch.topk``), and the most frequent neighbour label, the smallest on ties
(``torch.mode``); the score is the accuracy (the reference's micro F1 for more than two classes).
"""

from __future__ import annotations

import numpy as np

from transrate_jax._src.knn import knn_accuracy

K = 5


def _naive_knn(features, labels, k=K):
  x = np.asarray(features, np.float32)
  n = x.shape[0]
  xn = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-8)
  dist = 1.0 - xn @ xn.T  # [n, n]
  np.fill_diagonal(dist, np.inf)  # leave one out
  idx = np.argpartition(dist, k - 1, axis=1)[:, :k]  # the k nearest (unordered)
  neighbour_labels = labels[idx]
  counts = np.zeros((n, int(labels.max()) + 1), np.int64)
  np.add.at(counts, (np.repeat(np.arange(n), k), neighbour_labels.ravel()), 1)
  pred = np.argmax(counts, axis=1)  # the first maximum: the smallest label
  return float(np.mean(pred == labels))


def _floor_knn(features, labels):
  """The n x n similarity products of the rows, as one symmetric product."""
  return [("rows_gram", [(np.asarray(features, np.float32),)])]


CASES = [
    {"metric": "k-NN accuracy", "paper": "Sorkhei et al., TMLR 2025",
     "function": "transrate_jax.knn_accuracy", "ours": lambda f, y: knn_accuracy(f, y, k=K),
     # float32 near-ties at the k-th distance may flip a handful of the 10000 votes.
     "naive": _naive_knn, "rtol": 2e-3,
     "floor": _floor_knn, "floor_what": "one n x n Gram"},
]
