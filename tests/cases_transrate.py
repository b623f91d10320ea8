"""Deterministic TransRate test inputs shared by the reference-number tests and oracle tests.

Every case is a function returning ``(features, labels)``: features ``[n, d]`` float64 with class
structure (class means shifted plus unit Gaussian noise, and a global offset so that centring
matters), labels ``[n]`` int64 in ``0..C-1``. Inputs come only from ``np.random.default_rng(seed)``,
so ``tests/data/transrate_reference.json`` (numbers produced by the public reference code on these
inputs, see ``tests/data/README.md``) stays valid as long as this file is unchanged.

``CASES`` holds the cases in the JSON. ``ORACLE_ONLY_CASES`` holds ``empty_class`` (a label value
in ``0..max(y)`` that never occurs): both public implementations fail there (tllib raises
ZeroDivisionError, the official code divides 0/0), so it is for our own oracle tests only.
"""

from __future__ import annotations

import numpy as np

# eps values the reference JSON holds (keys are repr(eps)).
EPS_VALUES = (1e-4, 1e-2, 1e-6)


def make_case(seed, counts, d, *, sep=1.0, scale=1.0, shuffle=False):
  """Features with class structure.

  Args:
    seed: seed of ``np.random.default_rng``.
    counts: number of samples of each class, in class order (a 0 gives an empty class).
    d: feature dimension.
    sep: standard deviation of the class means (noise has standard deviation 1).
    scale: factor applied to the features at the end.
    shuffle: if True the samples are randomly permuted; otherwise labels are sorted.

  Returns:
    features [n, d] float64, labels [n] int64.
  """
  rng = np.random.default_rng(seed)
  counts = np.asarray(counts, dtype=np.int64)
  num_classes = counts.shape[0]
  labels = np.repeat(np.arange(num_classes, dtype=np.int64), counts)
  n = labels.shape[0]
  offset = 2.0 * rng.normal(size=(1, d))
  means = sep * rng.normal(size=(num_classes, d))
  features = offset + means[labels] + rng.normal(size=(n, d))
  if shuffle:
    perm = rng.permutation(n)
    features, labels = features[perm], labels[perm]
  return np.ascontiguousarray(scale * features, dtype=np.float64), labels


def _split(n, c):
  """``n`` samples over ``c`` classes as evenly as possible."""
  return [n // c + (1 if i < n % c else 0) for i in range(c)]


CASES = {
    # n=200, d=16, C=4, 50 per class.
    "balanced": lambda: make_case(0, _split(200, 4), 16),
    # n=300, d=20, C=5, counts 150/80/40/20/10.
    "imbalanced": lambda: make_case(1, [150, 80, 40, 20, 10], 20),
    # n=40 < d=100, C=3 (14/13/13).
    "n_lt_d": lambda: make_case(2, _split(40, 3), 100),
    # n=3000 >> d=8, C=3.
    "n_gg_d": lambda: make_case(3, _split(3000, 3), 8),
    # C=2, n=150, d=12 (90/60).
    "two_classes": lambda: make_case(4, [90, 60], 12),
    # n=600, d=32, C=50 (12 per class).
    "many_classes": lambda: make_case(5, _split(600, 50), 32, sep=0.5),
    # n=101, d=10, C=3 with class 2 holding one sample.
    "one_sample_class": lambda: make_case(6, [60, 40, 1], 10),
    # balanced inputs scaled by 1e3 (tllib is scale dependent, official is not).
    "scaled_1e3": lambda: make_case(0, _split(200, 4), 16, scale=1e3),
    # n=250, d=24, C=5 with samples in random order (labels not sorted).
    "shuffled": lambda: make_case(7, [70, 20, 60, 40, 60], 24, shuffle=True),
}

def _low_rank():
  """n=200, d=24, C=4: 10 informative columns and 14 exactly-zero columns, interleaved.

  rank(Z^T Z) = 10 < d exactly (zero columns stay zero through centring and row normalisation),
  so the official preset's division by the numerical rank is tested without a rounding-dependent
  null space.
  """
  features, labels = make_case(9, _split(200, 4), 10)
  columns = np.sort(np.random.default_rng(109).permutation(24)[:10])
  padded = np.zeros((features.shape[0], 24))
  padded[:, columns] = features
  return padded, labels


CASES["low_rank"] = _low_rank

ORACLE_ONLY_CASES = {
    # Labels {0, 1, 3}: label 2 never occurs (C = max(y) + 1 = 4). n=120, d=12.
    "empty_class": lambda: make_case(8, [40, 30, 0, 50], 12, shuffle=True),
}
