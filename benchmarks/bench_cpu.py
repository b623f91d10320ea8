"""The two CPU effects the kernel relies on, measured apart.

1. SciPy's OpenBLAS spinning against XLA (transrate_jax/_src/lapack_threads.py): rounds of one
   ``Z^T Z`` ([10000, 512], float32) followed by a 512 x 512 Cholesky, each in its own program, in
   a fresh interpreter with ``TRANSRATE_JAX_LAPACK_THREADS=keep`` (SciPy's OpenBLAS as it comes)
   and with the default policy; the matmul alone is the reference.
2. ``numerics.covariance`` (upper block triangle from d = 2048) vs one plain matmul
   (``numerics.matmul_tn``), after checking that both give the same matrix.

    python benchmarks/bench_cpu.py           # writes benchmarks/results/bench_cpu.json
    python benchmarks/bench_cpu.py --quick   # small shapes, no JSON
"""

import argparse
import json
import os
import pathlib
import statistics
import subprocess
import sys
import time

RESULTS = pathlib.Path(__file__).parent / "results" / "bench_cpu.json"

_ROUNDS = r"""
import json, statistics, sys, time
import numpy as np
import jax, jax.numpy as jnp
import transrate_jax
from transrate_jax._src import lapack_threads, numerics
n, d, repeats = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
z = jax.device_put(np.random.default_rng(0).standard_normal((n, d), dtype=np.float32))
gram = jax.jit(numerics.matmul_tn)
chol = jax.jit(lambda m: numerics.logdet_identity_plus(m, 1.0 / n))
def median(fn):
  fn()
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter(); fn(); times.append(time.perf_counter() - t0)
  return statistics.median(times)
matmul_s = median(lambda: gram(z, z).block_until_ready())
time.sleep(0.2)
round_s = median(lambda: chol(gram(z, z).block_until_ready()).block_until_ready())
print(json.dumps({"policy": lapack_threads.applied(), "matmul_s": matmul_s, "round_s": round_s}))
"""


def contention(n, d, repeats):
  rows = []
  for policy in ("keep", "default"):
    env = dict(os.environ)
    env.pop("TRANSRATE_JAX_LAPACK_THREADS", None)
    if policy == "keep":
      env["TRANSRATE_JAX_LAPACK_THREADS"] = "keep"
    out = subprocess.run([sys.executable, "-c", _ROUNDS, str(n), str(d), str(repeats)], env=env,
                         capture_output=True, text=True, check=True)
    row = json.loads(out.stdout.strip().splitlines()[-1])
    rows.append(row)
    print(f"SciPy's OpenBLAS {row['policy']:>14}: Z^T Z [{n}, {d}] {row['matmul_s'] * 1e3:7.1f} ms,"
          f" Z^T Z then Cholesky {row['round_s'] * 1e3:7.1f} ms per round", flush=True)
  return rows


def symmetric(shapes, repeats):
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top

  from transrate_jax._src import numerics  # pylint: disable=g-import-not-at-top
  plain = jax.jit(lambda z: numerics.matmul_tn(z, z))
  blocked = jax.jit(numerics.covariance)
  rows = []
  for n, d in shapes:
    z = jax.device_put(np.random.default_rng(0).standard_normal((n, d), dtype=np.float32))
    a, b = np.asarray(plain(z)), np.asarray(blocked(z))
    err = float(np.abs(a - b).max() / np.abs(a).max())
    assert err < 1e-6, f"covariance differs from the plain matmul at {(n, d)}: {err}"
    times = {}
    for name, fn in (("plain_s", plain), ("covariance_s", blocked)):
      time.sleep(0.2)
      samples = []
      for _ in range(repeats):
        t0 = time.perf_counter()
        fn(z).block_until_ready()
        samples.append(time.perf_counter() - t0)
      times[name] = statistics.median(samples)
    rows.append({"n": n, "d": d, "max_rel_diff": err, **times})
    print(f"Z^T Z [{n}, {d}]: one matmul {times['plain_s'] * 1e3:7.1f} ms, "
          f"numerics.covariance {times['covariance_s'] * 1e3:7.1f} ms", flush=True)
  return rows


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--quick", action="store_true")
  parser.add_argument("--repeats", type=int, default=9)
  args = parser.parse_args()
  import jax  # pylint: disable=g-import-not-at-top
  device = jax.devices()[0]
  print(f"device: {device.device_kind} ({device.platform}), jax {jax.__version__}")
  n, d = (2000, 256) if args.quick else (10000, 512)
  result = {"device": f"{device.device_kind} ({device.platform})", "jax": jax.__version__,
            "contention": contention(n, d, args.repeats),
            "symmetric": symmetric([(4000, 2048)] if args.quick else
                                   [(10000, 1024), (10000, 2048), (50000, 2048)],
                                   3 if args.quick else 5)}
  if not args.quick:
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print("wrote", RESULTS)


if __name__ == "__main__":
  main()
