"""The measured recommendation (tj.recommended) and rank averages."""

import copy
import importlib.util
import json
import pathlib
import sys

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


# The recommendation is data: transrate_jax/data/recommended.json, written by the benchmark.
BENCH = pathlib.Path(__file__).resolve().parent.parent / "benchmarks"
RESULTS = BENCH / "results" / "real_joint_selection.json"
SHIPPED = pathlib.Path(recommend.__file__).resolve().parent.parent / "data" / recommend.DATA_FILE


def _joint_selection_script():
  spec = importlib.util.spec_from_file_location("_bench_real_joint_selection",
                                                BENCH / "real_joint_selection.py")
  module = importlib.util.module_from_spec(spec)
  sys.path.insert(0, str(BENCH))
  spec.loader.exec_module(module)
  return module


def test_shipped_recommendation_is_what_the_benchmark_derives(tmp_path, capsys):
  # A hand edit of the file, or results rerun without --write-recommendation, fails here.
  bench = _joint_selection_script()
  derived = bench.derive_recommendation(json.loads(RESULTS.read_text()))
  assert json.loads(json.dumps(derived)) == recommend._load_file()  # noqa: SLF001
  # The command writes the shipped file byte for byte, from the committed results alone.
  out = tmp_path / "recommended.json"
  assert bench.main(["--out", str(RESULTS.parent), "--write-recommendation", str(out)]) == 0
  assert out.read_text() == SHIPPED.read_text()
  assert "knn_accuracy (new)" in capsys.readouterr().out


def test_recommended_returns_what_the_file_says():
  doc = recommend._load_file()  # noqa: SLF001
  assert doc["schema"] == recommend.SCHEMA and doc["source"]["tasks"]
  for task in recommend.TASKS:
    entry, rec = doc["recommendations"][task], tj.recommended(task)
    assert rec.metrics == tuple(entry["metrics"]) and rec.width_fair == entry["width_fair"]
    assert entry["held_out"] is None and rec.data["held_out"] is None
    ev = entry["evidence"]
    assert rec.data["evidence"]["kendall"] == ev["kendall"]
    assert rec.data["evidence"]["runners_up"][0]["variant"] == ev["runners_up"][0]["variant"]
    assert rec.evidence == recommend.evidence_line(task, ev) and "\n" not in rec.evidence
    assert f"Kendall {ev['kendall']:.2f}" in rec.evidence
    if ev["interval"] is not None:
      assert f"[{ev['interval'][0]:.2f}, {ev['interval'][1]:.2f}]" in rec.evidence
    with pytest.raises(TypeError):  # read-only: the cached recommendation cannot be edited
      rec.data["evidence"]["kendall"] = 1.0
  assert tj.recommended("layer") is tj.recommended("layer")  # read once


@pytest.fixture
def fresh_recommendations():
  recommend._recommendations.cache_clear()  # noqa: SLF001
  yield
  recommend._recommendations.cache_clear()  # noqa: SLF001


_SHIPPED_DOC = recommend._load_file  # noqa: SLF001  (the real loader, before any monkeypatch)


def _edited(edit):
  doc = copy.deepcopy(_SHIPPED_DOC())
  edit(doc)
  return doc


@pytest.mark.parametrize("edit,match", [
    (lambda d: d.update(schema=2), "has schema 2; this version of transrate_jax reads schema 1"),
    (lambda d: d.pop("schema"), "has schema None"),
    (lambda d: d["recommendations"].pop("layer"), "must map exactly"),
    (lambda d: d.pop("rule"), "rule: expected a string"),
    (lambda d: d["source"].update(tasks=[]), "source"),
    (lambda d: d["recommendations"]["layer"]["evidence"].update(num_stages=None),
     "layer.evidence.num_stages"),
    (lambda d: d["recommendations"]["model"].pop("evidence"), r"model: missing \['evidence'\]"),
    (lambda d: d["recommendations"]["joint"].update(metrics=[]), "joint.metrics"),
    (lambda d: d["recommendations"]["joint"].update(width_fair="max"), "joint.width_fair"),
    (lambda d: d["recommendations"]["layer"]["evidence"].update(kendall="0.8"),
     "layer.evidence.kendall"),
    (lambda d: d["recommendations"]["model"]["evidence"].update(interval=[1.0, 0.5]),
     "model.evidence.interval"),
    (lambda d: d["recommendations"]["model"]["evidence"]["runners_up"].append({"variant": "x"}),
     r"runners_up\[2\]"),
    (lambda d: d["recommendations"]["model"].update(held_out={"tasks": {}}), "model.held_out"),
])
def test_malformed_recommendation_file_raises(edit, match, monkeypatch, fresh_recommendations):
  monkeypatch.setattr(recommend, "_load_file", lambda: _edited(edit))
  with pytest.raises(ValueError, match=match):
    tj.recommended("model")


def test_unreadable_file_and_held_out_evidence(monkeypatch, fresh_recommendations):
  def unreadable():
    raise json.JSONDecodeError("Expecting value", "", 0)
  monkeypatch.setattr(recommend, "_load_file", unreadable)
  with pytest.raises(ValueError, match="cannot read transrate_jax/data/recommended.json"):
    tj.recommended()
  recommend._recommendations.cache_clear()  # noqa: SLF001
  # The cross-task benchmark's held-out numbers, once written, join the evidence line.
  held = {"protocol": "leave-one-task-out", "tasks": {
      "mnist": {"variant": "regularized_hscore@pca-min", "kendall": 0.81,
                "interval": [0.7, 0.9], "top1_regret": 0.01},
      "cifar10": {"variant": "parc", "kendall": 0.5, "interval": None, "top1_regret": None}}}
  monkeypatch.setattr(recommend, "_load_file", lambda: _edited(
      lambda d: d["recommendations"]["joint"].update(held_out=held)))
  rec = tj.recommended("joint")
  assert rec.evidence.endswith("; held out (leave-one-task-out): mnist 0.81, cifar10 0.50")
  assert rec.data["held_out"]["tasks"]["cifar10"]["variant"] == "parc"


def _row(name, kendall, regret, low=None, high=None, kind="metric"):
  k = None if kendall is None else {"estimate": kendall, "low": low if low is not None else
                                    kendall - 0.1, "high": high if high is not None else 1.0}
  return {"name": name, "kind": kind, "kendall": k, "top1_regret": regret}


def test_derivation_rule_and_tie_break():
  bench = _joint_selection_script()
  table = {"candidates": ["p", "q", "r"], "confidence": 0.95, "rows": [
      _row("b", 0.8, 0.02), _row("a@pca-min", 0.8, 0.02), _row("c", 0.8, 0.05),
      _row("transrate@official", 0.99, 0.0), _row("rankavg(all)@pca-64", 0.8, 0.05),
      _row("a", 0.3, 0.0), _row("c@pca-min", None, None),
      _row("width", None, None, kind="baseline"), _row("random", 0.0, 0.3, kind="random")]}
  result = {
      "task": {"dataset": "toy"}, "candidates": ["p", "q"], "metrics": ["a", "b", "c"],
      "rank_averages": {"rankavg(all)": "all"}, "model": table,
      "joint": dict(table, rows=table["rows"][:3] + [_row("width", -0.2, 0.1, kind="baseline")]),
      "probe": {"p|s0": 0.5, "p|s1": 0.6, "q|s0": 0.4},
      "layer": {"candidates": ["p", "q"], "width_baseline_mean_kendall": None,
                "mean_kendall": {"a": 0.1, "rankavg(all)@pca-64": 0.7, "b@pca-64": 0.7},
                "mean_top1_regret": {"a": 0.0, "rankavg(all)@pca-64": 0.01, "b@pca-64": 0.01}}}
  recs = bench.derive_recommendation(result)["recommendations"]
  # The official preset is no candidate; a tie at 0.8 goes to the smaller regret, then the name.
  assert recs["model"]["variant"] == "a@pca-min"
  assert (recs["model"]["metrics"], recs["model"]["width_fair"]) == (["a"], "min")
  ev = recs["model"]["evidence"]
  assert ev["raw"] == {"variant": "a", "kendall": 0.3}
  assert [r["variant"] for r in ev["runners_up"]] == ["b", "c"]  # one per other metric
  assert ev["others_inside_interval"] == 3 and ev["width_baseline"] is None
  assert recs["joint"]["evidence"]["width_baseline"] == -0.2
  # A rank average of "all" names its members; ties in layer go to the first name.
  layer = recs["layer"]
  assert layer["variant"] == "b@pca-64" and layer["width_fair"] == 64
  assert layer["evidence"]["num_stages"] == [1, 2] and layer["evidence"]["interval"] is None
  assert layer["evidence"]["runners_up"][0]["variant"] == "rankavg(all)@pca-64"
  doc = json.loads(json.dumps(bench.derive_recommendation(result)))
  assert recommend.from_data(doc)["layer"].metrics == ("b",)  # what the library reads back
  tied = dict(result, layer=dict(result["layer"], mean_kendall={"rankavg(all)@pca-64": 0.9}))
  assert bench.derive_recommendation(tied)["recommendations"]["layer"]["metrics"] == [
      "a", "b", "c"]
  with pytest.raises(ValueError, match="model-selection table"):
    bench.derive_recommendation({k: v for k, v in result.items() if k != "model"})
