"""Which metric should I trust? The library's measured recommendation, and rank averages.

The recommendation is data, not code: ``transrate_jax/data/recommended.json``, written by
``python benchmarks/recommendation.py --write-recommendation`` from that benchmark's committed
results (``benchmarks/results/recommendation.json``): four real target tasks (MNIST and digits
images with ten image candidates, Rotten Tomatoes and BBC News texts with six text candidates,
each backbone with its published weights and randomly initialised), every registered feature
metric under each width mode, against linear-probe accuracy per stage. For each choice the rule
(stated in the file) takes the variant with the highest mean Kendall over the tasks; its
``held_out`` evidence is leave-one-task-out: the same rule on all tasks but one, scored on that one.

The file (schema :data:`SCHEMA`)::

  {"schema": 2,
   "source": {"benchmark", "results", "command", "tasks": [{"name", "dataset", ..., "candidates"}]},
   "rule": "...",
   "recommendations": {"model" | "layer" | "joint": {
     "variant": the benchmark's name of the variant ("metric", "rankavg(...)", "...@pca-min"),
     "metrics": [registered metric, ...], "width_fair": null | "min" | int,
     "evidence": {"ground_truth", "scope", "mean_kendall", "mean_top1_regret": null | float,
                  "tasks": {task: {"kendall", "interval": null | [low, high],
                                   "top1_regret": null | float, "num_candidates"}},
                  "runners_up": [{"variant", "kendall"}], "baselines": {name: null | float}},
     "held_out": {"protocol": str, "max_top1_regret": float,
                  "tasks": {task: {"variant", "kendall": null | float,
                                   "interval": null | [low, high], "top1_regret": null | float,
                                   "best": {"variant", "kendall", "interval", "top1_regret"},
                                   "baselines": {name: null | float}}}}}}}

For "layer", ``kendall`` and ``top1_regret`` are means over a task's candidates (each
candidate's stages ranked alone) and the interval resamples the candidates. ``baselines`` are the
static rankings (feature width, parameter count; depth for layers): their mean Kendall over the
tasks in ``evidence``, their Kendall on the held-out task in ``held_out``.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.resources
import json
import numbers
import types
from typing import Any, Dict, Mapping, Optional, Tuple, Union

import numpy as np

TASKS = ("model", "layer", "joint")
# The version of recommended.json's layout this module reads (and the benchmark writes).
SCHEMA = 2
DATA_FILE = "recommended.json"  # in transrate_jax/data


@dataclasses.dataclass(frozen=True)
class Recommendation:
  """What to score with, for one kind of choice.

  Attributes:
    task: "model" (which pre-trained model), "layer" (which layer of one model) or "joint"
      (which model and layer together).
    metrics: the registered metric(s); with several, candidates are ranked by their
      :func:`rank_average`.
    width_fair: the width mode (None, "min" or an int; see ``width_fair`` of ``layer_sweep``).
    evidence: the measurement behind it, in one line: the mean Kendall over the benchmark's
      tasks, and the Kendall and top-1 regret on each task when it was held out (chosen on the
      others); composed from ``data["evidence"]`` and ``data["held_out"]``.
    data: the numbers behind it, read-only: this task's entry of
      ``transrate_jax/data/recommended.json`` (``variant``, ``metrics``, ``width_fair``,
      ``evidence``: per-task Kendall, interval and top-1 regret, runners-up, static baselines;
      ``held_out``: the leave-one-task-out measurement; :doc:`/choosing` lists every key).
      Mappings are read-only and lists are tuples. None for a Recommendation built by hand.
  """
  task: str
  metrics: Tuple[str, ...]
  width_fair: Union[None, int, str]
  evidence: str
  data: Optional[Mapping[str, Any]] = dataclasses.field(default=None, compare=False, repr=False)

  @property
  def name(self) -> str:
    """``"metric"`` or ``"rankavg(a,b)"``, with ``@pca-min`` / ``@pca-<p>`` for a width mode."""
    base = self.metrics[0] if len(self.metrics) == 1 else f"rankavg({','.join(self.metrics)})"
    if self.width_fair is None:
      return base
    return f"{base}@pca-{self.width_fair}"

  def kwargs(self) -> Dict[str, Any]:
    """Keywords for ``layer_sweep`` / ``rank_models``: ``metrics`` and ``width_fair``."""
    return {"metrics": tuple(self.metrics), "width_fair": self.width_fair}

  def score_features(self, features: Mapping[str, Any], labels, *,
                     num_classes: Optional[int] = None) -> np.ndarray:
    """The recommended score of each of ``{name: [n, d_i]}`` (in order), higher is better.

    Scores every candidate with the recommended metric(s) under the recommended width mode
    (``layer_sweep``'s machinery), then :meth:`score`.
    """
    from transrate_jax._src import selection  # noqa: PLC0415

    res = selection.score_features(features, labels, metrics=self.metrics,
                                   width_fair=self.width_fair, num_classes=num_classes,
                                   progress=False)
    return self.score(res.scores)

  def score(self, scores: Mapping[str, Any]) -> np.ndarray:
    """The recommended score of each candidate from ``{metric: [m]}`` (a rank average if several)."""
    missing = [m for m in self.metrics if m not in scores]
    if missing:
      raise ValueError(f"the recommendation uses {list(self.metrics)}; scores lack {missing}.")
    if len(self.metrics) == 1:
      return np.asarray(scores[self.metrics[0]], np.float64)
    return rank_average({m: scores[m] for m in self.metrics})


def rank_average(scores_by_metric: Mapping[str, Any]) -> np.ndarray:
  """The mean over metrics of each candidate's rank (0 = lowest score), higher is better.

  Ranks are average ranks for ties (as ``scipy.stats.rankdata``, minus one), so a metric in its
  own units never dominates: only each metric's order counts.

  Args:
    scores_by_metric: ``{metric: [m] scores}`` (higher is better for each), all finite.

  Returns:
    [m] float64 mean ranks in ``[0, m - 1]``.

  Raises:
    ValueError: no metric, lengths that differ, or a NaN/inf score.
  """
  if not scores_by_metric:
    raise ValueError("scores_by_metric is empty.")
  arrays = {k: np.asarray(v, np.float64) for k, v in scores_by_metric.items()}
  lengths = {k: a.shape for k, a in arrays.items()}
  if len(set(lengths.values())) != 1 or next(iter(lengths.values())) == () or any(
      len(s) != 1 for s in lengths.values()):
    raise ValueError(f"every metric needs one [m] vector of scores; got shapes {lengths}.")
  bad = [k for k, a in arrays.items() if not np.all(np.isfinite(a))]
  if bad:
    raise ValueError(f"scores of {bad} contain NaN or inf: a rank average needs every score.")
  return np.mean([_average_ranks(a) for a in arrays.values()], axis=0)


def _average_ranks(a: np.ndarray) -> np.ndarray:
  order = np.argsort(a, kind="stable")
  ranks = np.empty(len(a), np.float64)
  ranks[order] = np.arange(len(a), dtype=np.float64)
  for v in np.unique(a):  # ties share the mean of their ranks
    tie = a == v
    if np.count_nonzero(tie) > 1:
      ranks[tie] = ranks[tie].mean()
  return ranks


def _load_file() -> Any:
  """The parsed ``transrate_jax/data/recommended.json``."""
  path = importlib.resources.files("transrate_jax") / "data" / DATA_FILE
  return json.loads(path.read_text(encoding="utf-8"))


@functools.lru_cache(maxsize=None)
def _recommendations() -> Dict[str, Recommendation]:
  """The recommendations of the shipped file, read and checked once."""
  try:
    doc = _load_file()
  except (OSError, ValueError) as e:
    raise ValueError(f"cannot read transrate_jax/data/{DATA_FILE}: {e}") from e
  return from_data(doc)


def from_data(doc: Any) -> Dict[str, Recommendation]:
  """``{task: Recommendation}`` from the parsed recommendation file, checked.

  Raises:
    ValueError: an unknown schema version, or a missing or mistyped entry (the message names it).
  """
  where = f"transrate_jax/data/{DATA_FILE}"
  if not isinstance(doc, dict):
    raise ValueError(f"{where}: expected a JSON object, got {type(doc).__name__}.")
  if doc.get("schema") != SCHEMA:
    raise ValueError(f"{where} has schema {doc.get('schema')!r}; this version of transrate_jax "
                     f"reads schema {SCHEMA} (regenerate it with python "
                     "benchmarks/recommendation.py --write-recommendation).")
  src = doc.get("source")
  _check(isinstance(src, dict) and isinstance(src.get("tasks"), list) and src["tasks"],
         f"{where}: source", "expected an object with a non-empty 'tasks' list")
  _check(isinstance(doc.get("rule"), str) and doc["rule"], f"{where}: rule", "expected a string")
  recs = doc.get("recommendations")
  if not isinstance(recs, dict) or set(recs) != set(TASKS):
    got = sorted(recs) if isinstance(recs, dict) else type(recs).__name__
    raise ValueError(f"{where}: 'recommendations' must map exactly {list(TASKS)}; got {got}.")
  out = {}
  for task in TASKS:
    entry = recs[task]
    _check_entry(entry, f"{where}: recommendations.{task}")
    out[task] = Recommendation(task, tuple(entry["metrics"]), entry["width_fair"],
                               evidence_line(task, entry),
                               _frozen(entry))
  return out


def _is_num(v) -> bool:
  return isinstance(v, numbers.Real) and not isinstance(v, bool)


def _check(ok: bool, where: str, what: str) -> None:
  if not ok:
    raise ValueError(f"{where}: {what}.")


def _check_interval(v, where: str) -> None:
  _check(v is None or (isinstance(v, list) and len(v) == 2 and all(map(_is_num, v))
                       and v[0] <= v[1]), where, f"expected null or [low, high], got {v!r}")


def _check_variant_kendall(v, where: str) -> None:
  _check(isinstance(v, dict) and isinstance(v.get("variant"), str) and _is_num(v.get("kendall")),
         where, f"expected {{'variant': str, 'kendall': number}}, got {v!r}")


def _check_optional_num(v, where: str) -> None:
  _check(v is None or _is_num(v), where, f"expected null or a number, got {v!r}")


def _check_scored(v, where: str, *, kendall_required: bool) -> None:
  """``{"kendall", "interval", "top1_regret"}`` of one task."""
  _check(isinstance(v, dict), where, f"expected an object, got {v!r}")
  k = v.get("kendall")
  _check(_is_num(k) or (k is None and not kendall_required), f"{where}.kendall",
         f"expected a number, got {k!r}")
  _check_interval(v.get("interval"), f"{where}.interval")
  _check_optional_num(v.get("top1_regret"), f"{where}.top1_regret")


def _check_baselines(v, where: str) -> None:
  _check(isinstance(v, dict), where, f"expected {{name: null | number}}, got {v!r}")
  for name, k in v.items():
    _check_optional_num(k, f"{where}.{name}")


def _check_entry(entry, where: str) -> None:
  _check(isinstance(entry, dict), where, "expected an object")
  missing = {"variant", "metrics", "width_fair", "evidence", "held_out"} - set(entry)
  _check(not missing, where, f"missing {sorted(missing)}")
  _check(isinstance(entry["variant"], str), f"{where}.variant", "expected a string")
  m = entry["metrics"]
  _check(isinstance(m, list) and m and all(isinstance(x, str) and x for x in m),
         f"{where}.metrics", f"expected a non-empty list of metric names, got {m!r}")
  w = entry["width_fair"]
  _check(w is None or w == "min" or (isinstance(w, int) and not isinstance(w, bool) and w > 0),
         f"{where}.width_fair", f"expected null, 'min' or a positive int, got {w!r}")
  ev = entry["evidence"]
  _check(isinstance(ev, dict), f"{where}.evidence", "expected an object")
  for key in ("ground_truth", "scope"):
    _check(isinstance(ev.get(key), str), f"{where}.evidence.{key}",
           f"expected a string, got {ev.get(key)!r}")
  _check(_is_num(ev.get("mean_kendall")), f"{where}.evidence.mean_kendall",
         f"expected a number, got {ev.get('mean_kendall')!r}")
  _check_optional_num(ev.get("mean_top1_regret"), f"{where}.evidence.mean_top1_regret")
  tasks = ev.get("tasks")
  _check(isinstance(tasks, dict) and tasks, f"{where}.evidence.tasks",
         "expected a non-empty {task: {...}} object")
  for name, t in tasks.items():
    _check_scored(t, f"{where}.evidence.tasks.{name}", kendall_required=True)
    n = t.get("num_candidates")
    _check(isinstance(n, int) and not isinstance(n, bool) and n >= 1,
           f"{where}.evidence.tasks.{name}.num_candidates", f"expected a count, got {n!r}")
  ru = ev.get("runners_up")
  _check(isinstance(ru, list), f"{where}.evidence.runners_up", f"expected a list, got {ru!r}")
  for i, r in enumerate(ru):
    _check_variant_kendall(r, f"{where}.evidence.runners_up[{i}]")
  _check_baselines(ev.get("baselines"), f"{where}.evidence.baselines")
  held, hw = entry["held_out"], f"{where}.held_out"
  _check(isinstance(held, dict) and isinstance(held.get("protocol"), str) and isinstance(
      held.get("tasks"), dict) and held["tasks"] and _is_num(held.get("max_top1_regret")), hw,
         "expected {'protocol': str, 'max_top1_regret': number, 'tasks': {task: {...}}}")
  for name, t in held["tasks"].items():
    tw = f"{hw}.tasks.{name}"
    _check(isinstance(t, dict) and isinstance(t.get("variant"), str), f"{tw}.variant",
           "expected a string")
    _check_scored(t, tw, kendall_required=False)
    _check_scored(t.get("best"), f"{tw}.best", kendall_required=True)
    _check(isinstance(t["best"].get("variant"), str), f"{tw}.best.variant", "expected a string")
    _check_baselines(t.get("baselines"), f"{tw}.baselines")


def _frozen(v):
  """A read-only deep copy: mappings as ``MappingProxyType``, lists as tuples."""
  if isinstance(v, dict):
    return types.MappingProxyType({k: _frozen(x) for k, x in v.items()})
  if isinstance(v, list):
    return tuple(_frozen(x) for x in v)
  return v


def evidence_line(task: str, entry: Mapping[str, Any]) -> str:
  """The one-line evidence of a recommendation from its numbers (an entry of the file: its
  ``variant``, ``evidence`` and ``held_out``): the mean Kendall over the tasks and each task's,
  the static baselines, then each held-out task's Kendall and top-1 regret (with the variant
  chosen there when it is not the shipped one) and how many meet the regret target."""
  ev, held_out = entry["evidence"], entry["held_out"]
  what = "mean over each task's candidates of the Kendall" if task == "layer" else "Kendall"
  per = ", ".join(f"{name} {t['kendall']:.2f}" for name, t in ev["tasks"].items())
  line = (f"mean Kendall {ev['mean_kendall']:.2f} over {len(ev['tasks'])} tasks ({what} with "
          f"{ev['ground_truth']}, {ev['scope']}: {per})")
  if ev.get("mean_top1_regret") is not None:
    line += f", mean top-1 regret {ev['mean_top1_regret']:.3f}"
  base = [f"{b} {k:.2f}" for b, k in (ev.get("baselines") or {}).items() if k is not None]
  if base:
    line += f" (static baselines: {', '.join(base)})"
  parts, met = [], 0
  for name, t in held_out["tasks"].items():
    k = "no score" if t["kendall"] is None else f"{t['kendall']:.2f}"
    r = t.get("top1_regret")
    if r is not None and r <= held_out["max_top1_regret"]:
      met += 1
    note = "" if t["variant"] == entry["variant"] else f" ({t['variant']})"
    parts.append(f"{name}{note} {k}" + ("" if r is None else f" regret {r:.3f}"))
  line += (f"; held out ({held_out['protocol'].split(':')[0]}): " + ", ".join(parts)
           + f"; top-1 regret within {held_out['max_top1_regret']:g} on {met} of "
           f"{len(held_out['tasks'])}")
  return line


def recommended(task: str = "joint") -> Recommendation:
  """The library's recommendation for ``task`` ("model", "layer" or "joint").

  Read from ``transrate_jax/data/recommended.json`` (once), which
  ``python benchmarks/recommendation.py --write-recommendation`` derives from the cross-task
  benchmark's results; ``.data`` holds its numbers, held-out evidence included.

  Raises:
    ValueError: an unknown ``task``, or a missing, malformed or unknown-schema data file.

  Example:
    >>> import transrate_jax as tj
    >>> rec = tj.recommended("layer")
    >>> result = tj.layer_sweep(model, x, y, **rec.kwargs())  # doctest: +SKIP
    >>> result.best(rec.metrics[0])  # doctest: +SKIP
  """
  if task not in TASKS:
    raise ValueError(f"task must be one of {TASKS}; got {task!r}.")
  return _recommendations()[task]


def parse_variant(name: str) -> Tuple[Tuple[str, ...], Optional[Union[int, str]]]:
  """``("rankavg(a,b)@pca-min")`` -> ``(("a", "b"), "min")``; ``"gbc"`` -> ``(("gbc",), None)``."""
  base, _, mode = name.partition("@")
  if base.startswith("rankavg(") and base.endswith(")"):
    metrics = tuple(base[len("rankavg("):-1].split(","))
  else:
    metrics = (base,)
  width = None
  if mode:
    if not mode.startswith("pca-"):
      raise ValueError(f"unknown width mode {mode!r} in {name!r}.")
    width = mode[4:]
    width = width if width == "min" else int(width)
  return metrics, width
