"""TransRate for regression and multi-label targets against float64 NumPy oracles; invariances;
jit; bad inputs."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import reference
import reference_regression as oracle
from transrate_jax._src import regression
from transrate_jax._src.regression import quantize_targets
from transrate_jax._src.regression import transrate_multilabel
from transrate_jax._src.regression import transrate_regression
from transrate_jax._src.transrate import transrate

SETTINGS = [dict(), dict(weighting="uniform"), dict(preset="official")]
RTOL32 = 1e-4


def _ids(kw):
  return ",".join(f"{k}={v}" for k, v in kw.items()) or "default"


def _oracle_kw(kw):
  return dict(weighting=kw.get("weighting", "prior"), preset=kw.get("preset"))


def _data(seed=0, n=240, d=12):
  rng = np.random.default_rng(seed)
  f = rng.normal(size=(n, d)) + 0.5
  t = np.stack([np.tanh(f[:, 0]) + 0.1 * rng.normal(size=n),
                f[:, 1] * f[:, 2],
                rng.normal(size=n)], axis=1)
  return f, t


# ---------------------------------------------------------------------------------------------
# Quantisation against the oracle.


@pytest.mark.parametrize("bins", [2, 7, 10])
@pytest.mark.parametrize("ties", [False, True])
def test_quantile_bins_match_oracle(bins, ties):
  rng = np.random.default_rng(bins)
  t = rng.normal(size=(203, 3))
  if ties:
    t = np.round(t * 2.0)  # a few distinct values, heavy ties
  expected = oracle.quantile_bins(t, bins)
  np.testing.assert_array_equal(quantize_targets(t, bins=bins, method="quantile"), expected)
  np.testing.assert_array_equal(quantize_targets(t[:, 1], bins=bins), expected[:, 1])
  np.testing.assert_array_equal(
      quantize_targets(t.astype(np.float32), bins=bins, method="quantile"), expected)


def test_quantile_bins_are_equal_frequency_without_ties():
  t = np.random.default_rng(0).permutation(1003).astype(np.float64)
  counts = np.bincount(quantize_targets(t, bins=10))
  assert counts.shape == (10,) and counts.min() >= 100 and counts.max() <= 101


def test_ties_share_a_bin_and_empty_bins_are_dropped():
  t = np.concatenate([np.zeros(70), np.arange(1.0, 31.0)])
  labels = quantize_targets(t, bins=10)
  assert len(set(labels[:70].tolist())) == 1  # equal values, one bin
  # Mid-rank of the zeros is 35.5 of 100: bin 3; bins 0-2 are empty and dropped.
  np.testing.assert_array_equal(np.unique(labels), np.arange(labels.max() + 1))
  assert labels.max() + 1 == 4
  np.testing.assert_array_equal(labels, oracle.quantile_bins(t, 10))


@pytest.mark.parametrize("bins", [3, 10])
def test_uniform_bins_match_oracle(bins):
  t = np.random.default_rng(1).exponential(size=(150, 2))
  np.testing.assert_array_equal(quantize_targets(t, bins=bins, method="uniform"),
                                oracle.uniform_bins(t, bins))


def test_kmeans_is_deterministic_and_a_lloyd_fixed_point():
  rng = np.random.default_rng(2)
  centres = np.array([[0.0, 0.0], [6.0, 0.0], [0.0, 6.0], [6.0, 6.0]])
  truth = rng.integers(0, 4, 400)
  t = centres[truth] + 0.5 * rng.normal(size=(400, 2))
  t = t * [100.0, 0.01]  # different scales: k-means runs on standardised columns
  labels = quantize_targets(t, bins=4)  # the default for [n, k]
  np.testing.assert_array_equal(labels, quantize_targets(t, bins=4, method="kmeans"))
  # Recovers the blobs (up to renaming).
  assert all(len(set(labels[truth == c].tolist())) == 1 for c in range(4))
  # Fixed point of Lloyd's step on the standardised targets: nearest mean = own cluster.
  x = (t - t.mean(0)) / t.std(0)
  means = np.stack([x[labels == c].mean(0) for c in range(labels.max() + 1)])
  nearest = np.argmin(((x[:, None] - means[None]) ** 2).sum(-1), axis=1)
  np.testing.assert_array_equal(nearest, labels)
  other = quantize_targets(t, bins=4, method="kmeans", key=jax.random.key(7))
  assert other.shape == (400,)


def test_quantize_traced_returns_raw_bins():
  t = np.concatenate([np.zeros(70), np.arange(1.0, 31.0)])
  raw = jax.jit(lambda x: quantize_targets(x, bins=10))(t)
  assert raw.dtype == jnp.int32
  np.testing.assert_array_equal(np.unique(np.asarray(raw)), [3, 7, 8, 9])
  np.testing.assert_array_equal(oracle.compact(np.asarray(raw)), quantize_targets(t, bins=10))


# ---------------------------------------------------------------------------------------------
# transrate_regression against the oracle.


@pytest.mark.parametrize("kw", SETTINGS, ids=_ids)
@pytest.mark.parametrize("method", ["quantile", "uniform"])
def test_regression_matches_oracle(method, kw):
  f, t = _data()
  bins_fn = oracle.quantile_bins if method == "quantile" else oracle.uniform_bins
  labels = bins_fn(t, 6)
  expected = [reference.transrate(f, labels[:, j], **_oracle_kw(kw)) for j in range(3)]
  got = transrate_regression(f, t, bins=6, method=method, **kw)
  assert got.method == method and got.num_bins == tuple(int(labels[:, j].max()) + 1
                                                        for j in range(3))
  assert got.score.dtype == jnp.float64
  np.testing.assert_allclose(got.per_column, expected, rtol=1e-10)
  np.testing.assert_allclose(got.score, np.mean(expected), rtol=1e-10)
  if not kw:
    got32 = transrate_regression(f.astype(np.float32), t, bins=6, method=method)
    assert got32.score.dtype == jnp.float32
    np.testing.assert_allclose(got32.per_column, expected, rtol=RTOL32)
    one = transrate_regression(f, t[:, 0], bins=6, method=method)
    np.testing.assert_allclose(one.score, expected[0], rtol=1e-10)
    assert one.per_column.shape == (1,)


def test_regression_kmeans_matches_transrate_on_its_labels():
  f, t = _data(1)
  got = transrate_regression(f, t[:, :2], bins=5)  # the default for [n, k] targets
  labels = quantize_targets(t[:, :2], bins=5, method="kmeans")
  assert got.method == "kmeans" and got.num_bins == (int(labels.max()) + 1,)
  np.testing.assert_allclose(got.score, reference.transrate(f, labels), rtol=1e-10)
  np.testing.assert_allclose(got.score, transrate(f, labels), rtol=1e-12)


def test_regression_eps_vector():
  f, t = _data(2)
  eps = np.array([1e-4, 1e-2])
  got = transrate_regression(f, t, bins=4, eps=eps, method="quantile")
  assert got.score.shape == (2,) and got.per_column.shape == (3, 2)
  for k, e in enumerate(eps):
    single = transrate_regression(f, t, bins=4, eps=e, method="quantile")
    np.testing.assert_allclose(got.score[k], single.score, rtol=1e-9)


def test_informative_target_beats_noise():
  rng = np.random.default_rng(3)
  f = rng.normal(size=(400, 8))
  noise = [float(transrate_regression(f, rng.normal(size=400), bins=5).score) for _ in range(5)]
  for g in (lambda x: np.sin(2.0 * x) + x, np.abs):  # deterministic functions of one feature
    signal = float(transrate_regression(f, g(f[:, 3]), bins=5).score)
    assert signal > max(noise) + 10.0 * np.std(noise)


def test_invariant_to_monotone_transforms_of_the_target():
  f, t = _data(4)
  base = transrate_regression(f, t[:, 0], bins=7).score
  for g in (lambda x: np.exp(3.0 * x), lambda x: x ** 3 - 5.0, lambda x: np.arctan(x) * 1e6):
    assert float(transrate_regression(f, g(t[:, 0]), bins=7).score) == float(base)


def test_empty_bins_uniform_weighting_counts_present_classes():
  f, _ = _data(5, n=100)
  t = np.concatenate([np.zeros(70), np.arange(1.0, 31.0)])
  got = transrate_regression(f, t, bins=10, weighting="uniform")
  assert got.num_bins == (4,) and got.method == "quantile"  # the default for [n] targets
  expected = reference.transrate(f, oracle.quantile_bins(t, 10), weighting="uniform")
  np.testing.assert_allclose(got.score, expected, rtol=1e-10)


# ---------------------------------------------------------------------------------------------
# Multi-label.


def _multilabel_data(seed, n, d, num_labels=6):
  rng = np.random.default_rng(seed)
  y = (rng.random((n, num_labels)) < rng.uniform(0.05, 0.7, num_labels)).astype(np.int64)
  y[:, 0] = 0                 # all 0
  y[:, 1] = 1                 # all 1
  y[:, 2] = 0
  y[:3, 2] = 1                # rare: 3 positives
  f = rng.normal(size=(n, d)) + 0.3
  f[:, :num_labels] += 1.5 * y
  return f, y


@pytest.mark.parametrize("kw", SETTINGS, ids=_ids)
@pytest.mark.parametrize("shape,layout", [((300, 10), "cov"), ((30, 200), "gram")])
def test_multilabel_matches_oracle_and_transrate(shape, layout, kw):
  n, d = shape
  f, y = _multilabel_data(6, n, d)
  assert regression._multilabel_layout(n, d, y.shape[1]) == layout  # pylint: disable=protected-access
  mean, per = oracle.transrate_multilabel(f, y, **_oracle_kw(kw))
  got = transrate_multilabel(f, y, **kw)
  np.testing.assert_allclose(got.per_label, per, rtol=1e-9, atol=1e-12)
  np.testing.assert_allclose(got.score, mean, rtol=1e-9)
  assert np.all(np.asarray(got.per_label[:2]) == 0.0)
  if kw:
    return
  for l in range(2, y.shape[1]):  # the class path, column by column
    np.testing.assert_allclose(got.per_label[l], transrate(f, y[:, l], num_classes=2),
                               rtol=1e-9)
  got32 = transrate_multilabel(f.astype(np.float32), y.astype(bool), batch_size=4)
  assert got32.score.dtype == jnp.float32
  np.testing.assert_allclose(got32.per_label, per, rtol=RTOL32, atol=1e-6)


def test_multilabel_eps_vector_jit_and_vmap():
  f, y = _multilabel_data(7, 120, 8)
  eps = np.array([1e-4, 1e-1])
  got = transrate_multilabel(f, y, eps=eps)
  assert got.per_label.shape == (6, 2)
  for k, e in enumerate(eps):
    np.testing.assert_allclose(got.per_label[:, k], oracle.transrate_multilabel(f, y, eps=e)[1],
                               rtol=1e-9, atol=1e-12)
  jitted = jax.jit(lambda a, b: transrate_multilabel(a, b).score)(f, y)
  np.testing.assert_allclose(jitted, oracle.transrate_multilabel(f, y)[0], rtol=1e-9)
  stack = np.stack([f, 2.0 * f[:, ::-1]])
  batched = jax.vmap(lambda a: transrate_multilabel(a, y).per_label)(stack)
  for b in range(2):
    np.testing.assert_allclose(batched[b], oracle.transrate_multilabel(stack[b], y)[1],
                               rtol=1e-9, atol=1e-12)


# ---------------------------------------------------------------------------------------------
# Bad inputs.


def test_regression_bad_inputs():
  f, t = _data(8, n=40)
  with pytest.raises(ValueError, match="NaN"):
    transrate_regression(f, np.where(np.arange(40) == 3, np.nan, t[:, 0]))
  with pytest.raises(ValueError, match="constant"):
    transrate_regression(f, np.full(40, 2.5))
  with pytest.raises(ValueError, match=r"column\(s\) \[1\] are constant"):
    transrate_regression(f, np.stack([t[:, 0], np.ones(40)], 1))
  with pytest.raises(ValueError, match="fewer than bins"):
    transrate_regression(f[:8], t[:8, 0], bins=10)
  # One sample off a constant: still two classes (a non-constant column never gives one bin).
  for method in ("quantile", "uniform"):
    assert transrate_regression(f, np.r_[np.zeros(39), 1.0], bins=4,
                                method=method).num_bins == (2,)
  with pytest.raises(ValueError, match="bins"):
    transrate_regression(f, t[:, 0], bins=1)
  with pytest.raises(ValueError, match="method"):
    transrate_regression(f, t[:, 0], method="median")
  with pytest.raises(ValueError, match="rows"):
    transrate_regression(f, t[:30, 0])
  with pytest.raises(ValueError, match="1-D"):
    transrate_regression(f, t[:, :, None])
  with pytest.raises(ValueError, match="weighting"):
    transrate_regression(f, t[:, 0], weighting="equal")
  with pytest.raises(ValueError, match="concrete"):
    jax.jit(lambda a, b: transrate_regression(a, b).score)(f, t[:, 0])


def test_multilabel_bad_inputs():
  f, y = _multilabel_data(9, 40, 6)
  with pytest.raises(ValueError, match="only 0 and 1"):
    transrate_multilabel(f, np.where(y == 1, 2, 0))
  with pytest.raises(ValueError, match="only 0 and 1"):
    transrate_multilabel(f, np.where(y == 1, np.nan, 0.0))
  with pytest.raises(ValueError, match="2-D"):
    transrate_multilabel(f, y[:, 3])
  with pytest.raises(ValueError, match="rows"):
    transrate_multilabel(f, y[:20])
  with pytest.raises(ValueError, match="batch_size"):
    transrate_multilabel(f, y, batch_size=0)
  with pytest.raises(ValueError, match="NaN"):
    transrate_multilabel(np.where(f > 2.0, np.nan, f), y)
