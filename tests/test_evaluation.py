"""Evaluation measures vs scipy.stats, the TransRate paper's published table, jit/vmap, errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from transrate_jax._src.evaluation import kendall_tau
from transrate_jax._src.evaluation import pearson
from transrate_jax._src.evaluation import relative_top_accuracy
from transrate_jax._src.evaluation import top_k_hit
from transrate_jax._src.evaluation import weighted_tau

# Long-Kai/TransRate, extra_result_model_selection.py, model_selection(case=1): CIFAR-100 target,
# 13 ImageNet models: fine-tuned accuracy and LogME score as listed in the file (published data).
_ACC = [0.8158, 0.8391, 0.8405, 0.6900, 0.7512, 0.7865, 0.8083, 0.8269, 0.8418, 0.8435, 0.8375,
        0.6700, 0.7811]
_LOGME = [1.0126, 1.0356, 1.0989, 1.0093, 1.0344, 1.0387, 1.0444, 1.0292, 1.0513, 1.0614, 1.0807,
          1.0371, 1.051]


def test_published_logme_row():
  """The paper's table: Pearson 0.4965, Kendall 0.4103, weighted tau 0.5130 (rounded to 4)."""
  score, acc = np.array(_LOGME), np.array(_ACC)
  assert round(float(pearson(score, acc)), 4) == 0.4965
  assert round(float(kendall_tau(score, acc)), 4) == 0.4103
  assert round(float(weighted_tau(score, acc)), 4) == 0.5130
  assert bool(top_k_hit(score, acc, k=3)) and not bool(top_k_hit(score, acc, k=2))
  np.testing.assert_allclose(float(relative_top_accuracy(score, acc)), 0.8405 / 0.8435)


def _inputs():
  rng = np.random.default_rng(0)
  cases = []
  for m in (2, 3, 7, 13, 40):
    cases.append((rng.normal(size=m), rng.normal(size=m)))
  for m in (5, 12, 30):  # ties in x, in y, and joint ties
    cases.append((rng.integers(0, 3, m).astype(float), rng.integers(0, 4, m).astype(float)))
    x = rng.normal(size=m)
    cases.append((x, np.round(x + rng.normal(size=m), 0)))
  cases.append((np.array([12., 2, 1, 12, 2]), np.array([1., 4, 7, 1, 0])))  # scipy doc example
  cases.append((np.arange(6.), np.arange(6.)[::-1]))
  return cases


@pytest.mark.parametrize("case", range(len(_inputs())))
def test_against_scipy_float64(case):
  x, y = _inputs()[case]
  got = pearson(x, y)
  assert got.dtype == jnp.float64
  np.testing.assert_allclose(float(got), stats.pearsonr(x, y).statistic, rtol=1e-12, atol=1e-14)
  np.testing.assert_allclose(float(kendall_tau(x, y)), stats.kendalltau(x, y).statistic,
                             rtol=1e-12, atol=1e-14)
  np.testing.assert_allclose(float(weighted_tau(x, y)), stats.weightedtau(x, y).statistic,
                             rtol=1e-12, atol=1e-14)
  np.testing.assert_allclose(float(weighted_tau(y, x)), stats.weightedtau(y, x).statistic,
                             rtol=1e-12, atol=1e-14)


def test_float32_and_jax_inputs():
  x, y = _inputs()[3]
  x32, y32 = jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.float32)
  for fn, ref in ((pearson, stats.pearsonr), (kendall_tau, stats.kendalltau),
                  (weighted_tau, stats.weightedtau)):
    got = fn(x32, y32)
    assert got.dtype == jnp.float32
    want = ref(np.asarray(x32, np.float64), np.asarray(y32, np.float64)).statistic
    np.testing.assert_allclose(float(got), want, rtol=1e-5, atol=1e-6)


def test_jit_and_vmap():
  rng = np.random.default_rng(1)
  xs, ys = rng.normal(size=(4, 9)), rng.integers(0, 3, (4, 9)).astype(float)
  for fn, ref in ((pearson, stats.pearsonr), (kendall_tau, stats.kendalltau),
                  (weighted_tau, stats.weightedtau)):
    want = [ref(a, b).statistic for a, b in zip(xs, ys)]
    np.testing.assert_allclose(np.asarray(jax.vmap(fn)(xs, ys)), want, rtol=1e-12)
    np.testing.assert_allclose(float(jax.jit(fn)(xs[0], ys[0])), want[0], rtol=1e-12)
  hits = jax.vmap(lambda s, a: top_k_hit(s, a, k=2))(xs, ys)
  want_hits = [bool(np.any(b[np.argsort(-a, kind="stable")[:2]] == b.max()))
               for a, b in zip(xs, ys)]
  np.testing.assert_array_equal(np.asarray(hits), want_hits)
  acc = rng.uniform(0.5, 0.9, size=(4, 9))
  rel = jax.jit(jax.vmap(relative_top_accuracy))(xs, acc)
  np.testing.assert_allclose(np.asarray(rel), [a[np.argmax(s)] / a.max() for s, a in zip(xs, acc)])


def test_top_k_and_relative_accuracy_ties():
  scores = np.array([0.3, 0.9, 0.9, 0.1])
  acc = np.array([0.7, 0.6, 0.8, 0.8])
  # Score tie: index 1 ranks first; best accuracy 0.8 held by models 2 and 3.
  assert not bool(top_k_hit(scores, acc, k=1))
  assert bool(top_k_hit(scores, acc, k=2))
  np.testing.assert_allclose(float(relative_top_accuracy(scores, acc)), 0.6 / 0.8)
  assert bool(top_k_hit(scores, acc, k=4))


def test_errors():
  x = np.arange(5.)
  for fn in (pearson, kendall_tau, weighted_tau):
    with pytest.raises(ValueError, match="same length"):
      fn(x, x[:-1])
    with pytest.raises(ValueError, match="constant"):
      fn(np.ones(5), x)
    with pytest.raises(ValueError, match="constant"):
      fn(x, np.full(5, 2.0))
    with pytest.raises(ValueError, match="NaN"):
      fn(np.array([1., np.nan, 2.]), np.arange(3.))
    with pytest.raises(ValueError, match="at least 2"):
      fn(x[:1], x[:1])
    with pytest.raises(ValueError, match="1-D"):
      fn(x[None], x[None])
  with pytest.raises(ValueError, match="k must"):
    top_k_hit(x, x, k=0)
  with pytest.raises(ValueError, match="k must"):
    top_k_hit(x, x, k=6)
  with pytest.raises(ValueError, match="same length"):
    top_k_hit(x, x[:-1], k=1)
  with pytest.raises(ValueError, match="positive"):
    relative_top_accuracy(x, -x)
  # Constant scores are legal for top-k (ties broken by position).
  assert bool(top_k_hit(np.ones(5), x, k=5))
