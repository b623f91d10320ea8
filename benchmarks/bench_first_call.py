"""First-call latency of a layer sweep: what a notebook user waits for, with and without the cache.

The sweep of ``bench_sweep.py`` (n = 10000, C = 10, 16 layers of widths 64..2048, float32; or
``--quick``: n = 2000, 6 layers) is scored by ``transrate_many`` in fresh processes:

1. no persistent cache: the first call (compilation included) and a second call;
2. ``tj.enable_compilation_cache(dir)`` on an empty directory: the first call (it writes the cache);
3. a second process on the same directory: the first call (it reads the cache instead of compiling).

Each process counts XLA compile requests (``/jax/core/compile/backend_compile_duration`` events,
which jax 0.10 also records around a persistent-cache load) and persistent-cache hits
(``/jax/compilation_cache/cache_hits``) by listening, not by timing. What the cache cannot save is
Python-side tracing and lowering, which every new process repeats. The
naive NumPy loop (the public code's way) is timed in this process, and every process's scores are
checked against it before any time is reported. Results go to benchmarks/results/bench_first_call.json.

    python benchmarks/bench_first_call.py            # the bench_sweep configuration
    python benchmarks/bench_first_call.py --quick    # small, seconds
"""

from __future__ import annotations

import argparse
import json
import pathlib
import subprocess
import sys
import tempfile
import time

import jax
import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).parent))

from bench_sweep import CPU_WIDTHS, make_layers, naive_transrate  # noqa: E402

RESULTS = pathlib.Path(__file__).parent / "results" / "bench_first_call.json"
QUICK = dict(widths=[64, 128, 256, 512, 1024, 2048], n=2000, num_classes=10)
FULL = dict(widths=CPU_WIDTHS, n=10000, num_classes=10)

# Run in a fresh interpreter: argv = [config json, cache dir or "", repeat second call 0/1].
_CHILD = r"""
import json, sys, time
sys.path.insert(0, {bench!r})
cfg, cache, second = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3] == "1"
import jax
events = {{"compiles": 0, "compile_s": 0.0, "cache_hits": 0}}
def on_duration(event, duration, **_):
  if event == "/jax/core/compile/backend_compile_duration":
    events["compiles"] += 1
    events["compile_s"] += duration
def on_event(event, **_):
  if event == "/jax/compilation_cache/cache_hits":
    events["cache_hits"] += 1
jax.monitoring.register_event_duration_secs_listener(on_duration)
jax.monitoring.register_event_listener(on_event)
import transrate_jax as tj
if cache:
  tj.enable_compilation_cache(cache)
from bench_sweep import make_layers
layers, y = make_layers(cfg["widths"], cfg["n"], cfg["num_classes"], seed=0)
t0 = time.perf_counter()
scores = tj.transrate_many(layers, y, progress=False)
out = {{k: float(v) for k, v in scores.items()}}
first = time.perf_counter() - t0
result = {{"first_call_s": first, "compilations": events["compiles"],
          "compile_s": events["compile_s"], "cache_hits": events["cache_hits"], "scores": out}}
if second:
  t0 = time.perf_counter()
  [float(v) for v in tj.transrate_many(layers, y, progress=False).values()]
  result["second_call_s"] = time.perf_counter() - t0
print(json.dumps(result))
"""


def _child(cfg: dict, cache: str, second: bool) -> dict:
  code = _CHILD.format(bench=str(pathlib.Path(__file__).parent))
  proc = subprocess.run([sys.executable, "-c", code, json.dumps(cfg), cache, "1" if second else "0"],
                        capture_output=True, text=True, timeout=900, check=False)
  if proc.returncode != 0:
    raise RuntimeError(proc.stderr[-3000:])
  return json.loads(proc.stdout.strip().splitlines()[-1])


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--quick", action="store_true", help="n = 2000, 6 layers")
  args = parser.parse_args()
  cfg = QUICK if args.quick else FULL
  device = jax.devices()[0]
  print(f"device: {device.device_kind} ({device.platform}), jax {jax.__version__}; n = {cfg['n']}, "
        f"C = {cfg['num_classes']}, {len(cfg['widths'])} layers of widths "
        f"{min(cfg['widths'])}..{max(cfg['widths'])}, float32", flush=True)

  layers, y = make_layers(cfg["widths"], cfg["n"], cfg["num_classes"], seed=0)
  t0 = time.perf_counter()
  naive = {k: float(naive_transrate(f, y)) for k, f in layers.items()}
  naive_s = time.perf_counter() - t0

  plain = _child(cfg, "", True)
  with tempfile.TemporaryDirectory() as cache:
    writer = _child(cfg, cache, False)
    reader = _child(cfg, cache, False)
  runs = {"no_cache": plain, "cache_write": writer, "cache_read": reader}
  for name, run in runs.items():  # correctness before any time is reported
    got = np.array([run["scores"][k] for k in layers])
    want = np.array([naive[k] for k in layers])
    err = float(np.max(np.abs(got - want) / np.maximum(np.abs(want), 1.0)))
    assert err < 1e-3, f"{name}: transrate_many differs from the naive loop by {err:.2e}"
    run["max_rel_diff_vs_naive"] = err
    del run["scores"]

  result = {"device": f"{device.device_kind} ({device.platform})", "jax": jax.__version__,
            **{k: v for k, v in cfg.items()}, "naive_numpy_s": naive_s, **runs,
            "naive_over_first_call": naive_s / plain["first_call_s"],
            "naive_over_second_call": naive_s / plain["second_call_s"],
            "naive_over_cached_first_call": naive_s / reader["first_call_s"]}
  print(f"naive NumPy loop                 {naive_s:7.2f} s")
  print(f"first call, no cache             {plain['first_call_s']:7.2f} s  "
        f"({plain['compilations']} compilations, {plain['compile_s']:.2f} s compiling)  "
        f"naive / ours {result['naive_over_first_call']:.2f}x")
  print(f"second call, same process        {plain['second_call_s']:7.2f} s  "
        f"naive / ours {result['naive_over_second_call']:.2f}x")
  print(f"first call, writing the cache    {writer['first_call_s']:7.2f} s  "
        f"({writer['compilations']} compilations, {writer['compile_s']:.2f} s compiling)")
  print(f"first call, second process+cache {reader['first_call_s']:7.2f} s  "
        f"({reader['cache_hits']} cache hits; {reader['compile_s']:.2f} s in compile-or-load)  "
        f"naive / ours {result['naive_over_cached_first_call']:.2f}x")
  if not args.quick:
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2))
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
  main()
