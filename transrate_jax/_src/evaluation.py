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


# --------------------------------------------------------------------------------------------
# Top-1 regret, bootstrap intervals, the random-ranking baseline and resampled candidate pools.
#
# These answer a reviewer's questions about a correlation reported over a handful of candidates:
# how uncertain is it (bootstrap over the candidates), what would a random ranking score (the
# null baseline), and how much does it depend on which candidates are in the pool (random
# subsets). They run on the host (NumPy's seeded generator draws the indices) around compiled
# batched kernels, so they are not themselves jittable; ``top1_regret`` is.
# --------------------------------------------------------------------------------------------

from typing import NamedTuple, Optional  # noqa: E402  (this section is appended to the module)


@jax.jit
def _top1_regret(scores, accuracies):
  return jnp.max(accuracies) - accuracies[jnp.argmax(scores)]


def top1_regret(scores, accuracies) -> jax.Array:
  """``max(accuracies) - accuracies[argmax(scores)]``: the accuracy lost by trusting the score.

  Ties in ``scores`` pick the first (as :func:`relative_top_accuracy`). Lower is better; 0 means
  the top-scored model is a best one. Works under ``jax.jit`` and ``jax.vmap``.

  Args:
    scores: [m] transferability scores.
    accuracies: [m] fine-tuned accuracies (any sign: a difference, not a ratio).

  Returns:
    Scalar >= 0 in the inputs' float dtype.

  Raises:
    ValueError: length mismatch, fewer than 2 entries, NaN/inf.
  """
  scores, accuracies = _check_pair(scores, accuracies, names=("scores", "accuracies"),
                                   constant_ok=True)
  return _top1_regret(scores, accuracies)


class Interval(NamedTuple):
  """A statistic on all candidates and its bootstrap percentile interval (host Python numbers).

  Attributes:
    estimate: the statistic on the full [m] vectors: ``kendall_tau(scores, accuracies)`` etc.
      (computed with the resamples, in the same program: equal to round-off).
    low, high: the ``(1 - confidence) / 2`` and ``(1 + confidence) / 2`` percentiles of the
      statistic over the valid resamples.
    std: standard deviation (``ddof=1``; 0 for a single valid resample) over the valid resamples:
      the bootstrap standard error.
    num_valid: resamples on which the statistic was defined (the others were dropped).
    num_resamples: resamples drawn.
    confidence: the nominal coverage, in (0, 1).
    statistic: the statistic's name ("kendall", "pearson", "weighted_tau", or the callable's
      ``__name__``).
  """
  estimate: float
  low: float
  high: float
  std: float
  num_valid: int
  num_resamples: int
  confidence: float
  statistic: str


class RandomBaseline(NamedTuple):
  """The statistic of a uniformly random ranking against the accuracies (the null baseline).

  Attributes:
    estimate: the expected value under a uniformly random ranking: exactly 0 for "kendall" and
      "pearson" (each draw and its reverse cancel; ``exact`` is True), the Monte Carlo mean
      otherwise (``exact`` False).
    mean: the Monte Carlo mean over the draws.
    std: the Monte Carlo standard deviation (``ddof=1``) over the draws.
    low, high: the ``(1 -+ confidence) / 2`` percentiles over the draws.
    exact_std: the exact standard deviation under the permutation null where known, else None:
      Kendall ``sqrt(Var S) / sqrt(n0 (n0 - n_y))`` with ``n0 = m (m - 1) / 2``, ``n_y`` pairs
      tied in the accuracies and ``Var S = (m (m - 1)(2m + 5) - sum_t t (t - 1)(2t + 5)) / 18``
      (t: the sizes of the groups of tied accuracies; without ties ``Var tau = 2 (2m + 5) /
      (9 m (m - 1))``); Pearson ``1 / sqrt(m - 1)``.
    exact: whether ``estimate`` is exact.
    num_draws: random rankings drawn.
    confidence: the nominal coverage of [low, high].
    statistic: the statistic's name.
  """
  estimate: float
  mean: float
  std: float
  low: float
  high: float
  exact_std: Optional[float]
  exact: bool
  num_draws: int
  confidence: float
  statistic: str


class PoolStatistics(NamedTuple):
  """The statistic over random candidate pools (subsets without replacement).

  Attributes:
    mean: mean over the valid pools.
    std: standard deviation (``ddof=1``; 0 for a single valid pool) over the valid pools.
    values: [num_valid] the statistic on each valid pool, in the order drawn (a float64 array).
    num_valid: pools on which the statistic was defined.
    num_pools: pools drawn.
    pool_size: candidates per pool.
    statistic: the statistic's name.
  """
  mean: float
  std: float
  values: np.ndarray
  num_valid: int
  num_pools: int
  pool_size: int
  statistic: str


# The built-in statistics: public function (full vectors) and jitted kernel (one [m] pair).
_STATISTICS = {"kendall": (kendall_tau, _kendall), "pearson": (pearson, _pearson),
               "weighted_tau": (weighted_tau, _weighted_tau)}

# Elements of the [m, m] pair matrices one vectorised chunk of resamples may hold at a time.
_PAIR_BUDGET = 2 ** 19  # smaller chunks ran faster (cache) on a 2-core CPU


def _statistic_name(statistic) -> str:
  if isinstance(statistic, str):
    if statistic not in _STATISTICS:
      raise ValueError(f"unknown statistic {statistic!r}; use one of {sorted(_STATISTICS)} or a "
                       "callable fn(x [m], y [m]) -> scalar.")
    return statistic
  if callable(statistic):
    return getattr(statistic, "__name__", type(statistic).__name__)
  raise ValueError(f"statistic must be a name in {sorted(_STATISTICS)} or a callable; got "
                   f"{statistic!r}.")


def _check_confidence(confidence) -> float:
  if (isinstance(confidence, (bool, np.bool_)) or not isinstance(confidence, (int, float,
                                                                               np.floating))
      or not 0.0 < float(confidence) < 1.0):
    raise ValueError(f"confidence must be a float in (0, 1) (e.g. 0.95); got {confidence!r}.")
  return float(confidence)


def _check_seed(seed) -> int:
  if (not isinstance(seed, (int, np.integer)) or isinstance(seed, (bool, np.bool_))
      or seed < 0):
    raise ValueError(f"seed must be a non-negative Python int; got {seed!r}.")
  return int(seed)


def _prepare(scores, accuracies, statistic):
  """Checks the pair (concrete only) and returns the arrays the statistic is computed on.

  Built-in statistics get the shifted and rescaled vectors of :func:`_check_pair` (they are
  invariant to it); a callable gets the inputs cast to their common float dtype, unchanged.
  """
  for v, name in ((scores, "scores"), (accuracies, "accuracies")):
    if not validation.is_concrete(v):
      raise ValueError(f"{name} is traced: resampling draws indices on the host, so it needs "
                       "concrete arrays (call it outside jit/vmap).")
  x, y = _check_pair(scores, accuracies, names=("scores", "accuracies"))  # raises if constant
  if callable(statistic) and not isinstance(statistic, str):
    x, y = numerics.as_float(scores), numerics.as_float(accuracies)
    dtype = jnp.promote_types(x.dtype, y.dtype)
    x, y = x.astype(dtype), y.astype(dtype)
  return x, y


def _chunk_size(m: int, batch: int) -> int:
  return int(max(1, min(batch, _PAIR_BUDGET // (m * m))))


@functools.partial(jax.jit, static_argnames=("kernel", "batch_size"))
def _map_kernel(xs, ys, *, kernel, batch_size):
  """``kernel`` on each row pair of [B, m] stacks: vmap over chunks of ``batch_size`` rows."""
  return jax.lax.map(lambda xy: kernel(xy[0], xy[1]), (xs, ys), batch_size=batch_size)


def _count_form(x, y, counts, weights, *, x_tied, y_tied):
  """Kendall-type correlations of many multisets of the candidates, from their draw counts.

  A multiset (a bootstrap resample, or a pool) that holds candidate ``a`` ``c_a`` times has the
  pair ``(a, b)`` ``c_a c_b`` times; copies of one candidate are tied in both vectors and count
  nowhere. If element ``p`` weighs ``w_p`` and a pair ``w_p + w_q``, the pair sums of
  :func:`_weighted_correlation` over the multiset are bilinear forms of the per-candidate weight
  sums ``W_a`` (the weights of a's copies) and the counts:

      sum_{p<q} (w_p + w_q) s_pq = sum_{a != b} W_a s_ab c_b = W^T S c,

  so ``tau = W^T S c / sqrt(W^T |Sx| c * W^T |Sy| c)`` with ``Sx = sign(x_a - x_b)``, ``Sy``
  likewise and ``S = Sx * Sy``. The denominators are cheaper: ``|Sx|_ab = 1 - [x_a = x_b]``, so
  ``W^T |Sx| c = k sum_a W_a - sum_a W_a t_a`` with ``k = sum_a c_a`` and ``t_a = sum_{b: x_b =
  x_a} c_b`` the count of a's tie group (``t = c`` when x has no ties: ``x_tied=False``).
  Kendall's tau-b is ``W = c`` (unit weights); weighted tau's rank weights give ``W`` from
  :func:`_rank_weight_sums`.

  ``S c`` (and ``t`` where there are ties) are [B, m] x [m, m] matmuls of small integers
  (|entries| <= k), run in float32: exact (every partial sum is an integer below 2^24 for
  k < 2^24) and half the cost of float64; the rest runs in the inputs' dtype. The [m, m] sign
  matrices are built by a separate program (:func:`_pair_matrices`): fused into the matmul's
  program on XLA's CPU backend (jax 0.10) the same work ran ~5x slower.

  Args:
    x, y: [m] values.
    counts: [B, m] how often each candidate is in each multiset.
    weights: [V, B, m] per-candidate weight sums, V weightings.
    x_tied, y_tied: static; whether x (y) has tied values.

  Returns:
    [V, B] correlations (NaN where a multiset is constant in x or y).
  """
  mats = _pair_matrices(x, y, x_tied=x_tied, y_tied=y_tied)
  return _count_correlations(counts, weights, *mats)


@functools.partial(jax.jit, static_argnames=("x_tied", "y_tied"))
def _pair_matrices(x, y, *, x_tied, y_tied):
  """float32 [m, m] ``S = sign(x_a - x_b) sign(y_a - y_b)`` and ``[x_a = x_b]``, ``[y_a = y_b]``
  (None where the vector has no ties)."""
  s = (_pair_signs(x) * _pair_signs(y)).astype(jnp.float32)
  tie_x = (x[:, None] == x[None, :]).astype(jnp.float32) if x_tied else None
  tie_y = (y[:, None] == y[None, :]).astype(jnp.float32) if y_tied else None
  return s, tie_x, tie_y


@jax.jit
def _count_correlations(counts, weights, s, tie_x, tie_y):
  """The count form of :func:`_count_form` from its [m, m] float32 matrices; [V, B]."""
  c32 = counts.astype(jnp.float32)

  def times(mat):  # counts @ mat for an integer [m, m] matrix, exact in float32
    return jnp.matmul(c32, mat, precision=numerics.HIGHEST).astype(counts.dtype)

  sc = times(s)
  total = jnp.sum(counts, axis=1)
  tx = counts if tie_x is None else times(tie_x)
  ty = counts if tie_y is None else times(tie_y)
  out = []
  for w in weights:  # V is static and small; 2-D reductions (a [V, B, m] one fuses ~5x slower)
    sum_w = total * jnp.sum(w, axis=1)
    dx, dy = sum_w - jnp.sum(w * tx, axis=1), sum_w - jnp.sum(w * ty, axis=1)
    out.append(jnp.clip(jnp.sum(w * sc, axis=1) / jnp.sqrt(dx * dy), -1.0, 1.0))
  return jnp.stack(out)


@jax.jit
def _pearson_counts(x, y, counts):
  """Pearson's r of many multisets from their draw counts (a candidate drawn c times weighs c).

  ``r = sum_a c_a (x_a - mx)(y_a - my) / sqrt(sum_a c_a (x_a - mx)^2 * sum_a c_a (y_a - my)^2)``
  with the count-weighted means ``mx = sum_a c_a x_a / sum_a c_a`` removed in two passes (as
  :func:`numerics.center`): the same value as :func:`_pearson` on the gathered multiset.

  Args:
    x, y: [m] values (rescaled by :func:`_check_pair`, so no sum can overflow).
    counts: [B, m] how often each candidate is in each multiset.

  Returns:
    [B] correlations (NaN where a multiset is constant in x or y).
  """
  total = jnp.sum(counts, axis=1, keepdims=True)

  def centred(v):
    r = v[None, :] - jnp.sum(counts * v[None, :], axis=1, keepdims=True) / total
    return r - jnp.sum(counts * r, axis=1, keepdims=True) / total

  xc, yc = centred(x), centred(y)
  r = jnp.sum(counts * xc * yc, axis=1) / jnp.sqrt(
      jnp.sum(counts * xc * xc, axis=1) * jnp.sum(counts * yc * yc, axis=1))
  return jnp.clip(r, -1.0, 1.0)


def _has_ties(v) -> bool:
  """Whether the concrete [m] vector ``v`` has two equal entries."""
  v = np.asarray(v)
  return bool(np.unique(v).size < v.size)


def _rank_weight_sums(counts, x, y):
  """[B, m] ``W_a = sum_{r=R_a}^{R_a + c_a - 1} 1 / (r + 1)``: weighted tau's weights per candidate.

  In a multiset ranked by (x, y) decreasing (:func:`_lex_rank`), the copies of candidate ``a``
  (and of candidates tied with it in both x and y) hold consecutive ranks starting at ``R_a``, the
  number of elements ranked above; the order within such a block changes which copy gets which
  weight but not their sum, and the pairs inside a block are tied in both vectors. So weighted tau
  of a multiset depends on the counts alone. Computed on the host in float64 (exact up to
  round-off): the loop runs over the copy number, at most ``max(counts)`` times.
  """
  order = np.lexsort((np.asarray(y), np.asarray(x)))[::-1]  # decreasing by x, then y
  c = counts[:, order].astype(np.float64)
  start = np.cumsum(c, axis=1) - c
  w = np.zeros_like(c)
  for j in range(int(c.max(initial=0))):
    w += np.where(j < c, 1.0 / (start + j + 1.0), 0.0)
  out = np.empty_like(w)
  out[:, order] = w
  return out


def _on_stacks(statistic, xs, ys):
  """The statistic on each row pair of the [B, k] stacks ``xs``, ``ys``; [B] float64 host array.

  A built-in kernel is vmapped over chunks of rows (:func:`_map_kernel`); so is a callable when
  it traces with JAX; one that does not (e.g. a NumPy or scipy function) is called once per row
  on NumPy arrays instead.
  """
  batch, size = xs.shape
  kernel = _STATISTICS[statistic][1] if isinstance(statistic, str) else statistic
  try:
    out = _map_kernel(xs, ys, kernel=kernel, batch_size=_chunk_size(size, batch))
  except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError,
          jax.errors.TracerBoolConversionError, jax.errors.TracerIntegerConversionError):
    if isinstance(statistic, str):
      raise
    xs, ys = np.asarray(xs), np.asarray(ys)
    out = [statistic(xs[b], ys[b]) for b in range(batch)]
  return np.asarray(out, np.float64).reshape(batch)


def _count_statistic(statistic, x, y, counts):
  """A built-in statistic of the multisets given by the [B, m] ``counts``; [B] float64 host array.

  All three statistics depend on how often each candidate is in a multiset, not on the order of
  its elements (:func:`_count_form`, :func:`_pearson_counts`). The candidate and multiset axes
  are zero-padded to a few bucketed sizes (a candidate with count 0 contributes nothing), so
  different m and B reuse a handful of compiled programs.
  """
  batch, m = counts.shape
  m_pad = numerics.bucket(m, minimum=8, steps=4)
  b_pad = numerics.bucket(batch, minimum=8, steps=4)
  c = np.zeros((b_pad, m_pad), np.float64)
  c[:batch, :m] = counts
  dtype = np.dtype(x.dtype)
  xp, yp = np.zeros(m_pad, dtype), np.zeros(m_pad, dtype)  # padded on the host: no compile
  xp[:m], yp[:m] = np.asarray(x), np.asarray(y)
  if statistic == "pearson":
    return np.asarray(_pearson_counts(xp, yp, c.astype(dtype)), np.float64)[:batch]
  if statistic == "kendall":
    weights = c[None]
  else:
    weights = np.stack([_rank_weight_sums(c, xp, yp), _rank_weight_sums(c, yp, xp)])
  taus = np.asarray(_count_form(xp, yp, c.astype(dtype), weights.astype(dtype),
                                x_tied=_has_ties(x), y_tied=_has_ties(y)),
                    np.float64)[:, :batch]
  return taus[0] if statistic == "kendall" else 0.5 * (taus[0] + taus[1])


def _masked_statistic(statistic, x, y, mask):
  """A built-in statistic over the entries of [m] ``x``, ``y`` where ``mask`` is 1 (padding 0).

  Padded entries must hold values below every real one in both vectors (they then rank last,
  so weighted tau's ranks of the real entries are unchanged); every pair with a padded entry
  weighs 0. Equal to the unpadded kernels of :data:`_STATISTICS` on the real entries.
  """
  pairs = mask[:, None] * mask[None, :]
  if statistic == "pearson":
    return _pearson_counts(x, y, mask[None, :])[0]
  if statistic == "kendall":
    return _weighted_correlation(_pair_signs(x), _pair_signs(y), pairs)

  def one_side(a, b):
    w = 1.0 / (_lex_rank(a, b).astype(a.dtype) + 1.0)
    return _weighted_correlation(_pair_signs(a), _pair_signs(b),
                                 (w[:, None] + w[None, :]) * pairs)

  return 0.5 * (one_side(x, y) + one_side(y, x))


@functools.partial(jax.jit, static_argnames=("statistic", "batch_size"))
def _random_rankings(xs, y, mask, *, statistic, batch_size):
  """[D] the statistic of each row of the [D, m] scores ``xs`` against ``y`` (masked, padded)."""
  return jax.lax.map(lambda row: _masked_statistic(statistic, row, y, mask), xs,
                     batch_size=batch_size)


@functools.partial(jax.jit, static_argnames=("batch_size",))
def _inversion_sums(z, mask, *, batch_size):
  """[D] ``sum_{r<s} sign(z_s - z_r)`` over the real (mask 1) entries of each row of [D, m] z."""
  m = z.shape[1]
  upper = ((jnp.arange(m)[:, None] < jnp.arange(m)[None, :])
           & (mask[:, None] * mask[None, :] > 0))
  return jax.lax.map(
      lambda row: jnp.sum(jnp.where(upper, jnp.sign(row[None, :] - row[:, None]), 0.0)), z,
      batch_size=batch_size)


def _counts(index, m: int) -> np.ndarray:
  """[B, m] how often each candidate appears in each row of the [B, k] index."""
  batch = index.shape[0]
  offsets = index + m * np.arange(batch)[:, None]
  return np.bincount(offsets.ravel(), minlength=batch * m).reshape(batch, m)


def _on_resamples(statistic, x, y, index, *, with_full: bool = False):
  """The statistic on ``(x[index[b]], y[index[b]])`` for each row ``b`` of the [B, k] index.

  Built-in statistics go through the count form (one program for all rows); callables are
  vmapped over the gathered [B, k] stacks (:func:`_on_stacks`). With ``with_full`` the
  statistic on all m candidates (every count 1) comes first: [1 + B] values.
  """
  m = x.shape[0]
  if isinstance(statistic, str):
    counts = _counts(index, m)
    if with_full:
      counts = np.concatenate([np.ones((1, m), counts.dtype), counts])
    return _count_statistic(statistic, x, y, counts)
  values = _on_stacks(statistic, np.asarray(x)[index], np.asarray(y)[index])
  if with_full:
    values = np.concatenate([[_estimate(statistic, x, y)], values])
  return values


def _valid_rows(xh, yh, values):
  """Rows of the gathered [B, k] host stacks where neither is constant and the value is finite."""
  return (np.ptp(xh, axis=1) > 0) & (np.ptp(yh, axis=1) > 0) & np.isfinite(values)


def _std(values) -> float:
  return float(np.std(values, ddof=1)) if values.size > 1 else 0.0


def _estimate(statistic, x, y) -> float:
  """A callable statistic on the full vectors (must be finite)."""
  value = float(statistic(x, y))
  if not np.isfinite(value):
    raise ValueError(f"the statistic {_statistic_name(statistic)} is not finite on the inputs.")
  return value


def bootstrap_interval(scores, accuracies, *, statistic="kendall", num_resamples: int = 1000,
                       confidence: float = 0.95, seed=0) -> Interval:
  """Bootstrap percentile interval of a ranking statistic over the candidates.

  What is resampled: the m candidates, i.e. the (score, accuracy) pairs, jointly and with
  replacement: resample ``b`` is row ``b`` of ``np.random.default_rng(seed).integers(0, m,
  size=(num_resamples, m))``, and the statistic is computed on ``(scores[idx], accuracies[idx])``
  (duplicated candidates are ties in both vectors; Kendall's tau-b and weighted tau handle them as
  scipy does). The same seed draws the same indices for every metric, so intervals of different
  metrics over one candidate set are paired.

  Undefined resamples: a resample in which the scores or the accuracies are constant (every draw
  hit candidates with one value: probability ``m^(1-m)`` when all values differ, 1/2 for m = 2)
  has no correlation. It is *dropped and counted*: the interval is taken over the remaining
  ``num_valid`` resamples (a bootstrap conditional on a defined statistic); so is a resample on
  which a callable statistic returns NaN or inf. If none is valid, ValueError.

  Interval: the percentile method, ``low, high = np.percentile(valid, [100 (1 - confidence) / 2,
  100 (1 + confidence) / 2])`` (NumPy's default linear interpolation), no bias correction. The
  point estimate is the statistic on all m candidates. The percentile interval can, in
  principle, exclude the estimate (a bootstrap distribution shifted away from it, e.g. by the
  ties resampling adds); it is reported as computed, not widened. In practice it contains it
  (tested on random inputs).

  With few candidates (m below ~10) the bootstrap distribution is coarse (many resamples hold
  only a few distinct candidates, whose correlation is often +-1), so intervals are wide: that is
  the honest uncertainty of a correlation over so few points, not a defect of the method.

  Vectorised: Kendall's tau-b, weighted tau and Pearson of a resample depend only on how often
  each candidate was drawn, so the estimate (every count 1) and all resamples are computed
  together from the [1 + B, m] draw counts: one matmul with the [m, m] pair-sign matrix (exact,
  in float32) for the taus (``_count_form``), count-weighted moments for Pearson
  (``_pearson_counts``); both axes are padded to bucketed sizes so other m and B reuse the
  compiled programs. A traceable callable is vmapped over chunks of the gathered [B, m] resample
  stack. 1000 resamples take ~6 ms for m = 100 and ~0.1 s for m = 1000 on a 2-core CPU, once
  compiled (benchmarks/bench_evaluation.py).

  Args:
    scores: [m] transferability scores (concrete; NumPy or JAX).
    accuracies: [m] fine-tuned accuracies.
    statistic: "kendall" (tau-b), "pearson", "weighted_tau", or a callable ``fn(x [m], y [m]) ->
      scalar`` (vmapped when it traces with JAX, else called once per resample on NumPy arrays).
    num_resamples: resamples drawn (Python int >= 1).
    confidence: nominal coverage in (0, 1).
    seed: seed of ``np.random.default_rng`` (a non-negative Python int).

  Returns:
    An :class:`Interval` of host floats.

  Raises:
    ValueError: length mismatch, fewer than 2 entries, NaN/inf, constant scores or accuracies,
      traced inputs, an unknown statistic, ``num_resamples < 1``, ``confidence`` not in (0, 1),
      or no valid resample.

  Example:
    >>> import numpy as np, transrate_jax as tj
    >>> acc = np.array([0.71, 0.74, 0.80, 0.78, 0.85, 0.83, 0.69, 0.90])
    >>> score = np.array([1.2, 1.1, 1.9, 1.5, 2.4, 1.7, 0.9, 2.2])
    >>> iv = tj.bootstrap_interval(score, acc)  # Kendall, 1000 resamples, 95%
    >>> iv.low <= iv.estimate <= iv.high
    True
  """
  name = _statistic_name(statistic)
  num_resamples = validation.check_positive_int(num_resamples, "num_resamples")
  confidence = _check_confidence(confidence)
  seed = _check_seed(seed)
  x, y = _prepare(scores, accuracies, statistic)
  m = x.shape[0]
  index = np.random.default_rng(seed).integers(0, m, size=(num_resamples, m))
  estimate, *values = _on_resamples(statistic, x, y, index, with_full=True)
  values = np.asarray(values, np.float64)
  valid = values[_valid_rows(np.asarray(x)[index], np.asarray(y)[index], values)]
  if valid.size == 0:
    raise ValueError(f"no bootstrap resample of the {m} candidates had a defined {name} "
                     "(every resample was constant); use more candidates or resamples.")
  low, high = np.percentile(valid, [50.0 * (1.0 - confidence), 50.0 * (1.0 + confidence)])
  return Interval(estimate=float(estimate), low=float(low), high=float(high), std=_std(valid),
                  num_valid=int(valid.size), num_resamples=num_resamples,
                  confidence=confidence, statistic=name)


def _kendall_null_std(accuracies) -> float:
  """Exact std of tau-b between a tie-free random ranking and ``accuracies`` (ties allowed)."""
  a = np.asarray(accuracies, np.float64)
  m = a.size
  _, t = np.unique(a, return_counts=True)
  t = t.astype(np.float64)
  var_s = (m * (m - 1) * (2 * m + 5) - np.sum(t * (t - 1) * (2 * t + 5))) / 18.0
  n0 = m * (m - 1) / 2.0
  n_y = np.sum(t * (t - 1) / 2.0)
  return float(np.sqrt(var_s / (n0 * (n0 - n_y))))


def random_baseline(accuracies, *, statistic="kendall", num_draws: int = 1000,
                    confidence: float = 0.95, seed=0) -> RandomBaseline:
  """What a uniformly random ranking scores against ``accuracies``: the null baseline.

  Draw ``b`` ranks the candidates by row ``b`` of ``rng.permuted(np.tile(np.arange(m),
  (num_draws, 1)), axis=1)`` with ``rng = np.random.default_rng(seed)`` (a tie-free random
  ranking); the statistic of each draw against the accuracies gives the Monte Carlo mean, std and
  percentile band. For Kendall and Pearson the expected value is exactly 0 (a ranking and its
  reverse are equally likely and have opposite statistics; the denominators do not depend on the
  draw) and the null std is known in closed form (:class:`RandomBaseline`); weighted tau's
  weights break that symmetry, so its expectation is only about 0 and is estimated.

  Cost: O(num_draws m^2) (a sign matrix per draw), padded to bucketed sizes; for 1000 draws
  about 0.03 s at m = 100 and 2 s at m = 1000 for Kendall on a 2-core CPU, several times that
  for weighted tau (two lexicographic ranks per draw).

  Args:
    accuracies: [m] fine-tuned accuracies (concrete; not constant).
    statistic: "kendall", "pearson", "weighted_tau", or a callable as in
      :func:`bootstrap_interval`.
    num_draws: random rankings drawn (Python int >= 1).
    confidence: coverage of the percentile band, in (0, 1).
    seed: seed of ``np.random.default_rng`` (a non-negative Python int).

  Returns:
    A :class:`RandomBaseline` of host numbers.

  Raises:
    ValueError: not 1-D, fewer than 2 entries, NaN/inf, constant accuracies, an unknown
      statistic, ``num_draws < 1``, ``confidence`` not in (0, 1).
  """
  name = _statistic_name(statistic)
  num_draws = validation.check_positive_int(num_draws, "num_draws")
  confidence = _check_confidence(confidence)
  m = np.shape(accuracies)[0] if np.ndim(accuracies) == 1 else None
  if m is None:
    raise ValueError(f"accuracies must be a 1-D array; got shape {tuple(np.shape(accuracies))}.")
  seed = _check_seed(seed)
  ranking = np.arange(m, dtype=np.float64)
  x, y = _prepare(ranking, accuracies, statistic)
  rng = np.random.default_rng(seed)
  perms = rng.permuted(np.tile(np.arange(m), (num_draws, 1)), axis=1)
  # Draw b scores candidate i with perms[b, i] (rescaled like the ranking x): gather x by perms.
  xh, yh = np.asarray(x), np.asarray(y)  # gathered on the host: nothing compiles per shape
  if isinstance(statistic, str):
    # Padded to bucketed sizes (so other m and num_draws reuse the program): padded entries sit
    # below every real value (built-in inputs lie in [-1, 1]) and weigh nothing.
    m_pad = numerics.bucket(m, minimum=8, steps=4)
    d_pad = numerics.bucket(num_draws, minimum=8, steps=4)
    xs = np.full((d_pad, m_pad), -2.0, xh.dtype)
    xs[:num_draws, :m] = xh[perms]
    xs[num_draws:, :m] = xh
    yp = np.full(m_pad, -2.0, yh.dtype)
    yp[:m] = yh
    mask = (np.arange(m_pad) < m).astype(xh.dtype)
    if statistic == "kendall":
      # A random ranking has no ties: tau_b = sum_{i<j} sign(p_i - p_j) sign(y_i - y_j) over the
      # constant sqrt(n0 (n0 - n_y)). With z = y in increasing-p order the numerator is
      # sum_{r<s} sign(z_s - z_r): one [m, m] sign matrix per draw instead of three.
      z = np.full((d_pad, m_pad), -2.0, yh.dtype)
      z[:num_draws, :m] = yh[np.argsort(perms, axis=1)]
      z[num_draws:, :m] = yh
      _, t = np.unique(yh, return_counts=True)
      n0 = m * (m - 1) / 2.0
      denominator = np.sqrt(n0 * (n0 - np.sum(t * (t - 1) / 2.0)))
      values = np.clip(np.asarray(_inversion_sums(z, mask, batch_size=_chunk_size(m_pad, d_pad)),
                                  np.float64)[:num_draws] / denominator, -1.0, 1.0)
    else:
      values = np.asarray(_random_rankings(xs, yp, mask, statistic=statistic,
                                           batch_size=_chunk_size(m_pad, d_pad)),
                          np.float64)[:num_draws]
  else:
    values = _on_stacks(statistic, xh[perms],
                        np.ascontiguousarray(np.broadcast_to(yh, perms.shape)))
  if not np.all(np.isfinite(values)):
    raise ValueError(f"the statistic {name} was not finite on some random rankings.")
  exact = name in ("kendall", "pearson")
  mean = float(np.mean(values))
  low, high = np.percentile(values, [50.0 * (1.0 - confidence), 50.0 * (1.0 + confidence)])
  exact_std = {"kendall": _kendall_null_std(np.asarray(y)) if name == "kendall" else None,
               "pearson": 1.0 / np.sqrt(m - 1.0) if name == "pearson" else None}.get(name)
  return RandomBaseline(estimate=0.0 if exact else mean, mean=mean, std=_std(values),
                        low=float(low), high=float(high),
                        exact_std=None if exact_std is None else float(exact_std), exact=exact,
                        num_draws=num_draws, confidence=confidence, statistic=name)


def resampled_pools(scores, accuracies, *, pool_size: int, num_pools: int = 100,
                    statistic="kendall", seed=0) -> PoolStatistics:
  """The statistic over random pools of ``pool_size`` candidates (subsets, no replacement).

  A correlation over one candidate pool says little about another; resampling the pool (as
  TELLMe does) shows how much of it is the pool. Pool ``b`` is the first ``pool_size`` entries of
  row ``b`` of ``rng.permuted(np.tile(np.arange(m), (num_pools, 1)), axis=1)`` with ``rng =
  np.random.default_rng(seed)`` (pools are drawn independently, so two may coincide). A pool in
  which the scores or the accuracies are constant (the correlation is undefined), or on which a
  callable statistic is not finite, is skipped and counted: ``num_valid`` of ``num_pools``.
  With ``pool_size == m`` every pool is the full set (std 0 up to round-off). Vectorised as
  :func:`bootstrap_interval` (a pool is a multiset with counts 0 or 1).

  Args:
    scores: [m] transferability scores (concrete).
    accuracies: [m] fine-tuned accuracies.
    pool_size: candidates per pool, a Python int in ``2..m``.
    num_pools: pools drawn (Python int >= 1).
    statistic: "kendall", "pearson", "weighted_tau", or a callable as in
      :func:`bootstrap_interval`.
    seed: seed of ``np.random.default_rng`` (a non-negative Python int).

  Returns:
    A :class:`PoolStatistics`: mean, std (``ddof=1``), the values, counts.

  Raises:
    ValueError: length mismatch, fewer than 2 entries, NaN/inf, constant scores or accuracies,
      an unknown statistic, ``pool_size`` not an int in 2..m, ``num_pools < 1``, or no pool on
      which the statistic is defined.
  """
  name = _statistic_name(statistic)
  num_pools = validation.check_positive_int(num_pools, "num_pools")
  seed = _check_seed(seed)
  x, y = _prepare(scores, accuracies, statistic)
  m = x.shape[0]
  if (not isinstance(pool_size, (int, np.integer)) or isinstance(pool_size, (bool, np.bool_))
      or not 2 <= pool_size <= m):
    raise ValueError(f"pool_size must be a Python int in 2..{m} (the number of candidates); "
                     f"got {pool_size!r}.")
  pool_size = int(pool_size)
  rng = np.random.default_rng(seed)
  index = rng.permuted(np.tile(np.arange(m), (num_pools, 1)), axis=1)[:, :pool_size]
  values = _on_resamples(statistic, x, y, index)
  valid = values[_valid_rows(np.asarray(x)[index], np.asarray(y)[index], values)]
  if valid.size == 0:
    raise ValueError(f"the {name} is undefined on every one of the {num_pools} pools of "
                     f"{pool_size} candidates (constant scores or accuracies in each); use "
                     "larger pools.")
  return PoolStatistics(mean=float(np.mean(valid)), std=_std(valid), values=valid,
                        num_valid=int(valid.size), num_pools=num_pools, pool_size=pool_size,
                        statistic=name)
