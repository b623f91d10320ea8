"""Float64 NumPy oracles for target quantisation and multi-label TransRate.

Written from the rules in transrate_jax/_src/regression.py's docstring, with different machinery
(SciPy's average ranks, float division, a Python loop over labels and the naive TransRate oracle).
"""

import numpy as np
from scipy import stats

import reference


def compact(labels):
  """Renumbers the values occurring in ``labels`` [n] to 0..C-1 in increasing order."""
  values = sorted(set(np.asarray(labels).tolist()))
  lookup = {v: i for i, v in enumerate(values)}
  return np.array([lookup[v] for v in np.asarray(labels).tolist()], dtype=np.int64)


def quantile_bins(t, bins):
  """floor(bins * (average rank - 1/2) / n), column by column, then compacted."""
  t = np.asarray(t, np.float64)
  cols = t[:, None] if t.ndim == 1 else t
  n = cols.shape[0]
  out = []
  for j in range(cols.shape[1]):
    rank = stats.rankdata(cols[:, j], method="average")  # 1-based, ties averaged
    raw = np.floor(bins * (rank - 0.5) / n).astype(np.int64)
    out.append(compact(np.minimum(raw, bins - 1)))
  out = np.stack(out, axis=1)
  return out[:, 0] if t.ndim == 1 else out


def uniform_bins(t, bins):
  """Equal-width bins between min and max, column by column, then compacted."""
  t = np.asarray(t, np.float64)
  cols = t[:, None] if t.ndim == 1 else t
  out = []
  for j in range(cols.shape[1]):
    c = cols[:, j]
    raw = np.minimum(np.floor(bins * (c - c.min()) / (c.max() - c.min())), bins - 1)
    out.append(compact(raw.astype(np.int64)))
  out = np.stack(out, axis=1)
  return out[:, 0] if t.ndim == 1 else out


def transrate_multilabel(features, label_matrix, eps=1e-4, weighting="prior", preset=None):
  """Per-label binary TransRate by the naive oracle (0 for a one-class column) and their mean."""
  per = []
  for l in range(label_matrix.shape[1]):
    col = np.asarray(label_matrix[:, l]).astype(np.int64)
    if col.min() == col.max():
      per.append(0.0)
    else:
      per.append(reference.transrate(features, col, eps=eps, weighting=weighting, preset=preset,
                                     num_classes=2))
  per = np.asarray(per)
  return per.mean(), per
