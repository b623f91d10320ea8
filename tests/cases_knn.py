"""Seeded float64 inputs for the k-NN accuracy tests (``tests/data/knn_reference.json``).

Only ``np.random.default_rng(seed)`` is used. The JSON numbers were produced by
flairNLP/transformer-ranker's ``NearestNeighbors.fit`` on exactly these inputs, for every
``(case, metric, k)`` of ``GRID`` (see ``tests/data/README.md``): changing them invalidates it.
"""

from __future__ import annotations

import numpy as np


def make_case(seed, counts, d, *, sep=1.0, offset=0.0):
  """Gaussian classes: offset + class mean (std ``sep``) + unit noise, rows shuffled.

  Returns:
    features [n, d] float64, labels [n] int64 in ``0..len(counts)-1``.
  """
  rng = np.random.default_rng(seed)
  counts = np.asarray(counts)
  labels = np.repeat(np.arange(len(counts)), counts)
  n = labels.shape[0]
  means = sep * rng.normal(size=(len(counts), d))
  features = offset + 0.5 * rng.normal(size=(1, d)) + means[labels] + rng.normal(size=(n, d))
  perm = rng.permutation(n)
  return np.ascontiguousarray(features[perm]), labels[perm].astype(np.int64)


CASES = {
    "three": lambda: make_case(30, [40, 40, 40], 10),
    "imbalanced": lambda: make_case(31, [60, 30, 15, 10, 5], 16, sep=0.8),
    "many_classes": lambda: make_case(32, [20] * 10, 32, sep=0.6),
    "wide": lambda: make_case(33, [14, 13, 13], 100, sep=0.4),
    "offset": lambda: make_case(34, [50, 40, 30], 8, offset=20.0),
    "two_classes": lambda: make_case(35, [55, 45], 6, sep=0.7),  # the reference reports binary F1
}

METRICS = ("cosine", "euclidean")
# k = 1 and 5 everywhere; k = 3 and 8 (many vote ties, an even k) on "many_classes".
KS = {name: (1, 3, 5, 8) if name == "many_classes" else (1, 5) for name in CASES}
GRID = [(name, metric, k) for name in sorted(CASES) for metric in METRICS for k in KS[name]]


def key(name, metric, k):
  """The JSON key of one grid point."""
  return f"{name}/{metric}/k={k}"
