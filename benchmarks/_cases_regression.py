"""TransRate for regression targets: timing against the NumPy oracle, and the [n, k] experiment.

``run(n=50000, d=2048, bins=10)``: times ``transrate_regression`` (float32 features, 1-D target,
quantile bins) against the naive float64 NumPy oracle (``tests/reference.py``'s ``transrate`` on
the same bin labels). Compile time is reported apart, the score is checked against the oracle before
timing, medians over repeats. Returns a dict (device named). Called by
``benchmarks/bench_transrate.py``; ``python benchmarks/_cases_regression.py`` runs it alone and
writes ``benchmarks/results/regression.json``.

``run_multilabel(n=20000, d=512, num_labels=50)``: ``transrate_multilabel`` against a Python loop
of ``transrate`` over the label columns (``--multilabel`` adds it to the JSON).

``kmeans_vs_quantile()``: the experiment behind the default quantisation of [n, k] targets (see
``transrate_regression``'s docstring). For 2-D and 5-D targets that depend jointly on 2 or 5 latent
factors, 12 feature sets encode the factors with random strengths plus noise; each is scored by
TransRate with per-column quantile bins and with joint k-means bins, and the scores are compared
(Kendall tau) with the transfer performance, the held-out R^2 of a k-nearest-neighbour regressor
fitted on the features. ``python benchmarks/_cases_regression.py --experiment`` prints it.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import platform
import statistics
import sys
import time

import jax
import numpy as np

_ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(_ROOT))
sys.path.insert(0, str(_ROOT / "tests"))

from transrate_jax._src.regression import quantize_targets  # noqa: E402
from transrate_jax._src.regression import transrate_regression  # noqa: E402


def make_regression_data(n, d, seed=0, dtype=np.float32):
  """Features [n, d] whose first 8 directions carry a nonlinear 1-D target [n], plus noise."""
  rng = np.random.default_rng(seed)
  u = rng.normal(size=(n, 8))
  f = rng.normal(size=(n, d))
  f[:, :8] += 2.0 * u
  t = np.sin(u[:, 0]) + u[:, 1] ** 2 + 0.5 * u[:, 2] * u[:, 3] + 0.1 * rng.normal(size=n)
  return f.astype(dtype), t


def run(n=50000, d=2048, bins=10, repeats=3, oracle_repeats=1):
  """Times ``transrate_regression`` against the NumPy oracle; returns a dict of results."""
  import reference  # tests/reference.py

  f, t = make_regression_data(n, d)
  labels = quantize_targets(t, bins=bins)

  def ours():
    return transrate_regression(f, t, bins=bins).score

  t0 = time.perf_counter()
  first = float(jax.block_until_ready(ours()))
  first_call = time.perf_counter() - t0

  oracle_times = []
  for _ in range(oracle_repeats):
    t0 = time.perf_counter()
    expected = reference.transrate(f, labels)
    oracle_times.append(time.perf_counter() - t0)
  rel_err = abs(first - expected) / abs(expected)
  if rel_err > 1e-3:
    raise AssertionError(f"transrate_regression {first} vs oracle {expected}: rel err {rel_err}")

  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(ours())
    times.append(time.perf_counter() - t0)
  t0 = time.perf_counter()
  quantize_targets(t, bins=bins)
  quantize_time = time.perf_counter() - t0
  median = statistics.median(times)
  oracle = statistics.median(oracle_times)
  return {
      "name": "transrate_regression",
      "device": str(jax.devices()[0]),
      "platform": platform.platform(),
      "n": n, "d": d, "bins": bins, "method": "quantile", "dtype": "float32",
      "score": first, "oracle_score_float64": float(expected), "rel_err_vs_oracle": rel_err,
      "compile_s": first_call - median, "first_call_s": first_call,
      "median_s": median, "times_s": times, "quantize_s": quantize_time,
      "oracle_median_s": oracle, "oracle_times_s": oracle_times,
      "speedup_vs_oracle": oracle / median,
  }


def run_multilabel(n=20000, d=512, num_labels=50, repeats=3):
  """Times ``transrate_multilabel`` against a Python loop of ``transrate`` over label columns."""
  from transrate_jax._src.regression import transrate_multilabel
  from transrate_jax._src.transrate import transrate

  rng = np.random.default_rng(1)
  y = (rng.random((n, num_labels)) < rng.uniform(0.01, 0.5, num_labels)).astype(np.int32)
  f = rng.normal(size=(n, d)).astype(np.float32)
  f[:, :num_labels] += y

  def ours():
    return transrate_multilabel(f, y).score

  def loop():
    return sum(transrate(f, y[:, l], num_classes=2) for l in range(num_labels)) / num_labels

  t0 = time.perf_counter()
  first = float(jax.block_until_ready(ours()))
  first_call = time.perf_counter() - t0
  t0 = time.perf_counter()
  expected = float(jax.block_until_ready(loop()))
  loop_first = time.perf_counter() - t0
  if abs(first - expected) > 1e-4 * abs(expected):
    raise AssertionError(f"transrate_multilabel {first} vs loop of transrate {expected}")
  times, loop_times = [], []
  for _ in range(repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(ours())
    times.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    jax.block_until_ready(loop())
    loop_times.append(time.perf_counter() - t0)
  median, loop_median = statistics.median(times), statistics.median(loop_times)
  return {
      "name": "transrate_multilabel", "device": str(jax.devices()[0]),
      "n": n, "d": d, "num_labels": num_labels, "dtype": "float32",
      "score": first, "loop_score": expected,
      "compile_s": first_call - median, "median_s": median, "times_s": times,
      "loop_first_call_s": loop_first, "loop_median_s": loop_median, "loop_times_s": loop_times,
      "speedup_vs_loop": loop_median / median,
  }


# ---------------------------------------------------------------------------------------------
# The experiment: per-column quantiles vs joint k-means for [n, k] targets.

# name: (number of latent factors p, targets [n, k] from latents u [n, p]).
TASKS = {
    # Each column depends on both latent factors.
    "rotation": (2, lambda u: np.stack([u[:, 0] + u[:, 1], u[:, 0] - u[:, 1]], 1)),
    "product": (2, lambda u: np.stack([u[:, 0] * u[:, 1], u[:, 0] ** 2 - u[:, 1] ** 2], 1)),
    "polar": (2, lambda u: np.stack([np.hypot(u[:, 0], u[:, 1]),
                                     np.arctan2(u[:, 1], u[:, 0])], 1)),
    # A 2-D location with columns on very different scales.
    "location": (2, lambda u: np.stack([10.0 * u[:, 0], 0.1 * np.tanh(u[:, 1])], 1)),
    # Five targets, each a fixed random mix of five latent factors.
    "mix5": (5, lambda u: u @ np.random.default_rng(123).normal(size=(5, 5))),
}


def kmeans_vs_quantile(n=2000, d=32, bins=10, num_sets=12, seeds=tuple(range(10))):
  """Kendall tau between TransRate (two quantisations) and kNN R^2, per task, mean over seeds."""
  from scipy import stats
  from sklearn.metrics import r2_score
  from sklearn.neighbors import KNeighborsRegressor

  out = {}
  for task, (p, target_fn) in TASKS.items():
    taus = {"quantile": [], "kmeans": []}
    for seed in seeds:
      rng = np.random.default_rng(seed)
      u = rng.normal(size=(n, p))
      y = target_fn(u)
      y = y + 0.05 * rng.normal(size=y.shape)
      perf, scores = [], {"quantile": [], "kmeans": []}
      for _ in range(num_sets):
        strength = rng.uniform(0.0, 3.0, size=p)
        f = rng.normal(size=(n, d))
        f[:, :p] += strength * u
        f = f @ np.linalg.qr(rng.normal(size=(d, d)))[0]
        half = n // 2
        knn = KNeighborsRegressor(n_neighbors=15).fit(f[:half], y[:half])
        perf.append(r2_score(y[half:], knn.predict(f[half:])))
        for method in scores:
          scores[method].append(float(transrate_regression(f, y, bins=bins, method=method).score))
      for method in scores:
        taus[method].append(stats.kendalltau(scores[method], perf).statistic)
    out[task] = {m: (float(np.mean(v)), float(np.std(v))) for m, v in taus.items()}
  return out


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--experiment", action="store_true", help="run kmeans_vs_quantile only")
  parser.add_argument("--multilabel", action="store_true", help="also run run_multilabel")
  parser.add_argument("--n", type=int, default=50000)
  parser.add_argument("--d", type=int, default=2048)
  parser.add_argument("--bins", type=int, default=10)
  args = parser.parse_args()
  print("devices:", jax.devices())
  if args.experiment:
    for task, res in kmeans_vs_quantile().items():
      print(task, {m: f"tau {mu:.3f} +- {sd:.3f}" for m, (mu, sd) in res.items()})
    return
  result = run(n=args.n, d=args.d, bins=args.bins)
  if args.multilabel:
    result = {"regression": result, "multilabel": run_multilabel()}
  print(json.dumps(result, indent=2))
  path = pathlib.Path(__file__).parent / "results" / "regression.json"
  path.parent.mkdir(exist_ok=True)
  path.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
  main()
