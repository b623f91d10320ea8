"""Layer aggregation (mean / best / last, as transformer-ranker) and the width-fair mode."""

import numpy as np
import pytest

import reference
import reference_pca
import transrate_jax as tj
from transrate_jax import zoo
from transrate_jax._src import selection
from transrate_jax.capture import intermediates

MODELS = ("cnn_s_digits04", "mlp_s_digits04")


@pytest.fixture(scope="module")
def target():
  x, y, _, _ = zoo.load_target_task()
  return x[:160], y[:160]


@pytest.fixture(scope="module")
def captured(target):
  x, _ = target
  return {m: {k: np.asarray(v) for k, v in intermediates(zoo.load(m), x, progress=False).items()}
          for m in MODELS}


def test_layer_sweep_aggregates(target, captured):
  x, y = target
  feats = captured[MODELS[0]]
  hidden = [k for k in feats if k != "output"]
  for how in ("best", "last"):
    r = tj.layer_sweep(zoo.load(MODELS[0]), x, y, metrics=("transrate", "logme"),
                       aggregate=how, progress=False)
    assert r.aggregated_by == how and set(r.aggregate) == {"transrate", "logme"}
    for m in ("transrate", "logme"):
      per_layer = {k: float(tj.score_many(m, {k: feats[k]}, y)[k]) for k in hidden}
      want = max(per_layer.values()) if how == "best" else per_layer[hidden[-1]]
      np.testing.assert_allclose(r.aggregate[m], want, rtol=1e-6)
    assert f"model score ({how} layer)" in str(r)
    assert r.to_dict()["aggregate"] == {m: float(v) for m, v in r.aggregate.items()}
  # "mean" averages the features of layers of one width (transformer-ranker's layermean).
  same = ["blocks/1/conv", "blocks/1", "pool"]
  r = tj.layer_sweep(zoo.load(MODELS[0]), x, y, layers=same, aggregate="mean", progress=False)
  mean = np.mean([feats[k].astype(np.float64) for k in same], axis=0)
  np.testing.assert_allclose(r.aggregate["transrate"], reference.transrate(mean, y), rtol=2e-4)
  with pytest.raises(ValueError, match="needs one width"):
    tj.layer_sweep(zoo.load(MODELS[0]), x, y, aggregate="mean", progress=False)
  with pytest.raises(ValueError, match="aggregate must be one of"):
    tj.layer_sweep(zoo.load(MODELS[0]), x, y, aggregate="max", progress=False)


def test_rank_models_by_aggregate(target, captured):
  x, y = target
  models = {m: zoo.load(m) for m in MODELS}
  best = tj.rank_models(models, x, y, layer="best", metrics=("transrate", "gbc"), progress=False)
  assert best.aggregated_by == "best"
  for m in MODELS:
    hidden = [k for k in captured[m] if k != "output"]
    per_layer = {k: float(tj.transrate(captured[m][k], y)) for k in hidden}
    i = MODELS.index(m)
    np.testing.assert_allclose(best.scores["transrate"][i], max(per_layer.values()), rtol=1e-4)
    assert best.layers[i] == max(per_layer, key=per_layer.get)
    assert best.dims[i] == captured[m][best.layers[i]].shape[1]
    np.testing.assert_allclose(list(best.layer_scores[m]["transrate"].values()),
                               list(per_layer.values()), rtol=1e-4)
  last = tj.rank_models(models, x, y, layer="last", progress=False)
  for i, m in enumerate(MODELS):
    hidden = [k for k in captured[m] if k != "output"]
    assert last.layers[i] == hidden[-1]
    np.testing.assert_allclose(  # float32 features: the float64 oracle to float32 round-off
        last.scores["transrate"][i],
        reference.transrate(captured[m][hidden[-1]].astype(np.float64), y), rtol=3e-4)
  # The mean over layers of one width, per model: the CNN's 16-wide ones (one name set for
  # every model picks only the MLP's first linear layer).
  same = {"cnn_s_digits04": ("blocks/1/conv", "blocks/1", "pool"),
          "mlp_s_digits04": ("blocks/0/linear",)}
  mean = tj.rank_models(models, x, y, layer="mean", metrics=("transrate", "logme"),
                        layers=lambda k: any(k in v for v in same.values()), progress=False)
  assert mean.layers == ["mean of 3 layers", "mean of 1 layer"]
  for i, m in enumerate(MODELS):
    avg = np.mean([captured[m][k].astype(np.float64) for k in same[m]], axis=0)
    np.testing.assert_allclose(mean.scores["transrate"][i], reference.transrate(avg, y),
                               rtol=3e-4)
  with pytest.raises(ValueError, match="needs one width"):
    tj.rank_models(models, x, y, layer="mean", progress=False)


def test_width_fair_projects_to_the_narrowest(captured):
  feats = {k: v for k, v in captured[MODELS[0]].items() if k != "output"}
  y = zoo.load_target_task()[1][:160]
  out = selection.width_fair_features(feats, "min")
  p = min(v.shape[1] for v in feats.values())
  assert {v.shape[1] for v in out.values()} == {p}
  for k in ("blocks/1", "neck"):  # exact principal components (signs fixed as the oracle's)
    want = reference_pca.pca_full(feats[k].astype(np.float64), p)
    got = selection.width_fair_features({k: feats[k].astype(np.float64)}, p)[k]
    np.testing.assert_allclose(np.abs(got), np.abs(want), atol=1e-8)
  r = selection.score_features(feats, y, metrics=("transrate",), width_fair="min")
  assert r.width_fair == "min" and set(r.dims) == {p}
  np.testing.assert_allclose(r.scores["transrate"],
                             [float(tj.transrate(out[k], y)) for k in feats], rtol=1e-5)
  # An int width: wider candidates reduced, narrower ones kept whole.
  r16 = selection.score_features(feats, y, metrics=("transrate",), width_fair=16)
  assert r16.dims == [min(v.shape[1], 16) for v in feats.values()]
  # TransRate is rotation invariant: a layer narrower than the width keeps its score.
  i = list(feats).index("blocks/0")
  np.testing.assert_allclose(r16.scores["transrate"][i], float(tj.transrate(feats["blocks/0"], y)),
                             rtol=1e-5)
  for bad in ("max", 0, -3, 2.5):
    with pytest.raises(ValueError, match="width_fair"):
      selection.score_features(feats, y, width_fair=bad)
