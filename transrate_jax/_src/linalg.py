"""Factorisations for every metric: Cholesky, triangular solves, symmetric eigensolvers, SVD.

Every factorisation in the library goes through this module, never through ``jnp.linalg``,
``jax.scipy.linalg`` or ``jax.lax.linalg`` directly (a test walks the sources for it).

**Why: XLA's CPU runtime wedges on batched LAPACK calls.** On the CPU, jaxlib runs a factorisation
of a stack of matrices (``cholesky`` of ``[k, m, m]``, or of one matrix under ``vmap``) as one
LAPACK custom call that splits the stack over XLA's intra-op thread pool and then *blocks its own
pool thread* until the pieces are done (``jax::ParallelBatchMap``). When as many such calls run at
once as the pool has threads (independent factorisations of one program run concurrently; the pool
has one thread per core, so two on a 2-core machine), every thread waits for work queued behind
it: the program never finishes, at 0% CPU. Reproduction (jax/jaxlib 0.10.2, 2 cores): a ``jit`` of
two independent ``jnp.linalg.cholesky`` of ``[10, 112, 112]`` each, called 20 times, hung in 4 of
5 runs (docs/numerics.md, "Hangs"). ``transrate_loss`` at (1000, 112, 10) holds three batched
Cholesky factorisations and hung on its second call every time.

**The rule.** On the CPU backend (``backend.policy().sequential_lapack``) each LAPACK call in a
program factorises one matrix: a stack is looped over with ``lax.map``, and a ``vmap`` of these
functions (by the library or by a user) becomes the same loop (``jax.custom_batching.custom_vmap``),
so no batched LAPACK call is ever emitted. A one-matrix call runs inline on its thread. The values
are those of the batched call. Derivatives are given by ``custom_jvp`` rules (the standard ones;
their tangents are matmuls with the factor's inverse, so they transpose for ``grad`` and batch for
``vmap``), so ``jit``, ``vmap``, ``grad``, ``jvp`` and higher orders work as with ``jnp.linalg``.
GPUs and TPUs run JAX's own batched factorisations and derivatives, unchanged.

All matmuls here are at ``Precision.HIGHEST``.
"""

from __future__ import annotations

import functools
from typing import Callable, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.custom_batching import custom_vmap

from transrate_jax._src import backend

HIGHEST = jax.lax.Precision.HIGHEST


def _mm(a, b):
  return jnp.matmul(a, b, precision=HIGHEST)


def _mT(a):
  return jnp.swapaxes(a, -1, -2)


def _sequential() -> bool:
  return backend.policy().sequential_lapack


def _one_at_a_time(fn: Callable) -> Callable:
  """``fn`` (arrays of one problem -> a pytree of arrays) whose ``vmap`` is a ``lax.map`` loop."""

  @custom_vmap
  def single(*args):
    return fn(*args)

  @single.def_vmap
  def _rule(axis_size, in_batched, *args):  # pylint: disable=unused-argument
    batched = tuple(a for a, b in zip(args, in_batched) if b)

    def body(xs):
      it = iter(xs)
      return single(*[next(it) if b else a for a, b in zip(args, in_batched)])

    out = jax.lax.map(body, batched)
    return out, jax.tree.map(lambda _: True, out)

  return single


def _over_leading(single: Callable, core_ndims: Sequence[int], *args):
  """``single`` applied to each problem of ``args``' common leading (batch) dimensions."""
  batch = jnp.broadcast_shapes(*(a.shape[:a.ndim - k] for a, k in zip(args, core_ndims)))
  if not batch:
    return single(*args)
  cores = [a.shape[a.ndim - k:] for a, k in zip(args, core_ndims)]
  flat = tuple(jnp.broadcast_to(a, batch + core).reshape((-1,) + core)
               for a, core in zip(args, cores))
  out = jax.lax.map(lambda xs: single(*xs), flat)
  return jax.tree.map(lambda o: o.reshape(batch + o.shape[1:]), out)


@functools.lru_cache(maxsize=None)
def _single_cholesky(symmetrize_input: bool):
  return _one_at_a_time(
      lambda a: jax.lax.linalg.cholesky(a, symmetrize_input=symmetrize_input))


@functools.lru_cache(maxsize=None)
def _single_triangular_solve(left_side: bool, lower: bool, transpose_a: bool):
  return _one_at_a_time(lambda a, b: jax.lax.linalg.triangular_solve(
      a, b, left_side=left_side, lower=lower, transpose_a=transpose_a))


@functools.lru_cache(maxsize=None)
def _single_eigh(compute_v: bool):
  if compute_v:
    return _one_at_a_time(lambda a: tuple(jnp.linalg.eigh(a)))
  return _one_at_a_time(jnp.linalg.eigvalsh)


@functools.lru_cache(maxsize=None)
def _single_svd(full_matrices: bool, compute_uv: bool):
  return _one_at_a_time(lambda a: jnp.linalg.svd(a, full_matrices=full_matrices,
                                                 compute_uv=compute_uv))


def _symmetrize(a):
  return 0.5 * (a + _mT(a))


# ---------------------------------------------------------------------------------------------
# Triangular inverse and solves.


def _tri(a, lower: bool):
  return jnp.tril(a) if lower else jnp.triu(a)


@functools.partial(jax.custom_jvp, nondiff_argnums=(1,))
def _triangular_inverse(a, lower):
  eye = jnp.broadcast_to(jnp.eye(a.shape[-1], dtype=a.dtype), a.shape)
  return _solve_raw(a, eye, True, lower, False)


@_triangular_inverse.defjvp
def _triangular_inverse_jvp(lower, primals, tangents):
  (a,), (da,) = primals, tangents
  x = _triangular_inverse(a, lower)
  return x, -_mm(_mm(x, _tri(da, lower)), x)


def _solve_raw(a, b, left_side, lower, transpose_a):
  # The custom_jvp functions here serve the sequential (CPU) path only; elsewhere the public
  # functions call JAX's own.
  return _over_leading(_single_triangular_solve(left_side, lower, transpose_a), (2, 2), a, b)


@functools.partial(jax.custom_jvp, nondiff_argnums=(2, 3, 4))
def _triangular_solve(a, b, left_side, lower, transpose_a):
  return _solve_raw(a, b, left_side, lower, transpose_a)


@_triangular_solve.defjvp
def _triangular_solve_jvp(left_side, lower, transpose_a, primals, tangents):
  a, b = primals
  da, db = tangents
  x = _triangular_solve(a, b, left_side, lower, transpose_a)
  op = _mT if transpose_a else (lambda m: m)
  ainv = op(_triangular_inverse(a, lower))  # op(a)^{-1}
  da = op(_tri(da, lower))
  if left_side:  # op(a) x = b:  dx = op(a)^{-1} (db - op(da) x)
    dx = _mm(ainv, db - _mm(da, x))
  else:  # x op(a) = b:  dx = (db - x op(da)) op(a)^{-1}
    dx = _mm(db - _mm(x, da), ainv)
  return x, dx


def triangular_solve(a: jax.Array, b: jax.Array, *, lower: bool, left_side: bool = True,
                     transpose_a: bool = False) -> jax.Array:
  """``x`` with ``op(a) x = b`` (``left_side``) or ``x op(a) = b``; ``op(a) = a^T`` with
  ``transpose_a``. ``a``: [..., m, m] triangular (only its ``lower`` or upper triangle is read);
  ``b``: [..., m, k] (left) or [..., k, m] (right)."""
  if not _sequential():
    return jax.lax.linalg.triangular_solve(a, b, left_side=left_side, lower=lower,
                                           transpose_a=transpose_a)
  return _triangular_solve(a, b, left_side, lower, transpose_a)


def triangular_inverse(a: jax.Array, *, lower: bool) -> jax.Array:
  """``a^{-1}`` of a triangular ``a`` [..., m, m] (triangular, same side)."""
  eye = jnp.broadcast_to(jnp.eye(a.shape[-1], dtype=a.dtype), a.shape)
  return triangular_solve(a, eye, lower=lower)


def cho_solve(chol: jax.Array, b: jax.Array) -> jax.Array:
  """``(L L^T)^{-1} b`` for the lower Cholesky factor ``chol`` [..., m, m] and ``b`` [..., m, k]."""
  y = triangular_solve(chol, b, lower=True)
  return triangular_solve(chol, y, lower=True, transpose_a=True)


# ---------------------------------------------------------------------------------------------
# Cholesky.


def _tril_half_diagonal(a):
  return jnp.tril(a) - 0.5 * a * jnp.eye(a.shape[-1], dtype=a.dtype)


@functools.partial(jax.custom_jvp, nondiff_argnums=(1,))
def _cholesky(a, symmetrize_input):
  return _over_leading(_single_cholesky(symmetrize_input), (2,), a)


@_cholesky.defjvp
def _cholesky_jvp(symmetrize_input, primals, tangents):
  (a,), (da,) = primals, tangents
  chol = _cholesky(a, symmetrize_input)
  # dL = L Phi(L^{-1} dA L^{-T}), Phi: the lower triangle with the diagonal halved.
  linv = _triangular_inverse(chol, True)
  da = _symmetrize(da) if symmetrize_input else jnp.tril(da) + _mT(jnp.tril(da, -1))
  return chol, _mm(chol, _tril_half_diagonal(_mm(_mm(linv, da), _mT(linv))))


def cholesky(a: jax.Array, *, symmetrize_input: bool = True) -> jax.Array:
  """The lower Cholesky factor ``L`` of SPD ``a`` [..., m, m] (``a = L L^T``; NaN where it fails).

  With ``symmetrize_input=False`` only the lower triangle of ``a`` is read.
  """
  if not _sequential():
    return jax.lax.linalg.cholesky(a, symmetrize_input=symmetrize_input)
  return _cholesky(a, symmetrize_input)


# ---------------------------------------------------------------------------------------------
# Symmetric eigendecomposition.


def _eigh_tangents(w, v, da):
  vdv = _mm(_mT(v), _mm(_symmetrize(da), v))
  dw = jnp.diagonal(vdv, axis1=-2, axis2=-1)
  diff = w[..., None, :] - w[..., :, None]  # w_j - w_i
  f = jnp.where(diff == 0, 0.0, 1.0 / jnp.where(diff == 0, 1.0, diff))
  return dw, _mm(v, f * vdv)


@jax.custom_jvp
def _eigh(a):
  return _over_leading(_single_eigh(True), (2,), a)


@_eigh.defjvp
def _eigh_jvp(primals, tangents):
  (a,), (da,) = primals, tangents
  w, v = _eigh(a)
  dw, dv = _eigh_tangents(w, v, da)
  return (w, v), (dw, dv)


@jax.custom_jvp
def _eigvalsh(a):
  return _over_leading(_single_eigh(False), (2,), a)


@_eigvalsh.defjvp
def _eigvalsh_jvp(primals, tangents):
  (a,), (da,) = primals, tangents
  w, v = _eigh(a)
  return w, _eigh_tangents(w, v, da)[0]


def eigh(a: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Eigenvalues (ascending, [..., m]) and eigenvectors ([..., m, m], columns) of symmetric ``a``.

  ``a`` is symmetrised first, ``(a + a^T) / 2``.
  """
  if not _sequential():
    return jnp.linalg.eigh(a)
  return _eigh(_symmetrize(a))


def eigvalsh(a: jax.Array) -> jax.Array:
  """Eigenvalues (ascending, [..., m]) of symmetric ``a`` [..., m, m] (symmetrised first)."""
  if not _sequential():
    return jnp.linalg.eigvalsh(a)
  return _eigvalsh(_symmetrize(a))


# ---------------------------------------------------------------------------------------------
# SVD: no metric differentiates through one; a derivative raises on every backend alike.


@functools.partial(jax.custom_jvp, nondiff_argnums=(1, 2))
def _svd(a, full_matrices, compute_uv):
  if _sequential():
    return _over_leading(_single_svd(full_matrices, compute_uv), (2,), a)
  return jnp.linalg.svd(a, full_matrices=full_matrices, compute_uv=compute_uv)


@_svd.defjvp
def _svd_jvp(full_matrices, compute_uv, primals, tangents):
  del full_matrices, compute_uv, primals, tangents
  raise ValueError("transrate_jax.linalg.svd has no derivative: the metric that calls it is not "
                   "differentiable (see transrate_jax.describe_metrics()).")


def svd(a: jax.Array, *, full_matrices: bool = False, compute_uv: bool = True):
  """``u, s, vh`` of ``a`` [..., m, k] (or ``s`` alone without ``compute_uv``), as
  ``jnp.linalg.svd``. Not differentiable (on every backend)."""
  return _svd(a, full_matrices, compute_uv)


# ---------------------------------------------------------------------------------------------
# On the host: concrete NumPy matrices of an eager call on the CPU, outside any compiled program.


def host_half_logdet_identity_plus(mats: np.ndarray, scales: np.ndarray, *,
                                   shifts: Optional[np.ndarray] = None) -> np.ndarray:
  """``1/2 logdet(I + scales_i (mats_i + shifts_i 11^T))`` of each PSD ``mats_i``, on the host.

  By SciPy's LAPACK ``potrf`` (the OpenBLAS routine jaxlib's CPU Cholesky calls), one matrix per
  call, from Python: no XLA program holds it, so nothing here can wedge XLA's thread pools, and it
  runs 2-3x faster than the same routine inside XLA's CPU runtime (docs/numerics.md, "Products
  on the host"). Only the upper triangle of each ``mats_i`` (``j >= i``) is read, so a matrix from
  BLAS ``syrk`` needs no mirroring; ``mats`` is overwritten. The arithmetic is that of
  :func:`numerics.logdet_identity_plus` in the same dtype: ``I + s M`` formed in the matrices'
  dtype, then ``sum log diag L``.

  Args:
    mats: [k, m, m] float32 or float64, C-contiguous, writable (overwritten).
    scales: [k] nonnegative scales.
    shifts: [k] or None: a constant added to every entry first (the centring fill of
      ``transrate.kernel.fill_centring_null``, ``gamma / m``).

  Returns:
    [k] in the dtype of ``mats``; NaN for a matrix that is not numerically positive definite
    (as XLA's Cholesky gives), which the callers' float64 rescue then takes up.
  """
  from scipy.linalg import lapack  # pylint: disable=import-outside-toplevel  (after lapack_threads)
  potrf = lapack.spotrf if mats.dtype == np.float32 else lapack.dpotrf
  out = np.empty(mats.shape[0], mats.dtype)
  diag = np.arange(mats.shape[-1])
  # One matrix after the other, each by OpenBLAS's own threads: two calls at once on 2 cores took
  # twice as long (100 matrices of 512 x 512: 0.21 s against 0.11 s).
  for i, a in enumerate(mats):
    if shifts is not None:
      a += mats.dtype.type(shifts[i])
    a *= mats.dtype.type(scales[i])
    a[diag, diag] += 1
    # The row-major upper triangle is the lower triangle of the column-major transpose view:
    # LAPACK factorises in place, without a copy.
    chol, info = potrf(a.T, lower=1, clean=0, overwrite_a=1)
    out[i] = np.log(np.diagonal(chol)).sum(dtype=mats.dtype) if info == 0 else np.nan
  return out
