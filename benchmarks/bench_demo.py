"""Time of each phase of ``transrate-jax demo`` on this machine, and each backbone's images/second.

Phases: weight conversion (first load into an empty cache, then a cached load), feature
extraction per candidate (every block on the target-train images and the penultimate layer on the
target-test images, compilation included: what a user waits for), scoring (every metric at the
penultimate layer and over every block), and the linear probe. Steady-state throughput: images
per second of each backbone's forward pass at the demo's image size and at its native size, after
compilation (median of repeats, ``block_until_ready``). The demo's results are checked (finite
scores, accuracies in [0, 1]) before anything is reported.

Run: ``python benchmarks/bench_demo.py`` (a few minutes); ``--quick`` for a small setting.
Writes ``benchmarks/results/bench_demo.json``.
"""

from __future__ import annotations

import os
import pathlib
import statistics
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import _protocol  # noqa: E402


def conversion_times(names) -> dict:
  """{name: {"first": s, "cached": s}} for loading with an empty, then a warm, cache."""
  from transrate_jax import models  # noqa: PLC0415

  out = {}
  with tempfile.TemporaryDirectory() as tmp:
    old = os.environ.get("TRANSRATE_JAX_CACHE")
    os.environ["TRANSRATE_JAX_CACHE"] = tmp
    try:
      for name in names:
        _, first = _protocol.timed(lambda: models.load(name))
        _, cached = _protocol.timed(lambda: models.load(name))
        out[name] = {"first": first, "cached": cached}
    finally:
      if old is None:
        del os.environ["TRANSRATE_JAX_CACHE"]
      else:
        os.environ["TRANSRATE_JAX_CACHE"] = old
  return out


def throughput(name: str, size: int, *, batch: int, repeats: int) -> float:
  """Images per second of one forward pass of ``name`` at ``size`` px (compiled, median)."""
  import jax  # noqa: PLC0415
  import jax.numpy as jnp  # noqa: PLC0415
  from flax import nnx  # noqa: PLC0415
  from transrate_jax import models  # noqa: PLC0415

  model = models.load(name)
  fwd = nnx.jit(lambda m, x: m(x))
  x = jnp.asarray(np.random.default_rng(0).uniform(size=(batch, size, size, 3)), jnp.float32)
  out = jax.block_until_ready(fwd(model, x))  # compile
  if not np.all(np.isfinite(np.asarray(out))) or out.shape != (batch, 1000):
    raise RuntimeError(f"{name}: bad forward output {out.shape}")
  times = []
  for _ in range(repeats):
    t = time.perf_counter()
    jax.block_until_ready(fwd(model, x))
    times.append(time.perf_counter() - t)
  return batch / statistics.median(times)


def main(argv=None) -> int:
  p = _protocol.base_parser(__doc__.splitlines()[0])
  args = p.parse_args(argv)
  from transrate_jax import models  # noqa: PLC0415
  from transrate_jax._src import demo  # noqa: PLC0415

  info = _protocol.device_info()
  print("device:", _protocol.describe_device(info), flush=True)
  names = list(demo.DEMO_MODELS)
  kw = {}
  batch, repeats = 64, 5
  if args.quick:
    names = names[:1]
    kw = dict(models=names, n=100, image_size=32, probe_steps=20, metrics=demo.QUICK_METRICS,
              layers=demo.QUICK_LAYERS)
    batch, repeats = 8, 2
  conv = conversion_times(names)
  for n, c in conv.items():
    print(f"  {n:<22} load: first {c['first']:.2f} s (conversion), cached {c['cached']:.2f} s")
  out = demo.run_demo(plot_path=None, progress=False, verbose=False, **kw)
  for m, s in out["scores"].items():
    if not np.all(np.isfinite(s)):
      raise RuntimeError(f"demo: {m} returned a non-finite score: {s}")
  if not all(0.0 <= a <= 1.0 for a in out["probe"]):
    raise RuntimeError("demo: probe accuracy outside [0, 1]")
  t = out["timings"]
  print(f"demo ({len(out['candidates'])} candidates): total {t['total']:.1f} s; data "
        f"{t['data']:.1f} s, load {sum(t['load'].values()):.1f} s, extraction "
        f"{sum(t['extract'].values()):.1f} s, scoring {t['scoring']:.1f} s, probe {t['probe']:.1f} s")
  for c, s in t["extract"].items():
    print(f"  extract {c:<30} {s:6.2f} s ({t['images_per_s'][c]:.0f} images/s incl. compile)")
  size = out["task"]["image_size"]
  speed = {}
  for n in names:
    native = models.info(n)["input_size"]
    speed[n] = {f"{size}px": throughput(n, size, batch=batch, repeats=repeats)}
    if not args.quick:
      speed[n][f"{native}px"] = throughput(n, native, batch=batch, repeats=repeats)
    print(f"  {n:<22} " + ", ".join(f"{k}: {v:.0f} images/s" for k, v in speed[n].items()))
  result = {"device": info, "batch": batch, "conversion": conv, "demo_timings": t,
            "images_per_s": speed, "task": out["task"]}
  if not args.quick:
    _protocol.write_json(args.out / "bench_demo.json", result)
    print(f"wrote {args.out / 'bench_demo.json'}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
