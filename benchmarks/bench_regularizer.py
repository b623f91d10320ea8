"""Differentiable TransRate: cost of the loss and of its gradient, analytic vs autodiff.

For each (n, d, C), float32 features and traced labels (the training-loop setting), times
  * forward:          jit(transrate_loss)
  * forward+backward: jit(value_and_grad(transrate_loss))
for ``gradient="analytic"`` (custom JVP rule: one Cholesky solve per term) and
``gradient="autodiff"`` (JAX differentiates through the Cholesky kernel). Compile time is reported
apart; medians over repeats. Before timing, the value is checked against ``transrate`` and both
float32 gradients against a float64 gradient; and, in float64, both gradients against central
finite differences along random directions (the accuracy part).

Usage:
  python benchmarks/bench_regularizer.py            # both sizes
  python benchmarks/bench_regularizer.py --quick    # (256, 512, 10) only, fewer repeats

Writes benchmarks/results/bench_regularizer.json (device named).
"""

from __future__ import annotations

import argparse
import json
import pathlib
import platform
import statistics
import time

import jax
import numpy as np

jax.config.update("jax_enable_x64", True)

from transrate_jax._src.regularizer import transrate_loss  # noqa: E402
from transrate_jax._src.transrate import transrate  # noqa: E402

SIZES = ((256, 512, 10), (1024, 2048, 100))
PATHS = ("analytic", "autodiff")


def make_data(n, d, num_classes, seed=0, dtype=np.float32):
  rng = np.random.default_rng(seed)
  labels = rng.integers(0, num_classes, n)
  means = rng.normal(size=(num_classes, d))
  f = means[labels] + rng.normal(size=(n, d))
  f /= np.linalg.norm(f, axis=1, keepdims=True)  # unit rows, as a regularised network would see
  return f.astype(dtype), labels.astype(np.int32)


def compile_time(fn, *args):
  t0 = time.perf_counter()
  jax.block_until_ready(fn(*args))
  return time.perf_counter() - t0


def interleaved_medians(fns, *args, repeats):
  """Median and minimum wall time of each function, timed round-robin (fair under load)."""
  times = {k: [] for k in fns}
  for _ in range(repeats):
    for k, fn in fns.items():
      t0 = time.perf_counter()
      jax.block_until_ready(fn(*args))
      times[k].append(time.perf_counter() - t0)
  return {k: (statistics.median(v), min(v)) for k, v in times.items()}


def loss_fns(num_classes, path):
  def loss(f, y):
    return transrate_loss(f, y, num_classes=num_classes, gradient=path)
  return jax.jit(loss), jax.jit(jax.value_and_grad(loss))


def rel_err(a, b):
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def bench_size(n, d, num_classes, repeats):
  f, y = make_data(n, d, num_classes)
  reference_value = float(transrate(f.astype(np.float64), y, num_classes=num_classes))
  _, vg64 = loss_fns(num_classes, "analytic")
  grad64 = np.asarray(vg64(f.astype(np.float64), y)[1])
  row = {"n": n, "d": d, "num_classes": num_classes, "dtype": "float32"}
  fns, compiles = {}, {}
  for path in PATHS:
    fwd, vg = loss_fns(num_classes, path)
    compiles[(path, "fwd")] = compile_time(fwd, f, y)
    compiles[(path, "fb")] = compile_time(vg, f, y)
    value = float(fwd(f, y))
    value_vg, grad = vg(f, y)
    assert abs(value + reference_value) <= 1e-4 * max(1.0, abs(reference_value)), (
        value, reference_value)
    assert abs(float(value_vg) - value) <= 1e-4 * max(1.0, abs(value))
    grad_err = rel_err(grad, grad64)
    assert grad_err < 1e-2, (path, grad_err)
    row[path] = {"grad_rel_err_float32_vs_float64": grad_err}
    fns[(path, "fwd")], fns[(path, "fb")] = fwd, vg
  timings = interleaved_medians(fns, f, y, repeats=repeats)
  for path in PATHS:
    (fwd_s, fwd_min), (vg_s, vg_min) = timings[(path, "fwd")], timings[(path, "fb")]
    row[path].update({
        "forward_s": fwd_s, "forward_min_s": fwd_min,
        "forward_compile_s": compiles[(path, "fwd")],
        "forward_backward_s": vg_s, "forward_backward_min_s": vg_min,
        "forward_backward_compile_s": compiles[(path, "fb")],
        "fb_over_forward": vg_s / fwd_s,
    })
    print(f"  {path:9s} forward {fwd_s * 1e3:9.2f} ms  fwd+bwd {vg_s * 1e3:9.2f} ms  "
          f"ratio {vg_s / fwd_s:5.2f}  (min {fwd_min * 1e3:.2f} / {vg_min * 1e3:.2f} ms; "
          f"compile {compiles[(path, 'fwd')]:.2f}s / {compiles[(path, 'fb')]:.2f}s)  "
          f"f32 grad rel err {row[path]['grad_rel_err_float32_vs_float64']:.1e}", flush=True)
  row["speedup_fb_analytic_vs_autodiff"] = (row["autodiff"]["forward_backward_s"] /
                                            row["analytic"]["forward_backward_s"])
  row["fb_analytic_over_forward_analytic"] = row["analytic"]["fb_over_forward"]
  return row


def finite_difference_accuracy(seed=1, directions=8, h=1e-5):
  """float64: directional derivatives of both paths vs central finite differences."""
  out = {}
  for (n, d, num_classes) in ((24, 64, 4), (128, 16, 4)):  # Gram side, covariance side
    f, y = make_data(n, d, num_classes, seed=seed, dtype=np.float64)
    rng = np.random.default_rng(seed + 1)
    loss = jax.jit(lambda f: transrate_loss(f, y, num_classes=num_classes, eps=1e-3))
    errs = {p: [] for p in PATHS}
    grads = {p: np.asarray(jax.grad(lambda f, p=p: transrate_loss(
        f, y, num_classes=num_classes, eps=1e-3, gradient=p))(f)) for p in PATHS}
    for _ in range(directions):
      v = rng.normal(size=f.shape)
      v /= np.linalg.norm(v)
      fd = (float(loss(f + h * v)) - float(loss(f - h * v))) / (2 * h)
      for p in PATHS:
        errs[p].append(abs(float(np.sum(grads[p] * v)) - fd) / max(abs(fd), 1e-12))
    out[f"{n}x{d}x{num_classes}"] = {
        p: {"max_rel_err_vs_fd": max(errs[p])} for p in PATHS}
    out[f"{n}x{d}x{num_classes}"]["analytic_vs_autodiff_rel"] = rel_err(grads["analytic"],
                                                                         grads["autodiff"])
  return out


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--quick", action="store_true")
  parser.add_argument("--repeats", type=int, default=None)
  args = parser.parse_args()
  sizes = SIZES[:1] if args.quick else SIZES
  repeats = args.repeats or (5 if args.quick else 10)
  device = jax.devices()[0]
  print(f"device: {device.device_kind} ({device.platform}), {jax.device_count()} device(s); "
        f"jax {jax.__version__}")
  rows = []
  for (n, d, c) in sizes:
    print(f"(n, d, C) = ({n}, {d}, {c}), float32, {repeats} repeats:", flush=True)
    rows.append(bench_size(n, d, c, repeats))
  accuracy = finite_difference_accuracy()
  for k, v in accuracy.items():
    print(f"float64 finite differences {k}: analytic {v['analytic']['max_rel_err_vs_fd']:.1e}, "
          f"autodiff {v['autodiff']['max_rel_err_vs_fd']:.1e}, analytic vs autodiff "
          f"{v['analytic_vs_autodiff_rel']:.1e}")
  result = {
      "device": f"{device.device_kind} ({device.platform})",
      "device_count": jax.device_count(),
      "host": platform.processor() or platform.machine(),
      "jax": jax.__version__,
      "repeats": repeats,
      "target": "forward+backward <= 3x forward",
      "sizes": rows,
      "finite_difference_accuracy_float64": accuracy,
  }
  out = pathlib.Path(__file__).parent / "results" / "bench_regularizer.json"
  out.parent.mkdir(parents=True, exist_ok=True)
  if not args.quick:
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
  main()
