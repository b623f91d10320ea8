"""Which metric should I trust? The library's measured recommendation, and rank averages.

The recommendation is data, not code: ``transrate_jax/data/recommended.json``, written by
``python benchmarks/real_joint_selection.py --write-recommendation`` from that benchmark's
committed results (``benchmarks/results/real_joint_selection.json``): the demo's MNIST task, eight
candidates (four ImageNet backbones and their random-init controls), 166 (candidate, stage)
feature sets, every registered feature metric under each width mode, against fine-tuning accuracy
(model selection) and linear-probe accuracy per stage (layer and joint selection). For each choice
the rule (stated in the file) takes the variant with the highest Kendall. It is one task; each
recommendation's ``held_out`` entry is null until a cross-task, leave-one-task-out benchmark fills
it, and docs/choosing.md says how far one task carries.

The file (schema :data:`SCHEMA`)::

  {"schema": 1,
   "source": {"benchmark", "results", "command", "tasks": [{"dataset", ..., "candidates"}]},
   "rule": "...",
   "recommendations": {"model" | "layer" | "joint": {
     "variant": the benchmark's name of the variant ("metric", "rankavg(...)", "...@pca-min"),
     "metrics": [registered metric, ...], "width_fair": null | "min" | int,
     "evidence": {"ground_truth", "scope", "num_candidates", "num_stages": null | [min, max],
                  "kendall", "interval": null | [low, high], "confidence": null | float,
                  "top1_regret": null | float, "others_inside_interval": null | int,
                  "raw": null | {"variant", "kendall"}, "runners_up": [{"variant", "kendall"}],
                  "width_baseline": null | float},
     "held_out": null | {"protocol": str, "tasks": {task: {"variant", "kendall",
                                                           "interval": null | [low, high],
                                                           "top1_regret": null | float}}}}}}

For "layer", ``kendall`` and ``top1_regret`` are means over the candidates (each candidate's stages
ranked alone) and there is no interval.
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
SCHEMA = 1
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
    evidence: the measurement behind it, in one line (Kendall with its 95% bootstrap interval),
      composed from ``data["evidence"]``.
    data: the numbers behind it, read-only: this task's entry of
      ``transrate_jax/data/recommended.json`` (``variant``, ``metrics``, ``width_fair``,
      ``evidence``: Kendall, interval, top-1 regret, runners-up, width baseline; ``held_out``:
      None until the cross-task benchmark; :doc:`/choosing` lists every key). Mappings are
      read-only and lists are tuples. None for a Recommendation built by hand.
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
                     "benchmarks/real_joint_selection.py --write-recommendation).")
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
    _check(task != "layer" or entry["evidence"].get("num_stages") is not None,
           f"{where}: recommendations.layer.evidence.num_stages", "expected [min, max]")
    out[task] = Recommendation(task, tuple(entry["metrics"]), entry["width_fair"],
                               evidence_line(task, entry["evidence"], entry["held_out"]),
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
  want = {"ground_truth": str, "scope": str, "num_candidates": int, "kendall": float}
  for key, kind in want.items():
    v = ev.get(key)
    ok = _is_num(v) if kind is float else isinstance(v, kind) and not isinstance(v, bool)
    _check(ok, f"{where}.evidence.{key}", f"expected a {kind.__name__}, got {v!r}")
  for key in ("confidence", "top1_regret", "width_baseline"):
    _check(ev.get(key) is None or _is_num(ev[key]), f"{where}.evidence.{key}",
           f"expected null or a number, got {ev.get(key)!r}")
  _check_interval(ev.get("interval"), f"{where}.evidence.interval")
  n = ev.get("others_inside_interval")
  _check(n is None or (isinstance(n, int) and not isinstance(n, bool) and n >= 0),
         f"{where}.evidence.others_inside_interval", f"expected null or a count, got {n!r}")
  st = ev.get("num_stages")
  _check(st is None or (isinstance(st, list) and len(st) == 2 and all(
      isinstance(x, int) and not isinstance(x, bool) for x in st)),
         f"{where}.evidence.num_stages", f"expected null or [min, max], got {st!r}")
  if ev.get("raw") is not None:
    _check_variant_kendall(ev["raw"], f"{where}.evidence.raw")
  ru = ev.get("runners_up")
  _check(isinstance(ru, list), f"{where}.evidence.runners_up", f"expected a list, got {ru!r}")
  for i, r in enumerate(ru):
    _check_variant_kendall(r, f"{where}.evidence.runners_up[{i}]")
  held = entry["held_out"]
  if held is not None:
    hw = f"{where}.held_out"
    _check(isinstance(held, dict) and isinstance(held.get("protocol"), str) and isinstance(
        held.get("tasks"), dict) and held["tasks"], hw,
           "expected null or {'protocol': str, 'tasks': {task: {...}}}")
    for name, t in held["tasks"].items():
      _check_variant_kendall(t, f"{hw}.tasks.{name}")
      _check_interval(t.get("interval"), f"{hw}.tasks.{name}.interval")
      _check(t.get("top1_regret") is None or _is_num(t["top1_regret"]),
             f"{hw}.tasks.{name}.top1_regret", "expected null or a number")


def _frozen(v):
  """A read-only deep copy: mappings as ``MappingProxyType``, lists as tuples."""
  if isinstance(v, dict):
    return types.MappingProxyType({k: _frozen(x) for k, x in v.items()})
  if isinstance(v, list):
    return tuple(_frozen(x) for x in v)
  return v


def evidence_line(task: str, ev: Mapping[str, Any], held_out: Optional[Mapping] = None) -> str:
  """The one-line evidence of a recommendation from its numbers (``data["evidence"]``)."""
  kendall = f"{ev['kendall']:.2f}"
  if ev.get("interval") is not None:
    kendall += f" [{ev['interval'][0]:.2f}, {ev['interval'][1]:.2f}]"
  if task == "layer":
    lo, hi = ev["num_stages"] if ev.get("num_stages") else (None, None)
    stages = f"{lo}-{hi}" if lo != hi else f"{lo}"
    line = (f"mean Kendall {kendall} with the {ev['ground_truth']} of each of "
            f"{ev['num_candidates']} candidates' {stages} stages")
    regret = "mean top-1 regret"
  else:
    line = f"Kendall {kendall} with {ev['ground_truth']} over {ev['num_candidates']} {ev['scope']}"
    regret = "top-1 regret"
  if ev.get("top1_regret") is not None:
    line += f", {regret} {ev['top1_regret']:.3f}"
  if ev.get("others_inside_interval") is not None:
    line += f"; {ev['others_inside_interval']} other variants lie inside that interval"
  notes = []
  if ev.get("raw") is not None:
    notes.append(f"raw {ev['raw']['variant']} {ev['raw']['kendall']:.2f}")
  if ev.get("runners_up"):
    notes.append("runners-up " + ", ".join(f"{r['variant']} {r['kendall']:.2f}"
                                           for r in ev["runners_up"]))
  if ev.get("width_baseline") is not None:
    notes.append(f"width baseline {ev['width_baseline']:.2f}")
  if notes:
    line += f" ({'; '.join(notes)})"
  if held_out:
    line += f"; held out ({held_out['protocol']}): " + ", ".join(
        f"{name} {t['kendall']:.2f}" for name, t in held_out["tasks"].items())
  return line


def recommended(task: str = "joint") -> Recommendation:
  """The library's recommendation for ``task`` ("model", "layer" or "joint").

  Read from ``transrate_jax/data/recommended.json`` (once), which
  ``python benchmarks/real_joint_selection.py --write-recommendation`` derives from the
  benchmark's results; ``.data`` holds its numbers.

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
