"""LEEP, NCE and N-LEEP: transferability from (soft or hard) source-task predictions.

- LEEP: Nguyen, Hassner, Seeger and Archambeau, "LEEP: A New Measure to Evaluate Transferability
  of Learned Representations", ICML 2020.
- NCE: Tran, Nguyen and Hassner, "Transferability and Hardness of Supervised Classification
  Tasks", ICCV 2019.
- N-LEEP: Li, Jia, Sohn, Lin, Zhou, Hu, Fang and Gong, "Ranking Neural Checkpoints", CVPR 2021:
  LEEP on the posteriors of a Gaussian mixture fitted to PCA-reduced features.

The Gaussian mixture (full covariances) is fitted by EM in JAX with the same updates, stopping
rule and ``reg_covar`` as ``sklearn.mixture.GaussianMixture``.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from transrate_jax._src import backend
from transrate_jax._src import linalg
from transrate_jax._src import numerics
from transrate_jax._src import peer_numerics
from transrate_jax._src import registry
from transrate_jax._src import validation

HIGHEST = numerics.HIGHEST

# Rows of source_probs must sum to 1 within this absolute tolerance.
_ROW_SUM_ATOL = 1e-3


def _safe_log(x):
  """``log(x)`` with ``-inf`` at ``x == 0`` and a finite gradient path."""
  pos = x > 0
  return jnp.where(pos, jnp.log(jnp.where(pos, x, 1.0)), -jnp.inf)


# Rows per block of _per_row: blocks of about 2**18 gathered entries (1 MiB in float32) stay in
# cache; one [n, Cs] gather as a whole ran 6x slower on a 2-core CPU (n = 10000, Cs = 1000).
_ROW_BLOCK_ENTRIES = 1 << 18


def _per_row(fn, a, table, y):
  """``fn(a[i], table[y[i]])`` for every row ``i``, by blocks of rows on the CPU: [n].

  ``fn`` maps ``[rows, Cs]`` and ``[rows, Cs]`` to ``[rows]``. On the CPU backend ``table[y]`` is
  gathered one block at a time (a ``lax.map`` over full blocks, then the remainder), never as a
  whole ``[n, Cs]``; on accelerators in one piece, which keeps the device busy.
  """
  n, cs = a.shape
  rows = max(1, _ROW_BLOCK_ENTRIES // cs)
  blocks = n // rows
  if blocks <= 1 or not backend.policy().row_blocks:
    return fn(a, table[y])

  def block(i):
    start = i * rows
    return fn(jax.lax.dynamic_slice_in_dim(a, start, rows),
              table[jax.lax.dynamic_slice_in_dim(y, start, rows)])

  head = jax.lax.map(block, jnp.arange(blocks)).reshape(-1)
  tail = blocks * rows
  return head if tail == n else jnp.concatenate([head, fn(a[tail:], table[y[tail:]])])


def _class_sums(theta, y, num_classes):
  """``n P(y, z)``: the per-class sums of the rows of ``theta`` [n, Cs], ``[C, Cs]`` (a segment
  sum: ``n Cs`` additions, where a one-hot product would do ``C`` times as many)."""
  return jax.ops.segment_sum(theta, y, num_segments=num_classes)


def _leep_from_log(log_theta, theta, y, num_classes):
  """LEEP from log source probabilities ``log_theta`` [n, Cs] (and ``theta = exp(log_theta)``)."""
  joint = _class_sums(theta, y, num_classes)  # n P(y, z): [C, Cs]
  marginal = jnp.sum(joint, axis=0)  # n P(z): [Cs]
  log_cond = _safe_log(joint) - jnp.where(marginal > 0, _safe_log(marginal), 0.0)
  log_cond = jnp.where(marginal > 0, log_cond, 0.0)  # theta[:, z] == 0 there: any finite value
  per_sample = _per_row(lambda a, b: jax.nn.logsumexp(a + b, axis=1), log_theta, log_cond, y)
  return jnp.mean(per_sample)


@functools.partial(jax.jit, static_argnames=("num_classes", "choose"))
def _leep_kernel(theta, y, *, num_classes, choose):
  """``(LEEP in linear space, whether that is accurate, the input statistics)``.

  With ``choose`` (traced inputs) the first output is LEEP either way: ``lax.cond`` runs the
  log-space computation where the linear one is not accurate. Eager calls leave ``choose`` off
  (the conditional cost about 1.5 ms of 8 at n = 10000, Cs = 1000 on a 2-core CPU) and call
  :func:`_leep_log_kernel` themselves in the rare case the flag is False.

  The statistics, for the input checks (:func:`_check_probs`): the smallest entry of ``theta``,
  the row whose sum is farthest from 1 and that sum (NaN propagates through min, sum and argmax;
  inf through the row sums). Under a trace they are dead code, removed.
  """
  # In linear space first: each sample's sum_z theta_iz P(y_i | z) of non-negative terms is as
  # accurate as its logsumexp, without the n x Cs logs and exps. Terms that underflow cost at
  # most Cs * tiny absolutely, so when every sum is at least Cs * tiny / eps the result holds to
  # float precision; otherwise (tiny probabilities) the log-space computation runs instead.
  cs = theta.shape[1]
  joint = _class_sums(theta, y, num_classes)  # n P(y, z): [C, Cs]
  marginal = jnp.sum(joint, axis=0)
  cond = jnp.where(marginal > 0, joint / jnp.where(marginal > 0, marginal, 1.0), 0.0)
  pred = _per_row(lambda a, b: jnp.sum(a * b, axis=1), theta, cond, y)  # [n]
  info = jnp.finfo(theta.dtype)
  safe = jnp.all(pred >= cs * info.tiny / info.eps)
  score = jnp.mean(jnp.log(jnp.where(safe, pred, 1.0)))
  if choose:
    score = jax.lax.cond(safe, lambda: score,
                         lambda: _leep_from_log(_safe_log(theta), theta, y, num_classes))
  sums = jnp.sum(theta, axis=1)
  worst = jnp.argmax(jnp.abs(sums - 1.0))
  return score, safe, (jnp.min(theta), worst, sums[worst])


@functools.partial(jax.jit, static_argnames=("num_classes",))
def _leep_log_kernel(theta, y, *, num_classes):
  return _leep_from_log(_safe_log(theta), theta, y, num_classes)


def _check_probs(stats, name="source_probs"):
  """Raises on the concrete statistics of ``name`` that :func:`_leep_kernel` returns: NaN/inf,
  a negative entry, or a row that does not sum to 1 within ``_ROW_SUM_ATOL``."""
  lowest, row, row_sum = (x.item() for x in jax.device_get(stats))
  if not (math.isfinite(lowest) and math.isfinite(row_sum)):
    raise ValueError(f"{name} contains NaN or inf values.")
  if lowest < 0:
    raise ValueError(f"{name} must be >= 0 (probabilities); found {lowest}.")
  if abs(row_sum - 1.0) > _ROW_SUM_ATOL:
    raise ValueError(
        f"each row of {name} must sum to 1 (probabilities; apply softmax to logits); "
        f"row {row} sums to {row_sum}.")


def leep(source_probs, labels, *, num_classes: int | None = None) -> jax.Array:
  """Log Expected Empirical Prediction (LEEP). Higher is better.

      P(y, z) = 1/n sum_{i: y_i = y} theta_iz,   P(y | z) = P(y, z) / P(z),
      LEEP = 1/n sum_i log sum_z theta_iz P(y_i | z),

  computed in linear space when every sample's sum is far above underflow, else in log space
  (``logsumexp``), so tiny probabilities do not underflow.

  Args:
    source_probs: [n, Cs] source-model class probabilities ``theta`` on the target data
      (rows >= 0 summing to 1 within 1e-3; apply softmax to logits first).
    labels: [n] int target labels in ``0..C-1``.
    num_classes: static ``C``; needed under ``jit``/``vmap``, else ``max(labels) + 1``.

  Returns:
    Scalar LEEP (<= 0), the mean log-likelihood of the "expected empirical predictor".

  Example:
    >>> score = leep(jax.nn.softmax(source_logits), labels)  # doctest: +SKIP

  Reference: Nguyen et al., ICML 2020 (matches ``tllib.ranking.log_expected_empirical_prediction``).
  """
  # The values (NaN, >= 0, rows summing to 1) are checked from statistics the kernel computes in
  # its own pass over theta; the score is returned only once they pass.
  theta = validation.check_features(source_probs, name="source_probs", min_samples=1,
                                    finite=False)
  y, c = validation.check_labels(labels, theta.shape[0], num_classes=num_classes)
  eager = validation.is_concrete(theta) and validation.is_concrete(y)
  score, linear, stats = _leep_kernel(theta, y, num_classes=c, choose=not eager)
  if eager:
    _check_probs(stats)
    if not bool(linear):  # a probability sum near underflow: LEEP in log space
      score = _leep_log_kernel(theta, y, num_classes=c)
  return score


@functools.partial(jax.jit, static_argnames=("num_source_classes", "dtype"))
def _nce_kernel(z, y, *, num_source_classes, dtype):
  # NCE = 1/n sum_i log(#(y_i, z_i) / #z_i): the pair counts come from one sort of the (y, z)
  # pairs (runs of equal pairs), so memory is O(n + Cs), never a C x Cs table.
  n = y.shape[0]
  ys, zs = jax.lax.sort((y, z), num_keys=2)
  new = jnp.concatenate([jnp.ones((1,), bool), (ys[1:] != ys[:-1]) | (zs[1:] != zs[:-1])])
  run = jnp.cumsum(new.astype(jnp.int32)) - 1
  ones = jnp.ones((n,), dtype)
  pair_count = jax.ops.segment_sum(ones, run, num_segments=n)[run]
  source_count = jax.ops.segment_sum(ones, zs, num_segments=num_source_classes)[zs]
  return jnp.mean(jnp.log(pair_count / source_count))


def _nce_host(z: np.ndarray, y: np.ndarray, num_classes: int, num_source_classes: int) -> float:
  """:func:`nce` of concrete labels in NumPy (float64).

  ``NCE = 1/n (sum_i log #(y_i, z_i) - sum_z #z log #z)``: the pair counts come from one
  ``bincount`` of the keys ``y * Cs + z`` when that table is small (at most ``16 n + 1024``
  entries), else from ``np.unique`` of the keys (memory O(n) either way); the source-class
  counts from one ``bincount`` of ``z``. Clamped at 0, its exact upper bound (reached when ``y``
  is a function of ``z``), so round-off never gives a positive NCE.
  """
  n = y.shape[0]
  z = z.astype(np.intp, copy=False)
  key = y.astype(np.intp) * num_source_classes
  key += z
  if num_classes * num_source_classes <= 16 * n + 1024:
    pair_count = np.bincount(key)[key]
  else:
    _, inverse, counts = np.unique(key, return_inverse=True, return_counts=True)
    pair_count = counts[inverse]
  source_count = np.bincount(z)
  source_count = source_count[source_count > 0].astype(np.float64)
  total = np.log(pair_count).sum() - source_count @ np.log(source_count)
  return min(float(total) / n, 0.0)


def nce(source_labels, labels, *, num_classes: int | None = None,
        num_source_classes: int | None = None) -> jax.Array:
  """Negative Conditional Entropy (NCE). Higher is better.

      NCE = -H(Y | Z) = sum_{y, z} P(y, z) log P(y | z),

  with ``P`` the empirical joint distribution of hard source labels ``z`` (e.g. the source
  model's argmax prediction) and target labels ``y``, and ``0 log 0 = 0``.

  Args:
    source_labels: [n] int source labels in ``0..Cs-1``.
    labels: [n] int target labels in ``0..C-1``.
    num_classes: static ``C``; needed under ``jit``/``vmap``, else ``max(labels) + 1``.
    num_source_classes: static ``Cs``; needed under ``jit``/``vmap``, else
      ``max(source_labels) + 1``.

  Computed as ``1/n sum_i log(#(y_i, z_i) / #z_i)``, at most 0. Concrete labels (the usual eager
  call, on any backend) are counted on the host in NumPy, float64, by one ``bincount`` of the
  pairs (``np.unique`` when the ``C x Cs`` table would exceed ``16 n + 1024`` entries); under
  ``jit``/``vmap``, from one sort of the label pairs. Memory is O(n + Cs) on both paths,
  whatever the label values.

  Returns:
    Scalar NCE (<= 0) in nats, in JAX's default float dtype.

  Reference: Tran et al., ICCV 2019 (matches ``tllib.ranking.negative_conditional_entropy``).
  """
  if len(np.shape(labels)) != 1:
    raise ValueError(f"labels must be a 1-D array [n]; got shape {tuple(np.shape(labels))}.")
  n = np.shape(labels)[0]
  if n < 1:
    raise ValueError("labels must hold at least one sample.")
  host = validation.is_concrete(labels) and validation.is_concrete(source_labels)
  y, c = validation.check_labels(labels, n, num_classes=num_classes, host=host)
  z, cs = validation.check_labels(source_labels, n, num_classes=num_source_classes,
                                  name="source_labels", host=host)
  dtype = numerics.float_dtype(np.int32)
  if host:
    return jnp.array(np.asarray(_nce_host(z, y, c, cs), dtype))  # jnp.array: half asarray's cost
  return _nce_kernel(z, y, num_source_classes=cs, dtype=dtype)


# ----------------------------------------------------------------------------------------------
# Gaussian mixture with full covariances, fitted by EM (scikit-learn's algorithm).


def _component_batch(n, k, num_components):
  """Components handled together so that a [batch, n, k] block stays below ~2**25 entries."""
  return max(1, min(num_components, (1 << 25) // max(1, n * k)))


def _map_components(fn, xs, n, k, num_components):
  """``fn`` over the leading (component) axis: one vmap when small, else batched ``lax.map``."""
  batch = _component_batch(n, k, num_components)
  if batch >= num_components:
    return jax.vmap(fn)(xs)
  return jax.lax.map(fn, xs, batch_size=batch)


def _m_step(x, resp, reg_covar):
  """Weights [K], means [K, k], precision Cholesky factors [K, k, k] from responsibilities."""
  n, k = x.shape
  num_components = resp.shape[1]
  nk = jnp.sum(resp, axis=0) + 10 * jnp.finfo(x.dtype).eps
  means = jnp.matmul(resp.T, x, precision=HIGHEST) / nk[:, None]
  eye = jnp.eye(k, dtype=x.dtype)

  def one(args):
    r, mu, w = args
    diff = x - mu
    cov = jnp.matmul((r[:, None] * diff).T, diff, precision=HIGHEST) / w
    # reg_covar as scikit-learn adds it, plus a floor at the round-off level of the trace: a
    # component with fewer samples than dimensions has a singular covariance, which reg_covar
    # alone (absolute, 1e-6) leaves too ill-conditioned for a float32 Cholesky on features of
    # ordinary scale. 10 eps trace(cov) is below the precision of the covariance itself (in
    # float64 it moves scikit-learn's numbers by ~1e-15), so it changes no well-posed fit.
    floor = 10 * jnp.finfo(x.dtype).eps * jnp.trace(cov)
    chol = linalg.cholesky(numerics.symmetrize(cov) + (reg_covar + floor) * eye)
    # Precision Cholesky: inv(chol)^T (upper triangular), as scikit-learn stores it.
    return linalg.triangular_inverse(chol, lower=True).T

  prec_chol = _map_components(one, (resp.T, means, nk), n, k, num_components)
  weights = nk / jnp.sum(nk)
  return weights, means, prec_chol


def _e_step(x, weights, means, prec_chol):
  """Per-sample log-likelihood [n] and log responsibilities [n, K]."""
  n, k = x.shape
  num_components = means.shape[0]

  def one(args):
    mu, p = args
    yv = jnp.matmul(x - mu, p, precision=HIGHEST)
    return jnp.sum(yv * yv, axis=1)

  sq = _map_components(one, (means, prec_chol), n, k, num_components).T  # [n, K]
  log_det = jnp.sum(jnp.log(jnp.diagonal(prec_chol, axis1=1, axis2=2)), axis=1)
  weighted = -0.5 * (k * math.log(2 * math.pi) + sq) + log_det + jnp.log(weights)
  log_norm = jax.nn.logsumexp(weighted, axis=1)
  return log_norm, weighted - log_norm[:, None]


@functools.partial(jax.jit, static_argnames=("num_components", "init"))
def _initial_resp(key, x, num_components, init):
  """Initial responsibilities [n, K]: hard assignment to k-means++ seeds, or random rows."""
  n = x.shape[0]
  if init == "kmeans++":
    centers = x[peer_numerics.kmeans_plusplus(key, x, num_components)]
    d2 = peer_numerics.sq_distances(x, centers)
    return jax.nn.one_hot(jnp.argmin(d2, axis=1), num_components, dtype=x.dtype)
  r = jax.random.uniform(key, (n, num_components), dtype=x.dtype)
  return r / jnp.sum(r, axis=1, keepdims=True)


def _fit_gmm(x, resp0, *, max_iter, tol, reg_covar):
  """EM from initial responsibilities, with scikit-learn's loop and stopping rule.

  Returns:
    ``(log_resp [n, K], lower_bound, n_iter, converged)``; ``log_resp`` are the posteriors of
    the final parameters (what ``predict_proba`` returns).
  """
  params = _m_step(x, resp0, reg_covar)
  dtype = x.dtype

  def cond(state):
    it, _, lower, prev = state
    return (it < max_iter) & ~(jnp.abs(lower - prev) < tol)

  def body(state):
    it, params, lower, _ = state
    log_norm, log_resp = _e_step(x, *params)
    params = _m_step(x, jnp.exp(log_resp), reg_covar)
    return it + 1, params, jnp.mean(log_norm), lower

  init = (jnp.asarray(0, jnp.int32), params, jnp.asarray(-jnp.inf, dtype),
          jnp.asarray(jnp.nan, dtype))
  it, params, lower, prev = jax.lax.while_loop(cond, body, init)
  converged = jnp.abs(lower - prev) < tol
  _, log_resp = _e_step(x, *params)
  return log_resp, lower, it, converged


def _gmm_leep(xp, y, key, *, num_classes, num_components, max_iter, tol, reg_covar, init):
  """LEEP of the posteriors of a mixture fitted by EM to projected features ``xp`` [n, k]."""
  resp0 = _initial_resp(key, xp, num_components, init)
  log_resp, _, _, _ = _fit_gmm(xp, resp0, max_iter=max_iter, tol=tol, reg_covar=reg_covar)
  return _leep_from_log(log_resp, jnp.exp(log_resp), y, num_classes)


_GMM_STATIC = ("num_classes", "num_components", "max_iter", "tol", "reg_covar", "init")


@functools.partial(jax.jit, static_argnames=_GMM_STATIC + ("pca_dim",))
def _nleep_kernel(x, y, key, *, num_classes, num_components, pca_dim, max_iter, tol, reg_covar,
                  init):
  """N-LEEP with a static PCA width (the traceable path)."""
  return _gmm_leep(peer_numerics.pca_project(x, pca_dim), y, key, num_classes=num_classes,
                   num_components=num_components, max_iter=max_iter, tol=tol,
                   reg_covar=reg_covar, init=init)


@functools.partial(jax.jit, static_argnames=("pca_dim",))
def _project_padded(x, axes, k_keep, *, pca_dim):
  """The first ``pca_dim`` components, columns from ``k_keep`` on zeroed ([n, pca_dim]).

  Zero columns leave every posterior unchanged (the fitted covariances are block diagonal), so
  nearby dimensions share one compiled mixture fit; the fit's program depends on ``(n, pca_dim)``
  only, not on the feature width.
  """
  xp = peer_numerics.pca_project(x, pca_dim, axes)
  return jnp.where(jnp.arange(pca_dim) < k_keep, xp, 0.0)


_gmm_leep_jit = jax.jit(_gmm_leep, static_argnames=_GMM_STATIC)


_pca_eigh_jit = jax.jit(peer_numerics.pca_eigh)


def num_components_for_variance(evals, variance: float) -> int:
  """scikit-learn's rule for ``PCA(n_components=variance)``: fewest components explaining more
  than ``variance`` of the total (``searchsorted(cumsum(ratio), variance, 'right') + 1``)."""
  evals = np.asarray(evals, dtype=np.float64)
  total = evals.sum()
  if total <= 0:
    return 1
  ratio = np.cumsum(evals / total)
  return int(min(np.searchsorted(ratio, variance, side="right") + 1, evals.shape[0]))


def nleep(features, labels, *, key=None, variance: float = 0.8, pca_dim: int | None = None,
          components_per_class: int = 5, num_classes: int | None = None, max_iter: int = 100,
          tol: float = 1e-3, reg_covar: float = 1e-6, init: str = "kmeans++") -> jax.Array:
  """N-LEEP: LEEP on the posteriors of a Gaussian mixture fitted to PCA-reduced features.

  Higher is better. Steps: exact PCA keeping the fewest components that explain more than
  ``variance`` of the variance (scikit-learn's ``PCA(n_components=0.8)`` rule), or exactly
  ``pca_dim`` components; a Gaussian mixture with ``K = components_per_class * C`` full-covariance
  components fitted by EM (scikit-learn's updates, ``reg_covar`` added to every covariance, stop
  when the mean log-likelihood changes by less than ``tol`` or after ``max_iter`` iterations);
  then ``LEEP(posteriors, labels)`` (see :func:`leep`), with the components as source classes.

  EM starts from a hard assignment of every sample to the nearest of ``K`` k-means++ seeds
  (``init="kmeans++"``) or from random responsibilities (``init="random"``), drawn from ``key``:
  the score is random through the initialisation, so fix ``key`` to compare models. The default
  ``key=None`` means ``jax.random.key(0)``: a fixed key, so repeated calls (and ``score_many``,
  ``layer_sweep`` and the command line, which pass no key) give the same score.

  With ``pca_dim=None`` the number of components is read from the data, so the call runs two
  compiled programs (the PCA, then the rest) and cannot be traced: pass ``pca_dim`` (static)
  under ``jit``/``vmap``. The projected dimension is padded with zero columns to a multiple of 8
  (posteriors are unchanged) so that similar dimensions share a compiled program.

  Args:
    features: [n, d] float features.
    labels: [n] int target labels in ``0..C-1``.
    key: ``jax.random`` key for the initialisation (``jax.random.key`` or a legacy
      ``jax.random.PRNGKey``), or an int seed, used as ``jax.random.key(seed)`` (so ``key=0``
      is the default). Default ``None``: ``jax.random.key(0)``.
    variance: fraction of variance the kept principal components explain (0 < variance <= 1).
    pca_dim: fixed number of principal components instead of ``variance`` (static).
    components_per_class: mixture components per target class (5 in the paper).
    num_classes: static ``C``; needed under ``jit``/``vmap``, else ``max(labels) + 1``.
    max_iter: maximum EM iterations (static).
    tol: EM stopping tolerance on the mean log-likelihood (scikit-learn's ``tol``; >= 0).
    reg_covar: added to the diagonal of every covariance (scikit-learn's default 1e-6; >= 0).
    init: ``"kmeans++"`` or ``"random"``.

  Returns:
    Scalar N-LEEP (<= 0).

  Raises:
    ValueError: the input errors of :func:`transrate_jax.transrate`; ``key`` neither a single
      ``jax.random`` key nor an int seed (a string, a float, a bool, a batch of keys);
      ``variance`` not a number in (0, 1]; ``tol`` or ``reg_covar`` not a finite number >= 0;
      ``components_per_class``, ``max_iter`` or ``pca_dim`` not a positive int; an unknown
      ``init``; more mixture components than samples; traced features without ``pca_dim``;
      a mixture fit that breaks down numerically (never a silent NaN).

  Reference: Li et al., "Ranking Neural Checkpoints", CVPR 2021.
  """
  features = registry.no_derivative(features, "nleep")
  if init not in ("kmeans++", "random"):
    raise ValueError(f"init must be 'kmeans++' or 'random'; got {init!r}.")
  key = jax.random.key(0) if key is None else validation.check_prng_key(key)
  validation.check_positive_int(components_per_class, "components_per_class")
  validation.check_positive_int(max_iter, "max_iter")
  validation.check_real_scalar(variance, "variance", maximum=1.0)
  tol = validation.check_real_scalar(tol, "tol", inclusive=True)
  reg_covar = validation.check_real_scalar(reg_covar, "reg_covar", inclusive=True)
  x = validation.check_features(features)
  y, c = validation.check_labels(labels, x.shape[0], num_classes=num_classes)
  n, d = x.shape
  num_components = int(components_per_class) * c
  if num_components > n:
    raise ValueError(
        f"the mixture has {num_components} components (components_per_class * C) but there are "
        f"only {n} samples.")
  config = dict(num_classes=c, num_components=num_components, max_iter=int(max_iter),
                tol=float(tol), reg_covar=float(reg_covar), init=init)
  if pca_dim is not None:
    validation.check_positive_int(pca_dim, "pca_dim")
    k = min(int(pca_dim), n, d)
    return _nleep_kernel(x, y, key, pca_dim=k, **config)
  if not validation.is_concrete(x):
    raise ValueError(
        "features are traced (inside jit/vmap/grad): the variance rule needs concrete values; "
        "pass pca_dim= as a static Python int.")
  _, evals, axes = _pca_eigh_jit(x)
  k = num_components_for_variance(np.asarray(evals), float(variance))
  k_pad = min(-(-k // 8) * 8, axes.shape[1])
  xp = _project_padded(x, axes, jnp.asarray(k, jnp.int32), pca_dim=k_pad)
  score = _gmm_leep_jit(xp, y, key, **config)
  if not np.isfinite(float(score)):
    # Seen in float32 on a 229 x 64 layer with large feature scale: a mixture covariance fails
    # its Cholesky factorisation. Never return a silent NaN.
    raise ValueError(
        f"N-LEEP's Gaussian mixture fit broke down numerically in {x.dtype} (a component "
        "covariance is not positive definite). Pass float64 features (jax_enable_x64), "
        "standardise the features, or raise reg_covar.")
  return score


registry.register_metric(
    "leep", leep, differentiable=True, consumes="source_probs", vmappable=True,
    description="LEEP: log expected empirical prediction of the source classifier's "
                "probabilities (Nguyen et al., ICML 2020)")
registry.register_metric(
    "nce", nce, consumes="source_labels", vmappable=True,
    description="NCE: minus the conditional entropy of target labels given the source "
                "model's hard predictions (Tran et al., ICCV 2019)")
registry.register_metric(
    "nleep", nleep, vmappable=False,
    description="N-LEEP: LEEP on the posteriors of a Gaussian mixture fitted to PCA features "
                "(Li et al., CVPR 2021); a fixed default key")
