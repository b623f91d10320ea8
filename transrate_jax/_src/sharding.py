"""TransRate with the samples sharded over many devices (a ``jax.sharding.Mesh``).

Each device computes the per-class statistics of its rows (counts ``n_c``, sums, second moments
``S_c``, docs/numerics.md "Streaming and sharding"); ``psum`` adds them across the mesh inside
``jax.shard_map``, and the score is finalised from the sums, which is exact: the same score as one
device. The global mean is ``psum``-ed first and rows are centred before the second moments are
formed (a shift: no float32 cancellation; the finalisation re-centres at the small residual mean).
Sample counts that do not divide the device count are handled by padding rows with a mask of zero
and passing the true counts. As in streaming, only ``d x d`` statistics exist: a class with
``n_c <= d`` is taken from its eigenvalues with the rank bound ``min(n_c, d)``, full-rank terms by
Cholesky (never LU, which can deadlock on the CPU under ``shard_map``).

Reference: Huang et al., "Frustratingly easy transferability estimation", ICML 2022.
"""

from __future__ import annotations

import functools
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from transrate_jax._src import streaming
from transrate_jax._src.transrate import kernel
from transrate_jax._src import validation


def default_mesh(axis_name: str = "data") -> jax.sharding.Mesh:
  """A 1-D mesh over every device, with ``AxisType.Auto`` (not the new explicit default)."""
  return jax.make_mesh((jax.device_count(),), (axis_name,),
                       axis_types=(jax.sharding.AxisType.Auto,))


@functools.lru_cache(maxsize=None)
def _sharded_fn(mesh, axis, config, num_classes, tile, eps_vector, process_local=False):
  """The jit-compiled, shard_mapped score for one (mesh, config, shape class)."""

  def masked_mean(x, mask, cnt):
    return jax.lax.psum(jnp.sum(jnp.where(mask[:, None], x, 0.0), axis=0), axis) / cnt

  def local(f, y, mask):
    cnt = jax.lax.psum(jnp.sum(mask.astype(f.dtype)), axis)
    mean = masked_mean(f, mask, cnt)  # pass 1: the shift
    if config.normalize:
      # normalize(normalize(f) - mean of the normalised rows), in shifted form around `mean`.
      u = kernel.normalized_offsets(f, mean)
      z = streaming.normalize_rows(u - masked_mean(u, mask, cnt))
    else:
      z = f - mean
    counts, sums, second = streaming.class_moments(z, y, mask, num_classes=num_classes, tile=tile,
                                                         axis_names=(axis,))
    return (jax.lax.psum(counts, axis), jax.lax.psum(sums, axis), jax.lax.psum(second, axis))

  stats_fn = jax.shard_map(local, mesh=mesh, in_specs=(P(axis), P(axis), P(axis)),
                           out_specs=(P(), P(), P()))

  stats_jit = jax.jit(stats_fn)

  def score(f, y, mask, eps):
    # The reduced statistics are replicated on every device; the scoring (one batched
    # eigendecomposition) runs on ONE device. Left inside the sharded program, every device would
    # run its own LAPACK call, and XLA's CPU runtime hangs on that with forced host devices
    # (jaxlib 0.10.2). On a GPU/TPU mesh it is one small d x d program either way.
    counts, sums, second = (streaming.first_shard(a) for a in stats_jit(f, y, mask))
    # Rows are already centred (and, for the official preset, normalised after centring): the
    # plain preset re-centres at the (tiny) residual mean, the official one must not.
    out = _score_jit(counts, sums, second, eps, config=config, centre=not config.normalize,
                     eps_vector=eps_vector)
    if process_local:  # every process holds the same value; a global array would need all hosts
      return out
    return jax.device_put(out, NamedSharding(mesh, P()))  # replicated over the mesh, as before

  return score


@functools.partial(jax.jit, static_argnames=("config", "centre", "eps_vector"))
def _score_jit(counts, sums, second, eps, *, config, centre, eps_vector):
  shift = jnp.zeros(sums.shape[-1:], sums.dtype)
  return streaming.score_from_moments(counts, sums, second, shift, eps, config=config,
                                      centre=centre, eps_vector=eps_vector)


def transrate_sharded(features, labels, *, mesh: Optional[jax.sharding.Mesh] = None,
                      axis_name: Optional[str] = None, eps=1e-4, weighting: Optional[str] = None,
                      preset: Optional[str] = None, num_classes: Optional[int] = None,
                      process_local: bool = False) -> jax.Array:
  r"""TransRate with the sample axis sharded over a device mesh; the same score as one device.

  Each device forms the class statistics of its rows; ``psum`` inside ``jax.shard_map`` adds them:

  .. math:: Z^\top Z = \sum_c S_c, \qquad Z_c^\top Z_c = S_c = \sum_{i \in c} z_i z_i^\top,
            \quad z_i = f_i - \mu, \; \mu = \mathrm{psum}(\textstyle\sum f_i) / n.

  Every device holds ``C x d x d`` class statistics (psum-ed), so this suits ``C d^2`` that fits
  one device; the samples can be as many as the mesh holds. All presets are supported (the
  official one normalises rows after the psum-ed mean, in the same pass).

  Args:
    features: [n, d] float array (NumPy, or a JAX array, possibly already sharded).
    labels: [n] integer labels.
    mesh: a ``jax.sharding.Mesh``; default a 1-D mesh over all devices (``AxisType.Auto``).
    axis_name: the mesh axis to shard samples over (default: the mesh's first axis).
    eps, weighting, preset, num_classes: as in :func:`transrate_jax.transrate`.
    process_local: many processes (``jax.distributed.initialize``: a TPU pod slice, several GPU
      hosts): ``features`` [n_p, d] and ``labels`` [n_p] are THIS process's rows, which may differ
      in number between processes, and every process calls the function with its own rows (and
      the same keywords). The mesh spans every process's devices (the default mesh does). Each
      process's rows are validated where they are; the row counts and, without ``num_classes``,
      the largest label are exchanged with a small all-gather.

  Returns:
    A replicated scalar (or [E] for a vector ``eps``); with ``process_local``, the same value on
    every process, as an array on this process's first device.

  Raises:
    ValueError: the errors of :func:`transrate_jax.transrate`, an unknown ``axis_name``, or a
      score that is not finite for finite (concrete) features: in float32 a feature scale whose
      products overflow (``n max|f|^2`` or ``max|f|^2 / eps`` beyond 3.4e38, e.g. ``|f| ~ 1e18``);
      rescale or L2-normalise the features, or pass float64 (``transrate`` rescues such calls in
      float64, this sharded path does not).

  Example:
    >>> import numpy as np, transrate_jax as tj
    >>> rng = np.random.default_rng(0)
    >>> y = rng.integers(0, 3, 301); f = rng.normal(size=(301, 8)) + np.eye(8)[y]
    >>> bool(np.isclose(tj.transrate_sharded(f, y), tj.transrate(f, y), rtol=1e-4))
    True

  Reference: Huang et al., "Frustratingly easy transferability estimation", ICML 2022.
  """
  config = kernel.resolve_config(weighting, preset)
  mesh = default_mesh() if mesh is None else mesh
  axis = mesh.axis_names[0] if axis_name is None else axis_name
  if axis not in mesh.axis_names:
    raise ValueError(f"axis_name {axis!r} is not an axis of the mesh {mesh.axis_names}.")
  if process_local:
    return _transrate_process_local(features, labels, mesh, axis, config, eps, num_classes)
  f = validation.check_features(features)
  y, num_classes = validation.check_labels(labels, f.shape[0], num_classes=num_classes)
  eps, eps_vector = validation.check_eps(eps, dtype=f.dtype)
  devices = mesh.shape[axis]
  n_pad = -(-f.shape[0] // devices) * devices  # a multiple of the device count
  f, y, mask = _pad_rows(f, y, n_pad)
  rows = NamedSharding(mesh, P(axis))
  f = jax.device_put(f, NamedSharding(mesh, P(axis, None)))
  y = jax.device_put(y, rows)
  mask = jax.device_put(mask, rows)
  tile = streaming._tile_size(n_pad // devices, num_classes)  # pylint: disable=protected-access
  fn = _sharded_fn(mesh, axis, config, num_classes, tile, eps_vector)
  return validation.check_finite_result(fn(f, y, mask, eps), metric="TransRate",
                                        features=features, eps=eps)


def _pad_rows(f, y, rows: int):
  """``f`` [n, d] and ``y`` [n] padded with zero rows to ``rows``, and the mask of the real rows."""
  n = f.shape[0]
  if rows != n:
    f = jnp.pad(f, ((0, rows - n), (0, 0)))
    y = jnp.pad(y, (0, rows - n))
  return f, y, np.arange(rows) < n


def _transrate_process_local(features, labels, mesh, axis, config, eps, num_classes):
  """:func:`transrate_sharded` with each process holding its own rows (``process_local``)."""
  f = validation.check_features(features, min_samples=1)
  y, local_classes = validation.check_labels(labels, f.shape[0], num_classes=num_classes)
  if num_classes is None:  # every process must agree on C: the largest label anywhere
    num_classes = int(np.max(streaming.process_allgather(np.asarray([local_classes], np.int64))))
    y, _ = validation.check_labels(labels, f.shape[0], num_classes=num_classes)
  eps, eps_vector = validation.check_eps(eps, dtype=f.dtype)
  local_devices = sum(1 for d in mesh.devices.flat if d.process_index == jax.process_index())
  if local_devices == 0:
    raise ValueError("process_local: the mesh holds none of this process's devices.")
  counts = streaming.process_allgather(np.asarray([f.shape[0]], np.int64)).reshape(-1)
  # Every process contributes the same number of rows, a multiple of its device count; the mask
  # drops the padding (processes may hold different numbers of real rows).
  per = -(-int(counts.max()) // local_devices) * local_devices
  f, y, mask = _pad_rows(f, y, per)
  rows = NamedSharding(mesh, P(axis))
  total = per * jax.process_count()
  f = jax.make_array_from_process_local_data(NamedSharding(mesh, P(axis, None)), np.asarray(f),
                                             (total, f.shape[1]))
  y = jax.make_array_from_process_local_data(rows, np.asarray(y), (total,))
  mask = jax.make_array_from_process_local_data(rows, mask, (total,))
  tile = streaming._tile_size(per // local_devices, num_classes)  # pylint: disable=protected-access
  fn = _sharded_fn(mesh, axis, config, num_classes, tile, eps_vector, True)
  return validation.check_finite_result(fn(f, y, mask, eps), metric="TransRate",
                                        features=features, eps=eps)
