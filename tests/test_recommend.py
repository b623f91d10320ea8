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
RESULTS = BENCH / "results" / "recommendation.json"
SHIPPED = pathlib.Path(recommend.__file__).resolve().parent.parent / "data" / recommend.DATA_FILE


def _recommendation_script():
  spec = importlib.util.spec_from_file_location("_bench_recommendation",
                                                BENCH / "recommendation.py")
  module = importlib.util.module_from_spec(spec)
  sys.path.insert(0, str(BENCH))
  spec.loader.exec_module(module)
  return module


def test_shipped_recommendation_is_what_the_benchmark_derives(tmp_path, capsys):
  # A hand edit of the file, or results rerun without --write-recommendation, fails here.
  bench = _recommendation_script()
  derived = bench.derive_recommendation(json.loads(RESULTS.read_text()))
  assert json.loads(json.dumps(derived)) == recommend._load_file()  # noqa: SLF001
  # The command writes the shipped file byte for byte, from the committed results alone.
  out = tmp_path / "recommended.json"
  assert bench.main(["--out", str(RESULTS.parent), "--write-recommendation", str(out)]) == 0
  assert out.read_text() == SHIPPED.read_text()
  assert f"{tj.recommended('model').name} (new)" in capsys.readouterr().out


def test_recommended_returns_what_the_file_says():
  doc = recommend._load_file()  # noqa: SLF001
  assert doc["schema"] == recommend.SCHEMA == 2
  tasks = [t["name"] for t in doc["source"]["tasks"]]
  assert len(tasks) >= 4 and {t["modality"] for t in doc["source"]["tasks"]} == {"image", "text"}
  for task in recommend.TASKS:
    entry, rec = doc["recommendations"][task], tj.recommended(task)
    assert rec.metrics == tuple(entry["metrics"]) and rec.width_fair == entry["width_fair"]
    ev, held = entry["evidence"], entry["held_out"]
    assert list(ev["tasks"]) == tasks and list(held["tasks"]) == tasks
    # The mean is the mean of the per-task numbers it summarises.
    assert ev["mean_kendall"] == pytest.approx(
        np.mean([t["kendall"] for t in ev["tasks"].values()]), abs=1e-4)
    assert rec.data["evidence"]["mean_kendall"] == ev["mean_kendall"]
    assert rec.data["held_out"]["tasks"][tasks[0]]["best"]["variant"] == (
        held["tasks"][tasks[0]]["best"]["variant"])
    assert rec.evidence == recommend.evidence_line(task, entry) and "\n" not in rec.evidence
    assert f"mean Kendall {ev['mean_kendall']:.2f} over {len(tasks)} tasks" in rec.evidence
    for name, t in held["tasks"].items():  # every held-out task is quoted
      k = "no score" if t["kendall"] is None else f"{t['kendall']:.2f}"
      assert f"{name}" in rec.evidence and k in rec.evidence
      # The best in hindsight is at least as good as the choice made without the task.
      assert t["kendall"] is None or t["best"]["kendall"] >= t["kendall"]
    with pytest.raises(TypeError):  # read-only: the cached recommendation cannot be edited
      rec.data["evidence"]["mean_kendall"] = 1.0
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


def _first(d):
  return next(iter(d.values()))


@pytest.mark.parametrize("edit,match", [
    (lambda d: d.update(schema=1), "has schema 1; this version of transrate_jax reads schema 2"),
    (lambda d: d.pop("schema"), "has schema None"),
    (lambda d: d["recommendations"].pop("layer"), "must map exactly"),
    (lambda d: d.pop("rule"), "rule: expected a string"),
    (lambda d: d["source"].update(tasks=[]), "source"),
    (lambda d: d["recommendations"]["model"].pop("evidence"), r"model: missing \['evidence'\]"),
    (lambda d: d["recommendations"]["joint"].update(metrics=[]), "joint.metrics"),
    (lambda d: d["recommendations"]["joint"].update(width_fair="max"), "joint.width_fair"),
    (lambda d: d["recommendations"]["layer"]["evidence"].update(mean_kendall="0.8"),
     "layer.evidence.mean_kendall"),
    (lambda d: d["recommendations"]["layer"]["evidence"].update(tasks={}),
     "layer.evidence.tasks"),
    (lambda d: _first(d["recommendations"]["model"]["evidence"]["tasks"]).update(
        interval=[1.0, 0.5]), r"model.evidence.tasks.\w+.interval"),
    (lambda d: _first(d["recommendations"]["model"]["evidence"]["tasks"]).pop("num_candidates"),
     "num_candidates"),
    (lambda d: d["recommendations"]["model"]["evidence"]["runners_up"].append({"variant": "x"}),
     r"runners_up\[3\]"),
    (lambda d: d["recommendations"]["model"]["evidence"]["baselines"].update(width="high"),
     "model.evidence.baselines.width"),
    (lambda d: d["recommendations"]["model"].update(held_out=None), "model.held_out"),
    (lambda d: d["recommendations"]["model"]["held_out"].update(tasks={}), "model.held_out"),
    (lambda d: _first(d["recommendations"]["joint"]["held_out"]["tasks"]).update(
        top1_regret="0"), r"joint.held_out.tasks.\w+.top1_regret"),
    (lambda d: _first(d["recommendations"]["joint"]["held_out"]["tasks"]).pop("best"),
     r"joint.held_out.tasks.\w+.best"),
])
def test_malformed_recommendation_file_raises(edit, match, monkeypatch, fresh_recommendations):
  monkeypatch.setattr(recommend, "_load_file", lambda: _edited(edit))
  with pytest.raises(ValueError, match=match):
    tj.recommended("model")


def test_unreadable_file_and_held_out_evidence_line(monkeypatch, fresh_recommendations):
  def unreadable():
    raise json.JSONDecodeError("Expecting value", "", 0)
  monkeypatch.setattr(recommend, "_load_file", unreadable)
  with pytest.raises(ValueError, match="cannot read transrate_jax/data/recommended.json"):
    tj.recommended()
  # The held-out numbers as the line quotes them: the variant chosen there when it is not the
  # shipped one, a task where it has no score, and how many tasks meet the regret target.
  entry = {"variant": "gbc", "evidence": {
      "ground_truth": "probe accuracy", "scope": "candidates", "mean_kendall": 0.5,
      "mean_top1_regret": 0.02, "baselines": {"width": 0.1, "params": None},
      "tasks": {"a": {"kendall": 0.6}, "b": {"kendall": 0.4}}},
      "held_out": {"protocol": "leave-one-task-out: ...", "max_top1_regret": 0.01, "tasks": {
          "a": {"variant": "gbc", "kendall": 0.55, "top1_regret": 0.0},
          "b": {"variant": "logme@pca-min", "kendall": None, "top1_regret": None}}}}
  line = recommend.evidence_line("model", entry)
  assert line == ("mean Kendall 0.50 over 2 tasks (Kendall with probe accuracy, candidates: "
                  "a 0.60, b 0.40), mean top-1 regret 0.020 (static baselines: width 0.10); held "
                  "out (leave-one-task-out): a 0.55 regret 0.000, b (logme@pca-min) no score; "
                  "top-1 regret within 0.01 on 1 of 2")


def _row(name, kendall, regret, kind="metric"):
  k = None if kendall is None else {"estimate": kendall, "low": kendall - 0.1, "high": 1.0}
  return {"name": name, "kind": kind, "kendall": k, "top1_regret": regret}


def _task(rows, layer, baselines=(0.1, 0.2)):
  """One task's tables as benchmarks/recommendation.py's run_task writes them."""
  table = {"candidates": ["p", "q", "r"], "rows": [_row(*r) for r in rows] + [
      _row("width", baselines[0], 0.1, kind="baseline"),
      _row("params", baselines[1], 0.1, kind="baseline"), _row("random", 0.0, 0.3, "random")]}
  return {"model": table, "joint": table, "layer": {
      "candidates": ["p", "q"],
      "kendall_per_candidate": {v: list(k) for v, k in layer.items()},
      "top1_regret_per_candidate": {v: [0.0, 0.02] for v in layer},
      "baselines_per_candidate": {"width": [0.0, float("nan")], "depth": [0.5, 0.3]}}}


def test_leave_one_task_out_rule_and_tie_break():
  bench = _recommendation_script()
  rows = {  # variant -> Kendall on tasks t1, t2, t3
      "a": (0.9, 0.9, 0.1), "b@pca-min": (0.6, 0.6, 0.8), "c": (0.6, 0.6, 0.8),
      "transrate@official": (1.0, 1.0, 1.0), "d": (None, 0.95, 0.95)}
  regret = {"a": 0.0, "b@pca-min": 0.01, "c": 0.05, "transrate@official": 0.0, "d": 0.0}
  tasks = {t: _task([(v, k[i], regret[v]) for v, k in rows.items()],
                    {"a": (0.5, 0.5), "e@pca-64": (0.7, 0.7 - 0.2 * i), "d": (float("nan"), 1)},
                    baselines=(0.1 * i, 0.95))
           for i, t in enumerate(("t1", "t2", "t3"))}
  loto = bench.leave_one_task_out(tasks, num_resamples=200)
  model = loto["model"]
  # On all tasks b@pca-min and c tie at a mean of 0.667, above a (0.633); the tie goes to the
  # smaller mean regret. The official preset is never chosen, and d, with no Kendall on t1, is
  # not eligible.
  assert model["chosen_on_all"]["variant"] == "b@pca-min"
  assert model["chosen_on_all"]["mean_kendall"] == pytest.approx(2.0 / 3.0, abs=1e-4)
  assert [r["variant"] for r in model["chosen_on_all"]["runners_up"]] == ["c", "a"]
  held = model["held_out"]
  # Holding out t3, a wins on t1 and t2 and is scored on t3, where it ranks badly.
  assert held["t3"]["variant"] == "a" and held["t3"]["kendall"] == pytest.approx(0.1)
  assert held["t3"]["interval"] == [pytest.approx(0.0), 1.0] and held["t3"]["top1_regret"] == 0.0
  assert held["t3"]["best"]["variant"] == "d"  # the best in hindsight on t3 (d has a score there)
  assert held["t3"]["baselines"] == {"width": pytest.approx(0.2), "params": 0.95}
  assert held["t3"]["meets_regret_target"] and not held["t3"]["above_every_baseline"]
  # Holding out t1, d leads on t2 and t3 but has no score on t1: reported as such, not replaced.
  assert held["t1"]["variant"] == "d" and held["t1"]["kendall"] is None
  assert held["t1"]["meets_regret_target"] is None and held["t1"]["best"]["variant"] == "a"
  # Layer: means over candidates; a variant with a NaN on one candidate is left out of that task.
  layer = loto["layer"]
  assert layer["chosen_on_all"]["variant"] == "e@pca-64"
  assert layer["chosen_on_all"]["tasks"]["t2"]["kendall"] == pytest.approx(0.6)
  assert layer["chosen_on_all"]["tasks"]["t2"]["top1_regret"] == pytest.approx(0.01)
  lo, hi = layer["chosen_on_all"]["tasks"]["t2"]["interval"]
  assert lo == pytest.approx(0.5) and hi == pytest.approx(0.7)  # candidates resampled
  assert layer["chosen_on_all"]["baselines"] == {"width": 0.0, "depth": 0.4}
  assert layer["held_out"]["t1"]["baselines"] == {"width": 0.0, "depth": 0.4}
  # What the library reads back.
  result = {"tasks": {t: dict(r, task={"dataset": t}, modality="image", candidates=["p", "q", "r"],
                              probe={"p|s": 0.5}) for t, r in tasks.items()},
            "metrics": ["a", "b", "c", "d", "e"], "rank_averages": {}, "leave_one_task_out": loto}
  doc = json.loads(json.dumps(bench.derive_recommendation(result)))
  recs = recommend.from_data(doc)
  assert recs["model"].metrics == ("b",) and recs["model"].width_fair == "min"
  assert recs["layer"].width_fair == 64
  assert "t3 (a) 0.10 regret 0.000" in recs["model"].evidence
