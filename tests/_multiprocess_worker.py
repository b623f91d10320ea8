"""One process of tests/test_multiprocess.py: ``jax.distributed`` on 127.0.0.1, 2 CPU devices each.

Usage: ``python _multiprocess_worker.py PROCESS_ID NUM_PROCESSES PORT``. Every process builds the
same seeded data set, keeps its own (uneven) share of the rows, and scores them with
``transrate_sharded(..., process_local=True)`` and by streaming them in chunks of its own sizes
(``transrate_from_batches(..., process_local=True)`` and ``TransRateStats.merge_across_processes``);
it prints one JSON line with its scores.
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
STREAMED = (0, 1, 3)  # the cases also streamed (tllib differs only in the final weights)


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


def chunks(x, y, pid):
  """This process's rows as chunks of uneven sizes (17 to 32 rows, so one compiled update per
  case), sizes alternating 0.8 : 1.2, starting with 0.8 on process 0 and 1.2 on process 1."""
  k = max(1, -(-len(y) // 26))
  weights = np.where((np.arange(k) + pid) % 2 == 0, 0.8, 1.2)
  cuts = np.concatenate([[0], np.round(np.cumsum(weights) / weights.sum() * len(y))]).astype(int)
  return [(x[a:b], y[a:b]) for a, b in zip(cuts[:-1], cuts[1:])]


def _error(fn):
  """``[exception class name, message]`` of ``fn()``, or None if it returns."""
  try:
    fn()
  except Exception as e:  # pylint: disable=broad-except
    return [type(e).__name__, str(e)]
  return None


def streamed(tj, x, y, c, preset, pid, nproc, every_check):
  """The streaming scores of this process's share of the rows ``x``, ``y`` (see
  tests/test_multiprocess.py), and ``one``: this process alone streaming every row; without
  ``every_check`` only ``transrate_from_batches`` with ``num_classes`` (fewer programs to
  compile)."""
  one = float(tj.transrate_from_batches(chunks(x, y, pid), preset=preset, num_classes=c,
                                        progress=False))
  lo, hi = shares(len(y), nproc)[pid]
  x, y = x[lo:hi], y[lo:hi]
  parts = chunks(x, y, pid)
  given = tj.transrate_from_batches(parts, preset=preset, num_classes=c, progress=False,
                                    process_local=True)
  out = {"one": one, "chunks": [len(b) for _, b in parts], "streamed_given": float(given),
         "streamed_dtype": str(given.dtype)}
  if preset != "official":  # a process's own rows alone (the programs are the ones above)
    out["local_only"] = float(tj.transrate_from_batches(parts, num_classes=c, preset=preset,
                                                        progress=False))
  if every_check:
    # Without num_classes: the processes agree on C (class c - 1 is on the last process only).
    out["streamed"] = float(tj.transrate_from_batches(parts, preset=preset, progress=False,
                                                      process_local=True))
    stats = tj.TransRateStats.init(x.shape[1], num_classes=c, dtype=x.dtype)
    for a, b in parts:
      stats = stats.update(a, b)
    merged = stats.merge_across_processes()
    out["method"] = float(merged.finalize(preset=preset))
    out["method_n"] = int(merged.n)
  return out


def collective_errors(tj, x, y, c, pid):
  """The errors each process sees when the processes disagree or one of them fails."""
  parts = chunks(x, y, pid)
  stats = tj.TransRateStats.init(x.shape[1], num_classes=c + pid, dtype=x.dtype)
  bad = [(np.full_like(a, np.nan), b) if pid == 1 else (a, b) for a, b in parts]
  return {"shapes": _error(stats.merge_across_processes),
          "widths": _error(lambda: tj.transrate_from_batches(
              [(a[:, :a.shape[1] - pid], b) for a, b in parts], progress=False,
              process_local=True)),
          "failure": _error(lambda: tj.transrate_from_batches(bad, progress=False,
                                                             process_local=True)),
          # Nothing here on process 0: empty statistics of the agreed shape take part.
          "empty_here": float(tj.transrate_from_batches(parts if pid else [], progress=False,
                                                        process_local=True))}


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
    if i in STREAMED:
      out["cases"][-1].update(streamed(tj, x, y, c, preset, pid, nproc, every_check=i == 0))
  n, d, c, _, dtype, offset = CASES[0]
  x, y, _ = data(n, d, c, dtype, offset, seed=0)
  lo, hi = shares(n, nproc)[pid]
  out["errors"] = collective_errors(tj, x[lo:hi], y[lo:hi], c, pid)
  print(json.dumps(out), flush=True)
  jax.distributed.shutdown()


if __name__ == "__main__":
  main()
