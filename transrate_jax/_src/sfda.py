"""Self-challenging Fisher Discriminant Analysis (SFDA).

Shao, Zhao, Li, Chen, Ge, Luo, "Not All Models Are Equal: Predicting Model Transferability in a
Self-challenging Fisher Space", ECCV 2022. Reference code: TencentARC/SFDA ``metrics.py``
(``SFDA_Score`` and class ``SFDA``).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from transrate_jax._src import numerics
from transrate_jax._src import validation

HIGHEST = numerics.HIGHEST


def _largest_eigenvalue(a, iterations=3):
  """The reference's estimate of the largest eigenvalue of ``a`` (``utils.iterative_A``)."""
  x = jnp.sum(a, axis=1)
  yv = x
  for _ in range(iterations):
    t = jnp.matmul(a, x, precision=HIGHEST)
    yv = t / jnp.linalg.norm(t)
    t = jnp.matmul(a, yv, precision=HIGHEST)
    x = t / jnp.linalg.norm(t)
  return jnp.dot(jnp.matmul(x, a, precision=HIGHEST), yv, precision=HIGHEST)


def _solve_spd(a, b):
  """``a^{-1} b`` for symmetric ``a``: Cholesky, or an eigenvalue pseudo-inverse with a relative
  cutoff when the Cholesky factorisation fails (numerically singular ``a``)."""
  a = numerics.symmetrize(a)

  def by_cholesky(_):
    chol = jnp.linalg.cholesky(a)
    return jax.scipy.linalg.cho_solve((chol, True), b)

  def by_eigh(_):
    w, v = jnp.linalg.eigh(a)
    cutoff = jnp.max(jnp.abs(w)) * a.shape[-1] * jnp.finfo(a.dtype).eps
    inv = jnp.where(w > cutoff, 1.0 / jnp.where(w > cutoff, w, 1.0), 0.0)
    return jnp.matmul(v * inv, jnp.matmul(v.T, b, precision=HIGHEST), precision=HIGHEST)

  first = by_cholesky(None)
  return jax.lax.cond(jnp.all(jnp.isfinite(first)), lambda _: first, by_eigh, None)


def _fisher_probs(x, onehot, counts, present, shrinkage):
  """Class probabilities [n, C] of the regularised Fisher discriminant, and its shrinkage."""
  n, d = x.shape
  safe = jnp.maximum(counts, 1.0)
  means = jnp.matmul(onehot.T, x, precision=HIGHEST) / safe[:, None]  # [C, d]
  resid = x - jnp.matmul(onehot, means, precision=HIGHEST)
  within = numerics.covariance(resid) / n  # sum_c (n_c / n) cov_c, biased class covariances
  if shrinkage is None:
    shrinkage = jnp.maximum(jnp.exp(-5.0 * _largest_eigenvalue(within)), 1e-10)
  shrunk = (1.0 - shrinkage) * within + shrinkage * (jnp.trace(within) / d) * jnp.eye(d, dtype=x.dtype)
  # The reference projects on all d generalised eigenvectors V of (S_b, S_w'), V^T S_w' V = I, so
  # its coefficients means V V^T are exactly means S_w'^{-1}.
  coef = _solve_spd(shrunk, means.T).T  # [C, d]
  log_prior = jnp.where(present, jnp.log(safe / n), -jnp.inf)
  intercept = -0.5 * jnp.sum(means * coef, axis=1) + log_prior
  logits = jnp.matmul(x, coef.T, precision=HIGHEST) + intercept
  return jax.nn.softmax(logits, axis=1), shrinkage, means


@functools.partial(jax.jit, static_argnames=("num_classes",))
def _sfda_kernel(x, y, *, num_classes):
  onehot = jax.nn.one_hot(y, num_classes, dtype=x.dtype)
  counts = jnp.sum(onehot, axis=0)
  present = counts > 0
  num_present = jnp.sum(present)
  prob, shrinkage, means = _fisher_probs(x, onehot, counts, present, None)
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

  Classes absent from ``labels`` are left out, as the reference does by relabelling. When
  ``S_w'`` is numerically singular (``n - C < d`` and tiny ``a``, common in float32) an
  eigenvalue pseudo-inverse replaces the solve; the reference would fail there.

  Args:
    features: [n, d] float features.
    labels: [n] int class indices in ``0..C-1`` (at least two classes present).
    num_classes: static ``C``; needed under ``jit``/``vmap``, else ``max(labels) + 1``.

  Returns:
    Scalar SFDA score in ``(0, 1)``.

  Reference: Shao et al., ECCV 2022.
  """
  x = validation.check_features(features)
  y, c = validation.check_labels(labels, x.shape[0], num_classes=num_classes)
  return _sfda_kernel(x, y, num_classes=c)
