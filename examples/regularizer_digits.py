"""TransRate as a regularizer: a Flax NNX MLP on scikit-learn's digits, trained with optax.

Loss per mini-batch (labels y, penultimate features h, unit rows u = h / ||h||):

    cross_entropy(logits, y) + lam * transrate_loss(u, y, num_classes=10)

``transrate_loss`` is minus TransRate, so lam > 0 pushes the penultimate features towards a high
coding rate overall and a low one within each class (as in MCR^2, Yu et al., NeurIPS 2020). Rows are
L2-normalised first because TransRate grows with the feature scale: without it the network could
lower the loss by inflating its features.

For each lam and seed the script reports the test accuracy and the TransRate of the test set's
penultimate features (``transrate`` on the raw features, and on unit rows: what the regularizer saw),
then mean +- std over seeds, as a table and as JSON.

Usage:
  python examples/regularizer_digits.py            # 3 seeds, lam in {0, 0.001, 0.01, 0.03}, 40 epochs
  python examples/regularizer_digits.py --small    # CI: 2 seeds, lam in {0, 0.01}, 6 epochs (< 60 s)

Writes examples/results/regularizer_digits.json (``--out`` to change; ``--out ''`` for none).
"""

from __future__ import annotations

import argparse
import json
import pathlib
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from transrate_jax._src.regularizer import transrate_loss
from transrate_jax._src.transrate import transrate

NUM_CLASSES = 10


def load_digits_split(seed: int = 0, test_fraction: float = 0.3):
  """scikit-learn's 8x8 digits (1797 images, 10 classes), pixels scaled to [0, 1], split
  stratified into train and test with a fixed seed.

  Returns:
    ``(x_train [n, 64] float32, y_train [n] int32, x_test, y_test)``.
  """
  from sklearn.datasets import load_digits
  data = load_digits()
  x = (data.data / 16.0).astype(np.float32)
  y = data.target.astype(np.int32)
  rng = np.random.default_rng(seed)
  test = np.zeros(len(y), bool)
  for c in range(NUM_CLASSES):
    idx = rng.permutation(np.flatnonzero(y == c))
    test[idx[:int(round(test_fraction * len(idx)))]] = True
  return x[~test], y[~test], x[test], y[test]


class MLP(nnx.Module):
  """64 -> 128 -> 64 (penultimate features) -> 10 logits, ReLU."""

  def __init__(self, *, rngs: nnx.Rngs, hidden: int = 128, features: int = 64):
    self.l1 = nnx.Linear(64, hidden, rngs=rngs)
    self.l2 = nnx.Linear(hidden, features, rngs=rngs)
    self.head = nnx.Linear(features, NUM_CLASSES, rngs=rngs)

  def features(self, x):
    return nnx.relu(self.l2(nnx.relu(self.l1(x))))

  def __call__(self, x):
    h = self.features(x)
    return self.head(h), h


def unit_rows(h):
  return h / jnp.maximum(jnp.linalg.norm(h, axis=1, keepdims=True), 1e-12)


def loss_fn(model, x, y, lam):
  logits, h = model(x)
  ce = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
  reg = transrate_loss(unit_rows(h), y, num_classes=NUM_CLASSES)
  return ce + lam * reg, (ce, reg)


@nnx.jit
def train_step(model, optimizer, x, y, lam):
  (loss, aux), grads = nnx.value_and_grad(loss_fn, has_aux=True)(model, x, y, lam)
  optimizer.update(model, grads)
  return loss, aux


@nnx.jit
def predict(model, x):
  return model(x)


def run(seed, lam, data, *, epochs, batch_size, lr):
  x_train, y_train, x_test, y_test = data
  model = MLP(rngs=nnx.Rngs(seed))
  optimizer = nnx.Optimizer(model, optax.adam(lr), wrt=nnx.Param)
  rng = np.random.default_rng(seed)
  lam_arg = jnp.float32(lam)
  steps = len(y_train) // batch_size  # full batches only: one compiled step
  for _ in range(epochs):
    order = rng.permutation(len(y_train))
    for s in range(steps):
      idx = order[s * batch_size:(s + 1) * batch_size]
      loss, _ = train_step(model, optimizer, x_train[idx], y_train[idx], lam_arg)
  assert np.isfinite(float(loss))
  logits, h = predict(model, x_test)
  h = np.asarray(h, np.float64)
  unit = h / np.maximum(np.linalg.norm(h, axis=1, keepdims=True), 1e-12)
  return {
      "seed": seed, "lam": float(lam),
      "test_accuracy": float(np.mean(np.argmax(np.asarray(logits), 1) == y_test)),
      "test_transrate": float(transrate(h, y_test, num_classes=NUM_CLASSES)),
      "test_transrate_unit_rows": float(transrate(unit, y_test, num_classes=NUM_CLASSES)),
      "final_train_loss": float(loss),
  }


def summarise(runs, lams):
  keys = ("test_accuracy", "test_transrate", "test_transrate_unit_rows")
  rows = []
  for lam in lams:
    sel = [r for r in runs if r["lam"] == float(lam)]
    row = {"lam": lam, "seeds": len(sel)}
    for k in keys:
      v = np.array([r[k] for r in sel])
      row[k] = {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if len(v) > 1 else 0.0}
    rows.append(row)
  return rows


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--small", action="store_true", help="CI size (< 60 s)")
  parser.add_argument("--seeds", type=int, default=None)
  parser.add_argument("--epochs", type=int, default=None)
  parser.add_argument("--lams", type=float, nargs="+", default=None)
  parser.add_argument("--out", default=str(pathlib.Path(__file__).parent / "results" /
                                          "regularizer_digits.json"))
  args = parser.parse_args()
  seeds = args.seeds or (2 if args.small else 3)
  epochs = args.epochs or (6 if args.small else 40)
  lams = args.lams or ([0.0, 0.01] if args.small else [0.0, 0.001, 0.01, 0.03])
  batch_size, lr = 128, 1e-3
  data = load_digits_split()
  print(f"digits: {len(data[1])} train / {len(data[3])} test, device {jax.devices()[0]}; "
        f"{seeds} seeds, {epochs} epochs, batch {batch_size}, adam {lr}")
  t0 = time.perf_counter()
  runs = []
  for lam in lams:
    for seed in range(seeds):
      runs.append(run(seed, lam, data, epochs=epochs, batch_size=batch_size, lr=lr))
  rows = summarise(runs, lams)
  print(f"\n| lam | test accuracy | test TransRate (raw features) | test TransRate (unit rows) |")
  print("|---|---|---|---|")
  for r in rows:
    fmt = lambda k, p: f"{r[k]['mean']:.{p}f} +- {r[k]['std']:.{p}f}"
    print(f"| {r['lam']:g} | {fmt('test_accuracy', 4)} | {fmt('test_transrate', 2)} | "
          f"{fmt('test_transrate_unit_rows', 2)} |")
  elapsed = time.perf_counter() - t0
  print(f"\n{elapsed:.1f} s")
  if args.out:
    out = pathlib.Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "settings": {"seeds": seeds, "epochs": epochs, "lams": lams, "batch_size": batch_size,
                     "learning_rate": lr, "eps": 1e-4, "weighting": "prior",
                     "model": "MLP 64-128-64-10 (ReLU), penultimate = 64-d",
                     "device": str(jax.devices()[0]), "small": args.small},
        "summary": rows, "runs": runs, "seconds": elapsed}, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
  main()
