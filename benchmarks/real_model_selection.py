"""Model selection on real backbones: ImageNet EfficientNet-Lite0/1/2 and MobileNetV2 on MNIST.

The paper's protocol (Huang et al., ICML 2022, Section 5.1) on real pretrained weights:

1. Ground truth: fine-tune every candidate (each ported image backbone with its ImageNet weights,
   and the same architecture randomly initialised) on the demo's MNIST target-train split, all
   weights trained with a fresh 10-class head, 3 seeds; top-1 accuracy on the target-test split.
   The accuracies are written to ``transrate_jax/data/real_finetune_mnist.json`` (shipped with the
   package: ``transrate-jax demo`` reads them) together with the recipe and this command.
2. Scores: ``transrate_jax._src.demo.run_demo`` on the same task (every registered metric at the
   penultimate layer, LEEP/NCE from the ImageNet predictions, a sweep over every block).
3. Pearson, Kendall and weighted Kendall of each metric with fine-tuning and with the linear
   probe, relative top accuracy, into ``benchmarks/results/real_model_selection.json`` (+ .md, .png).

Run: ``python benchmarks/real_model_selection.py`` (about 20-30 minutes on a 2-core CPU; the
fine-tuning dominates); ``--quick`` fine-tunes MobileNetV2 and its control for one short epoch and writes to a
temporary directory only (CI runs it through tests/test_protocol.py).
"""

from __future__ import annotations

import json
import pathlib
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import _protocol  # noqa: E402

DATA = pathlib.Path(__file__).resolve().parents[1] / "transrate_jax" / "data"
RECIPE = dict(epochs=5, batch_size=32, learning_rate=1e-3, weight_decay=1e-4, bn_momentum=0.9,
              seeds=(0, 1, 2))


def finetune_all(task: dict, recipe: dict, *, models=None, random_init=True, verbose=True):
  """{candidate: [accuracy per seed]} and the seconds each candidate took."""
  from transrate_jax import models as models_lib  # noqa: PLC0415
  from transrate_jax._src import demo  # noqa: PLC0415
  from transrate_jax._src import finetune  # noqa: PLC0415

  x_tr, y_tr, x_te, y_te = demo.load_task(image_size=task["image_size"], n=task["n"],
                                          test_fraction=task["test_fraction"], seed=task["seed"])
  names = list(models) if models is not None else list(demo.DEMO_MODELS)
  cands = [(n, True) for n in names] + ([(n, False) for n in names] if random_init else [])
  acc, seconds = {}, {}
  for name, pretrained in cands:
    label = name if pretrained else name + demo.RANDOM_SUFFIX
    t = time.perf_counter()
    model = models_lib.load(name, pretrained=pretrained, seed=task["seed"])
    acc[label] = finetune.finetune_head_accuracy(
        model, x_tr, y_tr, x_te, y_te, num_classes=10, epochs=recipe["epochs"],
        batch_size=recipe["batch_size"], learning_rate=recipe["learning_rate"],
        weight_decay=recipe["weight_decay"], bn_momentum=recipe["bn_momentum"],
        seeds=recipe["seeds"])
    seconds[label] = time.perf_counter() - t
    if verbose:
      print(f"  {label:<28} fine-tune accuracy {np.mean(acc[label]):.4f} "
            f"(seeds {', '.join(f'{a:.4f}' for a in acc[label])}), {seconds[label]:.0f} s",
            flush=True)
  return acc, seconds


def main(argv=None) -> int:
  p = _protocol.base_parser(__doc__.splitlines()[0])
  p.add_argument("--reuse-finetune", action="store_true",
                 help="read the fine-tuning accuracies shipped in transrate_jax/data instead of "
                 "fine-tuning again (same task and recipe), and redo only the scoring")
  args = p.parse_args(argv)
  from transrate_jax._src import demo  # noqa: PLC0415

  info = _protocol.device_info()
  print("device:", _protocol.describe_device(info), flush=True)
  task = dict(demo.TASK)
  recipe = dict(RECIPE)
  models, data_dir, out_dir, metrics = None, DATA, args.out, None
  if args.quick:
    task.update(image_size=32, n=160)
    recipe.update(epochs=1, batch_size=16, seeds=(0,))
    models, metrics = ["mobilenet_v2"], demo.QUICK_METRICS
    data_dir = out_dir = pathlib.Path(tempfile.mkdtemp())
  recipe_text = (f"fresh 10-class head, all weights trained, AdamW lr {recipe['learning_rate']}, "
                 f"weight decay {recipe['weight_decay']}, {recipe['epochs']} epochs of batches of "
                 f"{recipe['batch_size']}, BatchNorm in train mode (momentum {recipe['bn_momentum']}), mean "
                 f"of seeds "
                 f"{list(recipe['seeds'])}")
  print(f"task: {task}\nfine-tuning: {recipe_text}", flush=True)
  previous = demo.shipped_finetune() if args.reuse_finetune and not args.quick else None
  if previous is not None:
    if previous["task"] != task or previous["recipe"] != recipe_text:
      raise SystemExit("--reuse-finetune: the shipped accuracies were made with another task or "
                       "recipe; run without it.")
    shipped, acc = previous, previous["accuracy"]
    ft_seconds = sum(previous["seconds"].values())
  else:
    t = time.perf_counter()
    acc, seconds = finetune_all(task, recipe, models=models)
    ft_seconds = time.perf_counter() - t
    shipped = {"task": task, "recipe": recipe_text,
               "command": "python benchmarks/real_model_selection.py", "device": info,
               "accuracy": acc, "seconds": seconds}
    data_dir.mkdir(parents=True, exist_ok=True)
    (data_dir / demo.FINETUNE_DATA).write_text(json.dumps(shipped, indent=1) + "\n")

  # The demo reads the shipped accuracies from the installed package; with --quick they live in a
  # temporary directory, so point it there.
  original = demo.shipped_finetune
  if args.quick:
    demo.shipped_finetune = lambda: shipped  # noqa: E731
  try:
    out = demo.run_demo(models=models, metrics=metrics, image_size=task["image_size"], n=task["n"],
                        test_fraction=task["test_fraction"], seed=task["seed"],
                        layers=demo.QUICK_LAYERS if args.quick else demo.SWEEP_LAYERS,
                        plot_path=str(out_dir / "real_model_selection.png"), progress=False,
                        verbose=True)
  finally:
    demo.shipped_finetune = original
  result = {"device": info, "task": task, "recipe": recipe_text, "finetune_seconds": ft_seconds,
            "finetune_per_seed": acc, **{k: out[k] for k in (
                "candidates", "scores", "finetune", "probe", "correlations", "comparison",
                "recommended", "params", "best_layer", "timings")}}
  _protocol.write_json(out_dir / "real_model_selection.json", result)
  md = [f"# Model selection on real backbones (MNIST {task['image_size']} px)", "",
        f"Device: {_protocol.describe_device(info)}", "", f"Fine-tuning: {recipe_text}", ""]
  for key in ("finetune", "probe"):
    if key in out["correlations"]:
      md += [f"## Correlation with {key} accuracy", "",
             _protocol.correlation_table_md(out["correlations"][key]), "",
             "With 95% bootstrap intervals, beside the static baselines (width and parameter "
             "count) and a random ranking:", "", _protocol.comparison_md(out["comparison"][key]),
             ""]
  cols = {m: out["scores"][m] for m in out["scores"]}
  cols["fine-tune acc"] = out["finetune"] or [float("nan")] * len(out["candidates"])
  cols["probe acc"] = out["probe"]
  md += ["## Scores", "", _protocol.values_table_md(out["candidates"], cols), ""]
  (out_dir / "real_model_selection.md").write_text("\n".join(md))
  wrote = [out_dir / "real_model_selection.json"] + ([] if previous else [data_dir / demo.FINETUNE_DATA])
  print("wrote " + " and ".join(map(str, wrote)))
  return 0


if __name__ == "__main__":
  sys.exit(main())
