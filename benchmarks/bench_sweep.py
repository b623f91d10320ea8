"""Layer sweep: transrate_many vs a loop of transrate calls vs the naive NumPy loop.

A ResNet-like sweep: n = 10000 samples, C = 10 classes, 16 layers of widths 64..2048, float32
synthetic features with class structure. Reports compile and run time of transrate_many apart,
the number of XLA compilations, the speed-up over the naive NumPy loop (the public code's way:
a d x d slogdet per class), and streaming throughput (samples/s at d = 2048).

  python benchmarks/bench_sweep.py              # CPU config, writes results/bench_sweep.json
  python benchmarks/bench_sweep.py --gpu-config # 32 models x 6 layers, n = 50000, C = 100
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
import time

import jax
import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).parent))

from bench_transrate import exact_floor, floor_matmul, timed  # noqa: E402

from transrate_jax._src import streaming
from transrate_jax._src import sweep
from transrate_jax._src.transrate import kernel as transrate_kernel
from transrate_jax._src.transrate import transrate

CPU_WIDTHS = [64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 1024, 1024, 1024, 2048, 2048, 2048]


def naive_transrate(features, labels, eps=1e-4):
  """The public code's way (tllib / the paper's listing, prior weights): d x d slogdet per class."""
  def rate(z):
    n, d = z.shape
    return 0.5 * np.linalg.slogdet(np.eye(d) + z.T @ z / (n * eps))[1]
  z = features - features.mean(axis=0, keepdims=True)
  n = len(labels)
  total = rate(z)
  for c in range(int(labels.max()) + 1):
    zc = z[labels == c]
    total -= len(zc) / n * rate(zc)
  return total


def make_layers(widths, n, num_classes, seed):
  rng = np.random.default_rng(seed)
  y = rng.integers(0, num_classes, n)
  layers = {}
  for i, d in enumerate(widths):
    means = rng.normal(size=(num_classes, d)).astype(np.float32) * (0.2 + 0.05 * i)
    f = rng.normal(size=(n, d)).astype(np.float32) + means[y]
    layers[f"layer{i:02d}_d{d}"] = f
  return layers, y


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--gpu-config", action="store_true",
                      help="32 models x 6 layers, n=50000, d<=2048, C=100 (for a GPU)")
  parser.add_argument("--repeats", type=int, default=2)
  parser.add_argument("--skip-naive", action="store_true")
  args = parser.parse_args()
  print("devices:", jax.devices())
  if args.gpu_config:
    widths = [256, 512, 1024, 1024, 2048, 2048] * 32
    n, num_classes = 50000, 100
  else:
    widths, n, num_classes = CPU_WIDTHS, 10000, 10
  layers, y = make_layers(widths, n, num_classes, seed=0)
  result = {"device": str(jax.devices()[0]), "platform": jax.devices()[0].platform,
            "n": n, "num_classes": num_classes, "widths": widths, "dtype": "float32"}

  compiles = []

  def listener(event, duration, **_):
    if event == "/jax/core/compile/backend_compile_duration":
      compiles.append(duration)

  jax.monitoring.register_event_duration_secs_listener(listener)
  traces0 = transrate_kernel.compiled_programs()
  t = time.perf_counter()
  first = sweep.transrate_many(layers, y, progress=False)
  jax.block_until_ready(first)
  first_call = time.perf_counter() - t
  jax.monitoring.unregister_event_duration_listener(listener)
  result["many_first_call_s"] = first_call
  result["many_compilations"] = len(compiles)
  result["many_kernel_programs"] = transrate_kernel.compiled_programs() - traces0
  result["many_compile_s"] = sum(compiles)
  run_s, scores = timed(lambda: sweep.transrate_many(layers, y, progress=False), args.repeats)
  result["many_run_s"] = run_s
  print(f"transrate_many: first call {first_call:.2f} s ({len(compiles)} compilations, "
        f"{sum(compiles):.2f} s compiling), then {run_s:.2f} s per sweep")

  # Correctness vs the loop of transrate calls, before timing the loop.
  t = time.perf_counter()
  loop_scores = {k: transrate(f, y) for k, f in layers.items()}
  jax.block_until_ready(loop_scores)
  result["loop_first_call_s"] = time.perf_counter() - t
  for k in layers:
    np.testing.assert_allclose(float(scores[k]), float(loop_scores[k]), rtol=2e-3)
  loop_s, _ = timed(lambda: {k: transrate(f, y) for k, f in layers.items()}, args.repeats)
  result["loop_run_s"] = loop_s
  print(f"loop of transrate: first {result['loop_first_call_s']:.2f} s, then {loop_s:.2f} s")

  if not args.skip_naive:
    t = time.perf_counter()
    naive = {k: naive_transrate(f, y) for k, f in layers.items()}
    naive_s = time.perf_counter() - t
    for k in layers:
      np.testing.assert_allclose(float(scores[k]), naive[k], rtol=2e-3)
    result["naive_numpy_s"] = naive_s
    result["speedup_vs_naive_incl_compile"] = naive_s / first_call
    result["speedup_vs_naive_warm"] = naive_s / run_s
    print(f"naive NumPy loop: {naive_s:.2f} s; speed-up incl. compile "
          f"{naive_s / first_call:.1f}x, warm {naive_s / run_s:.1f}x")

  # The floor: one Z^T Z per layer (what any exact method must pay), summed over the layers.
  floor_s = 0.0
  for f in layers.values():
    fj = jax.device_put(f)
    floor_matmul(fj).block_until_ready()
    floor_s += timed(lambda fj=fj: floor_matmul(fj), args.repeats)[0]
  result["floor_matmul_sum_s"] = floor_s
  result["many_run_over_floor"] = run_s / floor_s
  print(f"floor (one XLA Z^T Z per layer, summed): {floor_s:.2f} s; transrate_many warm / floor "
        f"{run_s / floor_s:.2f}")
  # The exact floor: every term's product on its full-rank side and its Cholesky, each at the
  # faster of XLA and NumPy's BLAS (bench_transrate.exact_floor), summed over the layers.
  exact = [exact_floor(f, y, args.repeats) for f in layers.values()]
  exact_s = sum(e["floor_s"] for e in exact)
  result["exact_floor_sum_s"] = exact_s
  result["exact_floor_products_numpy_s"] = sum(e["products_numpy_s"] for e in exact)
  result["exact_floor_products_xla_s"] = sum(e["products_xla_s"] for e in exact)
  result["many_run_over_exact_floor"] = run_s / exact_s
  if "naive_numpy_s" in result:
    result["naive_over_exact_floor"] = result["naive_numpy_s"] / exact_s
  print(f"exact floor (products + Cholesky, faster of XLA and NumPy, summed): {exact_s:.2f} s; "
        f"transrate_many warm / exact floor {run_s / exact_s:.2f}")

  # Streaming throughput at the widest layer.
  key = max(layers, key=lambda k: layers[k].shape[1])
  f = layers[key]
  chunk = 1000
  batches = [(f[i:i + chunk], y[i:i + chunk]) for i in range(0, n, chunk)]
  streaming.transrate_from_batches(batches[:2], num_classes=num_classes, progress=False)  # warm
  stream_s, stream_score = timed(
      lambda: streaming.transrate_from_batches(batches, num_classes=num_classes, progress=False),
      1)
  np.testing.assert_allclose(float(stream_score), float(scores[key]), rtol=2e-3)
  result["streaming_d"] = int(f.shape[1])
  result["streaming_chunk"] = chunk
  result["streaming_samples_per_s"] = n / stream_s
  print(f"streaming at d={f.shape[1]}: {n / stream_s:.0f} samples/s")

  if not args.gpu_config:
    out = pathlib.Path(__file__).parent / "results" / "bench_sweep.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print("wrote", out)
  print(json.dumps(result, indent=2))


if __name__ == "__main__":
  main()
