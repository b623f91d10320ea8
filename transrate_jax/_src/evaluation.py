"""How well a transferability score ranks models: correlations and top-k measures.

Inputs are small vectors ([m], one entry per candidate model or layer): a score per model and
the accuracy it reached after fine-tuning. Every function accepts NumPy or JAX arrays, works
under ``jax.jit`` and ``jax.vmap`` (over stacks of [m] vectors), and on concrete inputs raises
``ValueError`` for mismatched lengths, fewer than two entries, NaN/inf, or constant inputs
(where a correlation is undefined), and complex inputs. Under ``jit``/``vmap`` values cannot be
checked: a constant input then yields NaN for the correlations.

Pairwise measures are computed from the m x m matrix of pair signs (O(m^2), fine for the tens to
thousands of models compared in practice).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from transrate_jax._src import numerics
from transrate_jax._src import validation


def _check_pair(x, y, *, names=("x", "y"), constant_ok=False):
  """Validates two [m] vectors and returns them as float JAX arrays of one dtype.

  For a correlation (``constant_ok=False``) concrete inputs are shifted by their first entry and
  divided by their largest remaining magnitude *on the host, in float64*, before the cast to the
  compute dtype: correlations are invariant to increasing affine maps, and this keeps a small
  spread on a large offset (``1 + 1e-10 * arange(5)``) from rounding to a constant in float32.
  """
  for v, name in zip((x, y), names):
    if np.ndim(v) != 1:
      raise ValueError(f"{name} must be a 1-D array; got shape {tuple(np.shape(v))}.")
  if np.shape(x)[0] != np.shape(y)[0]:
    raise ValueError(
        f"{names[0]} and {names[1]} must have the same length; got {np.shape(x)[0]} and "
        f"{np.shape(y)[0]}.")
  if np.shape(x)[0] < 2:
    raise ValueError(f"need at least 2 entries; got {np.shape(x)[0]}.")
  out = []
  for v, name in zip((x, y), names):
    dtype = getattr(v, "dtype", None)
    validation.check_real_dtype(dtype if dtype is not None else np.asarray(v).dtype, name)
    if validation.is_concrete(v):
      host = np.asarray(v)
      if not np.all(np.isfinite(host)):
        raise ValueError(f"{name} contains NaN or inf values.")
      compute = numerics.float_dtype(host.dtype)
      if not constant_ok:
        if np.all(host == host.flat[0]):
          raise ValueError(f"{name} is constant: the correlation is undefined.")
        shifted = host.astype(np.float64) - float(host.flat[0])
        shifted = shifted / np.max(np.abs(shifted))
        # Entries now span [-1, 1] with 0 and +-1 present: distinct after any float cast.
        out.append(jnp.asarray(shifted.astype(compute)))
        continue
    out.append(numerics.as_float(v))
  dtype = jnp.promote_types(out[0].dtype, out[1].dtype)
  return out[0].astype(dtype), out[1].astype(dtype)


@jax.jit
def _pearson(x, y):
  xc = numerics.center(x, axis=0)
  yc = numerics.center(y, axis=0)
  # Scale first so that the sums of squares cannot overflow or underflow.
  xc = xc / jnp.max(jnp.abs(xc))
  yc = yc / jnp.max(jnp.abs(yc))
  r = jnp.sum(xc * yc) / jnp.sqrt(jnp.sum(xc * xc) * jnp.sum(yc * yc))
  return jnp.clip(r, -1.0, 1.0)


def pearson(x, y) -> jax.Array:
  """Pearson correlation ``r = sum (x - mx)(y - my) / sqrt(sum (x - mx)^2 sum (y - my)^2)``.

  Higher is better when ``x`` are transferability scores and ``y`` accuracies. Same value as
  ``scipy.stats.pearsonr(x, y).statistic``. Concrete inputs are shifted and rescaled in float64
  before the cast to the compute dtype, and the means are removed with a shift, so a spread
  far below the offset (``1 + 1e-10 * arange(5)``) is not lost in float32.

  Args:
    x: [m] values.
    y: [m] values.

  Returns:
    Scalar in [-1, 1].

  Raises:
    ValueError: length mismatch, fewer than 2 entries, NaN/inf, or a constant input.
  """
  x, y = _check_pair(x, y)
  return _pearson(x, y)


def _pair_signs(v):
  """[m, m] ``sign(v_i - v_j)``."""
  return jnp.sign(v[:, None] - v[None, :])


def _weighted_correlation(sx, sy, w):
  """``sum w sx sy / sqrt(sum_{sx != 0} w * sum_{sy != 0} w)`` over pairs i < j."""
  m = sx.shape[0]
  upper = jnp.triu(jnp.ones((m, m), bool), k=1)
  w = jnp.where(upper, w, 0.0)
  num = jnp.sum(w * sx * sy)
  den_x = jnp.sum(jnp.where(sx != 0, w, 0.0))
  den_y = jnp.sum(jnp.where(sy != 0, w, 0.0))
  return jnp.clip(num / jnp.sqrt(den_x * den_y), -1.0, 1.0)


@jax.jit
def _kendall(x, y):
  sx, sy = _pair_signs(x), _pair_signs(y)
  return _weighted_correlation(sx, sy, jnp.ones(sx.shape, x.dtype))


def kendall_tau(x, y) -> jax.Array:
  """Kendall's tau-b: ``(P - Q) / sqrt((n0 - n_x) (n0 - n_y))``, ties handled.

  ``P``/``Q``: concordant/discordant pairs, ``n0 = m (m - 1) / 2``, ``n_x``/``n_y``: pairs tied in
  ``x``/``y``; i.e. ``sum_{i<j} sign(x_i - x_j) sign(y_i - y_j)`` over the square root of the number
  of pairs not tied in ``x`` times the number not tied in ``y``. Same value as
  ``scipy.stats.kendalltau(x, y).statistic`` (variant ``"b"``, its default). Higher is better.

  Args:
    x: [m] values.
    y: [m] values.

  Returns:
    Scalar in [-1, 1].

  Raises:
    ValueError: length mismatch, fewer than 2 entries, NaN/inf, or a constant input.
  """
  x, y = _check_pair(x, y)
  return _kendall(x, y)


def _lex_rank(a, b):
  """Rank 0 for the largest ``(a, b)``; exact ties broken as scipy does (later index first).

  scipy sorts with ``np.lexsort((b, a))`` (ascending by a, then b, then index: stable) and gives
  rank ``m - 1 - position``.
  """
  m = a.shape[0]
  idx = jnp.arange(m)
  less = ((a[None, :] < a[:, None])
          | ((a[None, :] == a[:, None]) & (b[None, :] < b[:, None]))
          | ((a[None, :] == a[:, None]) & (b[None, :] == b[:, None])
             & (idx[None, :] < idx[:, None])))
  position = jnp.sum(less, axis=1)  # elements before i in the ascending order
  return m - 1 - position


def _weighted_tau_one(x, y):
  """Weighted tau with weights from the decreasing lexicographic rank by (x, y)."""
  rank = _lex_rank(x, y)
  w = 1.0 / (rank.astype(x.dtype) + 1.0)
  sx, sy = _pair_signs(x), _pair_signs(y)
  return _weighted_correlation(sx, sy, w[:, None] + w[None, :])


@jax.jit
def _weighted_tau(x, y):
  return 0.5 * (_weighted_tau_one(x, y) + _weighted_tau_one(y, x))


def weighted_tau(x, y) -> jax.Array:
  """Weighted Kendall tau (Vigna, WWW 2015) with hyperbolic weights, as ``scipy.stats.weightedtau``.

  Each element gets a rank ``r_i`` (0 for the largest) and weight ``w_i = 1 / (r_i + 1)``; a pair
  weighs ``w_i + w_j`` (additive), and

      tau_w(r) = sum_{i<j} (w_i + w_j) sign(x_i - x_j) sign(y_i - y_j)
                 / sqrt(sum_{i<j, x_i != x_j} (w_i + w_j) * sum_{i<j, y_i != y_j} (w_i + w_j)).

  The result is ``(tau_w(r_xy) + tau_w(r_yx)) / 2``, where ``r_xy`` ranks by x decreasing with ties
  broken by y (and exact ties in both by the later index first) and ``r_yx`` by y then x: the
  defaults of ``scipy.stats.weightedtau(x, y)`` (``rank=True``, ``weigher=1/(r+1)``,
  ``additive=True``), reproduced to round-off including ties. Emphasises agreement among the
  top-ranked models. Higher is better.

  Args:
    x: [m] values.
    y: [m] values.

  Returns:
    Scalar in [-1, 1].

  Raises:
    ValueError: length mismatch, fewer than 2 entries, NaN/inf, or a constant input.
  """
  x, y = _check_pair(x, y)
  return _weighted_tau(x, y)


@functools.partial(jax.jit, static_argnames=("k",))
def _top_k_hit(scores, accuracies, *, k):
  order = jnp.argsort(-scores, stable=True)[:k]
  best = accuracies == jnp.max(accuracies)
  return jnp.any(best[order])


def top_k_hit(scores, accuracies, *, k: int) -> jax.Array:
  """Whether a best model (highest accuracy) is among the ``k`` highest-scored models.

  Ties in ``scores`` are broken by position (first wins); if several models share the best
  accuracy, any of them counts. Higher (True) is better.

  Args:
    scores: [m] transferability scores.
    accuracies: [m] fine-tuned accuracies.
    k: static number of top-scored models considered (``1 <= k <= m``).

  Returns:
    Scalar bool.

  Raises:
    ValueError: length mismatch, fewer than 2 entries, NaN/inf, or ``k`` out of range.
  """
  scores, accuracies = _check_pair(scores, accuracies, names=("scores", "accuracies"),
                                   constant_ok=True)
  m = scores.shape[0]
  if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or not 1 <= k <= m:
    raise ValueError(f"k must be a Python int in 1..{m}; got {k!r}.")
  return _top_k_hit(scores, accuracies, k=int(k))


@jax.jit
def _relative_top_accuracy(scores, accuracies):
  return accuracies[jnp.argmax(scores)] / jnp.max(accuracies)


def relative_top_accuracy(scores, accuracies) -> jax.Array:
  """``accuracies[argmax(scores)] / max(accuracies)``: how good the top-scored model is (<= 1).

  Ties in ``scores`` pick the first. Higher is better (1 means the score picked a best model).

  Args:
    scores: [m] transferability scores.
    accuracies: [m] positive fine-tuned accuracies.

  Returns:
    Scalar in (0, 1] for positive accuracies.

  Raises:
    ValueError: length mismatch, fewer than 2 entries, NaN/inf, or ``max(accuracies) <= 0``.
  """
  scores, accuracies = _check_pair(scores, accuracies, names=("scores", "accuracies"),
                                   constant_ok=True)
  if validation.is_concrete(accuracies) and float(jnp.max(accuracies)) <= 0:
    raise ValueError("accuracies must have a positive maximum.")
  return _relative_top_accuracy(scores, accuracies)
