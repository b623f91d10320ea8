"""Neural Collapse Transferability Index (NCTI).

Wang, Luo, Zheng, Huang and Baktashmotlagh, "How Far Pre-trained Models Are from Neural Collapse
on the Target Dataset Informs their Transferability", ICCV 2023. Reference code:
``BUserName/NCTI`` ``metrics.py`` (``NCTI_Score``: three terms per candidate) and
``evaluate_metric_group1_cpu.py`` (each term min-max normalised over the model set, then
``ncc + seli - vc``).

Per candidate, the features are reduced to their first 64 principal components ``z`` and a
linear discriminant analysis (LDA) is fitted on ``z``; the three terms are

* ``seli`` (within-class variability collapse, "all_lowfeat_nuc"): the nuclear norm of the centred
  LDA projection of ``z`` (higher: more between-class spread relative to within-class scatter);
* ``ncc`` (nearest-centre classifier, "sfda_score"): the mean LDA posterior of the true class;
* ``vc`` (class-mean geometry / compactness, "log(class_pred_nuc)"): ``log sum_c ||P_c||_*`` of
  the per-class posterior matrices (lower: each class's predictions closer to rank one).
"""

from __future__ import annotations

import functools
from typing import Mapping, NamedTuple, Sequence, Union

import jax
import jax.numpy as jnp
import numpy as np

from transrate_jax._src import linalg
from transrate_jax._src import numerics
from transrate_jax._src import peer_numerics
from transrate_jax._src import registry
from transrate_jax._src import validation

HIGHEST = numerics.HIGHEST

# NCTI_Score: shrinkage = max(exp(-sum of the first 32 PCA variances), 1e-10); at the floor the
# public code switches to LinearDiscriminantAnalysis(solver='svd') (no shrinkage).
_SHRINKAGE_FLOOR = 1e-10
# scikit-learn LinearDiscriminantAnalysis(tol=1e-4): rank cut of the SVD solver's two SVDs.
_LDA_TOL = 1e-4
# pca_solver="auto": exact eigh of the smaller side up to this size, subspace iteration above.
_EXACT_MAX = 512
_PCA_SOLVERS = ("auto", "exact", "iterative")
# Subspace iteration: stop when every top-k Ritz residual |M v - theta v| <= tol * theta_1.
_ITER_TOL = {np.dtype(np.float32): 1e-5, np.dtype(np.float64): 1e-11}
_ITER_MAX = 150


class NCTITerms(NamedTuple):
  """The three NCTI terms of one candidate (scalars in the features' float dtype).

  Attributes:
    seli: nuclear norm of the centred LDA features (higher is better).
    ncc: mean LDA posterior probability of the true class, in ``[0, 1]`` (higher is better).
    vc: ``log`` of the summed nuclear norms of the per-class posterior matrices (lower is
      better).
  """
  seli: jax.Array
  ncc: jax.Array
  vc: jax.Array


def _class_rows(labels, num_classes: int):
  """Row indices grouped by class, ``([C, m] int32, [C, m] bool)`` with ``m`` the largest class
  count, from concrete labels (``None`` for traced ones)."""
  if not validation.is_concrete(labels):
    return None, None
  y = np.asarray(labels).astype(np.int64).ravel()
  counts = np.bincount(y, minlength=num_classes)
  m = max(int(counts.max()), 1)
  order = np.argsort(y, kind="stable")
  starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
  slot = np.arange(m)[None, :]
  valid = slot < counts[:, None]
  idx = np.where(valid, order[np.minimum(starts[:, None] + slot, len(y) - 1)], 0)
  return jnp.asarray(idx.astype(np.int32)), jnp.asarray(valid)


def _orthonormalise(y):
  """An orthonormal basis of the columns of ``y`` [p, l] by shifted CholeskyQR3 (Fukaya et al.,
  SIAM J. Sci. Comput. 2020): a shifted Cholesky pass makes any full-rank ``y`` well conditioned,
  two plain CholeskyQR passes make it orthonormal to working precision. Matmul-bound: much faster
  on CPU than a Householder QR of a tall block."""
  p, l = y.shape
  eps = jnp.finfo(y.dtype).eps
  eye = jnp.eye(l, dtype=y.dtype)

  def chol_pass(a, shift):
    g = numerics.symmetrize(numerics.matmul_tn(a, a))
    chol = linalg.cholesky(g + shift * eye)  # g = L L^T
    return linalg.triangular_solve(chol, a, left_side=False, lower=True, transpose_a=True)  # a L^-T

  y = y / jnp.maximum(jnp.max(jnp.abs(y)), jnp.finfo(y.dtype).tiny)  # exact scale, no overflow
  shift = 11.0 * (p * l + l * (l + 1)) * eps * jnp.sum(y * y)
  return chol_pass(chol_pass(chol_pass(y, shift), 0.0), 0.0)


def _subspace_eigh(m, k):
  """The ``k`` largest eigenpairs ``(theta [k], v [p, k])`` of the symmetric PSD ``m`` [p, p] by
  block subspace iteration (block ``min(p, 2k + 16)``, fixed random start, Rayleigh-Ritz on each
  orthonormalised block), until every Ritz residual ``|m v_j - theta_j v_j| <= tol * theta_1``
  (``tol`` 1e-5 in float32, 1e-11 in float64; at most 150 steps)."""
  p = m.shape[0]
  l = min(p, 2 * k + 16)
  tol = _ITER_TOL[np.dtype(m.dtype)]

  def cond(state):
    i, _, res, _, _ = state
    return (i < _ITER_MAX) & (res > tol)

  def body(state):
    i, y, _, _, _ = state
    q = _orthonormalise(y)
    y = jnp.matmul(m, q, precision=HIGHEST)
    b = numerics.symmetrize(numerics.matmul_tn(q, y))
    theta, w = linalg.eigh(b)
    w = w[:, ::-1][:, :k]
    theta = theta[::-1][:k]
    r = jnp.matmul(y - jnp.matmul(q, b, precision=HIGHEST), w, precision=HIGHEST)
    res = jnp.max(jnp.linalg.norm(r, axis=0)) / jnp.maximum(theta[0], jnp.finfo(m.dtype).tiny)
    return i + 1, y, res, theta, jnp.matmul(q, w, precision=HIGHEST)

  omega = jax.random.normal(jax.random.key(0), (p, l), m.dtype)
  init = (0, omega, jnp.asarray(jnp.inf, m.dtype), jnp.zeros((k,), m.dtype),
          jnp.zeros((p, k), m.dtype))
  _, _, _, theta, v = jax.lax.while_loop(cond, body, init)
  return jnp.maximum(theta, 0.0), v


def _top_components(x, k, solver):
  """``(scatter eigenvalues [k], principal component scores z [n, k])`` of the rows of ``x``."""
  n, d = x.shape
  xc = numerics.center(x)
  if solver == "exact" or (solver == "auto" and min(n, d) <= _EXACT_MAX):
    _, evals, axes = peer_numerics.pca_eigh(x)
    return evals[:k], jnp.matmul(xc, axes[:, :k], precision=HIGHEST)
  if n >= d:
    theta, v = _subspace_eigh(numerics.symmetrize(numerics.covariance(xc)), k)
    return theta, jnp.matmul(xc, v, precision=HIGHEST)
  theta, u = _subspace_eigh(numerics.symmetrize(numerics.gram(xc)), k)
  return theta, u * jnp.sqrt(theta)[None, :]  # xc axes = xc xc^T u / sqrt(theta)


def _lda_svd(z, resid, means, priors, n_present, keep_cols):
  """scikit-learn < 1.9 ``LinearDiscriminantAnalysis(solver='svd')``: whitening by the unbiased
  pooled within-class covariance (divisor ``n - C``), then the span of the class means.

  Returns the projection ``[n, r]`` (columns past the published ``min(C - 1, k)`` zeroed by
  ``keep_cols``) and the decision values ``[n, C]``.
  """
  n = z.shape[0]
  dtype = z.dtype
  std = jnp.sqrt(jnp.mean(numerics.center(resid) ** 2, axis=0))
  std = jnp.where(std == 0, jnp.ones((), dtype), std)
  scaled = resid / std * jnp.sqrt(1.0 / (n - n_present)).astype(dtype)
  _, s, vt = linalg.svd(scaled, full_matrices=False)
  keep = s > _LDA_TOL
  w = jnp.where(keep[None, :], (vt / std[None, :]).T / jnp.where(keep, s, 1.0)[None, :], 0.0)
  xbar = jnp.matmul(priors, means, precision=HIGHEST)
  centred_means = means - xbar
  weight = jnp.sqrt(n * priors / (n_present - 1)).astype(dtype)
  between = jnp.matmul(weight[:, None] * centred_means, w, precision=HIGHEST)  # [C, k]
  _, sb, vbt = linalg.svd(between, full_matrices=False)
  keep_b = sb > _LDA_TOL * sb[0]
  scalings = jnp.matmul(w, vbt.T, precision=HIGHEST) * keep_b[None, :]  # [k, r]
  low = jnp.matmul(z - xbar, scalings, precision=HIGHEST)  # [n, r]
  coef = jnp.matmul(centred_means, scalings, precision=HIGHEST)  # [C, r]
  decision = numerics.matmul_nt(low, coef) - 0.5 * jnp.sum(coef * coef, axis=1)[None, :]
  return low * keep_cols(low.shape[1]), decision


def _lda_eigen(z, resid, means, shrinkage, keep_cols):
  """``LinearDiscriminantAnalysis(solver='eigen', shrinkage=s)``: biased within-class and total
  covariances shrunk to ``(1 - s) S + s tr(S)/k I``, ``Sb = St - Sw``, generalised eigenvectors of
  ``(Sb, Sw)`` by Cholesky, decision ``m_c^T Sw^-1 z - m_c^T Sw^-1 m_c / 2``."""
  n, k = z.shape
  eye = jnp.eye(k, dtype=z.dtype)

  def shrunk(scatter):
    cov = numerics.symmetrize(scatter) / n
    return (1.0 - shrinkage) * cov + shrinkage * jnp.trace(cov) / k * eye

  sw = shrunk(numerics.covariance(resid))
  st = shrunk(numerics.covariance(numerics.center(z)))
  chol = linalg.cholesky(sw)
  solve_l = functools.partial(linalg.triangular_solve, chol, lower=True)
  half = solve_l(st - sw)  # L^-1 Sb
  a = numerics.symmetrize(solve_l(half.T))  # L^-1 Sb L^-T
  _, q = linalg.eigh(a)
  evecs = linalg.triangular_solve(chol, q[:, ::-1], lower=True, transpose_a=True)  # descending
  low = jnp.matmul(z, evecs, precision=HIGHEST)
  coef = linalg.cho_solve(chol, means.T).T  # m_c^T Sw^-1, [C, k]
  decision = (numerics.matmul_nt(z, coef)
              - 0.5 * jnp.sum(coef * means, axis=1)[None, :])
  return low * keep_cols(k), decision


def _nuclear_norm(a):
  return jnp.sum(linalg.svd(a, compute_uv=False), axis=-1)


@functools.partial(jax.jit,
                   static_argnames=("num_classes", "pca_dim", "variance_dim", "pca_solver"))
def _ncti_kernel(x, y, rows, valid, *, num_classes, pca_dim, variance_dim, pca_solver):
  n, d = x.shape
  dtype = x.dtype
  k = min(pca_dim, n, d)
  evals, z = _top_components(x, k, pca_solver)  # [k], [n, k]
  variance = jnp.sum(evals[:min(variance_dim, k)]) / (n - 1)
  raw = jnp.exp(-variance)
  use_svd = raw <= _SHRINKAGE_FLOOR
  shrinkage = jnp.maximum(raw, jnp.asarray(_SHRINKAGE_FLOOR, dtype))

  onehot = jax.nn.one_hot(y, num_classes, dtype=dtype)
  counts = jnp.sum(onehot, axis=0)
  present = counts > 0
  n_present = jnp.sum(present).astype(dtype)
  priors = counts / n
  means = jnp.matmul(onehot.T, z, precision=HIGHEST) / jnp.maximum(counts, 1.0)[:, None]
  resid = z - jnp.matmul(onehot, means, precision=HIGHEST)
  n_out = jnp.minimum(n_present - 1, k)  # LDA's max_components = min(C - 1, k)

  def keep_cols(r):
    return (jnp.arange(r) < n_out).astype(dtype)[None, :]

  r = min(num_classes, k)

  def svd_branch(_):
    return _lda_svd(z, resid, means, priors, n_present, keep_cols)

  def eigen_branch(_):
    low, decision = _lda_eigen(z, resid, means, shrinkage, keep_cols)
    return low[:, :r], decision

  low, decision = jax.lax.cond(use_svd, svd_branch, eigen_branch, None)
  log_priors = jnp.log(jnp.where(present, priors, 1.0))
  decision = jnp.where(present[None, :], decision + log_priors[None, :], -jnp.inf)
  prob = jax.nn.softmax(decision, axis=1)  # [n, C]

  seli = _nuclear_norm(numerics.center(low))
  ncc = jnp.mean(jnp.take_along_axis(prob, y[:, None], axis=1))
  if rows is not None and rows.shape[1] * num_classes <= 8 * n:
    per_class = prob[rows] * valid[..., None].astype(dtype)  # [C, m, C], m = largest class
    total = jnp.sum(_nuclear_norm(per_class))
  elif rows is not None:  # very unbalanced classes: one [m, C] block at a time
    total = jnp.sum(jax.lax.map(
        lambda rv: _nuclear_norm(prob[rv[0]] * rv[1][:, None].astype(dtype)), (rows, valid)))
  else:  # traced labels: one masked [n, C] matrix per class
    total = jnp.sum(jax.lax.map(
        lambda c: _nuclear_norm(prob * (y == c).astype(dtype)[:, None]),
        jnp.arange(num_classes)))
  return NCTITerms(seli=seli, ncc=ncc, vc=jnp.log(total))


def _check_options(pca_dim, variance_dim, pca_solver):
  validation.check_positive_int(pca_dim, "pca_dim")
  validation.check_positive_int(variance_dim, "variance_dim")
  if pca_solver not in _PCA_SOLVERS:
    raise ValueError(f"pca_solver must be one of {_PCA_SOLVERS}; got {pca_solver!r}.")


def ncti_terms(features, labels, *, num_classes: int | None = None, pca_dim: int = 64,
               variance_dim: int = 32, pca_solver: str = "auto") -> NCTITerms:
  """The three NCTI terms of one candidate, as ``NCTI_Score`` of the public code computes them.

  With ``z`` the first ``k = min(pca_dim, n, d)`` exact principal components of the features
  ([n, k], centred) and ``v_j`` their sample variances (divisor ``n - 1``), the LDA is chosen by

      s = max(exp(-sum_{j < variance_dim} v_j), 1e-10):
        s == 1e-10: LDA(solver='svd'): Sw = sum_c sum_{i in c} (z_i - m_c)(z_i - m_c)^T / (n - C),
                    no shrinkage (scikit-learn before 1.9; 1.9 divides by n);
        else:       LDA(solver='eigen', shrinkage=s): Sw = (1 - s) W + s tr(W)/k I, with
                    W = sum_c ... / n, and St likewise from the total covariance; Sb = St - Sw.

  ``V`` ([k, r], ``r = min(C - 1, k)``) holds the generalised eigenvectors of ``Sb v = l Sw v``
  with the ``r`` largest ``l``, normalised ``V^T Sw V = I`` (for ``solver='svd'`` the same span,
  reached by scikit-learn's two SVDs, whose rank cut ``tol = 1e-4`` is reproduced); ``P`` [n, C]
  are the LDA posteriors ``p(c | z_i) ~ pi_c N(z_i; m_c, Sw)`` with ``pi_c = n_c / n``. Then

      seli = || (z - mean z) V ||_*            (nuclear norm: sum of singular values)
      ncc  = (1/n) sum_i P[i, y_i]
      vc   = log sum_c || P[y == c] ||_*        (P[y == c]: the [n_c, C] rows of class c)

  Classes absent from ``labels`` (allowed with a larger ``num_classes``) are left out, as if the
  labels were renumbered ``0..C-1`` (the public code assumes they are). The public code needs
  ``n, d >= 64`` (``PCA(64)``); here ``k = min(pca_dim, n, d)``.

  Args:
    features: [n, d] float features of the target data from the pre-trained model.
    labels: [n] int class indices in ``0..C-1``.
    num_classes: static ``C``; needed under ``jit``/``vmap`` with traced labels, else
      ``max(labels) + 1``.
    pca_dim: number of principal components kept (static; 64 as published).
    variance_dim: number of leading PCA variances summed for the shrinkage (static; 32).
    pca_solver: how the top ``k`` principal axes are found (static). ``"exact"``: a full
      ``eigh`` of the ``[d, d]`` scatter (or ``[n, n]`` Gram when ``n < d``). ``"iterative"``:
      the same matrix, then block subspace iteration with Rayleigh-Ritz until every Ritz
      residual is below ``1e-5`` (float32) / ``1e-11`` (float64) of the largest eigenvalue: the
      exact top-``k`` subspace to that accuracy, at a fraction of the cost of the full ``eigh``
      for large ``d``. ``"auto"`` (default): exact when ``min(n, d) <= 512``, else iterative.
      (The public code's ``PCA(64)`` is scikit-learn's exact SVD for small inputs and its
      randomised SVD, an approximation of the same subspace, for large ones.)

  Returns:
    :class:`NCTITerms` ``(seli, ncc, vc)``, scalars in the features' float dtype.

  Raises:
    ValueError: bad features (NaN, inf, shape, dtype) or labels, fewer than two classes present,
      every class a single sample (no within-class scatter), constant features, a bad
      ``pca_dim``, ``variance_dim`` or ``pca_solver``, or (concrete inputs) a non-finite term
      (a singular within-class covariance on the shrinkage branch). Value checks are skipped
      for traced inputs.

  Example:
    >>> seli, ncc, vc = ncti_terms(features, labels)  # doctest: +SKIP
  """
  _check_options(pca_dim, variance_dim, pca_solver)
  x = validation.check_features(features)
  y, c = validation.check_labels(labels, x.shape[0], num_classes=num_classes)
  validation.check_class_structure(labels, c, metric="NCTI", singletons_ok=False)
  validation.check_not_constant(x, metric="NCTI")
  rows, valid = _class_rows(labels, c)
  out = _ncti_kernel(x, y, rows, valid, num_classes=c, pca_dim=int(pca_dim),
                     variance_dim=int(variance_dim), pca_solver=pca_solver)
  if validation.is_concrete(out.seli) and not all(validation.all_finite(t) for t in out):
    raise ValueError(
        "NCTI is undefined for these features: a term is not finite (the shrunk within-class "
        "covariance of the PCA components is numerically singular).")
  return out


def ncti(features, labels, *, num_classes: int | None = None, pca_dim: int = 64,
         variance_dim: int = 32, pca_solver: str = "auto") -> jax.Array:
  """Single-candidate NCTI: ``seli + ncc - vc``, the published combination without normalisation.

  Higher is better. The published NCTI score of a model is *not* a property of that model alone:
  each term is min-max normalised over the whole candidate set, ``score = ncc' + seli' - vc'``
  (:func:`ncti_scores`). One candidate alone has nothing to be normalised against, so this function
  returns the same signed combination of the raw terms (:func:`ncti_terms`). Its scale is
  dominated by ``seli`` (a nuclear norm of ``n`` whitened samples, in the hundreds to thousands,
  against ``ncc`` in ``[0, 1]`` and ``vc ~ log n``), so rankings by ``ncti`` alone can differ from
  the published ranking, and do on ``tests/cases_ncti.candidate_set()`` (see
  ``tests/test_ncti.py``). Rank a model set with :func:`ncti_scores`.

  Args:
    features: [n, d] float features of the target data from the pre-trained model.
    labels: [n] int class indices in ``0..C-1``.
    num_classes: static ``C``; needed under ``jit``/``vmap`` with traced labels.
    pca_dim: number of principal components kept (static; 64 as published).
    variance_dim: number of leading PCA variances summed for the shrinkage (static; 32).
    pca_solver: ``"auto"``, ``"exact"`` or ``"iterative"`` (static; see :func:`ncti_terms`).

  Returns:
    Scalar ``seli + ncc - vc`` in the features' float dtype.

  Raises:
    ValueError: as :func:`ncti_terms`.

  Reference: Wang et al., "How Far Pre-trained Models Are from Neural Collapse on the Target
  Dataset Informs their Transferability", ICCV 2023.
  """
  features = registry.no_derivative(features, "ncti")
  t = ncti_terms(features, labels, num_classes=num_classes, pca_dim=pca_dim,
                 variance_dim=variance_dim, pca_solver=pca_solver)
  return t.seli + t.ncc - t.vc


def ncti_scores(features_by_candidate: Union[Mapping[str, object], Sequence[object]], labels, *,
                num_classes: int | None = None, pca_dim: int = 64,
                variance_dim: int = 32, pca_solver: str = "auto") -> jax.Array:
  """The published NCTI score of each candidate of a model set.

  With ``(seli_j, ncc_j, vc_j)`` the terms of candidate ``j`` (:func:`ncti_terms`) and
  ``norm(t_j) = (t_j - min_i t_i) / (max_i t_i - min_i t_i)`` over the ``m`` candidates,

      score_j = norm(ncc_j) + norm(seli_j) - norm(vc_j)

  (``evaluate_metric_group1_cpu.py``). A term equal on every candidate contributes 0 to every
  score (the public code divides 0 by 0 there and returns NaN for the whole set). Higher is
  better; the scores lie in ``[-1, 2]`` and depend on the whole set: adding or removing a
  candidate changes the others' scores.

  Args:
    features_by_candidate: ``m >= 2`` feature matrices [n, d_i] (widths may differ), as a
      mapping name -> features (scores in its iteration order) or a sequence.
    labels: [n] int class indices shared by every candidate.
    num_classes: static ``C`` (optional for concrete labels).
    pca_dim: number of principal components kept per candidate (64 as published).
    variance_dim: number of leading PCA variances summed for the shrinkage (32).
    pca_solver: ``"auto"``, ``"exact"`` or ``"iterative"`` (see :func:`ncti_terms`).

  Returns:
    [m] scores, in the result dtype of the candidates' terms.

  Raises:
    ValueError: fewer than 2 candidates (a min-max normalisation over one candidate is
      undefined: use :func:`ncti`), or any input :func:`ncti_terms` refuses.
  """
  if isinstance(features_by_candidate, Mapping):
    feats = list(features_by_candidate.values())
  elif isinstance(features_by_candidate, (list, tuple)):
    feats = list(features_by_candidate)
  elif hasattr(features_by_candidate, "ndim") and np.ndim(features_by_candidate) == 3:
    feats = list(features_by_candidate)  # a stacked [m, n, d] array
  else:
    raise ValueError("features_by_candidate must be a mapping name -> [n, d] features, a "
                     f"sequence of them or a stacked [m, n, d] array; got "
                     f"{type(features_by_candidate).__name__}.")
  if len(feats) < 2:
    raise ValueError(
        f"ncti_scores needs at least 2 candidates (each term is min-max normalised over the "
        f"candidate set, undefined for {len(feats)}); use ncti() for a single candidate.")
  terms = [ncti_terms(f, labels, num_classes=num_classes, pca_dim=pca_dim,
                      variance_dim=variance_dim, pca_solver=pca_solver) for f in feats]
  dtype = jnp.result_type(*[t.seli.dtype for t in terms])
  table = jnp.stack([jnp.stack([t.seli, t.ncc, t.vc]).astype(dtype) for t in terms])  # [m, 3]
  lo, hi = jnp.min(table, axis=0), jnp.max(table, axis=0)
  span = hi - lo
  norm = jnp.where(span > 0, (table - lo) / jnp.where(span > 0, span, 1.0), 0.0)
  return norm[:, 1] + norm[:, 0] - norm[:, 2]


registry.register_metric(
    "ncti", ncti, vmappable=True, across_candidates=ncti_scores,
    description="NCTI: LDA on 64 PCA components; seli + ncc - vc (nuclear norm of the LDA "
                "features, true-class posterior, log class-posterior nuclear norms); the "
                "published score min-max normalises each term over the model set "
                "(Wang et al., ICCV 2023)")
