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

One eigendecomposition is shared by every target column, and the fixed point runs for all
columns at once. The exact evidence (``preset=None``) is computed from the *centred* features
``Z`` (two-pass, shifted) divided by a power of two near ``max |Z|``, with the mean entering as
one rank-one "mean row" (``F^T F = s^2 (Z^T Z + N mu mu^T)``, matrix determinant lemma and one
recursive-least-squares step): a large common offset no longer squares the condition number of
``F^T F`` (``F + 3000`` was ``inf`` in float32) and the score is scale invariant in float32 too.
The presets reproduce public code and keep its raw ``F^T F``.
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from transrate_jax._src import linalg
from transrate_jax._src import numerics
from transrate_jax._src import peer_numerics
from transrate_jax._src import registry
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
def _logme_preset_kernel(features, targets, *, num_columns, classification, max_iter, tol, strict,
                         stab, variant):
  """Per-column evidence / N, alpha, beta, and loop state of a preset. See :func:`logme`.

  The presets reproduce public code, which works on the raw (uncentred, unscaled) ``F^T F``;
  so does this kernel, with XLA's ``eigh`` on every backend (the thuml truncation of a dead unit's
  round-off eigenvalue reproduces the public number with it, not with the host LAPACK of
  :func:`numerics.product_spectrum`).
  """
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
    sigma, vecs = linalg.eigh(numerics.gram(features))  # U: [N, N]
    proj = onehot_sum(vecs).T if classification else numerics.matmul_tn(vecs, targets)
  else:
    sigma, vecs = linalg.eigh(numerics.covariance(features))  # V: [D, D]
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
    upd = ~done
    keep = lambda old, new: jnp.where(upd, new, old)
    return (it + 1, keep(t, t_new), keep(alpha, alpha_new), keep(beta, beta_new),
            keep(m2, m2_new), keep(res2, res2_new), done | conv, met | (upd & conv))

  def cond(state):
    return (state[0] < max_iter) & ~jnp.all(state[-2])

  ones = jnp.ones((num_columns,), dtype)
  init = (jnp.asarray(0, jnp.int32), ones, ones, ones, ones, ones,
          jnp.zeros((num_columns,), bool), jnp.zeros((num_columns,), bool))
  it, t, alpha, beta, m2, res2, _, done = jax.lax.while_loop(cond, body, init)
  half_log_2pi = 0.5 * math.log(2.0 * math.pi)
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
  present = counts > 0 if classification else jnp.ones((num_columns,), bool)
  return _finish(evidence, present, done, it, alpha, beta, jnp.zeros((num_columns,), bool))


def _finish(evidence, present, done, it, alpha, beta, unbounded):
  """Score (mean evidence over the present columns) and the info dict."""
  score = jnp.sum(jnp.where(present, evidence, 0.0)) / jnp.sum(present)
  info = {"converged": jnp.all(done | ~present), "iterations": it, "evidence": evidence,
          "alpha": alpha, "beta": beta,
          "unbounded": jnp.any(present & (unbounded | ~jnp.isfinite(evidence)))}
  return score, info


def _centred_spectrum(features, targets, *, num_columns, classification):
  """The spectral data of the exact evidence, from centred features brought to unit size.

  The features are written ``F = s (Z + 1 mu^T)`` with ``Z`` centred (two-pass, shifted),
  ``mu`` the mean and ``s`` a power of two near ``max |Z|`` (exact division). Then
  ``F^T F / s^2 = Z^T Z + N mu mu^T``: the centred scatter plus one rank-one "mean row"
  ``sqrt(N) mu`` with target ``sqrt(N) ybar``. Its spectral data, in the eigenbasis
  ``(s_i, v_i)`` of ``Z^T Z`` (of ``Z Z^T`` when N < D, plus one null direction carrying the
  part of ``mu`` outside the row space of ``Z``):

  Returns:
    dict with ``s`` [K], ``c = v^T mu`` [K], ``p = v^T Z^T y_c`` [K, T], ``ybar`` [T],
    ``yc2 = |y - ybar|^2`` [T], ``ynorm2 = |y|^2`` [T], ``present`` [T], ``scale2 = s^2``,
    ``mu2 = |mu|^2``, and on the Gram side ``x = U^T y_c`` [N, T], ``s_gram`` [N] (masked) and
    ``kept`` (the number of non-zero eigenvalues).
  """
  dtype = features.dtype
  n, d = features.shape
  nf = jnp.asarray(n, dtype)
  m1 = jnp.mean(features, axis=0)
  r = features - m1
  m2 = jnp.mean(r, axis=0)
  z = r - m2
  mu = m1 + m2
  zmax = jnp.max(jnp.abs(z))
  scale = peer_numerics.pow2_above(jnp.where(zmax > 0, zmax, jnp.max(jnp.abs(mu))))
  z = z / scale
  mu = mu / scale
  if classification:
    seg = lambda a: jax.ops.segment_sum(a, targets, num_segments=num_columns)
    counts = seg(jnp.ones((n,), dtype))
    ybar = counts / nf
    yc2 = counts * (1.0 - ybar)
    ynorm2 = counts
    present = counts > 0
    # a^T (y - ybar); for a = Z the column sums (0 up to round-off) are removed explicitly.
    zty = lambda a: seg(a).T - jnp.sum(a, axis=0)[:, None] * ybar[None, :]
  else:
    ybar = jnp.mean(targets, axis=0)
    yc = numerics.center(targets)
    yc2 = jnp.sum(yc * yc, axis=0)
    ynorm2 = jnp.sum(targets * targets, axis=0)
    present = jnp.ones((num_columns,), bool)
    zty = lambda a: numerics.matmul_tn(a, yc)
  out = dict(ybar=ybar, yc2=yc2, ynorm2=ynorm2, present=present, scale2=scale * scale,
             mu2=jnp.sum(mu * mu))
  if n >= d:
    s, vb = numerics.product_spectrum(z, jnp.concatenate([mu[:, None], zty(z)], axis=1))
    out["s"] = jnp.maximum(s, 0.0)
    out["c"] = vb[:, 0]  # V^T mu
    out["p"] = vb[:, 1:]  # V^T Z^T y_c
  else:
    zmu = jnp.matmul(z, mu, precision=numerics.HIGHEST)  # [N]
    y_centred = (jax.nn.one_hot(targets, num_columns, dtype=dtype) - ybar[None, :]
                 if classification else yc)  # [N, T]
    s, ub = numerics.product_spectrum(z, jnp.concatenate([zmu[:, None], y_centred], axis=1),
                                      gram=True)
    s = jnp.maximum(s, 0.0)
    keep = s > n * jnp.finfo(dtype).eps * jnp.max(s)
    s = jnp.where(keep, s, 0.0)
    x = ub[:, 1:]  # U^T y_c: [N, T]
    q = ub[:, 0]  # U^T Z mu: [N]
    root = jnp.sqrt(jnp.where(keep, s, 1.0))
    c = jnp.where(keep, q / root, 0.0)
    cperp2 = jnp.maximum(out["mu2"] - jnp.sum(c * c), 0.0)
    # One null direction (s = 0) carries the part of mu outside the row space of Z.
    out["s"] = jnp.concatenate([s, jnp.zeros((1,), dtype)])
    out["c"] = jnp.concatenate([c, jnp.sqrt(cperp2)[None]])
    out["p"] = jnp.concatenate([jnp.where(keep[:, None], root[:, None] * x, 0.0),
                                jnp.zeros((1, num_columns), dtype)])
    out.update(x=x, s_gram=s, kept=jnp.sum(keep), cperp2=cperp2, root=root, keep=keep)
  return out


def _exact_terms(t, sp, n, gram_side):
  """Everything the exact fixed point and evidence need at ``t = alpha / beta`` ([T]).

  With ``D_t = diag(t + s_i)``, ``h = N sum c_i^2 / (t + s_i)`` and the ridge solution of the
  centred problem ``m0 = D_t^{-1} p``, the mean row enters by one recursive-least-squares step:

      r0 = ybar - c^T m0,   m = D_t^{-1} (p + k c),   k = N r0 / (1 + h),
      E(t) = |y - F m|^2 + t |m|^2 = E0(t) + N r0^2 / (1 + h),
      logdet(I + F^T F / t) = sum_i log(1 + s_i / t) + log(1 + h),
      gamma = sum_i s_i / (t + s_i) + t N sum_i c_i^2 / (t + s_i)^2 / (1 + h),

  where ``E0 = |y_c|^2 - sum p_i^2 / (t + s_i)`` (covariance side) or
  ``sum_j x_j^2 t / (t + s_j)`` (Gram side, no cancellation).

  Returns:
    (gamma, m2, res2, energy, logdet, energy_underflow), each [T].
  """
  s, c, p = sp["s"], sp["c"], sp["p"]
  nf = jnp.asarray(n, s.dtype)
  den = t[None, :] + s[:, None]  # [K, T]
  cd = c[:, None] / den
  h = nf * jnp.sum(c[:, None] * cd, axis=0)
  r0 = sp["ybar"] - jnp.sum(cd * p, axis=0)
  k = nf * r0 / (1.0 + h)
  mcoef = (p + k[None, :] * c[:, None]) / den
  m2 = jnp.sum(mcoef * mcoef, axis=0)
  if gram_side:
    x = sp["x"]
    e0 = jnp.sum(x * x * (t[None, :] / (t[None, :] + sp["s_gram"][:, None])), axis=0)
  else:
    e0 = sp["yc2"] - jnp.sum(p * p / den, axis=0)
  underflow = e0 <= 0
  e0 = jnp.maximum(e0, 0.0)
  energy = e0 + nf * r0 * r0 / (1.0 + h)
  res2 = jnp.maximum(energy - t * m2, 0.0)
  gamma = (jnp.sum(s[:, None] / den, axis=0)
           + t * nf * jnp.sum(cd * cd, axis=0) / (1.0 + h))
  logdet = jnp.sum(jnp.log1p(s[:, None] / t[None, :]), axis=0) + jnp.log1p(h)
  return gamma, m2, res2, energy, logdet, underflow & (energy <= 0)


@functools.partial(jax.jit, static_argnames=("num_columns", "classification", "max_iter", "tol"))
def _logme_exact_kernel(features, targets, *, num_columns, classification, max_iter, tol):
  """Per-column exact evidence / N and the info dict. See :func:`logme`."""
  dtype = features.dtype
  n, d = features.shape
  gram_side = n < d
  sp = _centred_spectrum(features, targets, num_columns=num_columns,
                         classification=classification)
  nf = jnp.asarray(n, dtype)

  def body(state):
    it, t, done, met = state
    gamma, m2, res2, _, _, _ = _exact_terms(t, sp, n, gram_side)
    t_new = (gamma / m2) / ((nf - gamma) / res2)
    rel = jnp.abs(t_new - t) / t
    conv = rel <= tol
    # The maximum can lie on the boundary t -> 0 or t -> inf, where the iterate runs off:
    # stop a column before its values overflow (the boundary values are added below).
    bad = ~(jnp.isfinite(t_new) & (t_new > 0))
    upd = ~done & ~bad
    return (it + 1, jnp.where(upd, t_new, t), done | conv | bad, met | (upd & conv))

  def cond(state):
    return (state[0] < max_iter) & ~jnp.all(state[-2])

  init = (jnp.asarray(0, jnp.int32), jnp.ones((num_columns,), dtype),
          jnp.zeros((num_columns,), bool), jnp.zeros((num_columns,), bool))
  it, t, _, done = jax.lax.while_loop(cond, body, init)
  const = -0.5 - 0.5 * math.log(2.0 * math.pi)
  # Profile evidence: for fixed t = a/b the best b is N / E(t), E(t) = |y - F m|^2 + t |m|^2,
  #   L(t) / N = -1/(2N) logdet(I + F^T F / t) + 1/2 log(N / E(t)) - 1/2 - 1/2 log 2pi,
  # which equals the evidence at a stationary point of the fixed point.
  _, _, _, energy, logdet, underflow = _exact_terms(t, sp, n, gram_side)
  e_t = jnp.maximum(energy, jnp.finfo(dtype).tiny)
  profile = -0.5 * logdet / n + 0.5 * jnp.log(nf / e_t) + const
  beta = nf / e_t
  # t -> inf (alpha -> inf, m = 0): 1/2 log(N / |y|^2) - 1/2 - 1/2 log 2pi.
  at_inf = 0.5 * jnp.log(nf / sp["ynorm2"]) + const
  candidates = [profile, at_inf]
  if gram_side:
    # t -> 0 when F F^T is non-singular (N < D: the features interpolate y, b -> inf): Z Z^T has
    # rank N - 1 (the ones vector is its null space) and the mean has a part outside the row
    # space of Z. With E(t) / t -> sum x_j^2 / s_j + r0(0)^2 / |mu_perp|^2 and
    # logdet(F F^T) = sum log s_j + log(N |mu_perp|^2):
    s_g, cperp2 = sp["s_gram"], sp["cperp2"]
    eps = jnp.finfo(dtype).eps
    big = jnp.maximum(jnp.max(s_g), nf * sp["mu2"])
    full_rank = (sp["kept"] == n - 1) & (nf * cperp2 > (n + 1) * eps * big)
    keep = sp["keep"]
    safe = jnp.where(keep, s_g, 1.0)
    x = sp["x"]
    c = sp["c"][:n]
    r00 = sp["ybar"] - jnp.sum(jnp.where(keep[:, None], c[:, None] * x / sp["root"][:, None],
                                         0.0), axis=0)
    safe_perp = jnp.where(full_rank, cperp2, 1.0)
    ratio = (jnp.sum(jnp.where(keep[:, None], x * x / safe[:, None], 0.0), axis=0)
             + r00 * r00 / safe_perp)
    logdet0 = jnp.sum(jnp.where(keep, jnp.log(safe), 0.0)) + jnp.log(nf * safe_perp)
    at_zero = -0.5 * logdet0 / n - 0.5 * jnp.log(ratio / nf) + const
    candidates.append(jnp.where(full_rank, at_zero, -jnp.inf))
  evidence = functools.reduce(jnp.maximum, candidates)
  # A column whose supremum is a boundary value (the iterate runs off towards it) counts as
  # converged once the profile at the iterate is within round-off of that value.
  boundary = functools.reduce(jnp.maximum, candidates[1:])
  slack = 1e3 * jnp.finfo(dtype).eps * (1.0 + jnp.abs(boundary))
  done = done | (boundary >= profile - slack)
  # alpha, beta of the original features: alpha scales with s^2 (F = s F_unit).
  alpha = t * beta * sp["scale2"]
  unbounded = underflow & (evidence <= profile)
  if n > d:
    # More samples than features: if a target column is a linear function of the features (to
    # round-off), E(t) -> 0 faster than the logdet grows as t -> 0 and the evidence is
    # unbounded. With t_min = eps * max(s) (a ridge at the round-off of the centred spectrum,
    # which the mean row, handled exactly, does not limit), that is the case when the
    # least-squares residual E(t_min) is within the round-off of E (K eps |y|^2), or when it is
    # small (16 K eps |y|^2) and the evidence at t_min is at least the maximum found (it still
    # rises at the resolvable boundary). A genuine residual, even of a few 1e-3 |y|^2 as
    # well-separated classes in d = 2048 give, is resolved in float32: the evidence falls again
    # towards t_min. (The evidence at t_min alone decides nothing: with eigenvalues below
    # round-off, as dead units and a MobileNetV2 stem have, it can exceed a genuine interior
    # maximum.)
    eps = jnp.finfo(dtype).eps
    num_eig = sp["s"].shape[0]
    t_min = jnp.full((num_columns,), jnp.maximum(eps * jnp.max(sp["s"]), jnp.finfo(dtype).tiny),
                     dtype)
    _, _, _, e_min, logdet_min, _ = _exact_terms(t_min, sp, n, gram_side)
    at_min = (-0.5 * logdet_min / n
              + 0.5 * jnp.log(nf / jnp.maximum(e_min, jnp.finfo(dtype).tiny)) + const)
    peak_at_min = (t <= t_min) | (at_min >= evidence - slack)
    tiny = e_min <= num_eig * eps * sp["ynorm2"]
    small = e_min <= 16 * num_eig * eps * sp["ynorm2"]
    unbounded = unbounded | tiny | (small & peak_at_min)
  return _finish(evidence, sp["present"], done, it, alpha, beta, unbounded)


def _check_regression_targets(targets, n):
  shape = np.shape(targets)
  if len(shape) not in (1, 2):
    raise ValueError(f"regression targets must have shape [n] or [n, k]; got {tuple(shape)}.")
  if shape[0] != n:
    raise ValueError(f"targets has {shape[0]} rows but the features have {n} rows.")
  if len(shape) == 2 and shape[1] < 1:
    raise ValueError("regression targets need at least one column.")
  dtype = np.dtype(getattr(targets, "dtype", None) or np.asarray(targets).dtype)
  validation.check_real_dtype(dtype, "targets")
  if validation.is_concrete(targets):
    if not isinstance(targets, (np.ndarray, jax.Array)):
      targets = np.asarray(targets)
    if not validation.all_finite(targets):
      raise ValueError("targets contains NaN or inf values.")
  targets = jnp.asarray(targets)
  return targets[:, None] if targets.ndim == 1 else targets


class LogMEDetails(NamedTuple):
  """:func:`logme_details`: the score and the fixed point behind it.

  Attributes:
    score: the LogME score (what :func:`logme` returns).
    converged: bool, every target column met the tolerance.
    iterations: int, fixed-point iterations run.
    evidence: [T] the maximum log evidence per sample of each target column (L / N).
    alpha: [T] the maximising prior precision of each column.
    beta: [T] the maximising noise precision of each column.
  """
  score: jax.Array
  converged: jax.Array
  iterations: jax.Array
  evidence: jax.Array
  alpha: jax.Array
  beta: jax.Array


def logme(features, labels, *, regression: bool = False, num_classes: int | None = None,
          preset: str | None = None, max_iter: int | None = None,
          tol: float | None = None) -> jax.Array:
  """LogME: mean over target columns of the maximum log evidence per sample (higher is better).

  For each target column ``y`` (the indicator ``labels == c`` of each class ``c`` for
  classification, or each regression column), maximises over ``(alpha, beta)`` ::

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

  Cost: one ``Z^T Z`` (N >= D) or ``Z Z^T`` (N < D) matmul and one eigendecomposition of the
  smaller side, shared by all columns, which needs the eigenvectors only to project the targets
  and the mean (on the CPU both on the host, by BLAS ``syrk``, LAPACK's tridiagonal reduction and
  divide and conquer: :func:`numerics.product_spectrum`); each iteration is O(min(N, D) * T).

  Numerics: the exact score is invariant to rescaling the features, ``logme(s F) = logme(F)``
  (the maximising ``alpha`` scales by ``s^2``), in float32 as well: the features are centred
  with a shift and divided by a power of two before any product, and the mean is carried as a
  separate rank-one term, so an offset such as ``F + 3000`` is handled to float32 accuracy
  (LogME is *not* offset invariant: the model has no intercept). Presets keep the public
  formulas and can break down in float32 on such inputs; they then raise.

  Raises:
    ValueError: bad shapes, dtypes (complex included) or labels; the evidence is unbounded (a
      target column is exactly a linear function of the features with N > D, or a regression
      column is all zero); a preset's fixed point produced a non-finite evidence. Under
      ``jit``/``vmap`` these are not raised: an unbounded evidence is then a large or infinite
      value.

  Args:
    features: [N, D] float features.
    labels: [N] int class labels in ``0..C-1`` (classification), or with ``regression=True``
      [N] or [N, k] float targets.
    regression: targets are real-valued columns.
    num_classes: static number of classes C (required under ``jit``/``vmap`` with traced labels);
      default ``max(labels) + 1``.
    preset: None (exact), ``"thuml"`` or ``"tllib"``.
    max_iter: maximum fixed-point iterations (default 100; presets 11).
    tol: relative tolerance on ``a / b`` (default 1e-10 in float64, 1e-5 in float32; presets as
      above).

  Returns:
    The score (scalar, the features' float dtype). The fixed point (``alpha``, ``beta``,
    convergence) comes from :func:`logme_details`.

  Example:
    >>> score = logme(features, labels)                # doctest: +SKIP
    >>> details = logme_details(features, labels)      # doctest: +SKIP
    >>> details.alpha, details.converged               # doctest: +SKIP
  """
  features = registry.no_derivative(features, "logme")
  return logme_details(features, labels, regression=regression, num_classes=num_classes,
                       preset=preset, max_iter=max_iter, tol=tol).score


def logme_details(features, labels, *, regression: bool = False, num_classes: int | None = None,
                  preset: str | None = None, max_iter: int | None = None,
                  tol: float | None = None) -> LogMEDetails:
  """:func:`logme` with its fixed point: a :class:`LogMEDetails`.

  Same arguments, validation and numerics as :func:`logme`; works under ``jit`` and ``vmap`` (a
  NamedTuple of arrays).
  """
  features = registry.no_derivative(features, "logme")
  targets = labels
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
  validation.check_positive_int(max_iter, "max_iter")
  if not (isinstance(tol, (int, float)) and math.isfinite(tol) and tol >= 0):
    raise ValueError(f"tol must be a non-negative Python float; got {tol!r}.")
  if variant == "exact":
    score, info = _logme_exact_kernel(features, targets, num_columns=num_columns,
                                      classification=not regression, max_iter=int(max_iter),
                                      tol=float(tol))
  else:
    score, info = _logme_preset_kernel(features, targets, num_columns=num_columns,
                                       classification=not regression, max_iter=int(max_iter),
                                       tol=float(tol), strict=strict, stab=stab, variant=variant)
  unbounded = info.pop("unbounded")
  if validation.is_concrete(score) and bool(unbounded):
    if variant == "exact":
      raise ValueError(
          "LogME: the evidence is unbounded for these targets: a target column is exactly "
          f"(to {features.dtype} round-off) a linear function of the features, or is all zero "
          "(|y - F m| -> 0 as alpha / beta -> 0).")
    raise ValueError(
        f"LogME preset {preset!r}: the public fixed point breaks down on these features in "
        f"{features.dtype} (a non-finite evidence); use preset=None (exact, scale and "
        "offset robust) or float64 features.")
  return LogMEDetails(score=score, converged=info["converged"], iterations=info["iterations"],
                      evidence=info["evidence"], alpha=info["alpha"], beta=info["beta"])


registry.register_metric(
    "logme", logme, vmappable=True,
    description="LogME: maximum log evidence of a Bayesian linear model on the features "
                "(You et al., ICML 2021)")
