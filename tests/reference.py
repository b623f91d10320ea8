"""Float64 NumPy oracles for TransRate, written straight from the formulas (transrate.py docstring).

Deliberately naive: a Python loop over classes and a d x d ``slogdet`` per term, independent of the
package's Gram trick, batching and Cholesky kernels.
"""

import json
import pathlib

import numpy as np


def recorded(name):
  """The values a public implementation produced on the test cases: ``tests/data/<name>``, JSON."""
  return json.loads((pathlib.Path(__file__).parent / "data" / name).read_text())


def coding_rate(z, eps):
  """1/2 logdet(I_d + Z^T Z / (n eps)), float64, covariance side."""
  z = np.asarray(z, np.float64)
  n, d = z.shape
  sign, logdet = np.linalg.slogdet(np.eye(d) + z.T @ z / (n * eps))
  assert sign > 0
  return 0.5 * logdet


def transrate(features, labels, eps=1e-4, weighting="prior", preset=None, num_classes=None):
  """TransRate as transrate_jax.transrate defines it, both weightings and both presets."""
  f = np.asarray(features, np.float64)
  y = np.asarray(labels)
  n, d = f.shape
  if preset == "tllib":
    weighting = "uniform"
  elif preset == "official":
    weighting = "prior"
    f = f / np.maximum(np.linalg.norm(f, axis=1, keepdims=True), 1e-12)
  z = f - f.mean(axis=0)
  if preset == "official":
    z = z / np.maximum(np.linalg.norm(z, axis=1, keepdims=True), 1e-12)
  num_classes = int(y.max()) + 1 if num_classes is None else num_classes
  total = coding_rate(z, eps)
  cond = 0.0
  for c in range(num_classes):
    zc = z[y == c]
    if len(zc) == 0:
      continue
    w = len(zc) / n if weighting == "prior" else 1.0 / num_classes
    cond += w * coding_rate(zc, eps)
  score = total - cond
  if preset == "official":
    score /= np.linalg.matrix_rank(z.T @ z / n)
  return score
