"""Streaming TransRate: exact scores from per-class sufficient statistics that add across chunks.

The score depends on the data only through the class counts ``n_c``, sums ``s_c = sum_{i in c} f_i``
and second moments ``S_c = sum_{i in c} f_i f_i^T`` (docs/numerics.md, "Streaming and sharding").
With ``mu = sum_c s_c / n``:

    Z^T Z     = S - n mu mu^T                                   (S = sum_c S_c)
    Z_c^T Z_c = S_c - s_c mu^T - mu s_c^T + n_c mu mu^T         (rows of class c, globally centred)
    TrR       = 1/2 logdet(I + Z^T Z / (n eps)) - sum_c w_c 1/2 logdet(I + Z_c^T Z_c / (n_c eps))

Statistics are accumulated around a shift (the first chunk's mean) so float32 sums of features with
a large common offset do not cancel. Memory is ``C x d x d`` for the class second moments.

Only the ``d x d`` matrices exist here, and ``Z_c^T Z_c`` has rank ``min(n_c, d)``: a class with
``n_c <= d`` (and the total when ``n - 1 < d``) is taken from its eigenvalues, keeping the largest
``min(n_c, d)`` (its zero eigenvalues are float32 round-off that Cholesky cannot survive and that
must not count); full-rank terms use Cholesky (docs/numerics.md).

Per chunk, the class second moments cost about ``m d^2`` flops (not ``C m d^2``): the chunk's rows
are sorted by class into tiles of ``t`` rows that each hold one class, and each tile adds
``x_t^T x_t`` to its class (fixed shapes, so one compiled update per chunk size).

Across processes (``jax.distributed``), each process streams its own rows and
:meth:`TransRateStats.merge_across_processes` re-shifts every process's statistics to one shift
(as :meth:`TransRateStats.merge` does) and ``psum``-s them; ``transrate_from_batches(...,
process_local=True)`` does this before finalising.

Reference: Huang et al., "Frustratingly easy transferability estimation", ICML 2022.
"""

from __future__ import annotations

import functools
from typing import Callable, Iterable, NamedTuple, Optional, Union

import jax
import jax.numpy as jnp
import numpy as np

from transrate_jax._src import numerics
from transrate_jax._src import progress as progress_lib
from transrate_jax._src.transrate import kernel
from transrate_jax._src import validation


def _tile_size(rows: int, num_classes: int) -> int:
  """Rows per tile: about one tile per class per chunk, a power of two in [8, 256]."""
  return int(min(256, max(8, numerics.bucket(-(-rows // max(num_classes, 1))))))


def class_moments(x, labels, mask, *, num_classes: int, tile: int, axis_names: tuple = ()):
  """Per-class counts, sums and second moments of the rows of ``x`` (traceable, fixed shapes).

  Args:
    x: [m, d] float rows.
    labels: [m] int in ``0..num_classes-1``.
    mask: [m] bool; rows with False are ignored (padding).
    num_classes: static C.
    tile: static rows per tile.
    axis_names: inside ``jax.shard_map``, the mesh axes the rows vary over (the loop's
      accumulator is cast to vary over them).

  Returns:
    ``(counts [C] int32, sums [C, d], second [C, d, d])`` with ``second[c] = sum_{i in c} x_i x_i^T``.
  """
  m, d = x.shape
  c_total = num_classes
  lab = jnp.where(mask, labels, c_total).astype(jnp.int32)  # masked rows -> dummy class C
  x = jnp.where(mask[:, None], x, 0.0)
  counts = jnp.zeros((c_total + 1,), jnp.int32).at[lab].add(1)[:c_total]
  sums = jax.ops.segment_sum(x, lab, num_segments=c_total + 1)[:c_total]
  # Sort rows by class and lay each class out on whole tiles: sum_c ceil(n_c / t) <= m/t + C tiles.
  order = jnp.argsort(lab, stable=True)
  slab = lab[order]
  slab_c = jnp.minimum(slab, c_total - 1)
  tiles_c = (counts + tile - 1) // tile
  tile_end = jnp.cumsum(tiles_c)
  padded_start = (tile_end - tiles_c) * tile
  class_start = jnp.cumsum(counts) - counts
  num_tiles = -(-m // tile) + min(c_total, m)
  pos = jnp.where(slab < c_total,
                  padded_start[slab_c] + jnp.arange(m) - class_start[slab_c], num_tiles * tile)
  buf = jnp.zeros((num_tiles * tile, d), x.dtype).at[pos].set(x[order], mode="drop")
  tiles = buf.reshape(num_tiles, tile, d)
  tile_class = jnp.minimum(
      jnp.searchsorted(tile_end, jnp.arange(num_tiles), side="right"), c_total - 1)

  def body(j, acc):
    t = jax.lax.dynamic_index_in_dim(tiles, j, keepdims=False)
    return acc.at[tile_class[j]].add(numerics.covariance(t))

  init = jnp.zeros((c_total, d, d), x.dtype)
  if axis_names:
    init = jax.lax.pcast(init, tuple(axis_names), to="varying")
  second = jax.lax.fori_loop(0, tile_end[-1], body, init)
  return counts, sums, second


def _pad_rows(features, labels, mask, *, minimum: int = 1):
  """Rows padded (masked out) to a power of two, and to at least ``minimum`` rows, so chunk sizes
  compile a handful of programs: a stream passes its largest padded size so far, and its ragged
  last chunk reuses the program of the full ones."""
  m = features.shape[0]
  rows = numerics.bucket(m, minimum=minimum)
  mask = jnp.asarray(mask, bool)
  if rows == m:
    return features, labels, mask
  return (jnp.pad(features, ((0, rows - m), (0, 0))), jnp.pad(labels, (0, rows - m)),
          jnp.pad(mask, (0, rows - m)))


def _reshift(counts, sums, second, delta):
  """Statistics of ``x + delta`` from those of ``x`` (per class)."""
  nc = counts.astype(sums.dtype)
  outer = jnp.einsum("ci,j->cij", sums, delta, precision=numerics.HIGHEST)
  second = (second + outer + jnp.swapaxes(outer, -1, -2)
            + nc[:, None, None] * jnp.outer(delta, delta)[None])
  sums = sums + nc[:, None] * delta[None, :]
  return sums, second


class TransRateStats(NamedTuple):
  """Sufficient statistics for TransRate; a pytree (a NamedTuple), additive across chunks.

  All sums are of ``x = f - shift``.

  Attributes:
    counts: [C] int32 class counts ``n_c``.
    sums: [C, d] per-class sums ``s_c``.
    second_moments: [C, d, d] per-class ``S_c = sum_{i in c} x_i x_i^T``.
    shift: [d] the point the statistics are taken around (the first chunk's mean).
    n: int32 scalar, the number of samples seen.
  """
  counts: jax.Array
  sums: jax.Array
  second_moments: jax.Array
  shift: jax.Array
  n: jax.Array

  @classmethod
  def init(cls, dim: int, *, num_classes: int, dtype=jnp.float32) -> "TransRateStats":
    """Empty statistics for features of width ``dim`` and ``num_classes`` classes.

    Memory: ``num_classes * dim * dim`` floats (the class second moments).

    Raises:
      ValueError: ``dim`` or ``num_classes`` not a positive int, ``dtype`` not a real dtype
        (``"x"``, complex).
    """
    validation.check_positive_int(dim, "dim")
    validation.check_positive_int(num_classes, "num_classes")
    dtype = validation.check_float_dtype(dtype)
    return cls(counts=jnp.zeros((num_classes,), jnp.int32),
               sums=jnp.zeros((num_classes, dim), dtype),
               second_moments=jnp.zeros((num_classes, dim, dim), dtype),
               shift=jnp.zeros((dim,), dtype),
               n=jnp.zeros((), jnp.int32))

  @property
  def num_classes(self) -> int:
    return self.counts.shape[0]

  @property
  def dim(self) -> int:
    return self.shift.shape[0]

  def update(self, features, labels, mask=None) -> "TransRateStats":
    """Adds a chunk: ``features`` [m, d], ``labels`` [m] in ``0..C-1``, optional ``mask`` [m] bool
    (rows with False are ignored). Jit-compiled (one program per chunk shape).

    Raises:
      ValueError: the errors of :func:`transrate_jax.transrate` on the chunk, a width other
        than ``dim``, a ``mask`` that is not a boolean array of shape ``(m,)``, or statistics
        whose fields are not arrays of consistent shapes (build them with :meth:`init`).
    """
    validation.check_moment_statistics(*self)
    f = validation.check_features(features, min_samples=1)
    if f.shape[1] != self.dim:
      raise ValueError(f"features have {f.shape[1]} columns but the statistics were initialised "
                       f"with dim={self.dim}.")
    y, _ = validation.check_labels(labels, f.shape[0], num_classes=self.num_classes)
    mask = validation.check_mask(mask, f.shape[0])
    return _update(self, *_pad_rows(f.astype(self.sums.dtype), y, mask),
                   tile=_tile_size(numerics.bucket(f.shape[0]), self.num_classes))

  def merge(self, other: "TransRateStats") -> "TransRateStats":
    """The statistics of both sets of samples (e.g. from two workers); order does not matter.

    Raises:
      ValueError: ``other`` is not a :class:`TransRateStats`, either's fields are not arrays of
        consistent shapes, or the two differ in ``num_classes`` or ``dim``.
    """
    if not isinstance(other, TransRateStats):
      raise ValueError(f"merge needs another TransRateStats; got {type(other).__name__}.")
    validation.check_moment_statistics(*self)
    validation.check_moment_statistics(*other)
    if (self.num_classes, self.dim) != (other.num_classes, other.dim):
      raise ValueError(
          f"cannot merge statistics of shape (C={self.num_classes}, d={self.dim}) with "
          f"(C={other.num_classes}, d={other.dim}).")
    return _merge(self, other)

  def merge_across_processes(self) -> "TransRateStats":
    r"""The statistics of every process's samples, on every process (``jax.distributed``).

    A collective: every process calls it, each with the statistics of its own rows (any number,
    including none; classes may be absent on some processes; each has its own shift). The shift
    of the first process (in process order) that saw samples becomes the common one, each process
    re-shifts its statistics to it as :meth:`merge` does (per class, :math:`\delta = t_p - t`):

    .. math:: s_c \leftarrow s_c + n_c\delta, \qquad
              S_c \leftarrow S_c + s_c\delta^\top + \delta s_c^\top + n_c\delta\delta^\top,

    and ``psum`` over one device per process adds them. Every process gets the same
    statistics, in its own dtype; memory is one ``C x d x d`` copy per process (never ``P`` of
    them). With one process it returns ``self``.

    Returns:
      The merged statistics (``n`` is the total over every process), on this process's first
      device.

    Raises:
      ValueError: on every process, when the processes' statistics differ in ``num_classes``,
        ``dim`` or dtype (pass the same ``num_classes`` and ``dtype`` everywhere).
    """
    validation.check_moment_statistics(*self)
    if jax.process_count() == 1:
      return self
    headers = process_allgather(_header(self))
    _agreed(headers, every_process=True)
    shifts = process_allgather(np.asarray(self.shift))  # [P, d]
    seen = headers[:, 0] > 0
    shift = jnp.asarray(shifts[int(np.argmax(seen))], self.sums.dtype)
    sums, second = _about_jit(self, shift)
    counts, sums, second = _psum_over_processes(self.counts, sums, second)
    device = _process_device(jax.process_index())
    return TransRateStats(counts=counts, sums=sums, second_moments=second,
                          shift=jax.device_put(shift, device),
                          n=jax.device_put(jnp.asarray(headers[:, 0].sum(), jnp.int32), device))

  def finalize(self, *, eps=1e-4, weighting: Optional[str] = None,
               preset: Optional[str] = None) -> jax.Array:
    """The TransRate score of every sample seen, equal to the in-memory :func:`transrate`.

    ``preset="official"`` normalises each row *after* centring by the global mean, which one pass
    of statistics cannot do: use :func:`transrate_from_batches` (two passes) for it.

    Raises:
      ValueError: no samples, ``preset="official"``, bad ``eps``/``weighting``/``preset``,
        statistics whose fields are not arrays of consistent shapes (build them with
        :meth:`init`), or (concrete statistics) a score that is not finite: in float32, features
        whose scale overflows the sums of products (``n max|f|^2`` or ``max|f|^2 / eps`` beyond
        3.4e38, e.g. ``|f| ~ 1e18``); rescale or L2-normalise them, or accumulate in float64.
    """
    validation.check_moment_statistics(*self)
    config = kernel.resolve_config(weighting, preset)
    if config.normalize:
      raise ValueError(
          "preset='official' L2-normalises rows after centring by the global mean, which needs a "
          "second pass over the data: use transrate_from_batches(batches, preset='official') with "
          "a re-iterable input, or transrate() in memory.")
    eps, eps_vector = validation.check_eps(eps, dtype=self.sums.dtype)
    if validation.is_concrete(self.n) and int(self.n) < 2:
      raise ValueError(f"TransRate needs at least 2 samples; the statistics hold {int(self.n)}.")
    return _finalize_stats(self, eps, config=config, centre=True, eps_vector=eps_vector)


@functools.partial(jax.jit, static_argnames=("tile",))
def _update(stats: TransRateStats, features, labels, mask, *, tile):
  cnt = jnp.sum(mask)
  chunk_mean = jnp.sum(jnp.where(mask[:, None], features, 0.0), axis=0) / jnp.maximum(cnt, 1)
  shift = jnp.where(stats.n > 0, stats.shift, chunk_mean)
  counts, sums, second = class_moments(features - shift, labels, mask,
                                       num_classes=stats.num_classes, tile=tile)
  return TransRateStats(counts=stats.counts + counts, sums=stats.sums + sums,
                        second_moments=stats.second_moments + second, shift=shift,
                        n=stats.n + cnt.astype(jnp.int32))


_update_donated = jax.jit(_update.__wrapped__, static_argnames=("tile",), donate_argnums=(0,))


def _about(stats: TransRateStats, shift):
  """``(sums, second_moments)`` of ``stats`` taken around ``shift`` instead of ``stats.shift``."""
  return _reshift(stats.counts, stats.sums, stats.second_moments, stats.shift - shift)


_about_jit = jax.jit(_about)


@jax.jit
def _merge(a: TransRateStats, b: TransRateStats) -> TransRateStats:
  shift = jnp.where(a.n > 0, a.shift, b.shift)
  sa, qa = _about(a, shift)
  sb, qb = _about(b, shift)
  return TransRateStats(counts=a.counts + b.counts, sums=sa + sb, second_moments=qa + qb,
                        shift=shift, n=a.n + b.n)


# Across processes (``jax.distributed``). Each helper is a collective unless it says otherwise.

_PROCESS_AXIS = "processes"


def process_allgather(value: np.ndarray) -> np.ndarray:
  """``value`` of every process, stacked in process order (one host round trip; a collective)."""
  from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel
  return np.asarray(multihost_utils.process_allgather(value))


def first_shard(a: jax.Array) -> jax.Array:
  """One device's copy of a replicated array (as a single-device array); not a collective."""
  return a.addressable_shards[0].data


def _process_device(process: int):
  """The device that stands for ``process`` (its lowest id); the same answer on every process."""
  return min((d for d in jax.devices() if d.process_index == process), key=lambda d: d.id)


@functools.lru_cache(maxsize=None)
def _process_sum_fn(devices: tuple, num_arrays: int):
  """Jitted ``psum`` over a 1-D mesh of one device per process, for ``num_arrays`` arrays."""
  mesh = jax.sharding.Mesh(np.asarray(devices), (_PROCESS_AXIS,),
                           axis_types=(jax.sharding.AxisType.Auto,))
  spec = jax.sharding.PartitionSpec(_PROCESS_AXIS)

  def local(*blocks):  # each block is this process's [1, ...] slice
    return tuple(jax.lax.psum(b[0], _PROCESS_AXIS) for b in blocks)

  fn = jax.jit(jax.shard_map(local, mesh=mesh, in_specs=(spec,) * num_arrays,
                             out_specs=(jax.sharding.PartitionSpec(),) * num_arrays))
  return mesh, fn


def _psum_over_processes(*arrays):
  """The sum over processes of each array (same shapes and dtypes everywhere), on this process's
  device of the mesh, as single-device arrays."""
  devices = tuple(_process_device(p) for p in range(jax.process_count()))
  mesh, fn = _process_sum_fn(devices, len(arrays))
  sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(_PROCESS_AXIS))
  mine = devices[jax.process_index()]
  stacked = [jax.make_array_from_single_device_arrays(
      (len(devices),) + a.shape, sharding, [jax.device_put(a[None], mine)]) for a in arrays]
  return tuple(first_shard(a) for a in fn(*stacked))


_DTYPES = (jnp.dtype(jnp.float32), jnp.dtype(jnp.float64))


def _header(stats: Optional[TransRateStats]) -> np.ndarray:
  """``[n, C, d, dtype code]`` of ``stats`` (zeros for None); not a collective."""
  if stats is None:
    return np.zeros((4,), np.int64)
  return _header_of(int(stats.n), stats.num_classes, stats.dim, stats.sums.dtype)


def _header_of(n: int, num_classes: int, dim: int, dtype) -> np.ndarray:
  return np.asarray([n, num_classes, dim, _DTYPES.index(jnp.dtype(dtype))], np.int64)


def _agreed(headers: np.ndarray, *, every_process: bool):
  """``(C, d, dtype)`` the processes agree on, from the stacked ``[P, 4]`` headers; the same
  answer, or the same error, on every process.

  With ``every_process`` all must have equal ``(C, d, dtype)``. Without it only processes that
  saw samples take part (the others hold no statistics yet) and C may differ (the classes seen
  so far): the largest is returned.
  """
  procs = np.arange(len(headers)) if every_process else np.flatnonzero(headers[:, 0] > 0)
  if procs.size == 0:
    raise ValueError("batches is empty on every process: no samples to score.")
  key = slice(1, 4) if every_process else slice(2, 4)
  if len({tuple(headers[p, key]) for p in procs}) > 1:
    seen, parts = set(), []
    for p in procs:
      if tuple(headers[p, key]) not in seen:
        seen.add(tuple(headers[p, key]))
        c, d, code = headers[p, 1:4]
        parts.append(f"process {p}: C={c}, d={d}, {_DTYPES[code].name}")
    raise ValueError("the processes' statistics differ in shape or dtype (" + "; ".join(parts)
                     + "): every process must use the same feature width, num_classes= and "
                     "dtype=.")
  first = headers[procs[0]]
  return int(headers[procs, 1].max()), int(first[2]), _DTYPES[int(first[3])]


def score_from_moments(counts, sums, second, shift, eps, *, config, centre: bool,
                       eps_vector: bool):
  """TransRate from per-class statistics of ``x = f - shift`` (traceable; docs/numerics.md).

  Only the ``d x d`` statistics exist, so a term whose matrix is rank-deficient (a class with
  ``n_c <= d``; the total when ``n - 1 < d``) is taken from its eigenvalues with the rank bound
  ``min(n_c, d, n - centre)`` (:func:`numerics.psd_eigvalsh`): the round-off in its zero
  eigenvalues does not count. Every term, full-rank or not, comes from one batched
  eigendecomposition (one LAPACK call per program; see the comment in the body).

  Args:
    counts: [C] class counts; sums: [C, d]; second: [C, d, d]; shift: [d].
    eps: scalar or [E].
    config: a :class:`kernel.Config` (``normalize`` is ignored: the caller has applied it).
    centre: centre at the global mean (True), or use the rows as they are (False: they were
      centred, and possibly normalised, before the statistics were taken).
    eps_vector: whether ``eps`` is [E].

  Returns:
    Scalar, or [E].
  """
  dtype = sums.dtype
  d = sums.shape[-1]
  eps = jnp.asarray(eps, dtype)
  nc = counts.astype(dtype)
  n = jnp.sum(nc)
  s_tot = numerics.sum_leading(sums)
  q = s_tot / n if centre else -shift  # the centre, in shifted coordinates
  outer = jnp.einsum("ci,j->cij", sums, q, precision=numerics.HIGHEST)
  qq = jnp.outer(q, q)
  cls_mats = second - outer - jnp.swapaxes(outer, -1, -2) + nc[:, None, None] * qq[None]
  tot_outer = jnp.outer(s_tot, q)
  total_mat = numerics.sum_leading(second) - tot_outer - tot_outer.T + n * qq
  # Every term from ONE batched eigendecomposition ([C + 1, d, d]: the total, then the classes),
  # rank-bounded: a single LAPACK call per program, since XLA's CPU runtime can hang on a program
  # that holds several batched factorisations (jaxlib 0.10.2; seen with an eigvalsh batch next to
  # a Cholesky batch under shard_map).
  total_rank = jnp.minimum(counts.sum() - int(centre), d)
  ranks = jnp.minimum(jnp.minimum(counts, d), counts.sum() - int(centre))
  mats = jnp.concatenate([total_mat[None], cls_mats])
  lam_all = numerics.psd_eigvalsh(mats, jnp.concatenate([total_rank[None], ranks]))
  scales = jnp.concatenate([jnp.ones((1,), dtype) / n, kernel.safe_inverse(nc)])
  all_terms = kernel.half_logdet_from_eigvals(lam_all, scales, eps, eps_vector=eps_vector)
  total, terms = all_terms[0], all_terms[1:]
  lam = lam_all[0] if config.rank_normalize else None
  weights = kernel.class_weights(nc, n, config.weighting)
  return kernel.assemble(total, kernel.weighted_sum(weights, terms), weights, nc, n,
                         config=config, lam=lam, dim=d, full_included=True)


@functools.partial(jax.jit, static_argnames=("config", "centre", "eps_vector"))
def _finalize(stats, eps, *, config, centre, eps_vector):
  return score_from_moments(stats.counts, stats.sums, stats.second_moments, stats.shift, eps,
                            config=config, centre=centre, eps_vector=eps_vector)


def _finalize_stats(stats, eps, *, config, centre, eps_vector):
  """:func:`_finalize` of ``stats``; a ValueError, not a NaN, when concrete statistics of finite
  chunks give a score that is not finite (float32 products overflowed)."""
  return validation.check_finite_result(
      _finalize(stats, eps, config=config, centre=centre, eps_vector=eps_vector),
      metric="TransRate", hint="In streaming, the sums of f f^T over every row (then divided "
      "by n eps) must fit the accumulation dtype: pass dtype=np.float64 (jax_enable_x64 on) to "
      "transrate_from_batches or TransRateStats.init.")


def _grow(stats: TransRateStats, num_classes: int) -> TransRateStats:
  """The same statistics with room for ``num_classes`` classes (new classes empty)."""
  extra = num_classes - stats.num_classes
  return stats._replace(
      counts=jnp.pad(stats.counts, (0, extra)),
      sums=jnp.pad(stats.sums, ((0, extra), (0, 0))),
      second_moments=jnp.pad(stats.second_moments, ((0, extra), (0, 0), (0, 0))))


normalize_rows = kernel.normalize_rows


@jax.jit
def _normalized_sum(features, ref, mask):
  """``sum_i (normalize(f_i) - normalize(ref))`` over the rows with ``mask``, in shifted form (no
  cancellation near ``ref``)."""
  return jnp.sum(jnp.where(mask[:, None], kernel.normalized_offsets(features, ref), 0.0), axis=0)


@jax.jit
def _official_rows(features, ref, mean):
  """``normalize(normalize(f) - m)``, ``m = normalize(ref) + mean`` (``mean``: of the offsets)."""
  return normalize_rows(kernel.normalized_offsets(features, ref) - mean)


def _iterate(batches):
  if callable(batches):
    return validation.iter_pairs(batches(), name="the value batches() returned")
  return validation.iter_pairs(batches, name="batches")


def transrate_from_batches(batches: Union[Iterable, Callable[[], Iterable]], *,
                           num_classes: Optional[int] = None, eps=1e-4,
                           weighting: Optional[str] = None, preset: Optional[str] = None,
                           progress: Optional[bool] = None, dtype=None,
                           process_local: bool = False) -> jax.Array:
  r"""TransRate of a dataset given as chunks, without holding it in memory.

  Accumulates :class:`TransRateStats` (counts ``n_c``, sums ``s_c``, second moments ``S_c`` around
  a shift) chunk by chunk and finalises:

  .. math:: Z^\top Z = S - n\mu\mu^\top, \qquad
            Z_c^\top Z_c = S_c - s_c\mu^\top - \mu s_c^\top + n_c \mu\mu^\top.

  The result equals :func:`transrate_jax.transrate` on the concatenated chunks (any chunking).

  Memory is ``C x d x d`` floats for the class statistics (C = 100, d = 2048 in float32: 1.6 GiB).
  When that is too much: score a subset of classes per pass (the class terms are separate; the
  total term needs all samples), reduce ``d`` (e.g. PCA or pooling of the layer), or use the
  in-memory :func:`transrate` (Gram side, ``n_c x n_c`` per class) on a subsample.

  ``preset="official"`` L2-normalises rows, centres, and normalises again, which needs the global
  mean before the statistics: it makes two passes, so ``batches`` must be re-iterable (a list,
  or a zero-argument callable returning a fresh iterable); a one-shot iterator raises.

  Args:
    batches: an iterable of ``(features [m, d], labels [m])`` pairs (NumPy or JAX), or a
      zero-argument callable returning one.
    num_classes: C (static int). Default ``max(labels) + 1`` over all chunks (statistics grow as
      new classes appear).
    eps, weighting, preset: as in :func:`transrate_jax.transrate`.
    progress: a progress bar over chunks: True, False, or None (default: only for long
      interactive work, see :mod:`transrate_jax._src.progress`).
    dtype: accumulation dtype (default: the first chunk's float dtype).
    process_local: many processes (``jax.distributed.initialize``: a TPU pod slice, several GPU
      hosts), as in :func:`transrate_jax.transrate_sharded`: ``batches`` are THIS process's
      chunks (any number, none included; classes may be absent), every process calls the
      function with its own (and the same keywords), and the score is that of every process's
      rows, the same on each. The statistics are merged with
      :meth:`TransRateStats.merge_across_processes` before finalising (the official preset's
      pass-1 mean is summed over processes too). Without ``num_classes`` the processes agree on
      the largest label seen anywhere. With one process it changes nothing.

  Returns:
    A scalar (or [E] for a vector ``eps``); with ``process_local``, the same value on every
    process, on this process's first device.

  Raises:
    ValueError: no data (on every process, with ``process_local``), fewer than 2 samples, chunks
      of different widths, labels out of range, a one-shot iterator with ``preset="official"``,
      the errors of ``transrate``, and with ``process_local`` processes whose widths or dtypes
      differ (raised on every process). Wrong argument types: ``batches`` that is not an
      iterable of ``(features, labels)`` pairs (``None``, a number, a string, a dict, an array)
      or a zero-argument callable returning one, an item that is not such a pair, a
      ``num_classes`` that is not a positive int, a bad ``eps``, ``dtype`` or ``process_local``.
      A score that is not finite although every chunk was (in float32, features whose scale
      overflows the sums of products, ``n max|f|^2`` or ``max|f|^2 / eps`` beyond 3.4e38, e.g.
      ``|f| ~ 1e18``: rescale or L2-normalise them, or pass ``dtype=np.float64`` with
      ``jax_enable_x64`` on).
    RuntimeError: with ``process_local``, on the other processes when one process's chunks raise
      (that process raises its own error; none is left waiting in a collective).

  Example:
    >>> import numpy as np, transrate_jax as tj
    >>> rng = np.random.default_rng(0)
    >>> y = rng.integers(0, 3, 300); f = rng.normal(size=(300, 8)) + np.eye(8)[y]
    >>> chunks = [(f[i:i + 64], y[i:i + 64]) for i in range(0, 300, 64)]
    >>> s = tj.transrate_from_batches(chunks, progress=False)
    >>> bool(np.isclose(s, tj.transrate(f, y), rtol=1e-4))
    True

  Reference: Huang et al., "Frustratingly easy transferability estimation", ICML 2022.
  """
  config = kernel.resolve_config(weighting, preset)
  eps, eps_vector = validation.check_eps(eps)
  validation.check_batches(batches)
  num_classes = validation.check_num_classes(num_classes)
  process_local = validation.check_bool(process_local, "process_local")
  if config.normalize and not callable(batches) and iter(batches) is batches:
    raise ValueError(
        "preset='official' needs two passes over the data (the global mean comes before the "
        "second row normalisation): pass a re-iterable (a list, or a zero-argument callable that "
        "returns a fresh iterable), not a one-shot iterator or generator.")
  total = len(batches) if hasattr(batches, "__len__") else None
  dtype = None if dtype is None else validation.check_float_dtype(dtype)
  across = process_local and jax.process_count() > 1

  mean = ref = None
  if config.normalize:  # Pass 1: the mean of the L2-normalised rows, relative to a reference.
    acc, count, ref = _local(across, _normalized_pass, batches, progress, total, dtype)
    if across:
      acc, count, ref = _normalized_pass_across_processes(acc, count, ref)
    elif acc is None:
      raise ValueError("batches is empty: no samples to score.")
    mean = acc / count

  desc = "transrate pass 2/2" if config.normalize else "transrate"
  stats = _local(across, _stats_pass, batches, progress, total, dtype, num_classes, ref, mean,
                 desc)
  if across:
    headers = process_allgather(_header(stats))
    c_max, dim, stats_dtype = _agreed(headers, every_process=False)
    if stats is None:  # no rows here: empty statistics of the agreed shape
      stats = TransRateStats.init(dim, num_classes=c_max, dtype=stats_dtype)
    elif stats.num_classes < c_max:  # classes seen only elsewhere (num_classes not given)
      stats = _grow(stats, c_max)
    stats = stats.merge_across_processes()
  if stats is None:
    raise ValueError("batches is empty: no samples to score.")
  if int(stats.n) < 2:
    raise ValueError(f"TransRate needs at least 2 samples; got {int(stats.n)}.")
  eps, eps_vector = validation.check_eps(eps, dtype=stats.sums.dtype)  # in the compute dtype
  return _finalize_stats(stats, eps, config=config, centre=not config.normalize,
                         eps_vector=eps_vector)


def _local(across: bool, fn, *args):
  """``fn(*args)``: one process's part of a pass. With ``across`` a failure is announced to the
  other processes (a one-flag all-gather) before it is raised, so that no process waits forever
  in the next collective: the failing one raises its error, the others a RuntimeError."""
  if not across:
    return fn(*args)
  error = out = None
  try:
    out = fn(*args)
  except Exception as e:  # pylint: disable=broad-except
    error = e
  failed = np.flatnonzero(process_allgather(np.asarray([error is not None], np.int32)))
  if error is not None:
    raise error
  if failed.size:
    raise RuntimeError(f"process(es) {failed.tolist()} failed while streaming their batches "
                       "(their error is raised there): no score.")
  return out


def _chunk_features(feats, dtype):
  f = validation.check_features(feats, min_samples=1)
  return f if dtype is None else f.astype(dtype)


def _normalized_pass(batches, progress, total, dtype):
  """Pass 1 of the official preset: ``(sum_i normalize(f_i) - normalize(ref), count, ref)``,
  ``ref`` the first chunk's mean row; ``(None, 0, None)`` without rows."""
  acc, count, ref, rows = None, 0, None, 1
  for feats, _ in progress_lib.iterate(_iterate(batches), progress, "transrate pass 1/2", total):
    f = _chunk_features(feats, dtype)
    if ref is None:  # the first chunk's mean row: the normalised rows are taken relative to it
      ref = jnp.mean(f, axis=0)
    padded, _, mask = _pad_rows(f, np.zeros((f.shape[0],), np.int32),
                                np.ones((f.shape[0],), bool), minimum=rows)
    rows = padded.shape[0]
    part = _normalized_sum(padded, ref.astype(f.dtype), mask)
    acc = part if acc is None else acc + part
    count += f.shape[0]
  return acc, count, ref


def _normalized_pass_across_processes(acc, count, ref):
  """Pass 1 summed over processes: every process gets the same ``(acc, count, ref)``.

  The reference becomes the first (in process order) process's ``r``; process ``p``'s sum moves
  to it exactly as ``acc_p + count_p (normalize(r_p) - normalize(r))``, the difference in
  shifted form (:func:`kernel.normalized_offsets`, no cancellation for nearby references).
  """
  header = np.zeros((4,), np.int64) if ref is None else _header_of(count, 1, *ref.shape, ref.dtype)
  headers = process_allgather(header)
  _, dim, dtype = _agreed(headers, every_process=False)
  zeros = np.zeros((dim,), dtype)
  accs = process_allgather(zeros if acc is None else np.asarray(acc))  # [P, d]
  refs = process_allgather(zeros if ref is None else np.asarray(ref))
  counts = headers[:, 0]
  seen = counts > 0
  return (_move_normalized_sums(jnp.asarray(accs[seen]), jnp.asarray(refs[seen]),
                                jnp.asarray(counts[seen], dtype)),
          int(counts.sum()), jnp.asarray(refs[int(np.argmax(seen))]))


@jax.jit
def _move_normalized_sums(accs, refs, counts):
  """``sum_p accs[p] + counts[p] (normalize(refs[p]) - normalize(refs[0]))`` ([P, d] -> [d])."""
  return jnp.sum(accs + counts[:, None] * kernel.normalized_offsets(refs, refs[0]), axis=0)


def _stats_pass(batches, progress, total, dtype, num_classes, ref, mean, desc):
  """The statistics of every chunk (of the official rows when ``ref`` is given); None without
  rows."""
  stats, rows = None, 1
  for feats, labels in progress_lib.iterate(_iterate(batches), progress, desc, total):
    f = _chunk_features(feats, dtype)
    if stats is not None and f.shape[1] != stats.dim:
      raise ValueError(f"a chunk has {f.shape[1]} feature columns; earlier chunks had {stats.dim}.")
    if num_classes is None:
      y, c_chunk = validation.check_labels(labels, f.shape[0])
    else:
      y, c_chunk = validation.check_labels(labels, f.shape[0], num_classes=num_classes)
    if stats is None:
      stats = TransRateStats.init(f.shape[1], num_classes=c_chunk, dtype=f.dtype)
    elif c_chunk > stats.num_classes:
      stats = _grow(stats, c_chunk)
    f, y, mask = _pad_rows(f.astype(stats.sums.dtype), y, np.ones((f.shape[0],), bool),
                           minimum=rows)
    rows = f.shape[0]
    if ref is not None:  # on the padded rows too (finite, and masked out), one program per bucket
      f = _official_rows(f, ref.astype(stats.sums.dtype), mean.astype(stats.sums.dtype))
    stats = _update_donated(stats, f, y, mask,
                            tile=_tile_size(f.shape[0], stats.num_classes))
  return stats
