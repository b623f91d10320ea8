"""Every metric at one size, beside a naive NumPy version of the same algorithm (the public-code way).

The cases (ours, naive, tolerance) live in benchmarks/_cases_peers_a.py (LogME, H-score,
regularized H-score), benchmarks/_cases_peers_b.py (LEEP, NCE, N-LEEP, GBC, LFC, SFDA, PARC),
benchmarks/_cases_knn.py (k-NN accuracy), benchmarks/_cases_ncti.py (NCTI) and
benchmarks/_cases_etran.py (ETran); TransRate's case is here. For each metric, in one run: our first call (compile + run) and the
median of repeated calls (``block_until_ready``), the naive version once or more, a correctness
check before timing, the speed-up, and the floor: the products and factorisations an exact method
must do for that score, each at the faster of XLA and NumPy/SciPy's BLAS and LAPACK
(benchmarks/_cases_floor.py), with ours / floor and naive / floor (the most any implementation can
gain over the naive one). JSON to benchmarks/results/bench_metrics.json.

    python benchmarks/bench_metrics.py                          # (n, d, C) = (10000, 2048, 100)
    python benchmarks/bench_metrics.py --n 2000 --d 256 --c 20  # quick
    python benchmarks/bench_metrics.py --only LogME,H-score
"""

import argparse
import json
import pathlib
import sys
import time

import jax
import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).parent))

# SciPy's OpenBLAS policy first (_src/lapack_threads.py; a library call would apply it too): the
# cases import SciPy and scikit-learn, after which only the one-thread fallback is possible.
import transrate_jax as tj  # noqa: E402  pylint: disable=wrong-import-position
from transrate_jax._src import lapack_threads  # noqa: E402
lapack_threads.applied()
import _cases_floor  # noqa: E402
import _cases_peers_a  # noqa: E402
import _cases_peers_b  # noqa: E402
import _cases_knn  # noqa: E402
import _cases_ncti  # noqa: E402
import _cases_etran  # noqa: E402
from bench_transrate import exact_floor  # noqa: E402
from bench_transrate import naive_numpy as naive_transrate  # noqa: E402
from bench_transrate import settle, timed  # noqa: E402

RESULTS = pathlib.Path(__file__).parent / "results" / "bench_metrics.json"


def _transrate_floor(features, labels, repeats):
  """TransRate's floor is bench_transrate's exact floor (the same faster-of-XLA-and-NumPy rule)."""
  out = exact_floor(features, labels, repeats)
  return out["floor_s"], [{"what": k, "s": v} for k, v in out.items() if k != "floor_s"]


TRANSRATE_CASE = {"metric": "TransRate", "paper": "Huang et al., ICML 2022",
                  "function": "transrate_jax.transrate",
                  "ours": lambda f, y: tj.transrate(f, y), "naive": naive_transrate, "rtol": 2e-3,
                  "floor_seconds": _transrate_floor,
                  "floor_what": "Z^T Z of all rows and each class's product on its cheaper side, "
                                "and their Choleskys (bench_transrate.exact_floor)"}


def make_data(n, d, c, seed=0):
  """ReLU-like float32 features with class structure, n / c samples per class."""
  rng = np.random.default_rng(seed)
  labels = np.arange(n) % c
  rng.shuffle(labels)
  means = rng.normal(size=(c, d)).astype(np.float32)
  features = np.maximum(rng.standard_normal((n, d), dtype=np.float32) + means[labels], 0.0)
  return features, labels


def _median_seconds(fn, repeats):
  """Median seconds of ``fn()`` over ``repeats`` calls, or over as many as fill half a second."""
  return timed(fn, repeats, budget_s=0.5)


def _seconds(s):
  """``s`` seconds as text in s, ms or µs (sub-millisecond scores print as more than 0.000 s)."""
  return f"{s:.3f} s" if s >= 0.1 else f"{s * 1e3:.3f} ms" if s >= 1e-4 else f"{s * 1e6:.1f} µs"


def time_case(case, features, labels, repeats, naive_repeats):
  t0 = time.perf_counter()
  first = jax.block_until_ready(case["ours"](features, labels))
  first_s = time.perf_counter() - t0
  naive_s, naive_value = _median_seconds(lambda: case["naive"](features, labels), naive_repeats)
  ours = float(np.asarray(first))
  if case.get("rtol") is not None:
    ok = abs(ours - float(naive_value)) <= case["rtol"] * max(abs(float(naive_value)), 1e-12)
    assert ok, f"{case['metric']}: ours {ours} vs naive {float(naive_value)}"
  variant = case.get("naive_vectorised")
  if variant is not None:  # a faster NumPy rewrite of the public code's way, reported beside it
    variant_s, variant_value = _median_seconds(lambda: variant(features, labels), naive_repeats)
    gap = abs(float(variant_value) - float(naive_value))
    assert gap <= 1e-9 * max(abs(float(naive_value)), 1.0), f"{case['metric']}: variant differs"
  settle()  # the naive version's BLAS threads spin for a while after it returns
  ours_s, _ = _median_seconds(lambda: case["ours"](features, labels), repeats)
  row = {"metric": case["metric"], "paper": case["paper"], "function": case["function"],
         "ours_s": ours_s, "ours_compile_s": max(first_s - ours_s, 0.0),
         "naive_numpy_s": naive_s, "speedup": naive_s / ours_s, "ours_value": ours,
         "naive_value": float(naive_value), "checked": case.get("rtol") is not None}
  if variant is not None:
    row.update(naive_vectorised_s=variant_s, naive_vectorised_what=case["naive_vectorised_what"],
               speedup_vectorised=variant_s / ours_s)
  if case.get("floor") or case.get("floor_seconds"):
    # The products and factorisations any exact method must do, each at the faster of XLA and
    # the host's BLAS/LAPACK: naive / floor bounds the speed-up any implementation can reach.
    settle()
    if case.get("floor_seconds") is not None:
      floor_s, parts = case["floor_seconds"](features, labels, max(repeats, 1))
    else:
      floor_s, parts = _cases_floor.floor_seconds(case["floor"](features, labels), max(repeats, 1))
    row.update(floor_s=floor_s, floor_what=case["floor_what"], floor_parts=parts,
               ours_over_floor=ours_s / floor_s, max_speedup=naive_s / floor_s)
  return row


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--n", type=int, default=10000)
  parser.add_argument("--d", type=int, default=2048)
  parser.add_argument("--c", type=int, default=100)
  parser.add_argument("--repeats", type=int, default=5)
  parser.add_argument("--naive-repeats", type=int, default=1)
  parser.add_argument("--only", help="comma-separated metric names")
  parser.add_argument("--out", default=str(RESULTS))
  args = parser.parse_args()
  device = jax.devices()[0]
  print(f"device: {device.device_kind} ({device.platform}), jax {jax.__version__}; "
        f"(n, d, C) = ({args.n}, {args.d}, {args.c}) float32; SciPy's LAPACK: "
        f"{lapack_threads.applied()}", flush=True)
  features, labels = make_data(args.n, args.d, args.c)
  cases = ([TRANSRATE_CASE] + _cases_peers_a.CASES + _cases_peers_b.CASES + _cases_knn.CASES
           + _cases_ncti.CASES + _cases_etran.CASES)
  if args.only:
    keep = {m.strip() for m in args.only.split(",")}
    cases = [c for c in cases if c["metric"] in keep]
  rows = []
  for case in cases:
    skip = case.get("skip") and case["skip"](features, labels)
    if skip:
      print(f"{case['metric']:>20}: skipped: {skip}", flush=True)
      rows.append({"metric": case["metric"], "skipped": skip})
      continue
    try:
      row = time_case(case, features, labels, args.repeats, args.naive_repeats)
    except Exception as e:  # noqa: BLE001 - report and go on with the next metric
      print(f"{case['metric']:>20}: failed: {type(e).__name__}: {e}", flush=True)
      rows.append({"metric": case["metric"], "error": f"{type(e).__name__}: {e}"})
      continue
    rows.append(row)
    print(f"{row['metric']:>20}: ours {_seconds(row['ours_s'])} "
          f"(compile {row['ours_compile_s']:.2f} s)"
          f"  naive {_seconds(row['naive_numpy_s'])}  speed-up {row['speedup']:6.1f}x"
          f"{'' if row['checked'] else '  (randomised: values not compared)'}"
          + (f"  [{row['naive_vectorised_what']}: {_seconds(row['naive_vectorised_s'])}, "
             f"speed-up {row['speedup_vectorised']:.1f}x]" if "naive_vectorised_s" in row else "")
          + (f"  floor {_seconds(row['floor_s'])} ({row['floor_what']}): ours/floor "
             f"{row['ours_over_floor']:.2f}, naive/floor {row['max_speedup']:.1f}x"
             if "floor_s" in row else ""), flush=True)
  out = pathlib.Path(args.out)
  out.parent.mkdir(exist_ok=True)
  out.write_text(json.dumps({"device": f"{device.device_kind} ({device.platform})",
                             "jax": jax.__version__, "scipy_lapack": lapack_threads.applied(),
                             "n": args.n, "d": args.d, "C": args.c,
                             "dtype": "float32", "rows": rows}, indent=2))
  print(f"wrote {out}")


if __name__ == "__main__":
  main()
