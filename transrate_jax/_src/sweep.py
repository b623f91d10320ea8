"""Sweeps: score many feature matrices (layers of one model, or many models) in a few compiled calls.

Every feature matrix ``F_i`` ([n, d_i]) shares the samples and the labels. Widths are zero-padded
to a power-of-two bucket: appending zero columns leaves every TransRate term unchanged (they add
eigenvalues 0 and ``log 1 = 0``), and the true width is passed on for the official preset's rank
rule. Matrices of one bucket are stacked to ``[k, n, D]`` and the kernel is ``vmap``-ped over the
stack with the labels and the class index blocks shared (``in_axes=None``), so a sweep over many
widths compiles one program per bucket. Memory is bounded by cutting each stack into chunks of a
fixed size derived from ``max_bytes`` (the last chunk is padded with repeats of a real matrix, whose
results are dropped, so every chunk of a bucket has one shape).

The machinery is generic: :func:`score_many` takes the name of a registered metric (or a callable)
and :func:`register_metric` adds one. Metrics whose value is unchanged by zero columns share width
buckets; others are grouped by exact width; metrics that cannot be ``vmap``-ped run in a loop.

Reference: Huang et al., "Frustratingly easy transferability estimation", ICML 2022 (TransRate).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Dict, Mapping, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from transrate_jax._src import numerics
from transrate_jax._src import transrate as transrate_lib
from transrate_jax._src import validation

# Default memory bound for one chunk of a stack (see :func:`score_many`).
DEFAULT_MAX_BYTES = 1 << 30
# Default smallest padded width: tiny layers are cheap, padding them up saves compilations.
DEFAULT_MIN_WIDTH = 128


@dataclasses.dataclass(frozen=True)
class Metric:
  """A metric known to :func:`score_many`.

  Attributes:
    name: registry key.
    fn: ``fn(features [n, d], labels, **kwargs) -> score``; the public, validating function.
    vmappable: ``fn`` can be ``jax.vmap``-ped over the features with the labels held fixed
      (concrete) and the keywords unchanged.
    zero_pad_exact: appending zero feature columns leaves the score unchanged, so widths may be
      padded to shared buckets.
    batched: optional ``batched(labels, n, **kwargs) -> run`` factory. It validates the labels and
      keywords once (raising the same errors as ``fn``) and returns ``run(stack [k, n, D],
      dims [k] int32) -> [k, ...]``, the batched score given the true widths ``dims``. Without it,
      ``run`` is ``jax.vmap`` of ``fn``. ``run`` may carry ``run.padded_width(width, padded) ->
      int`` to lower a padded width (TransRate stops below the next row count, see below).
    bytes_per_item: optional ``bytes_per_item(n, width, itemsize) -> int``, the working memory of one
      matrix in a batch (default ``itemsize * (4 n D + 3 min(n, D)^2)``).
  """
  name: str
  fn: Callable[..., Any]
  vmappable: bool = True
  zero_pad_exact: bool = False
  batched: Optional[Callable[..., Callable]] = None
  bytes_per_item: Optional[Callable[[int, int, int], int]] = None


_REGISTRY: Dict[str, Metric] = {}


def register_metric(name: str, fn: Callable[..., Any], *, vmappable: bool = True,
                    zero_pad_exact: bool = False, batched: Optional[Callable] = None,
                    bytes_per_item: Optional[Callable] = None, overwrite: bool = False) -> Metric:
  """Adds a metric to the registry used by :func:`score_many`.

  Args:
    name: the key users pass to ``score_many``.
    fn: ``fn(features [n, d], labels, **kwargs)``: the public, validating function (e.g.
      ``logme(features, targets)``, ``hscore(features, labels)``).
    vmappable: whether ``jax.vmap(lambda f: fn(f, labels, **kwargs))`` works (labels concrete).
      False: the sweep calls ``fn`` once per matrix (still validated up front).
    zero_pad_exact: whether zero feature columns leave the score unchanged (TransRate, H-score
      with a pseudo-inverse, LogME's evidence do not all agree: check before setting it).
    batched: optional factory, see :class:`Metric`.
    bytes_per_item: optional memory estimate, see :class:`Metric`.
    overwrite: replace an existing entry instead of raising.

  Returns:
    The registered :class:`Metric`.

  Raises:
    ValueError: ``name`` is already registered and ``overwrite`` is False.
  """
  if name in _REGISTRY and not overwrite:
    raise ValueError(f"metric {name!r} is already registered; pass overwrite=True to replace it.")
  metric = Metric(name=name, fn=fn, vmappable=vmappable, zero_pad_exact=zero_pad_exact,
                  batched=batched, bytes_per_item=bytes_per_item)
  _REGISTRY[name] = metric
  return metric


def registered_metrics() -> tuple:
  """Names of the registered metrics."""
  return tuple(sorted(_REGISTRY))


def get_metric(metric) -> Metric:
  """The :class:`Metric` for a registered name, a :class:`Metric`, or a plain callable.

  A plain callable is treated as vmappable and not zero-pad exact (grouped by exact width).
  """
  if isinstance(metric, Metric):
    return metric
  if isinstance(metric, str):
    if metric not in _REGISTRY:
      raise ValueError(f"unknown metric {metric!r}; registered: {registered_metrics()}.")
    return _REGISTRY[metric]
  if callable(metric):
    return Metric(name=getattr(metric, "__name__", "metric"), fn=metric)
  raise ValueError(f"metric must be a registered name or a callable; got {metric!r}.")


# ---------------------------------------------------------------------------------------------
# TransRate, batched.

def trace_count() -> int:
  """How many times the TransRate kernel has been traced: one per compiled program (for tests)."""
  return transrate_lib.KERNEL_TRACES[0]


@functools.partial(jax.jit, static_argnames=("config", "num_classes", "eps_vector"))
def _transrate_stack(stack, labels, index_blocks, class_ids, dims, eps, *, config, num_classes,
                     eps_vector):
  """``vmap`` of :func:`transrate_kernel` over ``stack`` [k, n, D] with true widths ``dims`` [k]."""
  def one(features, dim):
    return transrate_lib.transrate_kernel(
        features, labels, index_blocks, class_ids, dim, eps, config=config,
        num_classes=num_classes, eps_vector=eps_vector)

  return jax.vmap(one)(stack, dims)


def _transrate_batched(labels, n, *, eps=1e-4, weighting=None, preset=None, num_classes=None):
  """Factory for the batched TransRate: validates once, plans the class blocks once per width."""
  config = transrate_lib.resolve_config(weighting, preset)
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
      plans[width] = transrate_lib.make_block_plan(host, num_classes, width)
    return plans[width]

  raw_eps = eps
  checked = set()

  def check_dtype(dtype):
    # eps must be a normal number in the dtype the matrices are scored in (1e-50 is 0 in float32).
    if dtype not in checked:
      validation.check_eps(raw_eps, dtype=dtype)
      checked.add(dtype)

  if _one_matrix_per_program():
    def single(f, dim):
      check_dtype(f.dtype)
      index_blocks, class_ids = plan(f.shape[1])
      return transrate_lib.transrate_jit(
          f, y, index_blocks, class_ids, dim, eps, config=config, num_classes=num_classes,
          eps_vector=eps_vector)
    run = _one_at_a_time(single)
  else:
    def run(stack, dims):
      check_dtype(stack.dtype)
      index_blocks, class_ids = plan(stack.shape[-1])
      return _transrate_stack(stack, y, index_blocks, class_ids, dims, eps, config=config,
                              num_classes=num_classes, eps_vector=eps_vector)

  # Row counts of the terms: n (the total) and every class's n_c.
  rows = [int(n)]
  if concrete:
    rows += [int(c) for c in np.bincount(host.astype(np.int64), minlength=num_classes) if c]
  rows = sorted(set(rows))

  def padded_width(width, padded):
    # A term of m rows is on the Gram side iff m <= width (transrate.gram_side, the rank rule).
    # Padding past a row count m > width would move that term to an m x m Gram matrix of rank
    # <= width, whose m - width zero eigenvalues come out as round-off in float32: stop below it.
    above = [m for m in rows if m > width]
    return min(padded, above[0] - 1) if above else padded

  run.padded_width = padded_width
  return run


def _transrate_bytes(n: int, width: int, itemsize: int) -> int:
  # Input, centred copy, gathered class blocks (<= 2x padding), the total term's matrix and the
  # class matrices (sum over classes of min(b_c, D)^2 <= 2 min(n, D)^2).
  return itemsize * (4 * n * width + 3 * min(n, width) ** 2)


register_metric("transrate", transrate_lib.transrate, vmappable=True, zero_pad_exact=True,
                batched=_transrate_batched, bytes_per_item=_transrate_bytes)


# ---------------------------------------------------------------------------------------------
# Validation of one matrix without copying it.


def _check_item(x, name: str, n: Optional[int]):
  """Checks one feature matrix without copying it; returns ``(width, float dtype)``."""
  dtype = validation.check_matrix(x, name=name)
  if n is not None and np.shape(x)[0] != n:
    raise ValueError(f"{name} has {np.shape(x)[0]} rows but the first matrix has {n}: every "
                     "matrix of a sweep must hold the same samples.")
  return np.shape(x)[1], numerics.float_dtype(dtype)


def _items(features):
  """``(keys, arrays, kind)`` for a mapping, a sequence, or a 3-D array of matrices."""
  if isinstance(features, Mapping):
    keys = list(features.keys())
    return keys, [features[k] for k in keys], "dict"
  if isinstance(features, (np.ndarray, jax.Array)) and np.ndim(features) == 3:
    return list(range(features.shape[0])), [features[i] for i in range(features.shape[0])], "seq"
  if isinstance(features, Sequence) and not isinstance(features, (str, bytes)):
    return list(range(len(features))), list(features), "seq"
  raise ValueError("features must be a sequence or a mapping of [n, d] arrays (or one [L, n, d] "
                   f"array); got {type(features).__name__}.")


@functools.partial(jax.jit, static_argnames=("width", "dtype"))
def _pad_device(x, *, width, dtype):
  x = x.astype(dtype)
  return jnp.pad(x, ((0, 0), (0, width - x.shape[1])))


def _stack_chunk(arrays, width, dtype):
  """One chunk ``[k, n, width]``: host arrays padded on the host (and left there: the compiled
  program takes NumPy arguments without an extra eager op to compile), device arrays on the device."""
  if all(isinstance(a, np.ndarray) or not isinstance(a, jax.Array) for a in arrays):
    out = np.zeros((len(arrays), np.shape(arrays[0])[0], width), dtype)
    for i, a in enumerate(arrays):
      a = np.asarray(a)
      out[i, :, :a.shape[1]] = a
    return out
  padded = [a if (isinstance(a, jax.Array) and a.shape[1] == width and a.dtype == dtype)
            else _pad_device(jnp.asarray(a), width=width, dtype=dtype) for a in arrays]
  return jnp.stack(padded)


def _one_matrix_per_program() -> bool:
  """Whether each compiled program may score only one matrix (True on the CPU backend).

  XLA's CPU runtime can deadlock (every thread idle, the result never ready) on a program that
  holds several large batched LAPACK factorisations, as a ``vmap`` over a stack of TransRate
  problems with n >~ 2000 does (jax/jaxlib 0.10.2; the same was seen with LU). On CPU
  each matrix of a stack is therefore scored by its own call of an unbatched program, compiled once
  per padded shape: the same few compilations, no deadlock, and the CPU has no parallel lanes
  for a batch to fill anyway. GPUs and TPUs keep the single batched program.
  """
  return jax.default_backend() == "cpu"


def _one_at_a_time(single):
  """``run(stack, dims)`` from ``single(matrix, dim)``, one call per matrix of the stack."""

  def run(stack, dims):
    # Results come back to the host: indexing them there compiles nothing.
    return np.stack([np.asarray(single(stack[i], dims[i])) for i in range(stack.shape[0])])

  return run


def _progress_bar(total, enabled, desc):
  if not enabled:
    return None
  from tqdm.auto import tqdm  # pylint: disable=g-import-not-at-top
  return tqdm(total=total, desc=desc, unit="chunk")


def score_many(metric, features, labels, *, max_bytes: int = DEFAULT_MAX_BYTES,
               min_width: int = DEFAULT_MIN_WIDTH, progress: bool = True, **kwargs):
  """Scores many feature matrices that share samples and labels, in a few compiled programs.

  Matrices are grouped by float dtype and padded width: for a metric that zero columns leave
  unchanged (TransRate), the width ``d_i`` is padded with zero columns to
  ``D = max(bucket(d_i), min_width)`` (powers of two), so a sweep over any number of widths
  compiles about ``log2(max d / min_width) + 1`` programs; other metrics are grouped by exact
  width. For TransRate, ``D`` also stays below the smallest row count ``m > d_i`` of a term (n or
  a class block size), so no term changes side of Sylvester's identity (``m <= D`` would replace a
  ``d x d`` matrix by an ``m x m`` Gram matrix of rank ``d``, exact in theory but with ``m - d``
  round-off eigenvalues in float32); such widths add at most one program per row count. Each group is stacked, ``[k, n, D]``, and scored by one ``vmap``-ped program with the
  labels shared. Each stack is cut into chunks of ``k_max = max(1, max_bytes // per_matrix)``
  matrices (``per_matrix ~ itemsize * (4 n D + 3 min(n, D)^2)`` bytes for TransRate); the last
  chunk is padded with repeats of a real matrix (results dropped), so all chunks share one shape.

  Args:
    metric: a registered name (``"transrate"``, see :func:`registered_metrics`), a
      :class:`Metric`, or a callable ``fn(features, labels, **kwargs)`` (vmapped, exact widths).
    features: a sequence (list/tuple) or mapping (e.g. ``{"layer3": [n, d3], ...}``) of [n, d_i]
      arrays, NumPy or JAX, all with the same ``n``; or one [L, n, d] array.
    labels: [n] labels (or targets) shared by every matrix.
    max_bytes: bound on the estimated working memory of one chunk (default 1 GiB).
    min_width: smallest padded width for zero-pad-exact metrics (default 128).
    progress: show a progress bar over chunks (``tqdm.auto``).
    **kwargs: keywords of the metric (for TransRate: ``eps``, ``weighting``, ``preset``,
      ``num_classes``), the same for every matrix.

  Returns:
    For a mapping, a dict with the same keys (same order) of 0-d (or [E]) JAX arrays; for a
    sequence or 3-D array, one JAX array [L] (or [L, E]) in input order. Each entry equals the
    metric called on that matrix alone, with the same keywords.

  Raises:
    ValueError: the metric's own errors (naming the offending key, e.g. ``features['fc']``),
      matrices with different numbers of rows, an empty input, or a bad ``max_bytes``.
  """
  spec = get_metric(metric)
  keys, arrays, kind = _items(features)
  if not arrays:
    raise ValueError("features is empty: pass at least one [n, d] array.")
  if not isinstance(max_bytes, (int, np.integer)) or max_bytes < 1:
    raise ValueError(f"max_bytes must be a positive int; got {max_bytes!r}.")
  n = None
  widths, dtypes = [], []
  for key, x in zip(keys, arrays):
    width, dtype = _check_item(x, f"features[{key!r}]", n)
    n = np.shape(x)[0]
    widths.append(width)
    dtypes.append(dtype)

  results: list = [None] * len(arrays)
  if spec.batched is not None:
    run = spec.batched(labels, n, **kwargs)
  elif spec.vmappable and not _one_matrix_per_program():
    def run(stack, dims):
      del dims
      return jax.vmap(lambda f: spec.fn(f, labels, **kwargs))(stack)
  else:
    run = None

  cap = getattr(run, "padded_width", None)
  groups: Dict[tuple, list] = {}
  for i, (width, dtype) in enumerate(zip(widths, dtypes)):
    padded = width
    if spec.zero_pad_exact:
      padded = max(numerics.bucket(width), numerics.bucket(min_width))
      padded = cap(width, padded) if cap is not None else padded
    groups.setdefault((np.dtype(dtype).str, padded), []).append(i)

  plan = []  # (group key, list of index lists)
  for (dtype_str, width), members in groups.items():
    dtype = np.dtype(dtype_str)
    if run is None:
      plan.append(((dtype, width), [[i] for i in members], 1))
      continue
    estimate = (spec.bytes_per_item or _transrate_bytes)(n, width, dtype.itemsize)
    size = int(min(len(members), max(1, max_bytes // max(estimate, 1))))
    if _one_matrix_per_program():
      size = 1  # see _one_matrix_per_program: the chunk is scored one matrix per call anyway
    chunks = [members[s:s + size] for s in range(0, len(members), size)]
    plan.append(((dtype, width), chunks, size))

  bar = _progress_bar(sum(len(c) for _, c, _ in plan), progress, f"score_many({spec.name})")
  def collect(item):
    idx, out = item
    host = np.asarray(out)
    for j, i in enumerate(idx):
      results[i] = host[j]
    if bar is not None:
      bar.update(1)

  try:
    for (dtype, width), chunks, size in plan:
      for idx in chunks:
        if run is None:
          out = jnp.stack([jnp.asarray(spec.fn(arrays[i], labels, **kwargs)) for i in idx])
        else:
          members = [arrays[i] for i in idx] + [arrays[idx[0]]] * (size - len(idx))
          dims = np.asarray([widths[i] for i in idx] + [widths[idx[0]]] * (size - len(idx)),
                            np.int32)
          out = run(_stack_chunk(members, width, dtype), dims)
        collect((idx, out))
  finally:
    if bar is not None:
      bar.close()

  if kind == "dict":
    return {k: jax.device_put(results[i]) for i, k in enumerate(keys)}
  common = np.result_type(*[np.asarray(r).dtype for r in results])
  return jax.device_put(np.stack([np.asarray(r, common) for r in results]))


def transrate_many(features, labels, *, eps=1e-4, weighting: Optional[str] = None,
                   preset: Optional[str] = None, num_classes: Optional[int] = None,
                   max_bytes: int = DEFAULT_MAX_BYTES, min_width: int = DEFAULT_MIN_WIDTH,
                   progress: bool = True):
  r"""TransRate of many feature matrices (layers, or models) on one labelled sample, batched.

  Each entry equals :func:`transrate_jax.transrate` on that matrix with the same keywords:

  .. math:: \mathrm{TrR}(F_i) = R(Z_i) - \sum_c w_c R(Z_{i,c}), \qquad Z_i = F_i - \bar F_i

  Widths are zero-padded to power-of-two buckets (at least ``min_width``), which is exact (zero
  columns add eigenvalues 0, ``log 1 = 0``; the true width is kept for the official rank rule),
  so a sweep over many widths compiles one program per bucket; each bucket's stack is scored by
  one ``vmap``-ped program in chunks bounded by ``max_bytes``. See :func:`score_many`.

  Args:
    features: a list/tuple or dict of [n, d_i] arrays (same n), or one [L, n, d] array.
    labels: [n] integer labels shared by all matrices.
    eps, weighting, preset, num_classes: as in :func:`transrate_jax.transrate`.
    max_bytes: bound on the estimated working memory of one chunk (default 1 GiB).
    min_width: smallest padded width (default 128).
    progress: progress bar over chunks.

  Returns:
    dict input: a dict of 0-d (or [E]) JAX arrays with the same keys; sequence input: a JAX array
    [L] (or [L, E]).

  Example:
    >>> import numpy as np, transrate_jax as tj
    >>> rng = np.random.default_rng(0)
    >>> y = rng.integers(0, 3, 200)
    >>> layers = {"a": rng.normal(size=(200, 8)), "b": rng.normal(size=(200, 40)) + np.eye(40)[y]}
    >>> s = tj.transrate_many(layers, y, progress=False)
    >>> bool(s["b"] > s["a"])
    True

  Reference: Huang et al., "Frustratingly easy transferability estimation", ICML 2022.
  """
  return score_many("transrate", features, labels, eps=eps, weighting=weighting, preset=preset,
                    num_classes=num_classes, max_bytes=max_bytes, min_width=min_width,
                    progress=progress)
