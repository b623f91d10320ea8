"""The TransRate kernel: flop model, block planning, dense layouts and the compiled program.

Private. The public functions (``transrate``, ``coding_rate``) are in ``transrate.py``; the
batched sweep, streaming, sharding, the regularizer and the regression targets all build on the
layouts planned here, so a layout is derived once. The formulas:

    Z    = F - mean(F, axis=0)                               # global centring
    R(Z) = 1/2 logdet(I_d + Z^T Z / (n eps))                 # coding rate
    R_c  = 1/2 logdet(I_d + Z_c^T Z_c / (n_c eps))           # rows of class c, not re-centred
    TrR  = R(Z) - sum_c w_c R_c                              # w_c = n_c / n ("prior") or 1 / C ("uniform")

Every log-determinant is taken on the side of Sylvester's identity,
``logdet(I_d + a Z^T Z) = logdet(I_m + a Z Z^T)`` for ``Z`` with ``m`` rows, where its matrix has
full rank (the Gram side iff ``m <= d``), by Cholesky, or by one symmetric eigendecomposition with
the rank bound when ``eps`` is a vector of values to sweep. Centring is shifted. This is the
float32 policy of docs/numerics.md; speed choices only pick among layouts that obey it.

The class terms are batched, with no Python loop over classes inside the compiled program:

* labels known on the host (an eager call): the rows of each class are gathered into padded blocks,
  classes grouped by side and padded size (8 sizes per octave), each group's Gram or covariance
  matrices formed by one batched matmul, and all of them factorised by one batched Cholesky (zero
  padding rows add eigenvalues 0, ``log 1 = 0``, so padding is exact). When the total and every
  class sit on the covariance side, ``Z^T Z`` is their sum (:func:`block_sides`);
* labels traced (inside a user's ``jit``/``vmap``/``grad``, with a static ``num_classes``): classes
  with ``n_c <= d`` on the Gram side (one ``n x n`` Gram matrix masked to its class-diagonal
  blocks, whose single Cholesky factor holds every class's log-determinant on its diagonal, or
  per-class row blocks), and ``d x d`` covariance slots for the at most ``n // (d + 1)`` classes
  that can have more rows than ``d`` (:func:`dense_layout`).

An eager call on the CPU forms the same products by BLAS ``syrk`` and factorises them by LAPACK
``potrf`` on the host instead, and compiles only the assembly (:func:`host_moments`,
:func:`host_moment_rates`, :func:`transrate_from_rates_jit`).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import os
from typing import NamedTuple, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from transrate_jax._src import backend
from transrate_jax._src import linalg
from transrate_jax._src import numerics
from transrate_jax._src import registry
from transrate_jax._src import validation

WEIGHTINGS = ("prior", "uniform")
PRESETS = ("tllib", "official")

# Class blocks are padded to one of 8 sizes per octave: at most 12.5% padding rows.
BLOCK_STEPS = 8

# The floor on a row's norm when rows are L2-normalised (torch.nn.functional.normalize's default).
_NORM_FLOOR = 1e-12


@dataclasses.dataclass(frozen=True)
class Config:
  """Static configuration of one TransRate computation (hashable: part of the jit cache key).

  Attributes:
    weighting: "prior" (``w_c = n_c / n``) or "uniform" (``w_c = 1 / C``).
    normalize: L2-normalise rows before and after centring (the official pipeline).
    rank_normalize: divide by the numerical rank of ``Z^T Z / n`` (the official pipeline).
  """
  weighting: str = "prior"
  normalize: bool = False
  rank_normalize: bool = False


def resolve_config(weighting: Optional[str], preset: Optional[str]) -> Config:
  """The :class:`Config` for the public ``weighting`` and ``preset`` keywords.

  Raises:
    ValueError: unknown weighting or preset, or a weighting that contradicts the preset.
  """
  if weighting is not None and weighting not in WEIGHTINGS:
    raise ValueError(f"weighting must be one of {WEIGHTINGS}; got {weighting!r}.")
  if preset is None:
    return Config(weighting=weighting or "prior")
  if preset not in PRESETS:
    raise ValueError(f"preset must be None or one of {PRESETS}; got {preset!r}.")
  fixed = "uniform" if preset == "tllib" else "prior"
  if weighting is not None and weighting != fixed:
    raise ValueError(
        f"preset={preset!r} fixes weighting={fixed!r}; got weighting={weighting!r}. "
        "Drop one of the two keywords.")
  if preset == "tllib":
    return Config(weighting="uniform")
  return Config(weighting="prior", normalize=True, rank_normalize=True)


# ---------------------------------------------------------------------------------------------
# Log-determinant terms. The float32 policy they follow is docs/numerics.md.


def side_flops(rows: int, dim: int, *, gram: bool) -> float:
  """Flops of ``logdet(I + a M)`` for ``M`` = ``Z Z^T`` (``gram``) or ``Z^T Z``, ``Z`` [rows, dim]."""
  return rows * rows * dim + rows ** 3 / 3 if gram else rows * dim * dim + dim ** 3 / 3


def gram_side(rows: int, dim: int) -> bool:
  """Whether the term of ``Z`` [rows, dim] is taken on the Gram side ``Z Z^T`` (docs/numerics.md).

  The rank rule: ``Z^T Z`` and ``Z Z^T`` have rank at most ``min(rows, dim)``, so the side of size
  ``min(rows, dim)`` is the one of full rank: the Gram side when ``rows <= dim``, the covariance
  side otherwise. The other side has ``|rows - dim|`` eigenvalues that are 0 in exact arithmetic
  but ``~ulp(lambda_max)`` of either sign in float32; times ``a = 1 / (rows eps)`` they exceed 1
  and float32 Cholesky of ``I + a M`` fails (or a ``log(1 + a delta)`` of junk is added). For a
  single term the rank rule is also the cheaper side (:func:`side_flops`: ``rows^2 dim + rows^3/3
  <= rows dim^2 + dim^3/3`` iff ``rows <= dim``); at ``rows == dim`` both sides have full rank.
  """
  return rows <= dim


def second_moment(z: jax.Array) -> jax.Array:
  """``Z Z^T`` or ``Z^T Z`` for ``z`` [..., m, d], the side :func:`gram_side` picks (full rank)."""
  m, d = z.shape[-2:]
  return numerics.gram(z) if gram_side(m, d) else numerics.covariance(z)


def fill_centring_null(mat: jax.Array):
  """``(M + gamma 11^T / m, gamma)`` for the Gram matrix ``M`` [m, m] of rows that sum to zero.

  Centred rows have the ones vector as a null vector of ``M = Z Z^T`` (rank ``m - 1``); float32
  leaves an eigenvalue of size ``~ulp(lambda_max)`` and either sign there. Giving that direction the
  eigenvalue ``gamma = trace(M) / m`` (>= ``lambda_max / m``) keeps Cholesky of ``I + a M`` exact:

      logdet(I + a M) = logdet(I + a (M + gamma 11^T / m)) - log(1 + a gamma),

  and ``(I + a M_filled)^{-1} Z = (I + a M)^{-1} Z`` (``Z^T 1 = 0``), so gradients are unchanged.
  ``gamma`` is held constant under differentiation (the derivative in it vanishes at a null vector).
  """
  m = mat.shape[-1]
  gamma = jax.lax.stop_gradient(jnp.trace(mat, axis1=-2, axis2=-1) / m)
  return mat + (gamma / m)[..., None, None], gamma


def half_logdet(mats: jax.Array, scales: jax.Array, eps: jax.Array, *, eps_vector: bool,
                rank=None):
  """``1/2 logdet(I + scales / eps * mats)`` for PSD ``mats``.

  By Cholesky for a scalar ``eps`` and no ``rank``; otherwise from the eigenvalues, of which only
  the largest ``rank`` count (:func:`numerics.psd_eigvalsh`; docs/numerics.md).

  Args:
    mats: [..., m, m] PSD matrices.
    scales: [...] nonnegative scales (``1 / rows``; 0 for an empty block).
    eps: scalar, or [E] when ``eps_vector``.
    eps_vector: use one eigendecomposition for all values of ``eps``.
    rank: None, or [...] ints: a bound on the rank of each matrix (eigenvalue path).

  Returns:
    [...] for a scalar ``eps``; [..., E] for a vector.
  """
  if not eps_vector and rank is None:
    return 0.5 * numerics.logdet_identity_plus(mats, scales / eps)
  lam = numerics.psd_eigvalsh(mats, rank)
  return half_logdet_from_eigvals(lam, scales, eps, eps_vector=eps_vector)


def half_logdet_from_eigvals(lam: jax.Array, scales, eps: jax.Array, *, eps_vector: bool):
  """``1/2 sum_k log(1 + scales / eps * lam_k)`` for eigenvalues ``lam`` [..., m], ``scales`` [...].

  Returns [...] for a scalar ``eps``, [..., E] for a vector.
  """
  scales = jnp.asarray(scales, lam.dtype)
  if eps_vector:
    a = scales[..., None, None] / eps  # [..., 1, E]
    return 0.5 * jnp.sum(jnp.log1p(lam[..., :, None] * a), axis=-2)
  return 0.5 * jnp.sum(jnp.log1p(lam * (scales / eps)[..., None]), axis=-1)


def coding_rate_terms(z: jax.Array, eps: jax.Array, *, eps_vector: bool, centred: bool = False,
                      dim=None, return_eigvals: bool = False,
                      moment: Optional[jax.Array] = None):
  """``1/2 logdet(I + Z^T Z / (m eps))`` for ``z`` [m, d], on the side :func:`gram_side` picks.

  ``centred``: the rows sum to zero (rank ``<= m - 1``): on the Gram side the ones direction is
  filled (:func:`fill_centring_null`) for Cholesky, and the eigenvalue path keeps the largest
  ``min(m - 1, dim)``. ``dim`` is the true width (zero columns appended do not count; default d).
  With ``return_eigvals`` (or a vector ``eps``) the log-determinant comes from eigenvalues, which
  are also returned (of the side's matrix, unscaled, rank-bounded). ``moment``, when given, is
  :func:`second_moment` of ``z`` computed elsewhere (e.g. summed from class covariances).
  """
  m, d = z.shape
  mat = second_moment(z) if moment is None else moment
  return moment_rate(mat, m, eps, gram=gram_side(m, d), eps_vector=eps_vector, centred=centred,
                     dim=d if dim is None else dim, return_eigvals=return_eigvals)


def moment_rate(mat: jax.Array, rows, eps: jax.Array, *, gram: bool, eps_vector: bool,
                centred: bool, dim=None, return_eigvals: bool = False):
  """``1/2 logdet(I + M / (rows eps))`` of a second moment ``M`` ([m, m]) of ``rows`` rows.

  ``M`` is ``Z Z^T`` (``gram``, static) or ``Z^T Z`` of some ``Z`` with ``rows`` rows (an int, or
  a traced scalar); the rest as :func:`coding_rate_terms`, which is this for ``M`` formed from
  ``z``. ``dim`` (the true width) bounds the rank on the eigenvalue path (default ``m``).
  """
  scale = 1.0 / jnp.asarray(rows, mat.dtype)
  if return_eigvals or eps_vector:
    rank = jnp.minimum(rows - int(centred), mat.shape[-1] if dim is None else dim)
    lam = numerics.psd_eigvalsh(mat, rank)
    value = half_logdet_from_eigvals(lam, scale, eps, eps_vector=eps_vector)
    return (value, lam) if return_eigvals else value
  if gram and centred:
    mat, gamma = fill_centring_null(mat)
    return (half_logdet(mat, scale, eps, eps_vector=False)
            - 0.5 * jnp.log1p(scale * gamma / eps))
  return half_logdet(mat, scale, eps, eps_vector=False)


# ---------------------------------------------------------------------------------------------
# Class terms: sum_c w_c R_c.


def make_block_plan(labels: np.ndarray, num_classes: int, dim: int):
  """Groups classes by side and padded size and gathers their row indices (host side, NumPy).

  Args:
    labels: [n] concrete integer labels in ``0..num_classes-1``.
    num_classes: C.
    dim: the width of the features the plan is for (the padded width in a sweep).

  A class with ``n_c <= dim`` rows goes to the Gram side (:func:`gram_side`) and is padded to
  ``min(bucket(n_c), dim)`` rows, a class with ``n_c > dim`` to the covariance side, padded to
  ``bucket(n_c) > dim`` (``numerics.bucket(n_c, steps=BLOCK_STEPS)``: at most 12.5% padding), so a
  group's side is ``rows <= dim`` of its padded size, and no group mixes sides. An empty class
  belongs to no group (it contributes zero), nor does a class holding every row (``Z_c = Z``:
  its term is ``R(Z)``, :func:`full_class_weight`).

  Returns:
    ``(index_blocks, class_ids)``: per group an int32 [k, b] array of row indices (padding rows
    point at row ``n``, past the end: the kernel gathers zeros there) and an int32 [k] array of the
    class ids.
  """
  labels = np.asarray(labels).astype(np.int64)
  n = labels.shape[0]
  counts = np.bincount(labels, minlength=num_classes)
  order = np.argsort(labels, kind="stable")
  starts = np.concatenate([[0], np.cumsum(counts)])
  sizes = {}
  for c in np.flatnonzero((counts > 0) & (counts < n)):
    b = numerics.bucket(counts[c], steps=BLOCK_STEPS)
    if gram_side(int(counts[c]), dim):
      b = min(b, int(dim))
    sizes.setdefault(b, []).append(int(c))
  index_blocks, class_ids = [], []
  for b in sorted(sizes):
    ids = sizes[b]
    block = np.full((len(ids), b), n, dtype=np.int32)
    for row, c in enumerate(ids):
      block[row, :counts[c]] = order[starts[c]:starts[c + 1]]
    index_blocks.append(block)
    class_ids.append(np.asarray(ids, dtype=np.int32))
  return tuple(index_blocks), tuple(class_ids)


def class_weights(counts: jax.Array, n: int, weighting: str) -> jax.Array:
  """``w_c``: ``n_c / n`` ("prior") or ``1 / C`` ("uniform"), [C]."""
  if weighting == "prior":
    return counts / n
  return jnp.full(counts.shape, 1.0 / counts.shape[0], counts.dtype)


def safe_inverse(counts: jax.Array) -> jax.Array:
  """``1 / n_c`` with 0 for an empty class (its block is all zeros and contributes nothing)."""
  return jnp.where(counts > 0, 1.0 / jnp.maximum(counts, 1), 0.0)


def full_class_weight(weights: jax.Array, counts: jax.Array, n) -> jax.Array:
  """``sum_c w_c`` over classes that hold every row: for them ``Z_c = Z`` and ``R_c = R(Z)``.

  Such a class has the rank of ``Z`` (``min(n - 1, d)`` when centred), not ``min(n_c, d)``; the
  class layouts leave it out and the kernels add ``full_class_weight * R(Z)`` instead.
  """
  return jnp.sum(jnp.where(counts == n, weights, 0.0))


def block_sides(index_blocks, n: int, dim: int):
  """The side of each class group, and whether ``Z^T Z`` is summed from the class covariances.

  A group is on the Gram side iff its padded size is ``<= dim`` (:func:`make_block_plan` pads so
  that this is :func:`gram_side` of every class in it). Every row outside the plan's classes would
  break ``Z^T Z = sum_c Z_c^T Z_c``, and a class on the Gram side has no ``Z_c^T Z_c``: the total's
  matrix is the sum of the class covariances (no second pass over the data) only when it is on the
  covariance side itself (``n > dim``) and so is every class. Speed never moves a term off its
  full-rank side. Static: shapes only.

  Returns:
    ``(gram, shared)``: a tuple of bools (Gram side per group) and a bool.
  """
  gram = tuple(idx.shape[1] <= dim for idx in index_blocks)
  shared = bool(index_blocks) and not gram_side(n, dim) and not any(gram)
  return gram, shared


def class_block_moments(z, index_blocks, gram):
  """Per group of classes, the second moments of the padded class blocks: [k, m, m] each.

  ``m`` is the block's row count (``gram[i]``: ``Z_c Z_c^T``) or ``d`` (``Z_c^T Z_c``).
  """
  # Padding indices point at row n, past the end: "fill" gives zero rows, and XLA fuses the
  # producer of ``z`` (the centring) into the gather instead of writing a padded copy first.
  blocks = [jnp.take(z, idx, axis=0, mode="fill", fill_value=0) for idx in index_blocks]
  return [numerics.gram(b) if g else numerics.covariance(b) for b, g in zip(blocks, gram)]


def class_terms_blocks(z, weights, counts, index_blocks, class_ids, eps, *, eps_vector,
                       moments=None, dim=None):
  """sum_c w_c R_c from padded class blocks (labels known on the host), full classes excluded.

  Each group's second moments ([k, m, m]) are :func:`class_block_moments` of ``z`` unless
  ``moments`` are given; :func:`class_terms_from_moments` takes it from there.
  """
  if not index_blocks:
    return jnp.zeros(eps.shape, z.dtype)
  if moments is None:
    moments = class_block_moments(z, index_blocks, block_sides(index_blocks, *z.shape)[0])
  return class_terms_from_moments(moments, class_ids, weights, counts, eps, eps_vector=eps_vector,
                                  dim=z.shape[1] if dim is None else dim)


def class_terms_from_moments(moments, class_ids, weights, counts, eps, *, eps_vector, dim=None):
  """sum_c w_c R_c from the classes' second moments, grouped: ``moments[i]`` [k_i, m_i, m_i].

  Each matrix is ``Z_c Z_c^T`` or ``Z_c^T Z_c`` of the rows of class ``class_ids[i][j]``; the
  groups are zero-padded to the largest ``m`` (a zero row and column of ``M`` puts a 1 on the
  diagonal of ``I + a M``: ``log 1 = 0``, exact) and factorised in ONE batched call. One
  factorisation per program is deliberate: XLA's CPU runtime can deadlock on a program holding
  several large batched LAPACK calls (jaxlib 0.10.2). A vector ``eps`` takes the eigenvalues with
  the rank bound ``min(n_c, dim)``.
  """
  size = max(m.shape[-1] for m in moments)
  mats = jnp.concatenate(
      [jnp.pad(m, ((0, 0), (0, size - m.shape[-1]), (0, size - m.shape[-1]))) for m in moments])
  ids = jnp.concatenate(class_ids)
  rank = None
  if eps_vector:
    rank = jnp.minimum(counts[ids], dim).astype(jnp.int32)
  terms = half_logdet(mats, safe_inverse(counts[ids]), eps, eps_vector=eps_vector, rank=rank)
  return weighted_sum(weights[ids], terms)


def weighted_sum(weights: jax.Array, terms: jax.Array) -> jax.Array:
  """``sum_c w_c terms_c`` over the leading axis (``[K]``, ``[K, ...]`` -> ``[...]``), HIGHEST."""
  return jnp.tensordot(weights, terms, axes=(0, 0), precision=numerics.HIGHEST)


def assemble(total, class_sum, weights, counts, n, *, config: Config, lam=None, dim=None,
             full_included: bool = False):
  """The TransRate score from its terms: the one place every path puts it together.

      TrR = R(Z) - sum_c w_c R_c                (divided by rank(Z^T Z / n): official preset)

  Every path (class blocks, the dense traced layouts, host moments, the sweep, streaming and
  sharding, regression and multi-label targets, the regularizer) computes its log-determinant
  terms its own way and calls this.

  Args:
    total: ``R(Z)``, scalar or [E].
    class_sum: ``sum_c w_c R_c`` over the classes the layout scored: without the classes that hold
      every row (the layouts leave them out: their ``R_c`` is ``R(Z)``, added here with
      :func:`full_class_weight`), or with them when ``full_included``.
    weights: [C] the class weights ``w_c`` (:func:`class_weights`).
    counts: [C] the class counts ``n_c``.
    n: the number of rows.
    config: the :class:`Config` (its ``rank_normalize``).
    lam: the eigenvalues of ``Z^T Z`` for the official rank rule (:func:`total_rate`), or None.
    dim: the true feature width (the rank rule's size).
    full_included: whether ``class_sum`` already holds the classes that have every row.

  Returns:
    The score, the shape of ``total``.
  """
  if not full_included:
    class_sum = class_sum + full_class_weight(weights, counts, n) * total
  return rank_normalized(total - class_sum, lam, dim, config)


# Traced labels (static C, unknown n_c): the class layouts.


@dataclasses.dataclass(frozen=True)
class DenseLayout:
  """How the class terms are laid out for traced labels (static).

  Attributes:
    small: layout of the classes with ``n_c <= threshold`` (Gram side): "masked" (one ``n x n``
      Gram matrix masked to its class-diagonal blocks), "blocks" (each class's rows gathered into
      a ``[min(n, d), d]`` block) or None (no such classes).
    large_slots: how many classes may have ``n_c > threshold`` (covariance side, one ``d x d``
      matrix each, for the classes with the most rows).
    threshold: the row count above which a class is "large"; None: every class is small.
  """
  small: Optional[str]
  large_slots: int
  threshold: Optional[int]


def dense_layout(n: int, d: int, num_classes: int) -> DenseLayout:
  """The class layout for traced labels: each class on its full-rank side, whatever ``n_c`` is.

  ``n_c`` is not known statically, so both sides are laid out: classes with ``n_c <= d`` on the
  Gram side (the masked ``n x n`` Gram, ``n^2 d + n^3/3`` flops, or per-class ``min(n, d)``-row
  blocks, ``C (b^2 d + b^3/3)``, whichever is cheaper), and at most ``n // (d + 1)`` classes can
  have ``n_c > d``: that many covariance slots (``n d^2 + d^3/3`` each) for the largest classes.
  For ``n <= d`` every class is on the Gram side. Speed only picks among these exact layouts.
  """
  if gram_side(n, d):
    return DenseLayout("masked", 0, None)
  masked = side_flops(n, d, gram=True)
  blocks = num_classes * side_flops(d, d, gram=True)
  return DenseLayout("masked" if masked <= blocks else "blocks", min(num_classes, n // (d + 1)), d)


def dense_class_sets(counts, n: int, layout: DenseLayout):
  """``(small, large)`` [C] bools: the nonempty, not full (:func:`full_class_weight`) classes."""
  keep = (counts > 0) & (counts < n)
  if layout.threshold is None:
    return keep, jnp.zeros_like(keep)
  return keep & (counts <= layout.threshold), keep & (counts > layout.threshold)


def masked_class_gram(g, labels, small, inv):
  """``D G_mask``: ``g`` [n, n] masked to same-class entries of small classes, row i times 1/n_c.

  Returns ``(mat, row_small)``; rows of other classes are zero (``log 1 = 0`` in ``I + mat``).
  """
  row_small = small[labels]
  same = (labels[:, None] == labels[None, :]) & row_small[:, None]
  row_inv = jnp.where(row_small, inv[labels], 0.0)
  return jnp.where(same, g, 0.0) * row_inv[:, None], row_small


def class_row_blocks(z, labels, counts, small, rows: int):
  """Each small class's rows (sorted by label) in a zero-padded block.

  Returns ``(blocks [C, rows, d], idx [C, rows] row indices, valid [C, rows] bools)``.
  """
  n = z.shape[0]
  order = jnp.argsort(labels, stable=True)
  ci = counts.astype(jnp.int32)
  start = jnp.cumsum(ci) - ci
  j = jnp.arange(rows)
  valid = (j[None, :] < ci[:, None]) & small[:, None]
  idx = order[jnp.minimum(start[:, None] + j[None, :], n - 1)]
  blocks = jnp.where(valid[..., None], jnp.take(z, idx, axis=0), 0.0)
  return blocks, idx, valid


def large_class_covs(z, labels, counts, large, slots: int):
  """``Z_c^T Z_c`` for the ``slots`` classes with the most rows, zero unless ``large``.

  Returns ``(ids [K], on [K] bools, onehot [n, K], covs [K, d, d])``.
  """
  num_classes = counts.shape[0]
  if slots >= num_classes:
    ids = jnp.arange(num_classes)
  else:
    ids = jax.lax.top_k(jnp.where(large, counts, -1.0), slots)[1]
  on = large[ids]
  onehot = ((labels[:, None] == ids[None, :]) & on[None, :]).astype(z.dtype)
  covs = jnp.einsum("nk,ni,nj->kij", onehot, z, z, precision=numerics.HIGHEST)
  return ids, on, onehot, covs


def class_terms_dense(z, labels, weights, counts, eps, *, num_classes, eps_vector, dim=None,
                      layout: Optional[DenseLayout] = None):
  """sum_c w_c R_c with traced labels (static C), full classes excluded (:func:`dense_layout`)."""
  n, d = z.shape
  dim = d if dim is None else dim
  layout = dense_layout(n, d, num_classes) if layout is None else layout
  small, large = dense_class_sets(counts, n, layout)
  inv = safe_inverse(counts)
  out = jnp.zeros(eps.shape, z.dtype)
  if layout.small == "masked":
    # After a permutation the masked Gram is block diagonal, so its Cholesky factor is too (no
    # fill between blocks) and log L_ii sums, class by class, to each block's log-determinant.
    mat, row_small = masked_class_gram(numerics.gram(z), labels, small, inv)
    row_w = jnp.where(row_small, weights[labels], 0.0)
    if not eps_vector:
      logdiag = numerics.cholesky_logdiag(jnp.eye(n, dtype=z.dtype) + mat / eps)
      out = out + jnp.sum(row_w * logdiag)
    else:
      # One eigendecomposition: block diagonal, so each eigenvector lives in one class (or, for an
      # eigenvalue shared by several classes, in their span, where the attribution is exact).
      lam, vec = linalg.eigh(mat)
      lam = jnp.maximum(lam, 0.0)
      mass = jnp.einsum("i,ik->k", row_w, vec * vec, precision=numerics.HIGHEST)  # [n]
      out = out + 0.5 * jnp.sum(mass[:, None] * jnp.log1p(lam[:, None] / eps[None, :]), axis=0)
  elif layout.small == "blocks":
    blocks, _, _ = class_row_blocks(z, labels, counts, small, min(n, d))
    rank = jnp.minimum(counts, dim).astype(jnp.int32) if eps_vector else None
    terms = half_logdet(numerics.gram(blocks), jnp.where(small, inv, 0.0), eps,
                        eps_vector=eps_vector, rank=rank)
    out = out + jnp.tensordot(jnp.where(small, weights, 0.0), terms, axes=(0, 0),
                             precision=numerics.HIGHEST)
  if layout.large_slots:
    ids, on, _, covs = large_class_covs(z, labels, counts, large, layout.large_slots)
    rank = jnp.minimum(counts[ids], dim).astype(jnp.int32) if eps_vector else None
    terms = half_logdet(covs, jnp.where(on, inv[ids], 0.0), eps, eps_vector=eps_vector,
                        rank=rank)
    out = out + jnp.tensordot(jnp.where(on, weights[ids], 0.0), terms, axes=(0, 0),
                             precision=numerics.HIGHEST)
  return out


# ---------------------------------------------------------------------------------------------
# The kernel.


def preprocess(features: jax.Array, config: Config) -> jax.Array:
  """Centres the features (and, for the official pipeline, L2-normalises rows around it).

  Centring is shifted (:func:`numerics.center`), so a common offset does not cancel. The official
  pipeline, ``normalize(normalize(F) - mean(normalize(F)))``, takes the difference of the
  normalised rows from the normalised mean row in shifted form (:func:`normalized_offsets`):
  with an offset ``c`` the normalised rows agree in their leading digits, and the information is
  in their ``~|F - c| / |c|`` differences (docs/numerics.md).
  """
  if config.normalize:
    c = jnp.mean(features, axis=0)
    return normalize_rows(numerics.center(normalized_offsets(features, c), axis=0))
  return numerics.center(features, axis=0)


def normalize_rows(z):
  """Rows divided by their L2 norm, floored at 1e-12 (``torch.nn.functional.normalize``)."""
  norm = jnp.sqrt(jnp.sum(z * z, axis=-1, keepdims=True))
  return z / jnp.maximum(norm, _NORM_FLOOR)


def normalized_offsets(f, c):
  """``normalize_rows(f) - normalize_rows(c)`` without cancellation for rows ``f`` near ``c``.

  With ``e = f - c`` (exact for rows near ``c``) and ``delta = |f| - |c| = (2 c.e + |e|^2) /
  (|f| + |c|)``, the difference is ``(e - c / |c| * delta) / |f|``: no digits of ``|c|`` cancel.
  Rows or ``c`` with a norm at the 1e-12 floor use the plain difference.

  Args:
    f: [m, d] rows.
    c: [d] reference row (e.g. the mean).

  Returns:
    [m, d].
  """
  e = f - c
  cn = jnp.sqrt(jnp.sum(c * c))
  fn = jnp.sqrt(jnp.sum(f * f, axis=-1, keepdims=True))
  safe_cn = jnp.maximum(cn, _NORM_FLOOR)
  safe_fn = jnp.maximum(fn, _NORM_FLOOR)
  delta = (2.0 * jnp.sum(e * c, axis=-1, keepdims=True) + jnp.sum(e * e, axis=-1, keepdims=True)
           ) / (safe_fn + safe_cn)
  shifted = (e - (c / safe_cn) * delta) / safe_fn
  plain = normalize_rows(f) - c / safe_cn
  return jnp.where((fn > _NORM_FLOOR) & (cn > _NORM_FLOOR), shifted, plain)


def total_rate(z, eps, *, config: Config, eps_vector: bool, moment=None, dim=None):
  """``R(Z)`` of the preprocessed ``z``, and the eigenvalues the official rank rule needs (or None).

  Plain centring leaves rows that sum to zero (rank ``<= n - 1``); the official pipeline's second
  normalisation does not.
  """
  centred = not config.normalize
  if config.rank_normalize:
    return coding_rate_terms(z, eps, eps_vector=eps_vector, centred=centred, dim=dim,
                             return_eigvals=True, moment=moment)
  return coding_rate_terms(z, eps, eps_vector=eps_vector, centred=centred, dim=dim,
                           moment=moment), None


def rank_normalized(scores, lam, dim, config: Config):
  """``scores`` divided by the numerical rank (official preset; 0 when the rank is 0)."""
  if not config.rank_normalize:
    return scores
  rank = numerical_rank(lam, dim).astype(scores.dtype)
  return jnp.where(rank > 0, scores / jnp.maximum(rank, 1.0), 0.0)


def numerical_rank(eigvals: jax.Array, dim) -> jax.Array:
  """NumPy's ``matrix_rank`` rule on a ``dim x dim`` PSD matrix with eigenvalues ``eigvals``.

  Counts eigenvalues above ``max(eigvals) * dim * finfo(dtype).eps``.
  """
  tol = jnp.max(eigvals) * dim * jnp.finfo(eigvals.dtype).eps
  return jnp.sum(eigvals > tol)


def transrate_kernel(features, labels, index_blocks, class_ids, dim, eps, *, config: Config,
                     num_classes: int, eps_vector: bool, layout: Optional[DenseLayout] = None):
  """TransRate of one feature matrix; pure and traceable (``vmap`` over ``features`` works).

  Args:
    features: [n, d] float.
    labels: [n] int32 in ``0..num_classes-1``.
    index_blocks, class_ids: from :func:`make_block_plan` (built for width d) for labels known on
      the host; None for traced labels (then the dense layouts of :func:`dense_layout` are used).
    dim: the true feature width (zero columns appended for padding do not count), used by the
      official rank normalisation and the eigenvalue rank bounds.
    eps: scalar or [E].
    config: static :class:`Config`.
    num_classes: static C.
    eps_vector: whether ``eps`` is [E].
    layout: traced labels only: force a :class:`DenseLayout` (tests).

  Returns:
    Scalar, or [E] when ``eps_vector``.
  """
  n, width = features.shape
  z = preprocess(features, config)
  eps = jnp.asarray(eps, z.dtype)
  counts = jnp.zeros((num_classes,), z.dtype).at[labels].add(1.0)
  weights = class_weights(counts, n, config.weighting)
  moments, total_moment = None, None
  if index_blocks is not None:
    gram, shared = block_sides(index_blocks, n, width)
    moments = class_block_moments(z, index_blocks, gram)
    if shared:  # Z^T Z = sum_c Z_c^T Z_c: no second pass over the data
      total_moment = sum(numerics.sum_leading(m) for m in moments)
  total, lam = total_rate(z, eps, config=config, eps_vector=eps_vector, moment=total_moment,
                          dim=dim)
  if index_blocks is not None:
    cond = class_terms_blocks(z, weights, counts, index_blocks, class_ids, eps,
                              eps_vector=eps_vector, moments=moments, dim=dim)
  else:
    cond = class_terms_dense(z, labels, weights, counts, eps, num_classes=num_classes,
                             eps_vector=eps_vector, dim=dim, layout=layout)
  return assemble(total, cond, weights, counts, n, config=config, lam=lam, dim=dim)


@functools.partial(
    jax.jit, static_argnames=("config", "num_classes", "eps_vector"))
def transrate_jit(features, labels, index_blocks, class_ids, dim, eps, *, config, num_classes,
                   eps_vector):
  return transrate_kernel(features, labels, index_blocks, class_ids, dim, eps, config=config,
                          num_classes=num_classes, eps_vector=eps_vector)


# ---------------------------------------------------------------------------------------------
# Eager calls on the CPU: the products and factorisations on the host, the assembly compiled.
#
# XLA's CPU matmul reaches about half of OpenBLAS's rate on the symmetric products ``Z^T Z`` and
# ``Z_c Z_c^T`` (OpenBLAS ``syrk`` does half the multiply-adds of a general product;
# benchmarks/bench_transrate.py, bench_sweep.py), and the same LAPACK ``potrf`` runs 2-3x faster
# called from the host than inside XLA's CPU runtime, where each program may hold only
# one-matrix factorisations (linalg). An eager call, whose features and labels are concrete, forms
# every second moment on the host (:func:`host_moments`), factorises each there
# (:func:`host_moment_rates`) and hands the log-determinants to a small compiled program that
# weighs and assembles them (:func:`transrate_from_rates_jit`, one per number of classes, cached
# by the persistent compilation cache: no host callback inside). docs/numerics.md, "Products on
# the host".

HOST_PRODUCTS_ENV = "TRANSRATE_JAX_HOST_PRODUCTS"


class HostMoments(NamedTuple):
  """The second moments of one eager TransRate problem, formed on the host (:func:`host_moments`).

  Attributes:
    total: [m, m] ``Z^T Z`` (``m = D``), or the Gram matrix ``Z Z^T`` (``m = n``) when
      ``gram_total``; zero-padded to the padded width ``D`` on the covariance side.
    classes: [k, M, M] each class's moment on its own full-rank side (``Z_c Z_c^T`` when
      ``n_c <= d``, else ``Z_c^T Z_c``), zero-padded to a common ``M``; ``k = 0`` when no class is
      a proper non-empty subset of the rows.
    class_ids: [k] int32, the class of each matrix of ``classes``.
    counts: [C] the class counts ``n_c``, in the features' float dtype.
    gram_total: whether ``total`` is the Gram side (``n <= d``).
  """
  total: np.ndarray
  classes: np.ndarray
  class_ids: np.ndarray
  counts: np.ndarray
  gram_total: bool


def use_host_products(features, labels, eps_vector: bool, config: Config) -> bool:
  """Whether an eager call forms its products on the host (:func:`host_moments`).

  Only for concrete features and labels (never under a trace: ``jit``, ``vmap`` and ``grad``
  keep the compiled path), on the CPU (``backend.policy().host_linalg``), with float input, a
  scalar ``eps`` and the plain centring
  (the official preset's normalisation and rank rule stay compiled). The environment variable
  ``TRANSRATE_JAX_HOST_PRODUCTS=0`` turns it off.
  """
  if (os.environ.get(HOST_PRODUCTS_ENV, "").strip() == "0" or eps_vector or config.normalize
      or config.rank_normalize):
    return False
  if not (validation.is_concrete(features) and validation.is_concrete(labels)):
    return False
  if not backend.policy().host_linalg:
    return False
  if isinstance(features, jax.Array) and any(dev.platform != "cpu" for dev in features.devices()):
    return False
  return np.issubdtype(np.dtype(features.dtype), np.floating)


def host_moments(features, labels, *, num_classes: int, width: Optional[int] = None
                 ) -> HostMoments:
  """Every second moment of TransRate by BLAS on the host, from one label-sorted, centred copy.

  The rows are copied in label order (a stable sort) and centred in the same pass
  (:func:`sorted_centred`), so each class is a contiguous slice and each product is an array
  times its own transpose, one ``syrk`` (:func:`numerics.host_product`).
  Sorting the rows leaves ``Z^T Z`` unchanged and permutes ``Z Z^T`` (same log-determinant). When
  the total and every class are on the covariance side, ``Z^T Z = sum_c Z_c^T Z_c`` is summed
  from the classes (:func:`block_sides`); otherwise it is one more product. Every term stays on
  its full-rank side (:func:`gram_side`) for the true width ``d``.

  Args:
    features: [n, d] concrete float features (NumPy or a JAX array on the CPU); half precision
      is upcast to float32 (:func:`numerics.float_dtype`).
    labels: [n] concrete integer labels in ``0..num_classes-1`` (validated by the caller).
    num_classes: C.
    width: pad covariance-side matrices to this width ``D >= d`` (a sweep's bucket, so widths
      share compiled programs; zero rows and columns add ``log 1 = 0``). Default ``d``.

  Returns:
    :class:`HostMoments`.
  """
  f = np.asarray(features)
  dtype = numerics.float_dtype(f.dtype)
  n, d = f.shape
  width = d if width is None else int(width)
  y = np.asarray(labels).astype(np.int64)
  counts = np.bincount(y, minlength=num_classes)
  z = sorted_centred(f, np.argsort(y, kind="stable"), dtype)
  starts = np.concatenate([[0], np.cumsum(counts)])
  ids = [c for c in np.flatnonzero((counts > 0) & (counts < n))]
  gram = [gram_side(int(counts[c]), d) for c in ids]
  # Gram-side classes padded as make_block_plan pads them (8 sizes per octave), so few shapes.
  sizes = [min(numerics.bucket(counts[c], steps=BLOCK_STEPS), width) if g else width
           for c, g in zip(ids, gram)]
  size = max(sizes, default=0)
  classes = np.zeros((len(ids), size, size), dtype)
  for i, (c, g) in enumerate(zip(ids, gram)):
    m = numerics.host_product(z[starts[c]:starts[c + 1]], gram=g)
    classes[i, :m.shape[0], :m.shape[0]] = m
  gram_total = gram_side(n, d)
  if ids and not gram_total and not any(gram):
    total = classes.sum(axis=0)
  elif gram_total:
    total = numerics.host_product(z, gram=True)
  else:
    total = np.zeros((width, width), dtype)
    total[:d, :d] = numerics.host_product(z, gram=False)
  return HostMoments(total, classes, np.asarray(ids, np.int32), counts.astype(dtype), gram_total)


# Rows per block of :func:`sorted_centred`: about 1 MiB, so each block stays in cache; inputs of at
# least _PARALLEL_BYTES are centred by one thread per core (NumPy releases the GIL in its loops:
# 0.32 -> 0.20 s at [50000, 2048] float32 on 2 cores).
_CENTRE_BLOCK_BYTES = 1 << 20
_PARALLEL_BYTES = 1 << 26


@functools.lru_cache(maxsize=1)
def _threads():
  """``(pool, cores)``: one thread per available core (at most 8); ``(None, 1)`` on one core."""
  try:
    cores = len(os.sched_getaffinity(0))
  except AttributeError:  # not Linux
    cores = os.cpu_count() or 1
  cores = min(cores, 8)
  return (concurrent.futures.ThreadPoolExecutor(cores), cores) if cores > 1 else (None, 1)


def sorted_centred(f: np.ndarray, order: np.ndarray, dtype) -> np.ndarray:
  """``f[order] - mean(f)`` in ``dtype`` (host side), in one pass after the mean's.

  The column means are accumulated in float64 and split as ``mu + lo`` (``mu`` the nearest
  ``dtype`` value, ``lo`` the rest), and each row is ``(f_i - mu) - lo``: to within a rounding of
  ``f_i - mean``, so the centred rows sum to zero up to round-off (as :func:`numerics.center`'s
  two passes give) without a second pass over the data. Rows are gathered, centred and written
  block by block, each block small enough to stay in cache; large inputs are split into one
  range of rows per core, each summed and centred by its own thread (the same numbers).

  Args:
    f: [n, d] float features (any float dtype; cast to ``dtype`` per block).
    order: [n] row permutation.
    dtype: the float dtype of the result.

  Returns:
    [n, d] NumPy array.
  """
  n, d = f.shape
  pool, parts = _threads() if f.nbytes >= _PARALLEL_BYTES else (None, 1)
  bounds = np.linspace(0, n, parts + 1).astype(int)
  ranges = list(zip(bounds[:-1], bounds[1:]))
  run = map if pool is None else pool.map
  sums = run(lambda r: np.add.reduce(f[r[0]:r[1]], axis=0, dtype=np.float64), ranges)
  mean = sum(sums) / n
  mu = mean.astype(dtype)
  lo = (mean - mu).astype(dtype)
  out = np.empty((n, d), dtype)
  rows = max(1, _CENTRE_BLOCK_BYTES // max(d * np.dtype(dtype).itemsize, 1))

  def centre(r):
    for start in range(r[0], r[1], rows):
      stop = min(start + rows, r[1])
      block = f[order[start:stop]].astype(dtype, copy=False)
      np.subtract(block, mu, out=block)
      np.subtract(block, lo, out=out[start:stop])

  list(run(centre, ranges))
  return out


def host_moment_rates(m: HostMoments, eps: float) -> Tuple[np.ndarray, np.ndarray]:
  """``(R(Z), [R_c for each class of m.classes])`` of :class:`HostMoments`, on the host.

  The terms of :func:`moment_rate` (scalar ``eps``, centred rows), each
  ``1/2 logdet(I + M / (rows eps))`` by :func:`linalg.host_half_logdet_identity_plus`: the
  total's Gram matrix with its centring direction filled (:func:`fill_centring_null`:
  ``gamma = trace(M) / m`` added along ``11^T / m``, and ``1/2 log(1 + gamma / (n eps))`` taken
  off), every class on its own full-rank side (zero padding adds ``log 1 = 0``). Overwrites the
  moments.
  """
  n = float(np.sum(m.counts, dtype=np.float64))
  shifts, correction = None, 0.0
  if m.gram_total:
    size = m.total.shape[-1]
    gamma = np.trace(m.total, dtype=np.float64) / size
    shifts, correction = np.asarray([gamma / size]), 0.5 * np.log1p(gamma / (n * eps))
  total = linalg.host_half_logdet_identity_plus(m.total[None], np.asarray([1.0 / (n * eps)]),
                                               shifts=shifts)[0] - correction
  rows = m.counts[m.class_ids].astype(np.float64)
  classes = linalg.host_half_logdet_identity_plus(m.classes, 1.0 / (rows * eps))
  return np.asarray(total, m.total.dtype), classes


@functools.partial(jax.jit, static_argnames=("config",))
def transrate_from_rates_jit(total, class_terms, class_ids, counts, *, config: Config):
  """TransRate from the terms of :func:`host_moment_rates`: the class weights and the assembly.

  One small program per number of classes (and of scored classes), whatever the width.
  """
  n = jnp.sum(counts)
  weights = class_weights(counts, n, config.weighting)
  cond = jnp.zeros((), total.dtype)
  if class_ids.shape[0]:
    cond = weighted_sum(weights[class_ids], class_terms)
  return assemble(total, cond, weights, counts, n, config=config)


def transrate_host_products(features, labels, eps, *, config: Config, num_classes: int,
                            width: Optional[int] = None):
  """Eager TransRate on the CPU: the products and factorisations on the host, the assembly
  compiled (:func:`host_moments`, :func:`host_moment_rates`, :func:`transrate_from_rates_jit`).

  Float32 products that overflow give inf/NaN silently here (no NumPy warning): the caller sees
  the non-finite score and rescores in float64 or raises (:func:`rescued_in_float64`)."""
  with np.errstate(over="ignore", invalid="ignore"):
    m = host_moments(features, labels, num_classes=num_classes, width=width)
    total, classes = host_moment_rates(m, float(eps))
  return transrate_from_rates_jit(total, classes, m.class_ids, m.counts, config=config)


@functools.partial(jax.jit, static_argnames=("eps_vector",))
def coding_rate_jit(features, eps, *, eps_vector):
  return coding_rate_terms(features, jnp.asarray(eps, features.dtype), eps_vector=eps_vector)


# ---------------------------------------------------------------------------------------------
# The sweep's batched TransRate (see sweep.score_many).

@functools.partial(jax.jit, static_argnames=("config", "num_classes", "eps_vector"))
def transrate_stack(stack, labels, index_blocks, class_ids, dims, eps, *, config, num_classes,
                     eps_vector):
  """``vmap`` of :func:`transrate_kernel` over ``stack`` [k, n, D] with true widths ``dims`` [k]."""
  def one(features, dim):
    return transrate_kernel(
        features, labels, index_blocks, class_ids, dim, eps, config=config,
        num_classes=num_classes, eps_vector=eps_vector)

  return jax.vmap(one)(stack, dims)


def rescued_in_float64(score, features, rescore):
  """``score`` if finite; else ``rescore(features in float64)`` under x64, cast back.

  Features that are numerically rank deficient at a large scale (``eps_32 * lambda_max / (m eps)
  >~ 1`` with eigenvalues of ``Z^T Z`` below the round-off of the float32 product, e.g. a
  linear map of fewer dimensions) make the float32 ``I + Z^T Z / (m eps)`` indefinite, and its
  Cholesky returns NaN. An eager call then scores the same float32 values in float64 (products
  and factorisations, ``jax.enable_x64``), which resolves them, and returns that score in the
  input dtype; docs/numerics.md, "Rank deficiency in the data". Traced scores are returned as
  they are (no values to check).

  Raises:
    ValueError: the score is not finite in float64 either.
  """
  if not validation.is_concrete(score):
    return score
  values = np.asarray(score)
  dtype = values.dtype
  if np.all(np.isfinite(values)):
    return score
  if dtype != np.float64:
    with jax.enable_x64(True):
      values = np.asarray(rescore(np.asarray(features, np.float64)))
  if not np.all(np.isfinite(values)):
    raise ValueError("TransRate is not finite on these features even in float64: a "
                     "log-determinant's matrix is not positive definite; check the features "
                     "for extreme values.")
  return jnp.asarray(values.astype(dtype))


def informative_columns(features, labels, config: Config):
  """Concrete ``features`` without the columns that are the same in every row (zero for the
  official preset, which L2-normalises rows first), when a term would be on the Gram side.

  Such a column is exactly 0 after centring: it adds nothing to ``Z^T Z`` but a zero row and
  column (``log 1 = 0``) and nothing to ``Z Z^T``, so the score is unchanged in exact arithmetic.
  What changes is the side: with ``n_c <= d`` the Gram matrix ``Z_c Z_c^T`` ([n_c, n_c]) is
  used, whose rank is at most the number of live columns; when that is below ``n_c`` (dead ReLU
  units: EfficientNet-Lite2's head has 1247 dead of 1280 on the demo's task) its null directions
  come out as float32 round-off that ``log(1 + x / (n_c eps))`` counts. At n = 1000, 33 live
  columns of 1280, every float32 path was 27% off float64; scored on the 33 columns (the
  covariance side) it is float32-accurate. Traced features keep their width (a static shape).
  """
  if not validation.is_concrete(features):
    return features
  n, d = np.shape(features)
  counts = np.bincount(np.asarray(labels).astype(np.int64))
  if min(n, int(counts[counts > 0].min(initial=n))) > d:  # every term on the covariance side
    return features
  xp = np if isinstance(features, np.ndarray) else jnp
  ref = 0 if config.normalize else features[:1]
  keep = np.array(xp.any(features != ref, axis=0), dtype=bool)  # a writable copy
  if keep.all():
    return features
  keep[np.argmax(keep)] = True  # at least one column (all constant: every rate is 0)
  return features[:, np.flatnonzero(keep)]


def score(features, labels, *, eps=1e-4, weighting=None, preset=None, num_classes=None):
  """TransRate of one feature matrix: the body of the public ``transrate`` (see its docstring).

  Validates, then forms the products on the host (:func:`use_host_products`) or runs the whole
  compiled kernel (:func:`transrate_jit`), and rescores in float64 an eager float32 call whose
  factorisation failed (:func:`rescued_in_float64`).
  """
  config = resolve_config(weighting, preset)
  eps_arg = eps
  if not isinstance(features, (np.ndarray, jax.Array)) and validation.is_concrete(features):
    features = np.asarray(features)
  dtype = numerics.float_dtype(validation.check_matrix(features))
  y, num_classes = validation.check_labels(labels, np.shape(features)[0],
                                           num_classes=num_classes)
  eps, eps_vector = validation.check_eps(eps, dtype=dtype)
  index_blocks, class_ids = None, None
  if validation.is_concrete(labels):
    features = informative_columns(features, labels, config)
  if validation.is_concrete(labels) and use_host_products(features, labels, eps_vector, config):
    value = transrate_host_products(features, labels, eps, config=config,
                                    num_classes=num_classes)
  else:
    if validation.is_concrete(labels):
      index_blocks, class_ids = make_block_plan(np.asarray(labels), num_classes,
                                                np.shape(features)[1])
    value = transrate_jit(numerics.as_float(features), y, index_blocks, class_ids,
                          np.shape(features)[1], eps, config=config, num_classes=num_classes,
                          eps_vector=eps_vector)
  # A traced score (traced features or labels) is returned as it is.
  return rescued_in_float64(
      value, features, lambda f64: score(f64, np.asarray(labels), eps=eps_arg,
                                         weighting=weighting, preset=preset,
                                         num_classes=num_classes))


def batched(labels, n, *, eps=1e-4, weighting=None, preset=None, num_classes=None
            ) -> registry.BatchedRunner:
  """Factory for the batched TransRate: validates once, plans the class blocks once per width."""
  config = resolve_config(weighting, preset)
  y, num_classes = validation.check_labels(labels, n, num_classes=num_classes)
  eps, eps_vector = validation.check_eps(eps)
  concrete = validation.is_concrete(labels)
  host = np.asarray(labels) if concrete else None
  plans = {}

  def plan(width):
    # The plan puts each class on its full-rank side for this (padded) width; padded_width keeps
    # every side the one of the true width.
    if not concrete:
      return None, None
    if width not in plans:
      plans[width] = make_block_plan(host, num_classes, width)
    return plans[width]

  raw_eps = eps
  checked = {}

  def rescore(f64, dim):
    return score(f64[:, :dim], host, eps=raw_eps, weighting=weighting, preset=preset,
                 num_classes=num_classes)

  def check_dtype(dtype):
    # eps must be a normal number in the dtype the matrices are scored in (1e-50 is 0 in float32),
    # and enters their programs in that dtype (a float64 eps would make float64 operations).
    if dtype not in checked:
      checked[dtype] = validation.check_eps(raw_eps, dtype=dtype)[0]
    return checked[dtype]

  if numerics.one_matrix_per_program():
    # The CPU: one matrix per call (numerics.one_matrix_per_program), taken as it is; an eager
    # sweep forms its products on the host with its moments padded to the bucket ``width``,
    # else the matrix is padded and scored by the whole compiled kernel.
    def one(f, width, dim):
      dtype = numerics.float_dtype(f.dtype)
      eps_d = check_dtype(dtype)
      if concrete and use_host_products(f, host, eps_vector, config):
        value = transrate_host_products(informative_columns(f, host, config), host, eps_d,
                                        config=config, num_classes=num_classes, width=width)
      else:
        index_blocks, class_ids = plan(width)
        value = transrate_jit(numerics.pad_columns(f, width, dtype), y, index_blocks, class_ids,
                              dim, eps_d, config=config, num_classes=num_classes,
                              eps_vector=eps_vector)
      return rescued_in_float64(value, f, lambda f64: rescore(f64, int(dim)))

    def run(stack, dims):
      return np.stack([np.asarray(one(stack[i], stack.shape[-1], dims[i]))
                       for i in range(stack.shape[0])])
  else:
    one = None

    def run(stack, dims):
      eps_d = check_dtype(stack.dtype)
      index_blocks, class_ids = plan(stack.shape[-1])
      scores = transrate_stack(stack, y, index_blocks, class_ids, dims, eps_d, config=config,
                               num_classes=num_classes, eps_vector=eps_vector)
      if not validation.is_concrete(scores):  # traced features or labels
        return scores
      rows = np.asarray(scores).reshape(scores.shape[0], -1)
      bad = np.flatnonzero(~np.all(np.isfinite(rows), axis=1))
      for i in bad:  # only a non-finite entry goes back, alone, in float64
        fixed = rescued_in_float64(scores[i], stack[i], lambda f64, i=i: rescore(f64, int(dims[i])))
        scores = scores.at[i].set(fixed)
      return scores

  # Row counts of the terms: n (the total) and every class's n_c.
  rows = [int(n)]
  if concrete:
    rows += [int(c) for c in np.bincount(host.astype(np.int64), minlength=num_classes) if c]
  rows = sorted(set(rows))

  def padded_width(width, padded):
    # A term of m rows is on the Gram side iff m <= width (gram_side, the rank rule).
    # Padding past a row count m > width would move that term to an m x m Gram matrix of rank
    # <= width, whose m - width zero eigenvalues come out as round-off in float32: stop below it.
    above = [m for m in rows if m > width]
    return min(padded, above[0] - 1) if above else padded

  return registry.BatchedRunner(stack=run, one=one, padded_width=padded_width)


def compiled_programs() -> int:
  """How many TransRate programs the jit caches hold (one per distinct shape and option set).

  Counted from the jitted functions' own caches, so no module state is kept; the difference
  across a call is the number of programs it compiled (tests and benchmarks use it).
  """
  return (transrate_jit._cache_size() + transrate_stack._cache_size()  # pylint: disable=protected-access
          + transrate_from_rates_jit._cache_size())  # pylint: disable=protected-access
