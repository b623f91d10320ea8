"""Time to the first answer: `transrate-jax demo` cold (empty caches) and warm, phase by phase.

Runs the installed command twice in fresh processes with one new, empty cache directory
(``TRANSRATE_JAX_CACHE``: the converted backbone weights and XLA's persistent compilation cache):
the first run converts the weights and compiles every program (a new user's first run), the second
reads both caches (every later run). Each run's phases come from its ``--json`` timings; the wall
time includes starting Python and importing JAX. Nothing is timed inside this process.

    python benchmarks/demo_time.py                      # the default metrics
    python benchmarks/demo_time.py --metrics all        # every registered metric
    python benchmarks/demo_time.py --out benchmarks/results/demo_time.json

The result is correct-first: each run must exit 0 and print strict JSON with a finite score for
every candidate of TransRate, or the script fails before reporting any time.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time

PHASES = ("data", "load", "extract", "scoring", "probe", "recommended", "comparison", "total")


def cpu_name() -> str:
  try:
    with open("/proc/cpuinfo", encoding="utf-8") as f:
      for line in f:
        if line.startswith("model name"):
          return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or "unknown"


def run_once(cache: str, metrics: str | None) -> dict:
  """One `transrate-jax demo --json` in a fresh process; its phases and its wall time."""
  cmd = [shutil.which("transrate-jax") or "transrate-jax", "demo", "--json", "--no-plot"]
  if metrics:
    cmd += ["--metrics", metrics]
  env = dict(os.environ, TRANSRATE_JAX_CACHE=cache)
  start = time.perf_counter()
  proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1800, check=False)
  wall = time.perf_counter() - start
  if proc.returncode != 0:
    raise SystemExit(f"demo failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
  out = json.loads(proc.stdout)
  scores = out["scores"].get("transrate")
  if scores is not None and not all(s is not None for s in scores):
    raise SystemExit(f"demo returned a non-finite TransRate: {scores}")
  t = out["timings"]
  phases = {k: (sum(t[k].values()) if isinstance(t[k], dict) else t[k]) for k in PHASES}
  return {"wall_s": wall, "phases_s": phases, "metrics": list(out["scores"])}


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--metrics", default=None, help="passed to `transrate-jax demo --metrics`")
  p.add_argument("--out", default=None, help="JSON path for the results")
  args = p.parse_args(argv)
  import jax  # noqa: PLC0415  (only to name the device)
  device = f"{jax.default_backend()} ({jax.devices()[0].device_kind}); {cpu_name()}, " \
           f"{os.cpu_count()} cores; jax {jax.__version__}"
  print(f"device: {device}")
  cache = tempfile.mkdtemp(prefix="transrate_jax_demo_time_")
  try:
    runs = {"cold": run_once(cache, args.metrics), "warm": run_once(cache, args.metrics)}
  finally:
    shutil.rmtree(cache, ignore_errors=True)
  print(f"metrics: {', '.join(runs['cold']['metrics'])}")
  print(f"{'phase (s)':<12}{'cold':>8}{'warm':>8}")
  for k in PHASES:
    print(f"{k:<12}{runs['cold']['phases_s'][k]:>8.1f}{runs['warm']['phases_s'][k]:>8.1f}")
  print(f"{'wall':<12}{runs['cold']['wall_s']:>8.1f}{runs['warm']['wall_s']:>8.1f}")
  if args.out:
    with open(args.out, "w", encoding="utf-8") as f:
      json.dump({"device": device, "command": "python benchmarks/demo_time.py"
                 + (f" --metrics {args.metrics}" if args.metrics else ""), **runs}, f, indent=2)
  return 0


if __name__ == "__main__":
  sys.exit(main())
