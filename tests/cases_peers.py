"""Seeded float64 inputs for the peer-metric tests (LogME, H-scores, LEEP, NCE, N-LEEP, GBC, LFC,
SFDA, PARC).

Only ``np.random.default_rng(seed)`` is used. ``CASES`` and ``REGRESSION_CASES`` are the inputs of
``tests/data/peers_a_reference.json``: the numbers there were produced by the public reference code
on exactly these inputs (see ``tests/data/README.md``), so changing them invalidates that JSON.
The ``make_*`` functions build the seeded inputs that ``tests/data/peers_b_reference.json``
was produced from (``PROB_CASES``, ``HARD_CASES``, ``FEATURE_CASES``; see ``tests/data/README.md``):
do not change them without regenerating it.
"""

from __future__ import annotations

import math

import numpy as np


# ----------------------------------------------------------------------------------------------
# LogME and H-score inputs (tests/data/peers_a_reference.json).


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
# LEEP, NCE, N-LEEP, GBC, LFC, SFDA and PARC inputs (tests/data/peers_b_reference.json).


def make_features(seed, counts, d, *, sep=2.0, rank=None, noise=1.0):
  """Class-structured features [n, d] float64 and shuffled labels [n] int64.

  ``rank`` (optional) confines the signal to a random ``rank``-dimensional subspace, with
  isotropic noise of standard deviation ``noise`` (a clear spectral gap for PCA).
  """
  rng = np.random.default_rng(seed)
  counts = np.asarray(counts)
  labels = np.repeat(np.arange(len(counts)), counts)
  n = labels.shape[0]
  r = d if rank is None else rank
  basis = np.linalg.qr(rng.normal(size=(d, r)))[0] if rank is not None else np.eye(d)
  means = sep * rng.normal(size=(len(counts), r))
  scales = 1.0 + 3.0 * rng.random(r)
  signal = (means[labels] + rng.normal(size=(n, r)) * scales) @ basis.T
  features = 3.0 + signal + noise * (rng.normal(size=(n, d)) if rank is not None else 0.0)
  perm = rng.permutation(n)
  return np.ascontiguousarray(features[perm]), labels[perm].astype(np.int64)


def make_probs(seed, n, num_source, num_classes, *, temperature=2.0):
  """Source probabilities [n, Cs] (softmax of logits correlated with the labels), labels [n]."""
  rng = np.random.default_rng(seed)
  labels = rng.integers(0, num_classes, size=n)
  mapping = rng.normal(size=(num_classes, num_source))
  logits = temperature * (mapping[labels] + rng.normal(size=(n, num_source)))
  logits -= logits.max(axis=1, keepdims=True)
  probs = np.exp(logits)
  return probs / probs.sum(axis=1, keepdims=True), labels.astype(np.int64)


def make_hard(seed, n, num_source, num_classes):
  """Hard source labels [n] (noisy function of the target labels) and target labels [n]."""
  rng = np.random.default_rng(seed)
  labels = rng.integers(0, num_classes, size=n)
  mapping = rng.integers(0, num_source, size=num_classes)
  source = np.where(rng.random(n) < 0.6, mapping[labels], rng.integers(0, num_source, size=n))
  return source.astype(np.int64), labels.astype(np.int64)


FEATURE_CASES = {
    # name: (seed, counts, d, kwargs)
    "small": (0, [30, 25, 35, 30], 10, {}),
    "imbalanced": (1, [6, 40, 70, 15, 4], 16, {"sep": 1.5}),
    "pca": (2, [40, 50, 45, 35], 80, {"rank": 24, "noise": 0.05}),
    # Signal of rank exactly 32 with a wide spectral gap: the reference's randomised PCA finds
    # the same 32 components as the exact one.
    "parc_pca": (7, [50, 60, 40, 50], 96, {"rank": 32, "noise": 0.01}),
}

PROB_CASES = {"probs": (3, 150, 12, 5), "probs_many": (4, 300, 40, 8)}
HARD_CASES = {"hard": (5, 200, 9, 4), "hard_sparse": (6, 60, 30, 6)}


def feature_case(name):
  seed, counts, d, kwargs = FEATURE_CASES[name]
  return make_features(seed, counts, d, **kwargs)
