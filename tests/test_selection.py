"""layer_sweep, rank_models, their result object, and the demo (small)."""

import numpy as np
import pytest

import reference
import transrate_jax as tj
from transrate_jax import zoo
from transrate_jax.capture import intermediates

MODEL = "cnn_s_digits04"


@pytest.fixture(scope="module")
def target():
  x, y, _, _ = zoo.load_target_task()
  return x[:160], y[:160]


@pytest.fixture(scope="module")
def sweep_result(target):
  x, y = target
  return tj.layer_sweep(zoo.load(MODEL), x, y, metrics=("transrate",), progress=False)


def test_layer_sweep_equals_transrate_many(target, sweep_result):
  x, y = target
  feats = intermediates(zoo.load(MODEL), x, progress=False)
  many = tj.transrate_many(feats, y, progress=False)
  assert sweep_result.names == list(feats)
  np.testing.assert_allclose(sweep_result.scores["transrate"],
                             [float(many[k]) for k in feats], rtol=1e-6)
  # ... and the float64 oracle on one layer.
  name = sweep_result.names[1]
  np.testing.assert_allclose(sweep_result.scores["transrate"][1],
                             reference.transrate(np.asarray(feats[name], np.float64), y),
                             rtol=2e-4)


def test_result_object(sweep_result, tmp_path):
  s = sweep_result.scores["transrate"]
  assert sweep_result.best() == sweep_result.names[int(np.argmax(s))]
  assert sweep_result.ranking()[0] == sweep_result.best()
  text = str(sweep_result)
  for name in sweep_result.names:
    assert name in text
  d = sweep_result.to_dict()
  assert d["names"] == sweep_result.names and len(d["scores"]["transrate"]) == len(s)
  fig = sweep_result.plot(tmp_path / "layers.png")
  assert (tmp_path / "layers.png").stat().st_size > 1000
  assert fig is not None
  with pytest.raises(ValueError, match="unknown metric"):
    sweep_result.best("nope")


def test_metric_options_go_to_their_metric(target):
  x, y = target
  model = zoo.load(MODEL)
  r = tj.layer_sweep(model, x, y, layers=["blocks/1"], metrics=("transrate", "logme"),
                     metric_options={"transrate": {"eps": 1e-2, "preset": "tllib"},
                                     "logme": {"preset": "tllib"}}, progress=False)
  feats = intermediates(model, x, layers=["blocks/1"], progress=False)
  np.testing.assert_allclose(r.scores["transrate"][0],
                             float(tj.transrate(feats["blocks/1"], y, eps=1e-2, preset="tllib")),
                             rtol=1e-6)
  np.testing.assert_allclose(r.scores["logme"][0],
                             float(tj.logme(feats["blocks/1"], y, preset="tllib")), rtol=1e-6)
  # An option the metric does not have names the metric (no routing by parameter name).
  with pytest.raises(ValueError, match="metric 'logme' has no option"):
    tj.layer_sweep(model, x, y, layers=["blocks/1"], metrics=("transrate", "logme"),
                   metric_options={"logme": {"eps": 1e-2}}, progress=False)
  with pytest.raises(ValueError, match="not among the metrics"):
    tj.layer_sweep(model, x, y, layers=["blocks/1"], metric_options={"logme": {}},
                   progress=False)


def test_rank_models_defaults_to_penultimate(target):
  x, y = target
  names = ["mlp_s_digits04", MODEL]
  result = tj.rank_models({n: zoo.load(n) for n in names}, x, y, progress=False)
  assert result.names == names
  assert result.layers == [zoo.info(n)["penultimate"] for n in names]
  for i, n in enumerate(names):
    feats = intermediates(zoo.load(n), x, layers=[result.layers[i]], progress=False)
    np.testing.assert_allclose(result.scores["transrate"][i],
                               float(tj.transrate(feats[result.layers[i]], y)), rtol=1e-4)
  assert "layer" in result.table()


def test_bad_inputs(target):
  x, y = target
  model = zoo.load(MODEL)
  with pytest.raises(ValueError, match="160 samples but labels has 159"):
    tj.layer_sweep(model, x, y[:-1], progress=False)
  with pytest.raises(ValueError, match="available"):
    tj.layer_sweep(model, x, y, layers=["no_such_layer"], progress=False)
  with pytest.raises(ValueError):
    tj.layer_sweep(model, np.zeros((160, 3)), y, progress=False)


def test_demo_small(tmp_path):
  from transrate_jax._src import zoo_demo as demo
  out = demo.run_demo(models=["mlp_s_digits04", "cnn_s_digits04", "mlp_m_shuffled"],
                      metrics=("transrate", "hscore", "leep"), probe_steps=50,
                      plot_path=str(tmp_path / "demo.png"), progress=False, verbose=False)
  assert (tmp_path / "demo.png").stat().st_size > 1000
  for metric, c in out["correlations"].items():
    for key in ("pearson", "kendall", "weighted_tau"):
      assert np.isfinite(c[key]) and -1.0 <= c[key] <= 1.0, (metric, key, c[key])
  assert all(0.0 <= a <= 1.0 for a in out["accuracy"])
