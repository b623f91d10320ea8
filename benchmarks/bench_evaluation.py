"""How fast is a bootstrap interval? Ours (vectorised) vs a plain loop over resamples with scipy.

For m in (10, 100, 1000) candidates and 1000 resamples, float64 scores and accuracies:
  * ours:  ``bootstrap_interval(scores, accuracies, statistic=...)`` (compile reported apart,
    then the median of repeats);
  * loop:  the same seeded indices (``np.random.default_rng(seed).integers(0, m, (B, m))``), one
    ``scipy.stats.kendalltau`` (or ``pearsonr`` / ``weightedtau``) call per resample, constant
    resamples dropped, ``np.percentile`` of the rest: the way one writes it by hand.
The two intervals are checked equal (to 1e-12) before anything is timed. Results go to
benchmarks/results/bench_evaluation.json with the device named.

    python benchmarks/bench_evaluation.py              # Kendall, m = 10, 100, 1000
    python benchmarks/bench_evaluation.py --all        # also Pearson and weighted tau
    python benchmarks/bench_evaluation.py --quick      # m = 10, 100; fewer repeats
"""

import argparse
import json
import pathlib
import platform
import statistics
import time

import jax

jax.config.update("jax_enable_x64", True)

import numpy as np  # noqa: E402
from scipy import stats  # noqa: E402

from transrate_jax._src import evaluation  # noqa: E402

RESULTS = pathlib.Path(__file__).parent / "results" / "bench_evaluation.json"
NUM_RESAMPLES = 1000
CONFIDENCE = 0.95
SEED = 0
SCIPY = {"kendall": lambda x, y: stats.kendalltau(x, y).statistic,
         "pearson": lambda x, y: stats.pearsonr(x, y).statistic,
         "weighted_tau": lambda x, y: stats.weightedtau(x, y).statistic}


def make_data(m, seed=0):
  rng = np.random.default_rng(seed)
  scores = rng.normal(size=m)
  return scores, scores + rng.normal(size=m)


def loop_interval(scores, accuracies, statistic):
  """The plain way: a Python loop over the seeded resamples, scipy on each."""
  m = scores.shape[0]
  index = np.random.default_rng(SEED).integers(0, m, size=(NUM_RESAMPLES, m))
  fn = SCIPY[statistic]
  values = []
  for row in index:
    x, y = scores[row], accuracies[row]
    if np.ptp(x) == 0 or np.ptp(y) == 0:
      continue
    values.append(fn(x, y))
  low, high = np.percentile(values, [50 * (1 - CONFIDENCE), 50 * (1 + CONFIDENCE)])
  return fn(scores, accuracies), low, high


def ours_interval(scores, accuracies, statistic):
  iv = evaluation.bootstrap_interval(scores, accuracies, statistic=statistic,
                                     num_resamples=NUM_RESAMPLES, confidence=CONFIDENCE,
                                     seed=SEED)
  return iv.estimate, iv.low, iv.high


def median_time(fn, repeats):
  times = []
  for _ in range(repeats):
    t = time.perf_counter()
    fn()
    times.append(time.perf_counter() - t)
  return statistics.median(times)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--quick", action="store_true", help="m = 10, 100 only; fewer repeats")
  parser.add_argument("--all", action="store_true", help="also Pearson and weighted tau")
  parser.add_argument("--repeats", type=int, default=None)
  parser.add_argument("--out", default=str(RESULTS))
  args = parser.parse_args()
  sizes = (10, 100) if args.quick else (10, 100, 1000)
  statistics_ = ("kendall", "pearson", "weighted_tau") if args.all else ("kendall",)
  repeats = args.repeats or (3 if args.quick else 7)
  device = jax.devices()[0]
  print(f"device: {device.device_kind} ({device.platform}), jax {jax.__version__}, "
        f"{platform.processor() or platform.machine()}; {NUM_RESAMPLES} resamples, float64")
  rows = []
  for statistic in statistics_:
    for m in sizes:
      scores, accuracies = make_data(m)
      t = time.perf_counter()
      ours = ours_interval(scores, accuracies, statistic)  # first call: compile + run
      first = time.perf_counter() - t
      loop = loop_interval(scores, accuracies, statistic)
      diff = float(np.max(np.abs(np.subtract(ours, loop))))
      if diff > 1e-12:
        raise SystemExit(f"{statistic} m={m}: intervals differ by {diff} (ours {ours}, loop "
                         f"{loop})")
      ours_s = median_time(lambda: ours_interval(scores, accuracies, statistic), repeats)
      loop_s = median_time(lambda: loop_interval(scores, accuracies, statistic),
                           max(1, repeats // 2))
      row = {"statistic": statistic, "m": m, "num_resamples": NUM_RESAMPLES,
             "ours_s": ours_s, "ours_first_call_s": first, "loop_scipy_s": loop_s,
             "speedup": loop_s / ours_s, "max_abs_diff": diff,
             "interval": {"estimate": ours[0], "low": ours[1], "high": ours[2]}}
      rows.append(row)
      print(f"{statistic:>12} m={m:5d}: ours {1e3 * ours_s:8.2f} ms (first call "
            f"{1e3 * first:7.1f} ms)   loop+scipy {1e3 * loop_s:8.1f} ms   "
            f"x{row['speedup']:6.1f}   same interval (max diff {diff:.1e})")
  result = {"device": f"{device.device_kind} ({device.platform})", "jax": jax.__version__,
            "numpy": np.__version__, "scipy": __import__("scipy").__version__,
            "processor": platform.processor() or platform.machine(), "dtype": "float64",
            "confidence": CONFIDENCE, "seed": SEED, "repeats": repeats, "rows": rows}
  out = pathlib.Path(args.out)
  out.parent.mkdir(parents=True, exist_ok=True)
  out.write_text(json.dumps(result, indent=2))
  print(f"wrote {out}")


if __name__ == "__main__":
  main()
