"""TransRate (Huang et al., ICML 2022) and the coding rate it is made of.

    Z    = F - mean(F, axis=0)                               # global centring
    R(Z) = 1/2 logdet(I_d + Z^T Z / (n eps))                 # coding rate
    R_c  = 1/2 logdet(I_d + Z_c^T Z_c / (n_c eps))           # rows of class c, not re-centred
    TrR  = R(Z) - sum_c w_c R_c                              # w_c = n_c / n ("prior") or 1 / C ("uniform")

Every log-determinant is taken on the cheaper side of Sylvester's identity,
``logdet(I_d + a Z^T Z) = logdet(I_m + a Z Z^T)`` for ``Z`` with ``m`` rows, by Cholesky (or by one
symmetric eigendecomposition when ``eps`` is a vector of values to sweep).

The class terms are batched, with no Python loop over classes inside the compiled program:

* labels known on the host (an eager call): the rows of each class are gathered into padded blocks,
  classes grouped by padded size (8 sizes per octave), each group's Gram or covariance matrices
  formed by one batched matmul, and all of them factorised by one batched Cholesky (zero padding
  rows add eigenvalues 0, ``log 1 = 0``, so padding is exact). When the classes sit on the
  covariance side, ``Z^T Z`` is their sum (:func:`block_sides`);
* labels traced (inside a user's ``jit``/``vmap``/``grad``, with a static ``num_classes``): either one
  ``n x n`` Gram matrix masked to its class-diagonal blocks, whose single Cholesky factor holds every
  class's log-determinant on its diagonal (the blocks stay apart: Cholesky creates no fill between
  disconnected blocks), or ``C`` class covariance matrices, whichever costs fewer flops.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

from transrate_jax._src import numerics
from transrate_jax._src import validation

WEIGHTINGS = ("prior", "uniform")
PRESETS = ("tllib", "official")

# Class blocks are padded to one of 8 sizes per octave: at most 12.5% padding rows.
BLOCK_STEPS = 8

# How many times transrate_kernel has been traced: one per compiled program that contains it.
KERNEL_TRACES = [0]

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
# Log-determinant terms.


def side_flops(rows: int, dim: int, *, gram: bool) -> float:
  """Flops of ``logdet(I + a M)`` for ``M`` = ``Z Z^T`` (``gram``) or ``Z^T Z``, ``Z`` [rows, dim]."""
  return rows * rows * dim + rows ** 3 / 3 if gram else rows * dim * dim + dim ** 3 / 3


def gram_side_cheaper(rows: int, dim: int) -> bool:
  """Whether ``logdet(I_m + a Z Z^T)`` costs fewer flops than ``logdet(I_d + a Z^T Z)``.

  Gram side: ``m^2 d + m^3 / 3``; covariance side: ``m d^2 + d^3 / 3`` (DESIGN.md §1).
  """
  return side_flops(rows, dim, gram=True) <= side_flops(rows, dim, gram=False)


def second_moment(z: jax.Array) -> jax.Array:
  """``Z Z^T`` or ``Z^T Z``, whichever is smaller, for ``z`` [..., m, d]: the same nonzero spectrum."""
  m, d = z.shape[-2:]
  return numerics.gram(z) if gram_side_cheaper(m, d) else numerics.covariance(z)


def half_logdet(mats: jax.Array, scales: jax.Array, eps: jax.Array, *, eps_vector: bool):
  """``1/2 logdet(I + scales / eps * mats)`` for PSD ``mats``.

  Args:
    mats: [..., m, m] PSD matrices.
    scales: [...] nonnegative scales (``1 / rows``; 0 for an empty block).
    eps: scalar, or [E] when ``eps_vector``.
    eps_vector: use one eigendecomposition for all values of ``eps``.

  Returns:
    [...] for a scalar ``eps``; [..., E] for a vector.
  """
  if not eps_vector:
    return 0.5 * numerics.logdet_identity_plus(mats, scales / eps)
  lam = numerics.psd_eigvalsh(mats)  # [..., m]
  a = scales[..., None, None] / eps  # [..., 1, E]
  return 0.5 * jnp.sum(jnp.log1p(lam[..., :, None] * a), axis=-2)


def coding_rate_terms(z: jax.Array, eps: jax.Array, *, eps_vector: bool,
                      return_eigvals: bool = False, moment: Optional[jax.Array] = None):
  """``1/2 logdet(I + Z^T Z / (m eps))`` for ``z`` [m, d], on the cheaper side.

  With ``return_eigvals`` the log-determinant comes from eigenvalues, which are also returned
  (eigenvalues of the smaller of ``Z^T Z`` and ``Z Z^T``, unscaled). ``moment``, when given, is
  ``second_moment(z)`` computed elsewhere (e.g. summed from class covariances).
  """
  m = z.shape[0]
  mat = second_moment(z) if moment is None else moment
  scale = jnp.asarray(1.0 / m, z.dtype)
  if not return_eigvals:
    return half_logdet(mat, scale, eps, eps_vector=eps_vector)
  lam = numerics.psd_eigvalsh(mat)
  return half_logdet_from_eigvals(lam, scale, eps, eps_vector=eps_vector), lam


def half_logdet_from_eigvals(lam: jax.Array, scale, eps: jax.Array, *, eps_vector: bool):
  """``1/2 sum log(1 + scale / eps * lam)`` for eigenvalues ``lam`` [m]: scalar, or [E]."""
  a = scale / eps
  if eps_vector:
    return 0.5 * jnp.sum(jnp.log1p(lam[:, None] * a[None, :]), axis=0)
  return 0.5 * jnp.sum(jnp.log1p(lam * a))


# ---------------------------------------------------------------------------------------------
# Class terms: sum_c w_c R_c.


def make_block_plan(labels: np.ndarray, num_classes: int):
  """Groups classes by padded size and gathers their row indices (host side, NumPy).

  Args:
    labels: [n] concrete integer labels in ``0..num_classes-1``.
    num_classes: C.

  Classes are grouped by padded size (``numerics.bucket(n_c, steps=BLOCK_STEPS)``, at most 12.5%
  padding); an empty class belongs to no
  group (it contributes zero).

  Returns:
    ``(index_blocks, class_ids)``: per group an int32 [k, b] array of row indices (padding rows
    point at row ``n``, past the end: the kernel gathers zeros there) and an int32 [k] array of the class ids.
  """
  labels = np.asarray(labels).astype(np.int64)
  n = labels.shape[0]
  counts = np.bincount(labels, minlength=num_classes)
  order = np.argsort(labels, kind="stable")
  starts = np.concatenate([[0], np.cumsum(counts)])
  sizes = {}
  for c in np.flatnonzero(counts):
    sizes.setdefault(numerics.bucket(counts[c], steps=BLOCK_STEPS), []).append(int(c))
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


def block_sides(index_blocks, n: int, dim: int):
  """The side of each class group, and whether ``Z^T Z`` is summed from the class covariances.

  Every row lies in exactly one class block, so ``Z^T Z = sum_c Z_c^T Z_c``: with every class on
  the covariance side the total term's matrix costs no second pass over the data. That is chosen
  whenever it costs fewer flops than each class on its own cheaper side plus the total's matmul
  (e.g. classes of about ``d`` rows, some a little above ``d`` and some below). Static: shapes only.

  Returns:
    ``(gram, shared)``: a tuple of bools (Gram side per group) and a bool.
  """
  gram = tuple(gram_side_cheaper(idx.shape[1], dim) for idx in index_blocks)
  if gram_side_cheaper(n, dim) or not index_blocks:
    return gram, False
  split = sum(idx.shape[0] * side_flops(idx.shape[1], dim, gram=g)
              for idx, g in zip(index_blocks, gram)) + n * dim * dim
  shared = sum(idx.shape[0] * side_flops(idx.shape[1], dim, gram=False) for idx in index_blocks)
  if shared <= split:
    return (False,) * len(index_blocks), True
  return gram, False


def class_block_moments(z, index_blocks, gram):
  """Per group of classes, the second moments of the padded class blocks: [k, m, m] each.

  ``m`` is the block's row count (``gram[i]``: ``Z_c Z_c^T``) or ``d`` (``Z_c^T Z_c``).
  """
  # Padding indices point at row n, past the end: "fill" gives zero rows, and XLA fuses the
  # producer of ``z`` (the centring) into the gather instead of writing a padded copy first.
  blocks = [jnp.take(z, idx, axis=0, mode="fill", fill_value=0) for idx in index_blocks]
  return [numerics.gram(b) if g else numerics.covariance(b) for b, g in zip(blocks, gram)]


def class_terms_blocks(z, weights, counts, index_blocks, class_ids, eps, *, eps_vector,
                       moments=None):
  """sum_c w_c R_c from padded class blocks (labels known on the host).

  Each group's second moments ([k, m, m], from :func:`class_block_moments` unless ``moments``
  are given) are zero-padded to the largest ``m`` (a zero row and column of ``M`` puts a 1 on the
  diagonal of ``I + a M``: ``log 1 = 0``, exact) and factorised in ONE batched call. One
  factorisation per program is deliberate: XLA's CPU runtime can deadlock on a program holding
  several large batched LAPACK calls (jaxlib 0.10.2).
  """
  mats = moments
  if mats is None:
    mats = class_block_moments(z, index_blocks, block_sides(index_blocks, *z.shape)[0])
  size = max(m.shape[-1] for m in mats)
  mats = jnp.concatenate(
      [jnp.pad(m, ((0, 0), (0, size - m.shape[-1]), (0, size - m.shape[-1]))) for m in mats])
  ids = jnp.concatenate(class_ids)
  terms = half_logdet(mats, safe_inverse(counts[ids]), eps, eps_vector=eps_vector)
  return jnp.tensordot(weights[ids], terms, axes=(0, 0))


def dense_gram_cheaper(n: int, d: int, num_classes: int) -> bool:
  """Layout of the class terms for traced labels: one masked ``n x n`` Gram matrix (``n^2 d +
  n^3/3`` flops) rather than ``C`` class covariances (``C (n d^2 + d^3/3)``)?"""
  return side_flops(n, d, gram=True) <= num_classes * side_flops(n, d, gram=False)


def class_terms_dense(z, labels, weights, counts, eps, *, num_classes, eps_vector):
  """sum_c w_c R_c with traced labels (static C), on the cheaper of two dense layouts."""
  n, d = z.shape
  if dense_gram_cheaper(n, d, num_classes):
    # One n x n Gram matrix masked to same-class entries, each class block scaled by 1/n_c.
    # After a permutation it is block diagonal, so its Cholesky factor is too (no fill between
    # blocks) and log L_ii sums, class by class, to each block's log-determinant.
    same = labels[:, None] == labels[None, :]
    inv = safe_inverse(counts)[labels]  # [n]
    mat = jnp.where(same, numerics.gram(z), 0.0) * inv[:, None]
    row_w = weights[labels]
    if not eps_vector:
      logdiag = numerics.cholesky_logdiag(jnp.eye(n, dtype=z.dtype) + mat / eps)
      return jnp.sum(row_w * logdiag)
    # One eigendecomposition: block diagonal, so each eigenvector lives in one class (or, for an
    # eigenvalue shared by several classes, in their span, where the attribution below is exact).
    lam, vec = jnp.linalg.eigh(numerics.symmetrize(mat))
    lam = jnp.maximum(lam, 0.0)
    mass = jnp.einsum("i,ik->k", row_w, vec * vec, precision=numerics.HIGHEST)  # [n]
    return 0.5 * jnp.sum(mass[:, None] * jnp.log1p(lam[:, None] / eps[None, :]), axis=0)
  onehot = jax.nn.one_hot(labels, num_classes, dtype=z.dtype)  # [n, C]
  covs = jnp.einsum("nc,ni,nj->cij", onehot, z, z, precision=numerics.HIGHEST)
  terms = half_logdet(covs, safe_inverse(counts), eps, eps_vector=eps_vector)
  return jnp.tensordot(weights, terms, axes=(0, 0))


# ---------------------------------------------------------------------------------------------
# The kernel.


def preprocess(features: jax.Array, config: Config) -> jax.Array:
  """Centres the features (and, for the official pipeline, L2-normalises rows around it)."""
  z = features
  if config.normalize:
    z = normalize_rows(z)
  z = z - jnp.mean(z, axis=0, keepdims=True)
  if config.normalize:
    z = normalize_rows(z)
  return z


def normalize_rows(z):
  """Rows divided by their L2 norm, floored at 1e-12 (``torch.nn.functional.normalize``)."""
  norm = jnp.sqrt(jnp.sum(z * z, axis=1, keepdims=True))
  return z / jnp.maximum(norm, _NORM_FLOOR)


def total_rate(z, eps, *, config: Config, eps_vector: bool, moment=None):
  """``R(Z)`` of centred ``z``, and the eigenvalues the official rank rule needs (else None)."""
  if config.rank_normalize:
    return coding_rate_terms(z, eps, eps_vector=eps_vector, return_eigvals=True, moment=moment)
  return coding_rate_terms(z, eps, eps_vector=eps_vector, moment=moment), None


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
                     num_classes: int, eps_vector: bool):
  """TransRate of one feature matrix; pure and traceable (``vmap`` over ``features`` works).

  Args:
    features: [n, d] float.
    labels: [n] int32 in ``0..num_classes-1``.
    index_blocks, class_ids: from :func:`make_block_plan` for labels known on the host; empty
      tuples for traced labels (then the dense layouts are used).
    dim: the true feature width (zero columns appended for padding do not count), used by the
      official rank normalisation.
    eps: scalar or [E].
    config: static :class:`Config`.
    num_classes: static C.
    eps_vector: whether ``eps`` is [E].

  Returns:
    Scalar, or [E] when ``eps_vector``.
  """
  KERNEL_TRACES[0] += 1
  n = features.shape[0]
  z = preprocess(features, config)
  eps = jnp.asarray(eps, z.dtype)
  counts = jnp.zeros((num_classes,), z.dtype).at[labels].add(1.0)
  weights = class_weights(counts, n, config.weighting)
  moments, total_moment = None, None
  if index_blocks:
    gram, shared = block_sides(index_blocks, *z.shape)
    moments = class_block_moments(z, index_blocks, gram)
    if shared:  # Z^T Z = sum_c Z_c^T Z_c: no second pass over the data
      total_moment = sum(numerics.sum_leading(m) for m in moments)
  total, lam = total_rate(z, eps, config=config, eps_vector=eps_vector, moment=total_moment)
  if index_blocks:
    cond = class_terms_blocks(z, weights, counts, index_blocks, class_ids, eps,
                              eps_vector=eps_vector, moments=moments)
  else:
    cond = class_terms_dense(z, labels, weights, counts, eps, num_classes=num_classes,
                              eps_vector=eps_vector)
  return rank_normalized(total - cond, lam, dim, config)


@functools.partial(
    jax.jit, static_argnames=("config", "num_classes", "eps_vector"))
def transrate_jit(features, labels, index_blocks, class_ids, dim, eps, *, config, num_classes,
                   eps_vector):
  return transrate_kernel(features, labels, index_blocks, class_ids, dim, eps, config=config,
                          num_classes=num_classes, eps_vector=eps_vector)


@functools.partial(jax.jit, static_argnames=("eps_vector",))
def _coding_rate_jit(features, eps, *, eps_vector):
  return coding_rate_terms(features, jnp.asarray(eps, features.dtype), eps_vector=eps_vector)


# ---------------------------------------------------------------------------------------------
# Public API.


def coding_rate(features, *, eps=1e-4) -> jax.Array:
  r"""Coding rate of the rows of ``features`` (no centring).

  .. math:: R(F) = \tfrac12 \log\det\left(I_d + \frac{F^\top F}{n\,\epsilon}\right)

  computed as ``1/2 logdet(I_n + F F^T / (n eps))`` when that is cheaper (Sylvester's identity),
  by Cholesky.

  Args:
    features: [n, d] array (NumPy or JAX; half precision is upcast to float32).
    eps: distortion, a positive float, or a 1-D array of values to sweep (one eigendecomposition).

  Returns:
    A scalar (or [E] for a vector ``eps``) in nats.

  Example:
    >>> import numpy as np, transrate_jax as tj
    >>> float(tj.coding_rate(np.eye(4)[:2], eps=1.0))  # 1/2 * 2 * log(1 + 1/2)
    0.405...

  Reference: Ma et al., "Segmentation of multivariate mixed data via lossy data coding and
  compression", TPAMI 2007; Huang et al., "Frustratingly easy transferability estimation", ICML 2022.
  """
  f = validation.check_features(features, min_samples=1)
  eps, eps_vector = validation.check_eps(eps)
  return _coding_rate_jit(f, eps, eps_vector=eps_vector)


def transrate(features, labels, *, eps=1e-4, weighting: Optional[str] = None,
              preset: Optional[str] = None, num_classes: Optional[int] = None) -> jax.Array:
  r"""TransRate: how much information the features carry about the labels (higher is better).

  .. math::
     Z &= F - \bar F, \qquad R(Z) = \tfrac12\log\det\left(I + \tfrac{Z^\top Z}{n\epsilon}\right),\\
     \mathrm{TrR} &= R(Z) - \sum_c w_c\, \tfrac12\log\det\left(I + \tfrac{Z_c^\top Z_c}{n_c\epsilon}\right)

  with ``Z_c`` the rows of class ``c`` (not re-centred). Scores are in nats and only comparable
  within one target task (same labels); the scale of the features matters unless rows are
  normalised (``preset="official"`` does).

  Args:
    features: [n, d] float array (NumPy or JAX; half precision is upcast to float32).
    labels: [n] integer class labels in ``0..C-1``.
    eps: distortion ``eps > 0`` (default 1e-4), or a 1-D array of values: one score per value, all
      from one eigendecomposition per term (to sweep eps as the authors did, 1e-5 to 2e-2).
    weighting: "prior" (default; ``w_c = n_c / n``, the paper's mutual-information estimate and the
      authors' code) or "uniform" (``w_c = 1 / C``, the paper's listing and tllib).
    preset: None, "tllib" (uniform weights, raw features: what ``tllib.ranking.transrate`` returns)
      or "official" (the authors' repository: rows L2-normalised, centred, normalised again, prior
      weights, result divided by the numerical rank of ``Z^T Z / n``). A preset fixes the weighting;
      a conflicting ``weighting`` raises.
    num_classes: C as a static Python int. Default ``max(labels) + 1``, read from the labels;
      required when the labels are traced (inside ``jit``/``vmap``/``grad``). Classes with no sample
      contribute zero (but count in C for "uniform").

  Returns:
    A scalar (or [E] for a vector ``eps``) in the features' float dtype.

  Raises:
    ValueError: features not 2-D or with NaN/inf, fewer than 2 samples, labels not 1-D integers,
      a length mismatch, labels < 0 or >= num_classes, eps <= 0, an unknown weighting or preset.

  Example:
    >>> import numpy as np, transrate_jax as tj
    >>> rng = np.random.default_rng(0)
    >>> y = rng.integers(0, 3, 300)
    >>> f = rng.normal(size=(300, 16)) + 3.0 * np.eye(16)[y]
    >>> float(tj.transrate(f, y)) > float(tj.transrate(rng.normal(size=(300, 16)), y))
    True

  Reference: Huang, Huang, Xu, Ma, Shen, Lu and Zhou, "Frustratingly easy transferability
  estimation", ICML 2022.
  """
  config = resolve_config(weighting, preset)
  f = validation.check_features(features)
  y, num_classes = validation.check_labels(labels, f.shape[0], num_classes=num_classes)
  eps, eps_vector = validation.check_eps(eps)
  index_blocks, class_ids = (), ()
  if validation.is_concrete(labels):
    index_blocks, class_ids = make_block_plan(np.asarray(labels), num_classes)
  return transrate_jit(f, y, index_blocks, class_ids, f.shape[1], eps, config=config,
                        num_classes=num_classes, eps_vector=eps_vector)
