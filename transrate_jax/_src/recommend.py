"""Which metric should I trust? The library's measured recommendation, and rank averages.

The recommendation comes from ``benchmarks/real_joint_selection.py`` (numbers in
``benchmarks/results/real_joint_selection.md``): the demo's MNIST task, eight candidates (four
ImageNet backbones and their random-init controls), 166 (candidate, stage) feature sets, every
registered feature metric under each width mode, against fine-tuning accuracy (model selection)
and linear-probe accuracy per stage (layer and joint selection). It is one task; docs/choosing.md
says how far it carries.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, Mapping, Optional, Tuple, Union

import numpy as np

TASKS = ("model", "layer", "joint")


@dataclasses.dataclass(frozen=True)
class Recommendation:
  """What to score with, for one kind of choice.

  Attributes:
    task: "model" (which pre-trained model), "layer" (which layer of one model) or "joint"
      (which model and layer together).
    metrics: the registered metric(s); with several, candidates are ranked by their
      :func:`rank_average`.
    width_fair: the width mode (None, "min" or an int; see ``width_fair`` of ``layer_sweep``).
    evidence: the measurement behind it, in one line (Kendall with its 95% bootstrap interval).
  """
  task: str
  metrics: Tuple[str, ...]
  width_fair: Union[None, int, str]
  evidence: str

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


# From benchmarks/results/real_joint_selection.md (see the module docstring): for each task the
# variant (metric, or rank average, and width mode) with the highest Kendall. Intervals: 95%
# bootstrap over the candidates.
RECOMMENDED: Dict[str, Recommendation] = {
    "model": Recommendation(
        "model", ("knn_accuracy",), None,
        "Kendall 0.93 [0.65, 1.00] with fine-tuning accuracy over 8 candidates; with so few "
        "candidates 15 other variants lie inside that interval (logme@pca-min 0.86)"),
    "layer": Recommendation(
        "layer", ("regularized_hscore",), "min",
        "mean Kendall 0.80 with the probe accuracy of each candidate's 18-23 stages, mean top-1 "
        "regret 0.007 (raw regularized_hscore -0.10, PARC 0.79, width baseline -0.28)"),
    "joint": Recommendation(
        "joint", ("regularized_hscore",), "min",
        "Kendall 0.89 [0.87, 0.91] with probe accuracy over 166 (candidate, stage) pairs, "
        "top-1 regret 0.001 (raw 0.40; PARC 0.88, logme@pca-min 0.87; width baseline -0.06)"),
}


def recommended(task: str = "joint") -> Recommendation:
  """The library's recommendation for ``task`` ("model", "layer" or "joint").

  Example:
    >>> import transrate_jax as tj
    >>> rec = tj.recommended("layer")
    >>> result = tj.layer_sweep(model, x, y, **rec.kwargs())  # doctest: +SKIP
    >>> result.best(rec.metrics[0])  # doctest: +SKIP
  """
  if task not in TASKS:
    raise ValueError(f"task must be one of {TASKS}; got {task!r}.")
  return RECOMMENDED[task]


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
