"""Sweeps: score many feature matrices (layers of one model, or many models) in a few compiled calls.

Every feature matrix ``F_i`` ([n, d_i]) shares the samples and the labels. Widths are zero-padded
to a power-of-two bucket: appending zero columns leaves every TransRate term unchanged (they add
eigenvalues 0 and ``log 1 = 0``), and the true width is passed on for the official preset's rank
rule. Matrices of one bucket are stacked to ``[k, n, D]`` and the kernel is ``vmap``-ped over the
stack with the labels and the class index blocks shared (``in_axes=None``), so a sweep over many
widths compiles one program per bucket. Memory is bounded by cutting each stack into chunks of a
fixed size derived from ``max_bytes`` (the last chunk is padded with repeats of a real matrix, whose
results are dropped, so every chunk of a bucket has one shape).

The machinery is generic: :func:`score_many` takes the name of a registered metric (or a callable;
see ``registry.py``). Metrics whose value is unchanged by zero columns share width
buckets; others are grouped by exact width; metrics that cannot be ``vmap``-ped run in a loop.

Reference: Huang et al., "Frustratingly easy transferability estimation", ICML 2022 (TransRate).
"""

from __future__ import annotations

from typing import Dict, Mapping, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from transrate_jax._src import backend
from transrate_jax._src import numerics
from transrate_jax._src import progress as progress_lib
from transrate_jax._src import registry
from transrate_jax._src import validation

# Default memory bound for one chunk of a stack (see :func:`score_many`).
DEFAULT_MAX_BYTES = 1 << 30
# Default smallest padded width: tiny layers are cheap, padding them up saves compilations.
DEFAULT_MIN_WIDTH = 128


# ---------------------------------------------------------------------------------------------
# Validation of one matrix without copying it.


def _check_item(x, name: str, n: Optional[int]):
  """Checks one feature matrix without copying it; returns ``(width, float dtype)``."""
  dtype = validation.check_matrix(x, name=name)
  if n is not None and np.shape(x)[0] != n:
    raise ValueError(f"{name} has {np.shape(x)[0]} rows but the first matrix has {n}: every "
                     "matrix of a sweep must hold the same samples.")
  return np.shape(x)[1], numerics.float_dtype(dtype)


def _items(features, stacked_ndim: int = 3):
  """``(keys, arrays, kind)`` for a mapping, a sequence, or one stacked array of the inputs
  (``stacked_ndim``: 3 for [L, n, d] matrices, 2 for [L, n] source labels)."""
  if isinstance(features, Mapping):
    keys = list(features.keys())
    return keys, [features[k] for k in keys], "dict"
  if isinstance(features, (np.ndarray, jax.Array)) and np.ndim(features) == stacked_ndim:
    return list(range(features.shape[0])), [features[i] for i in range(features.shape[0])], "seq"
  if isinstance(features, Sequence) and not isinstance(features, (str, bytes)):
    return list(range(len(features))), list(features), "seq"
  raise ValueError("features must be a sequence or a mapping of [n, d] arrays (or one [L, n, d] "
                   f"array); got {type(features).__name__}.")


def _stack_chunk(arrays, width, dtype):
  """One chunk ``[k, n, width]``: host arrays padded on the host (and left there: the compiled
  program takes NumPy arguments without an extra eager op to compile), device arrays on the device."""
  if all(isinstance(a, np.ndarray) or not isinstance(a, jax.Array) for a in arrays):
    out = np.zeros((len(arrays), np.shape(arrays[0])[0], width), dtype)
    for i, a in enumerate(arrays):
      a = np.asarray(a)
      out[i, :, :a.shape[1]] = a
    return out
  return jnp.stack([numerics.pad_columns(jnp.asarray(a), width, dtype) for a in arrays])


def default_bytes_per_item(n: int, width: int, itemsize: int) -> int:
  """Working memory of one [n, width] input in a batch: the input, a centred copy, gathered class
  blocks (<= 2x padding), the total term's matrix and the class matrices (sum over classes of
  ``min(b_c, D)^2 <= 2 min(n, D)^2``): TransRate's, and a safe bound for the other metrics."""
  return itemsize * (4 * n * width + 3 * min(n, width) ** 2)


def score_many(metric, features, labels, /, *, num_classes: Optional[int] = None,
               max_bytes: int = DEFAULT_MAX_BYTES, min_width: int = DEFAULT_MIN_WIDTH,
               progress: Optional[bool] = None, **options):
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

  A metric that consumes source labels (NCE: ``[n]`` integer predictions, not matrices) is
  called once per entry.

  Args:
    metric: a registered name (``"transrate"``, see :func:`registered_metrics`), a
      :class:`Metric`, or a callable ``fn(features, labels, **options)`` (vmapped, exact widths).
    features: a sequence (list/tuple) or mapping (e.g. ``{"layer3": [n, d3], ...}``) of [n, d_i]
      arrays, NumPy or JAX, all with the same ``n``; or one [L, n, d] array.
    labels: [n] labels (or targets) shared by every matrix.
    num_classes: C as a static Python int, passed to the metric (default: read from the labels).
    max_bytes: bound on the estimated working memory of one chunk (default 1 GiB).
    min_width: smallest padded width for zero-pad-exact metrics (default 128).
    progress: a progress bar over chunks: True, False, or None (default: only for long
      interactive work).
    **options: the metric's own options (for TransRate: ``eps``, ``weighting``, ``preset``; see
      ``get_metric(name).options``), the same for every matrix; an option the metric does not
      have raises a ValueError naming the metric. ``metric``, ``features`` and ``labels`` are
      positional-only, so an option may share their names (k-NN's ``metric="euclidean"``).

  Returns:
    For a mapping, a dict with the same keys (same order) of 0-d (or [E]) JAX arrays; for a
    sequence or 3-D array, one JAX array [L] (or [L, E]) in input order. Each entry equals the
    metric called on that matrix alone, with the same keywords.

  Raises:
    ValueError: the metric's own errors (naming the offending key, e.g. ``features['fc']``),
      matrices with different numbers of rows, an empty input, or a bad ``max_bytes``.
  """
  spec = registry.get_metric(metric)
  kwargs = spec.check_options(options)
  if num_classes is not None:
    kwargs["num_classes"] = num_classes
  backend.relieve_mapping_pressure()  # a long session of sweeps must not die at the kernel's cap
  keys, arrays, kind = _items(features, 2 if spec.consumes == "source_labels" else 3)
  if not arrays:
    raise ValueError("features is empty: pass at least one [n, d] array.")
  validation.check_positive_int(max_bytes, "max_bytes")
  if spec.consumes == "source_labels":
    bar = progress_lib.bar(len(arrays), progress, f"score_many({spec.name})")
    results = []
    try:
      for a in arrays:
        results.append(np.asarray(spec.fn(a, labels, **kwargs)))
        if bar is not None:
          bar.update(1)
    finally:
      if bar is not None:
        bar.close()
    return _collect(keys, kind, results)
  n = None
  widths, dtypes = [], []
  for key, x in zip(keys, arrays):
    width, dtype = _check_item(x, f"features[{key!r}]", n)
    n = np.shape(x)[0]
    widths.append(width)
    dtypes.append(dtype)

  results: list = [None] * len(arrays)
  if spec.batched is not None:
    runner = spec.batched(labels, n, **kwargs)
  elif spec.vmappable and not numerics.one_matrix_per_program():
    def vmapped(stack, dims):
      del dims
      return jax.vmap(lambda f: spec.fn(f, labels, **kwargs))(stack)
    runner = registry.BatchedRunner(stack=vmapped)
  else:
    runner = None
  run = runner.stack if runner is not None else None
  cap = runner.padded_width if runner is not None else None
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
    estimate = (spec.bytes_per_item or default_bytes_per_item)(n, width, dtype.itemsize)
    size = int(min(len(members), max(1, max_bytes // max(estimate, 1))))
    if numerics.one_matrix_per_program():
      size = 1  # see numerics.one_matrix_per_program: one matrix per call anyway
    chunks = [members[s:s + size] for s in range(0, len(members), size)]
    plan.append(((dtype, width), chunks, size))

  bar = progress_lib.bar(sum(len(c) for _, c, _ in plan), progress, f"score_many({spec.name})",
                         unit="chunk")
  def collect(item):
    idx, out = item
    host = np.asarray(out)
    for j, i in enumerate(idx):
      results[i] = host[j]
    if bar is not None:
      bar.update(1)

  one = runner.one if runner is not None else None  # one unpadded matrix per call (CPU)
  try:
    for (dtype, width), chunks, size in plan:
      for idx in chunks:
        if run is None:
          out = jnp.stack([jnp.asarray(spec.fn(arrays[i], labels, **kwargs)) for i in idx])
        elif one is not None:
          out = np.stack([np.asarray(one(arrays[i], width, widths[i])) for i in idx])
        else:
          members = [arrays[i] for i in idx] + [arrays[idx[0]]] * (size - len(idx))
          dims = np.asarray([widths[i] for i in idx] + [widths[idx[0]]] * (size - len(idx)),
                            np.int32)
          out = run(_stack_chunk(members, width, dtype), dims)
        collect((idx, out))
  finally:
    if bar is not None:
      bar.close()

  return _collect(keys, kind, results)


def _collect(keys, kind, results):
  """Per-entry results as a dict of 0-d arrays (mapping input) or one stacked array."""
  if kind == "dict":
    return {k: jax.device_put(results[i]) for i, k in enumerate(keys)}
  common = np.result_type(*[np.asarray(r).dtype for r in results])
  return jax.device_put(np.stack([np.asarray(r, common) for r in results]))


def transrate_many(features, labels, *, eps=1e-4, weighting: Optional[str] = None,
                   preset: Optional[str] = None, num_classes: Optional[int] = None,
                   max_bytes: int = DEFAULT_MAX_BYTES, min_width: int = DEFAULT_MIN_WIDTH,
                   progress: Optional[bool] = None):
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
    progress: a progress bar over chunks (True, False, or None: only for long interactive work).

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
