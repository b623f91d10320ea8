"""Seeded float64 inputs for the ETran tests (``tests/data/etran_reference.json``).

Only ``np.random.default_rng(seed)`` is used; the numbers in ``tests/data/etran_reference.json``
were produced by the public ETran code on exactly these inputs (see ``tests/data/README.md``), so
changing them invalidates that JSON. Plain NumPy: the reference driver imports this file too.
"""

from __future__ import annotations

import numpy as np


def make_case(seed, counts, d, *, sep=1.0, scale=0.5, offset=0.0, relu=True):
  """Class-structured features: class mean + noise (+ offset), ReLU-like by default.

  Args:
    seed: seed of ``np.random.default_rng``.
    counts: samples per class.
    d: feature width.
    sep: standard deviation of the class means.
    scale: overall scale (keeps the LDA softmax away from saturation).
    offset: common offset added to every feature.
    relu: clip at 0 (penultimate-layer features are post-ReLU).

  Returns:
    features [n, d] float64 (rows shuffled), labels [n] int64.
  """
  rng = np.random.default_rng(seed)
  counts = np.asarray(counts)
  labels = np.repeat(np.arange(len(counts)), counts)
  means = sep * rng.normal(size=(len(counts), d))
  x = means[labels] + rng.normal(size=(labels.shape[0], d))
  if relu:
    x = np.maximum(x, 0.0)
  x = scale * x + offset
  perm = rng.permutation(labels.shape[0])
  return np.ascontiguousarray(x[perm]), labels[perm].astype(np.int64)


# name -> (seed, counts, d, options)
CASES = {
    "small": (0, [100, 100, 100, 100], 16, {}),
    "imbalanced": (1, [300, 40, 120, 90, 50], 40, {"sep": 0.7, "scale": 0.3, "offset": 2.0}),
    "wide": (2, [90, 80, 80], 300, {"scale": 0.1, "relu": False}),  # d > n - C: S_w singular
    "many": (3, [200] * 10, 32, {"sep": 0.5, "scale": 1.0}),       # 10 lowest energies
    "tiny": (4, [30, 25, 25], 8, {"scale": 0.4}),                    # n < 200: one energy
}

# The percentages of ``Energy_Score`` tried on one case (default 0.5; 0.25 truncates to 0.2).
PERCENTS = (0.5, 0.25, 3.0, 10.0)

# A candidate set for the across-candidates combination: the same labels, four "models".
SET_SEED = 10
SET_COUNTS = [120, 90, 90]
SET_WIDTHS = (12, 24, 48, 20)


def feature_case(name):
  seed, counts, d, options = CASES[name]
  return make_case(seed, counts, d, **options)


def candidate_set():
  """``(list of m feature arrays [n, d_m], labels [n])``: one label vector, m candidates."""
  rng = np.random.default_rng(SET_SEED)
  counts = np.asarray(SET_COUNTS)
  labels = np.repeat(np.arange(len(counts)), counts)
  perm = rng.permutation(labels.shape[0])
  labels = labels[perm].astype(np.int64)
  feats = []
  for i, d in enumerate(SET_WIDTHS):
    sep = 0.4 + 0.3 * i
    means = sep * rng.normal(size=(len(counts), d))
    x = np.maximum(means[labels] + rng.normal(size=(labels.shape[0], d)), 0.0) * (0.3 + 0.1 * i)
    feats.append(np.ascontiguousarray(x))
  return feats, labels
