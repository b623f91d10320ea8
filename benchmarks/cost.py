"""Cost of transferability estimation vs fine-tuning (the paper's wall-clock table) on the digits zoo.

For each zoo model on one target task: wall-clock of feature extraction (penultimate layer and
output logits of the target training split), of every metric on those features (LEEP/NCE on the
source softmax/argmax), of a linear probe, and of one fine-tuning run (fresh head, all weights,
``--epochs`` epochs, one seed). Compile time (first call) is reported apart from the run time
(median over repeats, ``block_until_ready``). Each timed metric value is checked to equal the
first call's value and to be finite before it is used. Speed-up over fine-tuning per metric:
``sum(fine-tune run) / (sum(extraction run) + sum(metric run))`` over the models, the paper's
"time to rank the zoo" comparison, measured in the same run on the same device.

  python benchmarks/cost.py           # full: all 10 zoo models, 30 epochs, 5 repeats
  python benchmarks/cost.py --quick   # 2 MLPs, 2 epochs, 2 repeats (< 1 min)

Writes ``cost.{md,json}`` to ``--out`` (default benchmarks/results/).
"""

from __future__ import annotations

import pathlib
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import _protocol as P  # noqa: E402

FULL = dict(target="digits59", models=None, epochs=30, repeats=5, ft_repeats=3, probe_steps=500,
            metrics=None)
QUICK = dict(target="digits59", models=("mlp_m_shuffled", "mlp_l_flip10"), epochs=2, repeats=2,
             ft_repeats=1, probe_steps=50,
             metrics=("transrate", "logme", "hscore", "regularized_hscore", "gbc", "lfc", "sfda",
                      "parc", "leep", "nce"))


def _measure(fn, repeats: int):
  """(first result, first-call seconds, median seconds of ``repeats`` further calls, results)."""
  first, t_first = P.timed(fn)
  runs, outs = [], []
  for _ in range(repeats):
    out, t = P.timed(fn)
    runs.append(t)
    outs.append(out)
  return first, t_first, statistics.median(runs), outs


def run(cfg: dict, metrics, log=print) -> dict:
  from transrate_jax import zoo  # noqa: PLC0415
  from transrate_jax._src import capture  # noqa: PLC0415
  from transrate_jax._src import finetune  # noqa: PLC0415
  from transrate_jax._src import probe  # noqa: PLC0415

  x_tr, y_tr, x_te, y_te = zoo.load_target_task(cfg["target"])
  num_classes = int(max(y_tr.max(), y_te.max())) + 1
  models = list(cfg["models"] or zoo.list_models())
  rows = {}
  for name in models:
    model, info = zoo.load(name), zoo.info(name)
    layer = info["penultimate"]
    row = {"layer": layer}
    feats, t0, t, _ = _measure(lambda: capture.intermediates(
        model, x_tr, layers=[layer, "output"], progress=False), cfg["repeats"])
    row["extraction"] = {"compile_s": t0 - t, "run_s": t}
    f, logits = np.asarray(feats[layer]), np.asarray(feats["output"])
    row["dim"] = int(f.shape[1])
    for m in metrics:
      if m in P.prediction_metrics():
        call = lambda m=m: P.prediction_score(m, logits, y_tr)
      else:
        fn = P.metric_call(m)
        call = lambda fn=fn: fn(f, y_tr)
      value, t0, t, outs = _measure(call, cfg["repeats"])
      value = float(np.asarray(value))
      if not np.isfinite(value) or any(not np.isclose(float(np.asarray(o)), value, rtol=1e-6,
                                                      atol=1e-9) for o in outs):
        raise RuntimeError(f"{m} on {name}: timed calls disagree with the first call ({value}).")
      row[m] = {"compile_s": max(t0 - t, 0.0), "run_s": t, "value": value}
    acc, t0, t, outs = _measure(lambda: finetune.finetune_accuracy(
        model, info, x_tr, y_tr, x_te, y_te, num_classes=num_classes, epochs=cfg["epochs"],
        seeds=(0,)), cfg["ft_repeats"])
    if any(o != acc for o in outs):
      raise RuntimeError(f"fine-tuning {name} is not deterministic: {acc} vs {outs}.")
    row["finetune"] = {"compile_s": max(t0 - t, 0.0), "run_s": t, "accuracy": acc}
    acc_p, t0, t, _ = _measure(lambda: probe.linear_probe_accuracy(
        f, y_tr, np.asarray(capture.intermediates(model, x_te, layers=[layer],
                                                  progress=False)[layer]),
        y_te, num_classes=num_classes, steps=cfg["probe_steps"]), cfg["repeats"])
    row["probe"] = {"compile_s": max(t0 - t, 0.0), "run_s": t, "accuracy": acc_p}
    rows[name] = row
    log(f"  {name:20s} extract {row['extraction']['run_s'] * 1e3:7.2f} ms  fine-tune "
        f"{row['finetune']['run_s']:6.2f} s  " + "  ".join(
            f"{m} {row[m]['run_s'] * 1e3:.1f} ms" for m in metrics), flush=True)

  def total(key, field):
    return float(sum(r[key][field] for r in rows.values()))

  ft = total("finetune", "run_s")
  ext = total("extraction", "run_s")
  summary = {"extraction": {"run_s": ext, "compile_s": total("extraction", "compile_s")},
             "finetune": {"run_s": ft, "compile_s": total("finetune", "compile_s")}}
  for m in metrics + ["probe"]:
    run_s = total(m, "run_s")
    summary[m] = {"run_s": run_s, "compile_s": total(m, "compile_s"),
                  "with_extraction_s": ext + run_s, "speedup": ft / (ext + run_s),
                  "speedup_first_call": (ft + summary["finetune"]["compile_s"]) / (
                      ext + summary["extraction"]["compile_s"] + run_s + total(m, "compile_s"))}
  return {"models": models, "per_model": rows, "summary": summary}


def _x(v: float) -> str:
  return f"{v:.0f}x" if v >= 10 else f"{v:.1f}x"


def write_outputs(out_dir: pathlib.Path, result: dict) -> None:
  out_dir = pathlib.Path(out_dir)
  P.write_json(out_dir / "cost.json", result)
  s, summ = result["settings"], result["summary"]
  n = len(result["models"])
  md = [f"# Cost: transferability metrics vs fine-tuning ({'quick' if s['quick'] else 'full'} run)",
        "", f"Device: {P.describe_device(result['device'])}.  ",
        f"Command: `{result['command']}`; wall-clock {result['seconds']:.0f} s.  ",
        f"Target {s['target']} ({result['num_train']} training images); {n} zoo models. "
        f"Fine-tuning: one seed, {s['epochs']} epochs, batch 32, all weights. Run times are "
        f"medians of {s['repeats']} calls (fine-tuning {s['ft_repeats']}) after a first call; "
        "compile = first call minus median. Times are summed over the models (the cost of "
        "ranking the zoo); speed-up = fine-tuning run time / (extraction + metric run time); "
        "first-call speed-up counts compile time on both sides.", "",
        "| method | run time, all models (s) | + extraction (s) | compile (s) | "
        "speed-up over fine-tuning | first-call speed-up |",
        "|---|---:|---:|---:|---:|---:|",
        f"| fine-tuning (ground truth) | {summ['finetune']['run_s']:.3f} | - | "
        f"{summ['finetune']['compile_s']:.2f} | 1 | 1 |",
        f"| feature extraction | {summ['extraction']['run_s']:.4f} | - | "
        f"{summ['extraction']['compile_s']:.2f} | - | - |"]
  for m in result["metrics"] + ["probe"]:
    r = summ[m]
    label = f"linear probe ({s['probe_steps']} steps)" if m == "probe" else m
    md.append(f"| {label} | {r['run_s']:.4f} | {r['with_extraction_s']:.4f} | "
              f"{r['compile_s']:.2f} | {_x(r['speedup'])} | {_x(r['speedup_first_call'])} |")
  md += ["", "Per model (run time, ms; fine-tuning in s):", ""]
  cols = {"d": [r["dim"] for r in result["per_model"].values()],
          "fine-tune (s)": [r["finetune"]["run_s"] for r in result["per_model"].values()],
          "extract": [r["extraction"]["run_s"] * 1e3 for r in result["per_model"].values()]}
  for m in result["metrics"]:
    cols[m] = [r[m]["run_s"] * 1e3 for r in result["per_model"].values()]
  md.append(P.values_table_md(result["models"], cols))
  (out_dir / "cost.md").write_text("\n".join(md) + "\n")


def main(argv=None) -> dict:
  parser = P.base_parser(__doc__.splitlines()[0])
  parser.add_argument("--target", default=None)
  parser.add_argument("--models", nargs="+", default=None)
  parser.add_argument("--epochs", type=int, default=None)
  args = parser.parse_args(argv)
  from transrate_jax import zoo  # noqa: PLC0415

  cfg = dict(QUICK if args.quick else FULL)
  if args.target:
    cfg["target"] = args.target
  if args.models:
    cfg["models"] = tuple(args.models)
  if args.epochs:
    cfg["epochs"] = args.epochs
  device = P.device_info()
  metrics = P.available_metrics(cfg["metrics"])
  print(f"device: {P.describe_device(device)}")
  print(f"metrics: {', '.join(metrics)}")
  start = time.perf_counter()
  out = run(cfg, metrics)
  result = {"benchmark": "cost", "device": device, "metrics": metrics,
            "command": "python benchmarks/cost.py" + (" --quick" if args.quick else ""),
            "settings": {"quick": bool(args.quick), "target": cfg["target"],
                         "epochs": cfg["epochs"], "repeats": cfg["repeats"],
                         "ft_repeats": cfg["ft_repeats"], "probe_steps": cfg["probe_steps"]},
            "num_train": int(len(zoo.load_target_task(cfg["target"])[1])),
            **out, "seconds": time.perf_counter() - start}
  write_outputs(args.out, result)
  print((args.out / "cost.md").read_text())
  return result


if __name__ == "__main__":
  main()
