"""How fast is one TransRate score? Ours vs a naive NumPy loop vs the one-matmul floor.

For each (n, d, C), float32 features with class structure, in one run:
  * ours:   ``transrate_jax.transrate`` (first call = compile + run, reported apart; then median);
  * naive:  NumPy, the way the public code computes it: a d x d ``slogdet`` per class and globally;
  * floor:  one ``Z^T Z`` matmul in JAX at ``Precision.HIGHEST`` (the previous floor);
  * exact floor: every term's product on its cheaper side plus its Cholesky, each at the faster of
    XLA and NumPy's BLAS (:func:`exact_floor`): the least an exact method must do here.
Correctness is checked (ours vs naive) before anything is timed. Results go to
benchmarks/results/bench_transrate.json with the device named.

    python benchmarks/bench_transrate.py            # the issue's three shapes
    python benchmarks/bench_transrate.py --quick    # small shapes, seconds
"""

import argparse
import json
import os
import pathlib
import platform
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

import transrate_jax as tj
from transrate_jax._src import lapack_threads
from transrate_jax._src.transrate import kernel

SHAPES = [(10000, 512, 10), (10000, 2048, 100), (50000, 2048, 100)]
QUICK_SHAPES = [(2000, 256, 10), (4000, 512, 20)]
EPS = 1e-4
RESULTS = pathlib.Path(__file__).parent / "results" / "bench_transrate.json"


def make_data(n, d, c, seed=0):
  rng = np.random.default_rng(seed)
  labels = rng.integers(0, c, n)
  means = rng.normal(size=(c, d)).astype(np.float32)
  features = rng.standard_normal((n, d), dtype=np.float32) + means[labels]
  return features, labels


def naive_numpy(features, labels, eps=EPS):
  """The public code's way: d x d slogdet per term, Python loop over classes (prior weights)."""
  f = features - features.mean(axis=0, keepdims=True)
  n, d = f.shape

  def rate(z):
    return 0.5 * np.linalg.slogdet(np.eye(d, dtype=z.dtype) + z.T @ z / (z.shape[0] * eps))[1]

  total = rate(f)
  for c in range(int(labels.max()) + 1):
    zc = f[labels == c]
    if len(zc):
      total -= len(zc) / n * rate(zc)
  return total


@jax.jit
def floor_matmul(z):
  return jnp.matmul(z.T, z, precision=jax.lax.Precision.HIGHEST)


def exact_floor(features, labels, repeats):
  """The least an exact method must do for this score, at the best rate this machine reaches.

  The terms are the total (all rows) and every class: each one's product on its cheaper
  (full-rank) side, ``Z^T Z`` [d, d] when rows > d, else the Gram ``Z Z^T``, plus one Cholesky of
  each product (the total's product is the sum of the class products when every class is on the
  covariance side). Products and factorisations are each timed with XLA (``Precision.HIGHEST``; all
  products in one compiled program, so no per-call dispatch counts) and with NumPy's BLAS/LAPACK
  (``z.T @ z`` is OpenBLAS ``syrk``: half the flops), and the faster of the two is kept for each:
  ``floor = products + factorisations``. (The Cholesky factorisations run one call each: one XLA
  CPU program holding many batched LAPACK calls can deadlock; docs/numerics.md, "Hangs".)

  Returns:
    ``{"products_xla_s", "products_numpy_s", "cholesky_xla_s", "cholesky_numpy_s", "floor_s"}``.
  """
  z = features - features.mean(axis=0, keepdims=True)
  d = z.shape[1]
  classes = [z[labels == c] for c in np.unique(labels)]
  # When every class is on the covariance side, Z^T Z is the sum of the class products (d x d
  # additions): the total needs no product of its own. Otherwise it does.
  terms = classes if all(t.shape[0] > d for t in classes) else [z] + classes

  def product_np(t):
    return t.T @ t if t.shape[0] > d else t @ t.T

  mats = [product_np(t) for t in terms]
  if terms is classes:  # the total's d x d matrix (a sum of the class products) is factorised too
    mats.append(sum(mats))
  spd = [np.eye(m.shape[0], dtype=m.dtype) + m / (float(np.trace(m)) / m.shape[0] + 1e-30)
         for m in mats]
  products_np, _ = timed(lambda: [product_np(t) for t in terms], repeats)
  cholesky_np, _ = timed(lambda: [np.linalg.cholesky(a) for a in spd], repeats)

  hi = jax.lax.Precision.HIGHEST
  zj = [jax.device_put(t) for t in terms]
  spd_j = [jax.device_put(a) for a in spd]
  chol = jax.jit(jnp.linalg.cholesky)
  all_products = jax.jit(lambda ts: [jnp.matmul(t.T, t, precision=hi) if t.shape[0] > d
                                     else jnp.matmul(t, t.T, precision=hi) for t in ts])

  def products_xla():
    return all_products(zj)

  jax.block_until_ready(products_xla())
  jax.block_until_ready([chol(a) for a in spd_j])
  products_x, _ = timed(products_xla, repeats)
  cholesky_x, _ = timed(lambda: [chol(a) for a in spd_j], repeats)
  return {"products_xla_s": products_x, "products_numpy_s": products_np,
          "cholesky_xla_s": cholesky_x, "cholesky_numpy_s": cholesky_np,
          "floor_s": min(products_x, products_np) + min(cholesky_x, cholesky_np)}


def settle(seconds=0.2):
  """Lets BLAS worker threads of the previous call stop spinning before the next timing.

  OpenBLAS (NumPy's, and SciPy's that jaxlib calls) keeps its threads busy-waiting for tens of
  milliseconds after a call; an XLA matmul started in that window runs about 2x slower on 2 cores.
  """
  time.sleep(seconds)


def timed(fn, repeats, *, budget_s=0.0, most=2000):
  """Median seconds of ``fn()`` (``block_until_ready``) and its last output, over ``repeats``
  calls, or over as many as fill ``budget_s`` (at most ``most``) when calls are short: one
  sub-millisecond call is timer noise."""
  settle()
  times, out = [], None
  while len(times) < repeats or (sum(times) < budget_s and len(times) < most):
    t0 = time.perf_counter()
    out = jax.block_until_ready(fn())
    times.append(time.perf_counter() - t0)
  return statistics.median(times), out


def bench_shape(n, d, c, repeats):
  features, labels = make_data(n, d, c)
  fj = jax.device_put(features)
  # Compile (first call) apart from the steady state.
  t0 = time.perf_counter()
  first_value = jax.block_until_ready(tj.transrate(fj, labels, eps=EPS))
  first_call = time.perf_counter() - t0
  naive_t, naive_value = timed(lambda: naive_numpy(features, labels), 1 if n * d > 5e7 else 3)
  ours_t, ours_value = timed(lambda: tj.transrate(fj, labels, eps=EPS), repeats)
  host = kernel.use_host_products(fj, labels, False, kernel.resolve_config(None, None))
  # The compiled path alone (what jit/vmap/grad and accelerators run), for comparison.
  os.environ[kernel.HOST_PRODUCTS_ENV] = "0"
  try:
    compiled_value = jax.block_until_ready(tj.transrate(fj, labels, eps=EPS))
    compiled_t, _ = timed(lambda: tj.transrate(fj, labels, eps=EPS), repeats)
  finally:
    del os.environ[kernel.HOST_PRODUCTS_ENV]
  np.testing.assert_allclose(float(compiled_value), float(ours_value), rtol=2e-5)
  rel = abs(float(ours_value) - float(naive_value)) / abs(float(naive_value))
  # Both run in float32; the naive covariance side is itself only ~1e-4 accurate at eps=1e-4.
  assert rel < 2e-3, f"ours {float(ours_value)} vs naive {float(naive_value)}"
  np.testing.assert_allclose(float(first_value), float(ours_value), rtol=1e-6)
  jax.block_until_ready(floor_matmul(fj))
  floor_t, _ = timed(lambda: floor_matmul(fj), repeats)
  exact = exact_floor(features, labels, repeats)
  row = {
      "n": n, "d": d, "C": c, "dtype": "float32",
      "ours_s": ours_t, "ours_compile_s": max(first_call - ours_t, 0.0),
      "host_products": host, "compiled_path_s": compiled_t,
      "naive_numpy_s": naive_t, "floor_matmul_s": floor_t,
      "speedup_vs_naive": naive_t / ours_t, "ratio_to_floor": ours_t / floor_t,
      "rel_diff_vs_naive": rel, "exact_floor": exact,
      "ratio_to_exact_floor": ours_t / exact["floor_s"],
  }
  print(f"(n={n:>6}, d={d:>5}, C={c:>4})  ours {ours_t * 1e3:9.1f} ms "
        f"(compile {row['ours_compile_s']:.2f} s)  naive {naive_t * 1e3:9.1f} ms  "
        f"floor {floor_t * 1e3:8.1f} ms  speed-up {row['speedup_vs_naive']:6.1f}x  "
        f"ours/floor {row['ratio_to_floor']:.2f}  exact floor {exact['floor_s'] * 1e3:8.1f} ms "
        f"ours/exact {row['ratio_to_exact_floor']:.2f}  rel diff {rel:.1e}  "
        f"({'host products' if host else 'compiled'}; compiled path {compiled_t * 1e3:.1f} ms)",
        flush=True)
  return row


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--quick", action="store_true", help="small shapes (seconds)")
  parser.add_argument("--repeats", type=int, default=5)
  parser.add_argument("--regression", action="store_true",
                      help="also time transrate_regression at n=50000, d=2048, 10 bins")
  args = parser.parse_args()
  device = jax.devices()[0]
  print(f"device: {device.device_kind} ({device.platform}), jax {jax.__version__}, "
        f"{platform.processor() or platform.machine()}; SciPy's LAPACK: {lapack_threads.applied()}")
  rows = [bench_shape(n, d, c, args.repeats) for n, d, c in
          (QUICK_SHAPES if args.quick else SHAPES)]
  result = {"device": f"{device.device_kind} ({device.platform})", "jax": jax.__version__,
            "scipy_lapack": lapack_threads.applied(),
            "eps": EPS, "shapes": rows}
  if args.regression:
    from _cases_regression import run as run_regression  # noqa: PLC0415
    result["regression"] = run_regression(**({"n": 5000, "d": 256} if args.quick else {}))
    print("regression:", json.dumps(result["regression"]))
  if not args.quick:
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2))
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
  main()
