"""Numerical building blocks shared by every metric.

Matmuls that form Gram or covariance matrices run at ``Precision.HIGHEST`` (GPUs and TPUs otherwise
use reduced-precision float32 passes); log-determinants of symmetric positive definite matrices go
through Cholesky, never LU; where a matrix is known to be rank-deficient and only its ``d x d``
form exists, eigenvalues with a rank bound (:func:`psd_eigvalsh`). The float32 policy:
docs/numerics.md.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from transrate_jax._src import backend
from transrate_jax._src import lapack_threads
from transrate_jax._src import linalg

HIGHEST = jax.lax.Precision.HIGHEST

_HALF = (jnp.float16, jnp.bfloat16)


def float_dtype(dtype) -> np.dtype:
  """The float dtype computations run in for an input of ``dtype``.

  float32 and float64 are kept, half precision (float16, bfloat16) is upcast to float32, and
  integers and booleans become JAX's default float (float64 only under ``jax_enable_x64``).
  """
  dtype = np.dtype(dtype)
  if dtype in (np.dtype(np.float32), np.dtype(np.float64)):
    return jnp.dtype(jax.dtypes.canonicalize_dtype(dtype))
  if dtype in tuple(np.dtype(h) for h in _HALF) or np.issubdtype(dtype, np.floating):
    return jnp.dtype(jnp.float32)
  return jnp.dtype(jax.dtypes.canonicalize_dtype(jnp.float64))


def as_float(x) -> jax.Array:
  """``x`` as a JAX float array in the dtype :func:`float_dtype` picks."""
  x = jnp.asarray(x)
  return x.astype(float_dtype(x.dtype))


def center(x: jax.Array, axis: int = 0) -> jax.Array:
  """``x - mean(x, axis)`` computed with a shift, so a large common offset does not cancel.

  Each column is brought to unit size by a power of two (exact), its first row subtracted (exact
  for rows near it: the offset goes away without rounding), then the mean of the residual, twice
  (the second pass removes the rounding of the first mean), and the power of two undone. The
  shift is a data row rather than a first-pass mean because XLA may recompute the centring inside
  each consumer it fuses into (a gather of class rows with traced indices does) and round a mean
  differently there (``sum * (1/n)`` against ``sum / n``): an inconsistency of one ulp of the
  offset, which with an offset of 1e6 moved float32 TransRate by 2.6e-3
  (``tests/test_float32.py``, docs/numerics.md). A recomputed data row is the same number, and
  the unit scale keeps the residuals' sums from overflowing (features near 1e36 in float32).

  Args:
    x: [..., n, ...] float array.
    axis: the sample axis.

  Returns:
    ``x`` centred along ``axis``, same shape and dtype.
  """
  top = jnp.max(jnp.abs(x), axis=axis, keepdims=True)
  _, exponent = jnp.frexp(jnp.where(top > 0, top, jnp.ones((), x.dtype)))
  scale = jax.lax.stop_gradient(jnp.ldexp(jnp.ones((), x.dtype), exponent))  # 2^e > max |x|
  y = x / scale
  r = y - jax.lax.stop_gradient(jax.lax.slice_in_dim(y, 0, 1, axis=axis))
  r = r - jnp.mean(r, axis=axis, keepdims=True)
  return (r - jnp.mean(r, axis=axis, keepdims=True)) * scale


def matmul_tn(a: jax.Array, b: jax.Array) -> jax.Array:
  """``a^T b`` over the second-to-last axis (batched), at HIGHEST precision.

  Args:
    a: [..., m, p].
    b: [..., m, q].

  Returns:
    [..., p, q].
  """
  return jnp.einsum("...mp,...mq->...pq", a, b, precision=HIGHEST)


def matmul_nt(a: jax.Array, b: jax.Array) -> jax.Array:
  """``a b^T`` over the last axis (batched), at HIGHEST precision.

  Args:
    a: [..., p, m].
    b: [..., q, m].

  Returns:
    [..., p, q].
  """
  return jnp.einsum("...pm,...qm->...pq", a, b, precision=HIGHEST)


def gram(z: jax.Array) -> jax.Array:
  """``z z^T`` ([..., m, m]) for ``z`` of shape [..., m, d]."""
  return matmul_nt(z, z)


# From this width on, ``Z^T Z`` is assembled from its upper block triangle (column blocks of about
# SYMMETRIC_BLOCK): ``k (k + 1) / 2`` of the ``k^2`` block products, 5/8 of the flops for k = 4.
# Measured on XLA CPU (2 cores, float32): 2075 -> 1624 ms at [50000, 2048], 413 -> 339 ms at
# [10000, 2048]; no gain at d = 1024 (benchmarks/bench_cpu.py).
SYMMETRIC_MIN_WIDTH = 2048
SYMMETRIC_BLOCK = 512


def covariance(z: jax.Array) -> jax.Array:
  """``z^T z`` ([..., d, d]) for ``z`` of shape [..., m, d] (unnormalised, uncentred).

  For ``d >= SYMMETRIC_MIN_WIDTH`` only the blocks on and above the diagonal are multiplied (the
  rest is their transpose): the same numbers as one matmul, about 5/8 of the flops.
  """
  d = z.shape[-1]
  if d < SYMMETRIC_MIN_WIDTH:
    return matmul_tn(z, z)
  k = min(8, d // SYMMETRIC_BLOCK)
  edges = [i * d // k for i in range(k + 1)]
  # Row i of blocks: columns [edges[i], edges[i+1]) against columns [edges[i], d).
  rows = [matmul_tn(z[..., lo:hi], z[..., lo:]) for lo, hi in zip(edges[:-1], edges[1:])]
  pad = [(0, 0)] * (z.ndim - 2)
  upper = jnp.concatenate(
      [jnp.pad(r, pad + [(0, 0), (lo, 0)]) for r, lo in zip(rows, edges[:-1])], axis=-2)
  return jnp.where(jnp.tri(d, d, -1, dtype=bool), jnp.swapaxes(upper, -1, -2), upper)


def sum_leading(a: jax.Array) -> jax.Array:
  """``sum(a, axis=0)`` as a matrix-vector product (``[k, ...] -> [...]``, exact at HIGHEST).

  XLA's CPU reduction over a short leading axis of large matrices runs far below memory speed
  (11 ms for [3, 512, 512] on 2 cores); a product with a vector of ones takes well under 1 ms.
  """
  return jnp.tensordot(jnp.ones(a.shape[:1], a.dtype), a, axes=1, precision=HIGHEST)


def symmetrize(a: jax.Array) -> jax.Array:
  """``(a + a^T) / 2`` over the last two axes."""
  return 0.5 * (a + jnp.swapaxes(a, -1, -2))


def cholesky_logdiag(a: jax.Array) -> jax.Array:
  """``log(diag(L))`` of the Cholesky factor ``L`` of SPD ``a`` ([..., m, m] -> [..., m]).

  ``logdet(a) = 2 * sum(cholesky_logdiag(a))``. Only the upper triangle of ``a`` (``i <= j``) is
  read, so a matrix from BLAS ``syrk``, which writes one triangle, needs no mirroring.
  """
  # LAPACK reads one triangle of a column-major matrix; passing the transpose of the row-major
  # ``a`` makes that a free relabelling instead of a transposing copy (``a`` is symmetric).
  chol = linalg.cholesky(jnp.swapaxes(a, -1, -2), symmetrize_input=False)
  return jnp.log(jnp.diagonal(chol, axis1=-2, axis2=-1))


def logdet_spd(a: jax.Array) -> jax.Array:
  """``logdet(a)`` of symmetric positive definite ``a`` ([..., m, m] -> [...]) by Cholesky."""
  return 2.0 * jnp.sum(cholesky_logdiag(a), axis=-1)


def logdet_identity_plus(a: jax.Array, scale) -> jax.Array:
  """``logdet(I + scale * a)`` for PSD ``a`` ([..., m, m]) and ``scale >= 0`` ([...]), by Cholesky.

  ``I + scale * a`` has every eigenvalue at least 1, so the Cholesky factorisation exists and
  the result is >= 0 up to round-off.
  """
  m = a.shape[-1]
  scale = jnp.asarray(scale, a.dtype)[..., None, None]
  return logdet_spd(jnp.eye(m, dtype=a.dtype) + scale * a)


def _decouple_zero_rows(a: jax.Array) -> jax.Array:
  """``a`` ([..., m, m]) with each row and column whose diagonal is ``<= 0`` zeroed, and that
  diagonal entry set to ``-(sum_i |a_ii| + 1)``, below every eigenvalue of the rest.

  A PSD matrix's zero diagonal entry means a zero row and column (a feature that is exactly 0 in
  every row: a dead ReLU unit, zero padding), so an eigenvalue that is exactly 0. A float32
  eigensolver mixes such a direction with the others and returns it as ``~ulp(lambda_max)`` of
  either sign, and ``log(1 + a * that)`` is added to a coding rate (up to 3.5e-4 relative with
  12 dead units of 32, ``tests/test_float32.py``); Cholesky keeps the zeros exact. With the
  entries moved apart from the spectrum the eigensolver keeps them decoupled, and the clip at 0
  in :func:`psd_eigvalsh` returns exact zeros.
  """
  diag = jnp.diagonal(a, axis1=-2, axis2=-1)
  dead = diag <= 0
  m = a.shape[-1]
  off = dead[..., :, None] | dead[..., None, :]
  sentinel = -(jnp.sum(jnp.abs(diag), axis=-1, keepdims=True) + 1.0)
  eye = jnp.eye(m, dtype=bool)
  return jnp.where(off, jnp.where(eye & dead[..., :, None], sentinel[..., None], 0.0), a)


def psd_eigvalsh(a: jax.Array, rank=None) -> jax.Array:
  """Eigenvalues of the PSD matrix ``a`` ([..., m, m] -> [..., m], ascending), clipped at zero.

  With ``rank`` (an int or [...] ints, possibly traced: a bound on the rank of ``a`` known from
  its construction, e.g. ``min(n_c, d)`` for ``Z_c^T Z_c``) only the largest ``rank`` eigenvalues
  are kept and the rest set to exactly 0: the eigenvalues that are 0 in exact arithmetic come out
  as ``~ulp(lambda_max)`` round-off in float32, and ``log(1 + a * round-off)`` must not count
  (docs/numerics.md). This is the one place the rank bound is applied.
  """
  lam = jnp.maximum(linalg.eigvalsh(_decouple_zero_rows(symmetrize(a))), 0.0)
  if rank is None:
    return lam
  m = a.shape[-1]
  rank = jnp.asarray(rank)
  keep = jnp.arange(m) >= (m - rank)[..., None]
  return jnp.where(keep, lam, 0.0)


def host_product(a: np.ndarray, *, gram: bool, lower: bool = False) -> np.ndarray:
  """``a a^T`` (``gram``) or ``a^T a`` of a C-contiguous [m, d] array, by BLAS ``syrk``: the upper
  triangle (``i <= j``; the lower one with ``lower``) holds the product; the other strict triangle
  is left as BLAS writes it (zero) and never read: the factorisation reads that one triangle only
  (:func:`cholesky_logdiag`), and every step before it (scaling, the identity, the centring fill,
  zero padding) keeps it.

  It goes through SciPy's bundled OpenBLAS, the library jaxlib's CPU factorisations use, whose
  threads :mod:`lapack_threads` puts to sleep about 0.1 ms after each call, so they do not spin
  against the factorisation that follows (NumPy's OpenBLAS, a second library, keeps its threads
  busy-waiting for about 0.1 s after each call: a Cholesky started then ran up to 10x slower on
  2 cores). Where that policy could not be applied, NumPy's ``@`` (also ``syrk``) is used.
  """
  if lapack_threads.applied() == "thread_timeout" and a.dtype in (np.float32, np.float64):
    # Imported here, after lapack_threads has loaded SciPy's OpenBLAS with its policy.
    from scipy.linalg import blas as scipy_blas  # pylint: disable=import-outside-toplevel
    syrk = scipy_blas.ssyrk if a.dtype == np.float32 else scipy_blas.dsyrk
    # SciPy's BLAS is column-major: a row-major [m, d] array is the column-major [d, m] a^T.
    return syrk(1.0, a.T, trans=1 if gram else 0, lower=int(lower))
  return a @ a.T if gram else a.T @ a


# A partial eigensolver pays off when few pairs are kept: syevr still reduces the whole matrix to
# tridiagonal form, but computes k eigenvectors instead of all of them.
_PARTIAL_EIGH_MAX_FRACTION = 0.25


def _product_eigh_host(z: np.ndarray, *, gram: bool, top):
  """Host half of :func:`product_eigh`: ``syrk``, then LAPACK's divide-and-conquer ``syevd`` (all
  pairs) or, for a few leading pairs, ``syevr`` by index."""
  import scipy.linalg  # pylint: disable=import-outside-toplevel  (after lapack_threads)
  a = host_product(np.ascontiguousarray(z), gram=gram)  # the upper triangle
  m = a.shape[0]
  partial = top is not None and top <= _PARTIAL_EIGH_MAX_FRACTION * m
  try:
    w, v = scipy.linalg.eigh(a, lower=False, driver="evr" if partial else "evd",
                             subset_by_index=[m - top, m - 1] if partial else None,
                             overwrite_a=True, check_finite=False)
  except (np.linalg.LinAlgError, ValueError):  # no convergence: NaN, as XLA's eigh returns
    w, v = np.full((m,), np.nan), np.full((m, m), np.nan)
  if top is not None:
    w, v = w[-top:], v[:, -top:]
  return w.astype(z.dtype), np.ascontiguousarray(v).astype(z.dtype)


def _eigen_on_host(*arrays) -> bool:
  """Whether :func:`product_eigh` / :func:`product_spectrum` run on the host: the backend
  policy's ``host_linalg`` (the CPU), a float32/float64 ``z`` (the first array) that a callback
  may return (:func:`backend.host_callback`) and unbatched (2-D) arrays."""
  return (backend.policy().host_linalg and arrays[0].dtype in (jnp.float32, jnp.float64)
          and backend.host_callback(arrays[0].dtype) and all(a.ndim == 2 for a in arrays))


def product_eigh(z: jax.Array, *, gram: bool = False,
                 top: int | None = None) -> tuple[jax.Array, jax.Array]:
  """Eigenvalues (ascending) and eigenvectors of ``z^T z`` ([d, d]) or, with ``gram``, ``z z^T``.

  ``z``: [m, d]. Returns ``(w, v)`` with ``w`` [k] and ``v`` [k, k] (``k = d``, or ``m`` with
  ``gram``), as ``jnp.linalg.eigh`` of :func:`covariance` / :func:`gram` would; with ``top``
  (a static int, at most ``k``) only the ``top`` largest pairs, ``w`` [top] and ``v`` [k, top],
  still ascending.

  On the CPU backend, for float32/float64, both steps run on the host through
  ``jax.pure_callback`` (so ``jit`` and ``vmap`` still work; ``grad`` does not, and no metric
  that uses this is differentiable): the product by BLAS ``syrk`` (:func:`host_product`) and the
  eigendecomposition by LAPACK ``syevd`` on its upper triangle, or ``syevr`` for the ``top``
  pairs alone when ``top <= k / 4`` (XLA's CPU ``eigh`` has no subset). At [10000, 2048] float32
  the full decomposition is 0.31 + 0.68 s against XLA's 0.66 + 0.80 s
  (``benchmarks/bench_metrics.py``, LogME's floor parts before :func:`product_spectrum`, which
  scores needing only a few projections use instead). Elsewhere, XLA: the product at
  ``Precision.HIGHEST``, then ``jnp.linalg.eigh``. Eigenvectors are defined up to sign; callers
  use sign-invariant quantities or fix the signs.
  """
  k = z.shape[-2] if gram else z.shape[-1]
  kept = k if top is None else int(top)
  if _eigen_on_host(z):
    shapes = (jax.ShapeDtypeStruct((kept,), z.dtype), jax.ShapeDtypeStruct((k, kept), z.dtype))
    return jax.pure_callback(functools.partial(_product_eigh_host, gram=gram, top=top), shapes,
                             z, vmap_method="sequential")
  w, v = linalg.eigh(matmul_nt(z, z) if gram else covariance(z))
  return w[..., k - kept:], v[..., k - kept:]


def host_spectrum(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Eigenvalues (ascending) of the symmetric ``a`` ([m, m], read from its lower triangle and
  overwritten) and ``V^T b`` ([m, r]), by LAPACK on the host: the tridiagonal reduction
  ``Q^T a Q = T`` (``sytrd``), ``Q^T b`` (``ormqr``: the reflectors of a lower ``sytrd`` are those
  of a QR factorisation of the trailing ``m - 1`` rows), ``T = W diag(w) W^T`` (``stevd``, divide
  and conquer), then ``W^T (Q^T b)``. The steps of ``syevd`` except that ``Q`` is applied to the
  ``r`` columns of ``b`` instead of the ``m`` eigenvectors (``4 m^2 r`` flops, not ``4 m^3``).
  NaN where LAPACK does not converge, as XLA's ``eigh`` returns.
  """
  from scipy.linalg import lapack  # pylint: disable=import-outside-toplevel  (after lapack_threads)
  dtype = a.dtype
  m, r = a.shape[0], b.shape[1]
  if m == 1:
    return a[0, :1].copy(), np.array(b, dtype)
  sytrd, ormqr, stevd = ((lapack.ssytrd, lapack.sormqr, lapack.sstevd) if dtype == np.float32
                         else (lapack.dsytrd, lapack.dormqr, lapack.dstevd))
  c, diag, off, tau, info = sytrd(a, lower=1, overwrite_a=1)
  y = np.array(b, dtype, order="F")
  if r:
    reflectors = c[1:, :m - 1]
    lwork = int(ormqr("L", "T", reflectors, tau, y[1:], -1)[1][0])
    y[1:], _, info_q = ormqr("L", "T", reflectors, tau, y[1:], max(lwork, r), overwrite_c=1)
    info |= info_q
  w, wvec, info_e = stevd(diag, off, compute_v=1)
  if info or info_e:
    return np.full((m,), np.nan, dtype), np.full((m, r), np.nan, dtype)
  return w.astype(dtype), np.ascontiguousarray(wvec.T @ y, dtype)


# A float32 eigensolver resolves eigenvalues to about eps * max: those below this many ulps of the
# largest (not exactly 0, which dead units give exactly) are redone in float64.
RESOLVED_ULPS = 512


def _product_spectrum_host(z: np.ndarray, b: np.ndarray, *, gram: bool):
  """Host half of :func:`product_spectrum`: ``syrk`` (the lower triangle), then
  :func:`host_spectrum`; in float64 from the same float32 product when float32 does not resolve
  the spectrum (an eigenvalue in ``(-inf, RESOLVED_ULPS eps max)`` other than exactly 0, or no
  convergence)."""
  a = host_product(np.ascontiguousarray(z), gram=gram, lower=True)
  if a.dtype != np.float32:
    return host_spectrum(a, b)
  kept = a.copy(order="F")  # host_spectrum overwrites a
  w, p = host_spectrum(a, b)
  limit = RESOLVED_ULPS * np.finfo(np.float32).eps * np.max(np.abs(w))
  if np.all(np.isfinite(w)) and not np.any((w != 0) & (w < limit)):
    return w, p
  w, p = host_spectrum(kept.astype(np.float64, order="F"), np.asarray(b, np.float64))
  return w.astype(np.float32), p.astype(np.float32)


def product_spectrum(z: jax.Array, b: jax.Array, *,
                     gram: bool = False) -> tuple[jax.Array, jax.Array]:
  """Eigenvalues of ``A = z^T z`` (or, with ``gram``, ``z z^T``) and ``b`` in its eigenbasis.

  ``z``: [m, d]; ``b``: [k, r] (``k = d``, or ``m`` with ``gram``). Returns ``(w, p)``: ``w`` [k]
  ascending, ``p = V^T b`` [k, r] with ``A = V diag(w) V^T``: what :func:`product_eigh` followed
  by ``v.T @ b`` gives (rows of ``p`` defined up to sign, and mixed within a cluster of equal
  eigenvalues, as the eigenvectors are), for scores that need the eigenvectors only to project a
  few vectors (LogME's evidence, H-score).

  On the CPU backend, for float32/float64, on the host through ``jax.pure_callback`` (``jit``
  and ``vmap`` work, ``grad`` does not): ``syrk``, then LAPACK's tridiagonal reduction, its
  reflectors applied to ``b`` alone, and divide and conquer on the tridiagonal matrix
  (:func:`host_spectrum`): at [10000, 2048] float32 with ``r = 101`` about 0.25 s
  less than ``syevd`` and the projection. For float32 a spectrum that float32 does not resolve
  (an eigenvalue, other than an exact 0, below :data:`RESOLVED_ULPS` ulps of the largest) is
  redone in float64 from the same float32 product: the product of features of graded scale (a
  stem's channels) keeps its small eigenvalues, a float32 eigensolver loses them (LogME on
  MobileNetV2's stem: 2e-2 from float64 in float32 alone, 3e-5 with the redo). Elsewhere XLA's
  product at ``Precision.HIGHEST``, ``jnp.linalg.eigh`` and the projection.
  """
  k = z.shape[-2] if gram else z.shape[-1]
  if b.shape[-2] != k:
    raise ValueError(f"b has {b.shape[-2]} rows; the product is {k} x {k}")
  if _eigen_on_host(z, b):
    b = b.astype(z.dtype)
    shapes = (jax.ShapeDtypeStruct((k,), z.dtype), jax.ShapeDtypeStruct(b.shape, z.dtype))
    return jax.pure_callback(functools.partial(_product_spectrum_host, gram=gram), shapes, z, b,
                             vmap_method="sequential")
  w, v = linalg.eigh(matmul_nt(z, z) if gram else covariance(z))
  return w, matmul_tn(v, b.astype(z.dtype))


def bucket(size: int, *, minimum: int = 1, steps: int = 1) -> int:
  """A padded size at or above ``max(size, minimum)`` from a small set (bounds recompiles).

  With ``steps=1`` the next power of two. With ``steps=k`` (a power of two) each octave
  ``(2^(j-1), 2^j]`` is cut into ``k`` equal steps, so padding wastes at most ``1/k`` of the size.
  """
  size = max(int(size), int(minimum), 1)
  if size == 1:
    return 1
  octave = 1 << ((size - 1).bit_length() - 1)  # 2^(j-1) < size <= 2^j
  step = max(1, octave // steps)
  return -(-size // step) * step


# ---------------------------------------------------------------------------------------------
# Backend policy for batched factorisations.


def one_matrix_per_program() -> bool:
  """Whether a stack of matrices is scored by one call of an unbatched program per matrix
  (``backend.policy().one_matrix_per_program``: the CPU, which has no parallel lanes for a batch
  to fill; an eager TransRate call then forms its products on the host). GPUs and TPUs, and the
  CPU under the accelerator switch, run one batched ``vmap`` program. (No hang depends on it:
  :mod:`linalg` keeps every LAPACK call of one matrix.)
  """
  return backend.policy().one_matrix_per_program


@functools.partial(jax.jit, static_argnames=("width", "dtype"))
def _pad_columns_device(x, *, width, dtype):
  x = x.astype(dtype)
  return jnp.pad(x, ((0, 0), (0, width - x.shape[1])))


def pad_columns(x, width: int, dtype):
  """``x`` [n, d] in ``dtype`` with zero columns appended up to ``width`` (>= d).

  A NumPy (host) array is padded on the host and stays there (a compiled program takes NumPy
  arguments without an extra eager op to compile); a JAX array is padded on its device. Returned
  unchanged when it already has that width and dtype.
  """
  dtype = np.dtype(dtype)
  if np.shape(x)[1] == width and np.dtype(x.dtype) == dtype:
    return x
  if isinstance(x, jax.Array):
    return _pad_columns_device(x, width=width, dtype=dtype)
  x = np.asarray(x)
  out = np.zeros((x.shape[0], width), dtype)
  out[:, :x.shape[1]] = x
  return out
