"""``transrate-jax demo --zoo``: the whole model-selection question on the embedded digits zoo, in seconds.

1. Load the target task (digits 5-9 on held-out images; no zoo model was trained on it).
2. For every zoo model, capture every layer on the target training images and score each layer
   (a layer sweep), and score each model at its penultimate layer with every metric.
3. Ground truth: a linear probe on each model's penultimate features (train split -> test split).
4. Print the scores beside the accuracies with Pearson, Kendall and weighted Kendall correlations,
   and write a PNG figure (score vs accuracy; TransRate per layer).
"""

from __future__ import annotations

import json
import time
from typing import Dict, Optional, Sequence

import numpy as np

from transrate_jax._src import demo_common
from transrate_jax._src import report

# N-LEEP is left out of the default list: its EM compiles once per width (seconds each).
SLOW_METRICS = ("nleep",)


def _default_metrics() -> tuple:
  """(feature metrics, prediction metrics) of the registry, TransRate first; no slow ones."""
  feats = [m for m in demo_common.feature_metrics() if m not in SLOW_METRICS]
  feats.sort(key=lambda m: m != "transrate")
  return feats, demo_common.prediction_metrics()


def run_demo(*, target: str = "digits59", models: Optional[Sequence[str]] = None,
             metrics: Optional[Sequence[str]] = None, plot_path: Optional[str] = "demo.png",
             probe_steps: int = 500, progress: bool = True, verbose: bool = True) -> Dict:
  """Runs the demo and returns its results as plain data (also printed when ``verbose``).

  Args:
    target: the zoo target task (see ``transrate_jax.zoo.load_target_task``).
    models: zoo model names (default: all).
    metrics: feature-based metric names (default: TransRate and every registered peer).
    plot_path: PNG path for the figure, or None.
    probe_steps: optimisation steps of the linear probe (the ground truth).
    progress: progress bar over models.
    verbose: print the tables.

  Returns:
    ``{"models": [...], "scores": {metric: [...]}, "accuracy": [...], "correlations":
    {metric: {"pearson", "kendall", "weighted_tau"}}, "best_layer": {...}, "seconds": ...}``.
  """
  from transrate_jax import zoo  # noqa: PLC0415
  from transrate_jax._src import capture  # noqa: PLC0415
  from transrate_jax._src import evaluation  # noqa: PLC0415
  from transrate_jax._src import probe  # noqa: PLC0415
  from transrate_jax._src import selection  # noqa: PLC0415
  from transrate_jax._src import sweep  # noqa: PLC0415

  start = time.perf_counter()
  x_tr, y_tr, x_te, y_te = zoo.load_target_task(target)
  num_classes = int(max(y_tr.max(), y_te.max())) + 1
  names = list(models) if models is not None else zoo.list_models()
  default_feats, predictions = _default_metrics()
  metrics, pred_metrics = demo_common.resolve_metrics(metrics, default_feats + predictions)
  if verbose:
    print(f"target task {target!r}: {len(y_tr)} train / {len(y_te)} test images, "
          f"{num_classes} classes; {len(names)} zoo models; metrics: "
          f"{', '.join(metrics + pred_metrics)}", flush=True)

  penultimate_train, penultimate_test, sweeps, outputs, accuracy = {}, {}, {}, {}, []
  bar = None
  if progress:
    from tqdm.auto import tqdm  # noqa: PLC0415
    bar = tqdm(total=len(names), desc="zoo models", unit="model")
  for name in names:
    model = zoo.load(name)
    layer = zoo.info(name)["penultimate"]
    feats = capture.intermediates(model, x_tr, progress=False)
    test_feats = capture.intermediates(model, x_te, layers=[layer], progress=False)
    sweeps[name] = sweep.transrate_many({k: v for k, v in feats.items() if k != "output"}, y_tr,
                                     progress=False)
    penultimate_train[name] = feats[layer]
    penultimate_test[name] = test_feats[layer]
    outputs[name] = np.asarray(feats["output"], np.float64)
    accuracy.append(probe.linear_probe_accuracy(feats[layer], y_tr, test_feats[layer], y_te,
                                                num_classes=num_classes, steps=probe_steps))
    if bar is not None:
      bar.update(1)
  if bar is not None:
    bar.close()

  result = selection.score_features(penultimate_train, y_tr, metrics=metrics, kind="model",
                                    layers=[zoo.info(n)["penultimate"] for n in names],
                                    progress=False)
  scores = {m: np.asarray(v) for m, v in result.scores.items()}
  for m in pred_metrics:
    scores[m] = np.asarray([demo_common.prediction_score(m, outputs[n], y_tr) for n in names])
  accuracy = np.asarray(accuracy)

  correlations = {}
  for m, s in scores.items():
    correlations[m] = {
        "pearson": float(evaluation.pearson(s, accuracy)),
        "kendall": float(evaluation.kendall_tau(s, accuracy)),
        "weighted_tau": float(evaluation.weighted_tau(s, accuracy)),
        "top1_hit": bool(evaluation.top_k_hit(s, accuracy, k=1)),
    }
  best_layer = {n: max(sweeps[n], key=lambda k: float(sweeps[n][k])) for n in names}
  seconds = time.perf_counter() - start
  out = {"target": target, "models": names, "scores": {m: s.tolist() for m, s in scores.items()},
         "accuracy": accuracy.tolist(), "correlations": correlations, "best_layer": best_layer,
         "layer_sweeps": {n: {k: float(v) for k, v in sweeps[n].items()} for n in names},
         "seconds": seconds}

  return demo_common.finish(out, lambda: _print_report(out, zoo), _plot, plot_path=plot_path,
                            verbose=verbose)


def _print_report(out: Dict, zoo) -> None:

  metrics = list(out["scores"])
  rows = []
  for i, name in enumerate(out["models"]):
    info = zoo.info(name)
    row = {"model": name, "source": info["task"], "acc": out["accuracy"][i],
           "layer": out["best_layer"][name]}
    row.update({m: out["scores"][m][i] for m in metrics})
    rows.append(row)
  rows.sort(key=lambda r: -r["transrate"] if "transrate" in r else 0.0)
  print("\nModels ranked by TransRate (penultimate layer); probe = linear-probe test accuracy "
        "(the ground truth):\n")
  print(report.format_table(rows, [("model", "model", "s"), ("source", "source task", "s")] +
                     [(m, m, ".3f") for m in metrics] +
                     [("acc", "probe acc", ".3f"), ("layer", "best layer (TransRate)", "s")]))
  print("\nCorrelation of each metric with the probe accuracy over models "
        "(higher is better):\n")
  crow = [{"metric": m, **c, "top1": "yes" if c["top1_hit"] else "no"}
          for m, c in out["correlations"].items()]
  print(report.format_table(crow, [("metric", "metric", "s"), ("pearson", "Pearson", ".3f"),
                            ("kendall", "Kendall", ".3f"), ("weighted_tau", "weighted tau", ".3f"),
                            ("top1", "picks best", "s")]))


def _plot(out: Dict, path: str) -> None:
  c = out["correlations"]["transrate"]
  report.plot_selection(
      path, names=out["models"], score=out["scores"]["transrate"], accuracy=out["accuracy"],
      score_label="TransRate (penultimate layer, nats)",
      accuracy_label="linear-probe test accuracy",
      title=f"model selection on {out['target']}: Pearson {c['pearson']:.2f}, "
            f"Kendall {c['kendall']:.2f}",
      sweeps={name: list(out["layer_sweeps"][name].values()) for name in out["models"]},
      sweep_xlabel="layer (call order)", sweep_ylabel="TransRate (nats)",
      sweep_title="layer sweep: TransRate of every layer of every model")


def main_demo(args) -> int:
  out = run_demo(target=args.target, models=args.models or None,
                 metrics=args.metrics.split(",") if args.metrics else None,
                 plot_path=None if args.no_plot else args.plot,
                 probe_steps=500 if args.probe_steps is None else args.probe_steps,
                 progress=not args.json, verbose=not args.json)
  if args.json:
    print(json.dumps(demo_common.finite_or_none(out), indent=2, allow_nan=False))
  return 0
