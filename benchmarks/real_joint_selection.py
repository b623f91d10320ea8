"""Which metric, which width mode, for model, layer and joint model x layer selection on real backbones?

One task, with fine-tuning ground truth for model choice; its machinery (``extract``,
``score_all``, ``evaluate``) also serves the cross-task benchmark behind the library's
recommendation, ``benchmarks/recommendation.py`` (docs/choosing.md).
The demo's task (MNIST 32 px, 500 target-train / 1500 target-test images) and candidates (the
four ImageNet backbones and their random-init controls). For every candidate and every stage it
sweeps (stem, blocks, head):

* the features on the target-train images, scored by every registered feature metric under each
  width mode: ``raw`` (the features as they are), ``pca-min`` (every feature set reduced to the
  narrowest one's width by exact PCA, ``width_fair="min"``) and ``pca-64`` (wider sets reduced to
  64); and TransRate with the official rank normalisation (``preset="official"``);
* the ground truth of each stage: a linear probe trained on its target-train features and tested
  on the target-test ones; and, per candidate, the shipped fine-tuning accuracy (all weights
  trained, 3 seeds; ``benchmarks/real_model_selection.py``).

Three questions, each answered by ``transrate_jax.compare_metrics`` (Kendall, Pearson and weighted
Kendall with seeded bootstrap intervals, top-1 regret, the width and random baselines):

1. model selection: penultimate-layer scores of the 8 candidates against fine-tuning accuracy;
2. layer selection: within each candidate, the stages' scores against their probe accuracy
   (Kendall per candidate, then the mean over candidates);
3. joint: every (candidate, stage) pair against its probe accuracy, as one table.

Rank averages of metrics (the mean of each metric's rank) are reported beside single metrics.
Set-level metrics (NCTI, ETran: terms normalised over the candidates) and rank averages are
scored again over each question's own candidates (the 8 penultimate layers; one candidate's
stages), never read off the whole table.

Run: ``python benchmarks/real_joint_selection.py`` (about 10 minutes on a 2-core CPU; features
and probe accuracies are cached in ``--cache``, so a rerun only scores); ``--quick`` for a small
setting (300 images, one backbone and its random control, three metrics; CI runs it through
tests/test_demo.py).
Writes ``benchmarks/results/real_joint_selection.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
import time

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import _protocol  # noqa: E402

RESULTS = pathlib.Path(__file__).resolve().parent / "results"
MODES = {"raw": None, "pca-min": "min", "pca-64": 64}
# Rank averages reported beside the single metrics (fixed in advance, not chosen on this data).
RANK_AVERAGES = {"rankavg(all)": None, "rankavg(gbc,logme,lfc)": ("gbc", "logme", "lfc")}


def extract(task: dict, *, models=None, probe_steps: int = 300, cache=None,
            layers=None) -> dict:
  """Features of every swept stage of every candidate, each stage's probe accuracy, and each
  candidate's parameter count.

  ``task``: ``datasets.load_target``'s arguments (``dataset``, ``n``, ``seed``, ``test_fraction``;
  ``image_size`` for an image data set, ``max_length`` (tokens) for a text one). ``models``: the
  backbones (default ``demo.DEMO_MODELS``), each scored pretrained and as its random-init control.
  ``layers``: the stage patterns (default ``demo.SWEEP_LAYERS``: the stem, every block, the head;
  a text encoder's ``embeddings`` and ``layers/*``); the penultimate layer is always included.
  """
  from transrate_jax import datasets  # noqa: PLC0415
  from transrate_jax import models as models_lib  # noqa: PLC0415
  from transrate_jax._src import capture  # noqa: PLC0415
  from transrate_jax._src import demo  # noqa: PLC0415
  from transrate_jax._src import probe  # noqa: PLC0415

  patterns = list(demo.SWEEP_LAYERS if layers is None else layers)
  if cache is not None and pathlib.Path(cache).is_file():
    data = np.load(cache, allow_pickle=False)
    meta = json.loads(str(data["meta"]))
    if meta["task"] == task and meta["models"] == list(models or []) and (
        meta["probe_steps"] == probe_steps) and meta.get("layer_patterns") == patterns and (
            "params" in meta):
      feats = {c: {k: data[f"{c}|{k}"] for k in meta["layers"][c]} for c in meta["candidates"]}
      return {"task": task, "candidates": meta["candidates"], "layers": meta["layers"],
              "penultimate": meta["penultimate"], "features": feats, "y": data["y"],
              "probe": meta["probe"], "params": meta["params"], "timings": meta["timings"]}
  t0 = time.perf_counter()
  text = datasets.info(task["dataset"])["modality"] == "text"
  load = {k: v for k, v in task.items() if k in ("n", "seed", "test_fraction", "image_size")}
  x_tr, y_tr, x_te, y_te = datasets.load_target(task["dataset"], rgb=not text, **load)
  num_classes = int(max(y_tr.max(), y_te.max())) + 1
  names = list(models) if models else list(demo.DEMO_MODELS)
  cands, layers, penult, feats, acc, params = [], {}, {}, {}, {}, {}
  for name in names:
    inputs = [models_lib.tokenize(name, x, max_length=task["max_length"]) if text else x
              for x in (x_tr, x_te)]
    for pretrained in (True, False):
      label = name if pretrained else name + demo.RANDOM_SUFFIX
      model = models_lib.load(name, pretrained=pretrained, seed=task["seed"])
      info = models_lib.info(name)
      scored = list(dict.fromkeys(demo.sweep_layers(info["layer_names"], patterns)
                                  + [info["penultimate"]]))
      tr, te = (capture.intermediates(model, x, layers=scored, batch_size=128, progress=False)
                for x in inputs)
      cands.append(label)
      layers[label], penult[label] = scored, info["penultimate"]
      params[label] = demo._param_count(model)  # noqa: SLF001
      feats[label] = {k: np.asarray(tr[k]) for k in scored}
      acc[label] = {k: float(probe.linear_probe_accuracy(
          feats[label][k], y_tr, np.asarray(te[k]), y_te, num_classes=num_classes,
          steps=probe_steps)) for k in scored}
      print(f"  {label}: {len(scored)} stages, best probe {max(acc[label].values()):.3f}",
            flush=True)
  timings = {"extract_and_probe_s": time.perf_counter() - t0}
  out = {"task": task, "candidates": cands, "layers": layers, "penultimate": penult,
         "features": feats, "y": np.asarray(y_tr), "probe": acc, "params": params,
         "timings": timings}
  if cache is not None:
    meta = dict(task=task, models=list(models or []), probe_steps=probe_steps, candidates=cands,
                layer_patterns=patterns, layers=layers, penultimate=penult, probe=acc,
                params=params, timings=timings)
    arrays = {f"{c}|{k}": v for c in cands for k, v in feats[c].items()}
    np.savez(cache, y=out["y"], meta=np.asarray(json.dumps(meta)), **arrays)
  return out


def score_all(data: dict, metrics, modes) -> dict:
  """``{variant: {(candidate, stage): score}}``, variant = "metric" or "metric@mode"."""
  from transrate_jax._src import demo  # noqa: PLC0415
  from transrate_jax._src import selection  # noqa: PLC0415

  flat = {f"{c}|{k}": data["features"][c][k] for c in data["candidates"]
          for k in data["layers"][c]}
  keys = list(flat)
  variants, failures = {}, {}
  runs = [(m, mode, {}) for mode in modes for m in metrics]
  if "transrate" in metrics:
    runs.append(("transrate", "official", {"transrate": {"preset": "official"}}))
  for metric, mode, options in runs:
    name = metric if mode == "raw" else f"{metric}@{mode}"
    t = time.perf_counter()
    width = MODES.get(mode)
    feats = selection.width_fair_features(flat, width) if width is not None else flat
    fails = {}
    if options:
      res = selection.score_features(feats, data["y"], metrics=(metric,), metric_options=options,
                                     progress=False)
      got = dict(zip(keys, res.scores[metric]))
    else:  # the demo's scorer: NaN (and a note) where a metric refuses a feature set
      got = demo._score(metric, feats, data["y"], fails, where=name)  # noqa: SLF001
    scores = {tuple(k.split("|", 1)): float(v) for k, v in got.items()}
    variants[name] = scores
    if fails:
      failures[name] = fails[metric]
    print(f"  scored {name} in {time.perf_counter() - t:.1f} s", flush=True)
  return {"variants": variants, "failures": failures}


def rank_average(variants: dict, names, keys) -> dict:
  """``transrate_jax.rank_average`` of ``names`` over ``keys``; None if one has a NaN score."""
  import transrate_jax as tj  # noqa: PLC0415

  scores = {n: [variants[n][k] for k in keys] for n in names}
  if not scores or not all(np.all(np.isfinite(v)) for v in scores.values()):
    return None
  return dict(zip(keys, tj.rank_average(scores)))


def with_rank_averages(variants: dict, keys, metrics):
  """``variants`` plus the rank averages of :data:`RANK_AVERAGES` in every mode, and the members
  each rank average was made of (``{name: [variant]}``; a member with a NaN score leaves the
  average out)."""
  out, members_of = dict(variants), {}
  for label, names in RANK_AVERAGES.items():
    for mode in MODES:
      base = [n for n in (names or metrics) if n in metrics]
      members = [n if mode == "raw" else f"{n}@{mode}" for n in base]
      members = [n for n in members if n in variants]
      avg = rank_average(variants, members, keys)
      if avg is not None:
        name = label if mode == "raw" else f"{label}@{mode}"
        out[name], members_of[name] = avg, members
  return out, members_of


class Rescorer:
  """A variant's scores of a subset of the (candidate, stage) keys, as if only they were scored.

  Most variants score each feature set alone, so a subset's scores are the table's. Three kinds
  depend on the set: a set-level metric (NCTI, ETran: terms min-max normalised over the
  candidates) is scored again on the subset, and a rank average is recomputed from its members'
  subset scores. The width mode stays the table's (every set reduced to the narrowest width of
  the whole table, 16), as in the scoring.
  """

  def __init__(self, data: dict, variants: dict, members_of: dict):
    self.data, self.variants, self.members_of, self._feats = data, variants, members_of, {}

  def features(self, mode: str) -> dict:
    from transrate_jax._src import selection  # noqa: PLC0415

    if mode not in self._feats:
      flat = {(c, k): self.data["features"][c][k] for c in self.data["candidates"]
              for k in self.data["layers"][c]}
      width = MODES.get(mode)
      reduced = selection.width_fair_features({f"{c}|{k}": v for (c, k), v in flat.items()},
                                              width) if width is not None else None
      self._feats[mode] = flat if reduced is None else {
          key: reduced[f"{key[0]}|{key[1]}"] for key in flat}
    return self._feats[mode]

  def __call__(self, variant: str, keys) -> np.ndarray:
    import transrate_jax as tj  # noqa: PLC0415

    if variant in self.members_of:
      return tj.rank_average({m: self(m, keys) for m in self.members_of[variant]})
    base, _, mode = variant.partition("@")
    spec = tj.get_metric(base)
    if spec.across_candidates is None or len(keys) == len(self.variants[variant]):
      return np.asarray([self.variants[variant][k] for k in keys], np.float64)
    feats = self.features(mode or "raw")
    try:
      return np.asarray(spec.across_candidates([feats[k] for k in keys], self.data["y"]),
                        np.float64)
    except ValueError:
      return np.full(len(keys), np.nan)


def evaluate(data: dict, variants: dict, members_of: dict, finetune, *, num_resamples: int,
             seed: int, model_truth: str = "fine-tuning accuracy") -> dict:
  """The three choices' tables of one task.

  ``finetune``: [candidates] the model-selection ground truth (None: no model table);
  ``model_truth`` names it. Layer selection ranks the stages of each candidate with at least
  three of them whose probe accuracies differ (a one-layer encoder has nothing to choose); its
  baselines are the stages' width
  and depth (the later, the better). Model and joint tables carry the width and parameter-count
  baselines (``data["params"]``: the candidate's whole parameter count, for each of its stages).
  """
  import transrate_jax as tj  # noqa: PLC0415

  cands = data["candidates"]
  params = data.get("params")
  rescore = Rescorer(data, variants, members_of)
  out = {}
  # 1. Model selection at the penultimate layer against fine-tuning accuracy.
  if finetune is not None:
    keys = [(c, data["penultimate"][c]) for c in cands]
    scores = {v: rescore(v, keys) for v in variants}
    widths = [data["features"][c][data["penultimate"][c]].shape[1] for c in cands]
    out["model"] = tj.compare_metrics(
        scores, finetune, names=cands, widths=widths,
        param_counts=None if params is None else [params[c] for c in cands],
        num_resamples=num_resamples, pool_size=min(6, len(cands)), seed=seed).to_dict()
    out["model"]["ground_truth"] = model_truth
    pen = {c: data["features"][c][data["penultimate"][c]] for c in cands}
    sens = tj.transrate_eps_sensitivity(pen, data["y"])
    out["eps_sensitivity_model"] = {str(e): k for e, k in sens["kendall"].items()}
  # 2. Layer selection within each candidate against the probe: mean Kendall over candidates.
  layered = [c for c in cands if len(data["layers"][c]) >= 3 and np.ptp(
      [data["probe"][c][k] for k in data["layers"][c]]) > 0]
  per = {v: [] for v in variants}
  regret = {v: [] for v in variants}
  baselines = {"width": [], "depth": []}
  for c in layered:
    keys = [(c, k) for k in data["layers"][c]]
    acc = np.asarray([data["probe"][c][k] for k in data["layers"][c]])
    for v in variants:
      sc = rescore(v, keys)
      if not np.all(np.isfinite(sc)) or np.ptp(sc) == 0:
        per[v].append(float("nan"))
        regret[v].append(float("nan"))
        continue
      per[v].append(float(tj.kendall_tau(sc, acc)))
      regret[v].append(float(tj.top1_regret(sc, acc)))
    w = np.asarray([data["features"][c][k].shape[1] for k in data["layers"][c]], np.float64)
    baselines["width"].append(float(tj.kendall_tau(w, acc)) if np.ptp(w) > 0 else float("nan"))
    baselines["depth"].append(float(tj.kendall_tau(np.arange(len(acc), dtype=np.float64), acc)))

  def mean(v):
    return float(np.mean(v)) if len(v) and np.all(np.isfinite(v)) else float("nan")

  out["layer"] = {"kendall_per_candidate": per, "top1_regret_per_candidate": regret,
                  "mean_kendall": {v: mean(k) for v, k in per.items()},
                  "mean_top1_regret": {v: mean(r) for v, r in regret.items()},
                  "width_baseline_mean_kendall": mean([k for k in baselines["width"]
                                                       if np.isfinite(k)]),
                  "baselines_per_candidate": baselines,
                  "candidates": layered}
  # 3. Joint: every (candidate, stage) against its probe accuracy.
  keys = [(c, k) for c in cands for k in data["layers"][c]]
  acc = np.asarray([data["probe"][c][k] for c, k in keys])
  widths = [data["features"][c][k].shape[1] for c, k in keys]
  scores = {v: [s[k] for k in keys] for v, s in variants.items()}
  out["joint"] = tj.compare_metrics(
      scores, acc, names=[f"{c}|{k}" for c, k in keys], widths=widths,
      param_counts=None if params is None else [params[c] for c, _ in keys],
      num_resamples=num_resamples, pool_size=min(20, len(keys)), num_pools=200,
      seed=seed).to_dict()
  sens = tj.transrate_eps_sensitivity(
      {f"{c}|{k}": data["features"][c][k] for c, k in keys}, data["y"])
  out["eps_sensitivity_joint"] = {str(e): k for e, k in sens["kendall"].items()}
  return out


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--quick", action="store_true", help="one backbone and its random control, three metrics")
  p.add_argument("--cache", default="/tmp/transrate_jax_joint_features.npz",
                 help="features and probe accuracies are cached here ('' for none)")
  p.add_argument("--resamples", type=int, default=1000)
  p.add_argument("--metrics", help="comma-separated feature metrics (default: all registered)")
  p.add_argument("--out", default=str(RESULTS), help="directory of the JSON and Markdown")
  args = p.parse_args(argv)
  import transrate_jax as tj  # noqa: PLC0415
  from transrate_jax._src import demo  # noqa: PLC0415

  info = _protocol.device_info()
  print("device:", _protocol.describe_device(info), flush=True)
  task = dict(demo.TASK, n=300) if args.quick else dict(demo.TASK)
  models = ("mobilenet_v2",) if args.quick else None
  metrics = (args.metrics.split(",") if args.metrics else
             list(demo.QUICK_METRICS[:2]) + ["etran"] if args.quick else demo.feature_metrics())
  metrics = [m for m in metrics if m in tj.registered_metrics("features")]
  t0 = time.perf_counter()
  # --quick: the stem, blocks 0-9 and the head, 12 stages per candidate (enough for the pools of
  # 20 of the joint comparison), 5 distinct widths instead of 8 (each compiles every metric once).
  data = extract(task, models=models, probe_steps=30 if args.quick else 300,
                 cache=args.cache or None,
                 layers=("stem", "blocks/?", "head") if args.quick else demo.SWEEP_LAYERS)
  print(f"features and probes: {time.perf_counter() - t0:.1f} s", flush=True)
  t0 = time.perf_counter()
  scored = score_all(data, metrics, list(MODES))
  scoring_s = time.perf_counter() - t0
  keys = [(c, k) for c in data["candidates"] for k in data["layers"][c]]
  variants, members_of = with_rank_averages(scored["variants"], keys, metrics)
  shipped = demo.shipped_finetune()
  finetune = None
  if shipped is not None and shipped["task"] == task and all(
      c in shipped["accuracy"] for c in data["candidates"]):
    finetune = np.asarray([np.mean(shipped["accuracy"][c]) for c in data["candidates"]])
  result = evaluate(data, variants, members_of, finetune,
                    num_resamples=min(args.resamples, 200) if args.quick else args.resamples,
                    seed=0)
  result.update(device=info, task=task, metrics=metrics, modes=list(MODES) + ["official"],
                rank_averages={k: list(v) if v else "all" for k, v in RANK_AVERAGES.items()},
                failures=scored["failures"], candidates=data["candidates"],
                timings=dict(data["timings"], scoring_s=scoring_s),
                variants={v: {f"{c}|{k}": s[(c, k)] for c, k in keys}
                          for v, s in variants.items()},
                probe={f"{c}|{k}": data["probe"][c][k] for c, k in keys})
  out = pathlib.Path(args.out) / "real_joint_selection.json"
  out.parent.mkdir(parents=True, exist_ok=True)
  out.write_text(json.dumps(demo._finite_or_none(result), indent=1, allow_nan=False))  # noqa: SLF001
  md = summary(result)
  out.with_suffix(".md").write_text(md)
  print(md)
  print(f"wrote {out} and {out.with_suffix('.md')}")
  return 0


def _num(v) -> float:
  return float("nan") if v is None else float(v)


def summary(result: dict) -> str:
  """The three questions' leaderboards (Kendall), best first, as Markdown."""
  from transrate_jax._src.report import format_table  # noqa: PLC0415

  lines = ["# Real backbones: which metric and mode for which choice", "",
           f"Device: {_protocol.describe_device(result['device'])}. Candidates: "
           f"{', '.join(result['candidates'])}. Command: `python benchmarks/real_joint_selection.py`.",
           ""]

  def board(title, table):
    rows = []
    for r in table["rows"]:
      k = r.get("kendall") or {}
      pooled = ((r.get("pooled") or {}).get("kendall")) or {}
      rows.append({"metric": r["name"] if r["kind"] == "metric" else f"{r['name']} ({r['kind']})",
                   "kendall": _num(k.get("estimate")), "low": _num(k.get("low")),
                   "high": _num(k.get("high")), "regret": _num(r.get("top1_regret")),
                   "pooled": _num(pooled.get("mean")), "pooled_std": _num(pooled.get("std"))})
    rows.sort(key=lambda r: -np.nan_to_num(r["kendall"], nan=-9))
    lines.extend([f"## {title}", "", "```", format_table(rows, [
        ("metric", "metric / mode", "s"), ("kendall", "Kendall", ".3f"), ("low", "low", ".3f"),
        ("high", "high", ".3f"), ("regret", "top-1 regret", ".3f"),
        ("pooled", f"pools of {table['pool_size']}: mean", ".3f"), ("pooled_std", "std", ".3f")]),
        "```", ""])

  num_cands = len(result["candidates"])
  num_pairs = len(result["probe"])  # keyed "candidate|stage"
  if "model" in result:
    board(f"Model selection (penultimate layer vs fine-tuning accuracy, {num_cands} candidates)",
          result["model"])
  layer = result["layer"]
  rows = [{"metric": v, "kendall": _num(k), "regret": _num(layer["mean_top1_regret"][v])}
          for v, k in layer["mean_kendall"].items()]
  rows.append({"metric": "width (baseline)",
               "kendall": _num(layer["width_baseline_mean_kendall"]), "regret": float("nan")})
  rows.sort(key=lambda r: -np.nan_to_num(r["kendall"], nan=-9))
  lines.extend(["## Layer selection (within each candidate, vs probe accuracy; mean over "
                "candidates)", "", "```", format_table(rows, [
                    ("metric", "metric / mode", "s"), ("kendall", "mean Kendall", ".3f"),
                    ("regret", "mean top-1 regret", ".3f")]), "```", ""])
  board("Joint model x layer (every candidate's every stage vs probe accuracy)", result["joint"])
  for key, title in (("eps_sensitivity_model", f"the {num_cands} candidates' penultimate layers"),
                     ("eps_sensitivity_joint", f"all {num_pairs} (candidate, stage) pairs")):
    if key in result:
      lines.append(f"TransRate's eps sensitivity over {title} (Kendall of each eps's ranking with "
                   "the ranking at 1e-4): " + ", ".join(
                       f"{float(e):g}: {_num(v):.3f}" for e, v in result[key].items()) + "")
      lines.append("")
  return "\n".join(lines)


if __name__ == "__main__":
  raise SystemExit(main())
