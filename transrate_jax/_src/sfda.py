"""Self-challenging Fisher Discriminant Analysis (SFDA).

Shao, Zhao, Li, Chen, Ge, Luo, "Not All Models Are Equal: Predicting Model Transferability in a
Self-challenging Fisher Space", ECCV 2022. Reference code: TencentARC/SFDA ``metrics.py``
(``SFDA_Score`` and class ``SFDA``).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from transrate_jax._src import linalg
from transrate_jax._src import numerics
from transrate_jax._src import peer_numerics
from transrate_jax._src import registry
from transrate_jax._src import validation

HIGHEST = numerics.HIGHEST


def _largest_eigenvalue(a, iterations=3):
  """The reference's estimate of the largest eigenvalue of ``a`` (``utils.iterative_A``).

  ``a`` is divided by a power of two near ``max |a|`` and the start vector by its largest entry
  (neither changes the estimate: every later vector is normalised), so no norm overflows or
  underflows; the estimate is scaled back at the end.
  """
  a, scale = peer_numerics.normalise(a)
  x = jnp.sum(a, axis=1)
  x = x / peer_numerics.pow2_scale(x)
  yv = x
  for _ in range(iterations):
    t = jnp.matmul(a, x, precision=HIGHEST)
    yv = t / jnp.linalg.norm(t)
    t = jnp.matmul(a, yv, precision=HIGHEST)
    x = t / jnp.linalg.norm(t)
  return scale * jnp.dot(jnp.matmul(x, a, precision=HIGHEST), yv, precision=HIGHEST)


def _solve_spd(a, b, ridge):
  """``a^{-1} b`` for symmetric ``a = (1 - s) S_w + ridge I`` (``S_w`` PSD, ``ridge > 0``).

  By Cholesky; when that fails (``a`` is numerically singular in its dtype: the ridge is below
  the round-off of ``S_w``, as the shrinkage floor 1e-10 is in float32 for features of lower
  rank than their width) by eigenvalues, where an eigenvalue within round-off of 0 (at most
  ``d eps max|w|``) is a null direction of ``S_w`` and has exactly the eigenvalue ``ridge``
  in ``a``, the value float64 resolves (it gave 1.0 where a pseudo-inverse gave 1/C).
  """
  a = numerics.symmetrize(a)

  def by_cholesky(_):
    chol = linalg.cholesky(a)
    return linalg.cho_solve(chol, b)

  def by_eigh(_):
    w, v = linalg.eigh(a)
    cutoff = jnp.max(jnp.abs(w)) * a.shape[-1] * jnp.finfo(a.dtype).eps
    inv = 1.0 / jnp.where(w > cutoff, w, ridge)
    return jnp.matmul(v * inv, jnp.matmul(v.T, b, precision=HIGHEST), precision=HIGHEST)

  first = by_cholesky(None)
  return jax.lax.cond(jnp.all(jnp.isfinite(first)), lambda _: first, by_eigh, None)


def _fisher_probs(x, onehot, counts, present, shrinkage, scale2=1.0):
  """Class probabilities [n, C] of the regularised Fisher discriminant, and its shrinkage.

  ``x`` may be the features divided by ``s``, with ``scale2 = s^2``: the probabilities do not
  depend on ``s`` for a given shrinkage, and the shrinkage is computed from the largest
  eigenvalue of the unscaled ``S_w`` (``scale2`` times that of the scaled one).
  """
  n, d = x.shape
  safe = jnp.maximum(counts, 1.0)
  means = jnp.matmul(onehot.T, x, precision=HIGHEST) / safe[:, None]  # [C, d]
  resid = x - jnp.matmul(onehot, means, precision=HIGHEST)
  within = numerics.covariance(resid) / n  # sum_c (n_c / n) cov_c, biased class covariances
  if shrinkage is None:
    shrinkage = jnp.maximum(jnp.exp(-5.0 * scale2 * _largest_eigenvalue(within)), 1e-10)
  ridge = shrinkage * (jnp.trace(within) / d)
  shrunk = (1.0 - shrinkage) * within + ridge * jnp.eye(d, dtype=x.dtype)
  # The reference projects on all d generalised eigenvectors V of (S_b, S_w'), V^T S_w' V = I, so
  # its coefficients means V V^T are exactly means S_w'^{-1}.
  coef = _solve_spd(shrunk, means.T, ridge).T  # [C, d]
  log_prior = jnp.where(present, jnp.log(safe / n), -jnp.inf)
  intercept = -0.5 * jnp.sum(means * coef, axis=1) + log_prior
  logits = jnp.matmul(x, coef.T, precision=HIGHEST) + intercept
  return jax.nn.softmax(logits, axis=1), shrinkage, means


@functools.partial(jax.jit, static_argnames=("num_classes",))
def _sfda_kernel(x, y, *, num_classes):
  # Every step is equivariant under x -> x - m (the class scores change by a class-independent
  # term), so centre first: with a large offset, x^T S^{-1} mu_c - mu_c^T S^{-1} mu_c / 2 would
  # cancel catastrophically. Then bring the features to unit size (exact power of two).
  x, scale = peer_numerics.normalise(peer_numerics.centre(x))
  scale2 = scale * scale
  onehot = jax.nn.one_hot(y, num_classes, dtype=x.dtype)
  counts = jnp.sum(onehot, axis=0)
  present = counts > 0
  num_present = jnp.sum(present)
  prob, shrinkage, means = _fisher_probs(x, onehot, counts, present, None, scale2)
  # "Soften" the probabilities with a second softmax (over the classes present).
  prob = jax.nn.softmax(jnp.where(present, prob, -jnp.inf), axis=1)
  # ConfMix: pull each sample towards the mean of the other classes' means.
  total = jnp.sum(jnp.where(present[:, None], means, 0.0), axis=0)
  outer = (total - means) / (num_present - 1).astype(x.dtype)  # [C, d]
  p = jnp.sum(prob * onehot, axis=1, keepdims=True)  # prob of the true class
  mixed = p * x + (1.0 - p) * jnp.matmul(onehot, outer, precision=HIGHEST)
  prob2, _, _ = _fisher_probs(mixed, onehot, counts, present, shrinkage)
  return jnp.mean(jnp.sum(prob2 * onehot, axis=1))


def sfda(features, labels, *, num_classes: int | None = None) -> jax.Array:
  """SFDA score: Fisher discriminant accuracy after self-challenging ConfMix. Higher is better.

  A port of the reference ``SFDA_Score``:

  1. Regularised Fisher discriminant: within-class scatter ``S_w = sum_c (n_c/n) cov_c``
     (biased covariances), shrinkage ``a = max(exp(-5 lambda), 1e-10)`` with ``lambda`` the
     reference's 3-step power-iteration estimate of the largest eigenvalue of ``S_w``,
     ``S_w' = (1 - a) S_w + a tr(S_w)/d I``; class scores ``x^T S_w'^{-1} mu_c -
     1/2 mu_c^T S_w'^{-1} mu_c + log(n_c/n)`` and their softmax ``p(c | x)``.
     (The reference projects on the generalised eigenvectors of ``(S_b, S_w')``; with all ``d``
     of them kept that equals ``S_w'^{-1}``, so ``S_b`` cancels.)
  2. Soften: ``p <- softmax(p)`` across classes.
  3. ConfMix: ``x_i <- p_i x_i + (1 - p_i) mu_out(y_i)``, ``p_i = p(y_i | x_i)``, ``mu_out(c)`` the
     mean of the other classes' means.
  4. Refit the discriminant on the mixed features with the same shrinkage ``a``; the score is
     ``1/n sum_i p(y_i | x_i)`` (the reference leaves out the log).

  Invariance: SFDA is invariant to a common offset of the features (computed on features centred
  with a shift, so the float32 value is too). It is *not* invariant to rescaling: the shrinkage
  ``exp(-5 lambda)`` depends on the scale of ``S_w`` (for a given shrinkage the discriminant is
  scale free, so the computation runs on features divided by a power of two near their largest
  magnitude and ``lambda`` is scaled back: no overflow at ``|F| ~ 1e5`` or underflow at
  ``1e-6`` in float32).

  Classes absent from ``labels`` are left out, as the reference does by relabelling. When
  ``S_w'`` is numerically singular (``n - C < d`` and tiny ``a``, common in float32) an
  eigenvalue pseudo-inverse replaces the solve; the reference would fail there.

  Args:
    features: [n, d] float features.
    labels: [n] int class indices in ``0..C-1`` (at least two classes present).
    num_classes: static ``C``; needed under ``jit``/``vmap``, else ``max(labels) + 1``.

  Returns:
    Scalar SFDA score in ``(0, 1)``.

  Raises:
    ValueError: fewer than two classes present (ConfMix mixes with the other classes' means),
      every class has a single sample, constant (e.g. all-zero) features, or every class's
      samples sharing one feature vector (zero within-class scatter: the discriminant is
      undefined); a score that is not finite for finite features (in float32 a scale near the
      largest float, ``|f| ~ 1e38``). Under ``jit``/``vmap`` these are not checked and give NaN.

  Reference: Shao et al., ECCV 2022.
  """
  x = validation.check_features(features)
  y, c = validation.check_labels(labels, x.shape[0], num_classes=num_classes)
  validation.check_class_structure(labels, c, metric="SFDA", singletons_ok=False)
  host = features if isinstance(features, np.ndarray) else x  # checked where it lives
  validation.check_not_constant(host, metric="SFDA")
  validation.check_within_class_variation(host, labels, c, metric="SFDA")
  return validation.check_finite_result(_sfda_kernel(x, y, num_classes=c), metric="SFDA",
                                        features=x)


registry.register_metric(
    "sfda", sfda, differentiable=True, vmappable=True,
    description="SFDA: label likelihood in a regularised, self-challenging Fisher discriminant "
                "space (Shao et al., ECCV 2022)")
