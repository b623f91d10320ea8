"""Which metric to trust, chosen across tasks and checked on a task it was not chosen on.

The measurement behind ``tj.recommended`` (``transrate_jax/data/recommended.json``). Four real
target tasks, two image and two text, each with its own candidates:

* ``mnist``: the demo's MNIST (32 px, 500 target-train / 1500 target-test images);
* ``digits``: scikit-learn's 8x8 digits upsampled to 32 px (375 / 1125);
* ``rotten_tomatoes``: Rotten Tomatoes snippets, fresh vs rotten (1000 / 1000, 64 tokens);
* ``bbc_news``: BBC News articles, 5 topics (750 / 750, 128 tokens).

Image candidates: the four ImageNet CNNs (EfficientNet-Lite0/1/2, MobileNetV2) and Yahoo's
open_nsfw ResNet-50 (ImageNet, then fine-tuned for NSFW classification), each also randomly
initialised (10 candidates, stem + every block + head). Text candidates: all-MiniLM-L6-v2,
paraphrase-MiniLM-L3-v2 and GloVe 6B 50-d mean-of-word-vectors, each also randomly initialised
(6 candidates, embeddings + every layer; mean-pooled over real tokens).

For every task (``real_joint_selection``'s machinery): every registered feature metric under each
width mode (``raw``, ``pca-min``, ``pca-64``) and two fixed rank averages score every
(candidate, stage); the ground truth of each stage is a linear probe trained on its target-train
features and tested on the target-test ones (the backbone frozen). Three choices per task:

1. model: the candidates' penultimate layers against their probe accuracy (fine-tuning every
   candidate of four tasks does not fit the CPU budget: MNIST's 8 take 20-30 minutes; the probe is
   the same ground truth for every task);
2. layer: within each candidate with at least three stages, the stages against their probe
   accuracy (mean Kendall and mean top-1 regret over candidates; the interval resamples the
   candidates);
3. joint: every (candidate, stage) against its probe accuracy.

**Leave-one-task-out**: for each held-out task and choice, the variant (metric or rank average,
with its width mode) with the highest mean Kendall over the *other* tasks is scored on the
held-out one (Kendall with its 95% bootstrap interval, top-1 regret in probe-accuracy points),
beside the best variant in hindsight on that task and the static baselines (feature width,
parameter count; depth for layers). The shipped recommendation is the variant chosen the same way
on all four tasks; its held-out evidence is what the leave-one-task-out runs measured.

Run: ``python benchmarks/recommendation.py`` (about 17 minutes on a 2-core CPU; resumable: each
task's features, probes and scores are cached in ``--cache``, so a rerun only redoes what
changed). ``--quick``: tiny tasks, one backbone per modality, two metrics (CI runs it through
tests/test_demo.py). Writes ``benchmarks/results/recommendation.{json,md}``; then
``python benchmarks/recommendation.py --write-recommendation`` derives
``transrate_jax/data/recommended.json`` from that JSON (no scoring), and tests/test_recommend.py
fails while the shipped file differs from what the results give.
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
import real_joint_selection as joint  # noqa: E402
from real_joint_selection import _num  # noqa: E402  (None -> NaN)

RESULTS = pathlib.Path(__file__).resolve().parent / "results"
RECOMMENDATION = (pathlib.Path(__file__).resolve().parent.parent / "transrate_jax" / "data" /
                  "recommended.json")
IMAGE_MODELS = ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2", "mobilenet_v2",
                "resnet50_open_nsfw")
TEXT_MODELS = ("minilm_l6", "minilm_l3", "glove_6b_50d")
IMAGE_LAYERS = ("stem", "blocks/*", "head")
TEXT_LAYERS = ("embeddings", "layers/*")
QUICK_IMAGE_LAYERS = ("stem", "blocks/?", "head")  # 12 stages
TASKS = {
    "mnist": dict(dataset="mnist", image_size=32, n=2000, test_fraction=0.75, seed=0),
    "digits": dict(dataset="digits", image_size=32, n=1500, test_fraction=0.75, seed=0),
    "rotten_tomatoes": dict(dataset="rotten_tomatoes_sentiment", n=2000, test_fraction=0.5,
                            seed=0, max_length=64),
    "bbc_news": dict(dataset="bbc_news", n=1500, test_fraction=0.5, seed=0, max_length=128),
}
QUICK_TASKS = {
    "mnist": dict(TASKS["mnist"], n=100, image_size=16, test_fraction=0.5),
    "digits": dict(TASKS["digits"], n=100, image_size=16, test_fraction=0.5),
    "rotten_tomatoes": dict(TASKS["rotten_tomatoes"], n=40, max_length=16),  # 20 / 20 texts
    "bbc_news": dict(TASKS["bbc_news"], n=40, max_length=16),  # 20 / 20 texts, as above
}
KINDS = ("model", "layer", "joint")
TRUTH = "linear-probe accuracy"
SCOPE = {"model": "candidates (penultimate layer)", "layer": "stages of each candidate",
         "joint": "(candidate, stage) pairs"}
BASELINES = {"model": ("width", "params"), "layer": ("width", "depth"),
             "joint": ("width", "params")}
MAX_REGRET = 0.01  # the target: held-out top-1 regret at most 1 point of probe accuracy
PROTOCOL = ("leave-one-task-out: chosen by mean Kendall on the other tasks, scored on this one "
            "(Kendall with its 95% bootstrap interval, top-1 regret in probe accuracy)")


def _modality(task: dict) -> str:
  from transrate_jax import datasets  # noqa: PLC0415

  return datasets.info(task["dataset"])["modality"]


def run_task(name: str, task: dict, *, metrics, models, layers, probe_steps: int,
             num_resamples: int, cache_dir) -> dict:
  """One task's three tables (``real_joint_selection.evaluate``), cached per task in ``cache_dir``.

  The cache key is everything that sets the numbers (task, models, layers, metrics, probe steps,
  resamples, width modes); a cached task is read back, not scored again.
  """
  key = dict(task=task, models=list(models), layers=list(layers), metrics=list(metrics),
             probe_steps=probe_steps, num_resamples=num_resamples, modes=list(joint.MODES))
  path = None if cache_dir is None else pathlib.Path(cache_dir) / f"{name}.json"
  if path is not None and path.is_file():
    cached = json.loads(path.read_text())
    if cached.get("key") == key:
      print(f"{name}: read from {path}", flush=True)
      return cached["result"]
  print(f"{name}: {task}", flush=True)
  text = _modality(task) == "text"
  if path is not None:
    path.parent.mkdir(parents=True, exist_ok=True)
  data = joint.extract(task, models=models, probe_steps=probe_steps,
                       cache=None if cache_dir is None else pathlib.Path(cache_dir) / f"{name}.npz",
                       layers=layers)
  t0 = time.perf_counter()
  scored = joint.score_all(data, metrics, list(joint.MODES))
  scoring_s = time.perf_counter() - t0
  keys = [(c, k) for c in data["candidates"] for k in data["layers"][c]]
  variants, members_of = joint.with_rank_averages(scored["variants"], keys, metrics)
  truth = np.asarray([data["probe"][c][data["penultimate"][c]] for c in data["candidates"]])
  t0 = time.perf_counter()
  tables = joint.evaluate(data, variants, members_of, truth, num_resamples=num_resamples,
                          seed=0, model_truth=TRUTH)
  result = dict(tables, task=task, modality="text" if text else "image",
                candidates=data["candidates"], params=data["params"],
                widths={f"{c}|{k}": int(data["features"][c][k].shape[1]) for c, k in keys},
                probe={f"{c}|{k}": data["probe"][c][k] for c, k in keys},
                failures=scored["failures"], members_of=members_of,
                timings=dict(data["timings"], scoring_s=scoring_s,  # extraction: when it ran
                             evaluate_s=time.perf_counter() - t0))
  result = json.loads(json.dumps(_finite(result), allow_nan=False))
  if path is not None:
    path.write_text(json.dumps({"key": key, "result": result}))
  return result


def _finite(v):
  from transrate_jax._src import demo  # noqa: PLC0415

  return demo._finite_or_none(v)  # noqa: SLF001


def bootstrap_mean(values, *, num_resamples: int, seed: int = 0, confidence: float = 0.95):
  """Percentile interval of the mean of ``values`` (the candidates resampled with replacement)."""
  v = np.asarray(values, np.float64)
  rng = np.random.default_rng(seed)
  means = v[rng.integers(0, len(v), size=(num_resamples, len(v)))].mean(axis=1)
  a = (1.0 - confidence) / 2.0
  return [float(np.quantile(means, a)), float(np.quantile(means, 1.0 - a))]


def _row_entry(row: dict):
  """``{"kendall", "interval", "top1_regret"}`` of a comparison row; None where it has no Kendall
  (NaN or constant scores)."""
  k = row.get("kendall")
  if not k or k.get("estimate") is None:
    return None
  return {"kendall": k["estimate"], "interval": [k["low"], k["high"]],
          "top1_regret": row.get("top1_regret")}


def _mean_entry(kendalls, regrets, *, num_resamples: int) -> dict:
  """The layer choice's entry: the means over candidates, the interval resampling them."""
  return {"kendall": float(np.mean(kendalls)),
          "interval": bootstrap_mean(kendalls, num_resamples=num_resamples),
          "top1_regret": None if regrets is None else float(np.mean(regrets))}


def board(result: dict, kind: str, *, num_resamples: int = 1000) -> dict:
  """``{variant: {"kendall", "interval", "top1_regret"}}`` of one task and choice.

  Model and joint: the comparison's Kendall, bootstrap interval and top-1 regret. Layer: the mean
  over candidates of each candidate's Kendall and top-1 regret, the interval resampling the
  candidates. A variant without a finite Kendall is left out.
  """
  if kind != "layer":
    entries = {r["name"]: _row_entry(r) for r in result[kind]["rows"] if r["kind"] == "metric"}
    return {v: e for v, e in entries.items() if e is not None}
  layer, out = result["layer"], {}
  for v, per in layer["kendall_per_candidate"].items():
    per = [_num(k) for k in per]
    if per and np.all(np.isfinite(per)):
      out[v] = _mean_entry(per, [_num(r) for r in layer["top1_regret_per_candidate"][v]],
                           num_resamples=num_resamples)
  return out


def baselines(result: dict, kind: str, *, num_resamples: int = 1000) -> dict:
  """``{baseline: {"kendall", "interval", "top1_regret"}}`` of one task and choice (the static
  rankings of :data:`BASELINES`; None where a baseline is constant)."""
  if kind != "layer":
    rows = {r["name"]: r for r in result[kind]["rows"] if r["kind"] == "baseline"}
    return {name: _row_entry(rows[name]) if name in rows else None for name in BASELINES[kind]}
  out = {}
  for name in BASELINES["layer"]:  # a candidate whose stages share one width has no width rank
    ok = [k for k in map(_num, result["layer"]["baselines_per_candidate"][name])
          if np.isfinite(k)]
    out[name] = _mean_entry(ok, None, num_resamples=num_resamples) if ok else None
  return out


def expressible(variant: str) -> bool:
  """Whether ``tj.Recommendation`` can express the variant (not TransRate's official preset)."""
  return (variant.partition("@")[2] or "raw") in joint.MODES


def choose(boards) -> dict:
  """The rule: over the given tasks' boards, the expressible variant with a finite Kendall on
  every one and the highest mean Kendall; a tie goes to the smaller mean top-1 regret, then to the
  first name in sorted order. Returns ``{"variant", "mean_kendall", "mean_top1_regret",
  "ranking"}`` (``ranking``: every eligible variant, best first, with its mean Kendall)."""
  names = set.intersection(*(set(b) for b in boards))
  rows = []
  for v in sorted(n for n in names if expressible(n)):
    ks = [b[v]["kendall"] for b in boards]
    rs = [b[v]["top1_regret"] for b in boards]
    regret = float(np.mean(rs)) if all(r is not None for r in rs) else float("inf")
    rows.append((-float(np.mean(ks)), regret, v))
  if not rows:
    raise ValueError("no variant has a Kendall on every task.")
  rows.sort()
  best = rows[0]
  return {"variant": best[2], "mean_kendall": -best[0],
          "mean_top1_regret": None if not np.isfinite(best[1]) else best[1],
          "ranking": [{"variant": v, "kendall": -k} for k, _, v in rows]}


def _r4(v):
  return None if v is None else round(float(v), 4)


def _entry(v: dict) -> dict:
  return {"kendall": _r4(v["kendall"]),
          "interval": None if v.get("interval") is None else [_r4(x) for x in v["interval"]],
          "top1_regret": _r4(v.get("top1_regret"))}


def leave_one_task_out(tasks: dict, *, num_resamples: int) -> dict:
  """``{kind: {"chosen_on_all": ..., "held_out": {task: ...}}}`` from the per-task tables."""
  names = list(tasks)
  out = {}
  for kind in KINDS:
    boards = {t: board(tasks[t], kind, num_resamples=num_resamples) for t in names}
    bases = {t: baselines(tasks[t], kind, num_resamples=num_resamples) for t in names}
    held = {}
    for t in names:
      picked = choose([boards[o] for o in names if o != t])
      v = picked["variant"]
      hindsight = choose([boards[t]])
      got = boards[t].get(v)
      base = {b: None if x is None else _r4(x["kendall"]) for b, x in bases[t].items()}
      entry = {"variant": v, "chosen_by_mean_kendall": _r4(picked["mean_kendall"]),
               **(_entry(got) if got is not None else
                  {"kendall": None, "interval": None, "top1_regret": None}),
               "best": {"variant": hindsight["variant"],
                        **_entry(boards[t][hindsight["variant"]])},
               "baselines": base}
      k, r = entry["kendall"], entry["top1_regret"]
      entry["meets_regret_target"] = None if r is None else bool(r <= MAX_REGRET)
      entry["above_every_baseline"] = None if k is None else bool(
          all(b is None or k > b for b in base.values()))
      held[t] = entry
    shipped = choose(list(boards.values()))
    v = shipped["variant"]
    out[kind] = {
        "chosen_on_all": {
            "variant": v, "mean_kendall": _r4(shipped["mean_kendall"]),
            "mean_top1_regret": _r4(shipped["mean_top1_regret"]),
            "tasks": {t: dict(_entry(boards[t][v]), num_candidates=_num_candidates(tasks[t], kind))
                      for t in names},
            "runners_up": [{"variant": r["variant"], "kendall": _r4(r["kendall"])}
                           for r in shipped["ranking"][1:4]],
            "baselines": {b: _r4(np.mean([bases[t][b]["kendall"] for t in names]))
                          if all(bases[t][b] is not None for t in names) else None
                          for b in BASELINES[kind]}},
        "held_out": held}
  return out


def _num_candidates(result: dict, kind: str) -> int:
  if kind == "layer":
    return len(result["layer"]["candidates"])
  return len(result[kind]["candidates"])


def derive_recommendation(result: dict) -> dict:
  """The content of ``transrate_jax/data/recommended.json`` (schema 2) from this benchmark's
  results JSON: each choice's variant chosen on all tasks, its per-task evidence, and the
  leave-one-task-out evidence. Numbers rounded to 4 decimals."""
  from transrate_jax._src import recommend  # noqa: PLC0415

  recs = {}
  for kind in KINDS:
    loto = result["leave_one_task_out"][kind]
    shipped = loto["chosen_on_all"]
    metrics, width = _variant_spec(shipped["variant"], result)
    recs[kind] = {
        "variant": shipped["variant"], "metrics": list(metrics), "width_fair": width,
        "evidence": {"ground_truth": TRUTH, "scope": SCOPE[kind],
                     "mean_kendall": shipped["mean_kendall"],
                     "mean_top1_regret": shipped["mean_top1_regret"],
                     "tasks": shipped["tasks"], "runners_up": shipped["runners_up"],
                     "baselines": shipped["baselines"]},
        "held_out": {"protocol": PROTOCOL, "max_top1_regret": MAX_REGRET,
                     "tasks": {t: {k: h[k] for k in ("variant", "kendall", "interval",
                                                     "top1_regret", "best", "baselines")}
                               for t, h in loto["held_out"].items()}}}
  tasks = [dict(name=t, **r["task"], modality=r["modality"], candidates=r["candidates"],
                num_stage_sets=len(r["probe"])) for t, r in result["tasks"].items()]
  return {
      "schema": recommend.SCHEMA,
      "source": {"benchmark": "benchmarks/recommendation.py",
                 "results": "benchmarks/results/recommendation.json",
                 "command": "python benchmarks/recommendation.py --write-recommendation",
                 "tasks": tasks},
      "rule": ("for each choice (model, layer, joint) the variant (one metric or a rank average, "
               "raw or under a width mode) with the highest mean Kendall over the tasks with "
               "linear-probe accuracy (model: the candidates' penultimate layers; layer: each "
               "candidate's stages, the mean over candidates; joint: every (candidate, stage)); "
               "only variants with a Kendall on every task; a tie goes to the smaller mean top-1 "
               "regret, then to the first name in sorted order; TransRate's official preset is "
               "not a width mode and not a candidate. held_out: the same rule on all tasks but "
               "one, scored on that one."),
      "recommendations": recs}


def _variant_spec(name: str, result: dict):
  """``(metrics, width_fair)`` of a variant (rank averages expanded to their members)."""
  base, _, mode = name.partition("@")
  if base in result["rank_averages"]:
    names = result["rank_averages"][base]
    members = [m for m in (result["metrics"] if names == "all" else names)
               if m in result["metrics"]]
  else:
    members = [base]
  return members, joint.MODES[mode or "raw"]


def write_recommendation(results_path, out_path=RECOMMENDATION) -> dict:
  """Derives the recommendation from a results JSON (nothing is scored) and writes it."""
  result = json.loads(pathlib.Path(results_path).read_text())
  doc = derive_recommendation(result)
  out_path = pathlib.Path(out_path)
  old = json.loads(out_path.read_text()) if out_path.is_file() else {}
  for kind, rec in doc["recommendations"].items():
    was = ((old.get("recommendations") or {}).get(kind) or {}).get("variant")
    note = "unchanged" if was == rec["variant"] else f"was {was}" if was else "new"
    print(f"  {kind}: {rec['variant']} ({note})")
  out_path.write_text(json.dumps(doc, indent=1, allow_nan=False) + "\n")
  print(f"wrote {out_path} from {results_path}")
  return doc


def summary(result: dict) -> str:
  """The leave-one-task-out table and each task's leaders, as Markdown."""
  from transrate_jax._src.report import format_table  # noqa: PLC0415

  names = list(result["tasks"])
  lines = ["# The recommendation across tasks (leave-one-task-out)", "",
           f"Device: {_protocol.describe_device(result['device'])}. Command: "
           f"`{result['command']}`. Ground truth: {TRUTH} (frozen backbone, per stage). "
           f"Target: held-out top-1 regret at most {MAX_REGRET:g} (1 point) and a held-out "
           "Kendall above every static baseline's.", ""]
  for t in names:
    r = result["tasks"][t]
    lines.append(f"- **{t}** ({r['modality']}; {r['task']}): {len(r['candidates'])} candidates, "
                 f"{len(r['probe'])} (candidate, stage) sets; extraction and probes "
                 f"{r['timings']['extract_and_probe_s']:.0f} s, scoring "
                 f"{r['timings']['scoring_s']:.0f} s, tables {r['timings']['evaluate_s']:.0f} s.")
  total = sum(sum(r["timings"].values()) for r in result["tasks"].values())
  lines += ["", f"Time, every task's phases summed (as one uncached run spends it): {total:.0f} s "
            f"({total / 60:.1f} min).", ""]
  for kind in KINDS:
    loto = result["leave_one_task_out"][kind]
    rows = []
    for t in names:
      h = loto["held_out"][t]
      lo, hi = h["interval"] or (None, None)
      rows.append({
          "task": t, "variant": h["variant"], "kendall": _num(h["kendall"]), "low": _num(lo),
          "high": _num(hi), "regret": _num(h["top1_regret"]),
          "best": f"{h['best']['variant']} {h['best']['kendall']:.2f}",
          **{b: _num(h["baselines"][b]) for b in BASELINES[kind]},
          "ok": ("yes" if h["meets_regret_target"] and h["above_every_baseline"] else "no")})
    cols = [("task", "held-out task", "s"), ("variant", "chosen on the others", "s"),
            ("kendall", "Kendall", ".2f"), ("low", "low", ".2f"), ("high", "high", ".2f"),
            ("regret", "top-1 regret", ".3f"), ("best", "best in hindsight", "s")]
    cols += [(b, f"{b} baseline", ".2f") for b in BASELINES[kind]]
    cols += [("ok", "target met", "s")]
    shipped = loto["chosen_on_all"]
    what = {"model": "Model choice (penultimate layers)",
            "layer": "Layer choice (mean over each task's candidates with >= 3 stages)",
            "joint": "Joint model x layer choice"}[kind]
    lines += [f"## {what}", "", "```", format_table(rows, cols), "```", "",
              f"Chosen on all {len(names)} tasks (shipped): **{shipped['variant']}**, mean Kendall "
              f"{shipped['mean_kendall']:.3f} (" + ", ".join(
                  f"{t} {shipped['tasks'][t]['kendall']:.2f}" for t in names) +
              "); runners-up " + ", ".join(f"{r['variant']} {r['kendall']:.3f}"
                                           for r in shipped["runners_up"]) +
              "; static baselines (mean Kendall) " + ", ".join(
                  f"{b} {v:.3f}" if v is not None else f"{b} undefined (constant on a task)"
                  for b, v in shipped["baselines"].items()) + ".", ""]
  return "\n".join(lines)


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--quick", action="store_true",
                 help="tiny tasks, one backbone per modality, two metrics")
  p.add_argument("--cache", default="/tmp/transrate_jax_recommendation",
                 help="directory of each task's cached features, probes and tables ('' for none)")
  p.add_argument("--resamples", type=int, default=1000)
  p.add_argument("--tasks", help=f"comma-separated tasks (default: {','.join(TASKS)})")
  p.add_argument("--metrics", help="comma-separated feature metrics (default: all registered)")
  p.add_argument("--out", default=str(RESULTS), help="directory of the JSON and Markdown")
  p.add_argument("--write-recommendation", nargs="?", const=str(RECOMMENDATION), metavar="PATH",
                 help="only derive the recommendation from the results JSON in --out (no "
                 "scoring) and write it to PATH (default: transrate_jax/data/recommended.json)")
  args = p.parse_args(argv)
  if args.write_recommendation:
    write_recommendation(pathlib.Path(args.out) / "recommendation.json",
                         args.write_recommendation)
    return 0
  import transrate_jax as tj  # noqa: PLC0415
  from transrate_jax._src import demo  # noqa: PLC0415

  info = _protocol.device_info()
  print("device:", _protocol.describe_device(info), flush=True)
  settings = QUICK_TASKS if args.quick else TASKS
  names = args.tasks.split(",") if args.tasks else list(settings)
  unknown = sorted(set(names) - set(settings))
  if unknown:
    p.error(f"unknown tasks {unknown}; known: {list(settings)}")
  metrics = (args.metrics.split(",") if args.metrics else
             list(demo.QUICK_METRICS[:2]) if args.quick else demo.feature_metrics())
  metrics = [m for m in metrics if m in tj.registered_metrics("features")]
  resamples = min(args.resamples, 200) if args.quick else args.resamples
  t0 = time.perf_counter()
  tasks = {}
  for name in names:
    task = settings[name]
    text = _modality(task) == "text"
    models = ((("minilm_l3", "glove_6b_50d") if text else ("mobilenet_v2",)) if args.quick else
              TEXT_MODELS if text else IMAGE_MODELS)
    tasks[name] = run_task(name, task, metrics=metrics, models=models,
                           layers=(QUICK_IMAGE_LAYERS if args.quick and not text else
                                   TEXT_LAYERS if text else IMAGE_LAYERS),
                           probe_steps=30 if args.quick else 300, num_resamples=resamples,
                           cache_dir=args.cache or None)
  command = "python benchmarks/recommendation.py" + (" --quick" if args.quick else "")
  result = {"device": info, "command": command, "metrics": metrics,
            "modes": list(joint.MODES) + ["official"],
            "rank_averages": {k: list(v) if v else "all" for k, v in joint.RANK_AVERAGES.items()},
            "tasks": tasks, "seconds": time.perf_counter() - t0}
  result["leave_one_task_out"] = leave_one_task_out(tasks, num_resamples=resamples)
  out = pathlib.Path(args.out) / "recommendation.json"
  out.parent.mkdir(parents=True, exist_ok=True)
  out.write_text(json.dumps(_finite(result), indent=1, allow_nan=False))
  md = summary(result)
  out.with_suffix(".md").write_text(md)
  print(md)
  print(f"wrote {out} and {out.with_suffix('.md')} ({result['seconds']:.0f} s)")
  if not args.quick:
    print("the shipped recommendation is not rewritten: review the results, then run python "
          "benchmarks/recommendation.py --write-recommendation")
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
