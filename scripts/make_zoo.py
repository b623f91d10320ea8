"""Regenerates the model zoo: transrate_jax/zoo/weights/*.msgpack and transrate_jax/zoo/manifest.json.

Every model in ``transrate_jax._src.zoo.ZOO`` is trained on its source task from ``--seed``
(deterministic: same seed, same platform -> same bytes), saved with
``flax.serialization.to_bytes`` and recorded in the manifest with its source-task test
accuracy, its penultimate layer and its capture layer names. As a diagnostic of how differently
the models transfer, the manifest also records ``target_probe_accuracy``: the test accuracy on
the default target task (digits 5-9) of a multinomial logistic regression (L2 1e-3, full-batch
Adam, 500 steps, standardised features) fitted on the penultimate features of the target
train split.

Usage: python scripts/make_zoo.py [--seed 0] [--only NAME ...]
"""

import argparse
import hashlib
import json
import pathlib
import time

import jax
import numpy as np

from transrate_jax._src import zoo
from transrate_jax._src.capture import intermediates
from transrate_jax._src.probe import linear_probe_accuracy

ROOT = pathlib.Path(__file__).resolve().parents[1] / "transrate_jax" / "zoo"


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--only", nargs="*", default=None)
  args = parser.parse_args()
  (ROOT / "weights").mkdir(exist_ok=True)
  path = ROOT / "manifest.json"
  old = json.loads(path.read_text())["models"] if path.exists() else {}
  x_tr, y_tr, x_te, y_te = zoo.load_target_task("digits59")
  models = {}
  for name, config in zoo.ZOO.items():
    if args.only and name not in args.only:
      models[name] = old[name]
      continue
    t0 = time.perf_counter()
    model, acc = zoo.train(config, seed=args.seed)
    seconds = time.perf_counter() - t0
    data = zoo.to_bytes(model)
    (ROOT / "weights" / f"{name}.msgpack").write_bytes(data)
    pen = zoo.penultimate(config)
    feats_tr = intermediates(model, x_tr, progress=False)
    feats_te = intermediates(model, x_te, layers=[pen], progress=False)
    probe = linear_probe_accuracy(feats_tr[pen], y_tr, feats_te[pen], y_te)
    n_params = sum(int(np.size(v)) for v in jax.tree.leaves(zoo._saved_state(model)))
    models[name] = dict(
        config, source_task=zoo.SOURCE_TASKS[config["task"]][0], seed=args.seed,
        num_classes=zoo.SOURCE_TASKS[config["task"]][1], source_test_accuracy=acc,
        penultimate=pen, layers=list(feats_tr), num_params=n_params,
        target_probe_accuracy=probe, file=f"{name}.msgpack",
        sha256=hashlib.sha256(data).hexdigest())
    print(f"{name:20s} source acc {acc:.4f}  probe(digits59) {probe:.4f}  params {n_params:6d}"
          f"  {len(data):7d} bytes  {seconds:.1f} s")
  manifest = dict(
      description="Flax NNX models pretrained on source tasks of scikit-learn digits; see "
                  "transrate_jax/_src/zoo.py and scripts/make_zoo.py.",
      seed=args.seed, jax_version=jax.__version__, train=zoo.TRAIN_DEFAULTS,
      target_probe="multinomial logistic regression on standardised penultimate features of "
                   "the digits59 target train split, L2 1e-3, Adam 1e-2, 500 full-batch steps; "
                   "accuracy on the target test split",
      models=models)
  path.write_text(json.dumps(manifest, indent=1) + "\n")
  print(f"wrote {path}")


if __name__ == "__main__":
  main()
