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

``S = Z^T Z`` squares the condition number of ``Z``: in float32 a spectrum with an eigenvalue
below ``FAST_RESOLVED_ULPS`` ulps of the largest (dead columns aside) is not resolved to 1e-3 of
H, and H is then taken from the SVD of the column-equilibrated ``Z`` instead (``H = |P E|^2``, P
the projector on its column space), which resolves singular values down to a few ulps; where
even that cannot tell directions float64 counts from round-off, an eager :func:`hscore` scores
the same values in float64 (:func:`_column_svd_hscore`).
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
    unresolved: whether a direction other than the dead (all-zero) columns has an eigenvalue
      (either sign, before the clip) at or below :data:`FAST_RESOLVED_ULPS` ulps of the
      largest: on the covariance side (``n >= d``) only, False on the Gram side (whose
      centring null vector is always there).
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
    unresolved = jnp.zeros((), bool)
  else:
    sums = jax.ops.segment_sum(z, labels, num_segments=num_classes) * inv_sqrt[:, None]  # [C, d]
    lam, vs = numerics.product_spectrum(z, sums.T)  # V^T (Z^T E): [d, C]
    # More eigenvalues at or below FAST_RESOLVED_ULPS than dead (all-zero) columns: a dead
    # column's is exactly 0 on the host and round-off of either sign from XLA's eigh, which can
    # also return a resolved direction's small eigenvalue as exactly 0.
    dead = jnp.sum(jnp.all(z == 0, axis=0))
    limit = FAST_RESOLVED_ULPS * jnp.finfo(lam.dtype).eps * jnp.max(jnp.abs(lam))
    unresolved = jnp.sum(jnp.abs(lam) <= limit) > dead
    lam = jnp.maximum(lam, 0.0)
    q = jnp.sum(vs * vs, axis=1)
  return lam, q, z, unresolved


# Eigenvalues of S at or below this many ulps of the largest are round-off (the pseudo-inverse).
PINV_ULPS = 100.0
# float32: a spectrum of Z^T Z with an eigenvalue at or below this many ulps of the largest (a
# singular value of Z below 1e-2 of the largest), dead columns aside, is not resolved to 1e-3 of
# the H-score: redone from the features (:func:`_column_svd_hscore`). Measured on a direction
# carrying most of one class contrast: 1.7e-3 from float64 at 137 ulps, <= 3.5e-4 above 240.
FAST_RESOLVED_ULPS = 512.0


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
SVD_RESOLVED_ULPS = 64.0
# The pseudo-inverse of float64 keeps the directions of Z with a singular value above this
# fraction of the largest: sqrt(PINV_ULPS * eps64) = 1.49e-7, 1.25 float32 ulps.
FLOAT64_PINV_SIGMA = math.sqrt(PINV_ULPS * float(np.finfo(np.float64).eps))
# float32 is not float64 when the directions it cannot resolve that have a variance in the
# features above (FLOAT64_PINV_SIGMA / UNRESOLVED_MARGIN)^2 of the largest (float64 may count
# them) carry more than UNRESOLVED_SHARE of the score by float32's estimate (see hscore).
UNRESOLVED_MARGIN = 8.0
UNRESOLVED_SHARE = 1e-3


def _column_svd_hscore(z, labels, num_classes, lam_max):
  """float32 H-score from the SVD of the column-equilibrated ``z``, and whether it is float64's.

  ``H = |P E|_F^2`` with ``P`` the projector on the column space of ``Z`` and
  ``E = onehot / sqrt(n_c)``: with the SVD ``Z D^-1 = U diag(s) V^T`` (``D`` the column norms,
  dead columns left at 0), ``H = sum_i |u_i^T E|^2`` over the resolved ``s_i``. The scaling
  leaves the column space ``P`` projects on (hence H) unchanged; the SVD's backward error is
  ``~eps |Z D^-1|``, so with unit columns each channel is resolved relative to its own scale
  (graded channel scales cost nothing), and a direction is resolved when its singular value is,
  without the squared condition number of ``Z^T Z``.

  Args:
    z: [n, d] centred float32 features brought to unit size.
    labels: [n] int labels.
    num_classes: static C.
    lam_max: the largest eigenvalue of ``Z^T Z`` (the float64 threshold is relative to it).

  Returns:
    ``(score, unresolved)``: the score over the resolved directions, and whether the live
    directions that float32 does not resolve but float64's pseudo-inverse may count (a variance
    in ``Z``, ``s_i^2 / |D^-1 v_i|^2``, above ``(FLOAT64_PINV_SIGMA / UNRESOLVED_MARGIN)^2
    lam_max``) have shares ``|u_i^T E|^2`` summing to more than ``UNRESOLVED_SHARE`` of the
    score. Their ``u_i`` are mixed with round-off, so the shares are estimates (noise of about
    ``(C - 1) / n`` each): the EfficientNet-Lite stems had 2-4% of the score there (float32
    1-6% off), a small CNN's penultimate layer 0.3% (float32 3e-7 off, yet flagged).
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
  hidden = jnp.sum(jnp.where(live & ~resolved & (variance > limit), share, 0.0))
  return score.astype(z.dtype), hidden > UNRESOLVED_SHARE * score


def _nan_unless_finite(score, lam):
  """``score``, or NaN where the eigensolver returned a non-finite spectrum (no convergence):
  the thresholds compare False with NaN and would otherwise drop every direction, a silent 0."""
  return jnp.where(jnp.all(jnp.isfinite(lam)), score, jnp.nan)


@functools.partial(jax.jit, static_argnames=("num_classes",))
def _hscore_kernel(features, labels, *, num_classes):
  """``(score, unresolved)``: ``unresolved`` when float32 cannot resolve what float64 counts."""
  lam, q, z, unresolved = _spectrum(features, labels, num_classes)
  keep = lam > _cutoff(lam)
  score = _nan_unless_finite(jnp.sum(jnp.where(keep, q / jnp.where(keep, lam, 1.0), 0.0)), lam)
  if features.dtype != jnp.float32 or features.shape[0] < features.shape[1]:
    return score, jnp.zeros((), bool)
  # Z^T Z squares the condition number of Z: a float32 spectrum below FAST_RESOLVED_ULPS is
  # redone from the features, whose SVD resolves singular values down to a few ulps.
  return jax.lax.cond(
      unresolved, lambda: _column_svd_hscore(z, labels, num_classes, jnp.max(lam)),
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
  return _nan_unless_finite(score, lam), a


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

  float32 (``n >= d``): where ``Z^T Z`` has an eigenvalue below :data:`FAST_RESOLVED_ULPS` ulps
  of the largest (dead units aside: the narrow early stages and the heads of real backbones,
  whose float32 spectrum lost 1-15% of the score to the threshold), the score comes from the SVD
  of the centred features with unit columns, which resolves singular values above
  :data:`SVD_RESOLVED_ULPS` ulps (Z^T Z squares the condition number; the SVD does not): within
  3e-5 of the float64 score of the same values on every stage of MobileNetV2 and
  EfficientNet-Lite0/1/2 that it scores, within 6e-4 on synthetic near-dependences. What it
  cannot resolve it drops, and where that matters the float32 score is not float64's: when the
  directions below that resolution whose variance in the features is within
  ``UNRESOLVED_MARGIN^2 = 64``-fold of float64's threshold (``100 eps64``, 2.2e-14 of the
  largest; float64 may count them) carry more than :data:`UNRESOLVED_SHARE` (1e-3) of the score
  by float32's estimate (an almost exact linear dependence of large channels: the stems of
  EfficientNet-Lite0/1/2, 1-6% apart), an eager call scores the same float32 values in float64
  (``jax.enable_x64``, as TransRate's rescue) and returns that score in float32. Traced calls
  (``jit``, ``vmap``) return the float32 score over the resolved directions; pass float64
  features (``jax_enable_x64``) where that matters. A direction resolved only thanks to the
  column scaling (channel scales more than ~1e7 apart) counts in float32 and may be below
  float64's threshold.

  Cost: one ``Z^T Z`` (or ``Z Z^T`` when n < d) and the eigenvalues of the smaller side with the
  class sums in its eigenbasis (on the CPU both on the host, :func:`numerics.product_spectrum`);
  in the float32 case above, an SVD of the ``[n, d]`` features as well (about 5x the cost at
  d = 1280).

  Args:
    features: [n, d] float features.
    labels: [n] int class labels in ``0..C-1``.
    num_classes: static C (needed under ``jit``/``vmap``); default ``max(labels) + 1``.

  Returns:
    Scalar score in the features' float dtype, in ``[0, C - 1]``; NaN where the eigensolver
    does not converge.

  Example:
    >>> hscore(features, labels)  # doctest: +SKIP

  Reference: Bao et al., ICIP 2019.
  """
  features = registry.no_derivative(features, "hscore")
  features, labels, num_classes = _validate(features, labels, num_classes)
  score, unresolved = _hscore_kernel(features, labels, num_classes=num_classes)
  if validation.is_concrete(unresolved) and bool(unresolved):
    # float32 cannot resolve what float64 counts: the same float32 values, scored in float64.
    with jax.enable_x64(True):
      value, _ = _hscore_kernel(np.asarray(features, np.float64), np.asarray(labels),
                                num_classes=num_classes)
      value = np.asarray(value)
    score = jnp.asarray(value.astype(features.dtype))
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
  features = registry.no_derivative(features, "regularized_hscore")
  return regularized_hscore_details(features, labels, num_classes=num_classes).score


def regularized_hscore_details(features, labels, *,
                               num_classes: int | None = None) -> RegularizedHScoreDetails:
  """:func:`regularized_hscore` with the shrinkage: a :class:`RegularizedHScoreDetails`.

  Same arguments, validation and numerics as :func:`regularized_hscore`; works under ``jit``
  and ``vmap`` (a NamedTuple of arrays).
  """
  features = registry.no_derivative(features, "regularized_hscore")
  features, labels, num_classes = _validate(features, labels, num_classes)
  score, a = _regularized_kernel(features, labels, num_classes=num_classes)
  return RegularizedHScoreDetails(score=score, shrinkage=a)


registry.register_metric(
    "hscore", hscore, vmappable=True,
    description="H-score: class separation tr(cov(f)^+ cov(E[f|y])) (Bao et al., ICIP 2019)")
registry.register_metric(
    "regularized_hscore", regularized_hscore, vmappable=True,
    description="H-score with Ledoit-Wolf shrinkage of cov(f) (Ibrahim et al., ECML-PKDD 2022)")
