"""Layer selection, the paper's protocol (Huang et al., ICML 2022, Section 5) on the digits zoo.

For one zoo model, every candidate layer is scored on the target training split (mean-pooled
features) by every feature metric of the library; the ground truth is the target test accuracy
after transferring the model up to that layer and training all its weights with a fresh head
(``transrate_jax._src.finetune``: ``mode="drop"`` removes the layers above, ``mode="reinit"``
re-initialises them), plus a linear probe on the layer's frozen features. Pearson, Kendall tau-b
and weighted Kendall tau over layers come from ``transrate_jax._src.evaluation``. LEEP and NCE
need the source head and are not layer scores, so they are not in these tables.

  python benchmarks/layer_selection.py           # full: rescnn_l_digits04 (8 layers), mlp_l_flip10
                                                 # (6 layers), drop and reinit, 3 seeds
  python benchmarks/layer_selection.py --quick   # mlp_m_shuffled, 4 layers, drop, 2 epochs (< 1 min)

Writes ``layer_selection.{md,json,png}`` to ``--out`` (default benchmarks/results/).
"""

from __future__ import annotations

import pathlib
import sys
import time

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import _protocol as P  # noqa: E402

FULL = dict(target="digits59", models=("rescnn_l_digits04", "mlp_l_flip10"),
            modes=("drop", "reinit"), epochs=30, seeds=(0, 1, 2), probe_steps=500, metrics=None)
# N-LEEP's EM compiles once per width (seconds each): left out of the quick run, which must stay
# well under a minute; model_selection.py --quick exercises it.
QUICK = dict(target="digits59", models=("mlp_m_shuffled",), modes=("drop",), epochs=2,
             seeds=(0,), probe_steps=50,
             metrics=("transrate", "transrate_official", "logme", "hscore", "regularized_hscore",
                      "gbc", "lfc", "sfda", "parc"))


def candidate_layers(config) -> list:
  """The layers compared for a zoo model: block outputs, plus the points inside blocks.

  MLP: every ``blocks/i/linear`` (pre-activation) and ``blocks/i``. CNN: every cut point except
  ``pool`` (same pooled features as the last conv block). ResCNN: ``stem/conv``, ``stem``, and
  per residual block the half-block ``blocks/i/bn1`` and the block output ``blocks/i``.
  """
  from transrate_jax._src import finetune  # noqa: PLC0415
  cuts = finetune.cut_points(config)
  if config["arch"] == "rescnn":
    return [c for c in cuts if c in ("stem/conv", "stem") or c.endswith("/bn1")
            or (c.startswith("blocks/") and c.count("/") == 1)]
  if config["arch"] == "cnn":
    return [c for c in cuts if c != "pool"]
  return cuts


def score_model(name: str, target: str, *, metrics, probe_steps: int, log=print) -> dict:
  """Phase 1 (cheap): capture every candidate layer, score it, and fit the linear probe."""
  from transrate_jax import zoo  # noqa: PLC0415
  from transrate_jax._src import capture  # noqa: PLC0415
  from transrate_jax._src import probe  # noqa: PLC0415

  x_tr, y_tr, x_te, y_te = zoo.load_target_task(target)
  num_classes = int(max(y_tr.max(), y_te.max())) + 1
  model, info = zoo.load(name), zoo.info(name)
  layers = candidate_layers(info)
  log(f"\n== {name} ({info['arch']}, source task {info['task']}) on {target}: "
      f"{len(layers)} layers", flush=True)
  tr = capture.intermediates(model, x_tr, layers=layers, progress=False)
  te = capture.intermediates(model, x_te, layers=layers, progress=False)
  feats = {l: np.asarray(tr[l]) for l in layers}
  t = time.perf_counter()
  scores = P.score_features(feats, y_tr, metrics=metrics)
  seconds = {"scores": time.perf_counter() - t}
  probe_acc = [probe.linear_probe_accuracy(tr[l], y_tr, te[l], y_te, num_classes=num_classes,
                                           steps=probe_steps) for l in layers]
  return {
      "model": name, "arch": info["arch"], "source_task": info["task"], "target": target,
      "num_train": int(len(y_tr)), "num_test": int(len(y_te)), "layers": layers,
      "dims": [int(feats[l].shape[1]) for l in layers],
      "scores": {m: [float(v) for v in s] for m, s in scores.items()},
      "accuracy": {"probe": probe_acc}, "seconds": seconds,
  }


def finetune_model(r: dict, *, modes, epochs: int, seeds, log=print) -> dict:
  """Phase 2 (expensive): transfer from every layer and train; then correlate."""
  from transrate_jax import zoo  # noqa: PLC0415
  from transrate_jax._src import finetune  # noqa: PLC0415

  x_tr, y_tr, x_te, y_te = zoo.load_target_task(r["target"])
  num_classes = int(max(y_tr.max(), y_te.max())) + 1
  model, info = zoo.load(r["model"]), zoo.info(r["model"])
  layers = r["layers"]
  gts = {}
  for mode in modes:
    t = time.perf_counter()
    gts[f"finetune_{mode}"] = [
        finetune.finetune_accuracy(model, info, x_tr, y_tr, x_te, y_te, num_classes=num_classes,
                                   layer=l, mode=mode, epochs=epochs, seeds=seeds)
        for l in layers]
    r["seconds"][f"finetune_{mode}"] = time.perf_counter() - t
  gts["probe"] = r["accuracy"]["probe"]
  r["accuracy"] = gts
  log(f"\n== {r['model']}: accuracy of transferring from each layer")
  for i, l in enumerate(layers):
    accs = "  ".join(f"{g} {a[i]:.3f}" for g, a in gts.items())
    log(f"  {l:16s} d={r['dims'][i]:4d}  {accs}  transrate {r['scores']['transrate'][i]:.3f}",
        flush=True)
  r["correlations"] = {g: P.correlations(r["scores"], acc) for g, acc in gts.items()}
  r["comparison"] = {g: P.comparison(r["scores"], acc, names=layers, widths=r["dims"])
                     for g, acc in gts.items()}
  return r


GT_LABELS = {"finetune_drop": "fine-tuning, layers above dropped",
             "finetune_reinit": "fine-tuning, layers above re-initialised",
             "probe": "linear probe on the layer's frozen features"}


def write_outputs(out_dir: pathlib.Path, result: dict) -> None:
  out_dir = pathlib.Path(out_dir)
  P.write_json(out_dir / "layer_selection.json", result)
  s = result["settings"]
  md = [f"# Layer selection on the digits zoo ({'quick' if s['quick'] else 'full'} run)", "",
        f"Device: {P.describe_device(result['device'])}.  ",
        f"Command: `{result['command']}`; wall-clock {result['seconds']:.0f} s.  ",
        f"Target {s['target']}. Transfer from layer k: the model up to k (mean-pooled) plus a "
        "fresh linear head (`drop`), or the whole architecture with the layers above k "
        f"re-initialised (`reinit`); all weights trained, AdamW lr {s['learning_rate']}, "
        f"{s['epochs']} epochs, batch {s['batch_size']}, mean test accuracy over seeds "
        f"{list(s['seeds'])}. Scores: mean-pooled layer-k features of the target training "
        "split. Correlations over layers: `transrate_jax._src.evaluation`. Best per row in bold.",
        ""]
  for name, r in result["models"].items():
    for gt, acc in r["accuracy"].items():
      md += [f"## {name}: correlation with {GT_LABELS.get(gt, gt)}", "",
             P.correlation_table_md(r["correlations"][gt]), "",
             "With 95% bootstrap intervals, beside the width and random baselines:", "",
             P.comparison_md(r["comparison"][gt]), ""]
    cols = {"d": r["dims"]}
    cols.update({f"acc ({g})": a for g, a in r["accuracy"].items()})
    cols.update(r["scores"])
    md += [f"### {name}: scores and accuracies per layer", "",
           P.values_table_md(r["layers"], cols, first="layer"), ""]
  (out_dir / "layer_selection.md").write_text("\n".join(md))

  panels = []
  for name, r in result["models"].items():
    idx = [str(i) for i in range(len(r["layers"]))]
    panels.append({"title": f"{name}: accuracy per layer", "xlabel": "layer index",
                   "ylabel": "target test accuracy",
                   "series": [{"x": list(range(len(idx))), "y": a, "label": g}
                              for g, a in r["accuracy"].items()]})
    first = next(iter(r["accuracy"]))
    for m, sc in r["scores"].items():
      c = r["correlations"][first][m]
      panels.append({
          "title": f"{name}\n{m}: {first} r={c['pearson']:.2f}, tau={c['kendall']:.2f}",
          "xlabel": f"{m} score (point label = layer index)", "ylabel": "target test accuracy",
          "series": [{"x": sc, "y": a, "label": g, "labels": idx if j == 0 else None}
                     for j, (g, a) in enumerate(r["accuracy"].items())]})
  P.scatter_grid(out_dir / "layer_selection.png", panels, ncols=5,
                 title="Layer selection: score vs accuracy of transferring from that layer")


def main(argv=None) -> dict:
  parser = P.base_parser(__doc__.splitlines()[0])
  parser.add_argument("--models", nargs="+", default=None)
  parser.add_argument("--modes", nargs="+", default=None, choices=("drop", "reinit"))
  parser.add_argument("--epochs", type=int, default=None)
  parser.add_argument("--seeds", type=int, default=None, help="number of fine-tuning seeds")
  args = parser.parse_args(argv)
  cfg = dict(QUICK if args.quick else FULL)
  for key in ("models", "modes"):
    if getattr(args, key):
      cfg[key] = tuple(getattr(args, key))
  if args.epochs:
    cfg["epochs"] = args.epochs
  if args.seeds:
    cfg["seeds"] = tuple(range(args.seeds))
  device = P.device_info()
  metrics = P.available_metrics(cfg["metrics"], prediction=False)
  print(f"device: {P.describe_device(device)}")
  print(f"metrics: {', '.join(metrics)}")
  start = time.perf_counter()
  # Every score first, then every fine-tuning run (the cheap phase does not wait on the costly
  # one; on this CPU, scoring after many fine-tuning programs once hung inside XLA).
  models = {n: score_model(n, cfg["target"], metrics=metrics, probe_steps=cfg["probe_steps"])
            for n in cfg["models"]}
  models = {n: finetune_model(r, modes=cfg["modes"], epochs=cfg["epochs"], seeds=cfg["seeds"])
            for n, r in models.items()}
  result = {
      "benchmark": "layer_selection", "device": device, "metrics": metrics,
      "evaluation": "transrate_jax._src.evaluation",
      "command": "python benchmarks/layer_selection.py" + (" --quick" if args.quick else ""),
      "settings": {"quick": bool(args.quick), "target": cfg["target"], "modes": list(cfg["modes"]),
                   "epochs": cfg["epochs"], "seeds": list(cfg["seeds"]), "batch_size": 32,
                   "learning_rate": 1e-3, "probe_steps": cfg["probe_steps"]},
      "models": models, "seconds": time.perf_counter() - start,
  }
  write_outputs(args.out, result)
  for name, r in models.items():
    for gt in r["accuracy"]:
      print(f"\n{name}, ground truth = {gt}:")
      print(P.comparison_text(r["comparison"][gt]))
  print(f"\nwrote {args.out}/layer_selection.{{md,json,png}} in {result['seconds']:.1f} s")
  return result


if __name__ == "__main__":
  main()
