"""The measured recommendation (tj.recommended) and rank averages."""

import numpy as np
import pytest
import scipy.stats

import transrate_jax as tj
from transrate_jax._src import recommend
from transrate_jax._src import registry


def test_rank_average_matches_scipy_rankdata():
  rng = np.random.default_rng(0)
  scores = {"a": rng.normal(size=9), "b": np.round(rng.normal(size=9), 1) * 1e6,
            "c": np.array([1, 1, 2, 2, 2, 0, 5, 5, 3.0])}  # ties share their mean rank
  want = np.mean([scipy.stats.rankdata(v) - 1 for v in scores.values()], axis=0)
  np.testing.assert_allclose(tj.rank_average(scores), want, rtol=0, atol=1e-12)
  # Only the order of each metric counts: a monotone map of one metric changes nothing.
  moved = dict(scores, b=np.exp(scores["b"] / 1e6))
  np.testing.assert_allclose(tj.rank_average(moved), tj.rank_average(scores))
  for bad, match in (({}, "empty"), ({"a": [1.0, np.nan]}, "NaN"),
                     ({"a": [1, 2], "b": [1, 2, 3]}, "shapes"), ({"a": 1.0}, "shapes")):
    with pytest.raises(ValueError, match=match):
      tj.rank_average(bad)


def test_recommendation_for_each_task_is_registered_and_scores():
  rng = np.random.default_rng(1)
  y = np.arange(90) % 3
  feats = {f"c{i}": rng.normal(size=(90, 8 + 4 * i)) + (i + 1) * np.eye(3, 8 + 4 * i)[y]
           for i in range(4)}
  for task in recommend.TASKS:
    rec = tj.recommended(task)
    assert rec.task == task and rec.evidence
    assert all(m in registry.registered_metrics("features") for m in rec.metrics)
    assert recommend.parse_variant(rec.name) == (rec.metrics, rec.width_fair)
    kw = rec.kwargs()
    assert set(kw) == {"metrics", "width_fair"}
    s = rec.score_features(feats, y)
    assert s.shape == (4,) and np.all(np.isfinite(s))
    # The same as scoring by hand: the metrics on the width-fair features, then rank-averaged.
    res = tj.score_many(rec.metrics[0], tj.width_fair_features(feats, rec.width_fair), y)
    if len(rec.metrics) == 1 and registry.get_metric(rec.metrics[0]).across_candidates is None:
      np.testing.assert_allclose(s, [float(res[k]) for k in feats], rtol=1e-6)
  with pytest.raises(ValueError, match="task must be one of"):
    tj.recommended("pick")


def test_parse_variant_and_score_errors():
  assert recommend.parse_variant("gbc") == (("gbc",), None)
  assert recommend.parse_variant("rankavg(a,b)@pca-min") == (("a", "b"), "min")
  assert recommend.parse_variant("logme@pca-64") == (("logme",), 64)
  with pytest.raises(ValueError, match="width mode"):
    recommend.parse_variant("logme@official")
  rec = recommend.Recommendation("joint", ("a", "b"), "min", "test")
  assert rec.name == "rankavg(a,b)@pca-min"
  np.testing.assert_allclose(rec.score({"a": [1, 2, 3], "b": [3, 2, 1]}), [1, 1, 1])
  with pytest.raises(ValueError, match="lack"):
    rec.score({"a": [1, 2, 3]})
