"""Seeded float64 inputs for the NCTI tests (tests/data/ncti_reference.json was made from these).

Only ``np.random.default_rng(seed)`` is used. Every case keeps ``max(n, d) <= 500`` and
``64 <= d``, so that the public code's ``sklearn.decomposition.PCA(n_components=64)`` takes its
deterministic full-SVD solver, and ``n - C > 64``, so that the within-class scatter of the 64 PCA
components has full rank (except ``svd_rank_deficient``). Changing anything here invalidates
the JSON (see tests/data/README.md).
"""

from __future__ import annotations

import numpy as np


def make_case(seed, counts, d, *, sep=1.0, scale=1.0, offset=2.0):
  """Class-structured features ``scale * (offset + class mean + noise)``, rows shuffled.

  The noise has a decaying spectrum (column ``j`` has standard deviation ``1.5 / (1 + j / 20)``)
  so that the principal axes are well separated.

  Args:
    seed: seed of ``np.random.default_rng``.
    counts: samples per class (labels ``0..len(counts)-1``).
    d: number of feature columns.
    sep: standard deviation of the class means.
    scale: overall factor; a small one makes the top-32 PCA variance sum below
      ``-log(1e-10) = 23.03``, which sends the public code to its shrinkage (``eigen``) branch.
    offset: standard deviation of the common offset.

  Returns:
    features [n, d] float64, labels [n] int64.
  """
  rng = np.random.default_rng(seed)
  counts = np.asarray(counts)
  labels = np.repeat(np.arange(len(counts)), counts)
  n = labels.shape[0]
  shift = offset * rng.normal(size=(1, d))
  means = sep * rng.normal(size=(len(counts), d))
  noise = rng.normal(size=(n, d)) * (1.5 / (1.0 + np.arange(d) / 20.0))
  features = scale * (shift + means[labels] + noise)
  perm = rng.permutation(n)
  return np.ascontiguousarray(features[perm]), labels[perm].astype(np.int64)


CASES = {
    # sum of the top-32 PCA variances > 23.03: sklearn LDA(solver='svd') in the public code.
    "svd_balanced": lambda: make_case(30, [60] * 5, 80, sep=0.1),
    "svd_imbalanced": lambda: make_case(31, [120, 70, 40, 30, 20, 20], 96, sep=0.1),
    "svd_two_classes": lambda: make_case(32, [150, 100], 72, sep=0.08),
    "svd_many_classes": lambda: make_case(33, [6] * 70, 100, sep=0.05),  # C - 1 = 69 > 64
    # n - C = 63 < 64: the within-class scatter of the 64 components is singular; the SVD
    # solver's rank cut (tol 1e-4) drops the null direction. (No oracle: it inverts Sw.)
    "svd_rank_deficient": lambda: make_case(37, [22, 22, 22], 80, sep=0.3),
    # small scale: LDA(solver='eigen', shrinkage=exp(-sum of the top-32 variances)).
    "eigen_balanced": lambda: make_case(34, [60] * 5, 80, sep=0.12, scale=0.25),
    "eigen_heavy_shrinkage": lambda: make_case(35, [50, 60, 70, 80], 64, sep=0.2, scale=0.08),
    "eigen_many_classes": lambda: make_case(36, [6] * 70, 100, sep=0.08, scale=0.15),
}


def candidate_set(seed=40, n_per_class=(60, 50, 70, 40, 80), widths=(64, 80, 120, 96, 72)):
  """A model set for the across-candidate combination: one label vector, one feature matrix per
  candidate (different widths and class separations, one of them on the ``eigen`` branch).

  Returns:
    (list of features [n, d_i] float64, labels [n] int64).
  """
  rng = np.random.default_rng(seed)
  counts = np.asarray(n_per_class)
  labels = np.repeat(np.arange(len(counts)), counts)
  n = labels.shape[0]
  perm = rng.permutation(n)
  labels = labels[perm]
  seps = (0.12, 0.06, 0.2, 0.03, 0.1)
  scales = (1.0, 1.0, 1.0, 1.0, 0.2)
  feats = []
  for d, sep, scale in zip(widths, seps, scales):
    means = sep * rng.normal(size=(len(counts), d))
    noise = rng.normal(size=(n, d)) * (1.5 / (1.0 + np.arange(d) / 20.0))
    feats.append(np.ascontiguousarray(scale * (rng.normal(size=(1, d)) + means[labels] + noise)))
  return feats, labels.astype(np.int64)
