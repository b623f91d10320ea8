"""One process of tests/test_multiprocess.py: ``jax.distributed`` on 127.0.0.1, 2 CPU devices each.

Usage: ``python _multiprocess_worker.py PROCESS_ID NUM_PROCESSES PORT``. Every process builds the
same seeded data set, keeps its own (uneven) share of the rows, and scores them with
``transrate_sharded(..., process_local=True)``; it prints one JSON line with its scores.
"""

import json
import os
import sys

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                           + " --xla_force_host_platform_device_count=2")

import jax  # pylint: disable=g-import-not-at-top,wrong-import-position

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_cpu_collectives_implementation", "gloo")

import numpy as np  # pylint: disable=g-import-not-at-top,wrong-import-position

CASES = [  # (n, d, C, preset, dtype, offset)
    (203, 12, 4, None, "float64", 0.0),
    (203, 9, 3, "official", "float64", 0.0),
    (150, 12, 5, "tllib", "float64", 0.0),
    (203, 12, 4, None, "float32", 1e4),
]


def data(n, d, c, dtype, offset, seed):
  """The full data set (every process builds the same one) and the float64 features."""
  rng = np.random.default_rng(seed)
  y = rng.integers(0, c, n)
  y[-1] = c - 1  # the largest label sits in the last process's rows only
  y[:-1] = np.where(y[:-1] == c - 1, 0, y[:-1])
  f = rng.normal(size=(n, d)) + 2.0 * np.eye(d)[y % d]
  return (f + offset).astype(dtype), y, f


def shares(n, num_processes):
  """Uneven row ranges: process p gets about (p + 1) / sum parts of the rows."""
  weights = np.arange(1, num_processes + 1)
  cuts = np.concatenate([[0], np.cumsum(weights) * n // weights.sum()])
  return [(int(cuts[p]), int(cuts[p + 1])) for p in range(num_processes)]


def main():
  pid, nproc, port = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
  jax.distributed.initialize(f"127.0.0.1:{port}", num_processes=nproc, process_id=pid,
                             initialization_timeout=120)
  import transrate_jax as tj  # pylint: disable=import-outside-toplevel

  out = {"process": pid, "processes": jax.process_count(), "devices": jax.device_count(),
         "local_devices": jax.local_device_count(), "cases": []}
  for i, (n, d, c, preset, dtype, offset) in enumerate(CASES):
    x, y, _ = data(n, d, c, dtype, offset, seed=i)
    lo, hi = shares(n, nproc)[pid]
    score = tj.transrate_sharded(x[lo:hi], y[lo:hi], preset=preset, process_local=True)
    given = tj.transrate_sharded(x[lo:hi], y[lo:hi], preset=preset, num_classes=c,
                                 process_local=True)
    out["cases"].append({"rows": hi - lo, "score": float(score), "given_num_classes":
                         float(given), "dtype": str(score.dtype)})
  print(json.dumps(out), flush=True)
  jax.distributed.shutdown()


if __name__ == "__main__":
  main()
