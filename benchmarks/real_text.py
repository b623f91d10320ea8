"""MiniLM (and its random-init control) on Rotten Tomatoes: do the scores see what pretraining buys?

Candidates: every ported text backbone (``models.list_models("text")``: all-MiniLM-L6-v2's
encoder, paraphrase-MiniLM-L3-v2's) with its published weights and randomly initialised. Target:
Rotten Tomatoes review snippets, fresh vs rotten (``datasets.load_target("rotten_tomatoes_sentiment")``,
balanced, stratified split; the "plot" class of the corpus is left out because text length alone
separates it). Features: every layer, mean-pooled over real tokens. Ground truth: a linear probe on
each layer (the backbone frozen). Reported: each metric's score of each candidate's last layer
against the probe accuracy (model selection), and every layer of every candidate (layer selection).

Run: ``python benchmarks/real_text.py`` (a few minutes on a 2-core CPU); ``--quick`` for a small
setting (CI runs it through tests/test_protocol.py). Writes ``benchmarks/results/real_text.json``.
"""

from __future__ import annotations

import pathlib
import sys
import time

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import _protocol  # noqa: E402
import _real  # noqa: E402

TASK = dict(dataset="rotten_tomatoes_sentiment", n=2000, test_fraction=0.5, seed=0,
            max_length=64)


def text_candidates(task: dict, *, metrics, models=None, probe_steps=300, verbose=True) -> dict:
  """{candidate: layer_table(...)} for every text backbone, pretrained and random-init."""
  from transrate_jax import datasets  # noqa: PLC0415
  from transrate_jax import models as models_lib  # noqa: PLC0415
  from transrate_jax._src import demo  # noqa: PLC0415

  t_tr, y_tr, t_te, y_te = datasets.load_target(task["dataset"], n=task["n"], seed=task["seed"],
                                                 test_fraction=task["test_fraction"])
  names = list(models) if models is not None else models_lib.list_models("text")
  out = {}
  for name in names:
    x_tr = models_lib.tokenize(name, t_tr, max_length=task["max_length"])
    x_te = models_lib.tokenize(name, t_te, max_length=task["max_length"])
    info = models_lib.info(name)
    for pretrained in (True, False):
      label = name if pretrained else name + demo.RANDOM_SUFFIX
      t = time.perf_counter()
      model = models_lib.load(name, pretrained=pretrained, seed=task["seed"])
      layers = [k for k in info["layer_names"] if k != "output"]  # "output" is the last layer
      out[label] = _real.layer_table(model, x_tr, y_tr, x_te, y_te, layers=layers,
                                     metrics=metrics, probe_steps=probe_steps)
      out[label]["penultimate"] = info["penultimate"]
      if verbose:
        print(f"  {label:<26} {time.perf_counter() - t:.0f} s; probe accuracy per layer "
              + ", ".join(f"{a:.3f}" for a in out[label]["probe"]), flush=True)
  return out


def main(argv=None) -> int:
  p = _protocol.base_parser(__doc__.splitlines()[0])
  args = p.parse_args(argv)
  from transrate_jax._src import demo  # noqa: PLC0415

  info = _protocol.device_info()
  print("device:", _protocol.describe_device(info), flush=True)
  task = dict(TASK)
  models, probe_steps = None, 300
  if args.quick:
    task.update(n=60, max_length=16)
    models, probe_steps = ["minilm_l6"], 30
  metrics = demo.feature_metrics()
  if args.quick:
    metrics = [m for m in demo.QUICK_METRICS if m in metrics]
  print(f"task: {task}; metrics: {', '.join(metrics)}", flush=True)
  tables = text_candidates(task, metrics=metrics, models=models, probe_steps=probe_steps)
  cands = list(tables)
  last = {c: tables[c]["layers"].index(tables[c]["penultimate"]) for c in cands}
  acc = np.asarray([tables[c]["probe"][last[c]] for c in cands])
  scores = {m: np.asarray([tables[c]["scores"][m][last[c]] for c in cands]) for m in metrics}
  selection = demo.correlations(scores, acc)
  compared = _protocol.comparison(scores, acc, names=cands,
                                  widths=[tables[c]["dims"][last[c]] for c in cands])
  from transrate_jax._src.report import format_table  # noqa: PLC0415
  rows = [{"model": c, "probe": acc[i], **{m: scores[m][i] for m in metrics}}
          for i, c in enumerate(cands)]
  print("\nModel selection (last layer):\n")
  print(format_table(rows, [("model", "model", "s")] + [(m, m, ".4g") for m in metrics] +
                     [("probe", "probe acc", ".3f")]))
  print("\n" + _protocol.comparison_text(compared))
  for c in cands:
    _real.print_layer_table(f"Layers of {c}:", tables[c])
  if not args.quick:
    _protocol.write_json(args.out / "real_text.json", {
        "device": info, "task": task, "candidates": cands,
        "model_selection": {"scores": {m: s.tolist() for m, s in scores.items()},
                            "probe": acc.tolist(), "correlations": selection,
                            "comparison": compared},
        "layers": tables})
    print(f"wrote {args.out / 'real_text.json'}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
