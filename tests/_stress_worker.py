"""Stress worker: every public entry point, repeated, each call under a watchdog.

Run by ``tests/test_no_hangs.py`` in two concurrent processes (``python tests/_stress_worker.py
PARTS COUNT``, PARTS a comma-separated list of ``loss``, ``metrics``, ``many``; COUNT the
repetitions: the loss loop's steps, or each other entry point's calls). Each call arms ``faulthandler`` with a bound:
a call slower than its bound (a hang: XLA's CPU runtime waiting on itself, at 0% CPU) dumps every
thread's Python stack to stderr and exits the process with status 1, so the test fails with the
stacks in its message instead of hanging. The first call of an entry point gets a longer bound
(it compiles). Prints one JSON line per entry point: its name, the number of calls and the
slowest warm call in seconds.
"""

import faulthandler
import json
import os
import sys
import time

import numpy as np

# Bounds in seconds: a healthy call here takes well under a second warm; a hang never ends.
FIRST_CALL_BOUND = float(os.environ.get("STRESS_FIRST_BOUND", 240))
WARM_CALL_BOUND = float(os.environ.get("STRESS_WARM_BOUND", 60))


def _guarded(name, fn, repeats):
  """Calls ``fn()`` ``repeats`` times, each under the watchdog; prints a JSON summary line."""
  slowest = 0.0
  for i in range(repeats):
    faulthandler.dump_traceback_later(FIRST_CALL_BOUND if i == 0 else WARM_CALL_BOUND,
                                      exit=True)
    start = time.perf_counter()
    out = fn()
    np.asarray(jax.tree.leaves(out)[0])  # wait for the result, inside the watchdog
    elapsed = time.perf_counter() - start
    faulthandler.cancel_dump_traceback_later()
    if i:
      slowest = max(slowest, elapsed)
  print(json.dumps({"entry": name, "calls": repeats, "slowest_warm_s": round(slowest, 4)}),
        flush=True)


def _data(n, d, c, seed=0):
  rng = np.random.default_rng(seed)
  f = rng.normal(size=(n, d)).astype(np.float32)
  y = np.arange(n) % c
  return f, y


def part_loss(steps):
  """The regularizer: the eleven-line loop of the issue, eager and under jit(grad)."""
  f, y = _data(1000, 112, 10)
  _guarded("transrate_loss eager (1000, 112, 10)",
           lambda: tj.transrate_loss(f, y, num_classes=10), steps)
  grad = jax.jit(jax.grad(lambda f: tj.transrate_loss(f, y, num_classes=10)))
  _guarded("jit(grad(transrate_loss)) (1000, 112, 10)", lambda: grad(f), steps)
  f4, y4 = _data(1000, 128, 4, seed=1)
  grad4 = jax.jit(jax.grad(lambda f: tj.transrate_loss(f, y4, num_classes=4)))
  _guarded("jit(grad(transrate_loss)) (1000, 128, 4)", lambda: grad4(f4), min(steps, 100))
  auto = jax.jit(jax.grad(lambda f: tj.transrate_loss(f, y, num_classes=10,
                                                      gradient="autodiff")))
  _guarded("jit(grad(transrate_loss, autodiff))", lambda: auto(f), max(steps // 10, 3))
  stack = np.stack([f[:200, :32], f[200:400, :32]])
  vgrad = jax.jit(jax.vmap(jax.grad(lambda f: tj.transrate_loss(f, y[:200], num_classes=10))))
  _guarded("jit(vmap(grad(transrate_loss)))", lambda: vgrad(stack), max(steps // 10, 3))


def part_metrics(repeats):
  """Every registered metric, eager, under jit and under vmap (where it is vmappable)."""
  f, y = _data(600, 96, 8, seed=2)
  probs = np.random.default_rng(3).dirichlet(np.ones(12), size=600).astype(np.float32)
  hard = np.random.default_rng(4).integers(0, 12, size=600)
  inputs = {"features": f, "source_probs": probs, "source_labels": hard}
  for name in tj.registered_metrics():
    metric = tj.get_metric(name)
    x = inputs[metric.consumes]
    opts = {"num_source_classes": 12} if "num_source_classes" in metric.options else {}
    _guarded(f"{name} eager", lambda: metric.fn(x, y, num_classes=8, **opts), repeats)
    jitted = jax.jit(lambda x: metric.fn(x, y, num_classes=8, **opts))
    try:
      jitted(x)
    except (jax.errors.ConcretizationTypeError, jax.errors.TracerArrayConversionError,
            jax.errors.TracerBoolConversionError, ValueError, TypeError):
      pass  # a metric that needs concrete inputs (documented on the metric): eager only
    else:
      _guarded(f"{name} jit", lambda: jitted(x), repeats)
    if metric.vmappable:
      stack = np.stack([x, x[::-1]])
      vm = jax.vmap(lambda x: metric.fn(x, y, num_classes=8, **opts))
      _guarded(f"{name} vmap", lambda: vm(stack), repeats)
  # TransRate under a user's jit with traced labels: the shape of the intermittent hang.
  big, by = _data(1200, 300, 18, seed=5)
  traced = jax.jit(lambda f, l: tj.transrate(f, l, eps=1e-4, num_classes=18))
  _guarded("jit(transrate) (1200, 300, 18)", lambda: traced(big, by), repeats * 3)
  _guarded("transrate eps vector", lambda: tj.transrate(f, y, eps=np.array([1e-4, 1e-2])),
           repeats)
  _guarded("transrate official", lambda: tj.transrate(f, y, preset="official"), repeats)


def part_many(repeats):
  """The sweep, sharded and streaming TransRate."""
  f, y = _data(2400, 256, 12, seed=6)
  layers = [f[:, :64], f[:, :128], f, f[:, ::2]]
  _guarded("transrate_many", lambda: tj.transrate_many(layers, y, progress=False), repeats)
  _guarded("score_many logme", lambda: tj.score_many("logme", layers, y, progress=False),
           repeats)
  if tj_backend is not None:
    with tj_backend.accelerator_branches():
      _guarded("transrate_many (accelerator branches)",
               lambda: tj.transrate_many(layers, y, progress=False), repeats)
  _guarded("transrate_sharded", lambda: tj.transrate_sharded(f, y), repeats)
  batches = [(f[i:i + 600], y[i:i + 600]) for i in range(0, 2400, 600)]
  _guarded("transrate_from_batches",
           lambda: tj.transrate_from_batches(batches, num_classes=12, progress=False), repeats)


if __name__ == "__main__":
  import jax  # pylint: disable=g-import-not-at-top

  import transrate_jax as tj  # pylint: disable=g-import-not-at-top
  try:  # (the worker also runs against older checkouts, to measure their hang rate)
    from transrate_jax._src import backend as tj_backend  # pylint: disable=g-import-not-at-top
  except ImportError:
    tj_backend = None

  parts, count = sys.argv[1], int(sys.argv[2])
  print(json.dumps({"jax": jax.__version__, "pid": os.getpid(), "part": parts}), flush=True)
  for part in parts.split(","):
    {"loss": part_loss, "metrics": part_metrics, "many": part_many}[part](count)
  print(json.dumps({"done": parts}), flush=True)
