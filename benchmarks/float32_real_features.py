"""Float32 against float64 on real backbone features: how far each metric's float32 value is.

Every stage of MobileNetV2 and EfficientNet-Lite0 (ImageNet weights, the demo's layer sweep) on
the demo's MNIST task (target-train split), captured in float32 and scored by every registered
feature metric twice: on the float32 features, and on the same values upcast to float64
(``jax_enable_x64``). Reported per metric: the largest and the median relative gap
``|s32 - s64| / |s64|`` over the stages, and the stage where the gap is largest. A large gap
means the float64 value depends on directions below float32's round-off (docs/numerics.md says
which metrics have such limits and why); pass float64 features there.

This is an accuracy measurement, not a speed one: nothing is timed.

Run: ``python benchmarks/float32_real_features.py`` (about 5 minutes on a 2-core CPU);
``--quick`` for one backbone at three stages on fewer images. Writes
``benchmarks/results/float32_real_features.json``.
"""

from __future__ import annotations

import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)

import numpy as np  # noqa: E402

import _protocol  # noqa: E402

BACKBONES = ("mobilenet_v2", "efficientnet_lite0")
# N-LEEP fits a 5 C-component Gaussian mixture per stage and score: minutes per stage here.
SKIPPED = ("nleep",)


def relative_gaps(features: dict, labels: np.ndarray, metrics) -> dict:
  """``{metric: {stage: (s64, s32, gap)}}``; a metric that refuses a stage records the reason."""
  from transrate_jax._src import registry  # noqa: PLC0415
  out = {m: {} for m in metrics}
  for stage, f32 in features.items():
    f32 = np.asarray(f32, np.float32)
    for m in metrics:
      fn = registry.get_metric(m).fn
      try:
        s64 = float(fn(f32.astype(np.float64), labels))
        s32 = float(fn(f32, labels))
      except ValueError as err:
        out[m][stage] = {"refused": str(err)[:120]}
        continue
      gap = abs(s32 - s64) / max(abs(s64), 1e-12)
      out[m][stage] = {"float64": s64, "float32": s32, "gap": gap}
  return out


def summary(gaps: dict) -> dict:
  rows = {}
  for m, stages in gaps.items():
    got = {s: v["gap"] for s, v in stages.items() if "gap" in v}
    if not got:
      rows[m] = {"stages": 0}
      continue
    worst = max(got, key=got.get)
    rows[m] = {"stages": len(got), "max_gap": got[worst], "median_gap": float(np.median(list(got.values()))),
               "worst_stage": worst, "refused": len(stages) - len(got)}
  return rows


def main(argv=None) -> int:
  p = _protocol.base_parser(__doc__.splitlines()[0])
  args = p.parse_args(argv)
  from transrate_jax import models  # noqa: PLC0415
  from transrate_jax._src import capture  # noqa: PLC0415
  from transrate_jax._src import demo  # noqa: PLC0415

  info = _protocol.device_info()
  print("device:", _protocol.describe_device(info), flush=True)
  task = dict(demo.TASK, n=2000, test_fraction=0.2)
  backbones, layers = BACKBONES, demo.SWEEP_LAYERS
  if args.quick:
    task.update(n=200)
    backbones, layers = BACKBONES[:1], demo.QUICK_LAYERS
  x_tr, y_tr, _, _ = demo.load_task(image_size=task["image_size"], n=task["n"],
                                    test_fraction=task["test_fraction"], seed=task["seed"])
  metrics = [m for m in demo.feature_metrics() if m not in SKIPPED]
  gaps = {}
  for name in backbones:
    model = models.load(name, pretrained=True, seed=task["seed"])
    stages = demo.sweep_layers(models.info(name)["layer_names"], layers)
    feats = capture.intermediates(model, x_tr, layers=stages, batch_size=128, progress=False)
    feats = {f"{name}:{k}": np.asarray(v, np.float32) for k, v in feats.items()}
    for m, per_stage in relative_gaps(feats, np.asarray(y_tr), metrics).items():
      gaps.setdefault(m, {}).update(per_stage)
  rows = summary(gaps)
  print(f"float32 vs float64 on the same float32 values: {len(y_tr)} MNIST images "
        f"({task['image_size']} px), {', '.join(backbones)}, stages {', '.join(layers)}")
  print(f"{'metric':20s} {'stages':>6s} {'max gap':>9s} {'median':>9s}  worst stage")
  for m, r in sorted(rows.items(), key=lambda kv: -kv[1].get("max_gap", 0.0)):
    if not r["stages"]:
      print(f"{m:20s} {0:6d}  (refused every stage)")
      continue
    print(f"{m:20s} {r['stages']:6d} {r['max_gap']:9.1e} {r['median_gap']:9.1e}  {r['worst_stage']}"
          + (f"  ({r['refused']} refused)" if r["refused"] else ""))
  _protocol.write_json(args.out / "float32_real_features.json", {
      "device": info, "task": task, "backbones": list(backbones), "layers": list(layers),
      "skipped": list(SKIPPED), "summary": rows, "gaps": gaps})
  return 0


if __name__ == "__main__":
  sys.exit(main())
