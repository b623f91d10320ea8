"""Model selection, the paper's protocol (Huang et al., ICML 2022, Table 1 layout) on the digits zoo.

For each target task, every zoo model is scored at its penultimate layer on the target training
split by every metric the library has (feature metrics; LEEP and NCE from the source model's own
output). Ground truth: (1) fine-tuning each model on the target (fresh linear head, all weights
trained, mean test accuracy over seeds), the paper's protocol; (2) a linear probe on frozen
penultimate features, the cheap second ground truth. Pearson, Kendall tau-b and weighted Kendall
tau between scores and accuracies come from ``transrate_jax._src.evaluation``.

  python benchmarks/model_selection.py           # full: 2 targets x 10 models, 3 fine-tuning seeds
  python benchmarks/model_selection.py --quick   # 1 target x 4 MLPs, 2 epochs, 1 seed (< 1 min)

Writes ``model_selection.{md,json,png}`` to ``--out`` (default benchmarks/results/).
"""

from __future__ import annotations

import pathlib
import sys
import time

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import _protocol as P  # noqa: E402

FULL = dict(targets=("digits59", "digits10"), models=None, epochs=30, seeds=(0, 1, 2),
            probe_steps=500)
QUICK = dict(targets=("digits59",),
             models=("mlp_m_shuffled", "mlp_l_flip10", "cnn_l_rot90"),  # one width (64): one compile per metric
             epochs=2, seeds=(0,), probe_steps=50)


def run_target(target: str, models, *, metrics, epochs: int, seeds, probe_steps: int,
               log=print) -> dict:
  """Scores, fine-tuning and probe accuracies, and correlations for one target task."""
  from transrate_jax import zoo  # noqa: PLC0415
  from transrate_jax._src import capture  # noqa: PLC0415
  from transrate_jax._src import finetune  # noqa: PLC0415
  from transrate_jax._src import probe  # noqa: PLC0415

  x_tr, y_tr, x_te, y_te = zoo.load_target_task(target)
  num_classes = int(max(y_tr.max(), y_te.max())) + 1
  log(f"\n== target {target}: {len(y_tr)} train / {len(y_te)} test images, {num_classes} classes")
  feats, layers, pred, ft_acc, probe_acc = {}, [], {m: [] for m in metrics
                                                   if m in P.prediction_metrics()}, [], []
  seconds = {"capture": 0.0, "finetune": 0.0, "probe": 0.0}
  for name in models:
    model, info = zoo.load(name), zoo.info(name)
    layer = info["penultimate"]
    (tr, te), t = P.timed(lambda: (capture.intermediates(model, x_tr, layers=[layer, "output"],
                                                         progress=False),
                                   capture.intermediates(model, x_te, layers=[layer],
                                                         progress=False)))
    seconds["capture"] += t
    feats[name] = np.asarray(tr[layer])
    layers.append(layer)
    for m in pred:
      pred[m].append(P.prediction_score(m, tr["output"], y_tr))
    acc, t = P.timed(finetune.finetune_accuracy, model, info, x_tr, y_tr, x_te, y_te,
                     num_classes=num_classes, epochs=epochs, seeds=seeds)
    seconds["finetune"] += t
    ft_acc.append(acc)
    acc_p, t = P.timed(probe.linear_probe_accuracy, tr[layer], y_tr, te[layer], y_te,
                       num_classes=num_classes, steps=probe_steps)
    seconds["probe"] += t
    probe_acc.append(acc_p)
    log(f"  {name:20s} {layer:9s} d={feats[name].shape[1]:4d}  fine-tune {acc:.3f}  "
        f"probe {acc_p:.3f}", flush=True)
  t = time.perf_counter()
  scores = P.score_features(feats, y_tr, metrics=[m for m in metrics
                                                  if m not in P.prediction_metrics()])
  seconds["scores"] = time.perf_counter() - t
  scores.update({m: np.asarray(v) for m, v in pred.items()})
  scores = {m: scores[m] for m in metrics}
  return {
      "num_train": int(len(y_tr)), "num_test": int(len(y_te)), "num_classes": num_classes,
      "models": list(models), "layers": layers,
      "dims": [int(feats[n].shape[1]) for n in models],
      "scores": {m: [float(v) for v in s] for m, s in scores.items()},
      "finetune_accuracy": ft_acc, "probe_accuracy": probe_acc,
      "correlations": {"finetune": P.correlations(scores, ft_acc),
                       "probe": P.correlations(scores, probe_acc)},
      "comparison": {gt: P.comparison(scores, acc, names=list(models),
                                      widths=[int(feats[n].shape[1]) for n in models],
                                      param_counts=[zoo.info(n)["num_params"] for n in models])
                     for gt, acc in (("finetune", ft_acc), ("probe", probe_acc))},
      "seconds": seconds,
  }


def write_outputs(out_dir: pathlib.Path, result: dict) -> None:
  out_dir = pathlib.Path(out_dir)
  P.write_json(out_dir / "model_selection.json", result)
  s = result["settings"]
  md = [f"# Model selection on the digits zoo ({'quick' if s['quick'] else 'full'} run)", "",
        f"Device: {P.describe_device(result['device'])}.  ",
        f"Command: `{result['command']}`; wall-clock {result['seconds']:.0f} s.  ",
        f"Fine-tuning: fresh linear head, all weights trained, AdamW lr {s['learning_rate']}, "
        f"{s['epochs']} epochs, batch {s['batch_size']}, mean test accuracy over seeds "
        f"{list(s['seeds'])}. Linear probe: logistic regression on frozen penultimate features, "
        f"{s['probe_steps']} Adam steps. Scores on the target training split at each model's "
        "penultimate layer (LEEP/NCE: the source model's softmax/argmax). Correlations: "
        "`transrate_jax._src.evaluation` (weighted Kendall = scipy's `weightedtau` defaults). "
        "Best per row in bold.", ""]
  for target, r in result["targets"].items():
    for gt, label in (("finetune", "fine-tuning accuracy (paper's protocol)"),
                      ("probe", "linear-probe accuracy")):
      md += [f"## {target}: correlation with {label}", "",
             P.correlation_table_md(r["correlations"][gt]), "",
             "With 95% bootstrap intervals, beside the width and random baselines:", "",
             P.comparison_md(r["comparison"][gt]), ""]
    agree = P.correlations({"probe": r["probe_accuracy"]}, r["finetune_accuracy"])["probe"]
    md += [f"Agreement of the two ground truths on {target} (probe accuracy vs fine-tuning "
           f"accuracy): Pearson {agree['pearson']:.3f}, Kendall {agree['kendall']:.3f}, "
           f"weighted Kendall {agree['weighted_tau']:.3f}.", ""]
    cols = {"layer": r["layers"], "d": r["dims"], "fine-tune acc": r["finetune_accuracy"],
            "probe acc": r["probe_accuracy"]}
    cols.update(r["scores"])
    md += [f"### {target}: scores and accuracies per model", "",
           P.values_table_md(r["models"], cols), ""]
  (out_dir / "model_selection.md").write_text("\n".join(md))

  panels = []
  for target, r in result["targets"].items():
    for m, s in r["scores"].items():
      c = r["correlations"]["finetune"][m]
      panels.append({
          "title": f"{target}, {m}\nfine-tune r={c['pearson']:.2f}, tau={c['kendall']:.2f}",
          "xlabel": f"{m} score", "ylabel": "target test accuracy",
          "series": [{"x": s, "y": r["finetune_accuracy"], "label": "fine-tune", "marker": "o",
                      "labels": r["models"]},
                     {"x": s, "y": r["probe_accuracy"], "label": "linear probe", "marker": "x"}]})
  P.scatter_grid(out_dir / "model_selection.png", panels, ncols=5,
                 title="Model selection: score vs accuracy, one panel per metric and target")


def main(argv=None) -> dict:
  parser = P.base_parser(__doc__.splitlines()[0])
  parser.add_argument("--targets", nargs="+", default=None)
  parser.add_argument("--models", nargs="+", default=None)
  parser.add_argument("--epochs", type=int, default=None)
  parser.add_argument("--seeds", type=int, default=None, help="number of fine-tuning seeds")
  args = parser.parse_args(argv)
  from transrate_jax import zoo  # noqa: PLC0415

  cfg = dict(QUICK if args.quick else FULL)
  if args.targets:
    cfg["targets"] = tuple(args.targets)
  if args.models:
    cfg["models"] = tuple(args.models)
  if args.epochs:
    cfg["epochs"] = args.epochs
  if args.seeds:
    cfg["seeds"] = tuple(range(args.seeds))
  models = list(cfg["models"] or zoo.list_models())
  device = P.device_info()
  metrics = P.available_metrics()
  print(f"device: {P.describe_device(device)}")
  print(f"metrics: {', '.join(metrics)}")
  start = time.perf_counter()
  targets = {t: run_target(t, models, metrics=metrics, epochs=cfg["epochs"], seeds=cfg["seeds"],
                           probe_steps=cfg["probe_steps"]) for t in cfg["targets"]}
  result = {
      "benchmark": "model_selection", "device": device, "metrics": metrics,
      "evaluation": "transrate_jax._src.evaluation",
      "command": "python benchmarks/model_selection.py" + (" --quick" if args.quick else ""),
      "settings": {"quick": bool(args.quick), "epochs": cfg["epochs"], "seeds": list(cfg["seeds"]),
                   "batch_size": 32, "learning_rate": 1e-3, "probe_steps": cfg["probe_steps"],
                   "models": models},
      "targets": targets, "seconds": time.perf_counter() - start,
  }
  write_outputs(args.out, result)
  for target, r in targets.items():
    for gt in ("finetune", "probe"):
      print(f"\n{target}, ground truth = {gt}:")
      print(P.comparison_text(r["comparison"][gt]))
  print(f"\nwrote {args.out}/model_selection.{{md,json,png}} in {result['seconds']:.1f} s")
  return result


if __name__ == "__main__":
  main()
