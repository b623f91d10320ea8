"""H-score and regularized (Ledoit-Wolf shrunk) H-score.

Bao, Li, Huang, Wang, Zheng and Liu, "An Information-Theoretic Approach to Transferability in Task
Transfer Learning", ICIP 2019 (H-score). Ibrahim, Ponomareva and Mazumder, "Newer is not always
better: Rethinking transferability metrics, their peculiarities, stability and performance",
ECML-PKDD 2022 (regularized H-score).

With ``Z = F - mean(F)`` ([n, d]), ``S = Z^T Z`` and ``B = sum_c n_c (mu_c - mu)(mu_c - mu)^T``
(``n - 1`` times the sample covariances of ``f`` and of ``E[f | y]``, the normalisation cancels),
both scores are spectral sums over one eigendecomposition of the smaller of ``Z^T Z`` (d x d) and
``Z Z^T`` (n x n): with eigenpairs ``(l_i, v_i)`` of ``S`` and ``q_i = v_i^T B v_i``,

    H     = sum_{l_i > cutoff} q_i / l_i,
    H_reg = sum_i (1 - a) q_i / ((1 - a) l_i + a tr(S) / d).
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


def _spectrum(features, labels, num_classes):
  """Centred eigen-spectrum shared by both scores.

  The features are centred with a shift (:func:`numerics.center`, so a large common offset does
  not cancel) and divided by a power of two near ``max |Z|`` (exact; both scores are ratios of
  quantities quadratic in ``Z``, so the scale cancels and only overflow/underflow is avoided).

  Returns:
    lam: [K] eigenvalues of Z^T Z (K = d) or Z Z^T (K = n), ascending, clipped at 0.
    q: [K] ``v_i^T B v_i`` for the matching eigenvectors of Z^T Z.
    z: [n, d] centred features brought to unit size.
    dropped: whether an eigenvalue other than an exact 0 is at or below the pseudo-inverse
      threshold (:func:`_cutoff`; either sign, before the clip): on the covariance side
      (``n >= d``) only, False on the Gram side (whose centring null vector is always there).
  """
  n, d = features.shape
  z, _ = peer_numerics.normalise(peer_numerics.centre(features))
  counts = jax.ops.segment_sum(jnp.ones((n,), z.dtype), labels, num_segments=num_classes)
  inv_sqrt = jnp.where(counts > 0, jax.lax.rsqrt(jnp.maximum(counts, 1.0)), 0.0)
  if n < d:
    # B = Z^T E E^T Z with E = onehot / sqrt(n_c) ([n, C]): v_i = Z^T u_i / sqrt(l_i),
    # q_i = l_i |u_i^T E|^2.
    e = jax.nn.one_hot(labels, num_classes, dtype=z.dtype) * inv_sqrt[None, :]
    lam, ue = numerics.product_spectrum(z, e, gram=True)  # U^T E: [n, C]
    lam = jnp.maximum(lam, 0.0)
    q = lam * jnp.sum(ue * ue, axis=1)
    dropped = jnp.zeros((), bool)
  else:
    sums = jax.ops.segment_sum(z, labels, num_segments=num_classes) * inv_sqrt[:, None]  # [C, d]
    lam, vs = numerics.product_spectrum(z, sums.T)  # V^T (Z^T E): [d, C]
    dropped = jnp.any((lam != 0) & (jnp.abs(lam) <= _cutoff(jnp.abs(lam))))
    lam = jnp.maximum(lam, 0.0)
    q = jnp.sum(vs * vs, axis=1)
  return lam, q, z, dropped


# Eigenvalues of S at or below this many ulps of the largest are round-off (the pseudo-inverse).
PINV_ULPS = 100.0


def _cutoff(lam):
  """Pseudo-inverse threshold ``PINV_ULPS * eps * max(l)``.

  Where the features have no variance (dead units, features of lower rank than their width) a
  float32 ``Z^T Z`` and its ``eigh`` leave eigenvalues of up to ``~2.7 eps max(l)``; every
  eigenvalue above 100 ulps is resolved to a few per cent and counts. ``jnp.linalg.pinv``'s rule,
  ``10 K eps max(l)``, grows with ``K`` and dropped resolved directions: at ``K = 1280``
  (a MobileNetV2 head) everything below 1.5e-3 of the largest, 16% of the regularized H-score.
  """
  return PINV_ULPS * jnp.finfo(lam.dtype).eps * jnp.max(lam)


# float32 only (:func:`_column_svd_hscore`): a singular value of the column-equilibrated features
# above this many ulps of the largest is resolved and counts; at or below, it is round-off of
# an (almost) exact linear dependence (dead units and such dependences sit at 0.3-2 ulps).
SVD_RESOLVED_ULPS = 16.0
# The pseudo-inverse of float64 keeps the directions of Z with a singular value above this
# fraction of the largest: sqrt(PINV_ULPS * eps64) = 1.49e-7, 1.25 float32 ulps.
FLOAT64_PINV_SIGMA = math.sqrt(PINV_ULPS * float(np.finfo(np.float64).eps))
# float32 refuses when a direction it cannot resolve has a variance in the raw features above
# (FLOAT64_PINV_SIGMA / UNRESOLVED_MARGIN)^2 of the largest (float64 may count it; see hscore).
UNRESOLVED_MARGIN = 8.0


def _column_svd_hscore(z, labels, num_classes, lam_max):
  """float32 H-score from the SVD of the column-equilibrated ``z``, and whether to refuse it.

  ``H = |P E|_F^2`` with ``P`` the projector on the column space of ``Z`` and
  ``E = onehot / sqrt(n_c)``: with the SVD ``Z D^-1 = U diag(s) V^T`` (``D`` the column norms,
  dead columns left at 0), ``H = sum_i |u_i^T E|^2`` over the resolved ``s_i``. The SVD has a
  backward error of ``~eps`` relative to each (unit) column, so a direction is resolved when
  its singular value is, without squaring the condition number as ``Z^T Z`` does; the column
  scaling leaves ``P`` (hence H) unchanged and makes the resolution per column, as float64's
  is for the graded scales of real channels.

  Args:
    z: [n, d] centred float32 features brought to unit size.
    labels: [n] int labels.
    num_classes: static C.
    lam_max: the largest eigenvalue of ``Z^T Z`` (the float64 threshold is relative to it).

  Returns:
    ``(score, unresolved)``: the score over the resolved directions, and whether a live
    direction that float32 does not resolve has a variance in ``Z`` (``s_i^2 / |D^-1 v_i|^2``)
    above ``(FLOAT64_PINV_SIGMA / UNRESOLVED_MARGIN)^2 lam_max``: one that float64's
    pseudo-inverse may count and float32 cannot, so the float32 score is not float64's.
  """
  eps = jnp.finfo(z.dtype).eps
  norms = jnp.sqrt(jnp.sum(z * z, axis=0))
  dead = norms == 0  # constant columns: exactly 0 after peer_numerics.centre
  inv = jnp.where(dead, 0.0, 1.0 / jnp.where(dead, 1.0, norms))
  u, s, vt = linalg.svd(z * inv[None, :])
  counts = jax.ops.segment_sum(jnp.ones(labels.shape, z.dtype), labels, num_segments=num_classes)
  sums = jax.ops.segment_sum(u, labels, num_segments=num_classes)  # E^T U * sqrt(n_c): [C, K]
  share = jnp.sum(sums * sums / jnp.maximum(counts, 1.0)[:, None], axis=0)  # |u_i^T E|^2
  resolved = s > SVD_RESOLVED_ULPS * eps * s[0]
  score = jnp.sum(jnp.where(resolved, share, 0.0))
  # The dead columns' null space comes out as round-off singular values too: a direction is
  # live when most of its weight is on live columns.
  live = jnp.sum(jnp.where(dead[None, :], 0.0, vt * vt), axis=1) > 0.5
  w_norm = jnp.sqrt(jnp.sum((vt * inv[None, :]) ** 2, axis=1))
  variance = jnp.where(live, (s / jnp.where(live, w_norm, 1.0)) ** 2, 0.0)
  limit = (FLOAT64_PINV_SIGMA / UNRESOLVED_MARGIN) ** 2 * lam_max
  unresolved = jnp.any(live & ~resolved & (variance > limit))
  return score.astype(z.dtype), unresolved


@functools.partial(jax.jit, static_argnames=("num_classes",))
def _hscore_kernel(features, labels, *, num_classes):
  """``(score, refused)``: ``refused`` when float32 cannot resolve what float64 would count."""
  lam, q, z, dropped = _spectrum(features, labels, num_classes)
  keep = lam > _cutoff(lam)
  score = jnp.sum(jnp.where(keep, q / jnp.where(keep, lam, 1.0), 0.0))
  if features.dtype != jnp.float32 or features.shape[0] < features.shape[1]:
    return score, jnp.zeros((), bool)
  # float32 drops resolved directions at the eigenvalue threshold (100 ulps of the largest is a
  # singular value of 1e-2.5 of the largest): redo those spectra from the features.
  return jax.lax.cond(
      dropped, lambda: _column_svd_hscore(z, labels, num_classes, jnp.max(lam)),
      lambda: (score, jnp.zeros((), bool)))


def _ledoit_wolf(z, lam):
  """Ledoit-Wolf shrinkage ``a`` of the centred ``z`` ([n, d]) given the spectrum of Z^T Z."""
  n, d = z.shape
  if d == 1:
    return jnp.zeros((), z.dtype)
  nf = jnp.asarray(n, z.dtype)
  mu = jnp.sum(lam) / (nf * d)  # tr(emp_cov) / d, emp_cov = Z^T Z / n
  # ||emp_cov - mu I||_F^2 / d over all d eigenvalues (d - K of them are zero).
  delta = (jnp.sum((lam / nf - mu) ** 2) + (d - lam.shape[0]) * mu * mu) / d
  row_norm2 = jnp.sum(z * z, axis=1)
  # beta = (sum_k |z_k|^4 / n - ||Z^T Z||_F^2 / n^2) / (d n)
  beta = (jnp.sum(row_norm2 * row_norm2) / nf - jnp.sum(lam * lam) / (nf * nf)) / (d * nf)
  beta = jnp.minimum(beta, delta)
  return jnp.where(delta > 0, jnp.maximum(beta, 0.0) / jnp.where(delta > 0, delta, 1.0), 0.0)


@functools.partial(jax.jit, static_argnames=("num_classes",))
def _regularized_kernel(features, labels, *, num_classes):
  lam, q, z, _ = _spectrum(features, labels, num_classes)
  d = features.shape[1]
  a = _ledoit_wolf(z, lam)
  den = (1.0 - a) * lam + a * jnp.sum(lam) / d
  keep = den > _cutoff(den)
  score = jnp.sum(jnp.where(keep, (1.0 - a) * q / jnp.where(keep, den, 1.0), 0.0))
  return score, a


def _validate(features, labels, num_classes):
  features = validation.check_features(features)
  labels, num_classes = validation.check_labels(labels, features.shape[0], num_classes=num_classes)
  return features, labels, num_classes


def hscore(features, labels, *, num_classes: int | None = None) -> jax.Array:
  """H-score ``tr(pinv(cov(f)) cov(E[f | y]))`` (higher is better).

  Both covariances are sample covariances (the normalisation cancels). The pseudo-inverse drops
  eigenvalues of ``cov(f)`` below ``100 eps max`` (round-off, :data:`PINV_ULPS`);
  ``tllib.ranking.h_score`` uses ``np.linalg.pinv(rcond=1e-15)``, so the two agree
  whenever ``cov(f)`` is well conditioned and can differ on (numerically) singular ones, where
  tllib inverts round-off. Invariant to invertible linear maps of the features; when
  ``n - 1 <= d`` the centred features span everything and the score is ``C' - 1`` (``C'``:
  classes present), so H-score needs ``n >> d`` to discriminate. (Some re-implementations
  multiply the matrices elementwise instead of taking the trace of the product; this does not.)

  Numerics: invariant to a common offset and to rescaling of the features, and so is the float32
  value: the features are centred with a shift and divided by a power of two near their largest
  magnitude before any product is formed. Constant features give the defined value 0.

  Cost: one ``Z^T Z`` (or ``Z Z^T`` when n < d) and the eigenvalues of the smaller side with the
  class sums in its eigenbasis (on the CPU both on the host, :func:`numerics.product_spectrum`).

  Args:
    features: [n, d] float features.
    labels: [n] int class labels in ``0..C-1``.
    num_classes: static C (needed under ``jit``/``vmap``); default ``max(labels) + 1``.

  Returns:
    Scalar score in the features' float dtype, in ``[0, C - 1]``.

  Example:
    >>> hscore(features, labels)  # doctest: +SKIP

  Reference: Bao et al., ICIP 2019.
  """
  features, labels, num_classes = _validate(features, labels, num_classes)
  score, refused = _hscore_kernel(features, labels, num_classes=num_classes)
  if validation.is_concrete(refused) and bool(refused):
    raise ValueError(
        "hscore: the feature covariance is too ill-conditioned for float32 to resolve: the "
        "features have an almost exact linear dependence (a direction with a variance within "
        f"{UNRESOLVED_MARGIN ** 2:g}x of float64's pseudo-inverse threshold, 2.2e-14 of the "
        "largest) that float32 cannot tell from round-off, and the H-score counts it in float64. "
        "Pass float64 features: jax.config.update('jax_enable_x64', True) and "
        "hscore(features.astype(np.float64), labels).")
  return score


class RegularizedHScoreDetails(NamedTuple):
  """:func:`regularized_hscore_details`: the score and the Ledoit-Wolf shrinkage behind it.

  Attributes:
    score: the regularized H-score (what :func:`regularized_hscore` returns).
    shrinkage: the Ledoit-Wolf shrinkage ``a`` in ``[0, 1]``.
  """
  score: jax.Array
  shrinkage: jax.Array


def regularized_hscore(features, labels, *, num_classes: int | None = None) -> jax.Array:
  """Regularized H-score with Ledoit-Wolf shrinkage (higher is better).

      S_a = (1 - a) S + a tr(S) / d I,    H_a = tr(S_a^{-1} (1 - a) cov(E[f | y])),

  with ``S`` the sample covariance of the features and ``a`` the closed-form Ledoit-Wolf
  shrinkage (the value ``sklearn.covariance.ledoit_wolf_shrinkage`` returns for the same
  features; ``a = 0`` when d = 1). ``S_a`` is invertible whenever ``a > 0``; otherwise a
  pseudo-inverse as in :func:`hscore`.

  Difference from ``tllib.ranking.regularized_h_score``: tllib takes ``S_a`` from
  ``sklearn.covariance.LedoitWolf`` (which divides by n) but ``cov(E[f|y])`` from ``np.cov``
  (which divides by n - 1), so its value is this one times ``n / (n - 1)``; here both
  covariances use the same normalisation, as in the formula.

  Numerics: invariant to a common offset and to rescaling of the features (so is ``a``), in
  float32 too: centred with a shift and divided by a power of two near ``max |Z|`` first (the
  fourth moments of the Ledoit-Wolf estimate would otherwise overflow at ``|F| ~ 1e9``).

  Args:
    features: [n, d] float features.
    labels: [n] int class labels in ``0..C-1``.
    num_classes: static C (needed under ``jit``/``vmap``); default ``max(labels) + 1``.

  Returns:
    Scalar score (features' float dtype). The shrinkage ``a`` comes from
    :func:`regularized_hscore_details`.

  Reference: Ibrahim, Ponomareva and Mazumder, ECML-PKDD 2022 (arXiv:2110.06893).
  """
  return regularized_hscore_details(features, labels, num_classes=num_classes).score


def regularized_hscore_details(features, labels, *,
                               num_classes: int | None = None) -> RegularizedHScoreDetails:
  """:func:`regularized_hscore` with the shrinkage: a :class:`RegularizedHScoreDetails`.

  Same arguments, validation and numerics as :func:`regularized_hscore`; works under ``jit``
  and ``vmap`` (a NamedTuple of arrays).
  """
  features, labels, num_classes = _validate(features, labels, num_classes)
  score, a = _regularized_kernel(features, labels, num_classes=num_classes)
  return RegularizedHScoreDetails(score=score, shrinkage=a)


registry.register_metric(
    "hscore", hscore, vmappable=True,
    description="H-score: class separation tr(cov(f)^+ cov(E[f|y])) (Bao et al., ICIP 2019)")
registry.register_metric(
    "regularized_hscore", regularized_hscore, vmappable=True,
    description="H-score with Ledoit-Wolf shrinkage of cov(f) (Ibrahim et al., ECML-PKDD 2022)")
