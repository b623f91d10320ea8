"""Streaming TransRate (TransRateStats, transrate_from_batches) equals the in-memory score."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

import reference
from transrate_jax._src import streaming
from transrate_jax._src.transrate import transrate


def _data(n=150, d=10, c=4, seed=0, offset=0.0):
  rng = np.random.default_rng(seed)
  y = rng.integers(0, c, n)
  f = rng.normal(size=(n, d)) + 2.0 * np.eye(d)[y % d] + offset
  return f, y


def _chunks(f, y, cuts):
  edges = [0] + sorted(cuts) + [len(y)]
  return [(f[a:b], y[a:b]) for a, b in zip(edges[:-1], edges[1:]) if b > a]


@pytest.mark.parametrize("preset", [None, "tllib", "official"])
@pytest.mark.branch_free
def test_random_chunkings_equal_in_memory(preset):
  f, y = _data()
  want = reference.transrate(f, y, preset=preset)
  rng = np.random.default_rng(1)
  for _ in range(3):
    cuts = list(rng.choice(np.arange(1, len(y)), size=rng.integers(1, 6), replace=False))
    got = streaming.transrate_from_batches(_chunks(f, y, cuts), preset=preset, progress=False)
    np.testing.assert_allclose(float(got), want, rtol=1e-10)


@pytest.mark.parametrize("preset", [None, "official"])
@pytest.mark.branch_free
def test_ragged_last_chunk_reuses_the_stream_program(preset):
  """Chunks of 96 rows and a last one of 5: one compiled update for the stream (the last chunk
  is padded to the stream's size, masked out), and the same score as in memory."""
  f, y = _data(n=197, d=13 if preset is None else 14, c=5, seed=3)  # shapes of its own
  before = streaming._update_donated._cache_size()  # pylint: disable=protected-access
  got = streaming.transrate_from_batches(_chunks(f, y, [96, 192]), preset=preset,
                                         progress=False)
  assert streaming._update_donated._cache_size() - before <= 1  # pylint: disable=protected-access
  np.testing.assert_allclose(float(got), reference.transrate(f, y, preset=preset), rtol=1e-10)


@pytest.mark.branch_free
def test_chunks_of_one_sample_and_growing_classes():
  f, y = _data(n=40, d=6, c=3, seed=2)
  order = np.argsort(y, kind="stable")  # class 2 first appears late: the statistics grow
  f, y = f[order], y[order]
  got = streaming.transrate_from_batches(
      [(f[i:i + 1], y[i:i + 1]) for i in range(len(y))], weighting="uniform", progress=True)
  np.testing.assert_allclose(float(got), reference.transrate(f, y, weighting="uniform"),
                             rtol=1e-10)


@pytest.mark.branch_free
def test_merge_order_and_update():
  f, y = _data(n=120, d=8, c=3, seed=3)
  parts = _chunks(f, y, [17, 60, 61, 100])
  empty = streaming.TransRateStats.init(8, num_classes=3, dtype=jnp.float64)
  stats = [empty.update(a, b) for a, b in parts]
  forward = stats[0]
  for s in stats[1:]:
    forward = forward.merge(s)
  backward = stats[-1]
  for s in stats[-2::-1]:
    backward = s.merge(backward)
  tree = stats[0].merge(stats[1]).merge(stats[2].merge(stats[3].merge(stats[4])))
  want = reference.transrate(f, y)
  for merged in (forward, backward, tree, empty.merge(forward), forward.merge(empty)):
    assert int(merged.n) == len(y)
    np.testing.assert_array_equal(np.asarray(merged.counts), np.bincount(y, minlength=3))
    np.testing.assert_allclose(float(merged.finalize()), want, rtol=1e-10)
  # eps vector and the tllib preset from the same statistics.
  eps = np.array([1e-4, 1e-2])
  np.testing.assert_allclose(np.asarray(forward.finalize(eps=eps, preset="tllib")),
                             [reference.transrate(f, y, eps=e, preset="tllib") for e in eps],
                             rtol=1e-10)
  # A masked row is ignored.
  masked = empty.update(f[:10], y[:10], mask=np.arange(10) < 9).merge(empty.update(f[9:], y[9:]))
  np.testing.assert_allclose(float(masked.finalize()), want, rtol=1e-10)


def test_float32_large_offset():
  # Features 1e4 + O(1): summing raw float32 second moments would cancel catastrophically; the
  # shift (first chunk's mean) keeps the streamed score at float32 accuracy.
  f, y = _data(n=400, d=12, c=4, seed=4)
  want = reference.transrate(f, y)  # centring removes the offset exactly
  f32 = (f + 1e4).astype(np.float32)
  got = streaming.transrate_from_batches(_chunks(f32, y, [50, 123, 300]), progress=False)
  assert got.dtype == jnp.float32
  np.testing.assert_allclose(float(got), want, rtol=1e-3)
  in_memory = float(transrate(f32, y))
  np.testing.assert_allclose(float(got), in_memory, rtol=1e-3)


@pytest.mark.branch_free
def test_errors():
  f, y = _data(n=30, d=4, c=3, seed=5)
  stats = streaming.TransRateStats.init(4, num_classes=3, dtype=jnp.float64).update(f, y)
  with pytest.raises(ValueError, match="second pass"):
    stats.finalize(preset="official")
  with pytest.raises(ValueError, match="re-iterable"):
    streaming.transrate_from_batches(iter([(f, y)]), preset="official", progress=False)
  with pytest.raises(ValueError, match="columns"):
    stats.update(f[:, :3], y)
  with pytest.raises(ValueError, match="num_classes"):
    stats.update(f, y + 1)
  with pytest.raises(ValueError, match="empty"):
    streaming.transrate_from_batches([], progress=False)
  with pytest.raises(ValueError, match="NaN"):
    streaming.transrate_from_batches([(np.full((3, 4), np.nan), y[:3])], progress=False)
  # A callable returning a fresh iterable serves both passes of the official preset.
  got = streaming.transrate_from_batches(lambda: iter(_chunks(f, y, [7, 20])), preset="official",
                                         progress=False)
  np.testing.assert_allclose(float(got), reference.transrate(f, y, preset="official"), rtol=1e-10)


@pytest.mark.branch_free
def test_merge_across_processes_is_a_no_op_in_one_process():
  # Many processes: tests/test_multiprocess.py. One process: the same statistics and scores.
  f, y = _data()
  stats = streaming.TransRateStats.init(10, num_classes=4, dtype=jnp.float64).update(f, y)
  assert stats.merge_across_processes() is stats
  chunks = _chunks(f, y, [31, 90])
  for preset in (None, "official"):
    np.testing.assert_array_equal(
        np.asarray(streaming.transrate_from_batches(chunks, preset=preset, progress=False,
                                                    process_local=True)),
        np.asarray(streaming.transrate_from_batches(chunks, preset=preset, progress=False)))
  with pytest.raises(ValueError, match="empty"):
    streaming.transrate_from_batches([], progress=False, process_local=True)
