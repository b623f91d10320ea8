"""Intervals, baselines, pools, regret, eps sensitivity and compare_metrics vs plain loops + scipy.

Every resampling function is checked against a plain Python loop that draws the same seeded
indices with NumPy and calls scipy.stats on each resample (dropping the same undefined ones).
"""

import json
import math
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

import transrate_jax as tj
from transrate_jax._src import compare
from transrate_jax._src import evaluation
from transrate_jax._src.evaluation import bootstrap_interval
from transrate_jax._src.evaluation import random_baseline
from transrate_jax._src.evaluation import resampled_pools
from transrate_jax._src.evaluation import top1_regret

_SCIPY = {"kendall": lambda x, y: stats.kendalltau(x, y).statistic,
          "pearson": lambda x, y: stats.pearsonr(x, y).statistic,
          "weighted_tau": lambda x, y: stats.weightedtau(x, y).statistic}


def _pair(m, seed, ties=False):
  rng = np.random.default_rng(seed)
  s = rng.normal(size=m)
  a = s + rng.normal(size=m)
  if ties:
    s, a = np.round(s, 0), np.round(a, 0)
    if np.ptp(s) == 0 or np.ptp(a) == 0:
      s[0], a[0] = s[0] + 1.0, a[0] + 1.0
  return s, a


def _loop_stats(s, a, index, statistic):
  """The statistic on each row of ``index`` by scipy; rows with a constant vector dropped."""
  out = []
  for row in index:
    xs, ys = s[row], a[row]
    if np.ptp(xs) == 0 or np.ptp(ys) == 0:
      continue
    out.append(_SCIPY[statistic](xs, ys))
  return np.asarray(out)


def _loop_bootstrap(s, a, statistic, num_resamples, confidence, seed):
  m = len(s)
  index = np.random.default_rng(seed).integers(0, m, size=(num_resamples, m))
  values = _loop_stats(s, a, index, statistic)
  low, high = np.percentile(values, [50 * (1 - confidence), 50 * (1 + confidence)])
  return low, high, values


# --------------------------------------------------------------------------------------------
# top1_regret
# --------------------------------------------------------------------------------------------


def test_top1_regret_formula_ties_and_hit():
  rng = np.random.default_rng(0)
  for m in (2, 5, 17):
    for _ in range(5):
      s, a = rng.normal(size=m), rng.uniform(0.5, 0.9, m)
      want = a.max() - a[int(np.argmax(s))]
      got = top1_regret(s, a)
      assert got.dtype == jnp.float64
      np.testing.assert_allclose(float(got), want, rtol=0, atol=1e-15)
      assert (float(got) == 0.0) == bool(evaluation.top_k_hit(s, a, k=1))
  # Ties in the scores pick the first, as relative_top_accuracy does.
  s, a = np.array([1.0, 3.0, 3.0, 0.0]), np.array([0.5, 0.6, 0.9, 0.7])
  assert float(top1_regret(s, a)) == pytest.approx(0.3)
  assert float(evaluation.relative_top_accuracy(s, a)) == pytest.approx(0.6 / 0.9)
  # A constant score is fine (the first candidate is picked); negative accuracies too.
  assert float(top1_regret(np.zeros(3), np.array([-1.0, -0.5, -2.0]))) == pytest.approx(0.5)


def test_top1_regret_float32_jit_vmap():
  rng = np.random.default_rng(1)
  ss = rng.normal(size=(6, 9)).astype(np.float32)
  aa = rng.uniform(0.5, 0.9, (6, 9)).astype(np.float32)
  want = aa.max(axis=1) - aa[np.arange(6), np.argmax(ss, axis=1)]
  got = jax.vmap(top1_regret)(ss, aa)
  assert got.dtype == jnp.float32
  np.testing.assert_allclose(np.asarray(got), want, rtol=0, atol=1e-7)
  np.testing.assert_allclose(float(jax.jit(top1_regret)(ss[0], aa[0])), want[0], atol=1e-7)
  assert top1_regret(ss[0], aa[0].astype(np.float64)).dtype == jnp.float64


def test_top1_regret_errors():
  with pytest.raises(ValueError, match="same length"):
    top1_regret(np.zeros(3), np.zeros(4))
  with pytest.raises(ValueError, match="NaN"):
    top1_regret(np.array([1.0, np.nan]), np.zeros(2))
  with pytest.raises(ValueError, match="at least 2"):
    top1_regret(np.zeros(1), np.zeros(1))
  with pytest.raises(ValueError, match="1-D"):
    top1_regret(np.zeros((2, 2)), np.zeros(2))


# --------------------------------------------------------------------------------------------
# bootstrap_interval
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("statistic", ["kendall", "pearson", "weighted_tau"])
@pytest.mark.parametrize("m,ties", [(2, False), (3, False), (8, True), (13, False), (40, True)])
def test_bootstrap_equals_plain_loop(statistic, m, ties):
  """Same seeded indices, scipy on each resample, constant resamples dropped: same interval."""
  s, a = _pair(m, seed=m, ties=ties)
  num, conf, seed = 300, 0.9, 7
  low, high, values = _loop_bootstrap(s, a, statistic, num, conf, seed)
  iv = bootstrap_interval(s, a, statistic=statistic, num_resamples=num, confidence=conf,
                          seed=seed)
  assert iv.num_valid == values.size and iv.num_resamples == num
  assert iv.statistic == statistic and iv.confidence == conf
  np.testing.assert_allclose([iv.low, iv.high], [low, high], rtol=1e-12, atol=1e-13)
  np.testing.assert_allclose(iv.std, np.std(values, ddof=1), rtol=1e-10, atol=1e-13)
  np.testing.assert_allclose(iv.estimate, _SCIPY[statistic](s, a), rtol=1e-12, atol=1e-14)
  if m == 2:  # half the resamples repeat one candidate
    assert 0.35 * num < iv.num_valid < 0.65 * num


@pytest.mark.parametrize("statistic", ["kendall", "pearson", "weighted_tau"])
def test_count_form_equals_vmapped_kernel(statistic):
  """The count form (bootstrap and pools) equals the existing kernel vmapped over the gathers."""
  s, a = _pair(25, seed=3, ties=True)
  x, y = evaluation._check_pair(s, a)
  kernel = evaluation._STATISTICS[statistic][1]
  rng = np.random.default_rng(0)
  for index in (rng.integers(0, 25, size=(64, 25)),
                rng.permuted(np.tile(np.arange(25), (64, 1)), axis=1)[:, :9]):
    got = evaluation._on_resamples(statistic, x, y, index)
    want = np.asarray(jax.vmap(kernel)(x[index], y[index]))
    ok = np.isfinite(want)
    np.testing.assert_allclose(got[ok], want[ok], rtol=1e-12, atol=1e-14)
    assert np.all(np.isnan(got[~ok]))


def test_interval_contains_estimate_in_practice():
  for seed in range(24):
    m = (6, 11, 25)[seed % 3]
    s, a = _pair(m, seed=100 + seed, ties=bool(seed % 4 == 0))
    for statistic in ("kendall", "pearson", "weighted_tau"):
      iv = bootstrap_interval(s, a, statistic=statistic, num_resamples=400, seed=seed)
      assert iv.low <= iv.estimate <= iv.high, (seed, statistic, iv)
      assert -1.0 <= iv.low <= iv.high <= 1.0


def test_bootstrap_perfect_ranking_is_degenerate_at_one():
  a = np.linspace(0.5, 0.9, 10)
  for statistic in ("kendall", "weighted_tau"):  # every resample is concordant: tau = 1
    iv = bootstrap_interval(a ** 3, a, statistic=statistic, num_resamples=200)
    np.testing.assert_allclose([iv.estimate, iv.low, iv.high], 1.0, rtol=0, atol=1e-15)
    assert iv.std < 1e-15 and type(iv.estimate) is float
  iv = bootstrap_interval(a ** 3, a, statistic="pearson", num_resamples=200)
  assert iv.low < iv.estimate <= iv.high < 1.0


def test_bootstrap_seeded_paired_and_narrower_with_more_candidates():
  s, a = _pair(30, seed=0)
  one = bootstrap_interval(s, a, num_resamples=200, seed=5)
  assert one == bootstrap_interval(s, a, num_resamples=200, seed=5)
  assert one != bootstrap_interval(s, a, num_resamples=200, seed=6)
  s2, a2 = _pair(600, seed=0)
  wide = bootstrap_interval(s, a, num_resamples=500)
  narrow = bootstrap_interval(s2, a2, num_resamples=500)
  assert narrow.high - narrow.low < 0.5 * (wide.high - wide.low)


def test_bootstrap_float32_matches_float64():
  s, a = _pair(50, seed=4)
  for statistic in ("kendall", "pearson", "weighted_tau"):
    i64 = bootstrap_interval(s, a, statistic=statistic, num_resamples=300)
    i32 = bootstrap_interval(s.astype(np.float32), a.astype(np.float32), statistic=statistic,
                             num_resamples=300)
    np.testing.assert_allclose([i32.estimate, i32.low, i32.high, i32.std],
                               [i64.estimate, i64.low, i64.high, i64.std], rtol=0, atol=2e-5)
    assert i32.num_valid == i64.num_valid
  # The float32 path computes in float32: its estimate is the float32 kernel's value.
  s32, a32 = s.astype(np.float32), a.astype(np.float32)
  for statistic, fn in (("kendall", evaluation.kendall_tau), ("pearson", evaluation.pearson),
                        ("weighted_tau", evaluation.weighted_tau)):
    assert bootstrap_interval(s32, a32, statistic=statistic).estimate == pytest.approx(
        float(fn(s32, a32)), abs=2e-7)


def test_bootstrap_callable_statistics():
  s, a = _pair(15, seed=2)
  want = bootstrap_interval(s, a, statistic="kendall", num_resamples=200)
  # A JAX-traceable callable is vmapped.
  traced = bootstrap_interval(s, a, statistic=evaluation.kendall_tau, num_resamples=200)
  np.testing.assert_allclose(traced[:4], want[:4], rtol=1e-12)
  assert traced.statistic == "kendall_tau" and traced.num_valid == want.num_valid

  # A NumPy/scipy callable falls back to one call per resample.
  def spearman(x, y):
    return stats.spearmanr(x, y).statistic

  got = bootstrap_interval(s, a, statistic=spearman, num_resamples=200, seed=1)
  index = np.random.default_rng(1).integers(0, 15, size=(200, 15))
  vals = np.array([spearman(s[r], a[r]) for r in index
                   if np.ptp(s[r]) > 0 and np.ptp(a[r]) > 0])
  np.testing.assert_allclose([got.low, got.high], np.percentile(vals, [2.5, 97.5]), rtol=1e-12)
  assert got.estimate == pytest.approx(spearman(s, a), rel=1e-12)


def test_bootstrap_errors():
  s, a = _pair(6, seed=0)
  with pytest.raises(ValueError, match="scores is constant"):
    bootstrap_interval(np.ones(6), a)
  with pytest.raises(ValueError, match="accuracies is constant"):
    bootstrap_interval(s, np.full(6, 0.7))
  with pytest.raises(ValueError, match="same length"):
    bootstrap_interval(s, a[:5])
  with pytest.raises(ValueError, match="NaN"):
    bootstrap_interval(np.where(np.arange(6) == 2, np.nan, s), a)
  with pytest.raises(ValueError, match="at least 2"):
    bootstrap_interval(s[:1], a[:1])
  for bad in (0, -3, 2.5, True):
    with pytest.raises(ValueError, match="num_resamples"):
      bootstrap_interval(s, a, num_resamples=bad)
  for bad in (0.0, 1.0, 1.5, -0.1, True, "0.9"):
    with pytest.raises(ValueError, match="confidence"):
      bootstrap_interval(s, a, confidence=bad)
  with pytest.raises(ValueError, match="unknown statistic"):
    bootstrap_interval(s, a, statistic="spearman")
  with pytest.raises(ValueError, match="seed"):
    bootstrap_interval(s, a, seed=-1)
  with pytest.raises(ValueError, match="traced"):
    jax.jit(lambda x, y: bootstrap_interval(x, y).estimate)(s, a)


# --------------------------------------------------------------------------------------------
# random_baseline
# --------------------------------------------------------------------------------------------


def _all_permutation_stats(a, statistic):
  import itertools  # noqa: PLC0415
  m = len(a)
  return np.array([_SCIPY[statistic](np.array(p, float), a)
                   for p in itertools.permutations(range(m))])


def test_random_baseline_kendall_null():
  m = 20
  a = np.random.default_rng(0).uniform(0.5, 0.9, m)  # no ties
  b = random_baseline(a, num_draws=2000, seed=3)
  exact = math.sqrt(2 * (2 * m + 5) / (9 * m * (m - 1)))
  assert b.estimate == 0.0 and b.exact and b.statistic == "kendall"
  assert b.low < 0.0 < b.high
  assert b.exact_std == pytest.approx(exact, rel=1e-12)
  assert b.std == pytest.approx(exact, rel=0.05)
  assert abs(b.mean) < 4 * exact / math.sqrt(2000)
  # The same draws through scipy.
  perms = np.random.default_rng(3).permuted(np.tile(np.arange(m), (2000, 1)), axis=1)
  vals = np.array([stats.kendalltau(p.astype(float), a).statistic for p in perms])
  np.testing.assert_allclose([b.mean, b.low, b.high], [vals.mean(), *np.percentile(
      vals, [2.5, 97.5])], rtol=1e-12, atol=1e-14)


def test_random_baseline_exact_std_with_ties_by_enumeration():
  a = np.array([0.6, 0.7, 0.7, 0.8, 0.8, 0.8])  # tied accuracies: the tie-corrected variance
  for statistic in ("kendall", "pearson"):
    every = _all_permutation_stats(a, statistic)
    b = random_baseline(a, statistic=statistic, num_draws=3000)
    assert abs(every.mean()) < 1e-12  # the expected value is exactly 0
    assert b.exact_std == pytest.approx(every.std(), rel=1e-10)
    assert b.std == pytest.approx(every.std(), rel=0.08)


@pytest.mark.parametrize("statistic", ["pearson", "weighted_tau", "kendall"])
def test_random_baseline_other_statistics(statistic):
  m = 15
  a = np.random.default_rng(1).uniform(0.5, 0.9, m)
  if statistic == "kendall":  # tied accuracies (the tie-free case is tested above)
    a = np.round(a, 1)
  b = random_baseline(a, statistic=statistic, num_draws=600, seed=2, confidence=0.8)
  perms = np.random.default_rng(2).permuted(np.tile(np.arange(m), (600, 1)), axis=1)
  vals = np.array([_SCIPY[statistic](p.astype(float), a) for p in perms])
  np.testing.assert_allclose([b.mean, b.std, b.low, b.high],
                             [vals.mean(), vals.std(ddof=1), *np.percentile(vals, [10, 90])],
                             rtol=1e-10, atol=1e-13)
  assert b.low < b.estimate < b.high and abs(b.mean) < 4 * b.std / math.sqrt(600)
  if statistic == "pearson":
    assert b.exact and b.estimate == 0.0 and b.exact_std == pytest.approx(1 / math.sqrt(m - 1))
  elif statistic == "kendall":
    assert b.exact and b.estimate == 0.0 and b.exact_std == pytest.approx(b.std, rel=0.15)
  else:
    assert not b.exact and b.estimate == b.mean and b.exact_std is None


def test_random_baseline_float32_and_errors():
  a = np.random.default_rng(0).uniform(0.5, 0.9, 12)
  b32 = random_baseline(a.astype(np.float32), num_draws=500)
  b64 = random_baseline(a, num_draws=500)
  np.testing.assert_allclose(b32[:5], b64[:5], atol=1e-6)
  with pytest.raises(ValueError, match="constant"):
    random_baseline(np.full(5, 0.8))
  with pytest.raises(ValueError, match="1-D"):
    random_baseline(np.zeros((3, 3)))
  with pytest.raises(ValueError, match="NaN"):
    random_baseline(np.array([0.1, np.inf, 0.3]))
  with pytest.raises(ValueError, match="num_draws"):
    random_baseline(a, num_draws=0)
  with pytest.raises(ValueError, match="confidence"):
    random_baseline(a, confidence=1.0)


# --------------------------------------------------------------------------------------------
# resampled_pools
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("statistic", ["kendall", "pearson", "weighted_tau"])
@pytest.mark.parametrize("pool_size", [2, 5, 11])
def test_pools_equal_plain_loop(statistic, pool_size):
  s, a = _pair(14, seed=9, ties=True)
  p = resampled_pools(s, a, pool_size=pool_size, num_pools=150, statistic=statistic, seed=4)
  index = np.random.default_rng(4).permuted(np.tile(np.arange(14), (150, 1)),
                                            axis=1)[:, :pool_size]
  vals = _loop_stats(s, a, index, statistic)
  assert p.num_valid == vals.size and p.num_pools == 150 and p.pool_size == pool_size
  np.testing.assert_allclose(p.values, vals, rtol=1e-12, atol=1e-14)
  np.testing.assert_allclose([p.mean, p.std], [vals.mean(), vals.std(ddof=1)], rtol=1e-10,
                             atol=1e-14)
  if pool_size == 2:  # pools of two tied candidates are skipped
    assert p.num_valid < 150


def test_pools_full_size_and_spread():
  s, a = _pair(10, seed=1)
  for statistic in ("kendall", "pearson", "weighted_tau"):
    p = resampled_pools(s, a, pool_size=10, num_pools=20, statistic=statistic)
    assert p.std == pytest.approx(0.0, abs=1e-12)
    assert p.mean == pytest.approx(_SCIPY[statistic](s, a), rel=1e-12)
  small = resampled_pools(s, a, pool_size=4, num_pools=200)
  large = resampled_pools(s, a, pool_size=8, num_pools=200)
  assert small.std > large.std > 0
  p32 = resampled_pools(s.astype(np.float32), a.astype(np.float32), pool_size=4, num_pools=200)
  np.testing.assert_allclose(p32.values, small.values, atol=1e-6)


def test_pools_errors():
  s, a = _pair(6, seed=0)
  for bad in (1, 0, 7, 3.0, True, None):
    with pytest.raises(ValueError, match="pool_size"):
      resampled_pools(s, a, pool_size=bad)
  with pytest.raises(ValueError, match="num_pools"):
    resampled_pools(s, a, pool_size=3, num_pools=0)
  with pytest.raises(ValueError, match="constant"):
    resampled_pools(np.ones(6), a, pool_size=3)
  # Only two distinct scores, pools of two: undefined when both picks share a score...
  s2 = np.array([0.0, 0.0, 0.0, 0.0, 1.0, 0.0])
  p = resampled_pools(s2, a, pool_size=2, num_pools=60)
  assert 0 < p.num_valid < 60
  # ... and on every pool when no pool can hold both.
  with pytest.raises(ValueError, match="every one"):
    resampled_pools(np.array([0.0, 1.0]), np.array([0.3, 0.5]), pool_size=2, num_pools=5,
                    statistic=lambda x, y: jnp.nan * x[0])


# --------------------------------------------------------------------------------------------
# transrate_eps_sensitivity
# --------------------------------------------------------------------------------------------


def _candidates(dtype=np.float64):
  rng = np.random.default_rng(0)
  y = rng.integers(0, 3, 90)
  # One width for all (one compiled program); the scale differs, so rankings move with eps.
  feats = {f"c{i}": (rng.normal(size=(90, 8)) * rng.uniform(0.2, 3.0) + 0.5 * i * np.eye(8)[y]
                     ).astype(dtype) for i in range(5)}
  return feats, y


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_eps_sensitivity_equals_per_eps_calls(dtype):
  feats, y = _candidates(dtype)
  grid = (1e-3, 1e-1, 1.0, 10.0)
  out = compare.transrate_eps_sensitivity(feats, y, eps=grid, default_eps=1e-2,
                                          weighting="uniform")
  assert out["eps"] == [1e-3, 1e-2, 1e-1, 1.0, 10.0]  # default added, sorted
  assert out["names"] == list(feats) and out["scores"].shape == (5, 5)
  per = np.array([[float(tj.transrate(f, y, eps=e, weighting="uniform")) for e in out["eps"]]
                  for f in feats.values()])
  np.testing.assert_allclose(out["scores"], per, rtol=2e-4 if dtype == np.float32 else 1e-10,
                             atol=1e-5 if dtype == np.float32 else 0)
  for e, col in zip(out["eps"], per.T):
    assert out["kendall"][e] == pytest.approx(stats.kendalltau(col, per[:, 1]).statistic,
                                              abs=1e-12)
  assert out["kendall"][1e-2] == pytest.approx(1.0, abs=1e-15) and out["undefined_eps"] == []
  json.dumps({k: v for k, v in out.items() if k != "scores"})


def test_eps_sensitivity_default_grid_and_errors():
  feats, y = _candidates()
  out = compare.transrate_eps_sensitivity(list(feats.values())[:3], y)
  assert out["eps"] == list(compare.DEFAULT_EPS_GRID) and out["names"] == ["0", "1", "2"]
  assert set(out["kendall"]) == set(out["eps"])
  with pytest.raises(ValueError, match="at least 2 candidates"):
    compare.transrate_eps_sensitivity({"a": feats["c0"]}, y)
  with pytest.raises(ValueError, match="eps"):
    compare.transrate_eps_sensitivity(feats, y, eps=(1e-3, -1.0))
  with pytest.raises(ValueError, match="eps"):
    compare.transrate_eps_sensitivity(feats, y, eps=())
  with pytest.raises(ValueError, match="default_eps"):
    compare.transrate_eps_sensitivity(feats, y, default_eps=0.0)
  bad = dict(feats, c2=np.full((90, 4), np.nan))
  with pytest.raises(ValueError, match="candidate 'c2'"):
    compare.transrate_eps_sensitivity(bad, y)


# --------------------------------------------------------------------------------------------
# compare_metrics
# --------------------------------------------------------------------------------------------


def _comparison(**kwargs):
  rng = np.random.default_rng(0)
  m = 10
  acc = rng.uniform(0.6, 0.9, m)
  scores = {"good": acc + rng.normal(0, 0.02, m), "noise": rng.normal(size=m),
            "broken": np.where(np.arange(m) == 3, np.nan, 1.0), "flat": np.ones(m)}
  widths = np.array([512, 768, 768, 1024, 2048, 512, 384, 1024, 768, 2048])
  params = rng.integers(10 ** 6, 10 ** 8, m)
  names = [f"model{i}" for i in range(m)]
  opts = dict(names=names, widths=widths, param_counts=params, num_resamples=300, seed=1)
  opts.update(kwargs)
  return compare.compare_metrics(scores, acc, **opts), scores, acc, widths, params


def test_compare_metrics_rows_match_the_functions():
  cmp, scores, acc, widths, params = _comparison(pool_size=5, num_pools=40, confidence=0.9)
  assert [r["name"] for r in cmp.rows] == ["good", "noise", "broken", "flat", "width", "params",
                                           "random"]
  assert [r["kind"] for r in cmp.rows] == ["metric"] * 4 + ["baseline"] * 2 + ["random"]
  for name, s in (("good", scores["good"]), ("noise", scores["noise"]), ("width", widths),
                  ("params", params)):
    r = cmp.row(name)
    assert r["status"] == "ok"
    for k in ("kendall", "pearson", "weighted_tau"):
      iv = bootstrap_interval(s.astype(float), acc, statistic=k, num_resamples=300,
                              confidence=0.9, seed=1)
      assert r[k] == {"estimate": iv.estimate, "low": iv.low, "high": iv.high, "std": iv.std,
                      "num_valid": iv.num_valid}
      p = resampled_pools(s.astype(float), acc, pool_size=5, num_pools=40, statistic=k, seed=1)
      assert r["pooled"][k] == {"mean": p.mean, "std": p.std, "num_valid": p.num_valid}
    assert r["top1_hit"] == bool(evaluation.top_k_hit(s, acc, k=1))
    assert r["top1_regret"] == pytest.approx(acc.max() - acc[np.argmax(s)], abs=1e-15)
    assert r["relative_top_accuracy"] == pytest.approx(acc[np.argmax(s)] / acc.max())
    assert r["pick"] == f"model{int(np.argmax(s))}"
  assert cmp.row("broken")["status"] == "undefined: scores contain NaN or inf"
  assert cmp.row("flat")["status"] == "undefined: constant scores"
  assert cmp.row("flat")["kendall"] is None and cmp.row("flat")["top1_regret"] is None
  rnd = cmp.row("random")
  b = random_baseline(acc, statistic="kendall", num_draws=300, confidence=0.9, seed=1)
  assert rnd["kendall"]["estimate"] == 0.0
  assert (rnd["kendall"]["low"], rnd["kendall"]["high"]) == (b.low, b.high)
  assert rnd["top1_hit"] == pytest.approx(1 / 10)
  assert rnd["top1_regret"] == pytest.approx(acc.max() - acc.mean())
  assert cmp.best() == "good" and cmp.best("top1_regret") == "good"
  assert cmp.best("pearson", include_baselines=True) == "good"


@pytest.fixture(scope="module")
def comparison():
  return _comparison(pool_size=4)[0]


def test_compare_metrics_table_dict_json(comparison):
  cmp = comparison
  text = str(cmp)
  assert text == cmp.table()
  for name in ("good", "noise", "broken", "flat", "width", "params", "random"):
    assert name in text
  assert "undefined: constant scores" in text and "undefined: scores contain NaN" in text
  good = next(line for line in text.splitlines() if line.startswith("good"))
  assert len(re.findall(r"-?\d\.\d\d \[-?\d\.\d\d, -?\d\.\d\d\]", good)) == 3
  assert re.search(r"\d\.\d\d ± \d\.\d\d", good)
  iv = cmp.row("good")["kendall"]
  assert f"{iv['estimate']:.2f} [{iv['low']:.2f}, {iv['high']:.2f}]" in good
  d = cmp.to_dict()
  back = json.loads(json.dumps(d, allow_nan=False))
  assert back == d and back["rows"][0]["name"] == "good" and len(back["accuracies"]) == 10

  class Printer:
    def __init__(self):
      self.out = ""

    def text(self, t):
      self.out += t

  p = Printer()
  cmp._repr_pretty_(p, False)
  assert p.out == text


def test_compare_metrics_minimal_and_float32():
  rng = np.random.default_rng(3)
  acc = rng.uniform(0.5, 0.9, 10).astype(np.float32)
  s = (acc + rng.normal(0, 0.05, 10)).astype(np.float32)
  cmp = compare.compare_metrics({"m": s}, acc, num_resamples=100)
  assert [r["name"] for r in cmp.rows] == ["m", "random"]
  assert cmp.candidates == [str(i) for i in range(10)] and cmp.pool_size is None
  assert cmp.row("m")["pooled"] is None and "pools" not in str(cmp)
  ref = compare.compare_metrics({"m": s.astype(np.float64)}, acc.astype(np.float64),
                                num_resamples=100)
  for k in ("kendall", "pearson", "weighted_tau"):
    np.testing.assert_allclose(cmp.row("m")[k]["estimate"], ref.row("m")[k]["estimate"],
                               atol=1e-6)
  json.dumps(cmp.to_dict(), allow_nan=False)
  # Same width for every candidate: the width baseline is undefined, not an error.
  cmp = compare.compare_metrics({"m": s}, acc, widths=[768] * 10, num_resamples=50)
  assert cmp.row("width")["status"] == "undefined: constant scores"
  with pytest.raises(ValueError, match="no metric"):
    compare.compare_metrics({"m": np.ones(10)}, acc, num_resamples=50).best()


def test_compare_metrics_errors(comparison):
  acc = np.linspace(0.5, 0.9, 5)
  s = {"m": np.arange(5.0)}
  with pytest.raises(ValueError, match="constant"):
    compare.compare_metrics(s, np.full(5, 0.7))
  with pytest.raises(ValueError, match="NaN"):
    compare.compare_metrics(s, np.array([0.5, np.nan, 0.6, 0.7, 0.8]))
  with pytest.raises(ValueError, match="5 candidates"):
    compare.compare_metrics({"m": np.arange(4.0)}, acc)
  with pytest.raises(ValueError, match="names"):
    compare.compare_metrics(s, acc, names=["a", "b"])
  with pytest.raises(ValueError, match="widths"):
    compare.compare_metrics(s, acc, widths=[1, 2, 3])
  with pytest.raises(ValueError, match="clash"):
    compare.compare_metrics({"random": np.arange(5.0)}, acc)
  with pytest.raises(ValueError, match="non-empty"):
    compare.compare_metrics({}, acc)
  with pytest.raises(ValueError, match="pool_size"):
    compare.compare_metrics(s, acc, pool_size=6)
  with pytest.raises(ValueError, match="confidence"):
    compare.compare_metrics(s, acc, confidence=95)
  with pytest.raises(ValueError, match="num_resamples"):
    compare.compare_metrics(s, acc, num_resamples=0)
  with pytest.raises(ValueError, match="unknown statistic"):
    comparison.best("spearman")
  with pytest.raises(ValueError, match="no row"):
    comparison.row("nope")


def test_compare_metrics_plot(tmp_path, comparison):
  matplotlib = pytest.importorskip("matplotlib")
  matplotlib.use("Agg")
  cmp = comparison
  path = tmp_path / "cmp.png"
  fig = cmp.plot(str(path))
  assert path.stat().st_size > 1000
  ax = fig.axes[0]
  labels = [t.get_text() for t in ax.get_yticklabels()]
  assert labels == ["good", "noise", "broken", "flat", "width", "params"]  # top to bottom
  assert [t.get_position()[1] for t in ax.get_yticklabels()] == [5, 4, 3, 2, 1, 0]
  legend = [t.get_text() for t in ax.get_legend().get_texts()]
  assert "metric" in legend and "static baseline" in legend
  assert any(t.startswith("random ranking") for t in legend)
  hatched = [p for p in ax.patches if p.get_hatch()]
  assert len(hatched) == 2  # width and params
  fig2 = cmp.plot(statistic="pearson")
  assert fig2 is not fig
  with pytest.raises(ValueError, match="statistic"):
    cmp.plot(statistic="regret")
  import matplotlib.pyplot as plt  # noqa: PLC0415
  plt.close("all")
