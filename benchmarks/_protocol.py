"""Shared helpers of the paper-protocol benchmarks (model_selection.py, layer_selection.py, cost.py).

The protocol of Huang et al., "Frustratingly easy transferability estimation" (ICML 2022), on the
embedded digits zoo: score candidates (models, or layers of one model) on a target training split
with every transferability metric the library has, obtain ground-truth accuracies by fine-tuning
(and by a linear probe), and correlate (Pearson, Kendall tau-b, weighted Kendall tau) with the
library's own evaluation functions.
"""

from __future__ import annotations

import argparse
import json
import math
import pathlib
import platform
import time
from typing import Callable, Dict, Mapping, Optional, Sequence

import jax
import numpy as np

RESULTS = pathlib.Path(__file__).resolve().parent / "results"

# The metric list is the registry's (transrate_jax.registered_metrics); the protocol adds one
# variant: the authors' repository pipeline (rows L2-normalised, divided by the rank: scale-free).
VARIANTS = {"transrate_official": ("transrate", {"preset": "official"})}


def feature_metrics() -> list:
  """Registered feature metrics (TransRate first), then the variants."""
  from transrate_jax._src import registry  # noqa: PLC0415
  names = list(registry.registered_metrics("features"))
  names.sort(key=lambda m: m != "transrate")
  return names + list(VARIANTS)


def prediction_metrics() -> list:
  """Registered metrics that take the source model's predictions (LEEP, NCE): the demo's list."""
  from transrate_jax._src import demo  # noqa: PLC0415
  return demo.prediction_metrics()


CORRELATIONS = (("pearson", "Pearson"), ("kendall", "Kendall"), ("weighted_tau", "weighted Kendall"),
                ("top1_hit", "top-1 hit"), ("relative_top_accuracy", "rel. top-1 acc"))


# ---------------------------------------------------------------------------------------------
# Device and timing.


def cpu_name() -> str:
  try:
    for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
      if line.startswith("model name"):
        return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or platform.machine()


def device_info() -> dict:
  """The JAX devices and the host, printed and stored in every result file."""
  import os  # noqa: PLC0415
  devs = jax.devices()
  return {"jax_devices": [str(d) for d in devs], "platform": devs[0].platform,
          "device_kind": devs[0].device_kind, "host_cpu": cpu_name(),
          "host_cores": os.cpu_count(), "jax_version": jax.__version__}


def describe_device(info: dict) -> str:
  return (f"{info['platform']} ({info['device_kind']}); host {info['host_cpu']}, "
          f"{info['host_cores']} cores; jax {info['jax_version']}")


def block(x):
  return jax.tree.map(lambda a: a.block_until_ready() if hasattr(a, "block_until_ready") else a, x)


def timed(fn: Callable, *args, **kwargs):
  """(result with every array ready, seconds)."""
  t = time.perf_counter()
  out = block(fn(*args, **kwargs))
  return out, time.perf_counter() - t


# ---------------------------------------------------------------------------------------------
# Metrics.


def _resolve(name: str) -> tuple:
  """``(registered metric name, options)`` of a protocol metric name."""
  return VARIANTS.get(name, (name, {}))


def available_metrics(wanted: Optional[Sequence[str]] = None, *, prediction: bool = True) -> list:
  names = feature_metrics() + (prediction_metrics() if prediction else [])
  return [m for m in names if wanted is None or m in wanted]


def score_features(features: Mapping[str, np.ndarray], labels, *,
                   metrics: Optional[Sequence[str]] = None) -> Dict[str, np.ndarray]:
  """{metric: [len(features)] float64 scores} for every feature metric (or those wanted).

  Every metric goes through ``selection.score_features`` (``score_many``: one batched program
  per width).
  """
  from transrate_jax._src import selection  # noqa: PLC0415

  scores = {}
  for m in available_metrics(metrics, prediction=False):
    base, options = _resolve(m)
    res = selection.score_features(dict(features), labels, metrics=(base,),
                                   metric_options={base: options}, progress=False)
    scores[m] = np.asarray(res.scores[base], np.float64)
  return scores


def prediction_score(name: str, logits, labels) -> float:
  """A metric of the source model's output logits (softmax for LEEP, argmax for NCE), in float64:
  :func:`transrate_jax._src.demo.prediction_score` on the logits cast to float64."""
  from transrate_jax._src import demo  # noqa: PLC0415
  return demo.prediction_score(name, np.asarray(logits, np.float64), labels)


def metric_call(name: str) -> Callable:
  """A one-matrix call ``fn(features, labels)`` of a feature metric (for timing)."""
  from transrate_jax._src import registry  # noqa: PLC0415
  base, options = _resolve(name)
  fn = registry.get_metric(base).fn
  return lambda f, y: fn(f, y, **options)


# ---------------------------------------------------------------------------------------------
# Evaluation.


def correlations(scores: Mapping[str, Sequence[float]], accuracy: Sequence[float]) -> dict:
  """{metric: {pearson, kendall, weighted_tau, top1_hit, relative_top_accuracy}} with the
  library's evaluation functions (``transrate_jax._src.evaluation``); all nan (and
  ``nonfinite_scores``: how many) for a metric that returned nan/inf on some candidate."""
  from transrate_jax._src import evaluation  # noqa: PLC0415

  acc = np.asarray(accuracy, np.float64)
  out = {}
  for m, s in scores.items():
    s = np.asarray(s, np.float64)
    bad = int(np.sum(~np.isfinite(s)))
    if bad:  # a metric that failed on some candidate: reported as nan, not silently dropped
      out[m] = {key: float("nan") for key, _ in CORRELATIONS}
      out[m]["nonfinite_scores"] = bad
      continue
    out[m] = {
        "pearson": float(evaluation.pearson(s, acc)),
        "kendall": float(evaluation.kendall_tau(s, acc)),
        "weighted_tau": float(evaluation.weighted_tau(s, acc)),
        "top1_hit": float(bool(evaluation.top_k_hit(s, acc, k=1))),
        "relative_top_accuracy": float(evaluation.relative_top_accuracy(s, acc)),
    }
  return out


def comparison(scores: Mapping[str, Sequence[float]], accuracy: Sequence[float], *,
               names: Sequence[str], widths=None, param_counts=None,
               num_resamples: int = 1000) -> dict:
  """``transrate_jax.compare_metrics(...).to_dict()``: each metric's Pearson, Kendall and
  weighted Kendall with seeded bootstrap intervals, top-1 regret, beside the static baselines
  (width, parameter count when known) and a random ranking."""
  import transrate_jax as tj  # noqa: PLC0415

  if np.ptp(np.asarray(accuracy, np.float64)) == 0:  # e.g. a --quick probe that learnt nothing
    return {"undefined": "the accuracies are constant: no ranking of the candidates to evaluate"}
  return tj.compare_metrics({m: np.asarray(v, np.float64) for m, v in scores.items()},
                            np.asarray(accuracy, np.float64), names=[str(n) for n in names],
                            widths=widths, param_counts=param_counts,
                            num_resamples=num_resamples).to_dict()


def comparison_text(data: dict) -> str:
  """The table of a :func:`comparison` (a ``Comparison`` printed), as plain text."""
  from transrate_jax._src.compare import Comparison  # noqa: PLC0415

  if "undefined" in data:
    return f"({data['undefined']})"
  return str(Comparison.from_dict(data))


def comparison_md(data: dict) -> str:
  return "```\n" + comparison_text(data) + "\n```"


# ---------------------------------------------------------------------------------------------
# Output.


def _fmt(v) -> str:
  if v is None or (isinstance(v, float) and math.isnan(v)):
    return "nan"
  return f"{v:.3f}" if isinstance(v, float) else str(v)


def correlation_table_md(corr: Mapping[str, dict], *, bold_best: bool = True) -> str:
  """Rows: correlation measures; columns: metrics (the paper's layout). Best per row in bold."""
  metrics = list(corr)
  lines = ["| measure | " + " | ".join(metrics) + " |",
           "|---|" + "---:|" * len(metrics)]
  for key, label in CORRELATIONS:
    vals = [corr[m][key] for m in metrics]
    best = np.nanmax(vals) if bold_best and vals else None
    cells = [f"**{_fmt(v)}**" if best is not None and v == best and key in (
        "pearson", "kendall", "weighted_tau") else _fmt(v) for v in vals]
    lines.append(f"| {label} | " + " | ".join(cells) + " |")
  return "\n".join(lines)


def values_table_md(names: Sequence[str], columns: Mapping[str, Sequence], *,
                    first: str = "model") -> str:
  cols = list(columns)
  lines = [f"| {first} | " + " | ".join(cols) + " |", "|---|" + "---:|" * len(cols)]
  for i, n in enumerate(names):
    cells = []
    for c in cols:
      v = columns[c][i]
      cells.append(f"{v:.4g}" if isinstance(v, (float, np.floating)) else str(v))
    lines.append(f"| {n} | " + " | ".join(cells) + " |")
  return "\n".join(lines)


def write_json(path: pathlib.Path, data: dict) -> None:
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(json.dumps(data, indent=1, default=float) + "\n")


def scatter_grid(path: pathlib.Path, panels: Sequence[dict], *, ncols: int = 4,
                 title: str = "") -> None:
  """One scatter per panel: ``{"title", "x", "y", "labels", "xlabel", "ylabel", "series"?}``.

  ``series``: optional list of ``{"x", "y", "label", "marker"}`` drawn on the same axes.
  """
  import matplotlib  # noqa: PLC0415
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # noqa: PLC0415

  nrows = max(1, math.ceil(len(panels) / ncols))
  fig, axes = plt.subplots(nrows, ncols, figsize=(3.6 * ncols, 3.0 * nrows), squeeze=False)
  for ax in axes.flat[len(panels):]:
    ax.axis("off")
  for ax, p in zip(axes.flat, panels):
    for s in p["series"]:
      ax.scatter(s["x"], s["y"], s=18, marker=s.get("marker", "o"), label=s.get("label"))
      for name, xi, yi in zip(s.get("labels") or [], s["x"], s["y"]):
        ax.annotate(name, (xi, yi), fontsize=5, xytext=(2, 2), textcoords="offset points")
    ax.set_title(p["title"], fontsize=8)
    ax.set_xlabel(p.get("xlabel", "score"), fontsize=7)
    ax.set_ylabel(p.get("ylabel", "accuracy"), fontsize=7)
    ax.tick_params(labelsize=6)
    ax.grid(alpha=0.3)
    if len(p["series"]) > 1:
      ax.legend(fontsize=5)
  if title:
    fig.suptitle(title, fontsize=9)
  fig.tight_layout()
  path.parent.mkdir(parents=True, exist_ok=True)
  fig.savefig(path, dpi=100)
  plt.close(fig)


def base_parser(description: str) -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(description=description)
  p.add_argument("--quick", action="store_true",
                 help="smallest settings that exercise the code (about a minute on 2 CPU cores)")
  p.add_argument("--out", type=pathlib.Path, default=RESULTS,
                 help="output directory (default: benchmarks/results)")
  return p
