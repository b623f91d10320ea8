"""The paper-protocol benchmarks (model/layer selection, cost) and the fine-tuning ground truth.

The benchmark scripts run in their ``--quick`` mode into ``tmp_path``; the tests check that every
table entry is a finite number in [-1, 1] equal to the library's evaluation functions applied to
the scores and accuracies the script stored (no expected correlation is hard-coded).
"""

import importlib.util
import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from flax import traverse_util

from transrate_jax import zoo
from transrate_jax._src import capture
from transrate_jax._src import evaluation
from transrate_jax._src import finetune

BENCH = pathlib.Path(__file__).resolve().parent.parent / "benchmarks"


def _load_script(name):
  spec = importlib.util.spec_from_file_location(f"_bench_{name}", BENCH / f"{name}.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


@pytest.fixture(scope="module")
def target():
  return zoo.load_target_task("digits59")


# ---------------------------------------------------------------------------------------------
# finetune.py


@pytest.mark.parametrize("name", ["mlp_m_shuffled", "cnn_s_digits04", "rescnn_s_mod3"])
def test_forward_to_matches_capture_at_every_cut_point(name, target):
  model, info = zoo.load(name), zoo.info(name)
  x = target[0][:16]
  captured = capture.intermediates(model, x, progress=False)
  cuts = finetune.cut_points(info)
  assert len(cuts) >= 4
  for layer in cuts:
    out = finetune.forward_to(model, jnp.asarray(x), arch=info["arch"], layer=layer)
    pooled = out if out.ndim == 2 else jnp.mean(out, axis=(1, 2))
    np.testing.assert_allclose(np.asarray(pooled), np.asarray(captured[layer]), rtol=1e-4,
                               atol=1e-5, err_msg=f"{name} {layer}")
  with pytest.raises(ValueError, match="not a cut point"):
    finetune.forward_to(model, jnp.asarray(x), arch=info["arch"], layer="head")


def _flat_params(module):
  return traverse_util.flatten_dict(nnx.to_pure_dict(nnx.state(module, nnx.Param)))


def test_reinit_keeps_exactly_the_layers_up_to_the_cut():
  name = "rescnn_s_mod3"
  model, info = zoo.load(name), zoo.info(name)
  net = finetune.transfer_model(model, info, num_classes=5, layer="blocks/0/bn1", mode="reinit")
  old, new = _flat_params(model), _flat_params(net.backbone)
  kept = {"stem/conv", "blocks/0/conv1", "blocks/0/bn1"}
  for path, value in old.items():
    module = "/".join(str(p) for p in path[:-1])
    if module == "head":
      continue
    same = np.array_equal(np.asarray(value), np.asarray(new[path]))
    assert same == (module in kept), (module, same)
  assert net.head.kernel[...].shape == (16, 5)
  dropped = finetune.transfer_model(model, info, num_classes=7, layer="stem", mode="drop")
  assert dropped.head.kernel[...].shape == (16, 7)
  logits = dropped(jnp.asarray(np.zeros((3, 8, 8, 1), np.float32)))
  assert logits.shape == (3, 7)
  with pytest.raises(ValueError, match="mode"):
    finetune.transfer_model(model, info, num_classes=5, mode="freeze")


def test_finetune_learns_is_deterministic_and_modes_agree_at_the_penultimate_layer(target):
  name = "mlp_s_digits04"
  model, info = zoo.load(name), zoo.info(name)
  before = _flat_params(model)
  kw = dict(num_classes=5, epochs=20, seeds=(0,))
  acc = finetune.finetune_accuracy(model, info, *target, **kw)
  assert 0.5 < acc <= 1.0  # chance is 0.2 on the 5-class target
  assert finetune.finetune_accuracy(model, info, *target, **kw) == acc
  assert finetune.finetune_accuracy(model, info, *target, mode="reinit", **kw) == acc
  after = _flat_params(model)
  assert all(np.array_equal(before[k], after[k]) for k in before)  # the zoo model is untouched


# ---------------------------------------------------------------------------------------------
# Benchmark scripts, quick mode.


def _check_correlations(corr, scores, accuracy):
  assert set(corr) == set(scores)
  acc = np.asarray(accuracy, np.float64)
  assert np.all((acc >= 0) & (acc <= 1))
  for m, c in corr.items():
    s = np.asarray(scores[m], np.float64)
    assert np.all(np.isfinite(s)), m
    expected = {"pearson": evaluation.pearson(s, acc), "kendall": evaluation.kendall_tau(s, acc),
                "weighted_tau": evaluation.weighted_tau(s, acc),
                "relative_top_accuracy": evaluation.relative_top_accuracy(s, acc)}
    for key, value in expected.items():
      assert np.isfinite(c[key]) and -1.0 <= c[key] <= 1.0, (m, key, c[key])
      np.testing.assert_allclose(c[key], float(value), rtol=1e-12, atol=1e-12)
    assert c["top1_hit"] == float(bool(evaluation.top_k_hit(s, acc, k=1)))


def test_model_selection_quick(tmp_path):
  script = _load_script("model_selection")
  result = script.main(["--quick", "--out", str(tmp_path)])
  stored = json.loads((tmp_path / "model_selection.json").read_text())
  assert (tmp_path / "model_selection.png").stat().st_size > 0
  md = (tmp_path / "model_selection.md").read_text()
  assert "| Pearson |" in md and "| weighted Kendall |" in md
  assert "transrate" in stored["metrics"] and {"leep", "nce"} <= set(stored["metrics"])
  assert stored["device"]["jax_devices"]
  for r in stored["targets"].values():
    assert len(r["models"]) >= 3
    _check_correlations(r["correlations"]["finetune"], r["scores"], r["finetune_accuracy"])
    _check_correlations(r["correlations"]["probe"], r["scores"], r["probe_accuracy"])
  assert stored["targets"].keys() == result["targets"].keys()


def test_layer_selection_quick(tmp_path):
  script = _load_script("layer_selection")
  script.main(["--quick", "--out", str(tmp_path)])
  stored = json.loads((tmp_path / "layer_selection.json").read_text())
  assert (tmp_path / "layer_selection.png").stat().st_size > 0
  assert "| Kendall |" in (tmp_path / "layer_selection.md").read_text()
  for r in stored["models"].values():
    assert len(r["layers"]) >= 4 and "transrate" in r["scores"]
    assert r["layers"] == finetune.cut_points(zoo.info(r["model"]))
    for gt, acc in r["accuracy"].items():
      assert len(acc) == len(r["layers"])
      _check_correlations(r["correlations"][gt], r["scores"], acc)


def test_cost_quick(tmp_path):
  script = _load_script("cost")
  script.main(["--quick", "--out", str(tmp_path)])
  stored = json.loads((tmp_path / "cost.json").read_text())
  assert "speed-up over fine-tuning" in (tmp_path / "cost.md").read_text()
  summary = stored["summary"]
  assert summary["finetune"]["run_s"] > 0
  for m in stored["metrics"] + ["probe"]:
    r = summary[m]
    assert np.isfinite(r["speedup"]) and r["speedup"] > 0, m
    assert r["run_s"] > 0 and r["compile_s"] >= 0
    np.testing.assert_allclose(
        r["speedup"], summary["finetune"]["run_s"] / (summary["extraction"]["run_s"] + r["run_s"]))
  for row in stored["per_model"].values():
    for m in stored["metrics"]:
      assert np.isfinite(row[m]["value"])
