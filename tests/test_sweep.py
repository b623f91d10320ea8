"""transrate_many / score_many: batched sweeps equal per-matrix transrate, with few compilations."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import reference
from transrate_jax._src import backend
from transrate_jax._src import numerics
from transrate_jax._src import registry
from transrate_jax._src import sweep
from transrate_jax._src.transrate import kernel as transrate_kernel
from transrate_jax._src.transrate import transrate

_RTOL = {np.float64: 1e-10, np.float32: 1e-4}
_ATOL = {np.float64: 1e-12, np.float32: 1e-4}


def _layers(widths, n, num_classes, seed, dtype=np.float64):
  rng = np.random.default_rng(seed)
  y = rng.integers(0, num_classes, n)
  feats = []
  for d in widths:
    f = rng.normal(size=(n, d)) + 1.5 * np.eye(d)[y % d] * rng.uniform(0.5, 2.0)
    feats.append(f.astype(dtype))
  return feats, y


@pytest.mark.parametrize("preset,dtype", [
    (None, np.float64), ("tllib", np.float64), ("official", np.float64),
    (None, np.float32)])
def test_many_equals_transrate_ragged(preset, dtype):
  # Widths from 3 to 2048 in two buckets (256, 2048); n = 96 is below some widths (Gram side)
  # and above others.
  widths = [3, 40, 200, 2048]
  feats, y = _layers(widths, 96, 5, seed=1, dtype=dtype)
  got = sweep.transrate_many(feats, y, preset=preset, min_width=256, progress=False)
  assert isinstance(got, jax.Array) and got.shape == (len(widths),)
  assert got.dtype == jnp.dtype(dtype)
  if dtype == np.float64:  # the float64 oracle on the small widths, transrate on the widest
    want = [reference.transrate(f, y, preset=preset) for f in feats[:-1]]
    want.append(float(transrate(feats[-1], y, preset=preset)))
  else:
    want = [float(transrate(f, y, preset=preset)) for f in feats]
  # float32: padding can move a term to the other side of Sylvester's identity (e.g. d = 3 to a
  # 96 x 96 Gram matrix), which changes round-off by ~1e-5 nats.
  np.testing.assert_allclose(np.asarray(got), want, rtol=_RTOL[dtype], atol=_ATOL[dtype])


@pytest.mark.parametrize("max_bytes", [1, 300_000, 1 << 30])
def test_dict_input_and_chunking(max_bytes):
  # max_bytes = 1: chunks of one; 300 kB: chunks of 2 with a padded last chunk; 1 GiB: one chunk.
  widths = [5, 9, 20, 33, 60]
  feats, y = _layers(widths, 80, 4, seed=2)
  layers = {f"block{i}": f for i, f in enumerate(feats)}
  got = sweep.transrate_many(layers, y, weighting="uniform", max_bytes=max_bytes, progress=False)
  assert list(got) == list(layers)
  for key, f in layers.items():
    assert got[key].shape == ()
    np.testing.assert_allclose(float(got[key]), reference.transrate(f, y, weighting="uniform"),
                               rtol=1e-10)


def test_chunk_sizes_follow_max_bytes(monkeypatch):
  # The batched (GPU/TPU) path, forced on the CPU at a size where it is safe; on the CPU backend
  # the sweep otherwise scores one matrix per call (numerics.one_matrix_per_program).
  monkeypatch.setattr(numerics, "one_matrix_per_program", lambda: False)
  calls = []
  real = sweep._stack_chunk

  def spy(arrays, width, dtype):
    calls.append((len(arrays), width))
    return real(arrays, width, dtype)

  monkeypatch.setattr(sweep, "_stack_chunk", spy)
  feats, y = _layers([90, 95, 100, 110, 120], 80, 4, seed=2)  # all padded to 128
  per_item = sweep.default_bytes_per_item(80, 128, 8)
  sweep.transrate_many(feats, y, max_bytes=2 * per_item, progress=False)
  assert calls == [(2, 128)] * 3  # 5 matrices, chunks of 2, the last padded to 2


def test_eps_vector_tuple_and_3d_and_jax_inputs():
  feats, y = _layers([7, 7, 7], 60, 3, seed=4)
  eps = np.array([1e-4, 1e-2])
  got = sweep.transrate_many(tuple(jnp.asarray(f) for f in feats), y, eps=eps, progress=False)
  assert got.shape == (3, 2)
  want = np.stack([np.asarray(transrate(f, y, eps=eps)) for f in feats])
  np.testing.assert_allclose(np.asarray(got), want, rtol=1e-10)
  got3 = sweep.transrate_many(np.stack(feats), y, progress=False)
  np.testing.assert_allclose(np.asarray(got3), want[:, 0], rtol=1e-10)


@pytest.mark.parametrize("host", [False, True])
def test_compile_count_within_buckets(monkeypatch, host):
  # 16 distinct widths spanning 5 buckets (128 .. 2048): one compiled program per bucket. (Widths
  # below n = 64 or a class block size would add at most one program per such row count.) With
  # the products on the host (eager CPU calls), the program only sees the moments: here n = 64 <=
  # every width, so every term is on the Gram side and all widths share one program.
  monkeypatch.setenv(transrate_kernel.HOST_PRODUCTS_ENV, "" if host else "0")
  # From empty caches: under the accelerator switch both parameters run the same programs, and the
  # first one run on a worker would otherwise leave the second nothing to compile.
  jax.clear_caches()
  widths = [64, 70, 100, 120, 128, 129, 150, 200, 256, 300, 400, 512, 700, 1000, 1500, 2048]
  feats, y = _layers(widths, 64, 4, seed=5, dtype=np.float32)
  buckets = {max(sweep.numerics.bucket(d), 128) for d in widths}
  programs = 1 if host and backend.policy().host_linalg else len(buckets)
  compiles = []

  def listener(event, duration, **_):
    if event == "/jax/core/compile/backend_compile_duration":
      compiles.append(duration)

  jax.monitoring.register_event_duration_secs_listener(listener)
  try:
    before = transrate_kernel.compiled_programs()
    got = sweep.transrate_many(feats, y, eps=3e-4, progress=False)
    traced = transrate_kernel.compiled_programs() - before
  finally:
    jax.monitoring.unregister_event_duration_listener(listener)
  assert len(buckets) == 5 and traced == programs
  # XLA compilations of the call: the kernel programs plus tiny helper programs (a label
  # dtype conversion, and small "stage" programs), bounded by the number of matrices.
  assert programs <= len(compiles) <= programs + len(widths)
  np.testing.assert_allclose(float(got[3]), float(transrate(feats[3], y, eps=3e-4)), rtol=1e-4)
  # Running the sweep again (other values, same shapes) compiles nothing new.
  feats2, _ = _layers(widths, 64, 4, seed=6, dtype=np.float32)
  before = transrate_kernel.compiled_programs()
  sweep.transrate_many(feats2, y, eps=3e-4, progress=False)
  assert transrate_kernel.compiled_programs() == before


def test_validation_names_the_key():
  feats, y = _layers([4, 6], 30, 3, seed=7)
  bad = feats[1].copy()
  bad[3, 2] = np.nan
  with pytest.raises(ValueError, match=r"features\['conv2'\] contains NaN"):
    sweep.transrate_many({"conv1": feats[0], "conv2": bad}, y, progress=False)
  with pytest.raises(ValueError, match=r"features\[1\] has 29 rows"):
    sweep.transrate_many([feats[0], feats[1][:29]], y, progress=False)
  with pytest.raises(ValueError, match=r"features\[0\] must be a 2-D"):
    sweep.transrate_many([feats[0][0]], y, progress=False)
  with pytest.raises(ValueError, match="preset"):
    sweep.transrate_many(feats, y, preset="nope", progress=False)
  with pytest.raises(ValueError, match="num_classes"):
    sweep.transrate_many(feats, y, num_classes=2, progress=False)
  with pytest.raises(ValueError, match="empty"):
    sweep.transrate_many([], y, progress=False)


def _centroid_spread(features, labels):
  """A toy metric (not zero-pad exact: it divides by the width)."""
  f = jnp.asarray(features)
  onehot = jax.nn.one_hot(jnp.asarray(labels), 3, dtype=f.dtype)
  means = (onehot.T @ f) / jnp.sum(onehot, axis=0)[:, None]
  return jnp.sum(means ** 2) / f.shape[1]


def test_score_many_generic_callable_and_registry():
  feats, y = _layers([4, 6, 6, 9], 40, 3, seed=8)
  want = np.array([float(_centroid_spread(f, y)) for f in feats])
  got = sweep.score_many(_centroid_spread, feats, y, progress=False)  # vmapped, exact widths
  np.testing.assert_allclose(np.asarray(got), want, rtol=1e-12)
  calls = []

  def looped(f, labels):
    calls.append(np.shape(f))
    return _centroid_spread(f, labels)

  name = "toy_spread_test"
  registry.register_metric(name, looped, vmappable=False)
  try:
    assert name in registry.registered_metrics()
    got = sweep.score_many(name, {"a": feats[0], "b": feats[3]}, y, progress=True)
    np.testing.assert_allclose([float(got["a"]), float(got["b"])], want[[0, 3]], rtol=1e-12)
    assert calls == [(40, 4), (40, 9)]  # unpadded, one call each
    with pytest.raises(ValueError, match="already registered"):
      registry.register_metric(name, looped)
  finally:
    registry.unregister_metric(name)
  assert name not in registry.registered_metrics()
  with pytest.raises(ValueError, match="unknown metric"):
    sweep.score_many("no_such_metric", feats, y)
  # transrate through the generic entry point.
  np.testing.assert_allclose(np.asarray(sweep.score_many("transrate", feats, y, progress=False)),
                             [float(transrate(f, y)) for f in feats], rtol=1e-10)
