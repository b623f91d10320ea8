"""Layer selection on real backbones: which block of an ImageNet CNN, which layer of MiniLM?

For one vision backbone (EfficientNet-Lite0 with its ImageNet weights, on the demo's MNIST task)
and one text backbone (all-MiniLM-L6-v2's encoder, on Rotten Tomatoes fresh vs rotten): every
block's features on the target-train split scored by every registered metric, and the accuracy of
transferring from that block with the backbone frozen (a linear probe trained on the block's
features, tested on the target-test split). Reported: each metric's Pearson, Kendall and weighted
Kendall with the probe accuracy over the blocks, and the block it picks against the best one.

Run: ``python benchmarks/real_layer_selection.py`` (a few minutes on a 2-core CPU); ``--quick``
for a small setting (CI runs it through tests/test_protocol.py). Writes
``benchmarks/results/real_layer_selection.json``.
"""

from __future__ import annotations

import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import _protocol  # noqa: E402
import _real  # noqa: E402
import real_text  # noqa: E402

VISION = "efficientnet_lite0"
TEXT = "minilm_l6"


def main(argv=None) -> int:
  p = _protocol.base_parser(__doc__.splitlines()[0])
  args = p.parse_args(argv)
  from transrate_jax import models  # noqa: PLC0415
  from transrate_jax._src import demo  # noqa: PLC0415

  info = _protocol.device_info()
  print("device:", _protocol.describe_device(info), flush=True)
  task = dict(demo.TASK)
  text_task = dict(real_text.TASK)
  probe_steps = 300
  if args.quick:
    task.update(image_size=32, n=100)
    text_task.update(n=60, max_length=16)
    probe_steps = 30
  metrics = demo.feature_metrics()
  if args.quick:
    metrics = [m for m in demo.QUICK_METRICS if m in metrics]
  x_tr, y_tr, x_te, y_te = demo.load_task(image_size=task["image_size"], n=task["n"],
                                          test_fraction=task["test_fraction"], seed=task["seed"])
  spec = models.info(VISION)
  blocks = demo.sweep_layers(spec["layer_names"], demo.SWEEP_LAYERS)
  vision = _real.layer_table(models.load(VISION), x_tr, y_tr, x_te, y_te, layers=blocks,
                             metrics=metrics, probe_steps=probe_steps)
  _real.print_layer_table(f"{VISION} on MNIST {task['image_size']} px:", vision)
  text = real_text.text_candidates(text_task, metrics=metrics, models=[TEXT],
                                   probe_steps=probe_steps, verbose=False)[TEXT]
  _real.print_layer_table(f"{TEXT} on Rotten Tomatoes (fresh vs rotten):", text)
  if not args.quick:
    _protocol.write_json(args.out / "real_layer_selection.json", {
        "device": info, "vision": {"model": VISION, "task": task, **vision},
        "text": {"model": TEXT, "task": text_task, **text}})
    print(f"wrote {args.out / 'real_layer_selection.json'}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
