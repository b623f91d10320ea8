"""LogME: the logarithm of the maximum Bayesian evidence of a linear model on the features.

You, Liu, Wang and Long, "LogME: Practical Assessment of Pre-trained Models for Transfer
Learning", ICML 2021; "Ranking and Tuning Pre-trained Models: A New Paradigm for Exploiting Model
Hubs", JMLR 2022.

For each target column ``y`` ([N]) and features ``F`` ([N, D]) the model is
``y ~ N(F w, 1/beta)``, ``w ~ N(0, 1/alpha)``, whose log evidence is

    L(a, b) = D/2 log a + N/2 log b - 1/2 logdet(a I_D + b F^T F)
              - b/2 |y - F m|^2 - a/2 |m|^2 - N/2 log(2 pi),
    m = b (a I_D + b F^T F)^{-1} F^T y.

With ``s_i`` the eigenvalues of ``F^T F`` and ``t = a / b`` everything is a sum over the spectrum,
and (a, b) is maximised by MacKay's fixed point

    gamma = sum_i s_i / (t + s_i),   a = gamma / |m|^2,   b = (N - gamma) / |y - F m|^2.

One eigendecomposition (of ``F^T F`` when N >= D, of the Gram matrix ``F F^T`` when N < D) is
shared by every target column, and the fixed point runs for all columns at once.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from transrate_jax._src import numerics
from transrate_jax._src import validation

# Static configuration of the fixed point per preset:
# (max_iter, tol, strict "<" test, stabiliser added to the denominators, evidence variant).
_PRESETS = {
    None: None,
    "thuml": (11, 1e-3, False, 1e-5, "thuml"),
    "tllib": (11, 1e-2, True, 0.0, "tllib"),
}

_DEFAULT_MAX_ITER = 100


def _default_tol(dtype) -> float:
  return 1e-10 if jnp.dtype(dtype) == jnp.float64 else 1e-5


def _spectral_sums(t, sigma, proj, ynorm2, gram_side):
  """|m|^2 and |y - F m|^2 at t = alpha / beta for every column.

  Args:
    t: [T] alpha / beta per column.
    sigma: [K] eigenvalues of F^T F (N >= D) or of F F^T (N < D).
    proj: [K, T] ``V^T F^T y`` (covariance side) or ``U^T y`` (Gram side).
    ynorm2: [T] |y|^2.
    gram_side: static bool.

  Returns:
    (m2 [T], res2 [T]).
  """
  den = t[None, :] + sigma[:, None]
  if gram_side:
    x2 = proj * proj
    m2 = jnp.sum(sigma[:, None] * x2 / (den * den), axis=0)
    res2 = jnp.sum(x2 * (t[None, :] / den) ** 2, axis=0)
  else:
    p2 = proj * proj
    m2 = jnp.sum(p2 / (den * den), axis=0)
    # |y|^2 - 2 y^T F m + m^T F^T F m written per eigen-direction (no division by s_i).
    res2 = ynorm2 - jnp.sum(p2 * (2.0 * t[None, :] + sigma[:, None]) / (den * den), axis=0)
    res2 = jnp.maximum(res2, 0.0)
  return m2, res2


@functools.partial(
    jax.jit,
    static_argnames=("num_columns", "classification", "max_iter", "tol", "strict", "stab",
                     "variant"))
def _logme_kernel(features, targets, *, num_columns, classification, max_iter, tol, strict, stab,
                  variant):
  """Per-column evidence / N, alpha, beta, and loop state. See :func:`logme`."""
  dtype = features.dtype
  n, d = features.shape
  gram_side = n < d
  if classification:
    onehot_sum = lambda a: jax.ops.segment_sum(a, targets, num_segments=num_columns)
    counts = onehot_sum(jnp.ones((n,), dtype))
    ynorm2 = counts
  else:
    ynorm2 = jnp.sum(targets * targets, axis=0)
  if gram_side:
    sigma, vecs = jnp.linalg.eigh(numerics.gram(features))  # U: [N, N]
    proj = onehot_sum(vecs).T if classification else numerics.matmul_tn(vecs, targets)
  else:
    sigma, vecs = jnp.linalg.eigh(numerics.covariance(features))  # V: [D, D]
    fty = onehot_sum(features).T if classification else numerics.matmul_tn(features, targets)
    proj = numerics.matmul_tn(vecs, fty)  # [D, T]
  sigma = jnp.maximum(sigma, 0.0)
  num_eig = sigma.shape[0]
  nf = jnp.asarray(n, dtype)

  def body(state):
    it, t, alpha, beta, m2, res2, done, met = state
    gamma = jnp.sum(sigma[:, None] / (sigma[:, None] + t[None, :]), axis=0)
    m2_new, res2_new = _spectral_sums(t, sigma, proj, ynorm2, gram_side)
    alpha_new = gamma / (m2_new + stab)
    beta_new = (nf - gamma) / (res2_new + stab)
    t_new = alpha_new / beta_new
    rel = jnp.abs(t_new - t) / t
    conv = (rel < tol) if strict else (rel <= tol)
    if variant == "exact":
      # The maximum can lie on the boundary t -> 0 or t -> inf, where the iterate runs off:
      # stop a column before its values overflow (the boundary values are added below).
      bad = ~(jnp.isfinite(t_new) & (t_new > 0) & jnp.isfinite(alpha_new) & (alpha_new > 0)
              & jnp.isfinite(beta_new) & (beta_new > 0))
    else:
      bad = jnp.zeros_like(done)
    upd = ~done & ~bad
    keep = lambda old, new: jnp.where(upd, new, old)
    return (it + 1, keep(t, t_new), keep(alpha, alpha_new), keep(beta, beta_new),
            keep(m2, m2_new), keep(res2, res2_new), done | conv | bad, met | (upd & conv))

  def cond(state):
    return (state[0] < max_iter) & ~jnp.all(state[-2])

  ones = jnp.ones((num_columns,), dtype)
  init = (jnp.asarray(0, jnp.int32), ones, ones, ones, ones, ones,
          jnp.zeros((num_columns,), bool), jnp.zeros((num_columns,), bool))
  it, t, alpha, beta, m2, res2, _, done = jax.lax.while_loop(cond, body, init)
  half_log_2pi = 0.5 * math.log(2.0 * math.pi)

  if variant == "exact":
    # Profile evidence: for fixed t = a/b the best b is N / E(t), E(t) = |y - F m|^2 + t |m|^2,
    #   L(t) / N = -1/(2N) sum_i log(1 + s_i/t) + 1/2 log(N / E(t)) - 1/2 - 1/2 log 2pi,
    # which equals the evidence at a stationary point of the fixed point.
    if gram_side:
      x2 = proj * proj
      energy = lambda tt: jnp.sum(x2 * (tt / (tt + sigma[:, None])), axis=0)
    else:
      energy = lambda tt: ynorm2 - jnp.sum(proj * proj / (tt + sigma[:, None]), axis=0)
    e_t = jnp.maximum(energy(t[None, :]), jnp.finfo(dtype).tiny)
    beta = nf / e_t
    alpha = t * beta
    profile = (-0.5 * jnp.sum(jnp.log1p(sigma[:, None] / t[None, :]), axis=0) / n
               + 0.5 * jnp.log(nf / e_t) - 0.5 - half_log_2pi)
    # t -> inf (alpha -> inf, m = 0): 1/2 log(N / |y|^2) - 1/2 - 1/2 log 2pi.
    at_inf = 0.5 * jnp.log(nf / ynorm2) - 0.5 - half_log_2pi
    candidates = [profile, at_inf]
    if gram_side:
      # t -> 0 with a full-rank Gram matrix (N < D: the features interpolate y, b -> inf):
      #   -1/(2N) sum log s_i - 1/2 log(sum x_i^2 / s_i / N) - 1/2 - 1/2 log 2pi.
      full_rank = sigma[0] > num_eig * jnp.finfo(dtype).eps * sigma[-1]
      safe = jnp.where(full_rank, sigma, 1.0)
      at_zero = (-0.5 * jnp.sum(jnp.log(safe)) / n
                 - 0.5 * jnp.log(jnp.sum(x2 / safe[:, None], axis=0) / nf) - 0.5 - half_log_2pi)
      candidates.append(jnp.where(full_rank, at_zero, -jnp.inf))
    evidence = functools.reduce(jnp.maximum, candidates)
    done = done | (evidence > profile)
  else:
    # Presets keep |m|^2 and |y - F m|^2 from the last update, as the public code does.
    log_terms = jnp.log(alpha[None, :] + beta[None, :] * sigma[:, None])  # [K, T]
    if variant == "thuml" and not gram_side:
      # thuml/LogME keeps singular values above 1e-10 (truncated SVD) when N > D.
      log_terms = jnp.where((sigma > 1e-20)[:, None], log_terms, 0.0)
    logdet = jnp.sum(log_terms, axis=0)
    if variant != "thuml":
      # The D - K eigenvalues not in the K-side spectrum are zeros: log(alpha + beta * 0).
      logdet = logdet + (d - num_eig) * jnp.log(alpha)
    evidence = (d / 2.0 * jnp.log(alpha) + n / 2.0 * jnp.log(beta) - 0.5 * logdet
                - beta / 2.0 * res2 - alpha / 2.0 * m2) / n - half_log_2pi
  if classification:
    present = counts > 0
    score = jnp.sum(jnp.where(present, evidence, 0.0)) / jnp.sum(present)
    converged = jnp.all(done | ~present)
  else:
    score = jnp.mean(evidence)
    converged = jnp.all(done)
  info = {"converged": converged, "iterations": it, "evidence": evidence, "alpha": alpha,
          "beta": beta}
  return score, info


def _check_regression_targets(targets, n):
  shape = np.shape(targets)
  if len(shape) not in (1, 2):
    raise ValueError(f"regression targets must have shape [n] or [n, k]; got {tuple(shape)}.")
  if shape[0] != n:
    raise ValueError(f"targets has {shape[0]} rows but the features have {n} rows.")
  if len(shape) == 2 and shape[1] < 1:
    raise ValueError("regression targets need at least one column.")
  dtype = np.dtype(getattr(targets, "dtype", None) or np.asarray(targets).dtype)
  if not (np.issubdtype(dtype, np.number) or dtype == np.bool_):
    raise ValueError(f"targets must be numeric; got dtype {dtype}.")
  if validation.is_concrete(targets):
    if not isinstance(targets, (np.ndarray, jax.Array)):
      targets = np.asarray(targets)
    if not validation.all_finite(targets):
      raise ValueError("targets contains NaN or inf values.")
  targets = jnp.asarray(targets)
  return targets[:, None] if targets.ndim == 1 else targets


def logme(features, targets, *, regression: bool = False, num_classes: int | None = None,
          preset: str | None = None, max_iter: int | None = None, tol: float | None = None,
          return_info: bool = False):
  """LogME: mean over target columns of the maximum log evidence per sample (higher is better).

  For each target column ``y`` (the indicator ``labels == c`` of each class ``c`` for
  classification, or each regression column), maximises over ``(alpha, beta)``

      L = D/2 log a + N/2 log b - 1/2 logdet(a I_D + b F^T F) - b/2 |y - F m|^2
          - a/2 |m|^2 - N/2 log 2pi,      m = b (a I_D + b F^T F)^{-1} F^T y,

  with MacKay's fixed point ``gamma = sum_i b s_i / (a + b s_i)``, ``a = gamma / |m|^2``,
  ``b = (N - gamma) / |y - F m|^2`` (``s``: eigenvalues of ``F^T F``) under ``lax.while_loop``,
  and returns ``mean_y L / N``. Higher is better: features under which a linear model explains
  the targets with more evidence.

  Default (``preset=None``): the exact evidence (``logdet`` over all D eigenvalues, so the
  ``(D - k) log a`` term of a rank-``k`` feature matrix counts when N < D), the evidence
  evaluated at the final ``(a, b)``, iterations until ``|t' - t| / t <= tol`` for ``t = a / b``.

  Presets reproduce public code to round-off (float64):

  - ``"thuml"``: thuml/LogME ``LogME.fit`` (fixed-point version): at most 11 iterations,
    tolerance 1e-3, ``1e-5`` added to ``|m|^2`` and ``|y - F m|^2`` in the updates, and a
    ``logdet`` over only the ``min(N, D)`` singular directions (when N > D those with singular
    value > 1e-10). Dropping the ``(D - k) log a`` term inflates the score when N < D.
  - ``"tllib"``: ``tllib.ranking.log_maximum_evidence`` (the ICML 2021 iteration): at most 11
    iterations, stop when the relative change of ``a / b`` is below 0.01, no stabilisers, ``logdet``
    over all D eigenvalues.

  Both presets evaluate the evidence with ``|m|^2`` and ``|y - F m|^2`` of the last update.
  Classes with no samples (possible with ``num_classes``) are left out of the mean: their
  evidence is unbounded (the public code returns inf/NaN or a stabiliser-dependent number).

  Cost: one ``F^T F`` (N >= D) or ``F F^T`` (N < D) matmul and one eigendecomposition of the
  smaller side, shared by all columns; each iteration is O(min(N, D) * T).

  Args:
    features: [N, D] float features.
    targets: [N] int class labels in ``0..C-1`` (classification), or with ``regression=True``
      [N] or [N, k] float targets.
    regression: targets are real-valued columns.
    num_classes: static number of classes C (required under ``jit``/``vmap`` with traced labels);
      default ``max(labels) + 1``.
    preset: None (exact), ``"thuml"`` or ``"tllib"``.
    max_iter: maximum fixed-point iterations (default 100; presets 11).
    tol: relative tolerance on ``a / b`` (default 1e-10 in float64, 1e-5 in float32; presets as
      above).
    return_info: also return a dict with ``converged`` (bool, every column met the tolerance),
      ``iterations`` (int), and per column ``evidence`` (L / N), ``alpha``, ``beta`` ([T]).

  Returns:
    The score (scalar, the features' float dtype), or ``(score, info)`` with ``return_info``.

  Example:
    >>> score = logme(features, labels)                         # doctest: +SKIP
    >>> score, info = logme(features, labels, return_info=True)  # doctest: +SKIP
  """
  if preset not in _PRESETS:
    raise ValueError(f"preset must be None, 'thuml' or 'tllib'; got {preset!r}.")
  features = validation.check_features(features)
  n = features.shape[0]
  if regression:
    if num_classes is not None:
      raise ValueError("num_classes is for classification; it cannot be used with regression=True.")
    targets = _check_regression_targets(targets, n).astype(features.dtype)
    num_columns = targets.shape[1]
  else:
    targets, num_columns = validation.check_labels(targets, n, num_classes=num_classes,
                                                   name="targets")
  if preset is None:
    p_iter, p_tol, strict, stab, variant = (_DEFAULT_MAX_ITER, _default_tol(features.dtype), False,
                                            0.0, "exact")
  else:
    p_iter, p_tol, strict, stab, variant = _PRESETS[preset]
  max_iter = p_iter if max_iter is None else max_iter
  tol = p_tol if tol is None else tol
  if not isinstance(max_iter, (int, np.integer)) or isinstance(max_iter, bool) or max_iter < 1:
    raise ValueError(f"max_iter must be a positive Python int; got {max_iter!r}.")
  if not (isinstance(tol, (int, float)) and math.isfinite(tol) and tol >= 0):
    raise ValueError(f"tol must be a non-negative Python float; got {tol!r}.")
  score, info = _logme_kernel(features, targets, num_columns=num_columns,
                              classification=not regression, max_iter=int(max_iter),
                              tol=float(tol), strict=strict, stab=stab, variant=variant)
  return (score, info) if return_info else score
