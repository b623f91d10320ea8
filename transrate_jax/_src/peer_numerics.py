"""Numerics shared by the peer metrics: scale normalisation, exact PCA, k-means++ seeding.

Many transferability scores are invariant to rescaling the features, ``score(s F) = score(F)``,
but their float32 evaluation is not: products such as ``F^T F`` overflow (|F| ~ 1e19) or
underflow (|F| ~ 1e-19) long before the inputs do, and fourth powers (Ledoit-Wolf) twice as
early. Dividing by a *power of two* near ``max |F|`` first changes no bit of the mantissas (the
division is exact), so the normalised computation is the same computation on data of unit size.

The exact PCA (GBC, N-LEEP, PARC), squared distances and k-means++ seeding (N-LEEP, the k-means
quantisation of regression targets) have their one home here too.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from transrate_jax._src import numerics

HIGHEST = numerics.HIGHEST


def pow2_above(m: jax.Array) -> jax.Array:
  """``2^e`` with ``2^(e-1) <= m < 2^e`` for a scalar ``m > 0`` (2 when ``m == 0``)."""
  _, e = jnp.frexp(jnp.where(m > 0, m, jnp.ones((), m.dtype)))
  return jnp.ldexp(jnp.ones((), m.dtype), e)


def pow2_scale(x: jax.Array) -> jax.Array:
  """``2^e`` with ``2^(e-1) <= max |x| < 2^e`` (2 when ``x`` is all zero); a scalar of ``x``'s dtype.

  Dividing by it is exact in binary floating point (no mantissa changes) and leaves
  ``max |x / s|`` in ``[1/2, 1)``.
  """
  return pow2_above(jnp.max(jnp.abs(x)))


def normalise(x: jax.Array):
  """``(x / s, s)`` with ``s = pow2_scale(x)``: ``x`` brought to unit size, exactly."""
  s = pow2_scale(x)
  return x / s, s


@jax.jit
def _is_constant(x):
  return jnp.all(x == x[:1])


def is_constant(x) -> bool:
  """Whether every row of the concrete ``[n, d]`` array ``x`` equals the first (all features
  constant over the samples)."""
  if isinstance(x, np.ndarray):
    return bool(np.all(x == x[:1]))
  return bool(_is_constant(x))


def centre(x: jax.Array) -> jax.Array:
  """``x - mean(x, axis=0)`` with a shift (:func:`numerics.center`), constant columns exactly 0.

  A column whose centred values are all below ``eps / 16`` of its largest magnitude is constant
  to the resolution of the dtype (two distinct floats near ``v`` differ by at least
  ``eps |v| / 2``, so a non-constant column keeps at least ``eps / 4`` of its magnitude): its
  residual is the round-off of the mean and is set to 0, so that a later normalisation does not
  blow round-off up to unit size.

  Args:
    x: [n, d] float.

  Returns:
    [n, d], centred.
  """
  z = numerics.center(x, axis=0)
  tiny = jnp.finfo(x.dtype).eps / 16 * jnp.max(jnp.abs(x), axis=0)
  return jnp.where(jnp.max(jnp.abs(z), axis=0) <= tiny, 0.0, z).astype(x.dtype)


def pca_eigh(x: jax.Array):
  """Exact PCA of the rows of ``x``: mean, variances and principal axes, largest first.

  The smaller side is factorised: the ``[d, d]`` scatter matrix when ``n >= d``, else the
  ``[n, n]`` Gram matrix. Signs follow scikit-learn >= 1.5 (``svd_flip(u_based_decision=False)``):
  the entry of largest magnitude in each axis is positive.

  Args:
    x: [n, d] float.

  Returns:
    ``(mean [d], eigenvalues [r], axes [d, r])`` with ``r = min(n, d)``; eigenvalues are those of
    the scatter ``(x - mean)^T (x - mean)`` (divide by ``n - 1`` for variances), descending,
    clipped at zero.
  """
  n, d = x.shape
  xc = numerics.center(x)  # shifted two-pass centring: a large offset does not cancel
  mean = jnp.mean(x - xc, axis=0)
  if n >= d:
    evals, evecs = numerics.product_eigh(xc)
    evals, evecs = evals[::-1], evecs[:, ::-1]
  else:
    evals, u = numerics.product_eigh(xc, gram=True)
    evals, u = evals[::-1], u[:, ::-1]
    cutoff = evals[0] * max(n, d) * jnp.finfo(x.dtype).eps
    keep = evals > cutoff
    inv_s = jnp.where(keep, 1.0 / jnp.sqrt(jnp.where(keep, evals, 1.0)), 0.0)
    evecs = jnp.matmul(xc.T, u, precision=HIGHEST) * inv_s
  evals = jnp.maximum(evals, 0.0)
  r = min(n, d)
  return mean, evals[:r], _sklearn_signs(evecs[:, :r])


def _sklearn_signs(axes: jax.Array) -> jax.Array:
  """``axes`` [d, r] with each column's entry of largest magnitude made positive (scikit-learn)."""
  pivot = jnp.argmax(jnp.abs(axes), axis=0)
  signs = jnp.sign(axes[pivot, jnp.arange(axes.shape[1])])
  return axes * jnp.where(signs == 0, 1.0, signs).astype(axes.dtype)


def pca_project(x: jax.Array, k: int, axes: jax.Array | None = None) -> jax.Array:
  """``(x - mean) @ axes[:, :k]``: the first ``k`` exact principal components ([n, d] -> [n, k]).

  ``x`` is centred with a shift (:func:`numerics.center`); ``axes`` ([d, >= k]) defaults to
  those of :func:`pca_eigh` (the same axes and signs). When ``n >= d`` only the ``k`` leading
  eigenvectors of the scatter matrix are asked of :func:`numerics.product_eigh`: on the CPU, for
  ``k <= d / 4``, LAPACK ``syevr`` computes those alone on the host, where XLA's CPU ``eigh``
  computes all ``d`` (GBC at (10000, 2048), k = 64).
  """
  xc = numerics.center(x)
  if axes is None:
    n, d = x.shape
    if n >= d:
      _, vecs = numerics.product_eigh(xc, top=min(k, d))
      axes = _sklearn_signs(vecs[:, ::-1])
    else:
      _, _, axes = pca_eigh(x)
  return jnp.matmul(xc, axes[:, :k], precision=HIGHEST)


def sq_distances(x: jax.Array, centres: jax.Array) -> jax.Array:
  """``|x_i - c_j|^2`` [n, k] for ``x`` [n, p] and ``centres`` [k, p], clipped at 0."""
  cross = numerics.matmul_nt(x, centres)
  d2 = jnp.sum(x * x, 1)[:, None] - 2.0 * cross + jnp.sum(centres * centres, 1)[None, :]
  return jnp.maximum(d2, 0.0)


def kmeans_plusplus(key: jax.Array, x: jax.Array, num_components: int) -> jax.Array:
  """Indices [K] of k-means++ seeds (D^2 sampling) among the rows of ``x``."""
  n = x.shape[0]
  key0, key = jax.random.split(key)
  first = jax.random.randint(key0, (), 0, n, dtype=jnp.int32)
  idx = jnp.zeros(num_components, jnp.int32).at[0].set(first)
  d2 = jnp.sum((x - x[first]) ** 2, axis=1)

  def body(j, carry):
    idx, d2 = carry
    logits = jnp.where(d2 > 0, jnp.log(jnp.where(d2 > 0, d2, 1.0)), -jnp.inf)
    logits = jnp.where(jnp.any(d2 > 0), logits, 0.0)
    i = jax.random.categorical(jax.random.fold_in(key, j), logits).astype(jnp.int32)
    return idx.at[j].set(i), jnp.minimum(d2, jnp.sum((x - x[i]) ** 2, axis=1))

  idx, _ = jax.lax.fori_loop(1, num_components, body, (idx, d2))
  return idx
