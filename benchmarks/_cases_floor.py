"""The floor of a metric's benchmark case: its unavoidable work at the best rate this machine reaches.

A case's ``floor(features, labels)`` returns *stages*, ``[(kind, [args, ...]), ...]``: the products
and factorisations an exact method must do for that score (products on their cheaper side,
symmetric ones as one symmetric product), prepared outside the timing. :func:`floor_seconds` (the
one helper every case's floor goes through, bench_metrics.py calls it) times each stage with every
host implementation of its kind (NumPy's OpenBLAS, SciPy's LAPACK) and with XLA (``Precision.HIGHEST``;
a stage's products in one compiled program, so no per-call dispatch counts; factorisations one call
each, as bench_transrate.exact_floor does, since one XLA CPU program holding many LAPACK calls can
deadlock), keeps the fastest per stage, and sums: ``floor = sum over stages of min(host, XLA)``.
TransRate's floor is bench_transrate.exact_floor itself (the same rule, written for its terms).

Kinds (``args`` are NumPy arrays unless named otherwise):

  * ``gram (a,)``: ``a^T a`` when ``a`` has at least as many rows as columns, else ``a a^T``;
  * ``rows_gram (a,)``: ``a a^T`` (the similarities of the rows, whatever the shape);
  * ``matmul (a, b)``: ``a @ b``;
  * ``class_sums (x, labels, C)``: the ``[C, d]`` per-class sums of the rows (one-hot product or
    segment sum);
  * ``take_rowdot (a, b, labels)``: ``sum_j a[i, j] b[labels[i], j]`` ([n]; whole, and by
    blocks of rows);
  * ``histogram (keys, length)``: counts of the integer keys;
  * ``logsumexp (a,)``: along the rows;
  * ``eigh (a,)``: values and vectors of a symmetric matrix;
  * ``eigh_project (a, b)``: the eigenvalues of ``a`` and ``V^T b`` (``b`` [m, r]): ``syevd``
    and the projection, or the tridiagonal reduction with its reflectors applied to ``b`` alone
    (``numerics.host_spectrum``: SciPy's LAPACK, the fewer flops when ``r << m``);
  * ``eigh_top (a, k)``: the ``k`` largest eigenpairs (SciPy ``syevr`` by index; XLA on CPU has no
    subset, so its full ``eigh`` is the XLA time);
  * ``cholesky (a,)``, ``trsm (l, b)`` (``l^{-1} b``, ``l`` lower triangular),
    ``svdvals (a,)``: singular values.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import scipy.linalg
import scipy.special

from bench_transrate import timed
from transrate_jax._src import numerics

HI = jax.lax.Precision.HIGHEST


def _np_gram(a):
  return a.T @ a if a.shape[0] >= a.shape[1] else a @ a.T  # OpenBLAS syrk either way


def _xla_gram(a):
  if a.shape[0] >= a.shape[1]:
    return jnp.matmul(a.T, a, precision=HI)
  return jnp.matmul(a, a.T, precision=HI)


def _evd_project(a, b):
  w, v = scipy.linalg.eigh(a, driver="evd")
  return w, v.T @ b


def _tridiagonal_project(a, b):
  return numerics.host_spectrum(np.asfortranarray(a), b)  # on a copy: it overwrites ``a``


def _xla_eigh_project(a, b):
  w, v = jnp.linalg.eigh(a)
  return w, jnp.matmul(v.T, b, precision=HI)


_ROWDOT_BLOCK = 256  # rows per block: b[labels] gathered a block at a time stays in cache


def _np_take_rowdot_blocked(a, b, y):
  out = np.empty(a.shape[0], a.dtype)
  for s in range(0, a.shape[0], _ROWDOT_BLOCK):
    rows = slice(s, s + _ROWDOT_BLOCK)
    out[rows] = np.einsum("ij,ij->i", a[rows], b[y[rows]])
  return out


def _xla_take_rowdot(a, b, y):
  """A ``fori_loop`` over full blocks of rows (dynamic slices of ``a``, not a scan over a
  reshaped copy), then the remainder: on the CPU one [n, d] gather as a whole runs several
  times slower than the same gather a cache-sized block at a time."""
  rows = _ROWDOT_BLOCK
  full = a.shape[0] // rows * rows

  def step(i, out):
    block = jax.lax.dynamic_slice_in_dim(a, i * rows, rows)
    dots = jnp.sum(block * b[jax.lax.dynamic_slice_in_dim(y, i * rows, rows)], axis=1)
    return jax.lax.dynamic_update_slice_in_dim(out, dots, i * rows, 0)

  head = jax.lax.fori_loop(0, full // rows, step, jnp.zeros((full,), a.dtype))
  return jnp.concatenate([head, jnp.sum(a[full:] * b[y[full:]], axis=1)])


def _np_eigh_top(a, k):
  m = a.shape[0]
  return scipy.linalg.eigh(a, subset_by_index=[m - k, m - 1], driver="evr")


# kind -> (host implementations, XLA implementation, is a factorisation). Each implementation takes
# the stage's args; for XLA the non-array args are static.
KINDS = {
    "gram": ([_np_gram], _xla_gram, False),
    "rows_gram": ([lambda a: a @ a.T], lambda a: jnp.matmul(a, a.T, precision=HI), False),
    "matmul": ([lambda a, b: a @ b], lambda a, b: jnp.matmul(a, b, precision=HI), False),
    "class_sums": ([lambda x, y, c: np.eye(c, dtype=x.dtype)[y].T @ x],
                   lambda x, y, c: jax.ops.segment_sum(x, y, num_segments=c), False),
    "take_rowdot": ([lambda a, b, y: np.einsum("ij,ij->i", a, b[y]), _np_take_rowdot_blocked],
                    _xla_take_rowdot, False),
    "histogram": ([lambda keys, length: np.bincount(keys, minlength=length)],
                  lambda keys, length: jax.ops.segment_sum(
                      jnp.ones(keys.shape, jnp.float32), keys, num_segments=length), False),
    "logsumexp": ([lambda a: scipy.special.logsumexp(a, axis=1)],
                  lambda a: jax.nn.logsumexp(a, axis=1), False),
    "eigh": ([np.linalg.eigh, lambda a: scipy.linalg.eigh(a, driver="evd")], jnp.linalg.eigh, True),
    "eigh_project": ([_evd_project, _tridiagonal_project], _xla_eigh_project, True),
    "eigh_top": ([_np_eigh_top, lambda a, k: scipy.linalg.eigh(a, driver="evd")],
                 lambda a, k: jnp.linalg.eigh(a), True),
    "cholesky": ([np.linalg.cholesky, lambda a: scipy.linalg.cholesky(a, lower=True)],
                 jnp.linalg.cholesky, True),
    "trsm": ([lambda l, b: scipy.linalg.solve_triangular(l, b, lower=True)],
             lambda l, b: jax.scipy.linalg.solve_triangular(l, b, lower=True), True),
    "svdvals": ([lambda a: np.linalg.svd(a, compute_uv=False)],
                lambda a: jnp.linalg.svd(a, compute_uv=False), True),
}


def _describe(kind, calls):
  shapes = [tuple(a.shape) for a in calls[0] if isinstance(a, np.ndarray)]
  text = f"{kind} {' x '.join(str(list(s)) for s in shapes if len(s) > 1) or shapes}"
  return text + (f" x{len(calls)}" if len(calls) > 1 else "")


def _xla_runner(kind, calls):
  """A thunk running every call of one stage with XLA (one program, or one per call)."""
  _, fn, factorisation = KINDS[kind]
  arrays = [[jax.device_put(a) for a in args if isinstance(a, np.ndarray)] for args in calls]

  def bind(args):  # the XLA function of one call, its non-array args closed over (static)
    def one(*xs):
      it = iter(xs)
      return fn(*[next(it) if isinstance(a, np.ndarray) else a for a in args])
    return one

  if factorisation:
    jitted = [jax.jit(bind(args)) for args in calls]
    return lambda: [f(*xs) for f, xs in zip(jitted, arrays)]
  singles = [bind(args) for args in calls]
  program = jax.jit(lambda all_xs: [f(*xs) for f, xs in zip(singles, all_xs)])
  return functools.partial(program, arrays)


def floor_seconds(stages, repeats):
  """Times ``stages`` at the faster of the host and XLA per stage; returns ``(seconds, parts)``.

  ``parts`` lists each stage with its host and XLA medians (seconds) and which one was kept.
  """
  total, parts = 0.0, []
  for kind, calls in stages:
    hosts, _, _ = KINDS[kind]
    host_s = min(timed(lambda h=h: [h(*args) for args in calls], repeats, budget_s=0.5)[0]
                 for h in hosts)
    run_xla = _xla_runner(kind, calls)
    jax.block_until_ready(run_xla())  # compile
    xla_s = timed(run_xla, repeats, budget_s=0.5)[0]
    total += min(host_s, xla_s)
    parts.append({"what": _describe(kind, calls), "host_s": host_s, "xla_s": xla_s,
                  "kept": "host" if host_s <= xla_s else "xla"})
  return total, parts


def centred(x):
  x = np.asarray(x, np.float32)
  return x - x.mean(axis=0)


def spd(m):
  """A well-conditioned SPD matrix of ``m``'s shape to time a Cholesky on (its time does not
  depend on the values; an ``eigh`` is timed on the real matrix, divide and conquer deflates)."""
  m = np.asarray(m)
  return (np.eye(m.shape[0], dtype=m.dtype) + m / (float(np.trace(m)) / m.shape[0] + 1e-30))
